//! The Consul source against a fake Consul agent (`dsfeed_tests::fake_consul`)
//! with real blocking-query semantics, through the same flags, client and
//! hub that the `dsfeed` binary runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dsfeed::config::Config;
use dsfeed::metrics::Metrics;
use dsfeed::sources::consul;
use dsfeed_model::Snapshot;
use dsfeed_tests::eventually;
use dsfeed_tests::fake_consul::{FakeConsul, IndexHeader, Instance, Status};
use dsfeed_tests::feeder::Args;
use dsfeed_tests::pki::Pki;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Generous: the machine running the tests may be busy.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The feeder's hub fed by the Consul sources the flags describe.
struct Feed {
    rx: watch::Receiver<Option<Arc<Snapshot>>>,
    metrics: Metrics,
    /// Every snapshot the hub published, in order.
    history: Arc<Mutex<Vec<Arc<Snapshot>>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn config(args: &Args) -> Config {
    let args: &[String] = args.as_ref();
    Config::try_load(std::iter::once("dsfeed").chain(args.iter().map(String::as_str)))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// An instance of `asterisk` on port 5060.
fn asterisk(id: &str, address: &str) -> Instance {
    Instance::new("asterisk", id, address, 5060)
}

fn feed(args: &Args) -> Feed {
    let sources = consul::sources(&config(args).consul).expect("usable Consul settings");
    let (tx, rx) = watch::channel(None);
    let metrics = Metrics::new();
    let hub = tokio::spawn({
        let metrics = metrics.clone();
        async move {
            let hub = dsfeed::hub::run(sources, tx, &metrics);
            hub.await.expect("the hub runs");
        }
    });
    let history = Arc::new(Mutex::new(Vec::new()));
    let mut watcher = rx.clone();
    let seen = history.clone();
    let recorder = tokio::spawn(async move {
        while watcher.changed().await.is_ok() {
            if let Some(snapshot) = watcher.borrow_and_update().clone() {
                seen.lock().unwrap().push(snapshot);
            }
        }
    });
    Feed {
        rx,
        metrics,
        history,
        tasks: vec![hub, recorder],
    }
}

impl Feed {
    /// Waits until the published snapshot satisfies `pred`.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
        let mut rx = self.rx.clone();
        let found = tokio::time::timeout(TIMEOUT, async {
            loop {
                if let Some(snapshot) = rx.borrow_and_update().clone()
                    && pred(&snapshot)
                {
                    return snapshot;
                }
                rx.changed().await.expect("the hub is running");
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "no snapshot with {what} within {TIMEOUT:?}; last: {:?}",
                self.current().map(|s| s.to_dispatcher_list())
            )
        })
    }

    /// Waits until set `id` holds exactly `want`.
    async fn wait_for_set(&self, id: u32, want: &[&str]) -> Arc<Snapshot> {
        self.wait_for(&format!("set {id} = {want:?}"), |s| uris(s, id) == want)
            .await
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        self.rx.borrow().clone()
    }

    fn current_set(&self, id: u32) -> Vec<String> {
        uris(&self.current().expect("a snapshot"), id)
    }

    /// Whether set `id` was ever published empty.
    fn ever_empty(&self, id: u32) -> bool {
        self.history
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.sets().get(&id).is_some_and(Vec::is_empty))
    }
}

/// The URIs of set `id`, sorted.
fn uris(snapshot: &Snapshot, id: u32) -> Vec<String> {
    let mut uris: Vec<String> = snapshot
        .sets()
        .get(&id)
        .map(|d| d.iter().map(|d| d.uri().to_owned()).collect())
        .unwrap_or_default();
    uris.sort();
    uris
}

/// A feeder following `asterisk=1` (with `more` flags) on `consul`, where
/// a1 is registered, once it has published a1 and its query is held.
async fn following_a1(consul: &FakeConsul, more: &[&str]) -> Feed {
    consul.register(asterisk("a1", "10.0.0.1"));
    let feed = feed(&consul.feeder_args(&["asterisk=1"]).args(more));
    feed.wait_for_set(1, &["sip:10.0.0.1:5060"]).await;
    next_blocking(consul, 0).await;
    feed
}

