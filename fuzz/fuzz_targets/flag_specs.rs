//! The values of --static, --set, --consul-service, --consul-register,
//! --consul-attr, --consul-addr, --rpc and --listen / feeder addresses.
#![no_main]

use dsfeed_binrpc::Addr;
use dsfeed::sources::consul::{AttrMapping, ConsulAddr, RegisterSpec, ServiceSpec};
use dsfeed::sources::kubernetes::ServiceSet;
use dsfeed::sources::static_sets::StaticSet;
use dsfeed_model::Endpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 8 {
        0 => drop(text.parse::<StaticSet>()),
        1 => drop(text.parse::<ServiceSet>()),
        2 => drop(text.parse::<ServiceSpec>()),
        3 => drop(text.parse::<RegisterSpec>()),
        4 => drop(text.parse::<AttrMapping>()),
        5 => drop(text.parse::<ConsulAddr>()),
        6 => drop(text.parse::<Addr>()),
        _ => {
            if let Ok(endpoint) = text.parse::<Endpoint>() {
                // What parses prints as something that parses the same.
                let again: Endpoint = endpoint.to_string().parse().expect("re-parses");
                assert_eq!(again, endpoint);
            }
        }
    }
});
