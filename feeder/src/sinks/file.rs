//! The file sink, for stock Kamailio: writes `dispatcher.list` atomically,
//! only when its content changes, and asks Kamailio over binrpc to reload it
//! until Kamailio has loaded the newest file.
//!
//! Two rules keep Kamailio alive (DESIGN.md §3):
//! - **One writer.** Before every reload attempt, retries included, the sink
//!   asks Kamailio's `dsfeed.status`. If it answers, dsfeed.so is the
//!   dispatcher's writer and a reload could build the same list slot at the
//!   same moment as the module's swap (a shared-memory double free): the
//!   sink neither writes nor reloads (`--mode auto`), or refuses with an
//!   error (`--mode file`). If nothing answers (Kamailio starting or down),
//!   it writes the file, for a stock Kamailio that starts to read, and waits:
//!   "no answer" never means "reload".
//! - **Paced.** Two reloads are at least `min_reload_interval` apart, counted
//!   from the end of the previous one, whatever Kamailio's own
//!   `reload_delta`: a lone change reloads at once, a burst ends on the
//!   newest snapshot.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::metrics::{FileSinkMetrics, Metrics};
use crate::sinks::{Pacing, Sink, SinkFuture, Snapshots};
use dsfeed_binrpc::{self as binrpc, dispatcher};
use dsfeed_model::Backoff;
use dsfeed_model::Snapshot;

/// Retry pacing for reloads and failed writes: quick enough to land soon
/// after Kamailio's `reload_delta` (5 s by default) expires, slow enough not
/// to flood its log with "Ongoing reload".
const RETRY: Backoff = Backoff::constant(Duration::from_millis(200), Duration::from_secs(5), 0.3);

/// The shortest `--min-reload-interval` accepted: longer than any reader's
/// window on the retired list measured in DESIGN.md (~107 ms under load, a
/// ~350 ms probing round over 10,000 destinations).
pub const MIN_RELOAD_INTERVAL_FLOOR: Duration = Duration::from_millis(500);

/// The default `--min-reload-interval`.
pub const DEFAULT_MIN_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The longest wait between two reloads refused by dispatcher's
/// `reload_delta`, so the newest file loads soon after the throttle lifts.
const ONGOING_RELOAD_POLL: Duration = Duration::from_millis(500);

/// How often a sink that stepped aside for dsfeed.so asks again, so that a
/// Kamailio restarted without the module gets its file back.
const MODULE_RECHECK: Duration = Duration::from_secs(30);

/// How often to ask again while Kamailio's ctl does not answer.
const NO_ANSWER_POLL: Duration = Duration::from_secs(1);

/// What the sink does when Kamailio runs dsfeed.so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenModule {
    /// `--mode auto`: step aside; the module applies this feeder's feed.
    StepAside,
    /// `--mode file`: the operator asked for the file, but reloading would
    /// break the module's single-writer rule: refuse, loudly.
    Refuse,
}

/// What answers Kamailio's `dsfeed.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applier {
    /// The RPC answers: dsfeed.so applies the feed in memory and is the
    /// dispatcher's only writer.
    Module,
    /// Kamailio answers that the command does not exist: no module, the
    /// file and a reload are the way in.
    Dispatcher,
    /// No usable answer: Kamailio is down, starting, or its ctl is broken.
    Unknown,
}

/// Asks Kamailio at `client` which writer its dispatcher has.
pub async fn applier(client: &binrpc::Client) -> Applier {
    match client.call("dsfeed.status", &[]).await {
        Ok(_) => Applier::Module,
        // ctl's own answer for a method no module exports.
        Err(binrpc::Error::Fault { message, .. }) if message.contains("not found") => {
            Applier::Dispatcher
        }
        Err(err) => {
            tracing::debug!(error = %dsfeed_model::error_chain(&err), "no usable answer to dsfeed.status");
            Applier::Unknown
        }
    }
}