/// Waits for the next query that blocks (carries an index) after the first
/// `after` requests; returns its position.
async fn next_blocking(consul: &FakeConsul, after: usize) -> usize {
    consul
        .wait_for_request(after, TIMEOUT, |r| r.index().is_some_and(|i| i > 0))
        .await
}

#[tokio::test]
async fn health_changes_move_instances_within_one_blocking_round_trip() {
    let consul = FakeConsul::start().await;
    consul.register(asterisk("a1", "10.0.0.1"));
    consul.register(asterisk("a2", "10.0.0.2").status(Status::Critical));
    let feed = feed(
        &consul
            .feeder_args(&["asterisk=1"])
            .args(&["--consul-empty-grace", "0"]),
    );
    feed.wait_for_set(1, &["sip:10.0.0.1:5060"]).await;
    let first = &consul.requests()[0];
    assert_eq!(first.path, "/v1/health/service/asterisk");
    assert_eq!(first.param("passing"), Some("true"));

    for (change, want) in [
        (
            ("a2", Status::Passing),
            &["sip:10.0.0.1:5060", "sip:10.0.0.2:5060"][..],
        ),
        (("a1", Status::Critical), &["sip:10.0.0.2:5060"]),
        (("a2", Status::Warning), &[]),
        (("a1", Status::Passing), &["sip:10.0.0.1:5060"]),
    ] {
        // The default 5m wait cannot run out here: only the held query can
        // bring the change.
        let held = next_blocking(&consul, consul.requests().len() - 1).await;
        let sent = consul.requests().len();
        consul.set_status("asterisk", change.0, change.1);
        feed.wait_for_set(1, want).await;
        let requests = consul.requests();
        assert!(
            requests.len() <= sent + 1,
            "{change:?} took more than the held query: {requests:#?}"
        );
        assert!(requests[held].index().unwrap() > 0);
    }
}

#[tokio::test]
async fn warning_instances_are_opt_in_and_critical_ones_always_out() {
    let consul = FakeConsul::start().await;
    consul.register(asterisk("a1", "10.0.0.1"));
    consul.register(asterisk("a2", "10.0.0.2").status(Status::Warning));
    let feed = feed(&consul.feeder_args(&["asterisk=1", "asterisk=2,health=warning"]));
    let snapshot = feed.wait_for("both sets", |s| s.sets().len() == 2).await;
    assert_eq!(uris(&snapshot, 1), ["sip:10.0.0.1:5060"]);
    assert_eq!(
        uris(&snapshot, 2),
        ["sip:10.0.0.1:5060", "sip:10.0.0.2:5060"]
    );
    assert!(
        consul
            .requests()
            .iter()
            .any(|r| r.param("passing").is_none()),
        "health=warning must not ask Consul for passing only"
    );

    consul.set_status("asterisk", "a2", Status::Critical);
    feed.wait_for_set(2, &["sip:10.0.0.1:5060"]).await;
    assert_eq!(feed.current_set(1), ["sip:10.0.0.1:5060"]);
}

#[tokio::test]
async fn tags_datacenters_and_the_node_address_fallback() {
    let consul = FakeConsul::start().await;
    consul.register(asterisk("a1", "").node("pbx1", "10.0.1.1").tag("primary"));
    consul.register(asterisk("a2", "10.0.0.2").tag("backup"));
    consul.register(
        asterisk("a3", "10.0.2.3")
            .tag("Primary")
            .tag("udp")
            .datacenter("dc2"),
    );
    let feed = feed(&consul.feeder_args(&[
        "asterisk=1,tag=primary",
        "asterisk=2:5080,dc=dc2,tag=primary,tag=udp",
    ]));
    let snapshot = feed.wait_for("both sets", |s| s.sets().len() == 2).await;
    assert_eq!(uris(&snapshot, 1), ["sip:10.0.1.1:5060"]);
    assert_eq!(uris(&snapshot, 2), ["sip:10.0.2.3:5080"]);
    let requests = consul.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.param("dc") == Some("dc2") && r.params("tag") == ["primary", "udp"])
    );

    // The instance moves to its own address: the fallback ends.
    consul.register(
        Instance::new("asterisk", "a1", "10.0.0.1", 5062)
            .node("pbx1", "10.0.1.1")
            .tag("primary"),
    );
    feed.wait_for_set(1, &["sip:10.0.0.1:5062"]).await;
}

