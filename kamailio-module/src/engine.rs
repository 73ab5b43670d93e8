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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::error::ApplyError;
use dsfeed_model::list::{RawDestination, RawSets, push_line, push_raw_line};
use dsfeed_model::{FLAG_DISABLED, STATE_FLAGS, SetId, Snapshot};

/// Identity of the dispatcher's current list (its root's address; 0 when
/// there are no sets): a load that really happened changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListId(pub usize);

/// The stock dispatcher as the engine needs it.
pub trait Dispatcher {
    /// The current list's identity.
    fn list_id(&self) -> ListId;
    /// The current list as it is in memory, with each destination's live
    /// flags.
    fn live(&self) -> RawSets;
    /// How many destinations each set of the current list has: what tells
    /// that a load dropped nothing, without copying the list.
    fn counts(&self) -> BTreeMap<i32, usize>;
    /// Runs the dispatcher's loader on `list` (dispatcher.list text, which
    /// may carry bytes that are not UTF-8). `Ok` when the loader reported
    /// success, which includes its silent "load command already generated"
    /// skip.
    fn load(&mut self, list: &[u8]) -> Result<(), ApplyError>;
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
    pub list_file: Vec<u8>,
}

#[derive(Debug)]
pub struct Engine {
    /// The flags the feed asked for at the last swap, by (set, URI): tells
    /// a change made by the feed from one made at runtime.
    feed_flags: FeedFlags,
    /// The list the module knows as current: the one its last swap
    /// installed, or one it adopted after noticing another writer's load
    /// (at start, the one it found).
    known: ListId,
}

impl Engine {
    /// An engine that knows the dispatcher's current list as one it did not
    /// make: the feed paces its first swap as if that list had just been
    /// loaded, since nothing tells when it was.
    pub fn new(dispatcher: &impl Dispatcher) -> Self {
        Engine {
            feed_flags: HashMap::new(),
            known: dispatcher.list_id(),
        }
    }

    /// True when the dispatcher's list is no longer the one this engine
    /// knows: something else (`dispatcher.reload`, `ds_reload()`,
    /// `dispatcher.add`) loaded it, which breaks the single-writer rule the
    /// swap pacing relies on.
    pub fn foreign_load(&self, dispatcher: &impl Dispatcher) -> bool {
        self.known != dispatcher.list_id()
    }

    /// Takes the dispatcher's current list as known, once another writer's
    /// load was noticed (and its interval started).
    pub fn adopt(&mut self, dispatcher: &impl Dispatcher) {
        self.known = dispatcher.list_id();
    }

    /// Swaps in `snapshot` merged with the sets it does not carry. Refuses
    /// with [`ApplyError::ForeignLoad`] when the list changed behind the
    /// module's back, checked before the walk and again right before the
    /// load.
    pub fn apply(
        &mut self,
        dispatcher: &mut impl Dispatcher,
        snapshot: &Snapshot,
    ) -> Result<Applied, ApplyError> {
        let before = dispatcher.list_id();
        if before != self.known {
            return Err(ApplyError::ForeignLoad);
        }
        let plan = plan(&dispatcher.live(), snapshot, &self.feed_flags)?;
        // Walking and rendering a big list takes a while: another writer's
        // load in the meantime must not be followed by ours at once.
        if dispatcher.list_id() != before {
            return Err(ApplyError::ForeignLoad);
        }
        dispatcher.load(&plan.loaded)?;
        // A real load builds the new list while the old one is still
        // allocated, so a non-empty list never keeps its root. From no list
        // to no list (nothing loadable) cannot be told from a skip; the
        // destinations are then reported as dropped below.
        let after = dispatcher.list_id();
        if after == before && before != ListId(0) {
            return Err(ApplyError::Skipped);
        }

        self.known = after;
        self.feed_flags = snapshot
            .sets()
            .iter()
            .map(|(id, dests)| {
                let flags = dests.iter().map(|d| (d.uri().to_owned(), d.flags()));
                (*id, flags.collect())
            })
            .collect();

        Ok(Applied {
            sets: plan.sets,
            destinations: plan.destinations,
            dropped: dropped(dispatcher, snapshot),
            list_file: plan.persisted,
        })
    }
}

