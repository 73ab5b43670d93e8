//! Protobuf ↔ module types, in one place: a `FeedResponse` becomes a checked
//! `Snapshot` (anything Kamailio's loader would misread is refused here, so
//! it is NACKed and never reaches the dispatcher), and the requests the
//! client sends are built here.

use std::collections::HashSet;

use dsfeed_proto::v1 as pb;

use crate::error::SnapshotError;
use crate::snapshot::{
    Destination, KNOWN_FLAGS, MAX_ID, MAX_LINE, SetId, Sets, Snapshot, line_len,
};

/// Checks a response against the feed contract and the dispatcher's list
/// format. `wanted` is the set filter sent on connect (empty: every set).
pub fn snapshot(response: &pb::FeedResponse, wanted: &[SetId]) -> Result<Snapshot, SnapshotError> {
    if response.version_info.is_empty() {
        return Err(SnapshotError::NoVersion);
    }
    let mut sets = Sets::new();
    for set in &response.sets {
        let id = set.id;
        if id > MAX_ID {
            return Err(SnapshotError::SetId(id));
        }
        if !wanted.is_empty() && !wanted.contains(&id) {
            return Err(SnapshotError::UnwantedSet(id));
        }
        let mut uris = HashSet::new();
        let mut dests = Vec::with_capacity(set.destinations.len());
        for dest in &set.destinations {
            let dest = destination(id, dest)?;
            if !uris.insert(dest.uri.clone()) {
                return Err(SnapshotError::DuplicateUri {
                    set: id,
                    uri: dest.uri,
                });
            }
            dests.push(dest);
        }
        if sets.insert(id, dests).is_some() {
            return Err(SnapshotError::DuplicateSet(id));
        }
    }
    Ok(Snapshot {
        version: response.version_info.clone(),
        sets,
    })
}

fn destination(set: SetId, dest: &pb::Destination) -> Result<Destination, SnapshotError> {
    let bad = |why: &'static str| SnapshotError::Destination {
        set,
        uri: dest.uri.clone(),
        why,
    };
    check_uri(&dest.uri).map_err(bad)?;
    if dest.flags & !KNOWN_FLAGS != 0 {
        return Err(bad("unknown flags (known: 1, 2, 4, 8, 16)"));
    }
    if dest.priority > MAX_ID {
        return Err(bad("priority above 2147483647"));
    }
    if dest
        .attrs
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '#')
    {
        return Err(bad("attrs contain whitespace, a control character or '#'"));
    }
    let dest = Destination {
        uri: dest.uri.clone(),
        flags: dest.flags,
        priority: dest.priority,
        attrs: dest.attrs.clone(),
    };
    if line_len(set, &dest) > MAX_LINE {
        return Err(bad("its dispatcher.list line is longer than 1022 bytes"));
    }
    Ok(dest)
}

/// The loader splits on whitespace and stops at `#`; Kamailio's URI parser
/// judges the rest, and a destination it drops is reported after the load.
fn check_uri(uri: &str) -> Result<(), &'static str> {
    let has_scheme = |scheme: &str| {
        uri.get(..scheme.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
    };
    let rest = if has_scheme("sip:") {
        &uri[4..]
    } else if has_scheme("sips:") {
        &uri[5..]
    } else {
        return Err("not a sip: or sips: URI");
    };
    if rest.is_empty() || rest.starts_with(';') {
        return Err("no host");
    }
    if uri
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '#')
    {
        return Err("contains whitespace, a control character or '#'");
    }
    Ok(())
}