#[tokio::test]
async fn weights_and_meta_become_attrs_and_hostile_values_are_rejected() {
    let consul = FakeConsul::start().await;
    consul.register(
        asterisk("a1", "10.0.0.1")
            .weights(10, 1)
            .meta("instance", "pbx-1"),
    );
    consul.register(asterisk("a2", "10.0.0.2").meta("instance", "x\n1 sip:evil.example:5060 0 0"));
    consul.register(
        asterisk("a3", "10.0.0.3")
            .weights(3, 1)
            .meta("instance", "x;weight=100 #"),
    );
    consul.register(asterisk("a4", "10.0.0.4").weights(500, 1));
    let feed = feed(&consul.feeder_args(&["asterisk=1"]).args(&[
        "--consul-attr",
        "weight=Weights.Passing",
        "--consul-attr",
        "duid=Meta.instance",
    ]));
    let snapshot = feed
        .wait_for("four instances", |s| uris(s, 1).len() == 4)
        .await;
    let list = snapshot.to_dispatcher_list();
    let body: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(
        body,
        [
            "1 sip:10.0.0.1:5060 0 0 weight=10;duid=pbx-1",
            "1 sip:10.0.0.2:5060 0 0 weight=1",
            "1 sip:10.0.0.3:5060 0 0 weight=3",
            "1 sip:10.0.0.4:5060 0 0",
        ],
        "{list}"
    );
    assert!(!list.contains("evil"), "{list}");

    consul.register(
        asterisk("a1", "10.0.0.1")
            .weights(20, 1)
            .meta("instance", "pbx-1"),
    );
    feed.wait_for("the new weight", |s| {
        s.to_dispatcher_list()
            .contains("1 sip:10.0.0.1:5060 0 0 weight=20;duid=pbx-1\n")
    })
    .await;
}

#[tokio::test]
async fn an_agent_restarting_empty_keeps_the_set() {
    let consul = FakeConsul::start().await;
    let register = || {
        consul.register(asterisk("a1", "10.0.0.1"));
        consul.register(asterisk("a2", "10.0.0.2"));
    };
    register();
    let feed = feed(&consul.feeder_args(&["asterisk=1"]).args(&[
        "--consul-wait",
        "2s",
        "--consul-empty-grace",
        "10m",
    ]));
    let both = ["sip:10.0.0.1:5060", "sip:10.0.0.2:5060"];
    feed.wait_for_set(1, &both).await;
    let held = next_blocking(&consul, 0).await;
    let old_index = consul.requests()[held].index().unwrap();
    assert!(old_index > 1);

    // The index goes backwards (old_index to 1): a full read without an
    // index, then a query blocking on the new index. Both answers are empty.
    let reread = consul.restart_and_await_reread(TIMEOUT).await;
    assert_eq!(feed.current_set(1), both);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(feed.current_set(1), both);

    register();
    consul
        .wait_for_request(reread, TIMEOUT, |r| r.index().is_some_and(|i| i > 1))
        .await;
    assert_eq!(feed.current_set(1), both);
    assert!(
        !feed.ever_empty(1),
        "the set was blanked during the restart"
    );
}

#[tokio::test]
async fn a_real_deregistration_empties_the_set_after_the_grace() {
    let consul = FakeConsul::start().await;
    let grace = Duration::from_secs(2);
    let feed = following_a1(&consul, &["--consul-empty-grace", "2s"]).await;

    let deregistered = Instant::now();
    consul.deregister("asterisk", "a1");
    let snapshot = feed.wait_for_set(1, &[]).await;
    assert!(
        deregistered.elapsed() >= grace,
        "emptied after {:?}, before the grace",
        deregistered.elapsed()
    );
    assert!(
        snapshot.sets().contains_key(&1),
        "an empty set is still a set"
    );

    consul.register(asterisk("a2", "10.0.0.2"));
    feed.wait_for_set(1, &["sip:10.0.0.2:5060"]).await;
}

