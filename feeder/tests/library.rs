//! dsfeed as a library, through its public surface only: the hub runs
//! sources and sinks of your own like the built-in ones, reports their
//! errors through the same metrics, ends every sink when it shuts down, and
//! stops on the first component that fails, naming it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dsfeed::Error;
use dsfeed::hub::Hub;
use dsfeed::metrics::Metrics;
use dsfeed::sinks::{Sink, SinkFuture, Snapshots};
use dsfeed::sources::{Publisher, Source, SourceFuture};
use dsfeed_model::{Destination, SetMap, Snapshot};
use tokio::sync::Notify;

/// Publishes `sets` (holding `held`), reports one error, then stays.
struct Scripted {
    sets: SetMap,
    held: BTreeSet<u32>,
    fail: bool,
}

impl Source for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn run(self: Box<Self>, out: Publisher) -> SourceFuture {
        Box::pin(async move {
            let down = std::io::Error::other("inventory down");
            out.report("inventory_down", &down, "keeping the last view");
            if self.fail {
                return Err(Error::other("inventory_gone", down));
            }
            out.publish_holding(self.sets, self.held).await;
            std::future::pending().await
        })
    }
}

fn scripted(uris: &[&str]) -> Scripted {
    let dests = uris
        .iter()
        .map(|u| Destination::parse_target(u).unwrap())
        .collect();
    Scripted {
        sets: SetMap::from([(1, dests)]),
        held: BTreeSet::new(),
        fail: false,
    }
}

/// Keeps every snapshot it sees; fails when told to; notes the end.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Arc<Snapshot>>>>,
    ended: Arc<Mutex<bool>>,
    arrived: Arc<Notify>,
    fail: bool,
}

impl Sink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn run(self: Box<Self>, mut snapshots: Snapshots) -> SinkFuture {
        Box::pin(async move {
            while let Some(snapshot) = snapshots.next().await {
                self.seen.lock().unwrap().push(snapshot);
                snapshots.report("slow_disk", &std::io::Error::other("slow"), "retrying");
                self.arrived.notify_one();
                if self.fail {
                    return Err(Error::other("recorder_broken", "the disk is gone"));
                }
            }
            *self.ended.lock().unwrap() = true;
            Ok(())
        })
    }
}

#[tokio::test]
async fn custom_components_run_report_and_end_with_the_hub() {
    let metrics = Metrics::new();
    let recorder = Recorder::default();
    let arrived = Arc::clone(&recorder.arrived);
    let mut held = scripted(&["10.0.0.9"]);
    held.sets.clear();
    held.held.insert(7);
    let hub = Hub::new(&metrics)
        .with_source(scripted(&["10.0.0.1", "10.0.0.2"]))
        .with_source(held)
        .with_sink(recorder.clone());
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        hub.run(async move { arrived.notified().await }),
    )
    .await
    .expect("the hub stops once told to");
    result.unwrap();
    assert!(*recorder.ended.lock().unwrap(), "the sink saw the end");
    let seen = recorder.seen.lock().unwrap();
    let snapshot = seen.last().expect("a snapshot");
    assert_eq!(snapshot.sets()[&1].len(), 2);
    assert_eq!(snapshot.held(), &BTreeSet::from([7]));

    let text = metrics.render(None, &[]);
    for line in [
        "dsfeed_source_errors_total{source=\"scripted\",kind=\"inventory_down\"} 2",
        "dsfeed_sink_errors_total{sink=\"recorder\",kind=\"slow_disk\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
}

/// What stops a hub of `source` and `sink` that is never told to stop: the
/// first of them to fail.
async fn failure(source: Scripted, sink: Recorder) -> Error {
    Hub::new(&Metrics::new())
        .with_source(source)
        .with_sink(sink)
        .run(std::future::pending())
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_failing_sink_stops_the_hub_naming_it() {
    let recorder = Recorder {
        fail: true,
        ..Recorder::default()
    };
    let err = failure(scripted(&["10.0.0.1"]), recorder).await;
    assert!(
        matches!(&err, Error::SinkFailed { name, .. } if name == "recorder"),
        "{err:?}"
    );
    assert_eq!(err.label(), "recorder_broken");
    assert_eq!(
        dsfeed_model::error_chain(&err),
        "sink recorder failed: recorder_broken: the disk is gone"
    );
}

#[tokio::test]
async fn a_failing_source_stops_the_hub_and_every_sink_ends() {
    let recorder = Recorder::default();
    let mut failing = scripted(&[]);
    failing.fail = true;
    let err = failure(failing, recorder.clone()).await;
    assert!(
        matches!(&err, Error::SourceFailed { name, .. } if name == "scripted"),
        "{err:?}"
    );
    assert_eq!(err.label(), "inventory_gone");
    assert!(*recorder.ended.lock().unwrap(), "the sink was ended");
    assert!(
        recorder.seen.lock().unwrap().is_empty(),
        "nothing was published"
    );
}

#[tokio::test]
async fn once_takes_the_first_snapshot_or_names_who_is_waiting() {
    let snapshot = Hub::new(&Metrics::new())
        .with_source(scripted(&["10.0.0.1"]))
        .first_snapshot(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(snapshot.destination_count(), 1);

    /// Never publishes.
    struct Silent;
    impl Source for Silent {
        fn name(&self) -> &str {
            "silent"
        }
        fn run(self: Box<Self>, _out: Publisher) -> SourceFuture {
            Box::pin(std::future::pending())
        }
    }
    let err = Hub::new(&Metrics::new())
        .with_source(Silent)
        .first_snapshot(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("silent is still waiting"), "{err}");
}
