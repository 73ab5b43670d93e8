//! The canonical, versioned content of every set.
//!
//! Canonical means sorted and de-duplicated, so that two feeders watching the
//! same truth render byte-identical lists and publish the same version, and a
//! Kamailio moving between them re-applies nothing.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::{self, Write as _};

use sha2::{Digest, Sha256};

use crate::destination::{Destination, SetId};
use crate::list;
use crate::lists::{ListKind, Lists};

/// Sets as one source (or the merge of all) sees them.
pub type SetMap = BTreeMap<SetId, Vec<Destination>>;

/// Every set's destinations in canonical order, the sets held back, the
/// other lists (rtpengine relays, SIP domains) and the version of it all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    sets: SetMap,
    /// Sets no source can vouch for yet (a Consul service whose first answer
    /// after a restart was suspiciously empty): they carry no content, and
    /// every sink keeps what it already has for them.
    held: BTreeSet<SetId>,
    lists: Lists,
    version: String,
    /// The version of the sets alone (equal to `version` without lists).
    sets_version: String,
}

impl Snapshot {
    /// Canonicalizes `sets`: destinations sorted, a URI listed twice in one
    /// set kept once (the entry that sorts first wins), and empty sets kept,
    /// since an empty set is real data (a Service with no endpoints). It
    /// cannot fail: every [`Destination`] fits Kamailio's line in any set.
    pub fn new(sets: SetMap) -> Self {
        Snapshot::with_held(sets, BTreeSet::new())
    }

    /// Like [`Snapshot::new`], with the sets in `held` marked as held: their
    /// content, if any, is dropped, and sinks keep what they have for them.
    pub fn with_held(sets: SetMap, held: BTreeSet<SetId>) -> Self {
        Snapshot::with_lists(sets, held, Lists::default())
    }

    /// Like [`Snapshot::with_held`], with rtpengine relays and SIP domains
    /// beside the sets, canonical too. The version covers them; with no
    /// lists it is the version of the sets alone, as before dsfeed knew of
    /// lists.
    pub fn with_lists(mut sets: SetMap, held: BTreeSet<SetId>, mut lists: Lists) -> Self {
        sets.retain(|id, _| !held.contains(id));
        for dests in sets.values_mut() {
            canonicalize(dests);
        }
        lists.canonicalize();
        let (version, sets_version) = versions_of(&sets, &held, &lists);
        Snapshot {
            sets,
            held,
            lists,
            version,
            sets_version,
        }
    }

    /// A snapshot as a feed client receives it: the sets canonical, the
    /// version the feeder's own (opaque to a client, never recomputed).
    /// Clients get theirs from [`crate::pb::snapshot`]; this is for a
    /// client's own tests.
    pub fn received(mut sets: SetMap, version: impl Into<String>) -> Self {
        let version = version.into();
        for dests in sets.values_mut() {
            canonicalize(dests);
        }
        Snapshot {
            sets,
            held: BTreeSet::new(),
            lists: Lists::default(),
            sets_version: version.clone(),
            version,
        }
    }

    /// [`Snapshot::received`] with the lists a client asked for beside the
    /// sets.
    pub fn received_with_lists(sets: SetMap, mut lists: Lists, version: impl Into<String>) -> Self {
        lists.canonicalize();
        Snapshot {
            lists,
            ..Snapshot::received(sets, version)
        }
    }

    /// The hex SHA-256 prefix of the rendered sets and lists: equal
    /// content, equal version, on every feeder. On a client, the feeder's
    /// version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The version of the sets alone: what `dispatcher.list`'s header, the
    /// membership API and a feed client that asks for no list carry, so a
    /// change of a list alone rewrites and reloads nothing of the
    /// dispatcher's. Equal to [`Snapshot::version`] when there are no lists.
    pub fn sets_version(&self) -> &str {
        &self.sets_version
    }

    /// The sets with known content; held sets are not among them.
    pub fn sets(&self) -> &SetMap {
        &self.sets
    }

