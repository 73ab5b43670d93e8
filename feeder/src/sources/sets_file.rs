//! `--sets-file PATH`: sets in a YAML file, watched for changes.
//!
//! ```yaml
//! sets:
//!   1:
//!     - sip:10.0.0.1:5060          # a URI, or HOST[:PORT]
//!     - uri: sip:10.0.0.2:5060
//!       flags: 8
//!       priority: 10
//!       attrs: "weight=50;duid=b"  # or a mapping: {weight: 50, duid: b}
//! ```
//!
//! The file must be valid at start. After that an invalid edit is logged and
//! ignored, so the last good sets stay published.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde_yaml::{Mapping, Value};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::snapshot::{Destination, SetMap, validate_set_id};
use crate::sources::{Publisher, Source, SourceFuture};

/// How long to wait after a change event before reading, so that an editor's
/// truncate-then-write lands as one edit.
const SETTLE: Duration = Duration::from_millis(50);

/// How long an invalid read waits for a further write before it is
/// reported, so that an editor's slow in-place write is not taken for a
/// broken file.
const HALF_WRITE_GRACE: Duration = Duration::from_millis(250);

/// Re-read the file this often even without an event, for file systems
/// (network mounts, some volume drivers) that do not report changes.
const POLL: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct SetsFileSource {
    path: PathBuf,
}

impl SetsFileSource {
    pub fn new(path: PathBuf) -> Self {
        SetsFileSource { path }
    }
}

impl Source for SetsFileSource {
    fn name(&self) -> &str {
        "sets-file"
    }

    fn run(self: Box<Self>, out: Publisher) -> SourceFuture {
        Box::pin(watch(self.path, out))
    }
}

async fn watch(path: PathBuf, out: Publisher) -> Result<(), Error> {
    let mut last_text = read(&path).await?;
    let first = parse(&path, &last_text)?;
    let (tx, mut events) = mpsc::unbounded_channel();
    // Watch the directory, not the file: editors and Kubernetes ConfigMap
    // updates replace the file by renaming, which ends a watch on the file.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // inotify reports our own reads as access events; counting them
        // would re-read the file every SETTLE, forever.
        if !event.is_ok_and(|e| e.kind.is_access()) {
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w))
    .map_err(|source| Error::Watch {
        path: dir.clone(),
        source,
    })?;
    let mut published_empty = first.is_empty();
    out.publish(first).await;

    let mut changed_again = false;
    loop {
        if !std::mem::take(&mut changed_again) {
            tokio::select! {
                event = events.recv() => if event.is_none() { break },
                () = tokio::time::sleep(POLL) => {}
            }
        }
        tokio::time::sleep(SETTLE).await;
        while events.try_recv().is_ok() {}

        let text = match read(&path).await {
            Ok(text) => text,
            Err(err) => {
                out.failed(&err, "sets file unreadable; keeping the last good sets");
                continue;
            }
        };
        if text == last_text {
            continue;
        }
        match parse(&path, &text) {
            Ok(sets) => {
                if sets.is_empty() && !published_empty {
                    tracing::error!(
                        path = %path.display(),
                        "the sets file now manages no set at all: every set it held is removed from Kamailio"
                    );
                } else {
                    tracing::info!(path = %path.display(), sets = sets.len(), "sets file changed");
                }
                published_empty = sets.is_empty();
                out.publish(sets).await;
            }
            Err(err) => {
                // A file written in place is empty or cut short for a
                // moment: report it only if no further write follows.
                if let Ok(Some(())) = tokio::time::timeout(HALF_WRITE_GRACE, events.recv()).await {
                    changed_again = true;
                    continue;
                }
                out.failed(&err, "sets file invalid; keeping the last good sets");
            }
        }
        last_text = text;
    }
    // The watcher's sender lives as long as the watcher, so this is reached
    // only if inotify itself failed.
    drop(watcher.unwatch(&dir));
    Err(Error::SetsFile {
        path,
        reason: "the file watcher stopped".into(),
    })
}

async fn read(path: &Path) -> Result<String, Error> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })
}

fn parse(path: &Path, text: &str) -> Result<SetMap, Error> {
    parse_sets(text).map_err(|reason| Error::SetsFile {
        path: path.to_owned(),
        reason,
    })
}

