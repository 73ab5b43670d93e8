//! What dsfeed.so reads to find its feeder (DNS answers, /etc/resolv.conf
//! and /etc/hosts), and the SRV answers the feeder's DNS source reads.
#![no_main]

use dsfeed_model::dns::{self, ResolvConf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 2 {
        let id = u16::from_be_bytes([data[0], data[1]]);
        let _ = dns::parse_answer(id, data);
        let _ = dns::parse_srv_answer(id, data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let conf = ResolvConf::parse(text);
        assert!(!conf.nameservers.is_empty() && conf.nameservers.len() <= 3);
        for name in conf.candidates("feeder.dsfeed") {
            let _ = dns::query(7, &name, dns::TYPE_A);
        }
        let _ = dns::hosts_lookup(text, "feeder");
    }
});
