//! The table sinks, for the rtpengine and domain modules: write their table
//! as a `db_text` file (`--rtpengine-table`, `--domain-table`) atomically
//! and only when it changes, then ask Kamailio over binrpc to reload it
//! (`rtpengine.reload`, `domain.reload`) until it has loaded the newest.
//!
//! - **Any Kamailio.** The one-writer rule is about the dispatcher's list:
//!   dsfeed.so never touches these modules, so the reloads go to a Kamailio
//!   that runs it too.
//! - **Paced.** Two reloads are at least `min_reload_interval` apart (the
//!   domain module, like the dispatcher, frees the table its previous
//!   reload retired while workers may still read it); a lone change reloads
//!   at once, a burst ends on the newest table. rtpengine
//!   also refuses reloads closer than its own 10 s ("Too short reload
//!   interval - try later"): the sink retries until it accepts.
//! - **Seen by db_text.** `db_text` re-reads a table only when its
//!   whole-second mtime moved (with `db_mode` 1; with the default 0 it
//!   never does), so each rewrite is dated at least a second after the
//!   file it replaces.
//! - **Loadable at start.** The modules check the directory's `version`
//!   table and the domain module reads `domain_attrs` too: missing rows
//!   and an empty `domain_attrs` are created, and nothing else is touched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::sinks::{Pacing, Sink, SinkFuture, Snapshots};
use dsfeed_binrpc as binrpc;
use dsfeed_binrpc::lists::{self as rpc, Module};
use dsfeed_model::dbtext;
use dsfeed_model::{Backoff, Delays, ListKind, Snapshot};

use super::file::DEFAULT_MIN_RELOAD_INTERVAL;

/// Retry pacing for failed reloads and writes.
const RETRY: Backoff = Backoff::constant(Duration::from_millis(500), Duration::from_secs(10), 0.3);

/// How often to ask again while rtpengine refuses inside its interval.
const TRY_LATER_POLL: Duration = Duration::from_secs(1);

/// Writes one module's table and has Kamailio reload it.
#[derive(Debug)]
pub struct TableSink {
    writer: TableWriter,
    reload: Option<binrpc::Client>,
    min_interval: Duration,
    name: String,
    metrics: Metrics,
}

impl TableSink {
    pub fn new(writer: TableWriter, reload: Option<binrpc::Client>, metrics: &Metrics) -> Self {
        TableSink {
            name: format!("{}-table", writer.kind.name()),
            writer,
            reload,
            min_interval: DEFAULT_MIN_RELOAD_INTERVAL,
            metrics: metrics.clone(),
        }
    }

    /// Counts one reload attempt in `dsfeed_table_reloads_total`.
    fn count(&self, client: &binrpc::Client, outcome: &str) {
        let rpc = client.addr().to_string();
        self.metrics
            .table_reload(&rpc, self.writer.kind.name(), outcome);
    }

    /// The shortest time between two reloads (default 1 s).
    pub fn min_reload_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
        self
    }

    /// Runs until the hub goes away: a failed write or reload is retried,
    /// never fatal. While a reload waits (pacing, a
    /// refusal, Kamailio not answering), a newer snapshot replaces the
    /// pending one.
    async fn deliver(self, mut snapshots: Snapshots) {
        self.writer.remove_stale();
        // Reload at start even when the file is already current: a previous
        // run may have written it without Kamailio loading it.
        let mut reload_due = true;
        let mut retry = Retry::new();
        let mut pacing = Pacing::new(self.min_interval);
        let method = self.writer.module().reload_method();
        loop {
            let Some(snapshot) = snapshots.due(&mut retry.at).await else {
                return;
            };
            match self.writer.write(&snapshot) {
                Ok(wrote) => {
                    if wrote {
                        tracing::info!(path = %self.writer.path.display(), %snapshot, "wrote the {} table", self.writer.kind.name());
                    }
                    reload_due |= wrote;
                }
                Err(err) => {
                    retry.failed(&snapshots, err.label(), &err, "the previous table stays");
                    continue;
                }
            }
            if let (true, Some(client)) = (reload_due, &self.reload) {
                if let Some(at) = pacing.wait_until() {
                    if !snapshots.pause(tokio::time::sleep_until(at)).await {
                        return;
                    }
                    continue;
                }
                let result = rpc::reload(client, self.writer.module()).await;
                pacing.reloaded();
                match result {
                    Ok(()) => {
                        self.count(client, "loaded");
                        reload_due = false;
                        retry.succeeded();
                        tracing::info!(rpc = %client.addr(), version = snapshot.version(), "Kamailio reloaded the {} table", self.writer.kind.name());
                    }
                    Err(err) if rpc::is_try_later(&err) => {
                        self.count(client, "throttled");
                        tracing::info!(rpc = %client.addr(), "{method} refused for now ({err}); retrying until Kamailio accepts");
                        retry.at = Some(Instant::now() + TRY_LATER_POLL);
                        continue;
                    }
                    Err(err) => {
                        self.count(client, "failed");
                        retry.failed(&snapshots, err.label(), &err, &format!("{method} failed"));
                        continue;
                    }
                }
            }
            if !snapshots.changed().await {
                return;
            }
        }
    }
}

