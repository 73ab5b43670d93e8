//! The apply engine: turns a feed snapshot into one swap of the stock
//! dispatcher's list.
//!
//! The dispatcher only offers "load a whole list file" (`ds_load_list`), and
//! that load resets every destination's runtime state. So each swap renders
//! the complete list: sets the feed does not carry are copied from the
//! in-memory list as they are, and a destination present before and after
//! keeps its runtime state bits (inactive, trying, disabled, probing) unless
//! the feed itself changed that bit since the last swap. Lines are ordered
//! so the in-memory order after the load equals the wanted order (the
//! loader reverses destinations of equal priority), which keeps hash-based
//! selection stable across swaps.

use std::collections::{BTreeSet, HashMap};

use crate::error::ApplyError;
use crate::snapshot::{Destination, FLAG_DISABLED, STATE_FLAGS, SetId, Sets, Snapshot, push_line};

/// Identity of the dispatcher's current list (its root's address; 0 when
/// there are no sets): a load that really happened changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListId(pub usize);

/// The stock dispatcher as the engine needs it.
pub trait Dispatcher {
    /// The current list's identity.
    fn list_id(&self) -> ListId;
    /// The current list, with each destination's live flags.
    fn live(&self) -> Sets;
    /// Runs the dispatcher's loader on `list` (dispatcher.list text).
    /// `Ok` when the loader reported success, which includes its silent
    /// "load command already generated" skip.
    fn load(&mut self, list: &str) -> Result<(), ApplyError>;
}

/// What a successful swap installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Every set of the new list (managed by the feed or not), with its
    /// destination count.
    pub sets: Vec<(SetId, usize)>,
    pub destinations: usize,
    /// Destinations the feed asked for that the dispatcher did not load (it
    /// logs why: a bad URI, an unresolvable host, IPv6 lookups disabled).
    pub dropped: Vec<(SetId, String)>,
    /// The list in the form to persist for a cold start: the feed's own
    /// flags rather than this moment's runtime state.
    pub list_file: String,
}

#[derive(Debug, Default)]
pub struct Engine {
    /// The flags the feed asked for at the last swap, by (set, URI): tells
    /// a change made by the feed from one made at runtime.
    feed_flags: HashMap<(SetId, String), u32>,
    /// The list the last swap installed.
    installed: Option<ListId>,
}

impl Engine {
    pub fn new() -> Self {
        Engine::default()
    }

    /// True when the dispatcher's list is no longer the one this engine
    /// installed: something else (`dispatcher.reload`, `ds_reload()`) swapped
    /// it, which breaks the single-writer rule the swap pacing relies on.
    pub fn foreign_swap(&self, dispatcher: &impl Dispatcher) -> bool {
        self.installed
            .is_some_and(|installed| installed != dispatcher.list_id())
    }

    /// Takes the dispatcher's current list as the base after a foreign
    /// swap was noticed and waited out.
    pub fn adopt(&mut self, dispatcher: &impl Dispatcher) {
        self.installed = Some(dispatcher.list_id());
    }

    /// Swaps in `snapshot` merged with the sets it does not carry.
    pub fn apply(
        &mut self,
        dispatcher: &mut impl Dispatcher,
        snapshot: &Snapshot,
    ) -> Result<Applied, ApplyError> {
        let before = dispatcher.list_id();
        let plan = plan(&dispatcher.live(), snapshot, &self.feed_flags);
        dispatcher.load(&plan.loaded)?;
        // A real load builds the new list while the old one is still
        // allocated, so a non-empty list never keeps its root. From no list
        // to no list (nothing loadable) cannot be told from a skip; the
        // destinations are then reported as dropped below.
        let after = dispatcher.list_id();
        if after == before && before != ListId(0) {
            return Err(ApplyError::Skipped);
        }

        self.installed = Some(after);
        self.feed_flags = snapshot
            .sets
            .iter()
            .flat_map(|(id, dests)| dests.iter().map(move |d| ((*id, d.uri.clone()), d.flags)))
            .collect();

        let loaded = dispatcher.live();
        let dropped = snapshot
            .sets
            .iter()
            .flat_map(|(id, dests)| dests.iter().map(move |d| (*id, d)))
            .filter(|(id, d)| {
                !loaded
                    .get(id)
                    .is_some_and(|live| live.iter().any(|l| l.uri == d.uri))
            })
            .map(|(id, d)| (id, d.uri.clone()))
            .collect();
        Ok(Applied {
            sets: plan.sets,
            destinations: plan.destinations,
            dropped,
            list_file: plan.persisted,
        })
    }
}

