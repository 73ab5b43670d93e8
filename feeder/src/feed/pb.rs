//! The one place where the `dsfeed.v1` protobuf types meet the domain
//! model: sets out to the wire, and wire sets back through the same
//! validation a sets file gets.

use std::collections::BTreeSet;

pub use dsfeed_proto::v1::*;

use crate::error::InvalidDestination;
use crate::feed::SetFilter;
use crate::snapshot::{Destination as DomainDestination, SetMap, Snapshot, validate_set_id};

/// The sets of a snapshot as the wire carries them, ordered by id.
pub fn sets_to_pb(sets: &SetMap) -> Vec<Set> {
    sets.iter()
        .map(|(id, dests)| Set {
            id: *id,
            destinations: dests
                .iter()
                .map(|d| Destination {
                    uri: d.uri.clone(),
                    flags: d.flags,
                    priority: d.priority,
                    attrs: d.attrs.clone(),
                })
                .collect(),
        })
        .collect()
}

/// Rebuilds a snapshot from wire sets, refusing anything Kamailio would
/// misread, so a client never applies what it could not load.
pub fn snapshot_from_pb(sets: Vec<Set>) -> Result<Snapshot, InvalidDestination> {
    let mut map = SetMap::new();
    for set in sets {
        let id = validate_set_id(u64::from(set.id))?;
        let dests = map.entry(id).or_default();
        for d in set.destinations {
            dests.push(DomainDestination::new(d.uri, d.flags, d.priority, d.attrs)?);
        }
    }
    Ok(Snapshot::new(map))
}

/// The filter a first request asks for: no ids means every set.
pub fn filter_from_pb(set_ids: &[u32]) -> SetFilter {
    (!set_ids.is_empty()).then(|| set_ids.iter().copied().collect::<BTreeSet<_>>())
}

/// A NACK: the response `nonce` cannot be applied, `kept_version` stays.
pub fn nack(kept_version: &str, nonce: &str, error: String) -> FeedRequest {
    FeedRequest {
        version_info: kept_version.to_owned(),
        response_nonce: nonce.to_owned(),
        error_detail: Some(ErrorDetail {
            message: error,
            retrying: false,
        }),
        ..FeedRequest::default()
    }
}

/// An ACK: the response `nonce` with `version` is applied.
pub fn ack(version: &str, nonce: &str) -> FeedRequest {
    FeedRequest {
        version_info: version.to_owned(),
        response_nonce: nonce.to_owned(),
        ..FeedRequest::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot::new(SetMap::from([
            (
                1,
                vec![
                    DomainDestination::new("sip:10.0.0.1:5060", 8, 10, "weight=50").unwrap(),
                    DomainDestination::parse_target("[2001:db8::1]").unwrap(),
                ],
            ),
            (7, vec![]),
        ]))
    }

    #[test]
    fn snapshots_survive_the_wire() {
        let original = snapshot();
        let wire = sets_to_pb(original.sets());
        assert_eq!(wire.iter().map(|s| s.id).collect::<Vec<_>>(), [1, 7]);
        assert_eq!(wire[0].destinations[0].attrs, "weight=50");
        assert_eq!(snapshot_from_pb(wire).unwrap(), original);
    }

    #[test]
    fn wire_sets_are_validated_like_a_sets_file() {
        let mut wire = sets_to_pb(snapshot().sets());
        wire[0].destinations[0].uri = "sip:10.0.0.1:5060 x".into();
        let err = snapshot_from_pb(wire).unwrap_err().to_string();
        assert!(err.contains("sip:10.0.0.1:5060 x"), "{err}");
        let huge_id = vec![Set {
            id: u32::MAX,
            destinations: vec![],
        }];
        assert!(snapshot_from_pb(huge_id).is_err());
    }

    #[test]
    fn no_ids_means_every_set() {
        assert_eq!(filter_from_pb(&[]), None);
        assert_eq!(filter_from_pb(&[2, 1, 2]), Some(BTreeSet::from([1, 2])));
    }
}
