//! The hub: runs every source, merges their views and publishes the
//! canonical snapshot to the sinks.
//!
//! Nothing is published until every source has sent its first view, so a
//! source that is still syncing (a Kubernetes list in flight) never shows up
//! as an empty set. After that each source's last view stays in the merge
//! until it sends a new one.
//!
//! [`Hub`] is the common base every feeder is built on, the `dsfeed` binary
//! included: sources in, sinks out, one way.
//!
//! ```no_run
//! use dsfeed::hub::Hub;
//! use dsfeed::metrics::Metrics;
//! use dsfeed::sinks::file::{FileSink, ListWriter};
//! use dsfeed::sources::static_sets::{StaticSet, StaticSource};
//!
//! # async fn feeder() -> Result<(), dsfeed::Error> {
//! let metrics = Metrics::new();
//! let set: StaticSet = "1=10.0.0.1,10.0.0.2:5080".parse()?;
//! let list = ListWriter::new("/data/kamailio/dispatcher.list".into());
//! Hub::new(&metrics)
//!     .with_source(StaticSource::new(&[set]))
//!     .with_sink(FileSink::new(list, None, &metrics))
//!     .run(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await
//! # }
//! ```

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::error::{Error, Waiting};
use crate::metrics::Metrics;
use crate::sinks::{Sink, SnapshotRx, Snapshots};
use crate::sources::{Publisher, Source, View};
use dsfeed_model::{Lists, SetId, SetMap, Snapshot};

/// Views waiting for the hub; a fuller queue makes sources wait.
const QUEUE: usize = 16;

/// How long sinks may take to finish once the hub shuts down (the feed
/// closes every stream within its own, shorter, grace).
const SINK_GRACE: Duration = Duration::from_secs(10);

/// Sources in, sinks out: the feeder as a value. Build it with its sources
/// and sinks, then [`Hub::run`] it (a daemon) or take its
/// [`Hub::first_snapshot`] (`--once`).
pub struct Hub {
    metrics: Metrics,
    sources: Vec<Box<dyn Source>>,
    sinks: Vec<Box<dyn Sink>>,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
}

impl Hub {
    /// A hub with no source and no sink, counting in `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Hub {
            metrics: metrics.clone(),
            sources: Vec::new(),
            sinks: Vec::new(),
            tx: watch::Sender::new(None),
        }
    }

    /// Adds a source.
    pub fn with_source(mut self, source: impl Source) -> Self {
        self.sources.push(Box::new(source));
        self
    }

    /// Adds sources already boxed (the built-in constructors that make one
    /// per flag return them so).
    pub fn with_sources(mut self, sources: impl IntoIterator<Item = Box<dyn Source>>) -> Self {
        self.sources.extend(sources);
        self
    }

    /// Adds a sink.
    pub fn with_sink(mut self, sink: impl Sink) -> Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// The merged snapshots, for a part that is not a sink but reads them
    /// (the feed's shared state, a test).
    pub fn snapshots(&self) -> SnapshotRx {
        self.tx.subscribe()
    }

    /// Runs every sink and every source until `shutdown` resolves, a
    /// source fails, or a sink fails. Then the snapshots end, every sink
    /// finishes (within a grace), and the first failure, if any, is
    /// returned.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let Hub {
            metrics,
            sources,
            sinks,
            tx,
        } = self;
        let mut running = JoinSet::new();
        for sink in sinks {
            let name = sink.name().to_owned();
            let snapshots = Snapshots::new(tx.subscribe(), metrics.sink(&name));
            running.spawn(async move { (name, sink.run(snapshots).await) });
        }
        // Boxed, so that dropping it below ends the merge (and the sources)
        // and drops the sender.
        let mut merged = Box::pin(run(sources, tx, &metrics));
        tokio::pin!(shutdown);
        let mut result = loop {
            tokio::select! {
                () = &mut shutdown => break Ok(()),
                failed = &mut merged => break failed,
                // A sink that is done is no reason to stop; one that failed is.
                Some(ended) = running.join_next() => {
                    if let Err(err) = sink_ended(ended) {
                        break Err(err);
                    }
                }
            }
        };
        // Dropping the merge drops the sender: every sink sees the end.
        drop(merged);
        let finished = tokio::time::timeout(SINK_GRACE, async {
            let mut first = None;
            while let Some(ended) = running.join_next().await {
                if let Err(err) = sink_ended(ended) {
                    first.get_or_insert(err);
                }
            }
            first
        })
        .await;
        match finished {
            Ok(Some(err)) if result.is_ok() => result = Err(err),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!("some sinks did not finish within {SINK_GRACE:?}; leaving anyway")
            }
        }
        result
    }

    /// Runs the sources until every one has synced once and returns the
    /// merged snapshot, for `--once`; sinks are not run. See
    /// [`first_snapshot`].
    pub async fn first_snapshot(self, deadline: Duration) -> Result<Arc<Snapshot>, Error> {
        first_snapshot(self.sources, &self.metrics, deadline).await
    }
}

