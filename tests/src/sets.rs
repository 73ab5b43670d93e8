//! Sets as tests write them: a watched sets file, its YAML, and the
//! snapshot and wire form the feeder should make of it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dsfeed_model::pb::FeedResponse;
use dsfeed_model::{Destination, SetMap, Snapshot};

/// Sets as the tests write them: set id and destination targets.
pub type Sets<'a> = &'a [(u32, &'a [&'a str])];

/// A sets file the feeder watches; every write replaces it atomically.
pub struct SetsFile {
    pub path: PathBuf,
}

impl SetsFile {
    pub fn new(dir: &Path, sets: Sets<'_>) -> Self {
        let file = SetsFile {
            path: dir.join("sets.yaml"),
        };
        file.write(sets);
        file
    }

    pub fn write(&self, sets: Sets<'_>) {
        self.write_text(&yaml(sets));
    }

    pub fn write_text(&self, text: &str) {
        crate::replace_file(&self.path, text);
    }
}

pub fn yaml(sets: Sets<'_>) -> String {
    let mut out = String::from("sets:\n");
    for (id, targets) in sets {
        if targets.is_empty() {
            out.push_str(&format!("  {id}: []\n"));
            continue;
        }
        out.push_str(&format!("  {id}:\n"));
        for target in *targets {
            out.push_str(&format!("    - \"{target}\"\n"));
        }
    }
    out
}

/// The snapshot the feeder should publish for `sets`, restricted to `only`.
pub fn snapshot(sets: Sets<'_>, only: Option<&[u32]>) -> Snapshot {
    let map: SetMap = sets
        .iter()
        .map(|(id, targets)| {
            let dests = targets
                .iter()
                .map(|t| Destination::parse_target(t).unwrap())
                .collect();
            (*id, dests)
        })
        .collect();
    let full = Snapshot::new(map);
    match only {
        Some(ids) => full.filtered(&ids.iter().copied().collect::<BTreeSet<_>>()),
        None => full,
    }
}

/// A set's destinations as the feeder's HTTP API shows them (`/sets/ID`,
/// `/status`): `(uri, priority, attrs)` in their order.
pub fn shown(destinations: &serde_json::Value) -> Vec<(String, i64, String)> {
    destinations
        .as_array()
        .expect("an array of destinations")
        .iter()
        .map(|d| {
            (
                d["uri"].as_str().unwrap().to_owned(),
                d["priority"].as_i64().unwrap(),
                d["attrs"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The URIs of each set in a response, as (id, uris).
pub fn uris(response: &FeedResponse) -> Vec<(u32, Vec<String>)> {
    response
        .sets
        .iter()
        .map(|s| (s.id, s.destinations.iter().map(|d| d.uri.clone()).collect()))
        .collect()
}
