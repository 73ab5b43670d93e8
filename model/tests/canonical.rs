//! Properties of the canonical form, over generated sets: rendering a
//! snapshot, parsing what was rendered and rendering again gives the same
//! bytes (through the wire form a client parses, and through the list
//! lines the feeder reads back for held sets), and the version depends on
//! the content only, not on the order or repetitions it arrived in.

use std::collections::BTreeSet;

use dsfeed_model::pb;
use dsfeed_model::{Destination, MAX_INT, SetId, SetMap, Snapshot};
use proptest::prelude::*;

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        "[a-z][a-z0-9-]{0,12}(\\.[a-z][a-z0-9-]{0,8}){0,2}",
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

fn destination() -> impl Strategy<Value = Destination> {
    (
        prop_oneof![Just("sip"), Just("sips")],
        host(),
        proptest::option::of(1u16..),
        proptest::option::of("(;transport=(udp|tcp|tls))"),
        0u32..32,
        prop_oneof![Just(0u32), 0..=MAX_INT],
        "([a-z]{1,6}=[a-zA-Z0-9]{1,8}(;[a-z]{1,6}=[a-z0-9]{1,8}){0,3})?",
    )
        .prop_map(|(scheme, host, port, params, flags, priority, attrs)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let uri = format!("{scheme}:{host}{port}{}", params.unwrap_or_default());
            Destination::new(uri, flags, priority, attrs).expect("generated destinations are valid")
        })
}

fn sets() -> impl Strategy<Value = SetMap> {
    proptest::collection::btree_map(
        prop_oneof![0u32..20, 0..=MAX_INT],
        proptest::collection::vec(destination(), 0..8),
        0..6,
    )
}

/// `sets` with every set shuffled by `seed` and some entries repeated.
fn reordered(sets: &SetMap, seed: u64) -> SetMap {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    sets.iter()
        .map(|(id, dests)| {
            let mut dests = dests.clone();
            for i in (1..dests.len()).rev() {
                dests.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            if let Some(first) = dests.first().cloned()
                && next() % 2 == 0
            {
                dests.push(first);
            }
            (*id, dests)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn render_parse_render_through_the_wire_is_identity(sets in sets()) {
        let snapshot = Snapshot::new(sets);
        let wire = pb::response(&snapshot, "n".into());
        let parsed = pb::snapshot(&wire, &[]).expect("a feeder's response is valid");
        prop_assert_eq!(parsed.to_dispatcher_list(), snapshot.to_dispatcher_list());
        prop_assert_eq!(pb::sets(&parsed), wire.sets);
        // The content a client parsed hashes to the version it was sent with.
        let rehashed = Snapshot::new(parsed.sets().clone());
        prop_assert_eq!(rehashed.version(), snapshot.version());
    }

    #[test]
    fn render_parse_render_through_the_list_file_is_identity(sets in sets()) {
        // The feeder reads a held set's lines back from the file it wrote.
        let snapshot = Snapshot::new(sets.clone());
        let text = snapshot.to_dispatcher_list();
        let held: BTreeSet<SetId> = sets.keys().copied().collect();
        let kept = Snapshot::with_held(SetMap::new(), held).to_dispatcher_list_keeping(&text);
        prop_assert_eq!(
            kept.lines().skip(1).collect::<Vec<_>>(),
            text.lines().skip(1).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_version_depends_only_on_the_content(sets in sets(), seed in any::<u64>()) {
        let snapshot = Snapshot::new(sets.clone());
        let again = Snapshot::new(reordered(&sets, seed));
        prop_assert_eq!(again.version(), snapshot.version());
        prop_assert_eq!(&again, &snapshot);
        prop_assert_eq!(Snapshot::new(snapshot.sets().clone()), snapshot.clone());
        // And on nothing else: one more destination is another version.
        let extra = Destination::parse_target("192.0.2.1:1").unwrap();
        let mut more = sets;
        let dests = more.entry(0).or_default();
        if !dests.iter().any(|d| d.uri() == extra.uri()) {
            dests.push(extra);
            let more = Snapshot::new(more);
            prop_assert_ne!(more.version(), snapshot.version());
        }
    }
}
