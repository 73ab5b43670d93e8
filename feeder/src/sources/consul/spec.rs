//! `--consul-service` and `--consul-register`: which services become sets,
//! and how this Kamailio appears in Consul.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use dsfeed_model::SetId;

use crate::flag;
use crate::sources::defaults::Defaults;
use crate::sources::lists::{Domains, split_domain};

/// Which instances count as healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    /// Every check passing (Consul's `passing=true`).
    #[default]
    Passing,
    /// No check critical: passing or warning.
    Warning,
}

/// One `--consul-service`: which instances of which service make a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub set: SetId,
    /// Replaces every instance's registered port.
    pub port: Option<u16>,
    pub tags: Vec<String>,
    pub datacenter: Option<String>,
    pub health: Health,
    /// Flags, priority and attrs of every destination; a `--consul-attr`
    /// with the same attr key wins for the instances that have that field.
    pub defaults: Defaults,
}

impl FromStr for ServiceSpec {
    type Err = String;

    /// Parses `NAME=ID[:PORT][,tag=TAG...][,dc=DC][,health=passing|warning]`
    /// `[,flags=N][,priority=N][,attrs=K=V;...]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceSpec::read(
            s,
            "expected NAME=ID[:PORT][,tag=TAG][,dc=DATACENTER][,health=warning][,flags=N][,priority=N][,attrs=K=V;K=V]",
        )
    }
}

impl ServiceSpec {
    /// Reads flag `s`, `NAME=ID[:PORT][,OPTION...]`; `usage`, the flag's
    /// own syntax, ends the errors about its shape.
    fn read(s: &str, usage: &str) -> Result<Self, String> {
        let bad = |reason: String| format!("'{s}': {reason}; {usage}");
        let (name, rest) = s.split_once('=').ok_or_else(|| format!("'{s}': {usage}"))?;
        let mut spec = ServiceSpec::named(s, name).map_err(|e| format!("{e}; {usage}"))?;
        let mut parts = rest.split(',');
        let (set, port) = flag::set_target(parts.next().unwrap_or_default()).map_err(bad)?;
        spec.set = set;
        spec.port = port.map(flag::port).transpose().map_err(bad)?;
        spec.take_options(s, parts, usage)?;
        Ok(spec)
    }

    /// Service `name` of flag `s`, checked, as set 0 with no options: where
    /// every flag that follows a service starts (set ids do not matter for
    /// domains).
    fn named(s: &str, name: &str) -> Result<Self, String> {
        check_name(s, name)?;
        Ok(ServiceSpec {
            name: name.to_owned(),
            set: 0,
            port: None,
            tags: Vec::new(),
            datacenter: None,
            health: Health::Passing,
            defaults: Defaults::default(),
        })
    }

    /// Takes the `,KEY=VALUE` options of flag `s`, and checks the
    /// dispatcher ones as Kamailio would read them.
    fn take_options<'a>(
        &mut self,
        s: &str,
        options: impl Iterator<Item = &'a str>,
        usage: &str,
    ) -> Result<(), String> {
        let options = flag::options(options).map_err(|e| format!("'{s}': {e}; {usage}"))?;
        for (key, value) in options {
            let given = |reason| format!("'{s}': {reason}");
            if self.defaults.take(key, value).map_err(given)? {
                continue;
            }
            match key {
                "tag" => self.tags.push(value.to_owned()),
                "dc" if self.datacenter.is_some() => {
                    return Err(format!("'{s}': dc is given twice"));
                }
                "dc" => self.datacenter = Some(value.to_owned()),
                "health" => {
                    self.health = match value {
                        "passing" => Health::Passing,
                        "warning" => Health::Warning,
                        other => {
                            return Err(format!(
                                "'{s}': health '{other}' is not 'passing' or 'warning'"
                            ));
                        }
                    }
                }
                other => return Err(format!("'{s}': unknown option '{other}'; {usage}")),
            }
        }
        self.defaults.check().map_err(|e| format!("'{s}': {e}"))
    }
}

impl fmt::Display for ServiceSpec {
    /// The service as logs name it: `name[@dc][+tag...]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(dc) = &self.datacenter {
            write!(f, "@{dc}")?;
        }
        for tag in &self.tags {
            write!(f, "+{tag}")?;
        }
        Ok(())
    }
}

/// One `--consul-rtpengine`: which instances of which service make an
/// rtpengine set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpengineSpec {
    /// The service, its set id and control port (22222 unless given).
    pub service: ServiceSpec,
}

impl FromStr for RtpengineSpec {
    type Err = String;

