//! The hub: runs every source, merges their views and publishes the
//! canonical snapshot to the sinks.
//!
//! Nothing is published until every source has sent its first view, so a
//! source that is still syncing (a Kubernetes list in flight) never shows up
//! as an empty set. After that each source's last view stays in the merge
//! until it sends a new one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::error::{Error, Waiting};
use crate::metrics::Metrics;
use crate::sources::{Publisher, Source, View};
use dsfeed_model::{SetId, SetMap, Snapshot};

/// What sinks watch: `None` until every source has synced once.
pub type SnapshotRx = watch::Receiver<Option<Arc<Snapshot>>>;

/// Views waiting for the hub; a fuller queue makes sources wait.
const QUEUE: usize = 16;

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
    let Some((merged, held)) = merge(views) else {
        return;
    };
    let snapshot = Snapshot::with_held(merged, held);
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

/// The union of every source's sets and of their held sets, or `None`
/// while a source has not synced yet. A set held by one source is held as a
/// whole: publishing only the other sources' part of it would shrink it.
fn merge(views: &[Option<View>]) -> Option<(SetMap, BTreeSet<SetId>)> {
    let mut merged = SetMap::new();
    let mut held = BTreeSet::new();
    for view in views {
        let view = view.as_ref()?;
        for (id, dests) in &view.sets {
            merged.entry(*id).or_default().extend(dests.iter().cloned());
        }
        held.extend(view.held.iter().copied());
    }
    Some((merged, held))
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
        })
    }

    #[test]
    fn waits_for_every_source() {
        assert!(merge(&[view(1, &["a"]), None]).is_none());
    }

    #[test]
    fn unions_sets_across_sources() {
        let (merged, held) =
            merge(&[view(1, &["a", "b"]), view(1, &["b", "c"]), view(2, &["d"])]).unwrap();
        let snapshot = Snapshot::with_held(merged, held);
        assert_eq!(snapshot.sets()[&1].len(), 3);
        assert_eq!(snapshot.sets()[&2].len(), 1);
    }

    #[test]
    fn a_set_held_by_one_source_is_held_whole() {
        let mut holding = view(2, &[]).unwrap();
        holding.sets.clear();
        holding.held.insert(1);
        let (merged, held) = merge(&[view(1, &["a"]), Some(holding), view(2, &["d"])]).unwrap();
        let snapshot = Snapshot::with_held(merged, held);
        assert_eq!(snapshot.sets().keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(snapshot.held(), &BTreeSet::from([1]));
    }
}
