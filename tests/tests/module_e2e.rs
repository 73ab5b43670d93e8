//! dsfeed.so with the real feeder: the `dsfeed` binary serving the feed on
//! a unix socket and nothing else (no list file, no reload), a real
//! Kamailio (5.6.3, or 6.0.1 in a Debian 13 root) loading the module, and
//! sipp backends that show where SIP goes. The sources are a sets file, a
//! fake Kubernetes API server and a fake Consul agent, each reached through
//! the feeder's own client code.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dsfeed_tests::fake_consul::{self, FakeConsul, Instance};
use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::module::{
    WAIT, fd_limits, fed_by, feed_pid, lowest_free_fd, set_fd_limit, status_until,
    unconnected_until,
};
use dsfeed_tests::sipp::{self, Backend};
use dsfeed_tests::{Kamailio, KamailioBuilder, eventually, replace_file, sets, until_loaded};
use fake_kube::{FakeKube, endpoint, endpoint_slice};
use serde_json::{Value, json};

/// What a test owns outside Kamailio's directory, so that a second
/// Kamailio can start on the same files: the feed socket, the list file,
/// the feeder's logs and the sets file. The sets file has a directory of
/// its own because the feeder watches that directory: any other write
/// there (a log line) would wake it.
struct Files {
    root: tempfile::TempDir,
    /// What the list file held at the start.
    original: String,
}

impl Files {
    /// A directory holding `list` as the dispatcher's list file.
    fn new(list: &str) -> Files {
        let root = tempfile::Builder::new()
            .prefix("dsfeed-e2e-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(root.path().join("sets")).unwrap();
        std::fs::write(root.path().join("dispatcher.list"), list).unwrap();
        Files {
            root,
            original: list.to_owned(),
        }
    }

    fn dir(&self) -> &Path {
        self.root.path()
    }

    fn socket(&self) -> PathBuf {
        self.dir().join("feed.sock")
    }

    fn list(&self) -> PathBuf {
        self.dir().join("dispatcher.list")
    }

    fn sets_file(&self) -> PathBuf {
        self.dir().join("sets/sets.yaml")
    }

    fn write_sets(&self, yaml: &str) {
        replace_file(&self.sets_file(), yaml);
    }

    /// A Kamailio with dsfeed.so reading this list file and this feed
    /// socket (the builder's own list file is left unused).
    fn kamailio(&self, node: &str) -> KamailioBuilder {
        fed_by("", format!("unix:{}", self.socket().display()))
            .modparam("dispatcher", "list_file", self.list().as_path())
            .modparam("dsfeed", "node_id", node)
    }
}

/// Set 1 of a sets file: one destination per backend, with a priority and
/// attrs so that the comparison with the dispatcher's view covers them.
fn sets_yaml(backends: &[&Backend]) -> String {
    let mut yaml = String::from("sets:\n  1:\n");
    for (i, backend) in backends.iter().enumerate() {
        yaml.push_str(&format!(
            "    - uri: {}\n      priority: {}\n      attrs: \"duid=b{i};weight=50\"\n",
            backend.uri(),
            10 - i
        ));
    }
    yaml
}

/// The real `dsfeed` binary serving the feed only, plus its `/status`.
struct StreamFeeder {
    process: Feeder,
    args: Args,
    http: SocketAddr,
    dir: PathBuf,
    starts: usize,
}

impl StreamFeeder {
    /// Starts `dsfeed SOURCES --mode grpc --listen unix:SOCKET` on `files`:
    /// it never writes dispatcher.list and never asks Kamailio to reload.
    fn start(sources: &[&str], files: &Files) -> StreamFeeder {
        let args = Args::new(sources)
            .args(&["--mode", "grpc"])
            .listen_unix(&files.socket());
        let http = dsfeed_tests::free_addr();
        let dir = files.dir().to_owned();
        let process = spawn(&args, http, &dir.join("dsfeed-1.log"));
        StreamFeeder {
            process,
            args,
            http,
            dir,
            starts: 1,
        }
    }

    /// [`StreamFeeder::start`] with the sets file of `files` as its source.
    fn on_sets_file(files: &Files) -> StreamFeeder {
        let sets_file = files.sets_file();
        StreamFeeder::start(&["--sets-file", sets_file.to_str().unwrap()], files)
    }

    /// SIGKILL: the streams break with no goodbye.
    fn kill(&mut self) {
        self.process.kill();
    }