    /// Parses `NAME=ID[:PORT][,tag=TAG...][,dc=DC][,health=passing|warning]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "expected NAME=ID[:PORT][,tag=TAG][,dc=DATACENTER][,health=warning]";
        let mut service = ServiceSpec::read(s, usage)?;
        only_discovery_options(s, &service)?;
        service
            .port
            .get_or_insert(dsfeed_model::DEFAULT_RTPENGINE_PORT);
        Ok(RtpengineSpec { service })
    }
}

/// One `--consul-domain`: which instances of which service are SIP domains,
/// under which did.
pub type DomainSpec = Domains<ServiceSpec>;

impl FromStr for DomainSpec {
    type Err = String;

    /// Parses `NAME[=DID][,tag=TAG...][,dc=DC][,health=passing|warning]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "expected NAME[=DID][,tag=TAG][,dc=DATACENTER][,health=warning]";
        let mut parts = s.split(',');
        let (name, did) =
            split_domain(parts.next().unwrap_or_default()).map_err(|e| format!("'{s}': {e}"))?;
        let mut service = ServiceSpec::named(s, name).map_err(|e| format!("{e}; {usage}"))?;
        service.take_options(s, parts, usage)?;
        only_discovery_options(s, &service)?;
        Ok(Domains { service, did })
    }
}

/// Refuses the dispatcher-only options (flags, priority, attrs) in a flag
/// that feeds another list.
fn only_discovery_options(s: &str, service: &ServiceSpec) -> Result<(), String> {
    let given = &service.defaults;
    if given.flags() != 0 || given.priority() != 0 || !given.attrs().is_empty() {
        return Err(format!(
            "'{s}': flags, priority and attrs are dispatcher options; this flag takes tag, dc and health"
        ));
    }
    Ok(())
}

/// `--consul-register`: how this Kamailio appears in Consul.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterSpec {
    pub name: String,
    pub port: u16,
    pub id: Option<String>,
    pub address: Option<String>,
    pub tags: Vec<String>,
    pub ttl: Duration,
}

impl FromStr for RegisterSpec {
    type Err = String;

    /// Parses `NAME[:PORT][,id=ID][,address=ADDR][,tag=TAG...][,ttl=DURATION]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "expected NAME[:PORT][,id=ID][,address=ADDR][,tag=TAG][,ttl=DURATION]";
        let bad = |reason: String| format!("'{s}': {reason}; {usage}");
        let mut parts = s.split(',');
        let head = parts.next().unwrap_or_default();
        let (name, port) = match head.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (head, None),
        };
        check_name(s, name).map_err(|e| format!("{e}; {usage}"))?;
        let port = match port {
            None => dsfeed_model::DEFAULT_PORT,
            Some(p) => flag::port(p).map_err(bad)?,
        };
        let mut spec = RegisterSpec {
            name: name.to_owned(),
            port,
            id: None,
            address: None,
            tags: Vec::new(),
            ttl: Duration::from_secs(30),
        };
        for (key, value) in flag::options(parts).map_err(bad)? {
            match key {
                "id" => spec.id = Some(value.to_owned()),
                "address" => spec.address = Some(value.to_owned()),
                "tag" => spec.tags.push(value.to_owned()),
                "ttl" => {
                    spec.ttl = flag::duration(value).map_err(|e| format!("'{s}': {e}"))?;
                    if spec.ttl < Duration::from_secs(1) {
                        return Err(format!("'{s}': ttl must be at least 1s"));
                    }
                }
                other => {
                    return Err(format!(
                        "'{s}': unknown option '{other}' (known: id, address, tag, ttl)"
                    ));
                }
            }
        }
        Ok(spec)
    }
}

