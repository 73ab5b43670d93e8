//! EndpointSlices (and their Service's annotations) as the API server
//! sends them, to a set's destinations.
#![no_main]

use dsfeed::sources::kubernetes::{ServiceSet, endpoints};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `[service-or-null, slice...]`, as JSON.
    let Ok((service, slices)) = serde_json::from_slice::<(Option<Service>, Vec<EndpointSlice>)>(data)
    else {
        return;
    };
    for spec in ["asterisk=1", "asterisk=2:sip", "voice:asterisk=3:5080,priority=5"] {
        let set: ServiceSet = spec.parse().expect("a valid --set");
        let dests = endpoints::destinations(&set, service.as_ref(), &slices);
        let mut uris: Vec<&str> = dests.iter().map(|d| d.uri()).collect();
        uris.sort_unstable();
        uris.dedup();
        assert_eq!(uris.len(), dests.len(), "a URI twice in one set");
    }
});
