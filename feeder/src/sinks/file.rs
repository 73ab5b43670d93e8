//! The file sink, for stock Kamailio: writes `dispatcher.list` atomically,
//! only when its content changes, and asks Kamailio over binrpc to reload it
//! until Kamailio has loaded the newest file.
//!
//! In `--mode auto` it first asks Kamailio whether it runs dsfeed.so (its
//! `dsfeed.status` RPC answers). The module must be the dispatcher's only
//! writer, so while it is there the sink neither writes nor reloads.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backoff::Backoff;
use crate::binrpc::{self, dispatcher};
use crate::error::Error;
use crate::hub::SnapshotRx;
use crate::snapshot::Snapshot;

/// Retry pacing for reloads and failed writes: quick enough to land soon
/// after Kamailio's `reload_delta` (5 s by default) expires, slow enough not
/// to flood its log with "Ongoing reload".
pub fn retry_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(5), 0.3)
        .expect("constant backoff settings are valid")
}

/// The longest wait between two reloads refused by dispatcher's
/// `reload_delta`, so the newest file loads soon after the throttle lifts.
const ONGOING_RELOAD_POLL: Duration = Duration::from_millis(500);

/// How often a sink that stepped aside for dsfeed.so asks again, so that a
/// Kamailio restarted without the module gets its file back.
const MODULE_RECHECK: Duration = Duration::from_secs(30);

/// Keeps `dispatcher.list` equal to the newest snapshot and, if a binrpc
/// address is given, Kamailio's loaded sets equal to the file.
#[derive(Debug)]
pub struct FileSink {
    writer: ListWriter,
    reload: Option<binrpc::Client>,
    backoff: Backoff,
    defer_to_module: bool,
    /// What Kamailio last said about dsfeed.so, to log only changes.
    module_seen: Option<bool>,
}

/// Whether a reload finished, was overtaken by a newer snapshot, found
/// dsfeed.so in charge, or outlived the hub.
enum ReloadOutcome {
    Loaded,
    Superseded,
    ModuleApplies,
    Closed,
}

/// What answers Kamailio's `dsfeed.status`.
enum Applier {
    /// The RPC answers: dsfeed.so applies the feed in memory.
    Module,
    /// Kamailio answers with a fault: no module, the file is the way in.
    Dispatcher,
    /// No answer: Kamailio is down or starting.
    Unknown,
}

impl FileSink {
    pub fn new(writer: ListWriter, reload: Option<binrpc::Client>) -> Self {
        FileSink {
            writer,
            reload,
            backoff: retry_backoff(),
            defer_to_module: false,
            module_seen: None,
        }
    }

    /// Steps aside whenever Kamailio runs dsfeed.so (`--mode auto`).
    pub fn deferring_to_module(mut self) -> Self {
        self.defer_to_module = true;
        self
    }

    async fn applier(&self) -> Applier {
        let Some(client) = self.reload.as_ref().filter(|_| self.defer_to_module) else {
            return Applier::Dispatcher;
        };
        match client.call("dsfeed.status", &[]).await {
            Ok(_) => Applier::Module,
            Err(binrpc::Error::Fault { .. }) => Applier::Dispatcher,
            Err(_) => Applier::Unknown,
        }
    }

    /// Whether dsfeed.so applies the feed, logging when Kamailio's answer
    /// changes.
    async fn module_applies(&mut self) -> bool {
        let applier = self.applier().await;
        let known = match applier {
            Applier::Module => Some(true),
            Applier::Dispatcher if self.defer_to_module => Some(false),
            _ => None,
        };
        if let Some(module) = known.filter(|m| Some(*m) != self.module_seen) {
            let rpc = self
                .reload
                .as_ref()
                .map(|c| c.addr().to_string())
                .unwrap_or_default();
            if module {
                tracing::info!(%rpc, "Kamailio runs dsfeed.so: it applies the feed; dispatcher.list is left alone");
            } else {
                tracing::info!(%rpc, "Kamailio runs without dsfeed.so: delivering dispatcher.list");
            }
            self.module_seen = Some(module);
        }
        matches!(applier, Applier::Module)
    }