/// Consul service names as dsfeed accepts them: letters, digits, `-`, `_`
/// and `.`.
fn check_name(flag: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("'{flag}': empty service name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "'{flag}': service name '{name}' contains '{}' (Consul service names are letters, digits, '-', '_' and '.')",
            c.escape_default()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::assert_refused;

    #[test]
    fn service_specs_parse() {
        let spec: ServiceSpec = "asterisk=1".parse().unwrap();
        assert_eq!(
            spec,
            ServiceSpec {
                name: "asterisk".into(),
                set: 1,
                port: None,
                tags: vec![],
                datacenter: None,
                health: Health::Passing,
                defaults: Defaults::default(),
            }
        );
        let spec: ServiceSpec = "asterisk=2:5080,tag=primary,tag=v1.2,dc=dc2,health=warning"
            .parse()
            .unwrap();
        assert_eq!(spec.set, 2);
        assert_eq!(spec.port, Some(5080));
        assert_eq!(spec.tags, ["primary", "v1.2"]);
        assert_eq!(spec.datacenter.as_deref(), Some("dc2"));
        assert_eq!(spec.health, Health::Warning);
        assert_eq!(spec.to_string(), "asterisk@dc2+primary+v1.2");
        let spec: ServiceSpec = "asterisk=3,flags=8,priority=10,attrs=duid=pbx;weight=50"
            .parse()
            .unwrap();
        assert_eq!(
            (
                spec.defaults.flags(),
                spec.defaults.priority(),
                spec.defaults.attrs()
            ),
            (8, 10, "duid=pbx;weight=50")
        );
    }

    #[test]
    fn bad_service_specs_name_the_culprit() {
        assert_refused::<ServiceSpec>(&[
            ("asterisk", "expected NAME=ID"),
            ("=1", "empty service name"),
            ("a/b=1", "contains '/'"),
            ("asterisk=x", "set id 'x'"),
            ("asterisk=3000000000", "out of range"),
            ("asterisk=1:0", "port '0'"),
            ("asterisk=1:http", "port 'http'"),
            ("asterisk=1,tag", "'tag' is not KEY=VALUE"),
            ("asterisk=1,tag=", "needs a value"),
            ("asterisk=1,dc=a,dc=b", "dc is given twice"),
            ("asterisk=1,health=critical", "health 'critical'"),
            ("asterisk=1,near=_agent", "unknown option 'near'"),
            ("asterisk=1,flags=x", "flags 'x' is not a number"),
            ("asterisk=1,priority=-1", "priority '-1' is not a number"),
            ("asterisk=1,attrs=a=b#c", "attrs"),
        ]);
    }

    #[test]
    fn rtpengine_and_domain_specs_take_no_dispatcher_options() {
        let rtpengine: RtpengineSpec = "rtpengine=1,tag=media".parse().unwrap();
        assert_eq!(rtpengine.service.port, Some(22222));
        let domains: DomainSpec = "sbc=edge,dc=dc2,tag=a".parse().unwrap();
        assert_eq!(
            (domains.service.name.as_str(), domains.did.as_str()),
            ("sbc", "edge")
        );
        assert_eq!(domains.service.datacenter.as_deref(), Some("dc2"));
        assert_eq!("sbc".parse::<DomainSpec>().unwrap().did, "");
        assert_eq!(
            "rtp".parse::<RtpengineSpec>().unwrap_err(),
            "'rtp': expected NAME=ID[:PORT][,tag=TAG][,dc=DATACENTER][,health=warning]"
        );
        assert_refused::<RtpengineSpec>(&[("rtp=1,flags=4", "'rtp=1,flags=4': flags, priority")]);
        assert_refused::<DomainSpec>(&[
            ("sbc=a:b", "'sbc=a:b': domain 'a:b'"),
            (
                "s/b",
                "'s/b': service name 's/b' contains '/' (Consul service names are letters, digits, '-', '_' and '.'); expected NAME[=DID][,tag=TAG][,dc=DATACENTER][,health=warning]",
            ),
            (
                "sbc,tag",
                "'sbc,tag': option 'tag' is not KEY=VALUE; expected NAME[=DID][,tag=TAG]",
            ),
            ("sbc,priority=3", "'sbc,priority=3': flags, priority"),
        ]);
    }

    #[test]
    fn register_specs_parse() {
        let spec: RegisterSpec = "kamailio".parse().unwrap();
        assert_eq!(
            (spec.name.as_str(), spec.port, spec.ttl),
            ("kamailio", 5060, Duration::from_secs(30))
        );
        let spec: RegisterSpec = "kamailio:5080,id=k1,address=10.0.0.9,tag=edge,tag=udp,ttl=5s"
            .parse()
            .unwrap();
        assert_eq!(spec.port, 5080);
        assert_eq!(spec.id.as_deref(), Some("k1"));
        assert_eq!(spec.address.as_deref(), Some("10.0.0.9"));
        assert_eq!(spec.tags, ["edge", "udp"]);
        assert_eq!(spec.ttl, Duration::from_secs(5));
        assert_refused::<RegisterSpec>(&[
            ("", "empty service name"),
            ("k m", "contains ' '"),
            ("kamailio:0", "port '0'"),
            ("kamailio,ttl=0", "at least 1s"),
            ("kamailio,ttl=x", "not a duration"),
            ("kamailio,check=tcp", "unknown option 'check'"),
        ]);
    }
}