    /// The ids of the held sets.
    pub fn held(&self) -> &BTreeSet<SetId> {
        &self.held
    }

    /// The rtpengine relays and SIP domains.
    pub fn lists(&self) -> &Lists {
        &self.lists
    }

    /// The sets with only the lists of `kinds`, as a snapshot of their own:
    /// a client that asks for no list gets the sets alone, with the version
    /// they have on their own, so a change of a list it did not ask for
    /// never reaches it. Borrowed when it has no other list: the feed
    /// asks this for every view it builds, and most snapshots carry none.
    pub fn with_only(&self, kinds: &BTreeSet<ListKind>) -> Cow<'_, Snapshot> {
        let lists = self.lists.only(kinds);
        if lists == self.lists {
            return Cow::Borrowed(self);
        }
        let version = if lists.is_empty() {
            self.sets_version.clone()
        } else {
            version_of(&self.sets, &self.held, &lists)
        };
        Cow::Owned(Snapshot {
            sets: self.sets.clone(),
            held: self.held.clone(),
            lists,
            version,
            sets_version: self.sets_version.clone(),
        })
    }

    /// The sets among `ids` that exist, as a snapshot of their own: a client
    /// that asks for some sets gets a version that changes only when those
    /// sets do, and is the same on every feeder. The lists stay as they are.
    pub fn filtered(&self, ids: &BTreeSet<SetId>) -> Snapshot {
        // A subset of a canonical snapshot is canonical and valid already.
        let sets: SetMap = self
            .sets
            .iter()
            .filter(|(id, _)| ids.contains(id))
            .map(|(id, dests)| (*id, dests.clone()))
            .collect();
        let held = self.held.intersection(ids).copied().collect();
        let (version, sets_version) = versions_of(&sets, &held, &self.lists);
        Snapshot {
            sets,
            held,
            lists: self.lists.clone(),
            version,
            sets_version,
        }
    }

    pub fn destination_count(&self) -> usize {
        self.sets.values().map(Vec::len).sum()
    }

    /// The content of `dispatcher.list`: a header naming the version, then
    /// one line per destination. Held sets are left out; see
    /// [`Snapshot::to_dispatcher_list_keeping`].
    pub fn to_dispatcher_list(&self) -> String {
        self.to_dispatcher_list_keeping("")
    }

    /// The content of `dispatcher.list`, with the lines of held sets taken
    /// from `previous` (the list file as it is), so a held set keeps what
    /// Kamailio would load from the file today.
    pub fn to_dispatcher_list_keeping(&self, previous: &str) -> String {
        let mut out = list::header(&self.sets_version);
        let mut kept: BTreeMap<SetId, Vec<&str>> = BTreeMap::new();
        for line in previous.lines() {
            if let Some(id) = list::set_id_of(line).filter(|id| self.held.contains(id)) {
                kept.entry(id).or_default().push(line);
            }
        }
        let ids: BTreeSet<SetId> = self.sets.keys().chain(kept.keys()).copied().collect();
        for id in ids {
            for dest in self.sets.get(&id).into_iter().flatten() {
                out.push_str(&list::line(id, dest));
                out.push('\n');
            }
            for line in kept.get(&id).into_iter().flatten() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "version {} ({} sets, {} destinations",
            self.version,
            self.sets.len(),
            self.destination_count()
        )?;
        if !self.held.is_empty() {
            write!(f, ", held sets {:?}", self.held)?;
        }
        if !self.lists.is_empty() {
            write!(
                f,
                ", {} rtpengine relays, {} domains",
                self.lists.relay_count(),
                self.lists.domain_count()
            )?;
        }
        f.write_str(")")
    }
}

/// Sorts a set canonically and keeps the first entry of each URI.
fn canonicalize(dests: &mut Vec<Destination>) {
    dests.sort_by(Destination::canonical_cmp);
    let mut seen = HashSet::new();
    dests.retain(|d| seen.insert(d.uri().to_owned()));
}

