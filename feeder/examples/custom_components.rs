//! A feeder of your own: a custom source and a custom sink plugged into the
//! hub beside a built-in source. Run it with
//! `cargo run -p dsfeed --example custom_components`.
//!
//! The source is an "inventory" that grows by one backend at a time; the
//! sink prints each snapshot as `dispatcher.list` lines and ends the run
//! once it has seen every backend.

use std::sync::Arc;
use std::time::Duration;

use dsfeed::hub::Hub;
use dsfeed::metrics::Metrics;
use dsfeed::sinks::{Sink, SinkFuture, Snapshots};
use dsfeed::sources::static_sets::StaticSource;
use dsfeed::sources::{Publisher, Source, SourceFuture};
use dsfeed_model::{Destination, SetMap};
use tokio::sync::Notify;

/// Backends of set 1, as an inventory service would report them.
struct Inventory {
    backends: u8,
}

impl Source for Inventory {
    fn name(&self) -> &str {
        "inventory"
    }

    fn run(self: Box<Self>, out: Publisher) -> SourceFuture {
        Box::pin(async move {
            for known in 1..=self.backends {
                // Each view is the whole truth for the sets this source owns.
                let set = (1..=known)
                    .map(|i| Destination::new(format!("sip:10.0.0.{i}:5060"), 0, 0, "duid=inv"))
                    .collect::<Result<Vec<_>, _>>()?;
                out.publish(SetMap::from([(1, set)])).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // A one-shot source may end: its last view stays in the merge.
            Ok(())
        })
    }
}

/// Prints every snapshot it is handed; the newest wins, so a slow printer
/// skips the ones it was too slow for, never queues them.
struct Printer {
    until: usize,
    done: Arc<Notify>,
}

impl Sink for Printer {
    fn name(&self) -> &str {
        "printer"
    }

    fn run(self: Box<Self>, mut snapshots: Snapshots) -> SinkFuture {
        Box::pin(async move {
            while let Some(snapshot) = snapshots.next().await {
                print!("{}", snapshot.to_dispatcher_list());
                if snapshot.destination_count() >= self.until {
                    self.done.notify_one();
                }
            }
            // The hub shut down: nothing left to deliver.
            Ok(())
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), dsfeed::Error> {
    let done = Arc::new(Notify::new());
    let printer = Printer {
        until: 4,
        done: Arc::clone(&done),
    };
    Hub::new(&Metrics::new())
        .with_source(Inventory { backends: 3 })
        .with_source(StaticSource::new(&["2=10.0.0.9".parse()?]))
        .with_sink(printer)
        .run(async move { done.notified().await })
        .await
}
