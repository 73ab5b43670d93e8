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
//! rtpengine:                       # rtpengine sets, for --rtpengine-table
//!   1:
//!     - 10.0.0.5                   # HOST[:PORT] (22222), or udp:HOST:PORT
//!     - url: udp:10.0.0.6:22222
//!       weight: 2
//!       disabled: true
//! domains:                         # SIP domains, for --domain-table
//!   - sip.example.com
//!   - name: tenant1.example.com
//!     did: tenant-1
//! ```
//!
//! Each of `sets`, `rtpengine` and `domains` may be left out, not all three.
//!
//! The file must be valid at start. After that an invalid edit is logged and
//! ignored, so the last good sets stay published.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::fmt;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::sources::{Publisher, Source, SourceFuture};
use dsfeed_model::domain::{did, domain_name};
use dsfeed_model::{Destination, Lists, Relay, SetId, SetMap, validate_set_id};

/// How long to wait after a write in place before reading, when no close of
/// the written file says it is done, so that an editor's truncate-then-write
/// lands as one edit. A file replaced by a rename (editors, `mv`, Kubernetes
/// ConfigMap volumes) is read at once.
const SETTLE: Duration = Duration::from_millis(50);

/// What a file system event in the sets file's directory says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// A whole file is in place: renamed in, created, or closed after a
    /// write. Read now.
    Complete,
    /// A write may still be going on.
    Partial,
}

