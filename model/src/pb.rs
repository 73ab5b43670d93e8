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
    Scanned, Size, scan,
};

pub use dsfeed_proto::v1::{
    Destination as WireDestination, ErrorDetail, FeedRequest, FeedResponse, Node, Set, feed_client,
    feed_server,
};

use crate::destination::{Destination, MAX_INT, SetId};
use crate::error::InvalidSnapshot;
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

/// The response that carries `snapshot` with `nonce`.
pub fn response(snapshot: &Snapshot, nonce: String) -> FeedResponse {
    FeedResponse {
        version_info: snapshot.version().to_owned(),
        nonce,
        sets: sets(snapshot),
    }
}

/// A response as a client takes it: every destination through the same
/// checks a source's get, and the contract's own rules (a version, each set
/// once, only the sets asked for, each URI once per set). `wanted` is the
/// set filter sent on connect (empty: every set).
pub fn snapshot(response: &FeedResponse, wanted: &[SetId]) -> Result<Snapshot, InvalidSnapshot> {
    let version = &response.version_info;
    if version.is_empty() {
        return Err(InvalidSnapshot::NoVersion);
    }
    if version.len() > MAX_VERSION || !version.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidSnapshot::Version(version.escape_debug().to_string()));
    }
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
    Ok(Snapshot::received(sets, version.clone()))
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
