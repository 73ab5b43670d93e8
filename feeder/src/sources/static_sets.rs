//! `--static ID=HOST[:PORT][,HOST[:PORT]...]`: sets fixed on the command line.

use std::str::FromStr;

use crate::sources::{Publisher, Source, SourceFuture};
use dsfeed_model::InvalidDestination;
use dsfeed_model::{Destination, SetId, SetMap, validate_set_id};

/// One `--static` flag: a set id and its destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSet {
    pub id: SetId,
    pub destinations: Vec<Destination>,
}

impl FromStr for StaticSet {
    type Err = InvalidDestination;

    /// Parses `ID=TARGET[,TARGET...]`, each target `HOST[:PORT]`, `[IPv6][:PORT]`
    /// or a full `sip:`/`sips:` URI.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, targets) = s
            .split_once('=')
            .ok_or_else(|| InvalidDestination::Target {
                target: s.to_owned(),
                reason: "expected ID=HOST[:PORT][,HOST[:PORT]...]".to_owned(),
            })?;
        let id = id
            .trim()
            .parse::<u64>()
            .map_err(|_| InvalidDestination::Target {
                target: s.to_owned(),
                reason: format!("set id '{id}' is not a number"),
            })
            .and_then(validate_set_id)?;
        let destinations = targets
            .split(',')
            .map(|t| Destination::parse_target(t.trim()))
            .collect::<Result<_, _>>()?;
        Ok(StaticSet { id, destinations })
    }
}

/// Publishes the `--static` sets once; they never change.
#[derive(Debug)]
pub struct StaticSource {
    sets: SetMap,
}

impl StaticSource {
    pub fn new(sets: &[StaticSet]) -> Self {
        let mut map = SetMap::new();
        for set in sets {
            map.entry(set.id)
                .or_default()
                .extend(set.destinations.iter().cloned());
        }
        StaticSource { sets: map }
    }
}

impl Source for StaticSource {
    fn name(&self) -> &str {
        "static"
    }

    fn run(self: Box<Self>, out: Publisher) -> SourceFuture {
        Box::pin(async move {
            out.publish(self.sets).await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn malformed_flags_are_refused() {
        for bad in [
            "10.0.0.1",
            "x=10.0.0.1",
            "1=",
            "1=10.0.0.1,",
            "-1=a",
            "99999999999=a",
        ] {
            assert!(bad.parse::<StaticSet>().is_err(), "{bad}");
        }
    }
}