#[tokio::test]
async fn a_first_empty_answer_is_held_without_holding_back_other_sets() {
    // The feeder restarts while the agent does: asterisk's first answer is
    // empty, peers' is not.
    let consul = FakeConsul::start().await;
    consul.register(Instance::new("peers", "p1", "10.0.0.9", 5060));
    let grace = Duration::from_secs(2);
    let started = Instant::now();
    let feed = feed(
        &consul
            .feeder_args(&["asterisk=1", "peers=2"])
            .args(&["--consul-empty-grace", "2s"]),
    );
    let first = feed.wait_for_set(2, &["sip:10.0.0.9:5060"]).await;
    assert!(started.elapsed() < grace, "set 2 waited for set 1's grace");
    assert_eq!(first.held().iter().copied().collect::<Vec<_>>(), [1]);
    assert!(!first.sets().contains_key(&1));

    // Still empty after the grace: a real, empty service.
    let emptied = feed
        .wait_for("set 1 published empty", |s| {
            s.sets().get(&1).is_some_and(Vec::is_empty)
        })
        .await;
    assert!(started.elapsed() >= grace, "emptied before the grace");
    assert!(emptied.held().is_empty());
    consul.register(asterisk("a1", "10.0.0.1"));
    feed.wait_for_set(1, &["sip:10.0.0.1:5060"]).await;
}

