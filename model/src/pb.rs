//! The `dsfeed.v1` wire form: snapshots to and from protobuf, the requests
//! a client answers with, and which stream errors are final. The feed
//! server, `dsfeed watch` and the Kamailio module all go through here, so a
//! snapshot a client accepts is exactly one the feeder could have built.

use std::collections::{BTreeSet, HashSet};

use tonic::Code;
use tonic::codegen::{Body, Bytes, StdError, http};

mod budget;

pub use budget::{
    BudgetDecoder, Incoming, MAX_DESTINATIONS, MAX_RESPONSE_BYTES, MAX_SETS, ResponseCodec,
    Scanned, Size, encoded_len, scan,
};

pub use dsfeed_proto::v1::{
    Destination as WireDestination, Domain as WireDomain, ErrorDetail, FeedRequest, FeedResponse,
    List as WireList, Node, Relay as WireRelay, RtpengineSet, Set, feed_client, feed_server,
};

use crate::destination::{Destination, MAX_INT, SetId};
use crate::domain::{did, domain_name};
use crate::error::InvalidSnapshot;
use crate::lists::{ListKind, Lists};
use crate::relay::Relay;
use crate::snapshot::{SetMap, Snapshot};

/// The longest version a client accepts: the feeder's are 16 hex digits,
/// and a version ends up in logs and in a list file's header comment.
pub const MAX_VERSION: usize = 128;

/// The sets of `snapshot` as the wire carries them, ordered by id, each in
/// `dispatcher.list` order.
pub fn sets(snapshot: &Snapshot) -> Vec<Set> {
    snapshot
        .sets()
        .iter()
        .map(|(id, dests)| Set {
            id: *id,
            destinations: dests.iter().map(WireDestination::from).collect(),
        })
        .collect()
}

impl From<&Destination> for WireDestination {
    fn from(d: &Destination) -> Self {
        WireDestination {
            uri: d.uri().to_owned(),
            flags: d.flags(),
            priority: d.priority(),
            attrs: d.attrs().to_owned(),
        }
    }
}

/// The response that carries `snapshot` with `nonce`: its sets, and the
/// lists it has (a feeder sends a client the lists it asked for, see
/// [`Snapshot::with_only`]).
pub fn response(snapshot: &Snapshot, nonce: String) -> FeedResponse {
    FeedResponse {
        version_info: snapshot.version().to_owned(),
        nonce,
        sets: sets(snapshot),
        ..with_lists(snapshot.lists())
    }
}

/// A response carrying only `lists`, as the wire does: rtpengine sets
/// ordered by id, domains by did then name.
fn with_lists(lists: &Lists) -> FeedResponse {
    FeedResponse {
        rtpengine_sets: lists
            .rtpengine
            .iter()
            .map(|(id, relays)| RtpengineSet {
                id: *id,
                relays: relays
                    .iter()
                    .map(|r| WireRelay {
                        url: r.url().to_owned(),
                        weight: r.weight(),
                        disabled: r.disabled(),
                    })
                    .collect(),
            })
            .collect(),
        domains: lists
            .domain_entries()
            .map(|(name, did)| WireDomain {
                name: name.to_owned(),
                did: did.to_owned(),
            })
            .collect(),
        ..FeedResponse::default()
    }
}

/// The lists a first request asks for; values this side does not know are
/// left out.
pub fn lists(wire: &[i32]) -> BTreeSet<ListKind> {
    wire.iter()
        .filter_map(|v| match WireList::try_from(*v) {
            Ok(WireList::Rtpengine) => Some(ListKind::Rtpengine),
            Ok(WireList::Domain) => Some(ListKind::Domain),
            _ => None,
        })
        .collect()
}

/// The wire values asking for `kinds`.
pub fn wire_lists(kinds: &BTreeSet<ListKind>) -> Vec<i32> {
    kinds
        .iter()
        .map(|kind| match kind {
            ListKind::Rtpengine => WireList::Rtpengine as i32,
            ListKind::Domain => WireList::Domain as i32,
        })
        .collect()
}