/// What one sink's end means: an error is the feeder's.
fn sink_ended(
    ended: Result<(String, Result<(), Error>), tokio::task::JoinError>,
) -> Result<(), Error> {
    match ended {
        Ok((_, Ok(()))) => Ok(()),
        Ok((name, Err(err))) => Err(Error::SinkFailed {
            name,
            cause: Box::new(err),
        }),
        Err(join) => Err(Error::from_join(join, "sink")),
    }
}

/// Runs `sources` until one fails, publishing each new merged snapshot on
/// `out`. Once every source has finished (static sets only), it keeps `out`
/// open so that sinks go on delivering the last snapshot.
pub async fn run(
    sources: Vec<Box<dyn Source>>,
    out: watch::Sender<Option<Arc<Snapshot>>>,
    metrics: &Metrics,
) -> Result<(), Error> {
    run_tracking(sources, out, metrics, &watch::Sender::new(Vec::new())).await
}

/// [`run`], keeping `waiting` equal to the names of the sources that have
/// not sent their first view yet.
async fn run_tracking(
    sources: Vec<Box<dyn Source>>,
    out: watch::Sender<Option<Arc<Snapshot>>>,
    metrics: &Metrics,
    waiting: &watch::Sender<Vec<String>>,
) -> Result<(), Error> {
    let names: Vec<String> = sources.iter().map(|s| s.name().to_owned()).collect();
    waiting.send_replace(names.clone());
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let mut views: Vec<Option<View>> = (0..sources.len()).map(|_| None).collect();
    let mut tasks = JoinSet::new();
    for (slot, source) in sources.into_iter().enumerate() {
        let counted = metrics.source(source.name());
        let publisher = Publisher::new(slot, counted.clone(), tx.clone());
        tasks.spawn(async move {
            let result = source.run(publisher).await;
            if let Err(err) = &result {
                counted.failure(err.label(), dsfeed_model::error_chain(err));
            }
            (counted.name().to_owned(), result)
        });
    }
    drop(tx);

    loop {
        tokio::select! {
            Some(view) = rx.recv() => {
                store(&mut views, view);
                // Coalesce a burst: merge once for everything already queued.
                while let Ok(view) = rx.try_recv() {
                    store(&mut views, view);
                }
                waiting.send_if_modified(|w| {
                    let still: Vec<String> = names
                        .iter()
                        .zip(&views)
                        .filter(|(_, view)| view.is_none())
                        .map(|(name, _)| name.clone())
                        .collect();
                    let changed = *w != still;
                    *w = still;
                    changed
                });
                publish(&views, &out);
            }
            Some(done) = tasks.join_next() => match done {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(err))) => {
                    return Err(Error::SourceFailed { name, cause: Box::new(err) });
                }
                Err(join) => return Err(Error::from_join(join, "source")),
            },
            else => {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Runs `sources` until every one has synced once and returns the merged
/// snapshot, for `--once`. A source that fails before that is the error;
/// so is `deadline` passing first, naming every source still waiting with
/// the last error it reported (a source retrying a refused or unreachable
/// server never fails by itself).
pub async fn first_snapshot(
    sources: Vec<Box<dyn Source>>,
    metrics: &Metrics,
    deadline: Duration,
) -> Result<Arc<Snapshot>, Error> {
    let (tx, mut rx) = watch::channel(None);
    let (waiting_tx, waiting) = watch::channel(Vec::new());
    let hub = tokio::spawn({
        let metrics = metrics.clone();
        async move { run_tracking(sources, tx, &metrics, &waiting_tx).await }
    });
    let synced = tokio::time::timeout(deadline, async {
        rx.wait_for(Option::is_some).await.map(|s| s.clone())
    })
    .await;
    match synced {
        Ok(Ok(Some(snapshot))) => {
            hub.abort();
            return Ok(snapshot);
        }
        Err(_elapsed) => {
            hub.abort();
            let waiting = waiting
                .borrow()
                .iter()
                .map(|name| Waiting {
                    source: name.clone(),
                    last_error: metrics.last_source_error(name),
                })
                .collect();
            return Err(Error::NotSynced { deadline, waiting });
        }
        Ok(_) => {}
    }
    // The hub only lets go of the channel when a source failed.
    match hub.await {
        Ok(Err(err)) => Err(err),
        Ok(Ok(())) => Err(Error::Cancelled("the hub")),
        Err(join) => Err(Error::from_join(join, "the hub")),
    }
}

fn store(views: &mut [Option<View>], view: View) {
    let slot = view.slot;
    views[slot] = Some(view);
}

fn publish(views: &[Option<View>], out: &watch::Sender<Option<Arc<Snapshot>>>) {
    let Some((merged, held, lists)) = merge(views) else {
        return;
    };
    let snapshot = Snapshot::with_lists(merged, held, lists);
    out.send_if_modified(|current| {
        if current
            .as_ref()
            .is_some_and(|c| c.version() == snapshot.version())
        {
            return false;
        }
        tracing::info!(%snapshot, "new snapshot");
        *current = Some(Arc::new(snapshot));
        true
    });
}

/// The union of every source's sets and lists and of their held parts, or
/// `None` while a source has not synced yet. A set (or rtpengine set, or
/// did) held by one source is held as a whole: publishing only the other
/// sources' part of it would shrink it.
fn merge(views: &[Option<View>]) -> Option<(SetMap, BTreeSet<SetId>, Lists)> {
    let mut merged = SetMap::new();
    let mut held = BTreeSet::new();
    let mut lists = Lists::default();
    for view in views {
        let view = view.as_ref()?;
        for (id, dests) in &view.sets {
            merged.entry(*id).or_default().extend(dests.iter().cloned());
        }
        held.extend(view.held.iter().copied());
        lists.merge(&view.lists);
    }
    Some((merged, held, lists))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsfeed_model::Destination;

    fn view(id: u32, uris: &[&str]) -> Option<View> {
        let dests = uris
            .iter()
            .map(|u| Destination::parse_target(u).unwrap())
            .collect();
        Some(View {
            slot: 0,
            sets: SetMap::from([(id, dests)]),
            held: BTreeSet::new(),
            lists: Lists::default(),
        })
    }

    #[test]
    fn waits_for_every_source() {
        assert!(merge(&[view(1, &["a"]), None]).is_none());
    }

    #[test]
    fn unions_sets_across_sources() {
        let (merged, held, _) =
            merge(&[view(1, &["a", "b"]), view(1, &["b", "c"]), view(2, &["d"])]).unwrap();
        let snapshot = Snapshot::with_held(merged, held);
        assert_eq!(snapshot.sets()[&1].len(), 3);
        assert_eq!(snapshot.sets()[&2].len(), 1);
    }

    #[test]
    fn lists_merge_and_a_held_did_or_relay_set_is_held_whole() {
        use dsfeed_model::Relay;
        let relays = |id: u32, hosts: &[&str], held: &[&str]| {
            let mut lists = Lists::default();
            lists.rtpengine.insert(
                id,
                hosts
                    .iter()
                    .map(|h| Relay::parse_target(h).unwrap())
                    .collect(),
            );
            for did in held {
                lists.held_domains.insert((*did).to_owned());
            }
            let mut view = view(1, &["a"]).unwrap();
            view.lists = lists;
            Some(view)
        };
        let mut domains = relays(2, &["10.0.0.9"], &[]).unwrap();
        domains
            .lists
            .domains
            .insert("t1".into(), BTreeSet::from(["a.example".to_owned()]));
        let (sets, held, lists) = merge(&[
            relays(0, &["10.0.0.1"], &[]),
            relays(0, &["10.0.0.2"], &["t1"]),
            Some(domains),
        ])
        .unwrap();
        let snapshot = Snapshot::with_lists(sets, held, lists);
        assert_eq!(snapshot.lists().rtpengine[&0].len(), 2);
        assert_eq!(snapshot.lists().rtpengine[&2].len(), 1);
        assert!(snapshot.lists().domains.is_empty(), "t1 is held whole");
        assert_eq!(
            snapshot.lists().held_domains,
            BTreeSet::from(["t1".to_owned()])
        );
    }

    #[test]
    fn a_set_held_by_one_source_is_held_whole() {
        let mut holding = view(2, &[]).unwrap();
        holding.sets.clear();
        holding.held.insert(1);
        let (merged, held, _) = merge(&[view(1, &["a"]), Some(holding), view(2, &["d"])]).unwrap();
        let snapshot = Snapshot::with_held(merged, held);
        assert_eq!(snapshot.sets().keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(snapshot.held(), &BTreeSet::from([1]));
    }
}