/// The destinations of `snapshot` that the dispatcher's loader left out of
/// the list it just built (it drops a destination it cannot resolve or
/// parse), by set.
fn dropped<D: Dispatcher>(dispatcher: &D, snapshot: &Snapshot) -> Vec<(SetId, String)> {
    // Every set as long as wanted: nothing dropped, which is the rule,
    // and the list need not be copied again to tell.
    let counts = dispatcher.counts();
    let complete = snapshot.sets().iter().all(|(id, dests)| {
        let count = i32::try_from(*id).ok().and_then(|id| counts.get(&id));
        count.copied().unwrap_or(0) == dests.len()
    });
    if complete {
        return Vec::new();
    }
    // Hashed: looking each wanted URI up in a list walk made a swap of
    // 10,000 destinations in one set quadratic.
    let live = dispatcher.live();
    let loaded: HashSet<(i32, &[u8])> = live
        .iter()
        .flat_map(|(id, dests)| dests.iter().map(move |d| (*id, d.uri.as_slice())))
        .collect();
    snapshot
        .sets()
        .iter()
        .flat_map(|(id, dests)| dests.iter().map(move |d| (*id, d)))
        .filter(|(id, d)| {
            !i32::try_from(*id).is_ok_and(|id| loaded.contains(&(id, d.uri().as_bytes())))
        })
        .map(|(id, d)| (id, d.uri().to_owned()))
        .collect()
}

/// The flags the feed asked for at the last swap, by set and URI.
type FeedFlags = HashMap<SetId, HashMap<String, u32>>;

/// The texts one swap needs.
#[derive(Debug)]
struct Plan {
    /// What the loader reads now (runtime state carried over).
    loaded: Vec<u8>,
    /// What a cold start should read (the feed's flags).
    persisted: Vec<u8>,
    sets: Vec<(SetId, usize)>,
    destinations: usize,
}

fn plan(live: &RawSets, snapshot: &Snapshot, feed_flags: &FeedFlags) -> Result<Plan, ApplyError> {
    // Live set ids are C ints, the feed's are checked to fit one.
    let ids: BTreeSet<i64> = live
        .keys()
        .map(|id| i64::from(*id))
        .chain(snapshot.sets().keys().map(|id| i64::from(*id)))
        .collect();
    let mut plan = Plan {
        loaded: Vec::new(),
        persisted: Vec::new(),
        sets: Vec::with_capacity(ids.len()),
        destinations: 0,
    };
    for id in ids {
        let live_set = i32::try_from(id)
            .ok()
            .and_then(|id| live.get(&id))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let wanted = SetId::try_from(id)
            .ok()
            .and_then(|id| snapshot.sets().get(&id).map(|wanted| (id, wanted)));
        let Some((id, wanted)) = wanted else {
            // Not managed by the feed: write it back exactly as it is now,
            // or not at all.
            keep_live_set(&mut plan, id, live_set)?;
            continue;
        };
        let live_flags: HashMap<&[u8], i32> = live_set
            .iter()
            .map(|d| (d.uri.as_slice(), d.flags))
            .collect();
        for dest in load_order(wanted, |d| i64::from(d.priority())) {
            let previous = feed_flags
                .get(&id)
                .and_then(|set| set.get(dest.uri()))
                .copied();
            let live = live_flags
                .get(dest.uri().as_bytes())
                .map(|flags| *flags as u32);
            let flags = merge_flags(dest.flags(), live, previous);
            push_line(&mut plan.loaded, id, dest, flags);
            push_line(&mut plan.persisted, id, dest, dest.flags());
        }
        plan.sets.push((id, wanted.len()));
        plan.destinations += wanted.len();
    }
    Ok(plan)
}