    /// Runs until the hub goes away. A burst of snapshots is coalesced: while
    /// a write or reload is retried, only the newest snapshot is kept.
    pub async fn run(mut self, mut snapshots: SnapshotRx) {
        // Reload at start even when the file on disk is already current: a
        // previous run may have written it without Kamailio loading it.
        let mut reload_due = true;
        let mut write_failures = self.backoff.iter();
        loop {
            let current = snapshots.borrow_and_update().clone();
            let Some(snapshot) = current else {
                if snapshots.changed().await.is_err() {
                    return;
                }
                continue;
            };
            if self.module_applies().await {
                // Deliver again if Kamailio comes back without the module.
                reload_due = true;
                tokio::select! {
                    () = tokio::time::sleep(MODULE_RECHECK) => {}
                    changed = snapshots.changed() => if changed.is_err() { return },
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
                    tracing::error!(error = %err, retry_in = ?delay, "cannot write dispatcher.list; the previous file stays");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        changed = snapshots.changed() => if changed.is_err() { return },
                    }
                    continue;
                }
            }
            if let (true, Some(client)) = (reload_due, &self.reload) {
                match self
                    .reload_until_loaded(client, &snapshot, &mut snapshots)
                    .await
                {
                    ReloadOutcome::Loaded => reload_due = false,
                    ReloadOutcome::Superseded | ReloadOutcome::ModuleApplies => continue,
                    ReloadOutcome::Closed => return,
                }
            }
            if snapshots.changed().await.is_err() {
                return;
            }
        }
    }

    /// Sends `dispatcher.reload` until Kamailio accepts it, backing off on
    /// faults ("Ongoing reload" inside `reload_delta`) and silence, and
    /// giving up early when a newer snapshot needs writing first.
    async fn reload_until_loaded(
        &self,
        client: &binrpc::Client,
        snapshot: &Snapshot,
        snapshots: &mut SnapshotRx,
    ) -> ReloadOutcome {
        let mut delays = self.backoff.iter();
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let mut delay = delays.next().unwrap_or_default();
            match dispatcher::reload(client).await {
                Ok(()) => {
                    tracing::info!(rpc = %client.addr(), version = snapshot.version(), attempt, "Kamailio reloaded dispatcher.list");
                    warn_about_skipped(client, snapshot).await;
                    return ReloadOutcome::Loaded;
                }
                Err(err) if dispatcher::is_ongoing_reload(&err) => {
                    // The throttle lifts at a moment we cannot know (its
                    // reload_delta is Kamailio's setting): poll it often.
                    delay = delay.min(ONGOING_RELOAD_POLL);
                    if attempt == 1 {
                        tracing::info!(
                            rpc = %client.addr(), version = snapshot.version(),
                            "Kamailio refused the reload inside its reload_delta; retrying until it accepts"
                        );
                    } else {
                        tracing::debug!(rpc = %client.addr(), attempt, retry_in = ?delay, "reload still refused");
                    }
                }
                Err(err) => {
                    tracing::warn!(
                        rpc = %client.addr(), version = snapshot.version(), attempt, retry_in = ?delay,
                        "dispatcher.reload failed: {err}"
                    );
                    if matches!(self.applier().await, Applier::Module) {
                        return ReloadOutcome::ModuleApplies;
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                changed = snapshots.changed() => return match changed {
                    Ok(()) => ReloadOutcome::Superseded,
                    Err(_) => ReloadOutcome::Closed,
                },
            }
        }
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
    /// content; returns whether it wrote.
    pub fn write(&self, snapshot: &Snapshot) -> Result<bool, Error> {
        let content = snapshot.to_dispatcher_list();
        if std::fs::read(&self.path).is_ok_and(|old| old == content.as_bytes()) {
            return Ok(false);
        }
        write_atomically(&self.path, content.as_bytes()).map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })?;
        Ok(true)
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
            .map(|d| d.uri.as_str())
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

fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the output path names no file",
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".dsfeed-{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(content)?;
        // Kamailio reads the file as its own user; keep it world-readable
        // like the lists it ships.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Destination, SetMap};

    fn snapshot(uri: &str) -> Snapshot {
        Snapshot::new(SetMap::from([(
            1,
            vec![Destination::parse_target(uri).unwrap()],
        )]))
    }

    #[test]
    fn writes_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let writer = ListWriter::new(dir.path().join("dispatcher.list"));
        assert!(writer.write(&snapshot("10.0.0.1")).unwrap());
        assert!(!writer.write(&snapshot("10.0.0.1")).unwrap());
        assert!(writer.write(&snapshot("10.0.0.2")).unwrap());
        let text = std::fs::read_to_string(writer.path()).unwrap();
        assert!(text.ends_with("1 sip:10.0.0.2:5060 0 0\n"), "{text}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dispatcher.list");
        let writer = ListWriter::new(path.clone());
        writer.write(&snapshot("10.0.0.1")).unwrap();
        let before = std::fs::read(&path).unwrap();
        // A directory where the temporary file should go makes the write fail.
        let blocker = dir.path().join(format!(
            ".dispatcher.list.dsfeed-{}.tmp",
            std::process::id()
        ));
        std::fs::create_dir(&blocker).unwrap();
        let err = writer.write(&snapshot("10.0.0.2")).unwrap_err();
        assert!(err.to_string().contains("dispatcher.list"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
