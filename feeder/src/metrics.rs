//! Prometheus metrics, all named `dsfeed_*`, in one registry that `main.rs`
//! creates and hands to every component. Components report through handles
//! ([`SourceMetrics`], [`SinkMetrics`], [`FileSinkMetrics`]) that carry their own label, so
//! one source or sink is one label value wherever it counts from. This
//! module observes: it imports nothing of the components it counts for.
//!
//! Gauges that describe the present (snapshot, sets, clients) are rebuilt
//! from the live state at each scrape, so a client that left or a set that
//! went away leaves no stale series. Counters count events as they happen.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dsfeed_model::{SetId, Snapshot};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

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
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceErrorLabels {
    source: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkErrorLabels {
    sink: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    rpc: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableReloadLabels {
    rpc: String,
    table: String,
    outcome: String,
}

/// One Kamailio as the per-Kamailio gauges name it: `via="reload"` with its
/// ctl address (file mode), `via="feed"` with its node id (dsfeed.so).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KamailioLabels {
    kamailio: String,
    via: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KamailioVersionLabels {
    kamailio: String,
    via: String,
    version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WithheldLabels {
    rpc: String,
    reason: String,
}

/// One connected feed client as the gauges need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSample {
    pub node: String,
    /// The version it last applied, if any.
    pub acked: Option<String>,
    /// A version it could not apply yet and keeps retrying, if any.
    pub retrying: Option<String>,
    /// The version last sent to it: it is in sync when it acked that one.
    pub sent: Option<String>,
    /// When it last acked, if it has on this stream.
    pub acked_at: Option<SystemTime>,
}

/// What the file sink last got a Kamailio to load.
#[derive(Debug, Clone)]
struct Loaded {
    version: String,
    at: SystemTime,
}

/// The process's metrics. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct Metrics(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    registry: Registry,
    snapshot: Family<VersionLabels, Gauge>,
    snapshot_age: Gauge<f64, AtomicU64>,
    snapshot_timestamp: Gauge<f64, AtomicU64>,
    kamailio_version: Family<KamailioVersionLabels, Gauge>,
    kamailio_in_sync: Family<KamailioLabels, Gauge>,
    kamailio_loaded_at: Family<KamailioLabels, Gauge<f64, AtomicU64>>,
    acks: Family<NodeLabels, Counter>,
    /// The last load the file sink saw per ctl address; removed while the
    /// Kamailio there runs dsfeed.so (the feed reports it then).
    reloaded: Mutex<BTreeMap<String, Loaded>>,
    /// Each source's last error, for `--once` to say why it gave up.
    last_errors: Mutex<BTreeMap<String, String>>,
    set_destinations: Family<SetLabels, Gauge>,
    clients_connected: Gauge,
    client_acked: Family<ClientLabels, Gauge>,
    client_retrying: Family<ClientLabels, Gauge>,
    nacks: Family<NodeLabels, Counter>,
    retries: Family<NodeLabels, Counter>,
    responses_withheld: Family<ReasonLabels, Counter>,
    responses: Family<KindLabels, Counter>,
    response_bytes: Family<KindLabels, Counter>,
    source_errors: Family<SourceErrorLabels, Counter>,
    sink_errors: Family<SinkErrorLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    reloads_withheld: Family<WithheldLabels, Counter>,
    table_reloads: Family<TableReloadLabels, Counter>,
    /// Serializes scrapes: each one rebuilds the live gauges before encoding.
    scrape: Mutex<()>,
}

impl Default for Inner {
    fn default() -> Self {
        let mut inner = Inner {
            registry: Registry::with_prefix("dsfeed"),
            snapshot: Family::default(),
            snapshot_age: Gauge::default(),
            snapshot_timestamp: Gauge::default(),
            kamailio_version: Family::default(),
            kamailio_in_sync: Family::default(),
            kamailio_loaded_at: Family::default(),
            acks: Family::default(),
            reloaded: Mutex::new(BTreeMap::new()),
            last_errors: Mutex::new(BTreeMap::new()),
            set_destinations: Family::default(),
            clients_connected: Gauge::default(),
            client_acked: Family::default(),
            client_retrying: Family::default(),
            nacks: Family::default(),
            retries: Family::default(),
            responses_withheld: Family::default(),
            responses: Family::default(),
            response_bytes: Family::default(),
            source_errors: Family::default(),
            sink_errors: Family::default(),
            reloads: Family::default(),
            reloads_withheld: Family::default(),
            table_reloads: Family::default(),
            scrape: Mutex::new(()),
        };
        let r = &mut inner.registry;
        r.register(
            "snapshot_info",
            "The version of the current snapshot (value 1)",
            inner.snapshot.clone(),
        );
        r.register_with_unit(
            "snapshot_age",
            "Time since the current snapshot was published",
            Unit::Seconds,
            inner.snapshot_age.clone(),
        );
        r.register_with_unit(
            "snapshot_timestamp",
            "Unix time the current snapshot was published: when the sets last changed (it does not grow on a quiet system, so lag can be alerted on)",
            Unit::Seconds,
            inner.snapshot_timestamp.clone(),
        );
        r.register(
            "kamailio_version_info",
            "Per Kamailio, the version it last loaded (via=reload, by ctl address) or acked (via=feed, by node) (value 1)",
            inner.kamailio_version.clone(),
        );
        r.register(
            "kamailio_in_sync",
            "Per Kamailio, 1 when it holds the newest snapshot meant for it, 0 while a change waits, was refused or is being retried",
            inner.kamailio_in_sync.clone(),
        );
        r.register_with_unit(
            "kamailio_loaded_timestamp",
            "Per Kamailio, Unix time it last loaded (via=reload) or acked (via=feed) a snapshot from this feeder",
            Unit::Seconds,
            inner.kamailio_loaded_at.clone(),
        );
        r.register(
            "acks",
            "Snapshots a node applied and acknowledged",
            inner.acks.clone(),
        );
        r.register(
            "set_destinations",
            "Destinations per set in the current snapshot",
            inner.set_destinations.clone(),
        );
        r.register(
            "clients_connected",
            "Open feed streams",
            inner.clients_connected.clone(),
        );
        r.register(
            "client_acked_version_info",
            "The version each connected node last applied (value 1)",
            inner.client_acked.clone(),
        );
        r.register(
            "client_retrying_version_info",
            "The version each connected node could not apply yet and keeps retrying (value 1)",
            inner.client_retrying.clone(),
        );
        r.register(
            "nacks",
            "Snapshots a node refused to apply",
            inner.nacks.clone(),
        );
        r.register(
            "retries",
            "Answers in which a node could not apply a snapshot yet and keeps retrying it (not NACKs)",
            inner.retries.clone(),
        );
        r.register(
            "responses_withheld",
            "Feed responses not sent, by reason: over_budget (more destinations, sets or bytes than a client accepts)",
            inner.responses_withheld.clone(),
        );
        r.register(
            "responses",
            "Feed responses sent, by kind: full (every set of the client's) or delta (the sets changed since a version the client holds)",
            inner.responses.clone(),
        );
        r.register(
            "response_bytes",
            "Encoded bytes of the feed responses sent, by kind (full or delta)",
            inner.response_bytes.clone(),
        );
        r.register(
            "source_errors",
            "Errors of a source, by kind; the last good view stays published",
            inner.source_errors.clone(),
        );
        r.register(
            "sink_errors",
            "Errors of a sink, by kind; the sink retries",
            inner.sink_errors.clone(),
        );
        r.register(
            "reloads",
            "dispatcher.reload attempts per Kamailio by outcome: loaded, throttled (inside reload_delta), failed",
            inner.reloads.clone(),
        );
        r.register(
            "reloads_withheld",
            "Reloads held back per Kamailio: dsfeed_module (--mode file while Kamailio runs dsfeed.so), no_answer (Kamailio's ctl silent)",
            inner.reloads_withheld.clone(),
        );
        r.register(
            "table_reloads",
            "rtpengine.reload and domain.reload attempts per Kamailio and table by outcome: loaded, throttled (rtpengine's own interval), failed",
            inner.table_reloads.clone(),
        );
        inner
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    /// The handle a source named `name` counts through.
    pub fn source(&self, name: &str) -> SourceMetrics {
        SourceMetrics {
            metrics: self.clone(),
            name: name.to_owned(),
        }
    }

    /// The handle a sink named `name` counts its errors through.
    pub fn sink(&self, name: &str) -> SinkMetrics {
        SinkMetrics {
            metrics: self.clone(),
            name: name.to_owned(),
        }
    }

    /// Counts a reload of `table` (`rtpengine`, `domain`) at `rpc` by
    /// `outcome`: `loaded`, `throttled` or `failed`.
    pub fn table_reload(&self, rpc: &str, table: &str, outcome: &str) {
        let labels = TableReloadLabels {
            rpc: rpc.to_owned(),
            table: table.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.0.table_reloads.get_or_create(&labels).inc();
    }

    /// The handle the file sink reloading Kamailio at `rpc` counts through
    /// (`rpc` empty with `--no-reload`).
    pub fn file_sink(&self, rpc: &str) -> FileSinkMetrics {
        FileSinkMetrics {
            metrics: self.clone(),
            rpc: rpc.to_owned(),
        }
    }

    pub fn count_ack(&self, node: &str) {
        let node = node.to_owned();
        self.0.acks.get_or_create(&NodeLabels { node }).inc();
    }

    /// The last error the source named `name` reported, if any.
    pub fn last_source_error(&self, name: &str) -> Option<String> {
        let errors = self.0.last_errors.lock().expect("not poisoned");
        errors.get(name).cloned()
    }

    pub fn count_nack(&self, node: &str) {
        let node = node.to_owned();
        self.0.nacks.get_or_create(&NodeLabels { node }).inc();
    }

    pub fn count_retry(&self, node: &str) {
        let node = node.to_owned();
        self.0.retries.get_or_create(&NodeLabels { node }).inc();
    }

    /// Drops every series of `node`, once its last stream has ended.
    pub fn forget_node(&self, node: &str) {
        let labels = NodeLabels {
            node: node.to_owned(),
        };
        self.0.nacks.remove(&labels);
        self.0.retries.remove(&labels);
        self.0.acks.remove(&labels);
    }

    /// A feed response not sent, for `reason`.
    pub fn count_withheld(&self, reason: &str) {
        let labels = ReasonLabels {
            reason: reason.to_owned(),
        };
        self.0.responses_withheld.get_or_create(&labels).inc();
    }

    /// A feed response of `kind` (`full` or `delta`) and `bytes` sent.
    pub fn count_response(&self, kind: &str, bytes: usize) {
        let labels = KindLabels {
            kind: kind.to_owned(),
        };
        self.0.responses.get_or_create(&labels).inc();
        self.0
            .response_bytes
            .get_or_create(&labels)
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// The text exposition of every metric, with the live gauges taken from
    /// `snapshot` (with its age) and `clients`.
    pub fn render(
        &self,
        snapshot: Option<(&Snapshot, Duration)>,
        clients: &[ClientSample],
    ) -> String {
        let m = &self.0;
        let _scrape = m.scrape.lock().expect("not poisoned");
        m.snapshot.clear();
        m.set_destinations.clear();
        m.kamailio_version.clear();
        m.kamailio_in_sync.clear();
        m.kamailio_loaded_at.clear();
        // A reloaded Kamailio has the sets' version in its dispatcher.list.
        let current = snapshot.map(|(s, _)| s.sets_version());
        for (rpc, loaded) in m.reloaded.lock().expect("not poisoned").iter() {
            let sample = KamailioSample {
                kamailio: rpc,
                via: "reload",
                version: Some(&loaded.version),
                in_sync: current == Some(loaded.version.as_str()),
                at: Some(loaded.at),
            };
            self.render_kamailio(&sample);
        }
        for client in clients {
            let sample = KamailioSample {
                kamailio: &client.node,
                via: "feed",
                version: client.acked.as_deref(),
                // Nothing sent since it connected means the version it
                // reported is current: the feed sends at once otherwise.
                in_sync: client.acked.is_some()
                    && (client.sent.is_none() || client.acked == client.sent)
                    && client.retrying.is_none(),
                at: client.acked_at,
            };
            self.render_kamailio(&sample);
        }
        match snapshot {
            Some((snapshot, age)) => {
                let version = snapshot.version().to_owned();
                m.snapshot.get_or_create(&VersionLabels { version }).set(1);
                m.snapshot_age.set(age.as_secs_f64());
                let published = SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH);
                m.snapshot_timestamp.set(unix_seconds(published));
                for (id, dests) in snapshot.sets() {
                    m.set_destinations
                        .get_or_create(&SetLabels { set: *id })
                        .set(i64::try_from(dests.len()).unwrap_or(i64::MAX));
                }
            }
            None => {
                m.snapshot_age.set(0.0);
                m.snapshot_timestamp.set(0.0);
            }
        }
        m.clients_connected
            .set(i64::try_from(clients.len()).unwrap_or(i64::MAX));
        m.client_acked.clear();
        m.client_retrying.clear();
        for client in clients {
            let labels = |version: &String| ClientLabels {
                node: client.node.clone(),
                version: version.clone(),
            };
            if let Some(version) = &client.retrying {
                m.client_retrying.get_or_create(&labels(version)).set(1);
            }
            if let Some(version) = &client.acked {
                m.client_acked.get_or_create(&labels(version)).set(1);
            }
        }
        let mut out = String::new();
        encode(&mut out, &m.registry).expect("writing to a String cannot fail");
        out
    }

    fn render_kamailio(&self, sample: &KamailioSample<'_>) {
        let m = &self.0;
        let labels = KamailioLabels {
            kamailio: sample.kamailio.to_owned(),
            via: sample.via.to_owned(),
        };
        if let Some(version) = sample.version {
            m.kamailio_version
                .get_or_create(&KamailioVersionLabels {
                    kamailio: labels.kamailio.clone(),
                    via: labels.via.clone(),
                    version: version.to_owned(),
                })
                .set(1);
        }
        m.kamailio_in_sync
            .get_or_create(&labels)
            .set(i64::from(sample.in_sync));
        if let Some(at) = sample.at {
            m.kamailio_loaded_at
                .get_or_create(&labels)
                .set(unix_seconds(at));
        }
    }
}

/// One Kamailio's line in the per-Kamailio gauges.
struct KamailioSample<'a> {
    kamailio: &'a str,
    via: &'a str,
    version: Option<&'a str>,
    in_sync: bool,
    at: Option<SystemTime>,
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// What a source counts: its errors, by kind (`Error::label`).
#[derive(Debug, Clone)]
pub struct SourceMetrics {
    metrics: Metrics,
    name: String,
}

impl SourceMetrics {
    /// The source's name, its label value.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn error(&self, kind: &str) {
        let labels = SourceErrorLabels {
            source: self.name.clone(),
            kind: kind.to_owned(),
        };
        self.metrics.0.source_errors.get_or_create(&labels).inc();
    }

    /// Counts an error like [`SourceMetrics::error`] and keeps its text as
    /// the source's last error, which `--once` names when it gives up.
    pub fn failure(&self, kind: &str, detail: impl Display) {
        self.error(kind);
        let mut errors = self.metrics.0.last_errors.lock().expect("not poisoned");
        errors.insert(self.name.clone(), format!("{kind}: {detail}"));
    }
}

/// What a sink counts: its errors, by kind.
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    metrics: Metrics,
    name: String,
}

impl SinkMetrics {
    /// The sink's name, its label value.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A failure of the sink, by kind: `dsfeed_sink_errors_total{sink, kind}`.
    pub fn error(&self, kind: &str) {
        let labels = SinkErrorLabels {
            sink: self.name.clone(),
            kind: kind.to_owned(),
        };
        self.metrics.0.sink_errors.get_or_create(&labels).inc();
    }
}

/// What the file sink counts, labelled with the Kamailio it reloads.
#[derive(Debug, Clone)]
pub struct FileSinkMetrics {
    metrics: Metrics,
    rpc: String,
}

impl FileSinkMetrics {
    /// A failure of the sink itself (writing the list), by kind.
    pub fn error(&self, kind: &str) {
        self.metrics.sink("file").error(kind);
    }

    /// One `dispatcher.reload` attempt: `loaded`, `throttled` (inside
    /// Kamailio's `reload_delta`) or `failed`.
    pub fn reload(&self, outcome: &str) {
        let labels = ReloadLabels {
            rpc: self.rpc.clone(),
            outcome: outcome.to_owned(),
        };
        self.metrics.0.reloads.get_or_create(&labels).inc();
    }

    /// Kamailio loaded the list of snapshot `version`.
    pub fn loaded(&self, version: &str) {
        let loaded = Loaded {
            version: version.to_owned(),
            at: SystemTime::now(),
        };
        let mut reloaded = self.metrics.0.reloaded.lock().expect("not poisoned");
        reloaded.insert(self.rpc.clone(), loaded);
    }

    /// Kamailio runs dsfeed.so: the feed reports it from now on, by node.
    pub fn stepped_aside(&self) {
        let mut reloaded = self.metrics.0.reloaded.lock().expect("not poisoned");
        reloaded.remove(&self.rpc);
    }

    /// A reload held back: `dsfeed_module` (`--mode file` against a
    /// Kamailio running dsfeed.so) or `no_answer` (Kamailio's ctl silent).
    pub fn withheld(&self, reason: &str) {
        let labels = WithheldLabels {
            rpc: self.rpc.clone(),
            reason: reason.to_owned(),
        };
        self.metrics.0.reloads_withheld.get_or_create(&labels).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsfeed_model::{Destination, SetMap};

    /// Metrics with a sample in every family (a family without one is not
    /// exported), and what to render them with: a snapshot, and two
    /// clients, `kam-1` in sync and `kam-2` retrying. One place to add a
    /// new family's sample, for every test that needs them all.
    fn every_family() -> (Metrics, Snapshot, Vec<ClientSample>) {
        let metrics = Metrics::new();
        let snapshot = Snapshot::new(SetMap::from([(
            3,
            vec![Destination::parse_target("10.0.0.1").unwrap()],
        )]));
        let acked = ClientSample {
            node: "kam-1".into(),
            acked: Some(snapshot.version().to_owned()),
            retrying: None,
            sent: Some(snapshot.version().to_owned()),
            acked_at: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        };
        let stuck = ClientSample {
            node: "kam-2".into(),
            acked: None,
            retrying: Some("v9".into()),
            sent: Some("v9".into()),
            acked_at: None,
        };
        metrics.count_ack("kam-1");
        metrics.count_nack("kam-1");
        metrics.count_retry("kam-2");
        metrics.source("sets-file").error("read");
        let sink = metrics.file_sink(CTL);
        sink.reload("loaded");
        sink.loaded(snapshot.version());
        metrics.file_sink(BEHIND).loaded("old");
        sink.withheld("no_answer");
        sink.error("write");
        metrics.table_reload(CTL, "rtpengine", "throttled");
        (metrics, snapshot, vec![acked, stuck])
    }

    /// The Kamailio [`every_family`] reloads, and one still on an old version.
    const CTL: &str = "unix:/run/kamailio/kamailio_ctl";
    const BEHIND: &str = "udp:10.0.0.9:9998";

    #[test]
    fn live_gauges_follow_the_state() {
        let (metrics, snapshot, clients) = every_family();
        let age = Duration::from_secs(2);
        let text = metrics.render(Some((&snapshot, age)), &clients);
        for line in [
            format!(
                "dsfeed_snapshot_info{{version=\"{}\"}} 1",
                snapshot.version()
            ),
            "dsfeed_snapshot_age_seconds 2.0".to_owned(),
            "dsfeed_set_destinations{set=\"3\"} 1".to_owned(),
            "dsfeed_clients_connected 2".to_owned(),
            "dsfeed_client_retrying_version_info{node=\"kam-2\",version=\"v9\"} 1".to_owned(),
            "dsfeed_retries_total{node=\"kam-2\"} 1".to_owned(),
            format!(
                "dsfeed_client_acked_version_info{{node=\"kam-1\",version=\"{}\"}} 1",
                snapshot.version()
            ),
            "dsfeed_nacks_total{node=\"kam-1\"} 1".to_owned(),
            "dsfeed_acks_total{node=\"kam-1\"} 1".to_owned(),
            format!(
                "dsfeed_kamailio_version_info{{kamailio=\"kam-1\",via=\"feed\",version=\"{}\"}} 1",
                snapshot.version()
            ),
            "dsfeed_kamailio_in_sync{kamailio=\"kam-1\",via=\"feed\"} 1".to_owned(),
            "dsfeed_kamailio_in_sync{kamailio=\"kam-2\",via=\"feed\"} 0".to_owned(),
            "dsfeed_kamailio_loaded_timestamp_seconds{kamailio=\"kam-1\",via=\"feed\"} 1700000000.0"
                .to_owned(),
            "dsfeed_kamailio_in_sync{kamailio=\"unix:/run/kamailio/kamailio_ctl\",via=\"reload\"} 1"
                .to_owned(),
            "dsfeed_kamailio_in_sync{kamailio=\"udp:10.0.0.9:9998\",via=\"reload\"} 0".to_owned(),
            "dsfeed_kamailio_version_info{kamailio=\"udp:10.0.0.9:9998\",via=\"reload\",version=\"old\"} 1"
                .to_owned(),
            "dsfeed_source_errors_total{source=\"sets-file\",kind=\"read\"} 1".to_owned(),
            "dsfeed_sink_errors_total{sink=\"file\",kind=\"write\"} 1".to_owned(),
            "dsfeed_reloads_total{rpc=\"unix:/run/kamailio/kamailio_ctl\",outcome=\"loaded\"} 1"
                .to_owned(),
            "dsfeed_reloads_withheld_total{rpc=\"unix:/run/kamailio/kamailio_ctl\",reason=\"no_answer\"} 1"
                .to_owned(),
            "dsfeed_table_reloads_total{rpc=\"unix:/run/kamailio/kamailio_ctl\",table=\"rtpengine\",outcome=\"throttled\"} 1"
                .to_owned(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }

        let published = text
            .lines()
            .find_map(|l| l.strip_prefix("dsfeed_snapshot_timestamp_seconds "))
            .map(|v| v.parse::<f64>().unwrap())
            .unwrap();
        let expected = unix_seconds(SystemTime::now()) - 2.0;
        assert!(
            (published - expected).abs() < 60.0,
            "{published} vs {expected}"
        );

        // A Kamailio that turned out to run dsfeed.so is reported by the feed.
        metrics.file_sink(BEHIND).stepped_aside();
        let text = metrics.render(Some((&snapshot, age)), &[]);
        assert!(!text.contains("udp:10.0.0.9:9998"), "{text}");

        metrics.forget_node("kam-1");
        metrics.forget_node("kam-2");
        let text = metrics.render(None, &[]);
        assert!(!text.contains("kam-"), "{text}");
        assert!(
            !text.contains("dsfeed_client_acked_version_info{"),
            "{text}"
        );
        assert!(!text.contains("dsfeed_set_destinations{"), "{text}");
        assert!(text.contains("dsfeed_clients_connected 0"));
    }

    #[test]
    fn the_readme_operate_section_documents_every_metric() {
        let (metrics, snapshot, clients) = every_family();
        let text = metrics.render(Some((&snapshot, Duration::from_secs(1))), &clients);
        let names: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let mut words = l.split_whitespace();
                let name = words.next().unwrap_or_default();
                // OpenMetrics names a counter's family without its _total.
                match words.next() {
                    Some("counter") => format!("{name}_total"),
                    _ => name.to_owned(),
                }
            })
            .collect();
        assert!(names.len() >= 17, "{names:?}");
        alerts_use_only(&names);
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md");
        let operate = readme
            .split_once("\n## Operate")
            .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
            .expect("README.md has an Operate section");
        let undocumented: Vec<_> = names
            .iter()
            .filter(|name| !operate.contains(&format!("`{name}")))
            .collect();
        assert!(
            undocumented.is_empty(),
            "not in README's Operate section: {undocumented:?}"
        );
    }

    /// The shipped alerting rules parse, and every `dsfeed_*` name in their
    /// expressions is one the feeder exports (a renamed metric would leave an
    /// alert that can never fire).
    fn alerts_use_only(names: &[String]) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docker/prometheus/dsfeed-alerts.yaml"
        );
        let rules: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap())
                .expect("the rules parse");
        let rules = rules["groups"][0]["rules"]
            .as_array()
            .expect("groups[0].rules");
        assert!(rules.len() >= 6, "{rules:?}");
        for rule in rules {
            let alert = rule["alert"].as_str().expect("every rule is an alert");
            let expr = rule["expr"].as_str().expect("every rule has an expr");
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{alert} has no summary"
            );
            // Label values ("dsfeed_module") are not metric names.
            let unquoted: String = expr.split('"').step_by(2).collect::<Vec<_>>().join(" ");
            let used = unquoted
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("dsfeed_"));
            for name in used {
                assert!(
                    names.iter().any(|n| n == name),
                    "{alert} uses {name}, which is not exported"
                );
            }
        }
    }
}