/// The delta that takes a client holding `base` to `snapshot` (both of the
/// same set filter and lists): the sets whose content differs, whole, and
/// the ids of the sets `base` has and `snapshot` does not. The lists, small
/// beside the sets, travel whole in a delta too. The nonce is left empty.
pub fn delta(base: &Snapshot, snapshot: &Snapshot) -> FeedResponse {
    let changed = snapshot
        .sets()
        .iter()
        .filter(|(id, dests)| base.sets().get(id) != Some(*dests))
        .map(|(id, dests)| Set {
            id: *id,
            destinations: dests.iter().map(WireDestination::from).collect(),
        })
        .collect();
    FeedResponse {
        version_info: snapshot.version().to_owned(),
        nonce: String::new(),
        sets: changed,
        base_version: base.version().to_owned(),
        removed_set_ids: base
            .sets()
            .keys()
            .filter(|id| !snapshot.sets().contains_key(id))
            .copied()
            .collect(),
        ..with_lists(snapshot.lists())
    }
}

/// A response as a client takes it: every destination through the same
/// checks a source's get, and the contract's own rules (a version, each set
/// once, only the sets asked for, each URI once per set). `wanted` is the
/// set filter sent on connect (empty: every set). A delta is refused: see
/// [`complete`] for a client that asks for deltas.
pub fn snapshot(response: &FeedResponse, wanted: &[SetId]) -> Result<Snapshot, InvalidSnapshot> {
    complete(response, wanted, &[])
}

/// [`snapshot`] for a client that asks for deltas and holds the snapshots
/// in `held` (the one it applied, the newest it received): a delta is
/// checked like a full snapshot, then completed against the held snapshot
/// of its base version, and the result must fit the same budget as a full
/// one. A delta on a version not held is refused with
/// [`InvalidSnapshot::UnknownBase`].
pub fn complete(
    response: &FeedResponse,
    wanted: &[SetId],
    held: &[&Snapshot],
) -> Result<Snapshot, InvalidSnapshot> {
    let version = &response.version_info;
    if version.is_empty() {
        return Err(InvalidSnapshot::NoVersion);
    }
    check_version(version)?;
    let sets = wire_sets(response, wanted)?;
    let lists = received_lists(response)?;
    if response.base_version.is_empty() {
        if !response.removed_set_ids.is_empty() {
            return Err(InvalidSnapshot::RemovedSet(
                response.removed_set_ids[0],
                "a full snapshot cannot remove",
            ));
        }
        return Ok(Snapshot::received_with_lists(sets, lists, version.clone()));
    }
    check_version(&response.base_version)?;
    let base = held
        .iter()
        .find(|h| h.version() == response.base_version)
        .ok_or_else(|| InvalidSnapshot::UnknownBase(response.base_version.clone()))?;
    let mut complete = base.sets().clone();
    for id in &response.removed_set_ids {
        if sets.contains_key(id) {
            return Err(InvalidSnapshot::RemovedSet(*id, "the delta also carries"));
        }
        if complete.remove(id).is_none() {
            return Err(InvalidSnapshot::RemovedSet(*id, "the base does not have"));
        }
    }
    complete.extend(sets);
    // A delta fits the budget on the wire; what it completes to must too.
    let snapshot = Snapshot::received_with_lists(complete, lists, version.clone());
    if let Some(why) = Size::of_content(&snapshot).over_budget() {
        return Err(InvalidSnapshot::OverBudget(why));
    }
    Ok(snapshot)
}

fn check_version(version: &str) -> Result<(), InvalidSnapshot> {
    if version.len() > MAX_VERSION || !version.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidSnapshot::Version(version.escape_debug().to_string()));
    }
    Ok(())
}