    /// A new process with the same sources and socket (a new log).
    fn restart(&mut self) {
        self.process.kill();
        self.starts += 1;
        self.http = dsfeed_tests::free_addr();
        let log = self.dir.join(format!("dsfeed-{}.log", self.starts));
        self.process = spawn(&self.args, self.http, &log);
    }

    fn log(&self) -> String {
        self.process.log()
    }

    /// `/status` once the feeder has a snapshot.
    async fn status(&self) -> Value {
        eventually("the feeder's /status with a snapshot", WAIT, || async {
            dsfeed_tests::http::status(self.http)
                .await
                .filter(|s| s["ready"] == json!(true))
        })
        .await
    }

    /// The version of the snapshot the feeder publishes.
    async fn version(&self) -> String {
        self.status().await["snapshot"]["version"]
            .as_str()
            .expect("a version string")
            .to_owned()
    }

    /// Waits until the feeder publishes a version other than `old`.
    async fn version_after(&self, old: &str) -> String {
        eventually("a new snapshot in the feeder", WAIT, || async {
            let version = self.version().await;
            (version != old).then_some(version)
        })
        .await
    }

    /// The feeder's snapshot as `dispatcher.list` shows sets:
    /// `(uri, priority, attrs)` in order, by set.
    async fn snapshot(&self) -> BTreeMap<u32, Vec<(String, i64, String)>> {
        let status = self.status().await;
        status["snapshot"]["sets"]
            .as_object()
            .expect("sets")
            .iter()
            .map(|(id, dests)| (id.parse().unwrap(), dsfeed_tests::sets::shown(dests)))
            .collect()
    }