/// Keeps `dispatcher.list` equal to the newest snapshot and, if a binrpc
/// address is given, Kamailio's loaded sets equal to the file.
#[derive(Debug)]
pub struct FileSink {
    writer: ListWriter,
    reload: Option<binrpc::Client>,
    metrics: FileSinkMetrics,
    backoff: Backoff,
    when_module: WhenModule,
    pacing: Pacing,
    /// The last answer to `dsfeed.status`, to log only changes.
    seen: Option<Applier>,
}

/// What one reload attempt came to.
enum Attempt {
    Loaded,
    /// Refused or failed: try again no sooner than this.
    RetryAfter(Duration),
}

impl FileSink {
    pub fn new(writer: ListWriter, reload: Option<binrpc::Client>, metrics: &Metrics) -> Self {
        let rpc = reload.as_ref().map(|c| c.addr().to_string());
        FileSink {
            metrics: metrics.file_sink(rpc.as_deref().unwrap_or_default()),
            writer,
            reload,
            backoff: RETRY,
            when_module: WhenModule::StepAside,
            pacing: Pacing::new(DEFAULT_MIN_RELOAD_INTERVAL),
            seen: None,
        }
    }

    /// What to do when Kamailio runs dsfeed.so (default: step aside).
    pub fn when_module(mut self, when: WhenModule) -> Self {
        self.when_module = when;
        self
    }

    /// The shortest time between two reloads (default 1 s).
    pub fn min_reload_interval(mut self, interval: Duration) -> Self {
        self.pacing = Pacing::new(interval);
        self
    }

    /// Runs until the hub goes away: a failed write or reload is retried,
    /// never fatal. While a reload waits (pacing, a
    /// retry, Kamailio not answering), a newer snapshot replaces the
    /// pending one.
    pub async fn deliver(mut self, mut snapshots: Snapshots) {
        self.writer.remove_stale();
        // Reload at start even when the file on disk is already current: a
        // previous run may have written it without Kamailio loading it.
        let mut reload_due = true;
        let mut retry_at: Option<Instant> = None;
        let mut write_failures = self.backoff.iter();
        let mut reload_failures = self.backoff.iter();
        loop {
            let Some(snapshot) = snapshots.due(&mut retry_at).await else {
                return;
            };
            let applier = match &self.reload {
                Some(client) => applier(client).await,
                None => Applier::Dispatcher,
            };
            self.report(applier);
            if applier == Applier::Module {
                // Deliver again if Kamailio comes back without the module.
                reload_due = true;
                self.metrics.stepped_aside();
                if !snapshots.pause(tokio::time::sleep(MODULE_RECHECK)).await {
                    return;
                }
                continue;
            }
            match self.writer.write(&snapshot) {
                Ok(wrote) => {
                    write_failures = self.backoff.iter();
                    if wrote {
                        tracing::info!(path = %self.writer.path().display(), %snapshot, "wrote dispatcher.list");
                    }
                    reload_due |= wrote;
                }
                Err(err) => {
                    let delay = write_failures.next().unwrap_or_default();
                    self.metrics.error(err.label());
                    tracing::error!(error = %err, retry_in = ?delay, "cannot write dispatcher.list; the previous file stays");
                    retry_at = Some(Instant::now() + delay);
                    continue;
                }
            }
            let pause = match (&self.reload, applier) {
                (None, _) => None,
                (Some(_), Applier::Unknown) => Some(tokio::time::sleep(NO_ANSWER_POLL)),
                // Paced: wait, then ask again right before reloading.
                (Some(_), _) => self
                    .pacing
                    .wait_until()
                    .filter(|_| reload_due)
                    .map(tokio::time::sleep_until),
            };
            if let Some(pause) = pause {
                if !snapshots.pause(pause).await {
                    return;
                }
                continue;
            }
            if let (true, Some(client)) = (reload_due, self.reload.clone()) {
                match self.reload_once(&client, &snapshot).await {
                    Attempt::Loaded => {
                        reload_due = false;
                        reload_failures = self.backoff.iter();
                    }
                    Attempt::RetryAfter(most) => {
                        let delay = reload_failures.next().unwrap_or_default().min(most);
                        retry_at = Some(Instant::now() + delay);
                        continue;
                    }
                }
            }
            if !snapshots.changed().await {
                return;
            }
        }
    }