/// The first request of every stream: who we are, which sets, and the
/// version already applied (empty if none) so an unchanged feeder sends
/// nothing.
pub fn hello(node_id: &str, user_agent: &str, sets: &[SetId], applied: &str) -> pb::FeedRequest {
    pb::FeedRequest {
        node: Some(pb::Node {
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
    /// memory, no file descriptor): the module keeps it and retries, and
    /// answers the same nonce again once applied.
    Retrying(String),
}

/// Answers the response with `nonce`. `version` is the version applied
/// after it: the response's on an ACK, the one kept otherwise.
pub fn answer(nonce: &str, version: &str, answer: Answer) -> pb::FeedRequest {
    let error_detail = match answer {
        Answer::Ack => None,
        Answer::Nack(message) => Some(pb::ErrorDetail {
            message,
            retrying: false,
        }),
        Answer::Retrying(message) => Some(pb::ErrorDetail {
            message,
            retrying: true,
        }),
    };
    pb::FeedRequest {
        node: None,
        set_ids: Vec::new(),
        version_info: version.to_owned(),
        response_nonce: nonce.to_owned(),
        error_detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(uri: &str) -> pb::Destination {
        pb::Destination {
            uri: uri.into(),
            flags: 0,
            priority: 0,
            attrs: String::new(),
        }
    }

    fn response(sets: Vec<pb::Set>) -> pb::FeedResponse {
        pb::FeedResponse {
            version_info: "v1".into(),
            nonce: "n1".into(),
            sets,
        }
    }

    fn set(id: u32, dests: Vec<pb::Destination>) -> pb::Set {
        pb::Set {
            id,
            destinations: dests,
        }
    }

    #[test]
    fn valid_response_keeps_order_and_empty_sets() {
        let mut second = dest("sip:10.0.0.2:5060;transport=tcp");
        second.flags = 4;
        second.priority = 1;
        second.attrs = "duid=b;weight=50".into();
        let snap = snapshot(
            &response(vec![
                set(1, vec![dest("sip:10.0.0.1:5060"), second]),
                set(2, vec![]),
                set(3, vec![dest("sips:[2001:db8::1]:5061")]),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(snap.version, "v1");
        assert_eq!(snap.sets.len(), 3);
        assert!(snap.sets[&2].is_empty());
        assert_eq!(snap.sets[&1][1].attrs, "duid=b;weight=50");
        assert_eq!(snap.sets.values().map(Vec::len).sum::<usize>(), 3);
    }

    #[test]
    fn anything_the_loader_would_misread_is_refused() {
        let cases: Vec<(pb::Destination, &str)> = vec![
            (dest("10.0.0.1:5060"), "sip:"),
            (dest("sip:"), "no host"),
            (dest("sip:a b"), "whitespace"),
            (dest("sip:a#b"), "'#'"),
            (
                pb::Destination {
                    flags: 32,
                    ..dest("sip:a")
                },
                "flags",
            ),
            (
                pb::Destination {
                    priority: u32::MAX,
                    ..dest("sip:a")
                },
                "priority",
            ),
            (
                pb::Destination {
                    attrs: "a=b c=d".into(),
                    ..dest("sip:a")
                },
                "attrs",
            ),
            (
                pb::Destination {
                    attrs: format!("x={}", "y".repeat(1100)),
                    ..dest("sip:a")
                },
                "1022",
            ),
        ];
        for (bad, expect) in cases {
            let uri = bad.uri.clone();
            let err = snapshot(&response(vec![set(7, vec![bad])]), &[]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(expect) && text.contains("set 7"), "{text}");
            assert!(text.contains(&uri), "{text}");
        }
    }

    #[test]
    fn set_level_errors() {
        let err = snapshot(&response(vec![set(1, vec![]), set(1, vec![])]), &[]).unwrap_err();
        assert_eq!(err, SnapshotError::DuplicateSet(1));
        let err = snapshot(
            &response(vec![set(1, vec![dest("sip:a"), dest("sip:a")])]),
            &[],
        )
        .unwrap_err();
        assert!(matches!(err, SnapshotError::DuplicateUri { set: 1, .. }));
        let err = snapshot(&response(vec![set(MAX_ID + 1, vec![])]), &[]).unwrap_err();
        assert_eq!(err, SnapshotError::SetId(MAX_ID + 1));
        let err = snapshot(&response(vec![set(3, vec![])]), &[1, 2]).unwrap_err();
        assert_eq!(err, SnapshotError::UnwantedSet(3));
        let mut no_version = response(vec![]);
        no_version.version_info.clear();
        assert_eq!(
            snapshot(&no_version, &[]).unwrap_err(),
            SnapshotError::NoVersion
        );
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
        let error = nack.error_detail.unwrap();
        assert_eq!((error.message.as_str(), error.retrying), ("bad", false));
        let later = answer("n4", "v2", Answer::Retrying("no fd".into()));
        assert_eq!(later.version_info, "v2");
        let error = later.error_detail.unwrap();
        assert_eq!((error.message.as_str(), error.retrying), ("no fd", true));
    }
}
