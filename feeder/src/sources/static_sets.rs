//! `--static ID=HOST[:PORT][,HOST[:PORT]...]`: sets fixed on the command line;
//! `--static-rtpengine ID=HOST[:PORT][,...]` and `--static-domain
//! [DID=]NAME[,NAME...]`: rtpengine relays and SIP domains likewise.

use std::collections::BTreeSet;
use std::str::FromStr;

use crate::error::InvalidFlagValue;
use crate::sources::{Publisher, Source, SourceFuture};
use dsfeed_model::domain::{did, domain_name};
use dsfeed_model::{Destination, InvalidDomain, Lists, Relay, SetId, SetMap, validate_set_id};

/// One `--static` flag: a set id and its destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSet {
    pub id: SetId,
    pub destinations: Vec<Destination>,
}

impl FromStr for StaticSet {
    type Err = InvalidFlagValue;

    /// Parses `ID=TARGET[,TARGET...]`, each target `HOST[:PORT]`, `[IPv6][:PORT]`
    /// or a full `sip:`/`sips:` URI.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, destinations) = id_and_targets(s, Destination::parse_target)?;
        Ok(StaticSet { id, destinations })
    }
}

/// One `--static-rtpengine` flag: an rtpengine set id and its relays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRelays {
    pub id: SetId,
    pub relays: Vec<Relay>,
}

impl FromStr for StaticRelays {
    type Err = InvalidFlagValue;

    /// Parses `ID=TARGET[,TARGET...]`, each target `HOST[:PORT]` (the
    /// port defaults to 22222), `[IPv6][:PORT]` or a control URL
    /// (`udp:HOST:PORT`, `udp6:[ADDR]:PORT`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, relays) = id_and_targets(s, Relay::parse_target)?;
        Ok(StaticRelays { id, relays })
    }
}

/// Reads `ID=TARGET[,TARGET...]`, the form `--static` and
/// `--static-rtpengine` share: the set id and each target as `target`
/// reads it. Every error names the whole flag value.
fn id_and_targets<T, E: std::fmt::Display>(
    s: &str,
    target: impl Fn(&str) -> Result<T, E>,
) -> Result<(SetId, Vec<T>), InvalidFlagValue> {
    let bad = |reason: String| InvalidFlagValue::new(s, reason);
    let (id, targets) = s
        .split_once('=')
        .ok_or_else(|| bad("expected ID=HOST[:PORT][,HOST[:PORT]...]".into()))?;
    let id = id
        .trim()
        .parse::<u64>()
        .map_err(|_| bad(format!("set id '{id}' is not a number")))?;
    let id = validate_set_id(id).map_err(|e| bad(e.to_string()))?;
    let targets = targets
        .split(',')
        .map(|t| target(t.trim()).map_err(|e| bad(e.to_string())))
        .collect::<Result<_, _>>()?;
    Ok((id, targets))
}

/// One `--static-domain` flag: SIP domains, with a did or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticDomains {
    pub did: String,
    pub names: BTreeSet<String>,
}

impl FromStr for StaticDomains {
    type Err = InvalidDomain;

    /// Parses `[DID=]NAME[,NAME...]` (a domain name has no `=`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (did_part, names) = s.split_once('=').unwrap_or(("", s));
        let names = names
            .split(',')
            .map(|n| domain_name(n.trim()))
            .collect::<Result<_, _>>()?;
        Ok(StaticDomains {
            did: did(did_part.trim())?,
            names,
        })
    }
}

/// Publishes the `--static` sets (and static relays and domains) once;
/// they never change.
#[derive(Debug)]
pub struct StaticSource {
    sets: SetMap,
    lists: Lists,
}

impl StaticSource {
    pub fn new(sets: &[StaticSet]) -> Self {
        let mut map = SetMap::new();
        for set in sets {
            map.entry(set.id)
                .or_default()
                .extend(set.destinations.iter().cloned());
        }
        StaticSource {
            sets: map,
            lists: Lists::default(),
        }
    }

    /// Adds the `--static-rtpengine` relays and `--static-domain` domains.
    pub fn with_lists(mut self, relays: &[StaticRelays], domains: &[StaticDomains]) -> Self {
        for set in relays {
            self.lists
                .rtpengine
                .entry(set.id)
                .or_default()
                .extend(set.relays.iter().cloned());
        }
        for group in domains {
            self.lists
                .domains
                .entry(group.did.clone())
                .or_default()
                .extend(group.names.iter().cloned());
        }
        self
    }
}

impl Source for StaticSource {
    fn name(&self) -> &str {
        "static"
    }

    fn run(self: Box<Self>, out: Publisher) -> SourceFuture {
        Box::pin(async move {
            out.publish_view(self.sets, BTreeSet::new(), self.lists)
                .await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::assert_refused;

    #[test]
    fn parses_hosts_ports_and_uris() {
        let set: StaticSet = "3=10.0.0.1,10.0.0.2:5080,[2001:db8::1],sip:pbx:5061;transport=tcp"
            .parse()
            .unwrap();
        assert_eq!(set.id, 3);
        let uris: Vec<_> = set.destinations.iter().map(|d| d.uri()).collect();
        assert_eq!(
            uris,
            [
                "sip:10.0.0.1:5060",
                "sip:10.0.0.2:5080",
                "sip:[2001:db8::1]:5060",
                "sip:pbx:5061;transport=tcp"
            ]
        );
    }

    #[test]
    fn static_relays_and_domains() {
        let relays: StaticRelays = "2=10.0.0.1,rtp.example:2223,udp6:[::1]:9".parse().unwrap();
        let urls: Vec<_> = relays.relays.iter().map(Relay::url).collect();
        assert_eq!(
            urls,
            ["udp:10.0.0.1:22222", "udp:rtp.example:2223", "udp6:[::1]:9"]
        );
        let domains: StaticDomains = "tenant-1=A.example.com,b.example.com".parse().unwrap();
        assert_eq!(domains.did, "tenant-1");
        assert_eq!(
            domains.names.iter().collect::<Vec<_>>(),
            ["a.example.com", "b.example.com"]
        );
        assert_eq!("sip.example.com".parse::<StaticDomains>().unwrap().did, "");
        assert_refused::<StaticRelays>(&[
            ("2", "'2'"),
            ("x=10.0.0.1", "set id 'x'"),
            ("2=tcp:a:1", "'tcp:a:1'"),
            ("2=a,", "empty host"),
        ]);
        for bad in ["a b", "t=x:1", "t:1=x", "a,,b"] {
            assert!(bad.parse::<StaticDomains>().is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_flags_are_refused_naming_the_value() {
        assert_refused::<StaticSet>(&[
            ("10.0.0.1", "'10.0.0.1': expected ID=HOST[:PORT]"),
            ("x=10.0.0.1", "'x=10.0.0.1': set id 'x' is not a number"),
            ("1=", "'1=': '' is not HOST[:PORT]"),
            ("1=10.0.0.1,", "'1=10.0.0.1,': '' is not HOST[:PORT]"),
            ("-1=a", "'-1=a': set id '-1' is not a number"),
            ("99999999999=a", "set id 99999999999 is out of range"),
        ]);
    }
}
