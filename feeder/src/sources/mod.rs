//! Sources: everything that knows which destinations belong in which set.
//!
//! A source runs on its own task and publishes its whole current view
//! (state of the world) each time it changes. It never publishes on error:
//! its last good view stays in the merge, so a failing source never empties
//! a set. The [`crate::hub`] merges every view into one snapshot.
//!
//! The built-in sources ([`static_sets`], [`sets_file`], [`kubernetes`],
//! [`consul`], [`dns_srv`]) implement [`Source`] with nothing but this
//! module's public items, so a source of your own can do all they do:
//!
//! - publish a whole view with [`Publisher::publish`] (the sets it manages,
//!   each with every destination; a set it managed and leaves out is gone
//!   from its view), or with [`Publisher::publish_view`] when it also feeds
//!   rtpengine relays or SIP domains ([`dsfeed_model::Lists`]);
//! - when its upstream answers "nothing" in a way it cannot trust yet, keep
//!   Kamailio's copy with [`Publisher::publish_holding`] and [`hold`];
//! - report a recovered error with [`Publisher::report`] (logged, counted
//!   in `dsfeed_source_errors_total{source, kind}`, and named by `--once`
//!   when it gives up), and return an [`Error`] only when it cannot go on:
//!   that stops the feeder.
//!
//! Build each [`Destination`](dsfeed_model::Destination) with its checked
//! constructors and drop only the one that fails, with a warning naming
//! it: one bad value never costs the rest of the set.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::error::Error;
use crate::metrics::SourceMetrics;
use dsfeed_model::{Backoff, Lists, SetId, SetMap};

pub mod consul;
pub mod defaults;
pub mod dns_srv;
pub mod hold;
pub mod kubernetes;
pub mod lists;
pub mod sets_file;
pub mod static_sets;

/// How a discovery source (Kubernetes, Consul, DNS SRV) waits before it
/// asks again after a failed query or an answer it cannot use: 500 ms
/// doubling to 30 s, each less up to half of itself at random, so a fleet
/// of feeders does not retry in step.
pub(crate) const RETRY: Backoff =
    Backoff::constant(Duration::from_millis(500), Duration::from_secs(30), 0.5);

/// The future a source runs as; it returns only when the source cannot go
/// on (or, for a one-shot source, when it has published).
pub type SourceFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// One source of destinations: something that knows which destinations
/// belong in which sets, and says so each time that changes.
///
/// The hub calls [`Source::run`] once, on a task of its own, and merges
/// what it publishes with every other source's view. Nothing reaches a
/// sink until every source has published once, so a source that is still
/// syncing never shows up as an empty set.
pub trait Source: Send + 'static {
    /// A short name for logs and metrics (the `source` label), such as
    /// `sets-file` or `kubernetes`; one per instance when a flag can be
    /// repeated (`consul asterisk`).
    fn name(&self) -> &str;

    /// Runs the source, sending each new view to `out`. Returns only when
    /// the source cannot go on (an `Err`, which stops the feeder) or has
    /// nothing more to say (`Ok`, a one-shot source: its last view stays).
    fn run(self: Box<Self>, out: Publisher) -> SourceFuture;
}

/// One view a source sent, tagged with the source's slot in the hub.
#[derive(Debug)]
pub(crate) struct View {
    pub slot: usize,
    pub sets: SetMap,
    /// Sets this source manages but cannot vouch for yet (see
    /// [`Publisher::publish_holding`]).
    pub held: BTreeSet<SetId>,
    /// rtpengine relays and SIP domains, and what of them is held.
    pub lists: Lists,
}

/// How a source hands its views to the hub, and reports its errors.
#[derive(Debug, Clone)]
pub struct Publisher {
    slot: usize,
    metrics: SourceMetrics,
    tx: mpsc::Sender<View>,
}

impl Publisher {
    pub(crate) fn new(slot: usize, metrics: SourceMetrics, tx: mpsc::Sender<View>) -> Self {
        Publisher { slot, metrics, tx }
    }

    /// Reports an error the source recovers from (its last view stays):
    /// logged and counted in `dsfeed_source_errors_total`.
    pub fn failed(&self, err: &Error, consequence: &str) {
        self.report(err.label(), err, consequence);
    }

    /// Reports an error of any type the source recovers from, as `kind` (a
    /// short, stable label such as `dns_timeout`): logged as a warning with
    /// its causes and `consequence` (what happens now, such as "sets file
    /// invalid; keeping the last good sets"), counted in
    /// `dsfeed_source_errors_total{source, kind}`, and kept as the source's
    /// last error for `--once` to name if the source never syncs.
    pub fn report(&self, kind: &str, err: &dyn std::error::Error, consequence: &str) {
        let chain = dsfeed_model::error_chain(err);
        tracing::warn!(source = %self.metrics.name(), kind, error = %chain, "{consequence}");
        self.metrics.failure(kind, chain);
    }

    /// Counts an error of kind `kind` the source has logged itself.
    pub fn count_error(&self, kind: &str) {
        self.metrics.error(kind);
    }

    /// The source's metrics, for tasks of its own that count errors.
    pub fn metrics(&self) -> &SourceMetrics {
        &self.metrics
    }

    /// Replaces this source's view. Waits while the hub is busy, so a source
    /// that changes faster than the hub merges is slowed, not buffered.
    pub async fn publish(&self, sets: SetMap) {
        self.publish_holding(sets, BTreeSet::new()).await;
    }

    /// Replaces this source's view with `sets`, and the sets in `held`
    /// marked as held: managed by this source, but with no content it can
    /// vouch for yet (a suspicious first answer). The rest of the snapshot
    /// is published without waiting for them, and every sink keeps what it
    /// already has for a held set.
    pub async fn publish_holding(&self, sets: SetMap, held: BTreeSet<SetId>) {
        self.publish_view(sets, held, Lists::default()).await;
    }

    /// Replaces this source's view with dispatcher `sets` (and `held`
    /// ones) and `lists`: rtpengine relays and SIP domains, with their own
    /// held parts, which sinks treat as held sets.
    pub async fn publish_view(&self, sets: SetMap, held: BTreeSet<SetId>, lists: Lists) {
        // The hub only goes away when the feeder is shutting down.
        let _ = self
            .tx
            .send(View {
                slot: self.slot,
                sets,
                held,
                lists,
            })
            .await;
    }
}

/// Asserts that each flag value of `cases` is refused with an error that
/// contains its needle, the words that tell the user what is wrong.
#[cfg(test)]
pub(crate) fn assert_refused<T>(cases: &[(&str, &str)])
where
    T: std::str::FromStr + std::fmt::Debug,
    T::Err: std::fmt::Display,
{
    for (value, needle) in cases {
        let err = value.parse::<T>().unwrap_err().to_string();
        assert!(err.contains(needle), "{value}: {err}");
    }
}