impl Change {
    fn of(kind: EventKind) -> Option<Change> {
        match kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Remove(_) => Some(Change::Complete),
            // inotify reports our own reads as access events; counting them
            // would re-read the file forever.
            EventKind::Access(_) => None,
            _ => Some(Change::Partial),
        }
    }
}

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
        let change = match event {
            Ok(event) => Change::of(event.kind),
            // Something happened that inotify could not describe: look.
            Err(_) => Some(Change::Partial),
        };
        if let Some(change) = change {
            let _ = tx.send(change);
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w))
    .map_err(|source| Error::Watch {
        path: dir.clone(),
        source,
    })?;
    let mut published_empty = first.0.is_empty();
    out.publish_view(first.0, Default::default(), first.1).await;

    let mut changed_again = false;
    loop {
        if !std::mem::take(&mut changed_again) {
            let change = tokio::select! {
                change = events.recv() => match change {
                    Some(change) => change,
                    None => break,
                },
                () = tokio::time::sleep(POLL) => Change::Complete,
            };
            if change == Change::Partial {
                // A write in place: wait for it to end (its close) or settle.
                let settle = tokio::time::sleep(SETTLE);
                tokio::pin!(settle);
                loop {
                    tokio::select! {
                        () = &mut settle => break,
                        change = events.recv() => match change {
                            Some(Change::Complete) => break,
                            Some(Change::Partial) => {}
                            None => break,
                        },
                    }
                }
            }
        }
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
            Ok((sets, lists)) => {
                if sets.is_empty() && !published_empty {
                    tracing::error!(
                        path = %path.display(),
                        "the sets file now manages no set at all: every set it held is removed from Kamailio"
                    );
                } else {
                    tracing::info!(path = %path.display(), sets = sets.len(), "sets file changed");
                }
                published_empty = sets.is_empty();
                out.publish_view(sets, Default::default(), lists).await;
            }
            Err(err) => {
                // A file written in place is empty or cut short for a
                // moment: report it only if no further write follows.
                if let Ok(Some(_)) = tokio::time::timeout(HALF_WRITE_GRACE, events.recv()).await {
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

fn parse(path: &Path, text: &str) -> Result<(SetMap, Lists), Error> {
    parse_sets(text).map_err(|reason| Error::SetsFile {
        path: path.to_owned(),
        reason,
    })
}

/// Parses the YAML sets document into dispatcher sets and the other lists;
/// the error names the set and entry at fault, or the line and column where
/// the YAML itself is wrong.
pub fn parse_sets(text: &str) -> Result<(SetMap, Lists), String> {
    // One line, "line L column C: what", for the log; no source snippet.
    let options = serde_saphyr::options! { with_snippet: false };
    let doc: Document =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| e.to_string())?;
    // A truncated file or a stray edit must not read as "no sets".
    if doc.sets.is_none() && doc.rtpengine.is_none() && doc.domains.is_none() {
        return Err("'sets' is missing or empty; write 'sets: {}' to manage no sets".into());
    }
    let mut lists = Lists {
        rtpengine: Sets::read(doc.rtpengine, "rtpengine set", Written::relay)?,
        ..Lists::default()
    };
    for (i, entry) in doc.domains.unwrap_or_default().into_iter().enumerate() {
        let (name, did_text) = match entry {
            Written::Short(name) => (name, String::new()),
            Written::Full(FullDomain { name, did }) => (name, did),
        };
        let name = domain_name(&name).map_err(|e| format!("domains, entry {}: {e}", i + 1))?;
        let did = did(&did_text).map_err(|e| format!("domains, entry {}: {e}", i + 1))?;
        lists.domains.entry(did).or_default().insert(name);
    }
    let out = Sets::read(doc.sets, "set", Written::destination)?;
    Ok((out, lists))
}

/// The whole file: `sets`, `rtpengine` and `domains`, at least one there.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    sets: Option<Sets<Written<FullEntry>>>,
    rtpengine: Option<Sets<Written<FullRelay>>>,
    domains: Option<Vec<Written<FullDomain>>>,
}

/// One entry of a section, as the file may write it: a string (a URI, a
/// relay, a domain name), or a mapping of the fields `F`.
///
/// Read by hand rather than as an untagged enum, so a mapping with a
/// misspelt or missing field is refused with serde's own words ("unknown
/// field `weigth`, expected one of ...") at its line, not with "data did not
/// match any variant".
#[derive(Debug)]
enum Written<F> {
    Short(String),
    Full(F),
}

/// The mapping form of an entry, and how errors describe the entry.
trait Fields {
    /// What serde says it expected when the entry is neither form.
    const EXPECTING: &'static str;
}

impl<'de, F: Fields + Deserialize<'de>> Deserialize<'de> for Written<F> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<F>(std::marker::PhantomData<F>);
        impl<'de, F: Fields + Deserialize<'de>> de::Visitor<'de> for Visitor<F> {
            type Value = Written<F>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(F::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Written<F>, E> {
                Ok(Written::Short(text.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Written<F>, A::Error> {
                F::deserialize(de::value::MapAccessDeserializer::new(map)).map(Written::Full)
            }
        }
        deserializer.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

/// A relay's mapping: `url`, and optionally `weight` and `disabled`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullRelay {
    url: String,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    disabled: bool,
}

impl Fields for FullRelay {
    const EXPECTING: &'static str =
        "a relay (HOST[:PORT] or a control URL), or a mapping with 'url'";
}

fn default_weight() -> u32 {
    dsfeed_model::DEFAULT_WEIGHT
}

impl Written<FullRelay> {
    fn relay(self) -> Result<Relay, String> {
        match self {
            Written::Short(target) => Relay::parse_target(&target),
            Written::Full(full) => Relay::parse_target(&full.url)
                .and_then(|r| r.with_weight(full.weight))
                .map(|r| r.with_disabled(full.disabled)),
        }
        .map_err(|e| e.to_string())
    }
}

/// A domain's mapping: `name` and `did`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullDomain {
    name: String,
    did: String,
}

impl Fields for FullDomain {
    const EXPECTING: &'static str = "a domain name, or a mapping with 'name' and 'did'";
}

/// The sets in file order, so that `1` and `"1"` are caught as one set
/// listed twice rather than one silently replacing the other.
#[derive(Debug)]
struct Sets<E>(Vec<(SetKey, Option<Vec<E>>)>);

impl<'de, E: Deserialize<'de>> Deserialize<'de> for Sets<E> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<E>(std::marker::PhantomData<E>);
        impl<'de, E: Deserialize<'de>> de::Visitor<'de> for Visitor<E> {
            type Value = Sets<E>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of set id to entries")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Sets<E>, A::Error> {
                let mut sets = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    sets.push(entry);
                }
                Ok(Sets(sets))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

impl<E> Sets<E> {
    /// The entries of each set of a section (`None`: none), each turned
    /// into a `T` by `convert`; `what` names a set in errors ("set",
    /// "rtpengine set"). A set with nothing after it, a bad entry and a set
    /// listed twice are each an error, the first one found returned.
    fn read<T>(
        sets: Option<Self>,
        what: &str,
        convert: impl Fn(E) -> Result<T, String>,
    ) -> Result<BTreeMap<SetId, Vec<T>>, String> {
        let mut out = BTreeMap::new();
        for (SetKey(id), entries) in sets.map(|s| s.0).unwrap_or_default() {
            let entries = entries.ok_or_else(|| {
                format!("{what} {id} has nothing after it; write '{id}: []' for an empty set")
            })?;
            let converted = entries
                .into_iter()
                .enumerate()
                .map(|(i, e)| convert(e).map_err(|r| format!("{what} {id}, entry {}: {r}", i + 1)))
                .collect::<Result<Vec<_>, _>>()?;
            if out.insert(id, converted).is_some() {
                return Err(format!("{what} {id} is listed twice"));
            }
        }
        Ok(out)
    }
}

/// A set id, written as a number or a quoted number.
#[derive(Debug)]
struct SetKey(SetId);

impl<'de> Deserialize<'de> for SetKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Scalar(id) = Scalar::deserialize(deserializer)?;
        let id = id.trim().parse().map_err(|_| {
            de::Error::custom(format!(
                "set id '{id}' is not a number from 0 to 2147483647"
            ))
        })?;
        validate_set_id(id).map(SetKey).map_err(de::Error::custom)
    }
}

