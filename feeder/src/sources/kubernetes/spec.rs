//! `--set [NAMESPACE:]SERVICE=ID[:PORT][,flags=N][,priority=N][,attrs=K=V;...]`:
//! which Kubernetes Service feeds which dispatcher set.
//!
//! The part up to `ID[:PORT]` is CyCoreSystems/dispatchers' syntax, so its
//! command lines work unchanged; the comma-separated options are ours.

use std::fmt;
use std::str::FromStr;

use dsfeed_model::{DEFAULT_PORT, SetId};

use crate::error::InvalidFlagValue;
use crate::flag;
use crate::sources::defaults::Defaults;
use crate::sources::lists::{Domains, split_domain};

/// One `--set` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSet {
    /// `None` means the default namespace (`POD_NAMESPACE`, else `default`).
    pub namespace: Option<String>,
    pub service: String,
    pub id: SetId,
    pub port: Port,
    /// Set-wide values given on the command line; each one given here wins
    /// over the Service's annotation.
    pub defaults: Defaults,
}

/// The SIP port of a set's destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Port {
    Number(u16),
    /// A port name, looked up in each EndpointSlice's `ports`.
    Name(String),
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Number(n) => write!(f, "{n}"),
            Port::Name(name) => f.write_str(name),
        }
    }
}

impl FromStr for ServiceSet {
    type Err = InvalidFlagValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| InvalidFlagValue::new(s, reason);
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| bad("expected [NAMESPACE:]SERVICE=ID[:PORT]".into()))?;
        let mut set = ServiceSet::named(name).map_err(bad)?;

        let mut options = rest.split(',');
        let (id, port) = flag::set_target(options.next().unwrap_or_default()).map_err(bad)?;
        set.id = id;
        if let Some(port) = port {
            set.port = parse_port(port).map_err(bad)?;
        }
        for (key, value) in flag::options(options).map_err(bad)? {
            if !set.defaults.take(key, value).map_err(bad)? {
                return Err(bad(format!(
                    "unknown option '{key}' (known: flags, priority, attrs)"
                )));
            }
        }
        set.defaults.check().map_err(|e| bad(e.to_string()))?;
        Ok(set)
    }
}

impl ServiceSet {
    /// The namespace of the Service: the one the flag names, else
    /// `default` (`POD_NAMESPACE`, else `default`).
    pub fn namespace_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(default)
    }

    /// The Service `[NAMESPACE:]SERVICE` names, both checked, as set 0 on
    /// the default port with no options: where `--set` starts, and all a
    /// domain set needs (set ids and ports do not matter for domains).
    fn named(name: &str) -> Result<ServiceSet, String> {
        let (namespace, service) = match name.split_once(':') {
            Some((ns, svc)) => (Some(ns), svc),
            None => (None, name),
        };
        if let Some(ns) = namespace {
            check_dns_label(ns, "namespace")?;
        }
        check_dns_label(service, "service")?;
        Ok(ServiceSet {
            namespace: namespace.map(str::to_owned),
            service: service.to_owned(),
            id: 0,
            port: Port::Number(DEFAULT_PORT),
            defaults: Defaults::default(),
        })
    }
}

/// One `--rtpengine-set`: a Service whose endpoints are an rtpengine set,
/// in `--set`'s syntax; PORT is the control port (default 22222).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpengineSet(pub ServiceSet);

impl FromStr for RtpengineSet {
    type Err = InvalidFlagValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut set: ServiceSet = s.parse()?;
        if !set.defaults.is_empty() {
            return Err(InvalidFlagValue::new(
                s,
                "flags, priority and attrs are dispatcher options; an rtpengine set takes [NS:]SERVICE=ID[:PORT]",
            ));
        }
        let target = s.split_once('=').map_or("", |(_, rest)| rest);
        if !target.split(',').next().unwrap_or_default().contains(':') {
            set.port = Port::Number(dsfeed_model::DEFAULT_RTPENGINE_PORT);
        }
        Ok(RtpengineSet(set))
    }
}

/// One `--domain-set`: a Service whose endpoints' addresses are SIP
/// domains, under a did or none.
pub type DomainSet = Domains<ServiceSet>;

impl FromStr for DomainSet {
    type Err = InvalidFlagValue;

    /// Parses `[NAMESPACE:]SERVICE[=DID]`. The `--set` options do not
    /// apply: a domain has no flags, priority or attrs.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| InvalidFlagValue::new(s, reason);
        if s.contains(',') {
            return Err(bad(
                "a domain set takes [NS:]SERVICE[=DID], no options".into()
            ));
        }
        let (name, did) = split_domain(s).map_err(|e| bad(e.to_string()))?;
        let service = ServiceSet::named(name).map_err(bad)?;
        Ok(Domains { service, did })
    }
}

