//! Prometheus metrics, all named `dsfeed_*`.
//!
//! Gauges that describe the present (snapshot, sets, clients) are rebuilt
//! from the live state at each scrape, so a client that left or a set that
//! went away leaves no stale series. Counters count events as they happen.

use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::feed::Published;
use crate::feed::clients::ClientStatus;
use dsfeed_model::SetId;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SetLabels {
    set: SetId,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    node: String,
    version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceErrorLabels {
    source: String,
    kind: String,
}

/// Source errors are counted where they happen, deep inside each source's
/// task, so the counter is process-wide rather than threaded through every
/// source.
static SOURCE_ERRORS: LazyLock<Family<SourceErrorLabels, Counter>> = LazyLock::new(Family::default);

/// Counts one error of `source` (a [`crate::Error::label`] as `kind`).
pub fn count_source_error(source: &str, kind: &str) {
    SOURCE_ERRORS
        .get_or_create(&SourceErrorLabels {
            source: source.to_owned(),
            kind: kind.to_owned(),
        })
        .inc();
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// `dispatcher.reload` attempts by outcome, counted by the file sink.
static RELOADS: LazyLock<Family<OutcomeLabels, Counter>> = LazyLock::new(Family::default);

/// Reloads the file sink held back, by reason.
static RELOADS_WITHHELD: LazyLock<Family<ReasonLabels, Counter>> = LazyLock::new(Family::default);

/// Counts one `dispatcher.reload` attempt: `loaded`, `throttled` (inside
/// Kamailio's `reload_delta`) or `failed`.
pub fn count_reload(outcome: &str) {
    RELOADS
        .get_or_create(&OutcomeLabels {
            outcome: outcome.to_owned(),
        })
        .inc();
}

/// Counts a reload held back: `dsfeed_module` (`--mode file` against a
/// Kamailio running dsfeed.so) or `no_answer` (Kamailio's ctl silent).
pub fn count_reload_withheld(reason: &str) {
    RELOADS_WITHHELD
        .get_or_create(&ReasonLabels {
            reason: reason.to_owned(),
        })
        .inc();
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    snapshot: Family<VersionLabels, Gauge>,
    snapshot_age: Gauge<f64, AtomicU64>,
    set_destinations: Family<SetLabels, Gauge>,
    clients_connected: Gauge,
    client_acked: Family<ClientLabels, Gauge>,
    client_retrying: Family<ClientLabels, Gauge>,
    nacks: Family<NodeLabels, Counter>,
    retries: Family<NodeLabels, Counter>,
    /// Serializes scrapes: each one rebuilds the live gauges before encoding.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dsfeed");
        let metrics = Metrics {
            snapshot: Family::default(),
            snapshot_age: Gauge::default(),
            set_destinations: Family::default(),
            clients_connected: Gauge::default(),
            client_acked: Family::default(),
            client_retrying: Family::default(),
            nacks: Family::default(),
            retries: Family::default(),
            scrape: Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "snapshot_info",
            "The version of the current snapshot (value 1)",
            metrics.snapshot.clone(),
        );
        registry.register_with_unit(
            "snapshot_age",
            "Time since the current snapshot was published",
            Unit::Seconds,
            metrics.snapshot_age.clone(),
        );
        registry.register(
            "set_destinations",
            "Destinations per set in the current snapshot",
            metrics.set_destinations.clone(),
        );
        registry.register(
            "clients_connected",
            "Open feed streams",
            metrics.clients_connected.clone(),
        );
        registry.register(
            "client_acked_version_info",
            "The version each connected node last applied (value 1)",
            metrics.client_acked.clone(),
        );
        registry.register(
            "client_retrying_version_info",
            "The version each connected node could not apply yet and keeps retrying (value 1)",
            metrics.client_retrying.clone(),
        );
        registry.register(
            "nacks",
            "Snapshots a node refused to apply",
            metrics.nacks.clone(),
        );
        registry.register(
            "retries",
            "Answers in which a node could not apply a snapshot yet and keeps retrying it (not NACKs)",
            metrics.retries.clone(),
        );
        registry.register(
            "source_errors",
            "Errors of a source, by kind; the last good view stays published",
            SOURCE_ERRORS.clone(),
        );
        registry.register(
            "reloads",
            "dispatcher.reload attempts by outcome: loaded, throttled (inside reload_delta), failed",
            RELOADS.clone(),
        );
        registry.register(
            "reloads_withheld",
            "Reloads held back: dsfeed_module (--mode file while Kamailio runs dsfeed.so), no_answer (Kamailio's ctl silent)",
            RELOADS_WITHHELD.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    pub fn count_nack(&self, node: &str) {
        self.nacks
            .get_or_create(&NodeLabels {
                node: node.to_owned(),
            })
            .inc();
    }

    pub fn count_retry(&self, node: &str) {
        self.retries
            .get_or_create(&NodeLabels {
                node: node.to_owned(),
            })
            .inc();
    }

    /// The text exposition of every metric, with the live gauges taken from
    /// `published` and `clients`.
    pub fn render(&self, published: Option<&Published>, clients: &[ClientStatus]) -> String {
        let _scrape = self.scrape.lock().expect("not poisoned");
        self.snapshot.clear();
        self.set_destinations.clear();
        match published {
            Some(p) => {
                self.snapshot
                    .get_or_create(&VersionLabels {
                        version: p.snapshot.version().to_owned(),
                    })
                    .set(1);
                self.snapshot_age.set(p.age().as_secs_f64());
                for (id, dests) in p.snapshot.sets() {
                    self.set_destinations
                        .get_or_create(&SetLabels { set: *id })
                        .set(i64::try_from(dests.len()).unwrap_or(i64::MAX));
                }
            }
            None => {
                self.snapshot_age.set(0.0);
            }
        }
        self.clients_connected
            .set(i64::try_from(clients.len()).unwrap_or(i64::MAX));
        self.client_acked.clear();
        self.client_retrying.clear();
        for client in clients {
            if let Some(retrying) = &client.retrying {
                self.client_retrying
                    .get_or_create(&ClientLabels {
                        node: client.node.clone(),
                        version: retrying.version.clone(),
                    })
                    .set(1);
            }
            if let Some(version) = &client.acked_version {
                self.client_acked
                    .get_or_create(&ClientLabels {
                        node: client.node.clone(),
                        version: version.clone(),
                    })
                    .set(1);
            }
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use dsfeed_model::{Destination, SetMap, Snapshot};

    #[test]
    fn live_gauges_follow_the_state() {
        let metrics = Metrics::new();
        let snapshot = Snapshot::new(SetMap::from([(
            3,
            vec![Destination::parse_target("10.0.0.1").unwrap()],
        )]));
        let published = Published {
            snapshot: Arc::new(snapshot.clone()),
            at: SystemTime::now(),
        };
        let mut client = ClientStatus::new("kam-1", "", "unix".into(), None, "");
        client.ack(snapshot.version());
        let mut stuck = ClientStatus::new("kam-2", "", "unix".into(), None, "");
        stuck.retry("", "v9", "the dispatcher refused the list");
        metrics.count_nack("kam-1");
        metrics.count_retry("kam-2");
        count_source_error("sets-file", "read");

        let text = metrics.render(Some(&published), &[client, stuck]);
        for line in [
            format!(
                "dsfeed_snapshot_info{{version=\"{}\"}} 1",
                snapshot.version()
            ),
            "dsfeed_set_destinations{set=\"3\"} 1".to_owned(),
            "dsfeed_clients_connected 2".to_owned(),
            "dsfeed_client_retrying_version_info{node=\"kam-2\",version=\"v9\"} 1".to_owned(),
            "dsfeed_retries_total{node=\"kam-2\"} 1".to_owned(),
            format!(
                "dsfeed_client_acked_version_info{{node=\"kam-1\",version=\"{}\"}} 1",
                snapshot.version()
            ),
            "dsfeed_nacks_total{node=\"kam-1\"} 1".to_owned(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(text.contains("dsfeed_source_errors_total{source=\"sets-file\",kind=\"read\"}"));
        assert!(text.contains("dsfeed_snapshot_age_seconds "));

        let text = metrics.render(None, &[]);
        assert!(
            !text.contains("dsfeed_client_acked_version_info{"),
            "{text}"
        );
        assert!(!text.contains("dsfeed_set_destinations{"), "{text}");
        assert!(text.contains("dsfeed_clients_connected 0"));
    }
}