/// The version of everything, and that of the sets alone.
fn versions_of(sets: &SetMap, held: &BTreeSet<SetId>, lists: &Lists) -> (String, String) {
    let sets_version = version_of(sets, held, &Lists::default());
    if lists.is_empty() {
        return (sets_version.clone(), sets_version);
    }
    (version_of(sets, held, lists), sets_version)
}

fn version_of(sets: &SetMap, held: &BTreeSet<SetId>, lists: &Lists) -> String {
    let mut body = String::new();
    for (id, dests) in sets {
        for dest in dests {
            body.push_str(&list::line(*id, dest));
            body.push('\n');
        }
    }
    // Empty and held sets render no line but are still part of the truth.
    for (id, dests) in sets {
        if dests.is_empty() {
            let _ = writeln!(body, "# empty {id}");
        }
    }
    for id in held {
        let _ = writeln!(body, "# held {id}");
    }
    // Nothing when there are no lists: the version of a dispatcher-only
    // snapshot is what it was before lists existed.
    lists.version_lines(&mut body);
    let digest = Sha256::digest(body.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_INT;
    use crate::destination::MAX_LINE;

    fn dest(uri: &str, priority: u32) -> Destination {
        Destination::new(uri, 0, priority, "").unwrap()
    }

    #[test]
    fn canonical_order_dedup_and_version() {
        let a = Snapshot::new(SetMap::from([
            (2, vec![dest("sip:b:5060", 0), dest("sip:a:5060", 0)]),
            (
                1,
                vec![
                    dest("sip:low:5060", 1),
                    dest("sip:high:5060", 9),
                    dest("sip:low:5060", 1),
                ],
            ),
        ]));
        let b = Snapshot::new(SetMap::from([
            (1, vec![dest("sip:high:5060", 9), dest("sip:low:5060", 1)]),
            (2, vec![dest("sip:a:5060", 0), dest("sip:b:5060", 0)]),
        ]));
        assert_eq!(a, b);
        assert_eq!(a.version().len(), 16);
        let body: Vec<_> = a
            .to_dispatcher_list()
            .lines()
            .skip(1)
            .map(str::to_owned)
            .collect();
        assert_eq!(
            body,
            [
                "1 sip:high:5060 0 9",
                "1 sip:low:5060 0 1",
                "2 sip:a:5060 0 0",
                "2 sip:b:5060 0 0"
            ]
        );
        let c = Snapshot::new(SetMap::from([(1, vec![dest("sip:high:5060", 9)])]));
        assert_ne!(a.version(), c.version());
    }

    #[test]
    fn an_empty_set_changes_the_version() {
        let none = Snapshot::new(SetMap::new());
        let empty = Snapshot::new(SetMap::from([(1, vec![])]));
        assert_ne!(none.version(), empty.version());
        assert_eq!(empty.to_dispatcher_list().lines().count(), 1);
    }

    #[test]
    fn a_filtered_snapshot_has_its_own_stable_version() {
        let full = Snapshot::new(SetMap::from([
            (1, vec![dest("sip:a:5060", 0)]),
            (2, vec![dest("sip:b:5060", 0)]),
            (3, vec![]),
        ]));
        let only_two = full.filtered(&BTreeSet::from([2, 9]));
        assert_eq!(only_two.sets().keys().copied().collect::<Vec<_>>(), [2]);
        let direct = Snapshot::new(SetMap::from([(2, vec![dest("sip:b:5060", 0)])]));
        assert_eq!(only_two, direct);
        assert_ne!(only_two.version(), full.version());
        assert_eq!(full.filtered(&BTreeSet::from([1, 2, 3])), full);
    }

    #[test]
    fn held_sets_keep_the_lines_of_the_previous_file() {
        let sets = SetMap::from([
            (1, vec![dest("sip:a:5060", 0)]),
            (3, vec![dest("sip:c:5060", 0)]),
        ]);
        let held = Snapshot::with_held(sets.clone(), BTreeSet::from([2, 3]));
        assert_eq!(held.sets().keys().copied().collect::<Vec<_>>(), [1]);
        assert_ne!(held.version(), Snapshot::new(sets).version());
        let previous = "# old\n1 sip:old:5060 0 0\n2 sip:b:5060 8 0 duid=b\n2 sip:b2:5060 0 0\n";
        let list = held.to_dispatcher_list_keeping(previous);
        let body: Vec<&str> = list.lines().skip(1).collect();
        assert_eq!(
            body,
            [
                "1 sip:a:5060 0 0",
                "2 sip:b:5060 8 0 duid=b",
                "2 sip:b2:5060 0 0"
            ]
        );
        assert_eq!(
            held.filtered(&BTreeSet::from([2])).held(),
            &BTreeSet::from([2])
        );
        assert!(held.to_string().contains("held sets {2, 3}"), "{held}");
    }

    /// Versions are compared across feeders, replicas and releases: a
    /// change of what is hashed, however small, makes every Kamailio
    /// re-apply its sets once and two feeders of different releases
    /// disagree. Any change here must be deliberate.
    #[test]
    fn the_version_of_known_content_never_changes() {
        use crate::relay::Relay;
        let sets = SetMap::from([
            (1, vec![dest("sip:a:5060", 0), dest("sip:b:5080", 5)]),
            (2, vec![]),
        ]);
        assert_eq!(Snapshot::new(sets.clone()).version(), "291a158386dc166b");
        let mut lists = Lists::default();
        lists.rtpengine.insert(
            1,
            vec![
                Relay::parse_target("10.0.0.1").unwrap(),
                Relay::parse_target("udp6:[2001:db8::1]:2223").unwrap(),
            ],
        );
        lists.held_rtpengine.insert(4);
        lists.domains.insert(
            String::new(),
            BTreeSet::from(["sip.example.com".to_owned()]),
        );
        lists.domains.insert(
            "tenant-1".to_owned(),
            BTreeSet::from(["a.example.com".to_owned(), "b.example.com".to_owned()]),
        );
        lists.held_domains.insert("tenant-2".to_owned());
        let full = Snapshot::with_lists(sets, BTreeSet::from([3]), lists);
        assert_eq!(full.version(), "b9408156afeb11d6");
    }

    #[test]
    fn lists_change_the_version_only_for_who_asks_for_them() {
        use crate::relay::Relay;
        let sets = SetMap::from([(1, vec![dest("sip:a:5060", 0)])]);
        let plain = Snapshot::new(sets.clone());
        let mut lists = Lists::default();
        lists
            .rtpengine
            .insert(1, vec![Relay::parse_target("10.0.0.1").unwrap()]);
        let full = Snapshot::with_lists(sets.clone(), BTreeSet::new(), lists.clone());
        assert_ne!(full.version(), plain.version());
        assert_eq!(*full.with_only(&BTreeSet::new()), plain);
        assert_eq!(full.sets_version(), plain.version());
        assert_eq!(full.to_dispatcher_list(), plain.to_dispatcher_list());
        assert_eq!(
            *full.with_only(&BTreeSet::from([ListKind::Rtpengine])),
            full
        );
        let domains_only = full.with_only(&BTreeSet::from([ListKind::Domain]));
        assert_eq!(domains_only.version(), plain.version());
        lists.held_domains.insert("t".into());
        let holding = Snapshot::with_lists(sets, BTreeSet::new(), lists);
        assert_ne!(holding.version(), full.version());
        assert!(
            holding
                .to_string()
                .contains("1 rtpengine relays, 0 domains"),
            "{holding}"
        );
    }

    #[test]
    fn the_widest_line_fits_kamailios_buffer() {
        let fits = format!("x={}", "a".repeat(crate::MAX_DESTINATION_LINE - 22 - 2));
        let dest = Destination::new("sip:10.0.0.1:5060", 0, 0, fits).unwrap();
        let widest = Snapshot::new(SetMap::from([(MAX_INT, vec![dest])]));
        let line = widest.to_dispatcher_list().lines().nth(1).unwrap().len();
        assert_eq!(line, MAX_LINE);
    }
}