#[tokio::test]
async fn acl_filtered_answers_are_errors_never_the_truth() {
    let consul = FakeConsul::start().await;
    consul.require_token("s3cr3t");
    consul.register(asterisk("a1", "10.0.0.1"));
    consul.register(Instance::new("peers", "p1", "10.0.0.9", 5060));
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "s3cr3t").unwrap();
    let feed = feed(&consul.feeder_args(&["asterisk=1", "peers=2"]).args(&[
        "--consul-empty-grace",
        "1s",
        "--consul-wait",
        "1s",
        "--consul-token-file",
        token.path().to_str().unwrap(),
    ]));
    feed.wait_for_set(1, &["sip:10.0.0.1:5060"]).await;
    feed.wait_for_set(2, &["sip:10.0.0.9:5060"]).await;
    next_blocking(&consul, 0).await;

    // The token is gone: the agent answers anonymously, 200 with no
    // instance and X-Consul-Results-Filtered-By-ACLs, well past the grace.
    std::fs::write(token.path(), "").unwrap();
    let filtered = Instant::now();
    let mut seen = consul.requests().len();
    while filtered.elapsed() < Duration::from_secs(3) {
        seen = consul
            .wait_for_request(seen, TIMEOUT, |r| r.token.is_none())
            .await
            + 1;
    }
    assert_eq!(feed.current_set(1), ["sip:10.0.0.1:5060"]);
    assert!(!feed.ever_empty(1), "an ACL-filtered answer emptied set 1");
    let metrics = feed.metrics.render(None, &[]);
    assert!(
        metrics.contains("kind=\"consul_acl_filtered\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn errors_never_change_the_set() {
    let consul = FakeConsul::start().await;
    let feed = following_a1(&consul, &[]).await;

    consul.fail(Some(500));
    let failing = consul.requests().len();
    consul.deregister("asterisk", "a1");
    consul.register(asterisk("a2", "10.0.0.2"));
    // The held query failed, and so did the retries after it.
    let retry = consul.wait_for_request(failing, TIMEOUT, |_| true).await;
    consul.wait_for_request(retry + 1, TIMEOUT, |_| true).await;
    assert_eq!(feed.current_set(1), ["sip:10.0.0.1:5060"]);

    consul.fail(None);
    feed.wait_for_set(1, &["sip:10.0.0.2:5060"]).await;
    assert!(!feed.ever_empty(1));
}

#[tokio::test]
async fn a_hanging_agent_is_given_up_on_and_never_changes_the_set() {
    let consul = FakeConsul::start().await;
    let feed = following_a1(&consul, &["--consul-wait", "1s"]).await;

    consul.hang(true);
    let hung_from = consul.requests().len();
    consul.register(asterisk("a2", "10.0.0.2"));
    // A query sent while the agent hangs is never answered; the next one
    // shows the client gave up on it (wait + wait/16 + slack) and retried.
    let hung = consul
        .wait_for_request(hung_from, Duration::from_secs(60), |_| true)
        .await;
    consul
        .wait_for_request(hung + 1, Duration::from_secs(60), |_| true)
        .await;
    assert_eq!(feed.current_set(1), ["sip:10.0.0.1:5060"]);

    consul.hang(false);
    feed.wait_for_set(1, &["sip:10.0.0.1:5060", "sip:10.0.0.2:5060"])
        .await;
}

#[tokio::test]
async fn a_missing_or_zero_index_still_follows_changes() {
    for header in [IndexHeader::Missing, IndexHeader::Zero] {
        let consul = FakeConsul::start().await;
        consul.index_header(header);
        consul.register(asterisk("a1", "10.0.0.1"));
        let feed = feed(&consul.feeder_args(&["asterisk=1"]));
        feed.wait_for_set(1, &["sip:10.0.0.1:5060"]).await;
        consul.register(asterisk("a2", "10.0.0.2"));
        feed.wait_for_set(1, &["sip:10.0.0.1:5060", "sip:10.0.0.2:5060"])
            .await;
        let indexes: Vec<_> = consul.requests().iter().map(|r| r.index()).collect();
        assert_eq!(indexes[0], None, "{header:?}");
        assert!(
            indexes[1..].iter().all(|i| *i == Some(1)),
            "{header:?}: {indexes:?}"
        );
    }
}

#[tokio::test]
async fn the_token_file_is_sent_and_read_again() {
    let consul = FakeConsul::start().await;
    consul.require_token("s3cr3t");
    consul.register(asterisk("a1", "10.0.0.1"));
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    dsfeed_tests::write_secret(&token, "s3cr3t\n");
    let feed = feed(
        &consul
            .feeder_args(&["asterisk=1"])
            .args(&["--consul-token-file", token.to_str().unwrap()]),
    );
    feed.wait_for_set(1, &["sip:10.0.0.1:5060"]).await;
    assert!(
        consul
            .requests()
            .iter()
            .all(|r| r.token.as_deref() == Some("s3cr3t"))
    );

    // A token rotated to a wrong one: 403s, and the set stays. The query
    // already held still has the good token and brings one more change.
    next_blocking(&consul, 0).await;
    std::fs::write(&token, "nope").unwrap();
    consul.register(asterisk("a2", "10.0.0.2"));
    let both = ["sip:10.0.0.1:5060", "sip:10.0.0.2:5060"];
    feed.wait_for_set(1, &both).await;
    let refused = consul
        .wait_for_request(0, TIMEOUT, |r| r.token.as_deref() == Some("nope"))
        .await;
    consul.deregister("asterisk", "a1");
    consul
        .wait_for_request(refused + 1, TIMEOUT, |r| r.token.as_deref() == Some("nope"))
        .await;
    assert_eq!(feed.current_set(1), both);

    std::fs::write(&token, "s3cr3t").unwrap();
    feed.wait_for_set(1, &["sip:10.0.0.2:5060"]).await;
}

#[tokio::test]
async fn mutual_tls_with_consuls_ca() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let consul = FakeConsul::start_tls(&pki, true).await;
    consul.register(asterisk("a1", "10.0.0.1"));
    let base = consul.feeder_args(&["asterisk=1"]);
    let ca = ["--consul-cacert", pki.ca.to_str().unwrap()];
    let cert = [
        "--consul-client-cert",
        pki.client_cert.to_str().unwrap(),
        "--consul-client-key",
        pki.client_key.to_str().unwrap(),
    ];
    let feed = feed(&base.clone().args(&ca).args(&cert));
    feed.wait_for_set(1, &["sip:10.0.0.1:5060"]).await;

    // Without a client certificate the handshake fails.
    let spec = "asterisk=1".parse().unwrap();
    let args = config(&base.clone().args(&ca)).consul;
    let client = consul::ConsulClient::new(&args).unwrap();
    let err = client
        .health_service(&spec, 0, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err.label(), "consul_request", "{err}");
    // Without Consul's CA the server is not trusted.
    let args = config(&base.args(&cert)).consul;
    match consul::ConsulClient::new(&args) {
        Err(consul::ConsulError::NoRoots) => {}
        Err(err) => panic!("{err}"),
        Ok(client) => {
            let err = client
                .health_service(&spec, 0, Duration::from_secs(1))
                .await
                .unwrap_err();
            assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
        }
    }
}

