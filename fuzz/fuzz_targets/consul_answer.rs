//! An answer of Consul's /v1/health/service/NAME, to a set's destinations.
#![no_main]

use dsfeed::sources::consul::instances::{convert, decode};
use dsfeed::sources::consul::{AttrMapping, ServiceSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = decode(data) else {
        return;
    };
    let spec: ServiceSpec = "asterisk=1,health=warning".parse().expect("a valid spec");
    let attrs: Vec<AttrMapping> = ["weight=Weights.Passing", "duid=ID", "zone=Meta.zone", "node=Node"]
        .iter()
        .map(|a| a.parse().expect("a valid mapping"))
        .collect();
    let converted = convert(&spec, &attrs, &entries);
    assert!(converted.destinations.len() <= entries.len());
});