/// The sets a response carries, each checked.
fn wire_sets(response: &FeedResponse, wanted: &[SetId]) -> Result<SetMap, InvalidSnapshot> {
    let mut sets = SetMap::new();
    for set in &response.sets {
        let id = set.id;
        if id > MAX_INT {
            return Err(InvalidSnapshot::SetId(id));
        }
        if !wanted.is_empty() && !wanted.contains(&id) {
            return Err(InvalidSnapshot::UnwantedSet(id));
        }
        let mut dests: Vec<Destination> = Vec::with_capacity(set.destinations.len());
        // Hashed: comparing each URI with every other one took a swap of
        // 10,000 destinations hundreds of milliseconds.
        let mut uris: HashSet<String> = HashSet::with_capacity(set.destinations.len());
        for wire in &set.destinations {
            let dest = Destination::new(
                wire.uri.clone(),
                wire.flags,
                wire.priority,
                wire.attrs.clone(),
            )
            .map_err(|source| InvalidSnapshot::Destination {
                set: id,
                uri: wire.uri.clone(),
                source,
            })?;
            if !uris.insert(dest.uri().to_owned()) {
                return Err(InvalidSnapshot::DuplicateUri {
                    set: id,
                    uri: wire.uri.clone(),
                });
            }
            dests.push(dest);
        }
        if sets.insert(id, dests).is_some() {
            return Err(InvalidSnapshot::DuplicateSet(id));
        }
    }
    Ok(sets)
}

/// The lists of a response, through the checks a source's get.
fn received_lists(response: &FeedResponse) -> Result<Lists, InvalidSnapshot> {
    let mut lists = Lists::default();
    for set in &response.rtpengine_sets {
        let mut relays = Vec::with_capacity(set.relays.len());
        for wire in &set.relays {
            let relay = Relay::new(wire.url.clone(), wire.weight, wire.disabled)
                .map_err(|e| InvalidSnapshot::List(format!("rtpengine set {}: {e}", set.id)))?;
            relays.push(relay);
        }
        if lists.rtpengine.insert(set.id, relays).is_some() {
            return Err(InvalidSnapshot::List(format!(
                "rtpengine set {} appears twice",
                set.id
            )));
        }
    }
    for wire in &response.domains {
        let name = domain_name(&wire.name).map_err(|e| InvalidSnapshot::List(e.to_string()))?;
        let did = did(&wire.did).map_err(|e| InvalidSnapshot::List(e.to_string()))?;
        lists.domains.entry(did).or_default().insert(name);
    }
    Ok(lists)
}

/// The longest node id: a host name's 253 characters.
pub const MAX_NODE_ID: usize = 253;

/// Checks a node id as a client names itself: it becomes a metric label
/// and a log field on the feeder, so it is short and plain: 1 to 253 ASCII
/// letters, digits and `.-_:@` (every host and pod name qualifies).
pub fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_NODE_ID {
        return Err(format!(
            "a node id is 1 to {MAX_NODE_ID} characters, this one has {}",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '@')))
    {
        return Err(format!(
            "node id {:?} contains {:?}: use ASCII letters, digits and .-_:@",
            id.escape_debug().to_string(),
            c
        ));
    }
    Ok(())
}

/// Opens the feed stream on `channel` with [`ResponseCodec`], so every
/// response is counted against the budget before it is decoded, and
/// responses up to [`MAX_RESPONSE_BYTES`] are read.
pub async fn open_stream<T>(
    channel: T,
    request: impl tonic::IntoStreamingRequest<Message = FeedRequest>,
) -> Result<tonic::Streaming<Incoming>, tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
    grpc.ready().await.map_err(|e| {
        tonic::Status::unavailable(format!("the channel is not ready: {}", e.into()))
    })?;
    let path = http::uri::PathAndQuery::from_static("/dsfeed.v1.Feed/Stream");
    let response = grpc
        .streaming(request.into_streaming_request(), path, ResponseCodec)
        .await?;
    Ok(response.into_inner())
}

/// The filter a first request asks for: no ids means every set.
pub fn filter(set_ids: &[u32]) -> Option<BTreeSet<SetId>> {
    (!set_ids.is_empty()).then(|| set_ids.iter().copied().collect())
}

/// The first request of every stream: who is asking, which sets, and the
/// version already applied (empty if none) so an unchanged feeder sends
/// nothing.
pub fn hello(node_id: &str, user_agent: &str, sets: &[SetId], applied: &str) -> FeedRequest {
    FeedRequest {
        node: Some(Node {
            id: node_id.to_owned(),
            user_agent: user_agent.to_owned(),
        }),
        set_ids: sets.to_vec(),
        version_info: applied.to_owned(),
        response_nonce: String::new(),
        error_detail: None,
        accept_deltas: false,
        lists: Vec::new(),
    }
}