/// When a failed write or reload is tried again: after the next delay of
/// [`RETRY`], which a successful reload starts over.
struct Retry {
    delays: Delays,
    /// For [`Snapshots::due`]: `None` once due.
    at: Option<Instant>,
}

impl Retry {
    fn new() -> Self {
        Retry {
            delays: RETRY.iter(),
            at: None,
        }
    }

    /// Reports `err` as `kind`, with its `consequence` and when it is
    /// retried, and sets that time.
    fn failed(
        &mut self,
        snapshots: &Snapshots,
        kind: &str,
        err: &dyn std::error::Error,
        consequence: &str,
    ) {
        let delay = self.delays.next().unwrap_or_default();
        snapshots.report(kind, err, &format!("{consequence}; retrying in {delay:?}"));
        self.at = Some(Instant::now() + delay);
    }

    fn succeeded(&mut self) {
        self.delays = RETRY.iter();
    }
}

impl Sink for TableSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(self: Box<Self>, snapshots: Snapshots) -> SinkFuture {
        super::infallible(self.deliver(snapshots))
    }
}

/// Writes one module's `db_text` table file, and what the module needs
/// beside it to start.
#[derive(Debug)]
pub struct TableWriter {
    kind: ListKind,
    path: PathBuf,
}

impl TableWriter {
    /// The writer of `kind`'s table at `path` (`DIR/TABLE`: DIR is the
    /// module's `db_url` `text:///DIR`, TABLE its table name).
    pub fn new(kind: ListKind, path: PathBuf) -> Self {
        TableWriter { kind, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The module that loads this table.
    pub fn module(&self) -> Module {
        match self.kind {
            ListKind::Rtpengine => Module::Rtpengine,
            ListKind::Domain => Module::Domain,
        }
    }

    /// Writes the table unless the file already holds exactly that
    /// content, after making sure the directory has what the module checks
    /// at start; returns whether the table was written. Held rtpengine
    /// sets and dids keep their rows from the file as it is.
    pub fn write(&self, snapshot: &Snapshot) -> Result<bool, Error> {
        self.prepare_directory()?;
        let old = std::fs::read_to_string(&self.path).unwrap_or_default();
        let content = dbtext::table(self.kind, snapshot.lists(), &old);
        if old == content {
            return Ok(false);
        }
        write(&self.path, &content)?;
        Ok(true)
    }

    /// Adds the version rows the module checks and, for the domain module,
    /// an empty `domain_attrs` table when there is none.
    fn prepare_directory(&self) -> Result<(), Error> {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let table = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut tables = vec![(table, version_of(self.kind))];
        if self.kind == ListKind::Domain {
            let attrs = dir.join("domain_attrs");
            if !attrs.exists() {
                write(&attrs, dbtext::DOMAIN_ATTRS_HEADER)?;
            }
            tables.push(("domain_attrs".into(), dbtext::DOMAIN_ATTRS_VERSION));
        }
        let version = dir.join("version");
        let old = std::fs::read_to_string(&version).ok();
        let rows: Vec<(&str, u32)> = tables.iter().map(|(t, v)| (t.as_str(), *v)).collect();
        if let Some(content) = dbtext::version_table(old.as_deref(), &rows) {
            write(&version, &content)?;
        }
        Ok(())
    }

    /// Removes the temporary files a killed writer of this table left.
    pub fn remove_stale(&self) {
        if let Ok(removed) = dsfeed_model::atomic::remove_stale(&self.path) {
            for path in removed {
                tracing::info!(path = %path.display(), "removed a temporary file a killed writer left behind");
            }
        }
    }
}

fn version_of(kind: ListKind) -> u32 {
    match kind {
        ListKind::Rtpengine => dbtext::RTPENGINE_VERSION,
        ListKind::Domain => dbtext::DOMAIN_VERSION,
    }
}

/// Replaces `path` whole, world-readable (Kamailio reads it as its own
/// user), dated after the file it replaces.
fn write(path: &Path, content: &str) -> Result<(), Error> {
    dsfeed_model::atomic::write_atomically_later(path, content.as_bytes(), 0o644).map_err(
        |source| Error::Write {
            path: path.to_owned(),
            source,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsfeed_model::{Lists, Relay, SetMap};
    use std::collections::BTreeSet;

    fn snapshot(relay: &str, domain: &str) -> Snapshot {
        let mut lists = Lists::default();
        lists
            .rtpengine
            .insert(1, vec![Relay::parse_target(relay).unwrap()]);
        lists
            .domains
            .insert(String::new(), BTreeSet::from([domain.to_owned()]));
        Snapshot::with_lists(SetMap::new(), BTreeSet::new(), lists)
    }

    #[test]
    fn tables_are_written_on_change_with_what_the_modules_check() {
        let dir = tempfile::tempdir().unwrap();
        let rtpengine = TableWriter::new(ListKind::Rtpengine, dir.path().join("rtpengine"));
        let domain = TableWriter::new(ListKind::Domain, dir.path().join("domain"));
        assert!(rtpengine.write(&snapshot("10.0.0.1", "a.example")).unwrap());
        assert!(domain.write(&snapshot("10.0.0.1", "a.example")).unwrap());
        assert!(!rtpengine.write(&snapshot("10.0.0.1", "b.example")).unwrap());
        assert!(domain.write(&snapshot("10.0.0.1", "b.example")).unwrap());
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(
            read("version"),
            format!(
                "{}1:rtpengine:1\n2:domain:2\n3:domain_attrs:1\n",
                dbtext::VERSION_HEADER
            )
        );
        assert_eq!(read("domain_attrs"), dbtext::DOMAIN_ATTRS_HEADER);
        assert!(read("domain").ends_with("1:b.example::0\n"));
        assert!(read("rtpengine").ends_with("1:1:udp\\:10.0.0.1\\:22222:1:0:0\n"));
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["domain", "domain_attrs", "rtpengine", "version"]);
    }

    /// A ctl on `socket` that answers reload `n` (from 0) with `reply(n)`:
    /// a fault's text, or `None` for success. Counts the requests.
    fn fake_ctl(
        socket: &Path,
        reply: impl Fn(usize) -> Option<&'static str> + Send + 'static,
    ) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        use dsfeed_binrpc::{Message, MessageType, Value};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        let count = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&count);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = vec![0; 4096];
                let len = stream.read(&mut request).await.unwrap();
                let request = Message::decode(&request[..len]).unwrap();
                assert_eq!(request.body[0], Value::Str("rtpengine.reload".into()));
                let n = counted.fetch_add(1, Ordering::SeqCst);
                let (kind, body) = match reply(n) {
                    Some(fault) => (
                        MessageType::Fault,
                        vec![Value::Int(500), Value::Str(fault.into())],
                    ),
                    None => (MessageType::Reply, vec![Value::Str("Ok.".into())]),
                };
                let reply = Message {
                    kind,
                    cookie: request.cookie,
                    body,
                };
                stream.write_all(&reply.encode().unwrap()).await.unwrap();
            }
        });
        count
    }

    #[tokio::test]
    async fn rtpengines_own_refusal_is_retried_until_it_accepts() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ctl.sock");
        // Refused twice inside the module's interval, then accepted.
        let reloads = fake_ctl(&socket, |n| (n < 2).then_some(rpc::TOO_SHORT_INTERVAL));
        let (tx, rx) = tokio::sync::watch::channel(Some(std::sync::Arc::new(snapshot(
            "10.0.0.1",
            "a.example",
        ))));
        let metrics = crate::metrics::Metrics::new();
        let sink = TableSink::new(
            TableWriter::new(ListKind::Rtpengine, dir.path().join("rtpengine")),
            Some(binrpc::Client::unix(&socket)),
            &metrics,
        );
        let running =
            tokio::spawn(sink.deliver(Snapshots::new(rx, metrics.sink("rtpengine-table"))));
        let deadline = Instant::now() + Duration::from_secs(30);
        while reloads.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "no third reload");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Accepted: no further reload until the table changes.
        drop(tx);
        running.await.unwrap();
        assert_eq!(reloads.load(Ordering::SeqCst), 3);
        let text = metrics.render(None, &[]);
        for (outcome, n) in [("throttled", 2), ("loaded", 1)] {
            let line = format!(
                "dsfeed_table_reloads_total{{rpc=\"unix:{}\",table=\"rtpengine\",outcome=\"{outcome}\"}} {n}",
                socket.display()
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
        let table = std::fs::read_to_string(dir.path().join("rtpengine")).unwrap();
        assert!(table.contains("udp\\:10.0.0.1\\:22222"), "{table}");
    }

    #[test]
    fn a_failed_write_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = TableWriter::new(ListKind::Rtpengine, dir.path().join("no/such/rtpengine"))
            .write(&snapshot("10.0.0.1", "a.example"))
            .unwrap_err();
        assert!(err.to_string().contains("no/such"), "{err}");
    }
}