/// A destination's mapping: `uri`, and optionally `flags`, `priority` and
/// `attrs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullEntry {
    uri: String,
    #[serde(default)]
    flags: u32,
    #[serde(default)]
    priority: u32,
    #[serde(default)]
    attrs: Attrs,
}

impl Fields for FullEntry {
    const EXPECTING: &'static str = "a URI, or a mapping with 'uri'";
}

impl Written<FullEntry> {
    fn destination(self) -> Result<Destination, String> {
        match self {
            Written::Short(target) => Destination::parse_target(&target).map_err(|e| e.to_string()),
            Written::Full(full) => {
                let target = Destination::parse_target(&full.uri).map_err(|e| e.to_string())?;
                Destination::new(target.uri(), full.flags, full.priority, full.attrs.0)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// Attrs as Kamailio's `k=v;k=v` string, or a mapping of scalars rendered
/// in that form, in file order.
#[derive(Debug, Default)]
struct Attrs(String);

impl<'de> Deserialize<'de> for Attrs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Attrs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("'k=v;k=v' or a mapping of attr names to scalar values")
            }
            fn visit_str<E: de::Error>(self, attrs: &str) -> Result<Attrs, E> {
                Ok(Attrs(attrs.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Attrs, A::Error> {
                let mut pairs = Vec::new();
                while let Some((key, Scalar(value))) = map.next_entry::<String, Scalar>()? {
                    pairs.push(format!("{key}={value}"));
                }
                Ok(Attrs(pairs.join(";")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A scalar as text, whatever YAML made of it: an attr value or a set id.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The URIs of set 1 in the next view `views` receives.
    async fn next_set_one(views: &mut mpsc::Receiver<crate::sources::View>) -> Vec<String> {
        let view = tokio::time::timeout(Duration::from_secs(30), views.recv())
            .await
            .expect("a view in time")
            .expect("the source runs");
        view.sets[&1].iter().map(|d| d.uri().to_owned()).collect()
    }

    #[tokio::test]
    async fn renames_and_writes_in_place_are_both_followed() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sets.yaml");
        std::fs::write(&path, "sets:\n  1: [10.0.0.1]\n").unwrap();
        let (tx, mut views) = mpsc::channel(16);
        let metrics = crate::metrics::Metrics::new().source("sets-file");
        let source = tokio::spawn(watch(path.clone(), Publisher::new(0, metrics, tx)));
        assert_eq!(next_set_one(&mut views).await, ["sip:10.0.0.1:5060"]);

        // Replaced by a rename, as editors and ConfigMap volumes do.
        let tmp = dir.path().join("sets.yaml.tmp");
        std::fs::write(&tmp, "sets:\n  1: [10.0.0.2]\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(next_set_one(&mut views).await, ["sip:10.0.0.2:5060"]);

        // Rewritten in place in two writes: the file is cut short between
        // them, and only the whole file is read.
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"sets:\n  1: [10.0.0.3").unwrap();
        file.flush().unwrap();
        file.write_all(b"]\n").unwrap();
        drop(file);
        assert_eq!(next_set_one(&mut views).await, ["sip:10.0.0.3:5060"]);
        source.abort();
    }

    #[test]
    fn only_a_write_in_place_waits_the_settle() {
        use notify::event::{CreateKind, DataChange, ModifyKind, RenameMode};
        // A rename (editors, `mv`, ConfigMap volumes), a new file and a
        // finished write are whole files: read at once.
        for kind in [
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            EventKind::Create(CreateKind::File),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
        ] {
            assert_eq!(Change::of(kind), Some(Change::Complete), "{kind:?}");
        }
        // A write in place may go on: it waits for its close or the settle.
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Content));
        assert_eq!(Change::of(write), Some(Change::Partial));
        // Our own reads are no change at all.
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        assert_eq!(Change::of(read), None);
    }

    #[test]
    fn parses_both_entry_forms() {
        let (sets, _) = parse_sets(
            "sets:\n  1:\n    - sip:10.0.0.1:5060\n    - 10.0.0.3\n    - uri: sip:10.0.0.2:5060\n      flags: 8\n      priority: 10\n      attrs: \"weight=50;duid=b\"\n  \"2\":\n    - uri: '[2001:db8::1]:5080'\n      attrs: {weight: 5, duid: x}\n  3: []\n",
        )
        .unwrap();
        assert_eq!(sets[&1].len(), 3);
        assert_eq!(sets[&1][1].uri(), "sip:10.0.0.3:5060");
        assert_eq!(sets[&1][2].flags(), 8);
        assert_eq!(sets[&1][2].priority(), 10);
        assert_eq!(sets[&1][2].attrs(), "weight=50;duid=b");
        assert_eq!(sets[&2][0].uri(), "sip:[2001:db8::1]:5080");
        assert_eq!(sets[&2][0].attrs(), "weight=5;duid=x");
        assert!(sets[&3].is_empty());
    }

    #[test]
    fn rtpengine_sets_and_domains() {
        let (sets, lists) = parse_sets(
            "rtpengine:\n  1:\n    - 10.0.0.5\n    - url: udp:10.0.0.6:2223\n      weight: 2\n      disabled: true\n  2: []\ndomains:\n  - SIP.example.com\n  - name: t.example.com\n    did: tenant-1\n",
        )
        .unwrap();
        assert!(sets.is_empty());
        let relays: Vec<String> = lists.rtpengine[&1].iter().map(|r| r.to_string()).collect();
        assert_eq!(
            relays,
            [
                "udp:10.0.0.5:22222 weight=1",
                "udp:10.0.0.6:2223 weight=2 disabled"
            ]
        );
        assert!(lists.rtpengine[&2].is_empty());
        assert!(lists.domains[""].contains("sip.example.com"));
        assert!(lists.domains["tenant-1"].contains("t.example.com"));
        for (text, needle) in [
            (
                "rtpengine:\n  1:\n    - tcp:a:1",
                "rtpengine set 1, entry 1: rtpengine relay 'tcp:a:1'",
            ),
            ("rtpengine:\n  1:\n", "rtpengine set 1 has nothing after it"),
            ("domains:\n  - a b", "domains, entry 1: domain 'a b'"),
            ("domains:\n  - name: a\n    did: 'x:y'", "domain 'x:y'"),
        ] {
            let err = parse_sets(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn errors_name_the_culprit() {
        for (text, needle) in [
            ("sets: [", "expected mapping start at line 1, column 7"),
            ("set:\n  1: []", "unknown field `set`"),
            (
                "sets:\n  x: []",
                "set id 'x' is not a number from 0 to 2147483647 at line 2",
            ),
            (
                "sets:\n  1:\n    - uri: sip:a\n      attrs: 'a=1 b=2'",
                "set 1, entry 1: attrs 'a=1 b=2'",
            ),
            (
                "sets:\n  1:\n    - sip:a\n    - uri: sip:b\n      weight: 3",
                "unknown field `weight`, expected one of uri, flags, priority, attrs at line 5",
            ),
            ("sets:\n  1:\n    - 10.0.0.1:70000", "port '70000'"),
            (
                "sets:\n  1:\n    - flags: 1",
                "missing field `uri` at line 3",
            ),
            ("sets:\n  1:\n    - uri: sip:a\n      flags: 64", "flags 64"),
            (
                "rtpengine:\n  1:\n    - url: 10.0.0.1\n      weigth: 3",
                "unknown field `weigth`, expected one of url, weight, disabled at line 4",
            ),
            (
                "domains:\n  - name: a.example\n    dib: x",
                "unknown field `dib`, expected one of name, did at line 3",
            ),
            (
                "domains:\n  - [a.example]",
                "expected a domain name, or a mapping with 'name' and 'did' at line 2",
            ),
            ("sets:\n  1: []\n  '1': []", "set 1 is listed twice"),
            ("sets:\n  -1: []", "set id '-1' is not a number from 0"),
            ("sets:\n  true: []", "set id 'true' is not a number from 0"),
            ("", "'sets' is missing or empty"),
            ("sets:", "'sets' is missing or empty"),
            ("sets:\n", "'sets' is missing or empty"),
            ("sets:\n  1:\n", "set 1 has nothing after it"),
            ("# no sets\n", "'sets' is missing or empty"),
        ] {
            let err = parse_sets(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