    /// Logs (and counts) what Kamailio said about its dispatcher's writer
    /// when it differs from the last answer; a refusal in `--mode file` is
    /// logged every time, since it withholds a delivery.
    fn report(&mut self, applier: Applier) {
        let rpc = self
            .reload
            .as_ref()
            .map(|c| c.addr().to_string())
            .unwrap_or_default();
        let changed = self.seen != Some(applier);
        self.seen = Some(applier);
        match applier {
            Applier::Module if self.when_module == WhenModule::Refuse => {
                self.metrics.withheld("dsfeed_module");
                tracing::error!(
                    %rpc,
                    "Kamailio runs dsfeed.so: --mode file refuses to write dispatcher.list or reload it, since dsfeed.so must be the dispatcher's only writer (two loads at once corrupt Kamailio's shared memory); use --mode auto or grpc, or remove dsfeed.so"
                );
            }
            Applier::Module if changed => tracing::info!(
                %rpc,
                "Kamailio runs dsfeed.so: it applies the feed; dispatcher.list is left alone"
            ),
            Applier::Dispatcher if changed && self.reload.is_some() => tracing::info!(
                %rpc,
                "Kamailio runs without dsfeed.so: delivering dispatcher.list"
            ),
            Applier::Unknown if changed => {
                self.metrics.withheld("no_answer");
                tracing::warn!(
                    %rpc,
                    "Kamailio's ctl does not answer: dispatcher.list is written, and the reload waits until Kamailio answers and runs without dsfeed.so"
                );
            }
            _ => {}
        }
    }

    /// Sends one `dispatcher.reload` and reads its answer.
    async fn reload_once(&mut self, client: &binrpc::Client, snapshot: &Snapshot) -> Attempt {
        let result = dispatcher::reload(client).await;
        self.pacing.reloaded();
        match result {
            Ok(()) => {
                self.metrics.reload("loaded");
                self.metrics.loaded(snapshot.sets_version());
                tracing::info!(rpc = %client.addr(), version = snapshot.sets_version(), "Kamailio reloaded dispatcher.list");
                warn_about_skipped(client, snapshot).await;
                Attempt::Loaded
            }
            Err(err) if dispatcher::is_ongoing_reload(&err) => {
                self.metrics.reload("throttled");
                tracing::info!(
                    rpc = %client.addr(), version = snapshot.sets_version(),
                    "Kamailio refused the reload inside its reload_delta; retrying until it accepts"
                );
                // The throttle lifts at a moment we cannot know (its
                // reload_delta is Kamailio's setting): poll it often.
                Attempt::RetryAfter(ONGOING_RELOAD_POLL)
            }
            Err(err) => {
                self.metrics.reload("failed");
                tracing::warn!(rpc = %client.addr(), version = snapshot.sets_version(), "dispatcher.reload failed: {err}");
                Attempt::RetryAfter(Duration::MAX)
            }
        }
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        "file"
    }

    fn run(self: Box<Self>, snapshots: Snapshots) -> SinkFuture {
        super::infallible(self.deliver(snapshots))
    }
}

/// Writes `dispatcher.list` so that Kamailio only ever reads a whole file:
/// a temporary file in the same directory, fsync, rename over the target,
/// fsync the directory.
#[derive(Debug)]
pub struct ListWriter {
    path: PathBuf,
}