/// A number from 1 to 65535, or an IANA service name as Kubernetes port
/// names are: at most 15 lowercase letters, digits and inner dashes, with
/// at least one letter.
fn parse_port(p: &str) -> Result<Port, String> {
    if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() {
        return flag::port(p).map(Port::Number);
    }
    let valid = !p.is_empty()
        && p.len() <= 15
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !p.starts_with('-')
        && !p.ends_with('-')
        && !p.contains("--");
    if valid {
        Ok(Port::Name(p.to_owned()))
    } else {
        Err(format!(
            "port '{p}' is neither a number nor a port name (up to 15 lowercase letters, digits and dashes)"
        ))
    }
}

/// Namespaces and Service names are DNS labels (RFC 1123).
fn check_dns_label(value: &str, what: &str) -> Result<(), String> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{what} '{value}' is not a valid name (lowercase letters, digits and '-', at most 63)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ServiceSet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn dispatchers_syntax() {
        let set = parse("asterisk=1");
        assert_eq!(set.namespace, None);
        assert_eq!(set.service, "asterisk");
        assert_eq!(set.id, 1);
        assert_eq!(set.port, Port::Number(5060));

        let set = parse("voice:asterisk=2:5080");
        assert_eq!(set.namespace.as_deref(), Some("voice"));
        assert_eq!(set.port, Port::Number(5080));

        assert_eq!(parse("voice:asterisk=2:sip").port, Port::Name("sip".into()));
        assert_eq!(
            parse("asterisk=2:sip-udp").port,
            Port::Name("sip-udp".into())
        );
    }

    #[test]
    fn options_set_flags_priority_and_attrs() {
        let set = parse("voice:asterisk=3:sip,flags=8,priority=10,attrs=weight=50;duid=a");
        assert_eq!(set.defaults.given_flags(), Some(8));
        assert_eq!(set.defaults.given_priority(), Some(10));
        assert_eq!(set.defaults.given_attrs(), Some("weight=50;duid=a"));
        assert_eq!(parse("asterisk=3").defaults.given_flags(), None);
    }

    #[test]
    fn rtpengine_sets_default_to_the_control_port() {
        let set: RtpengineSet = "media:rtpengine=1".parse().unwrap();
        assert_eq!(set.0.port, Port::Number(22222));
        assert_eq!(set.0.namespace.as_deref(), Some("media"));
        let named: RtpengineSet = "rtpengine=2:ng".parse().unwrap();
        assert_eq!(named.0.port, Port::Name("ng".into()));
        let err = "rtpengine=1,flags=4".parse::<RtpengineSet>().unwrap_err();
        assert!(err.to_string().contains("rtpengine=1,flags=4"), "{err}");
    }

    #[test]
    fn domain_sets_take_a_did() {
        let set: DomainSet = "edge:sbc=tenant-1".parse().unwrap();
        assert_eq!(set.service.namespace.as_deref(), Some("edge"));
        assert_eq!(
            (set.service.service.as_str(), set.did.as_str()),
            ("sbc", "tenant-1")
        );
        assert_eq!("sbc".parse::<DomainSet>().unwrap().did, "");
        for (bad, needle) in [
            ("Sbc", "service 'Sbc'"),
            ("sbc=a:b", "'a:b' is invalid"),
            (
                "sbc=1,flags=4",
                "a domain set takes [NS:]SERVICE[=DID], no options",
            ),
            (
                "sbc,tag=x",
                "a domain set takes [NS:]SERVICE[=DID], no options",
            ),
        ] {
            let err = bad.parse::<DomainSet>().unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_specs_name_the_culprit() {
        for (spec, needle) in [
            ("asterisk", "expected [NAMESPACE:]SERVICE=ID[:PORT]"),
            ("asterisk=x", "set id 'x'"),
            ("asterisk=-1", "set id '-1'"),
            ("asterisk=3000000000", "out of range"),
            ("asterisk=1:0", "port '0'"),
            ("asterisk=1:70000", "port '70000'"),
            ("asterisk=1:SIP", "port 'SIP'"),
            (
                "asterisk=1:a-very-long-port-name",
                "port 'a-very-long-port-name'",
            ),
            ("Voice:asterisk=1", "namespace 'Voice'"),
            (":asterisk=1", "namespace ''"),
            ("voice:=1", "service ''"),
            ("a.b=1", "service 'a.b'"),
            ("asterisk=1,flags=x", "flags 'x'"),
            ("asterisk=1,flags=64", "bits Kamailio does not know"),
            ("asterisk=1,attrs=a b", "without spaces"),
            ("asterisk=1,weight=5", "unknown option 'weight'"),
            ("asterisk=1,flags", "not KEY=VALUE"),
        ] {
            let err = spec.parse::<ServiceSet>().unwrap_err().to_string();
            assert!(err.contains(needle), "{spec}: {err}");
            assert!(err.contains(spec), "{spec}: {err}");
        }
    }
}