/// Renders a set the feed does not carry from its in-memory destinations,
/// refusing the whole swap if one of them cannot be written back exactly.
fn keep_live_set(plan: &mut Plan, id: i64, live_set: &[RawDestination]) -> Result<(), ApplyError> {
    // Only the dispatcher's own (C int) ids reach here.
    let set = i32::try_from(id).unwrap_or(i32::MIN);
    for dest in load_order(live_set, |d| i64::from(d.priority)) {
        let unrenderable = |why: String| ApplyError::Unrenderable {
            set,
            uri: String::from_utf8_lossy(&dest.uri).into_owned(),
            why,
        };
        push_raw_line(&mut plan.loaded, set, dest, dest.flags).map_err(unrenderable)?;
        push_raw_line(&mut plan.persisted, set, dest, dest.flags).map_err(unrenderable)?;
    }
    // A negative id cannot have been rendered above, so it has no
    // destinations: nothing of it is loaded or reported.
    if let Ok(id) = SetId::try_from(id) {
        plan.sets.push((id, live_set.len()));
        plan.destinations += live_set.len();
    }
    Ok(())
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
fn load_order<T>(wanted: &[T], priority: impl Fn(&T) -> i64) -> Vec<&T> {
    let mut order: Vec<&T> = wanted.iter().collect();
    order.sort_by_key(|d| std::cmp::Reverse(priority(d)));
    for run in order.chunk_by_mut(|a, b| priority(a) == priority(b)) {
        run.reverse();
    }
    order
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    use super::*;
    use dsfeed_model::Destination;

    /// A dispatcher that loads lists the way Kamailio 5.6's `ds_load_list`
    /// does: lines split at whitespace, digits only for the numbers, each
    /// destination inserted after those of lower or equal priority, the set
    /// then reversed (reindex).
    #[derive(Default)]
    pub(crate) struct FakeDispatcher {
        pub sets: RawSets,
        pub generation: Cell<usize>,
        pub loads: Vec<Vec<u8>>,
        pub skip_next: bool,
        pub refuse_next: bool,
        /// Another writer loads the list while the module walks it.
        pub load_during_walk: Cell<bool>,
        /// URIs the loader drops (say, an unresolvable host).
        pub unloadable: Vec<String>,
    }

    impl FakeDispatcher {
        /// Loads `list` as another writer would (`dispatcher.reload`).
        pub fn foreign(&mut self, list: &str) {
            self.load(list.as_bytes()).unwrap();
            self.loads.pop();
        }
    }

    impl Dispatcher for FakeDispatcher {
        fn list_id(&self) -> ListId {
            ListId(if self.sets.is_empty() {
                0
            } else {
                self.generation.get()
            })
        }

        fn live(&self) -> RawSets {
            if self.load_during_walk.take() {
                self.generation.set(self.generation.get() + 1);
            }
            self.sets.clone()
        }

        fn counts(&self) -> BTreeMap<i32, usize> {
            self.sets.iter().map(|(id, set)| (*id, set.len())).collect()
        }

        fn load(&mut self, list: &[u8]) -> Result<(), ApplyError> {
            self.loads.push(list.to_owned());
            if std::mem::take(&mut self.skip_next) {
                return Ok(());
            }
            if std::mem::take(&mut self.refuse_next) {
                return Err(ApplyError::Refused);
            }
            let mut building = RawSets::new();
            for line in list.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let fields: Vec<&[u8]> = line
                    .split(|b| matches!(b, b' ' | b'\t'))
                    .filter(|f| !f.is_empty())
                    .collect();
                let number = |field: &[u8]| -> i32 {
                    assert!(field.iter().all(u8::is_ascii_digit), "{line:?}");
                    std::str::from_utf8(field).unwrap().parse().unwrap()
                };
                let dest = RawDestination {
                    uri: fields[1].to_vec(),
                    flags: number(fields[2]),
                    priority: number(fields[3]),
                    attrs: fields.get(4).copied().unwrap_or_default().to_vec(),
                };
                if self.unloadable.iter().any(|u| u.as_bytes() == dest.uri) {
                    continue;
                }
                let set = building.entry(number(fields[0])).or_default();
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
            self.generation.set(self.generation.get() + 1);
            Ok(())
        }
    }

    pub(crate) fn dest(uri: &str, flags: u32, priority: u32) -> Destination {
        Destination::new(uri, flags, priority, "").unwrap()
    }

    pub(crate) fn snapshot(version: &str, sets: Vec<(SetId, Vec<Destination>)>) -> Snapshot {
        Snapshot::received(sets.into_iter().collect(), version)
    }

    /// A snapshot of set 1 alone, from `(uri, flags)` pairs of priority 0.
    fn set_one(version: &str, dests: &[(&str, u32)]) -> Snapshot {
        let dests = dests.iter().map(|(uri, flags)| dest(uri, *flags, 0));
        snapshot(version, vec![(1, dests.collect())])
    }

    /// A dispatcher into which another writer loaded `list` (if any), and
    /// an engine that starts on it.
    fn engine_on(list: &str) -> (FakeDispatcher, Engine) {
        let mut d = FakeDispatcher::default();
        if !list.is_empty() {
            d.foreign(list);
        }
        let engine = Engine::new(&d);
        (d, engine)
    }

    fn uris(sets: &RawSets, id: i32) -> Vec<String> {
        sets[&id]
            .iter()
            .map(|d| String::from_utf8_lossy(&d.uri).into_owned())
            .collect()
    }

    fn flags(sets: &RawSets, id: i32) -> Vec<i32> {
        sets[&id].iter().map(|d| d.flags).collect()
    }

    #[test]
    fn in_memory_order_equals_the_wanted_order() {
        let (mut d, mut engine) = engine_on("");
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
        assert!(d.loads[0].starts_with(b"1 sip:a "));
    }

    #[test]
    fn sets_absent_from_the_feed_survive_unchanged() {
        let (mut d, mut engine) =
            engine_on("9 sip:x 0 3 duid=x\n9 sip:y 1 3\n9 sip:z 0 1\n1 sip:old 0 0\n");
        let kept = d.sets[&9].clone();
        let applied = engine
            .apply(&mut d, &set_one("v1", &[("sip:new", 0)]))
            .unwrap();
        assert_eq!(d.sets[&9], kept);
        assert_eq!(uris(&d.sets, 1), ["sip:new"]);
        assert_eq!(applied.sets, vec![(1, 1), (9, 3)]);
        assert_eq!(applied.destinations, 4);
        assert!(applied.dropped.is_empty());
    }

    #[test]
    fn bytes_that_are_not_utf8_come_back_exactly() {
        let mut d = FakeDispatcher::default();
        d.load(b"9 sip:caf\xe9@10.0.0.9 0 3 name=caf\xe9;x=\xff\n")
            .unwrap();
        let kept = d.sets[&9].clone();
        let mut engine = Engine::new(&d);
        let applied = engine
            .apply(&mut d, &set_one("v1", &[("sip:a", 0)]))
            .unwrap();
        assert_eq!(d.sets[&9], kept);
        assert!(
            applied
                .list_file
                .ends_with(b"9 sip:caf\xe9@10.0.0.9 0 3 name=caf\xe9;x=\xff\n"),
            "{:?}",
            String::from_utf8_lossy(&applied.list_file)
        );
    }

    #[test]
    fn a_set_that_cannot_be_rewritten_exactly_refuses_the_swap() {
        let (mut d, mut engine) = engine_on("9 sip:x 0 3\n");
        // As `dispatcher.add 9 sip:y 0 -5` would leave it.
        d.sets.get_mut(&9).unwrap().push(RawDestination {
            uri: b"sip:y".to_vec(),
            flags: 0,
            priority: -5,
            attrs: Vec::new(),
        });
        let err = engine
            .apply(&mut d, &set_one("v1", &[("sip:a", 0)]))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("set 9") && text.contains("sip:y") && text.contains("priority -5"),
            "{text}"
        );
        assert!(d.loads.is_empty(), "nothing was loaded");
        assert!(!d.sets.contains_key(&1));
    }

    #[test]
    fn runtime_state_survives_and_feed_changes_win() {
        let (mut d, mut engine) = engine_on("");
        let v1 = set_one("v1", &[("sip:a", 0), ("sip:b", 0), ("sip:c", 16)]);
        engine.apply(&mut d, &v1).unwrap();
        // Probing marks a inactive+probing, ds_mark_dst disables b.
        d.sets.get_mut(&1).unwrap()[0].flags = 1 | 8;
        d.sets.get_mut(&1).unwrap()[1].flags = 4;
        let v2 = set_one(
            "v2",
            &[("sip:a", 0), ("sip:b", 0), ("sip:c", 16), ("sip:d", 0)],
        );
        let applied = engine.apply(&mut d, &v2).unwrap();
        assert_eq!(flags(&d.sets, 1), [9, 4, 16, 0]);
        // The cold-start file carries the feed's flags, not runtime state.
        assert!(applied.list_file.windows(12).any(|w| w == b"1 sip:a 0 0\n"));
        // The feed drains a (sets 4) and re-enables nothing else.
        let v3 = set_one(
            "v3",
            &[("sip:a", 4), ("sip:b", 0), ("sip:c", 16), ("sip:d", 0)],
        );
        engine.apply(&mut d, &v3).unwrap();
        assert_eq!(flags(&d.sets, 1), [1 | 4 | 8, 4, 16, 0]);
        // The feed un-drains a: its disabled bit clears, probing's bits stay.
        engine.apply(&mut d, &v2).unwrap();
        assert_eq!(d.sets[&1][0].flags, 1 | 8);
    }

    #[test]
    fn first_swap_takes_only_the_drain_mark_from_the_feed() {
        let (mut d, mut engine) = engine_on("1 sip:a 1 0\n1 sip:b 4 0\n1 sip:c 0 0\n");
        let snap = set_one("v1", &[("sip:a", 0), ("sip:b", 0), ("sip:c", 4)]);
        engine.apply(&mut d, &snap).unwrap();
        assert_eq!(flags(&d.sets, 1), [1, 0, 4]);
    }

    #[test]
    fn a_skipped_load_is_detected() {
        let (mut d, mut engine) = engine_on("9 sip:z 0 0\n");
        let snap = set_one("v1", &[("sip:a", 0)]);
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
        let mut engine = Engine::new(&empty);
        engine.apply(&mut empty, &snapshot("v0", vec![])).unwrap();
        // Nor is a snapshot of which the loader could load nothing.
        let mut dropping = FakeDispatcher {
            unloadable: vec!["sip:a".into()],
            ..FakeDispatcher::default()
        };
        let mut engine = Engine::new(&dropping);
        let applied = engine.apply(&mut dropping, &snap).unwrap();
        assert_eq!(applied.dropped, vec![(1, "sip:a".to_owned())]);
    }

    #[test]
    fn a_refused_load_keeps_the_previous_sets() {
        let (mut d, mut engine) = engine_on("");
        engine
            .apply(&mut d, &set_one("v1", &[("sip:a", 0)]))
            .unwrap();
        d.refuse_next = true;
        let err = engine
            .apply(&mut d, &set_one("v2", &[("sip:b", 0)]))
            .unwrap_err();
        assert!(matches!(err, ApplyError::Refused));
        assert_eq!(uris(&d.sets, 1), ["sip:a"]);
        assert!(!engine.foreign_load(&d));
    }

    #[test]
    fn dropped_destinations_are_reported() {
        let mut d = FakeDispatcher {
            unloadable: vec!["sip:nowhere.invalid".into()],
            ..FakeDispatcher::default()
        };
        let mut engine = Engine::new(&d);
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
    fn another_writer_is_noticed_from_the_start() {
        let (mut d, mut engine) = engine_on("1 sip:a 0 0\n");
        assert!(!engine.foreign_load(&d));
        // Another writer loads before the module's first swap.
        d.foreign("1 sip:b 0 0\n");
        assert!(engine.foreign_load(&d));
        let snap = set_one("v1", &[("sip:c", 0)]);
        assert!(matches!(
            engine.apply(&mut d, &snap),
            Err(ApplyError::ForeignLoad)
        ));
        assert!(d.loads.is_empty());
        engine.adopt(&d);
        engine.apply(&mut d, &snap).unwrap();
        assert!(!engine.foreign_load(&d));
        d.foreign("1 sip:a 0 0\n");
        assert!(engine.foreign_load(&d));
    }

    #[test]
    fn a_load_during_the_walk_stops_the_swap_before_its_load() {
        let (mut d, mut engine) = engine_on("1 sip:a 0 0\n");
        d.load_during_walk.set(true);
        let snap = set_one("v1", &[("sip:c", 0)]);
        assert!(matches!(
            engine.apply(&mut d, &snap),
            Err(ApplyError::ForeignLoad)
        ));
        assert!(d.loads.is_empty(), "no load right after another writer's");
    }

    #[test]
    fn empty_feed_sets_empty_the_dispatcher_set() {
        let (mut d, mut engine) = engine_on("1 sip:a 0 0\n2 sip:b 0 0\n");
        let applied = engine
            .apply(&mut d, &snapshot("v1", vec![(1, vec![])]))
            .unwrap();
        assert!(!d.sets.contains_key(&1));
        assert_eq!(uris(&d.sets, 2), ["sip:b"]);
        assert_eq!(applied.sets, vec![(1, 0), (2, 1)]);
    }
}