/// The texts one swap needs.
#[derive(Debug)]
struct Plan {
    /// What the loader reads now (runtime state carried over).
    loaded: String,
    /// What a cold start should read (the feed's flags).
    persisted: String,
    sets: Vec<(SetId, usize)>,
    destinations: usize,
}

fn plan(live: &Sets, snapshot: &Snapshot, feed_flags: &HashMap<(SetId, String), u32>) -> Plan {
    let ids: BTreeSet<SetId> = live.keys().chain(snapshot.sets.keys()).copied().collect();
    let mut plan = Plan {
        loaded: String::new(),
        persisted: String::new(),
        sets: Vec::with_capacity(ids.len()),
        destinations: 0,
    };
    for id in ids {
        let live_set = live.get(&id).map(Vec::as_slice).unwrap_or_default();
        let Some(wanted) = snapshot.sets.get(&id) else {
            // Not managed by the feed: keep it exactly as it is now.
            for dest in load_order(live_set) {
                push_line(&mut plan.loaded, id, dest, dest.flags);
                push_line(&mut plan.persisted, id, dest, dest.flags);
            }
            plan.sets.push((id, live_set.len()));
            plan.destinations += live_set.len();
            continue;
        };
        let live_flags: HashMap<&str, u32> =
            live_set.iter().map(|d| (d.uri.as_str(), d.flags)).collect();
        for dest in load_order(wanted) {
            let previous = feed_flags.get(&(id, dest.uri.clone())).copied();
            let flags = merge_flags(
                dest.flags,
                live_flags.get(dest.uri.as_str()).copied(),
                previous,
            );
            push_line(&mut plan.loaded, id, dest, flags);
            push_line(&mut plan.persisted, id, dest, dest.flags);
        }
        plan.sets.push((id, wanted.len()));
        plan.destinations += wanted.len();
    }
    plan
}

/// The flags to load for a destination the feed wants with `feed` flags.
/// Bits other than the state bits are the feed's. A state bit is the
/// feed's when the feed changed it since the previous swap (`previous`);
/// otherwise it keeps its live value, so probing's and `ds_mark_dst`'s
/// verdicts survive the swap. With no previous swap to compare with, only
/// the disabled bit (the feed's drain mark) is taken from the feed.
fn merge_flags(feed: u32, live: Option<u32>, previous: Option<u32>) -> u32 {
    let Some(live) = live else {
        return feed;
    };
    let from_feed = match previous {
        Some(previous) => (feed ^ previous) & STATE_FLAGS,
        None => FLAG_DISABLED,
    };
    (feed & !STATE_FLAGS) | (feed & from_feed) | (live & STATE_FLAGS & !from_feed)
}

