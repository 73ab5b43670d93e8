//! The YAML sets file.
#![no_main]

use dsfeed_model::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((sets, lists)) = dsfeed::sources::sets_file::parse_sets(text) {
        let snapshot = Snapshot::with_lists(sets, Default::default(), lists);
        let list = snapshot.to_dispatcher_list();
        assert!(list.lines().skip(1).all(|l| l.len() <= dsfeed_model::MAX_LINE));
    }
});