/// Parses the YAML sets document; the error names the set and entry at fault.
pub fn parse_sets(text: &str) -> Result<SetMap, String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
    let top = doc
        .as_mapping()
        .ok_or("expected a mapping with a 'sets' key")?;
    for key in top.keys() {
        if key.as_str() != Some("sets") {
            return Err(format!(
                "unknown key {} (only 'sets' is allowed)",
                show(key)
            ));
        }
    }
    let sets = match top.get("sets") {
        Some(Value::Mapping(sets)) => sets,
        // A truncated file or a stray edit must not read as "no sets".
        Some(Value::Null) => {
            return Err("'sets' is empty; write 'sets: {}' to manage no sets".into());
        }
        Some(other) => {
            return Err(format!(
                "'sets' must be a mapping of set id to destinations, not {}",
                show(other)
            ));
        }
        None => return Err("missing 'sets'".into()),
    };
    let mut out = SetMap::new();
    for (key, entries) in sets {
        let id = set_id(key)?;
        let entries = match entries {
            Value::Sequence(entries) => entries.as_slice(),
            Value::Null => {
                return Err(format!(
                    "set {id} has nothing after it; write '{id}: []' for an empty set"
                ));
            }
            other => {
                return Err(format!(
                    "set {id}: expected a list of destinations, not {}",
                    show(other)
                ));
            }
        };
        let dests = entries
            .iter()
            .enumerate()
            .map(|(i, e)| entry(e).map_err(|r| format!("set {id}, entry {}: {r}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        if out.insert(id, dests).is_some() {
            return Err(format!("set {id} is listed twice"));
        }
    }
    Ok(out)
}

fn set_id(key: &Value) -> Result<u32, String> {
    let n = match key {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let n = n.ok_or_else(|| format!("set id {} is not a non-negative number", show(key)))?;
    validate_set_id(n).map_err(|e| e.to_string())
}

fn entry(value: &Value) -> Result<Destination, String> {
    match value {
        Value::String(target) => Destination::parse_target(target).map_err(|e| e.to_string()),
        Value::Mapping(map) => full_entry(map),
        other => Err(format!(
            "expected a URI or a mapping with 'uri', not {}",
            show(other)
        )),
    }
}

fn full_entry(map: &Mapping) -> Result<Destination, String> {
    let (mut uri, mut flags, mut priority, mut attrs) = (None, 0, 0, String::new());
    for (key, value) in map {
        match key.as_str() {
            Some("uri") => uri = Some(value.as_str().ok_or("'uri' must be a string")?),
            Some("flags") => flags = number(value, "flags")?,
            Some("priority") => priority = number(value, "priority")?,
            Some("attrs") => attrs = attrs_string(value)?,
            _ => {
                return Err(format!(
                    "unknown key {} (allowed: uri, flags, priority, attrs)",
                    show(key)
                ));
            }
        }
    }
    let uri = uri.ok_or("missing 'uri'")?;
    let target = Destination::parse_target(uri).map_err(|e| e.to_string())?;
    Destination::new(target.uri, flags, priority, attrs).map_err(|e| e.to_string())
}

fn number(value: &Value, name: &str) -> Result<u32, String> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            format!(
                "'{name}' must be a non-negative number, not {}",
                show(value)
            )
        })
}

/// Attrs as Kamailio's `k=v;k=v` string, or a mapping rendered in that form.
fn attrs_string(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| Ok(format!("{}={}", scalar(k)?, scalar(v)?)))
            .collect::<Result<Vec<_>, String>>()
            .map(|pairs| pairs.join(";")),
        other => Err(format!(
            "'attrs' must be a string or a mapping, not {}",
            show(other)
        )),
    }
}

fn scalar(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("attrs values must be scalars, not {}", show(other))),
    }
}

fn show(value: &Value) -> String {
    serde_yaml::to_string(value)
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_entry_forms() {
        let sets = parse_sets(
            "sets:\n  1:\n    - sip:10.0.0.1:5060\n    - 10.0.0.3\n    - uri: sip:10.0.0.2:5060\n      flags: 8\n      priority: 10\n      attrs: \"weight=50;duid=b\"\n  \"2\":\n    - uri: '[2001:db8::1]:5080'\n      attrs: {weight: 5, duid: x}\n  3: []\n",
        )
        .unwrap();
        assert_eq!(sets[&1].len(), 3);
        assert_eq!(sets[&1][1].uri, "sip:10.0.0.3:5060");
        assert_eq!(sets[&1][2].flags, 8);
        assert_eq!(sets[&1][2].priority, 10);
        assert_eq!(sets[&1][2].attrs, "weight=50;duid=b");
        assert_eq!(sets[&2][0].uri, "sip:[2001:db8::1]:5080");
        assert_eq!(sets[&2][0].attrs, "weight=5;duid=x");
        assert!(sets[&3].is_empty());
    }

    #[test]
    fn errors_name_the_culprit() {
        for (text, needle) in [
            ("sets: [", "invalid YAML"),
            ("set:\n  1: []", "unknown key set"),
            ("sets:\n  x: []", "set id x"),
            (
                "sets:\n  1:\n    - uri: sip:a\n      attrs: 'a=1 b=2'",
                "set 1, entry 1: attrs 'a=1 b=2'",
            ),
            (
                "sets:\n  1:\n    - sip:a\n    - uri: sip:b\n      weight: 3",
                "set 1, entry 2: unknown key weight",
            ),
            ("sets:\n  1:\n    - 10.0.0.1:70000", "port '70000'"),
            ("sets:\n  1:\n    - flags: 1", "missing 'uri'"),
            ("sets:\n  1:\n    - uri: sip:a\n      flags: 64", "flags 64"),
            ("", "expected a mapping"),
            ("sets:", "'sets' is empty"),
            ("sets:\n", "'sets' is empty"),
            ("sets:\n  1:\n", "set 1 has nothing"),
            ("# no sets\n", "expected a mapping"),
        ] {
            let err = parse_sets(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