/// The line order that makes the loader build `wanted`'s order: it keeps a
/// set sorted by priority, highest first, and puts each line before the
/// lines of equal priority read earlier. Highest priority first also keeps
/// the loader linear instead of quadratic when priorities differ.
fn load_order(wanted: &[Destination]) -> Vec<&Destination> {
    let mut order: Vec<&Destination> = wanted.iter().collect();
    order.sort_by_key(|d| std::cmp::Reverse(d.priority));
    for run in order.chunk_by_mut(|a, b| a.priority == b.priority) {
        run.reverse();
    }
    order
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A dispatcher that loads lists the way Kamailio 5.6's `ds_load_list`
    /// does: lines parsed by whitespace, each destination inserted after
    /// those of lower or equal priority, the set then reversed (reindex).
    #[derive(Default)]
    pub(crate) struct FakeDispatcher {
        pub sets: Sets,
        pub generation: usize,
        pub loads: Vec<String>,
        pub skip_next: bool,
        pub refuse_next: bool,
        /// URIs the loader drops (say, an unresolvable host).
        pub unloadable: Vec<String>,
    }

    impl Dispatcher for FakeDispatcher {
        fn list_id(&self) -> ListId {
            ListId(if self.sets.is_empty() {
                0
            } else {
                self.generation
            })
        }

        fn live(&self) -> Sets {
            self.sets.clone()
        }

        fn load(&mut self, list: &str) -> Result<(), ApplyError> {
            self.loads.push(list.to_owned());
            if std::mem::take(&mut self.skip_next) {
                return Ok(());
            }
            if std::mem::take(&mut self.refuse_next) {
                return Err(ApplyError::Refused);
            }
            let mut building: Sets = Sets::new();
            for line in list.lines().filter(|l| !l.starts_with('#')) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let dest = Destination {
                    uri: fields[1].to_owned(),
                    flags: fields[2].parse().unwrap(),
                    priority: fields[3].parse().unwrap(),
                    attrs: fields.get(4).copied().unwrap_or("").to_owned(),
                };
                if self.unloadable.contains(&dest.uri) {
                    continue;
                }
                let set = building.entry(fields[0].parse().unwrap()).or_default();
                let at = set
                    .iter()
                    .position(|d| d.priority > dest.priority)
                    .unwrap_or(set.len());
                set.insert(at, dest);
            }
            for set in building.values_mut() {
                set.reverse();
            }
            self.sets = building;
            self.generation += 1;
            Ok(())
        }
    }

    pub(crate) fn dest(uri: &str, flags: u32, priority: u32) -> Destination {
        Destination {
            uri: uri.to_owned(),
            flags,
            priority,
            attrs: String::new(),
        }
    }

    pub(crate) fn snapshot(version: &str, sets: Vec<(SetId, Vec<Destination>)>) -> Snapshot {
        Snapshot {
            version: version.to_owned(),
            sets: sets.into_iter().collect(),
        }
    }

    fn uris(sets: &Sets, id: SetId) -> Vec<&str> {
        sets[&id].iter().map(|d| d.uri.as_str()).collect()
    }

    #[test]
    fn in_memory_order_equals_the_wanted_order() {
        let mut d = FakeDispatcher::default();
        let mut engine = Engine::new();
        let wanted = vec![
            dest("sip:a", 0, 9),
            dest("sip:b", 0, 5),
            dest("sip:c", 0, 5),
            dest("sip:d", 0, 5),
            dest("sip:e", 0, 1),
        ];
        engine
            .apply(&mut d, &snapshot("v1", vec![(1, wanted)]))
            .unwrap();
        assert_eq!(
            uris(&d.sets, 1),
            ["sip:a", "sip:b", "sip:c", "sip:d", "sip:e"]
        );
        // The loaded text is highest priority first.
        let first = d.loads[0].lines().next().unwrap();
        assert!(first.contains("sip:a"), "{first}");
    }

    #[test]
    fn sets_absent_from_the_feed_survive_unchanged() {
        let mut d = FakeDispatcher::default();
        d.load("9 sip:x 0 3 duid=x\n9 sip:y 1 3\n9 sip:z 0 1\n1 sip:old 0 0\n")
            .unwrap();
        let kept = d.sets[&9].clone();
        let mut engine = Engine::new();
        let applied = engine
            .apply(
                &mut d,
                &snapshot("v1", vec![(1, vec![dest("sip:new", 0, 0)])]),
            )
            .unwrap();
        assert_eq!(d.sets[&9], kept);
        assert_eq!(uris(&d.sets, 1), ["sip:new"]);
        assert_eq!(applied.sets, vec![(1, 1), (9, 3)]);
        assert_eq!(applied.destinations, 4);
        assert!(applied.dropped.is_empty());
    }

    #[test]
    fn runtime_state_survives_and_feed_changes_win() {
        let mut d = FakeDispatcher::default();
        let mut engine = Engine::new();
        let v1 = snapshot(
            "v1",
            vec![(
                1,
                vec![
                    dest("sip:a", 0, 0),
                    dest("sip:b", 0, 0),
                    dest("sip:c", 16, 0),
                ],
            )],
        );
        engine.apply(&mut d, &v1).unwrap();
        // Probing marks a inactive+probing, ds_mark_dst disables b.
        d.sets.get_mut(&1).unwrap()[0].flags = 1 | 8;
        d.sets.get_mut(&1).unwrap()[1].flags = 4;
        let v2 = snapshot(
            "v2",
            vec![(
                1,
                vec![
                    dest("sip:a", 0, 0),
                    dest("sip:b", 0, 0),
                    dest("sip:c", 16, 0),
                    dest("sip:d", 0, 0),
                ],
            )],
        );
        let applied = engine.apply(&mut d, &v2).unwrap();
        let flags: Vec<u32> = d.sets[&1].iter().map(|d| d.flags).collect();
        assert_eq!(flags, [9, 4, 16, 0]);
        // The cold-start file carries the feed's flags, not runtime state.
        assert!(applied.list_file.contains("1 sip:a 0 0\n"));
        // The feed drains a (sets 4) and re-enables nothing else.
        let v3 = snapshot(
            "v3",
            vec![(
                1,
                vec![
                    dest("sip:a", 4, 0),
                    dest("sip:b", 0, 0),
                    dest("sip:c", 16, 0),
                    dest("sip:d", 0, 0),
                ],
            )],
        );
        engine.apply(&mut d, &v3).unwrap();
        let flags: Vec<u32> = d.sets[&1].iter().map(|d| d.flags).collect();
        assert_eq!(flags, [1 | 4 | 8, 4, 16, 0]);
        // The feed un-drains a: its disabled bit clears, probing's bits stay.
        engine.apply(&mut d, &v2).unwrap();
        assert_eq!(d.sets[&1][0].flags, 1 | 8);
    }

    #[test]
    fn first_swap_takes_only_the_drain_mark_from_the_feed() {
        let mut d = FakeDispatcher::default();
        d.load("1 sip:a 1 0\n1 sip:b 4 0\n1 sip:c 0 0\n").unwrap();
        let mut engine = Engine::new();
        let snap = snapshot(
            "v1",
            vec![(
                1,
                vec![
                    dest("sip:a", 0, 0),
                    dest("sip:b", 0, 0),
                    dest("sip:c", 4, 0),
                ],
            )],
        );
        engine.apply(&mut d, &snap).unwrap();
        let flags: Vec<u32> = d.sets[&1].iter().map(|d| d.flags).collect();
        assert_eq!(flags, [1, 0, 4]);
    }

    #[test]
    fn a_skipped_load_is_detected() {
        let mut d = FakeDispatcher::default();
        d.load("9 sip:z 0 0\n").unwrap();
        let mut engine = Engine::new();
        let snap = snapshot("v1", vec![(1, vec![dest("sip:a", 0, 0)])]);
        d.skip_next = true;
        assert!(matches!(
            engine.apply(&mut d, &snap),
            Err(ApplyError::Skipped)
        ));
        assert!(!d.sets.contains_key(&1));
        engine.apply(&mut d, &snap).unwrap();
        assert_eq!(uris(&d.sets, 1), ["sip:a"]);
        // Emptying an empty dispatcher changes nothing and is no skip.
        let mut empty = FakeDispatcher::default();
        engine.apply(&mut empty, &snapshot("v0", vec![])).unwrap();
        // Nor is a snapshot of which the loader could load nothing.
        let mut dropping = FakeDispatcher {
            unloadable: vec!["sip:a".into()],
            ..FakeDispatcher::default()
        };
        let applied = engine.apply(&mut dropping, &snap).unwrap();
        assert_eq!(applied.dropped, vec![(1, "sip:a".to_owned())]);
    }

    #[test]
    fn a_refused_load_keeps_the_previous_sets() {
        let mut d = FakeDispatcher::default();
        let mut engine = Engine::new();
        engine
            .apply(
                &mut d,
                &snapshot("v1", vec![(1, vec![dest("sip:a", 0, 0)])]),
            )
            .unwrap();
        d.refuse_next = true;
        let err = engine
            .apply(
                &mut d,
                &snapshot("v2", vec![(1, vec![dest("sip:b", 0, 0)])]),
            )
            .unwrap_err();
        assert!(matches!(err, ApplyError::Refused));
        assert_eq!(uris(&d.sets, 1), ["sip:a"]);
        assert!(!engine.foreign_swap(&d));
    }

    #[test]
    fn dropped_destinations_are_reported() {
        let mut d = FakeDispatcher {
            unloadable: vec!["sip:nowhere.invalid".into()],
            ..FakeDispatcher::default()
        };
        let mut engine = Engine::new();
        let applied = engine
            .apply(
                &mut d,
                &snapshot(
                    "v1",
                    vec![(
                        2,
                        vec![dest("sip:a", 0, 0), dest("sip:nowhere.invalid", 0, 0)],
                    )],
                ),
            )
            .unwrap();
        assert_eq!(applied.dropped, vec![(2, "sip:nowhere.invalid".to_owned())]);
    }

    #[test]
    fn another_writer_is_noticed() {
        let mut d = FakeDispatcher::default();
        let mut engine = Engine::new();
        assert!(!engine.foreign_swap(&d));
        engine
            .apply(
                &mut d,
                &snapshot("v1", vec![(1, vec![dest("sip:a", 0, 0)])]),
            )
            .unwrap();
        assert!(!engine.foreign_swap(&d));
        d.load("1 sip:a 0 0\n").unwrap();
        assert!(engine.foreign_swap(&d));
    }

    #[test]
    fn empty_feed_sets_empty_the_dispatcher_set() {
        let mut d = FakeDispatcher::default();
        d.load("1 sip:a 0 0\n2 sip:b 0 0\n").unwrap();
        let mut engine = Engine::new();
        let applied = engine
            .apply(&mut d, &snapshot("v1", vec![(1, vec![])]))
            .unwrap();
        assert!(!d.sets.contains_key(&1));
        assert_eq!(uris(&d.sets, 2), ["sip:b"]);
        assert_eq!(applied.sets, vec![(1, 0), (2, 1)]);
    }
}