    /// Waits until the node's stream has ACKed `version`.
    async fn until_acked(&self, node: &str, version: &str) {
        eventually(
            &format!("{node}'s ACK of {version} in /status"),
            WAIT,
            || async {
                let status = dsfeed_tests::http::status(self.http).await?;
                status["clients"]
                    .as_array()?
                    .iter()
                    .any(|c| c["node"] == json!(node) && c["acked_version"] == json!(version))
                    .then_some(())
            },
        )
        .await;
    }
}

/// Runs `dsfeed ARGS --http HTTP`, logging to `log`.
fn spawn(args: &Args, http: SocketAddr, log: &Path) -> Feeder {
    Feeder::start(args.clone().http(http), log)
}

/// Kamailio's sets for the feed-managed set ids, in the dispatcher's order.
async fn in_kamailio(kamailio: &Kamailio) -> BTreeMap<u32, Vec<(String, i64, String)>> {
    dsfeed_tests::module::sets(kamailio)
        .await
        .into_iter()
        .map(|(id, dests)| {
            let dests = dests
                .into_iter()
                .map(|d| (d.uri, i64::from(d.priority), d.attrs))
                .collect();
            (id, dests)
        })
        .collect()
}

/// Waits until the module reports `version` applied, and returns its status.
async fn until_applied(kamailio: &Kamailio, version: &str) -> dsfeed_tests::module::Status {
    status_until(kamailio, &format!("version {version} applied"), |s| {
        s.text("applied_version") == version
    })
    .await
}

/// The backends (`HOST:PORT`) that answered `calls` OPTIONS to `set`.
async fn reached(kamailio: &Kamailio, set: u32, calls: u32) -> Vec<String> {
    let sip = kamailio.sip_addr().to_string();
    let dir = kamailio.dir().to_owned();
    tokio::task::spawn_blocking(move || sipp::call(&sip, set, calls, &dir))
        .await
        .unwrap()
}

/// Asserts that every one of `calls` OPTIONS to `set` reached `backend`.
async fn all_reach(kamailio: &Kamailio, set: u32, calls: u32, backend: &Backend) {
    assert_eq!(
        reached(kamailio, set, calls).await,
        vec![backend.name(); calls as usize],
        "calls to set {set}"
    );
}

/// What would show that Kamailio reloaded its list file: the module notices
/// a list it did not install, and the feeder logs every write and reload.
fn assert_no_reload(kamailio: &Kamailio, feeder: &StreamFeeder, files: &Files) {
    assert_eq!(
        std::fs::read_to_string(files.list()).unwrap(),
        files.original,
        "the list file on disk is untouched"
    );
    let log = kamailio.log();
    assert!(
        !log.contains("replaced by something else"),
        "a foreign swap:\n{log}"
    );
    let feeder_log = feeder.log();
    for line in [
        "wrote dispatcher.list",
        "reloaded dispatcher.list",
        "dispatcher.reload",
    ] {
        assert!(!feeder_log.contains(line), "{line:?} in:\n{feeder_log}");
    }
}

/// The sidecar the next tests start from: the list file holds set 1
/// (`listed`) and set 9 (`other`), the sets file set 1 (`fed`); Kamailio,
/// node `kam-e2e`, has applied the first version of the feeder serving
/// that sets file, which is returned with the rest.
async fn sidecar(
    listed: &Backend,
    fed: &Backend,
    other: &Backend,
) -> (Files, Kamailio, StreamFeeder, String) {
    let files = Files::new(&format!("1 {} 0 0\n9 {} 0 0\n", listed.uri(), other.uri()));
    files.write_sets(&sets_yaml(&[fed]));
    let kamailio = files.kamailio("kam-e2e").start().await.unwrap();
    let feeder = StreamFeeder::on_sets_file(&files);
    let version = feeder.version().await;
    until_applied(&kamailio, &version).await;
    (files, kamailio, feeder, version)
}

/// Asserts that once node `kam-e2e` has ACKed `version`, Kamailio holds
/// exactly the feeder's snapshot, and set 9 (`other`) of its list file.
async fn assert_fed_and_kept(
    kamailio: &Kamailio,
    feeder: &StreamFeeder,
    version: &str,
    other: &Backend,
) {
    feeder.until_acked("kam-e2e", version).await;
    let mut expected = feeder.snapshot().await;
    expected.insert(9, vec![(other.uri(), 0, String::new())]);
    assert_eq!(in_kamailio(kamailio).await, expected);
}

/// How the sidecar tests end: SIP to set 1 reaches `fed` alone and SIP to
/// set 9 `other` alone, nothing was reloaded, and Kamailio still runs.
async fn routes_without_a_reload(
    kamailio: &Kamailio,
    feeder: &StreamFeeder,
    files: &Files,
    fed: &Backend,
    other: &Backend,
) {
    all_reach(kamailio, 1, 4, fed).await;
    all_reach(kamailio, 9, 2, other).await;
    assert_no_reload(kamailio, feeder, files);
    assert!(kamailio.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sets_file_edit_reaches_kamailio_in_memory_without_a_reload() {
    let [listed, old, new, other] = std::array::from_fn(|_| Backend::start());
    // Set 9 is only in the list file; the feed carries set 1.
    let (files, kamailio, feeder, v1) = sidecar(&listed, &old, &other).await;
    let status = until_applied(&kamailio, &v1).await;
    assert_eq!(status.int("connected"), 1, "{status:?}");
    assert_eq!(status.text("state"), "connected");
    assert_eq!(status.int("swaps"), 1);
    assert_eq!(status.sets(), [(1, 1), (9, 1)]);
    assert_fed_and_kept(&kamailio, &feeder, &v1, &other).await;
    all_reach(&kamailio, 1, 4, &old).await;
    all_reach(&kamailio, 9, 2, &other).await;

    // The edit: `new` replaces `old`, in memory, with no reload.
    files.write_sets(&sets_yaml(&[&new]));
    let v2 = feeder.version_after(&v1).await;
    let status = until_applied(&kamailio, &v2).await;
    assert_eq!(status.int("swaps"), 2, "one swap per snapshot: {status:?}");
    assert_eq!(status.int("connects"), 1);
    assert_fed_and_kept(&kamailio, &feeder, &v2, &other).await;
    assert_eq!(feeder.snapshot().await[&1][0].0, new.uri());
    assert!(
        kamailio.log().contains(&format!("applied version {v2:?}")),
        "{}",
        kamailio.log()
    );
    // The module takes deltas, and completed this one without asking for
    // the full snapshot.
    let client = &feeder.status().await["clients"][0];
    assert_eq!(client["deltas"], true, "{client}");
    assert_eq!(client["nacks"], 0, "{client}");
    assert!(
        !kamailio.log().contains("asking for it in full"),
        "{}",
        kamailio.log()
    );
    assert!(feeder.log().contains("sending a delta"), "{}", feeder.log());
    routes_without_a_reload(&kamailio, &feeder, &files, &new, &other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_keeps_routing_without_the_feeder_and_resyncs_when_either_restarts() {
    let [listed, fed, edited, other] = std::array::from_fn(|_| Backend::start());
    let (files, first, mut feeder, v1) = sidecar(&listed, &fed, &other).await;
    let fed_sets = sets(&[(1, &[&fed.uri()]), (9, &[&other.uri()])]);
    assert_eq!(dsfeed_tests::loaded(&first).await, fed_sets);

    // The feeder dies: Kamailio keeps the last sets and keeps routing.
    feeder.kill();
    let down = status_until(&first, "the lost feeder in dsfeed.status", |s| {
        s.int("connected") == 0 && !s.text("last_error").is_empty()
    })
    .await;
    assert_eq!(down.text("applied_version"), v1);
    all_reach(&first, 1, 4, &fed).await;
    assert_eq!(dsfeed_tests::loaded(&first).await, fed_sets);

    // The sets change while it is down, then it comes back: Kamailio
    // re-syncs to what the sets file says now.
    files.write_sets(&sets_yaml(&[&edited]));
    all_reach(&first, 1, 2, &fed).await;
    feeder.restart();
    let v2 = feeder.version().await;
    assert_ne!(v2, v1);
    let up = until_applied(&first, &v2).await;
    assert_eq!(up.int("connected"), 1);
    assert!(up.int("connects") >= 2, "{up:?}");
    assert_eq!(up.int("swaps"), 2);
    let edited_sets = sets(&[(1, &[&edited.uri()]), (9, &[&other.uri()])]);
    until_loaded(&first, &edited_sets, WAIT).await;
    all_reach(&first, 1, 4, &edited).await;
    assert_no_reload(&first, &feeder, &files);

    // Kamailio restarts on the same list file and socket: it starts from
    // the list file's sets and the module brings it back to the feed's.
    first.stop();
    let second = files.kamailio("kam-e2e").start().await.unwrap();
    let again = until_applied(&second, &v2).await;
    assert_eq!(again.int("swaps"), 1);
    until_loaded(&second, &edited_sets, WAIT).await;
    feeder.until_acked("kam-e2e", &v2).await;
    routes_without_a_reload(&second, &feeder, &files, &edited, &other).await;
}

/// `module_load` shows the status of a module with no feeder; this shows
/// SIP meanwhile, and a feeder that turns up later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_routes_on_its_list_file_until_a_late_feeder_turns_up() {
    let (listed, fed) = (Backend::start(), Backend::start());
    let list = format!("1 {} 0 0\n", listed.uri());
    let files = Files::new(&list);
    files.write_sets(&sets_yaml(&[&fed]));
    let kamailio = files.kamailio("kam-late").start().await.unwrap();
    let waiting = unconnected_until(&kamailio, "").await;
    assert!(
        waiting
            .text("last_error")
            .contains(&files.socket().display().to_string()),
        "{waiting:?}"
    );
    all_reach(&kamailio, 1, 4, &listed).await;

    let feeder = StreamFeeder::on_sets_file(&files);
    let version = feeder.version().await;
    until_applied(&kamailio, &version).await;
    until_loaded(&kamailio, &sets(&[(1, &[&fed.uri()])]), WAIT).await;
    all_reach(&kamailio, 1, 4, &fed).await;
    assert_no_reload(&kamailio, &feeder, &files);
}

/// An EndpointSlice of Service `asterisk` in `voice` with one endpoint, the
/// backend, on the named port `sip`.
fn slice(name: &str, backend: &Backend, ready: bool, terminating: bool) -> Value {
    let endpoints = vec![endpoint("127.0.0.1", ready, true, terminating)];
    endpoint_slice("voice", "asterisk", name, "IPv4", backend.port, endpoints)
}

/// Set 1 as `(uri, state letters)`.
async fn set_one_states(kamailio: &Kamailio) -> BTreeSet<(String, String)> {
    dsfeed_tests::module::sets(kamailio)
        .await
        .remove(&1)
        .unwrap_or_default()
        .into_iter()
        .map(|d| (d.uri, d.flags))
        .collect()
}

async fn until_states(kamailio: &Kamailio, want: &[(&Backend, &str)]) {
    let want: BTreeSet<(String, String)> = want
        .iter()
        .map(|(b, flags)| (b.uri(), (*flags).to_owned()))
        .collect();
    eventually(&format!("set 1 to be {want:?}"), WAIT, || async {
        (set_one_states(kamailio).await == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slice_changes_reach_kamailio_through_the_module() {
    let (a, b) = (Backend::start(), Backend::start());
    let kube = FakeKube::start().await;
    kube.apply(slice("asterisk-a", &a, true, false));
    let files = Files::new("");
    let kubeconfig = files.dir().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    let kamailio = files.kamailio("kam-kube").start().await.unwrap();
    let feeder = StreamFeeder::start(
        &[
            "-set",
            "voice:asterisk=1:sip",
            "-kubecfg",
            kubeconfig.to_str().unwrap(),
        ],
        &files,
    );
    until_applied(&kamailio, &feeder.version().await).await;
    until_states(&kamailio, &[(&a, "AX")]).await;
    all_reach(&kamailio, 1, 4, &a).await;

    // A second slice joins; then A's pod terminates and drains (flag 4).
    kube.apply(slice("asterisk-b", &b, true, false));
    until_states(&kamailio, &[(&a, "AX"), (&b, "AX")]).await;
    kube.apply(slice("asterisk-a", &a, false, true));
    until_states(&kamailio, &[(&a, "DX"), (&b, "AX")]).await;
    until_applied(&kamailio, &feeder.version().await).await;
    all_reach(&kamailio, 1, 4, &b).await;
    assert_no_reload(&kamailio, &feeder, &files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_health_changes_reach_kamailio_through_the_module() {
    let (a, b) = (Backend::start(), Backend::start());
    let consul = FakeConsul::start().await;
    consul.register(Instance::new("pbx", "a", "127.0.0.1", a.port));
    let files = Files::new("");
    let kamailio = files.kamailio("kam-consul").start().await.unwrap();
    let addr = consul.addr();
    let feeder = StreamFeeder::start(
        &["--consul-service", "pbx=1", "--consul-addr", &addr],
        &files,
    );
    until_applied(&kamailio, &feeder.version().await).await;
    until_loaded(&kamailio, &sets(&[(1, &[&a.uri()])]), WAIT).await;
    all_reach(&kamailio, 1, 4, &a).await;

    consul.register(Instance::new("pbx", "b", "127.0.0.1", b.port));
    until_loaded(&kamailio, &sets(&[(1, &[&a.uri(), &b.uri()])]), WAIT).await;
    consul.set_status("pbx", "a", fake_consul::Status::Critical);
    until_loaded(&kamailio, &sets(&[(1, &[&b.uri()])]), WAIT).await;
    until_applied(&kamailio, &feeder.version().await).await;
    all_reach(&kamailio, 1, 4, &b).await;
    assert_no_reload(&kamailio, &feeder, &files);
}

/// A snapshot Kamailio cannot take now (here: the module's process has no
/// file descriptor left for the list) is no NACK anywhere: the module
/// retries it, the real feeder's `/status` and `/metrics` show the node as
/// retrying with the module's message, and the ACK that follows is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_kamailio_cannot_take_yet_shows_as_retrying_on_the_feeder() {
    let files = Files::new("");
    files.write_sets("sets:\n  1:\n    - uri: sip:10.0.0.1:5060\n");
    let kamailio = files
        .kamailio("kam-retry")
        .modparam("dsfeed", "min_swap_interval_ms", 500)
        .start()
        .await
        .unwrap();
    let feeder = StreamFeeder::on_sets_file(&files);
    let v1 = feeder.version().await;
    feeder.until_acked("kam-retry", &v1).await;

    let pid = feed_pid(&kamailio).await;
    let (soft, hard) = fd_limits(pid);
    set_fd_limit(pid, &lowest_free_fd(pid).to_string(), &hard);
    files.write_sets("sets:\n  1:\n    - uri: sip:10.0.0.2:5060\n");
    let v2 = feeder.version_after(&v1).await;
    let client = eventually(
        "kam-retry retrying in the feeder's /status",
        WAIT,
        || async {
            let status = dsfeed_tests::http::status(feeder.http).await?;
            let client = status["clients"].as_array()?.first()?.clone();
            (client["retrying"]["version"] == json!(v2)).then_some(client)
        },
    )
    .await;
    let error = client["retrying"]["error"].as_str().unwrap();
    assert!(
        error.contains("cannot apply version") && error.contains("Too many open files"),
        "{client:#}"
    );
    assert_eq!(client["nacks"], json!(0), "{client:#}");
    assert_eq!(client["acked_version"], json!(v1), "{client:#}");
    let (_, metrics) = dsfeed_tests::http::get(feeder.http, "/metrics")
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "dsfeed_client_retrying_version_info{{node=\"kam-retry\",version=\"{v2}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(!metrics.contains("dsfeed_nacks_total{node=\"kam-retry\"}"));
    let module = status_until(&kamailio, "v2 retrying in dsfeed.status", |s| {
        s.text("retrying_version") == v2
    })
    .await;
    assert_eq!(module.text("applied_version"), v1);

    set_fd_limit(pid, &soft, &hard);
    feeder.until_acked("kam-retry", &v2).await;
    let status = feeder.status().await;
    assert_eq!(status["clients"][0]["retrying"], json!(null), "{status:#}");
    assert_eq!(status["clients"][0]["nacks"], json!(0), "{status:#}");
    until_applied(&kamailio, &v2).await;
}