/// [`hello`] from a client that completes deltas with [`complete`].
pub fn hello_with_deltas(
    node_id: &str,
    user_agent: &str,
    sets: &[SetId],
    applied: &str,
) -> FeedRequest {
    FeedRequest {
        accept_deltas: true,
        ..hello(node_id, user_agent, sets, applied)
    }
}

/// How a response is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Applied: the answer's version is the response's.
    Ack,
    /// Refused for good (invalid, or superseded before its turn); the
    /// feeder does not offer that version again until the truth moves on.
    Nack(String),
    /// Valid but not applied yet (the dispatcher refused the load, no
    /// memory, no file descriptor): the client keeps it and retries, and
    /// answers the same nonce again once applied.
    Retrying(String),
}

/// Answers the response with `nonce`. `version` is the version applied
/// after it: the response's on an ACK, the one kept otherwise.
pub fn answer(nonce: &str, version: &str, answer: Answer) -> FeedRequest {
    let error_detail = match answer {
        Answer::Ack => None,
        Answer::Nack(message) => Some(ErrorDetail {
            message,
            retrying: false,
        }),
        Answer::Retrying(message) => Some(ErrorDetail {
            message,
            retrying: true,
        }),
    };
    FeedRequest {
        node: None,
        set_ids: Vec::new(),
        version_info: version.to_owned(),
        response_nonce: nonce.to_owned(),
        error_detail,
        accept_deltas: false,
        lists: Vec::new(),
    }
}