#[tokio::test]
async fn the_tls_server_name_can_differ_from_the_address() {
    let pki = Pki::new(&["server.dc1.consul"]);
    let consul = FakeConsul::start_tls(&pki, false).await;
    consul.register(asterisk("a1", "10.0.0.1"));
    let spec = "asterisk=1".parse().unwrap();
    // No scheme: --consul-https asks for TLS, as CONSUL_HTTP_SSL=true does.
    let addr = format!("127.0.0.1:{}", consul.port());
    let args = Args::new(&["--consul-service", "asterisk=1", "--consul-addr", &addr]).args(&[
        "--consul-https",
        "--consul-cacert",
        pki.ca.to_str().unwrap(),
    ]);

    let plain = consul::ConsulClient::new(&config(&args).consul).unwrap();
    let err = plain
        .health_service(&spec, 0, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(format!("{:?}", err).contains("NotValidForName"), "{err:?}");

    let args = args.args(&["--consul-tls-server-name", "server.dc1.consul"]);
    let named = consul::ConsulClient::new(&config(&args).consul).unwrap();
    let reply = named
        .health_service(&spec, 0, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(reply.entries.len(), 1);
}

#[test]
fn unusable_files_stop_the_feeder_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    for (flag, path, needle) in [
        ("--consul-token-file", &missing, "cannot read token file"),
        ("--consul-cacert", &missing, "cannot read CA file"),
        ("--consul-cacert", &garbage, "holds no certificate"),
    ] {
        let args = Args::new(&["--consul-service", "asterisk=1"])
            .args(&["--consul-addr", "https://127.0.0.1:8501"])
            .args(&[flag, path.to_str().unwrap()]);
        let args = config(&args).consul;
        let err = consul::sources(&args).err().expect("an error");
        assert!(err.to_string().contains(needle), "{flag}: {err}");
    }
}

#[tokio::test]
async fn registration_keeps_its_ttl_check_and_survives_an_agent_restart() {
    let consul = FakeConsul::start().await;
    let args = config(
        &consul
            .feeder_args(&["kamailio=9"])
            .args(&["--consul-register", "kamailio:5070,id=k1,tag=edge,ttl=3s"]),
    )
    .consul;
    let registration = consul::Registration::new(&args, None)
        .unwrap()
        .expect("--consul-register was given");
    assert_eq!(registration.id(), "k1");
    let task = tokio::spawn(registration.clone().run());
    let passing = || async {
        consul
            .instance("kamailio", "k1")
            .filter(|i| i.status == Status::Passing)
    };
    let instance = eventually("k1 registered and passing", TIMEOUT, passing).await;
    assert_eq!(
        (instance.port, instance.tags.as_slice()),
        (5070, &["edge".to_owned()][..])
    );
    assert!(
        instance.output.contains("dsfeed is running"),
        "{}",
        instance.output
    );
    // Other Consul users see it, the feeder's own source included.
    let feed = feed(&consul.feeder_args(&["kamailio=9"]));
    feed.wait_for_set(9, &["sip:127.0.0.1:5070"]).await;

    // The agent forgets it: the next check update fails and dsfeed
    // registers again.
    consul.restart();
    eventually("k1 registered again", TIMEOUT, passing).await;

    task.abort();
    registration.deregister().await;
    assert!(consul.instance("kamailio", "k1").is_none());
    let deregistered = consul.requests().last().unwrap().clone();
    assert_eq!(deregistered.method, "PUT");
    assert_eq!(deregistered.path, "/v1/agent/service/deregister/k1");
}

#[tokio::test]
async fn the_registration_check_fails_while_kamailio_does_not_answer() {
    let consul = FakeConsul::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ctl = format!("unix:{}", dir.path().join("kamailio_ctl").display());
    let args = config(
        &consul
            .feeder_args(&["pbx=1"])
            .args(&["--consul-register", "kamailio,id=k1,ttl=3s"]),
    )
    .consul;
    let registration = consul::Registration::new(&args, Some(ctl.parse().unwrap()))
        .unwrap()
        .unwrap();
    let _task = AbortOnDrop(tokio::spawn(registration.run()));
    let instance = eventually("a failing check update", TIMEOUT, || async {
        consul
            .instance("kamailio", "k1")
            .filter(|i| !i.output.is_empty())
    })
    .await;
    assert_eq!(instance.status, Status::Critical);
    assert!(
        instance.output.contains("cannot reach Kamailio's ctl"),
        "{}",
        instance.output
    );
}

/// Aborts a task when a test ends, even by a panic.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
