//! Sinks: where snapshots go once the hub has merged them.
//!
//! A sink receives every new snapshot through [`Snapshots`] and delivers it
//! somewhere: the [`file`](mod@file) sink writes `dispatcher.list` and reloads
//! Kamailio, [`feed`](mod@feed) streams to dsfeed.so over gRPC, [`crate::http`]
//! answers `/status` and the membership endpoints. They implement [`Sink`]
//! with nothing but this module's public items, as a sink of your own
//! would.
//!
//! Snapshots are state of the world and the newest wins: a sink that is
//! slow (pacing a reload, waiting for Kamailio) is never handed a queue of
//! old snapshots, only the newest when it asks again. Data flows one way:
//! a sink reads snapshots and never feeds anything back to the hub.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::metrics::SinkMetrics;
use dsfeed_model::Snapshot;

pub mod feed;
pub mod file;
pub mod table;

/// What sinks watch, as the hub publishes it: `None` until every source
/// has synced once. A [`tokio::sync::watch`] channel: the newest snapshot
/// wins, nobody queues. Defined here, with the sinks that read it, so
/// data flows one way: the hub imports the sinks, never the reverse.
pub type SnapshotRx = tokio::sync::watch::Receiver<Option<Arc<Snapshot>>>;

/// The future a sink runs as.
pub type SinkFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// The [`SinkFuture`] of a sink that cannot fail, one that retries
/// everything on its own and ends only when the hub shuts down.
pub fn infallible(delivery: impl Future<Output = ()> + Send + 'static) -> SinkFuture {
    Box::pin(async move {
        delivery.await;
        Ok(())
    })
}

/// One destination of snapshots.
///
/// The hub calls [`Sink::run`] once, on a task of its own, before any
/// source has synced. The sink runs until [`Snapshots::next`] (or
/// [`Snapshots::changed`]) says the hub has shut down, finishes what it was
/// delivering, and returns `Ok`. An `Err` stops the feeder: a sink that can
/// recover (a failed write, a Kamailio that does not answer) retries on its
/// own and counts the failure with [`Snapshots::report`].
pub trait Sink: Send + 'static {
    /// A short name for logs and metrics (the `sink` label), such as
    /// `file` or `feed`.
    fn name(&self) -> &str;

    /// Runs the sink on `snapshots` until the hub shuts down.
    fn run(self: Box<Self>, snapshots: Snapshots) -> SinkFuture;
}

/// What a sink reads: the newest snapshot and each one after it, and
/// where it reports its errors.
#[derive(Debug, Clone)]
pub struct Snapshots {
    rx: SnapshotRx,
    metrics: SinkMetrics,
}

impl Snapshots {
    /// Snapshots from `rx`; the current one, if any, counts as unseen.
    pub fn new(mut rx: SnapshotRx, metrics: SinkMetrics) -> Self {
        rx.mark_changed();
        Snapshots { rx, metrics }
    }

    /// The newest snapshot, now seen; `None` until every source has synced
    /// once.
    pub fn latest(&mut self) -> Option<Arc<Snapshot>> {
        self.rx.borrow_and_update().clone()
    }

    /// Waits until a snapshot newer than the last one seen is published
    /// (returns at once if there is one); `false` once the hub has shut
    /// down and every snapshot was seen.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }

    /// Waits out `pause` (a pacing delay, a retry's backoff), or less if a
    /// newer snapshot arrives meanwhile, so a sink that is waiting to act
    /// acts on the newest; `false` once the hub has shut down.
    pub async fn pause(&mut self, pause: impl Future<Output = ()>) -> bool {
        tokio::select! {
            () = pause => true,
            changed = self.changed() => changed,
        }
    }

    /// The newest snapshot once `retry_at` (when the sink's last failed
    /// attempt may be tried again) has passed, clearing it: a sink that
    /// retries acts on the newest snapshot, and a newer one arriving while
    /// it waits does not cut the wait short. Waits for a first snapshot;
    /// `None` once the hub has shut down.
    pub async fn due(&mut self, retry_at: &mut Option<Instant>) -> Option<Arc<Snapshot>> {
        loop {
            let Some(snapshot) = self.latest() else {
                if !self.changed().await {
                    return None;
                }
                continue;
            };
            if let Some(at) = retry_at.filter(|at| *at > Instant::now()) {
                if !self.pause(tokio::time::sleep_until(at)).await {
                    return None;
                }
                continue;
            }
            *retry_at = None;
            return Some(snapshot);
        }
    }

    /// The next snapshot not seen yet, waiting for it; the current one on
    /// the first call. `None` once the hub has shut down: the sink should
    /// finish and return.
    pub async fn next(&mut self) -> Option<Arc<Snapshot>> {
        loop {
            self.rx.changed().await.ok()?;
            if let Some(snapshot) = self.rx.borrow_and_update().clone() {
                return Some(snapshot);
            }
        }
    }

    /// Resolves once the hub has shut down, whatever was seen: for a sink
    /// that serves the current snapshot on demand (the feed, HTTP) rather
    /// than acting on each one.
    pub async fn closed(mut self) {
        while self.rx.changed().await.is_ok() {}
    }

    /// Another receiver of the same snapshots, for a sink that hands them
    /// to parts of its own.
    pub fn receiver(&self) -> SnapshotRx {
        self.rx.clone()
    }

    /// Reports an error the sink recovers from, as `kind` (a short,
    /// stable label such as `write`): logged as a warning with its causes
    /// and `consequence`, counted in `dsfeed_sink_errors_total{sink, kind}`.
    pub fn report(&self, kind: &str, err: &dyn std::error::Error, consequence: &str) {
        let chain = dsfeed_model::error_chain(err);
        tracing::warn!(sink = %self.metrics.name(), kind, error = %chain, "{consequence}");
        self.metrics.error(kind);
    }
}

/// Keeps a sink's reloads of Kamailio at least a minimum interval apart,
/// counted from the end of one attempt to the start of the next, so a
/// burst of snapshots costs Kamailio one reload per interval.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    min_interval: Duration,
    last_reload: Option<Instant>,
}

impl Pacing {
    /// Reloads at least `min_interval` apart; the first one at once.
    pub fn new(min_interval: Duration) -> Self {
        Pacing {
            min_interval,
            last_reload: None,
        }
    }

    /// When the next reload may start, if that is still to come.
    pub fn wait_until(&self) -> Option<Instant> {
        self.last_reload
            .map(|last| last + self.min_interval)
            .filter(|at| *at > Instant::now())
    }

    /// Notes that a reload attempt has just ended.
    pub fn reloaded(&mut self) {
        self.last_reload = Some(Instant::now());
    }
}