impl ListWriter {
    pub fn new(path: PathBuf) -> Self {
        ListWriter { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the snapshot unless the file already holds exactly that
    /// content; returns whether it wrote. Held sets keep their lines from
    /// the file as it is.
    pub fn write(&self, snapshot: &Snapshot) -> Result<bool, Error> {
        let old = std::fs::read_to_string(&self.path).unwrap_or_default();
        let content = snapshot.to_dispatcher_list_keeping(&old);
        if old == content {
            return Ok(false);
        }
        // Kamailio reads the file as its own user; keep it world-readable
        // like the lists it ships.
        dsfeed_model::atomic::write_atomically(&self.path, content.as_bytes(), 0o644).map_err(
            |source| Error::Write {
                path: self.path.clone(),
                source,
            },
        )?;
        Ok(true)
    }

    /// Removes the temporary files a killed writer of this list left beside
    /// it; call before the first write.
    pub fn remove_stale(&self) {
        match dsfeed_model::atomic::remove_stale(&self.path) {
            Ok(removed) => {
                for path in removed {
                    tracing::info!(path = %path.display(), "removed a temporary file a killed writer left behind");
                }
            }
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot look for leftover temporary files")
            }
        }
    }
}

/// Reads back what Kamailio loaded and names any destination it skipped:
/// dispatcher drops a line it cannot use with only a warning in its own log
/// (an IPv6 URI when Kamailio listens on no IPv6 address, an unresolvable
/// name, an unknown socket). Large lists exceed ctl's reply limits; then
/// nothing is checked.
async fn warn_about_skipped(client: &binrpc::Client, snapshot: &Snapshot) {
    let loaded = match dispatcher::list(client).await {
        Ok(loaded) => loaded,
        Err(err) => {
            tracing::debug!("cannot read back Kamailio's sets: {err}");
            return;
        }
    };
    for (id, dests) in snapshot.sets() {
        let in_kamailio: HashSet<&str> = loaded
            .get(id)
            .into_iter()
            .flatten()
            .map(|d| d.uri.as_str())
            .collect();
        let skipped: Vec<&str> = dests
            .iter()
            .map(|d| d.uri())
            .filter(|uri| !in_kamailio.contains(uri))
            .collect();
        if !skipped.is_empty() {
            tracing::warn!(
                set = id,
                ?skipped,
                "Kamailio did not load these destinations; its log says why (IPv6 needs an IPv6 listen socket)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsfeed_model::{Destination, SetMap};

    fn snapshot(uri: &str) -> Snapshot {
        Snapshot::new(SetMap::from([(
            1,
            vec![Destination::parse_target(uri).unwrap()],
        )]))
    }

    /// The path of a `dispatcher.list`, not written yet, in a fresh
    /// directory (returned first: keep it as long as the path is used).
    fn list_path() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dispatcher.list");
        (dir, path)
    }

    /// How many entries `dir` holds: 1 after a write that left no
    /// temporary file beside the list.
    fn entries(dir: &tempfile::TempDir) -> usize {
        std::fs::read_dir(dir.path()).unwrap().count()
    }

    #[test]
    fn writes_only_on_change() {
        let (dir, path) = list_path();
        let writer = ListWriter::new(path);
        assert!(writer.write(&snapshot("10.0.0.1")).unwrap());
        assert!(!writer.write(&snapshot("10.0.0.1")).unwrap());
        assert!(writer.write(&snapshot("10.0.0.2")).unwrap());
        let text = std::fs::read_to_string(writer.path()).unwrap();
        assert!(text.ends_with("1 sip:10.0.0.2:5060 0 0\n"), "{text}");
        assert_eq!(entries(&dir), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_failed_write_names_the_file_and_leaves_nothing() {
        let (dir, path) = list_path();
        // A directory where the list should be: the rename over it fails.
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), "x").unwrap();
        let err = ListWriter::new(path.clone())
            .write(&snapshot("10.0.0.2"))
            .unwrap_err();
        assert!(err.to_string().contains("dispatcher.list"), "{err}");
        assert_eq!(entries(&dir), 1, "the temporary file is removed");
    }

    #[test]
    fn a_symlink_planted_at_the_old_temporary_name_is_not_followed() {
        let (dir, path) = list_path();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        // The name the sink used to write through: predictable from the pid.
        let planted = dir.path().join(format!(
            ".dispatcher.list.dsfeed-{}.tmp",
            std::process::id()
        ));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        ListWriter::new(path.clone())
            .write(&snapshot("10.0.0.1"))
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("sip:10.0.0.1:5060")
        );
    }

    #[test]
    fn temporary_files_a_killed_writer_left_are_removed_at_start() {
        let (dir, path) = list_path();
        let stale = dir
            .path()
            .join(".dispatcher.list.dsfeed-00c0ffee00c0ffee.tmp");
        std::fs::write(&stale, "1 sip:half").unwrap();
        ListWriter::new(path).remove_stale();
        assert!(!stale.exists());
    }
}