/// Whether a stream that ended with `code` was refused in a way a quick
/// retry cannot change (a token or certificate refused, a request the
/// feeder does not understand). `dsfeed watch` gives up on these; the
/// module, which must never give up, waits its longest delay.
pub fn is_final(code: Code) -> bool {
    matches!(
        code,
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::InvalidArgument
            | Code::Unimplemented
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(uri: &str) -> WireDestination {
        WireDestination {
            uri: uri.into(),
            flags: 0,
            priority: 0,
            attrs: String::new(),
        }
    }

    fn response_of(sets: Vec<Set>) -> FeedResponse {
        FeedResponse {
            version_info: "v1".into(),
            nonce: "n1".into(),
            sets,
            ..FeedResponse::default()
        }
    }

    fn set(id: u32, dests: Vec<WireDestination>) -> Set {
        Set {
            id,
            destinations: dests,
        }
    }

    #[test]
    fn snapshots_survive_the_wire() {
        let original = Snapshot::new(SetMap::from([
            (
                1,
                vec![
                    Destination::new("sip:10.0.0.1:5060", 8, 10, "weight=50").unwrap(),
                    Destination::parse_target("[2001:db8::1]").unwrap(),
                ],
            ),
            (7, vec![]),
        ]));
        let wire = response(&original, "n".into());
        assert_eq!(wire.sets.iter().map(|s| s.id).collect::<Vec<_>>(), [1, 7]);
        assert_eq!(wire.sets[0].destinations[0].attrs, "weight=50");
        assert_eq!(snapshot(&wire, &[]).unwrap(), original);
    }

    #[test]
    fn anything_the_loader_would_misread_is_refused() {
        let cases: Vec<(WireDestination, &str)> = vec![
            (dest("10.0.0.1:5060"), "sip:"),
            (dest("sip:"), "empty host"),
            (dest("sip:a b"), "' '"),
            (dest("sip:a#b"), "'#'"),
            (
                WireDestination {
                    flags: 32,
                    ..dest("sip:a")
                },
                "flags",
            ),
            (
                WireDestination {
                    priority: u32::MAX,
                    ..dest("sip:a")
                },
                "priority",
            ),
            (
                WireDestination {
                    attrs: "a=b c=d".into(),
                    ..dest("sip:a")
                },
                "attrs",
            ),
            (
                WireDestination {
                    attrs: format!("x={}", "y".repeat(1100)),
                    ..dest("sip:a")
                },
                "1024-byte",
            ),
        ];
        for (bad, expect) in cases {
            let uri = bad.uri.clone();
            let err = snapshot(&response_of(vec![set(7, vec![bad])]), &[]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(expect) && text.contains("set 7"), "{text}");
            assert!(text.contains(&uri), "{text}");
        }
    }

    #[test]
    fn lists_survive_the_wire_and_bad_ones_are_refused() {
        let mut content = Lists::default();
        content
            .rtpengine
            .insert(2, vec![Relay::new("udp:10.0.0.1:22222", 3, true).unwrap()]);
        content
            .domains
            .insert("t1".into(), BTreeSet::from(["a.example.com".to_owned()]));
        let original = Snapshot::with_lists(SetMap::new(), BTreeSet::new(), content);
        let wire = response(&original, "n".into());
        assert_eq!(wire.rtpengine_sets[0].relays[0].weight, 3);
        assert_eq!(wire.domains[0].did, "t1");
        let back = snapshot(&wire, &[]).unwrap();
        assert_eq!(back.lists(), original.lists());
        let mut bad = wire.clone();
        bad.rtpengine_sets[0].relays[0].url = "tcp:x:1".into();
        let err = snapshot(&bad, &[]).unwrap_err().to_string();
        assert!(
            err.contains("rtpengine set 2") && err.contains("tcp:x:1"),
            "{err}"
        );
        let mut bad = wire;
        bad.domains[0].name = "a b".into();
        assert!(
            snapshot(&bad, &[])
                .unwrap_err()
                .to_string()
                .contains("'a b'")
        );
        assert_eq!(
            lists(&[1, 2, 9, 0]),
            BTreeSet::from([ListKind::Rtpengine, ListKind::Domain])
        );
        assert_eq!(
            lists(&wire_lists(&BTreeSet::from([ListKind::Domain]))),
            BTreeSet::from([ListKind::Domain])
        );
    }

    #[test]
    fn a_delta_completes_to_the_full_snapshot() {
        let d = |uri: &str| Destination::parse_target(uri).unwrap();
        let base = Snapshot::new(SetMap::from([
            (1, vec![d("10.0.0.1"), d("10.0.0.2")]),
            (2, vec![d("10.0.0.3")]),
            (3, vec![]),
            (4, vec![d("10.0.0.4")]),
        ]));
        let next = Snapshot::new(SetMap::from([
            (1, vec![d("10.0.0.1"), d("10.0.0.9")]),
            (3, vec![]),
            (4, vec![d("10.0.0.4")]),
            (5, vec![d("10.0.0.5")]),
        ]));
        let change = delta(&base, &next);
        assert_eq!(change.base_version, base.version());
        assert_eq!(change.sets.iter().map(|s| s.id).collect::<Vec<_>>(), [1, 5]);
        assert_eq!(change.removed_set_ids, [2]);
        let completed = complete(&change, &[], &[&next, &base]).unwrap();
        assert_eq!(completed, next);
        assert_eq!(completed.version(), next.version());

        // A client without the base says so, and nothing else is wrong.
        let err = complete(&change, &[], &[&next]).unwrap_err();
        assert!(err.wants_full(), "{err}");
        assert!(err.to_string().contains(base.version()), "{err}");
        let err = snapshot(&change, &[]).unwrap_err();
        assert!(err.wants_full(), "{err}");

        // Removals that contradict the base or the delta are refused.
        let mut bad = change.clone();
        bad.removed_set_ids = vec![9];
        let err = complete(&bad, &[], &[&base]).unwrap_err();
        assert!(
            !err.wants_full() && err.to_string().contains("set 9"),
            "{err}"
        );
        bad.removed_set_ids = vec![1];
        assert!(complete(&bad, &[], &[&base]).is_err());
        let mut full = response(&next, "n".into());
        full.removed_set_ids = vec![2];
        assert!(snapshot(&full, &[]).is_err());

        // No change at all: an empty change.
        let same = delta(&next, &next);
        assert!(same.sets.is_empty() && same.removed_set_ids.is_empty());
        assert_eq!(complete(&same, &[], &[&next]).unwrap(), next);
    }

    #[test]
    fn a_delta_carries_the_lists_whole() {
        let d = |uri: &str| Destination::parse_target(uri).unwrap();
        let with = |relay: &str| {
            let mut lists = Lists::default();
            lists
                .rtpengine
                .insert(1, vec![Relay::new(relay, 1, false).unwrap()]);
            Snapshot::with_lists(
                SetMap::from([(1, vec![d("10.0.0.1")])]),
                BTreeSet::new(),
                lists,
            )
        };
        let base = with("udp:10.0.0.1:22222");
        let next = with("udp:10.0.0.2:22222");
        let change = delta(&base, &next);
        assert!(change.sets.is_empty(), "the sets did not change");
        assert_eq!(change.rtpengine_sets[0].relays[0].url, "udp:10.0.0.2:22222");
        // A client knows the feeder's version, not the sets' own one.
        let completed = complete(&change, &[], &[&base]).unwrap();
        assert_eq!(completed.version(), next.version());
        assert_eq!(completed.sets(), next.sets());
        assert_eq!(completed.lists(), next.lists());
    }

    #[test]
    fn a_completed_delta_is_held_to_the_budget() {
        let dests = (0..MAX_DESTINATIONS)
            .map(|i| {
                let host = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
                Destination::parse_target(&host).unwrap()
            })
            .collect();
        let base = Snapshot::received(SetMap::from([(1, dests)]), "full");
        let mut one_more = response_of(vec![set(2, vec![dest("sip:10.9.9.9")])]);
        one_more.base_version = "full".into();
        let err = complete(&one_more, &[], &[&base]).unwrap_err();
        assert!(
            matches!(err, InvalidSnapshot::OverBudget(_)) && err.to_string().contains("50001"),
            "{err}"
        );
    }

    #[test]
    fn set_level_errors() {
        let err = snapshot(&response_of(vec![set(1, vec![]), set(1, vec![])]), &[]).unwrap_err();
        assert!(matches!(err, InvalidSnapshot::DuplicateSet(1)));
        let err = snapshot(
            &response_of(vec![set(1, vec![dest("sip:a"), dest("sip:a")])]),
            &[],
        )
        .unwrap_err();
        assert!(matches!(err, InvalidSnapshot::DuplicateUri { set: 1, .. }));
        let err = snapshot(&response_of(vec![set(MAX_INT + 1, vec![])]), &[]).unwrap_err();
        assert!(matches!(err, InvalidSnapshot::SetId(id) if id == MAX_INT + 1));
        let err = snapshot(&response_of(vec![set(3, vec![])]), &[1, 2]).unwrap_err();
        assert!(matches!(err, InvalidSnapshot::UnwantedSet(3)));
        let mut bad_version = response_of(vec![]);
        bad_version.version_info.clear();
        assert!(matches!(
            snapshot(&bad_version, &[]),
            Err(InvalidSnapshot::NoVersion)
        ));
        for version in ["v1\n1 sip:evil 0 0", "a b", &"v".repeat(MAX_VERSION + 1)] {
            bad_version.version_info = version.to_owned();
            assert!(matches!(
                snapshot(&bad_version, &[]),
                Err(InvalidSnapshot::Version(_))
            ));
        }
    }

    #[test]
    fn requests_follow_the_ack_nack_rules() {
        let hello = hello("kam-0", "dsfeed.so", &[1, 2], "v0");
        assert_eq!(hello.node.unwrap().id, "kam-0");
        assert_eq!(hello.set_ids, vec![1, 2]);
        assert_eq!(hello.version_info, "v0");
        assert!(hello.response_nonce.is_empty());
        let ack = answer("n2", "v2", Answer::Ack);
        assert_eq!(
            (ack.response_nonce.as_str(), ack.version_info.as_str()),
            ("n2", "v2")
        );
        assert!(ack.error_detail.is_none());
        let nack = answer("n3", "v2", Answer::Nack("bad".into()));
        assert_eq!(nack.version_info, "v2");
        let detail = nack.error_detail.unwrap();
        assert_eq!((detail.message.as_str(), detail.retrying), ("bad", false));
        let retrying = answer("n4", "v2", Answer::Retrying("later".into()));
        assert!(retrying.error_detail.unwrap().retrying);
        assert_eq!(filter(&[]), None);
        assert_eq!(filter(&[2, 1, 2]), Some(BTreeSet::from([1, 2])));
    }

    #[test]
    fn only_refusals_a_retry_cannot_change_are_final() {
        assert!(is_final(Code::Unauthenticated));
        assert!(is_final(Code::PermissionDenied));
        assert!(!is_final(Code::Unavailable));
        assert!(!is_final(Code::ResourceExhausted));
    }
}
