//! A feed response as dsfeed.so and `dsfeed watch` take it: counted on the
//! wire against the budget, decoded, then checked as a snapshot, or as a
//! delta completed against a snapshot the client holds (version "v0").
#![no_main]

use dsfeed_model::pb::{self, FeedResponse};
use dsfeed_model::{Destination, SetMap, Snapshot};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(scanned) = pb::scan(data) else {
        return;
    };
    if scanned.size.over_budget().is_some() {
        return;
    }
    let Ok(response) = FeedResponse::decode(data) else {
        return;
    };
    // The scan saw what prost decoded (rtpengine sets count as sets).
    assert_eq!(
        scanned.size.sets,
        response.sets.len() + response.rtpengine_sets.len()
    );
    assert_eq!(scanned.version, response.version_info);
    let held = Snapshot::received(
        SetMap::from([
            (1, vec![Destination::parse_target("10.0.0.1").unwrap()]),
            (2, vec![]),
        ]),
        "v0",
    );
    for wanted in [&[][..], &[1, 2]] {
        if let Ok(snapshot) = pb::complete(&response, wanted, &[&held]) {
            // What a client accepts renders to lines Kamailio reads back.
            let list = snapshot.to_dispatcher_list();
            assert!(list.lines().skip(1).all(|l| l.len() <= dsfeed_model::MAX_LINE));
            assert_eq!(list.lines().count(), 1 + snapshot.destination_count());
        }
    }
});
