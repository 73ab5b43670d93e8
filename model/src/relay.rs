//! One rtpengine relay: a row of the rtpengine module's table (`setid`,
//! `url`, `weight`, `disabled`), checked the way the module reads it back.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv6Addr;

use crate::destination::{Destination, MAX_INT, SetId, split_host_port};
use crate::error::InvalidRelay;

/// Relays by rtpengine set id, as one source (or the merge of all) sees them.
pub type RelayMap = BTreeMap<SetId, Vec<Relay>>;

/// rtpengine's usual control port (`listen-ng`), used when a target names
/// none.
pub const DEFAULT_RTPENGINE_PORT: u16 = 22222;

/// The weight of a relay nobody gave one: the module's own default.
pub const DEFAULT_WEIGHT: u32 = 1;

/// One relay's control URL (`udp:HOST:PORT`, or `udp6:[ADDR]:PORT`), its
/// weight and whether it is disabled (the module keeps it but sends it
/// nothing: the mark for a draining relay).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Relay {
    url: String,
    weight: u32,
    disabled: bool,
}

impl Relay {
    /// A relay from its control URL, checked the way the rtpengine module
    /// parses it: `udp:` with a name or an IPv4 address, `udp6:` with an
    /// IPv6 address in brackets, and a port.
    pub fn new(url: impl Into<String>, weight: u32, disabled: bool) -> Result<Self, InvalidRelay> {
        let url = url.into();
        let bad = |reason: &str| InvalidRelay {
            relay: url.clone(),
            reason: reason.to_owned(),
        };
        let (v6, hostport) = if let Some(rest) = url.strip_prefix("udp6:") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("udp:") {
            (false, rest)
        } else {
            return Err(bad("a control URL starts with udp: or udp6:"));
        };
        let (host, port) = split_host_port(hostport).map_err(|reason| bad(&reason))?;
        if port.is_none() {
            return Err(bad("a control URL ends with :PORT"));
        }
        if v6 != host.starts_with('[') {
            return Err(bad(
                "an IPv6 address goes in brackets after udp6:, a name or IPv4 address after udp:",
            ));
        }
        if weight > MAX_INT {
            return Err(bad("its weight is above 2147483647"));
        }
        Ok(Relay {
            url,
            weight,
            disabled,
        })
    }

    /// The relay at `host` (a name, an IPv4 address, or an IPv6 address
    /// with or without brackets) and `port`, weight 1, enabled.
    pub fn at(host: &str, port: u16) -> Result<Self, InvalidRelay> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let url = if bare.parse::<Ipv6Addr>().is_ok() {
            format!("udp6:[{bare}]:{port}")
        } else {
            format!("udp:{host}:{port}")
        };
        Relay::new(url, DEFAULT_WEIGHT, false)
    }

    /// A relay from `udp:HOST:PORT`, `udp6:[ADDR]:PORT` or `HOST[:PORT]`
    /// (IPv6 in brackets; the port defaults to 22222).
    pub fn parse_target(target: &str) -> Result<Self, InvalidRelay> {
        if target.starts_with("udp:") || target.starts_with("udp6:") {
            return Relay::new(target, DEFAULT_WEIGHT, false);
        }
        let (host, port) = split_host_port(target).map_err(|reason| InvalidRelay {
            relay: target.to_owned(),
            reason,
        })?;
        Relay::at(host, port.unwrap_or(DEFAULT_RTPENGINE_PORT))
    }

    /// The relay a discovered endpoint stands for: its host at `port` (the
    /// endpoint's own when `None`), disabled when the endpoint is (a
    /// draining pod), weighted by its `weight` attr if it has one.
    pub fn of_destination(dest: &Destination, port: Option<u16>) -> Result<Self, InvalidRelay> {
        let port = port.or(dest.port()).unwrap_or(DEFAULT_RTPENGINE_PORT);
        let relay = Relay::at(dest.host(), port)?;
        let weight = dest
            .attrs()
            .split(';')
            .find_map(|kv| kv.strip_prefix("weight="))
            .and_then(|w| w.parse().ok())
            .unwrap_or(DEFAULT_WEIGHT);
        Ok(relay
            .with_weight(weight)?
            .with_disabled(dest.flags() & crate::FLAG_DISABLED != 0))
    }

    /// The same relay with another weight, checked again.
    pub fn with_weight(self, weight: u32) -> Result<Self, InvalidRelay> {
        Relay::new(self.url, weight, self.disabled)
    }

    /// The same relay, disabled or not.
    pub fn with_disabled(self, disabled: bool) -> Self {
        Relay { disabled, ..self }
    }

    /// The control URL, such as `udp:10.0.0.1:22222`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }

    pub fn disabled(&self) -> bool {
        self.disabled
    }
}

impl fmt::Display for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} weight={}", self.url, self.weight)?;
        if self.disabled {
            f.write_str(" disabled")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_become_control_urls() {
        let cases = [
            ("10.0.0.1", "udp:10.0.0.1:22222"),
            ("rtp-0.media:2223", "udp:rtp-0.media:2223"),
            ("[2001:db8::1]", "udp6:[2001:db8::1]:22222"),
            ("udp:10.0.0.2:9", "udp:10.0.0.2:9"),
            ("udp6:[::1]:22222", "udp6:[::1]:22222"),
        ];
        for (target, url) in cases {
            assert_eq!(Relay::parse_target(target).unwrap().url(), url, "{target}");
        }
        assert_eq!(
            Relay::at("2001:db8::2", 5).unwrap().url(),
            "udp6:[2001:db8::2]:5"
        );
    }

    #[test]
    fn bad_relays_name_the_culprit() {
        for bad in [
            "tcp:10.0.0.1:1",
            "udp:10.0.0.1",
            "udp:[::1]:1",
            "udp6:10.0.0.1:1",
            "udp:a b:1",
            "udp:a:0",
            "udp:a:1:2",
        ] {
            let err = Relay::new(bad, 1, false).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!(Relay::new("udp:a:1", MAX_INT + 1, false).is_err());
        assert!(Relay::parse_target("a:b").is_err());
    }

    #[test]
    fn a_draining_weighted_destination_is_a_disabled_weighted_relay() {
        let dest = Destination::new("sip:10.0.0.3:5060", 4, 0, "duid=x;weight=7").unwrap();
        let relay = Relay::of_destination(&dest, Some(22222)).unwrap();
        assert_eq!(relay.to_string(), "udp:10.0.0.3:22222 weight=7 disabled");
        let plain = Destination::parse_target("[2001:db8::5]:2000").unwrap();
        let relay = Relay::of_destination(&plain, None).unwrap();
        assert_eq!(relay.to_string(), "udp6:[2001:db8::5]:2000 weight=1");
    }
}
