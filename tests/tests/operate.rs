//! What an operator runs into, tried the way they would: the `dsfeed`
//! binary with the command lines of the shipped manifests, against the fake
//! API server and the fake Consul agent, and a real Kamailio for what the
//! metrics say about it.
//!
//! - `--once` (the init container) gives up within `--once-timeout` when
//!   the API server or Consul refuses it, is out of reach or never
//!   answers, and says which source and why;
//! - CyCoreSystems/dispatchers' Pod command (`/app -set … -legacy-endpoints`)
//!   runs unchanged;
//! - `--check` tells a usable configuration from one that is not;
//! - `/metrics` says per Kamailio which version it loaded and whether it is
//!   in sync.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dsfeed_tests::fake_consul::{FakeConsul, Instance};
use dsfeed_tests::feeder::{self, Args, Feeder};
use dsfeed_tests::{Kamailio, eventually, replace_file, sets, until_loaded};
use fake_kube::{FakeKube, endpoint_slice};
use serde_json::json;

/// The deadline the tests give `--once`.
const ONCE_TIMEOUT: &str = "2s";

/// How much later than its deadline `--once` may end: the process starts,
/// and the runtime winds down.
const SLACK: Duration = Duration::from_secs(8);

const SETTLE: Duration = Duration::from_secs(20);

/// Runs the feeder to completion off the test's runtime, which serves the
/// fakes meanwhile; returns its output and how long it ran.
async fn run(mut command: Command) -> (Output, Duration) {
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let output = command.output().expect("dsfeed runs");
        (output, start.elapsed())
    })
    .await
    .unwrap()
}

fn dsfeed(args: &[&str]) -> Command {
    let mut command = Command::new(feeder::binary());
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("KUBECONFIG")
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("CONSUL_HTTP_TOKEN");
    command
}

/// Asserts that `--once` failed within its deadline, and returns what it
/// said on standard error.
fn gave_up(output: &Output, took: Duration) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        took < Duration::from_secs(2) + SLACK,
        "--once took {took:?} with --once-timeout {ONCE_TIMEOUT}: {stderr}"
    );
    assert!(
        stderr.contains("no first snapshot within 2s (--once-timeout)"),
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "nothing is printed as a list: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

fn kube_slice(ips: &[&str]) -> serde_json::Value {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    endpoint_slice("voice", "asterisk", "asterisk-a", "IPv4", 5060, endpoints)
}

fn once_against_kube(kubeconfig: &Path) -> Command {
    let mut command = dsfeed(&[
        "-set",
        "asterisk=1",
        "--once",
        "--once-timeout",
        ONCE_TIMEOUT,
        "-o",
        "-",
        "-kubecfg",
        kubeconfig.to_str().unwrap(),
    ]);
    command.env("POD_NAMESPACE", "voice");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_gives_up_on_an_api_server_that_refuses_it() {
    let kube = FakeKube::start().await;
    kube.apply(kube_slice(&["10.0.0.1"]));
    kube.forbid("endpointslices", true);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);

    let (output, took) = run(once_against_kube(&kubeconfig)).await;
    let stderr = gave_up(&output, took);
    assert!(
        stderr.contains(
            "kubernetes is still waiting, last error: forbidden: voice/asterisk endpointslices"
        ),
        "{stderr}"
    );

    // The same command succeeds once RBAC is fixed.
    kube.forbid("endpointslices", false);
    let (output, _) = run(once_against_kube(&kubeconfig)).await;
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 sip:10.0.0.1:5060 0 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_gives_up_on_an_api_server_out_of_reach() {
    let kube = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    // Nothing listens there any more: every connection is refused.
    drop(kube);

    let (output, took) = run(once_against_kube(&kubeconfig)).await;
    let stderr = gave_up(&output, took);
    assert!(
        stderr.contains("kubernetes is still waiting, last error: watch: voice/asterisk ")
            && stderr.contains("(Connect)"),
        "{stderr}"
    );
}

fn once_against_consul(addr: &str) -> Command {
    dsfeed(&[
        "--consul-service",
        "asterisk=1",
        "--consul-addr",
        addr,
        "--static",
        "2=10.9.9.9",
        "--once",
        "--once-timeout",
        ONCE_TIMEOUT,
        "-o",
        "-",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_gives_up_on_consul_refusing_out_of_reach_or_silent() {
    let consul = FakeConsul::start().await;
    consul.register(Instance::new("asterisk", "a1", "10.0.0.1", 5060));

    consul.fail(Some(403));
    let (output, took) = run(once_against_consul(&consul.addr())).await;
    let stderr = gave_up(&output, took);
    assert!(
        stderr.contains("consul asterisk is still waiting, last error: ") && stderr.contains("403"),
        "{stderr}"
    );
    assert!(!stderr.contains("static is still waiting"), "{stderr}");

    // An agent that accepts the connection and never answers leaves no
    // error to report; dsfeed says so rather than nothing.
    consul.fail(None);
    consul.hang(true);
    let (output, took) = run(once_against_consul(&consul.addr())).await;
    let stderr = gave_up(&output, took);
    assert!(
        stderr.contains("consul asterisk is still waiting, with no answer and no error yet"),
        "{stderr}"
    );

    consul.hang(false);
    let (output, _) = run(once_against_consul(&consul.addr())).await;
    assert!(output.status.success(), "{output:?}");
    let list = String::from_utf8_lossy(&output.stdout);
    assert!(list.contains("1 sip:10.0.0.1:5060 0 0"), "{list}");

    let port = consul.port();
    drop(consul);
    let (output, took) = run(once_against_consul(&format!("127.0.0.1:{port}"))).await;
    let stderr = gave_up(&output, took);
    assert!(
        stderr.contains("consul asterisk is still waiting, last error: "),
        "{stderr}"
    );
}

/// CyCoreSystems/dispatchers' Pods run `command: [/app, -set, …]`, often
/// with `-legacy-endpoints`; the image links /app to dsfeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatchers_pod_command_runs_unchanged() {
    let kube = FakeKube::start().await;
    kube.apply(kube_slice(&["10.0.0.1", "10.0.0.2"]));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    let app = dir.path().join("app");
    std::os::unix::fs::symlink(feeder::binary(), &app).unwrap();

    let mut command = Command::new(&app);
    command
        .args([
            "-set",
            "asterisk=1",
            "-legacy-endpoints",
            "--once",
            "-o",
            "-",
        ])
        .args(["-kubecfg", kubeconfig.to_str().unwrap()])
        .env("POD_NAMESPACE", "voice")
        .env("RUST_LOG", "warn");
    let (output, _) = run(command).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("-legacy-endpoints is accepted") && stderr.contains("EndpointSlices"),
        "{stderr}"
    );
    let list = String::from_utf8_lossy(&output.stdout);
    assert!(
        list.contains("1 sip:10.0.0.1:5060 0 0\n1 sip:10.0.0.2:5060 0 0"),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_tells_a_usable_configuration_from_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let sets_file = dir.path().join("sets.yaml");
    std::fs::write(&sets_file, "sets:\n  1:\n    - 10.0.0.1\n").unwrap();
    let token = dir.path().join("token");
    dsfeed_tests::write_secret(&token, "s3cret\n");
    let list = dir.path().join("dispatcher.list");
    let socket = dir.path().join("feed.sock");
    let good = [
        "--sets-file",
        sets_file.to_str().unwrap(),
        "-o",
        list.to_str().unwrap(),
        "--listen",
        &format!("unix:{}", socket.display()),
        "--token-file",
        token.to_str().unwrap(),
        "--check",
    ];
    let (output, _) = run(dsfeed(&good)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(
        stdout.contains(&format!("sets file {}", sets_file.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("dispatcher.list at {}", list.display())),
        "{stdout}"
    );
    assert!(!list.exists() && !socket.exists(), "--check writes nothing");

    // The same flags from the environment, as an EnvironmentFile gives them.
    let mut from_env = dsfeed(&["--check"]);
    from_env
        .env("DSFEED_SETS_FILE", &sets_file)
        .env("DSFEED_OUTPUT", &list)
        .env("DSFEED_LISTEN", format!("unix:{}", socket.display()))
        .env("DSFEED_TOKEN_FILE", &token);
    let (output, _) = run(from_env).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    // A broken sets file, an empty token and a missing directory: every
    // problem is named, and the status is a usage error's.
    std::fs::write(&sets_file, "sets:\n  1:\n    - sip:10.0.0.1:99999\n").unwrap();
    std::fs::write(&token, "\n").unwrap();
    let missing = dir.path().join("nowhere/dispatcher.list");
    let mut broken = good.to_vec();
    broken[3] = missing.to_str().unwrap();
    let (output, _) = run(dsfeed(&broken)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for needle in [
        format!("--sets-file {}: ", sets_file.display()),
        "99999".to_owned(),
        format!("--token-file: token file {} is empty", token.display()),
        format!("-o {}: directory", missing.display()),
        "configuration not usable (3 problems)".to_owned(),
    ] {
        assert!(
            stderr.contains(&needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
    // Checking the flags only leaves the files alone.
    broken[8] = "--check=flags";
    let (output, _) = run(dsfeed(&broken)).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    // A bad flag is still a usage error.
    let (output, _) = run(dsfeed(&["--static", "1=10.0.0.1:0", "--check"])).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

/// The value of the sample `line_start` (metric name and labels) in a
/// Prometheus text exposition.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

async fn metrics(http: std::net::SocketAddr) -> String {
    let (code, body) = dsfeed_tests::http::get(http, "/metrics")
        .await
        .expect("/metrics answers");
    assert_eq!(code, 200);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_say_what_each_kamailio_loaded() {
    let kamailio = Kamailio::builder("").reload_delta(1).start().await.unwrap();
    let dir = kamailio.dir();
    let sets_file = dir.join("sets.yaml");
    replace_file(&sets_file, "sets:\n  1:\n    - sip:10.0.0.1:5060\n");
    let http = dsfeed_tests::free_addr();
    let socket = dir.join("feed.sock");
    let listen = format!("unix:{}", socket.display());
    let rpc = kamailio.ctl_unix().to_string();
    let _feeder = Feeder::start(
        Args::default()
            .sets_file(&sets_file)
            .reloading(&kamailio)
            .listen_unix(&socket)
            .http(http),
        &dir.join("dsfeed.log"),
    );
    until_loaded(&kamailio, &sets(&[(1, &["sip:10.0.0.1:5060"])]), SETTLE).await;
    // A feed client as dsfeed.so would be one, acking what it gets.
    let _watch = Feeder::start(
        ["watch", &listen, "--node", "kam-feed"],
        &dir.join("watch.log"),
    );

    let version = eventually("the snapshot's version on /status", SETTLE, || async {
        let status = dsfeed_tests::http::status(http).await?;
        Some(status["snapshot"]["version"].as_str()?.to_owned())
    })
    .await;
    let reload = format!("{{kamailio=\"{rpc}\",via=\"reload\"}}");
    let feed = "{kamailio=\"kam-feed\",via=\"feed\"}";
    let text = eventually("both Kamailios in sync", SETTLE, || async {
        let text = metrics(http).await;
        let synced = sample(&text, &format!("dsfeed_kamailio_in_sync{reload}")) == Some(1.0)
            && sample(&text, &format!("dsfeed_kamailio_in_sync{feed}")) == Some(1.0);
        synced.then_some(text)
    })
    .await;
    for line in [
        format!(
            "dsfeed_kamailio_version_info{{kamailio=\"{rpc}\",via=\"reload\",version=\"{version}\"}}"
        ),
        format!(
            "dsfeed_kamailio_version_info{{kamailio=\"kam-feed\",via=\"feed\",version=\"{version}\"}}"
        ),
        "dsfeed_acks_total{node=\"kam-feed\"}".to_owned(),
        format!("dsfeed_reloads_total{{rpc=\"{rpc}\",outcome=\"loaded\"}}"),
    ] {
        assert_eq!(sample(&text, &line), Some(1.0), "{line} in\n{text}");
    }
    let changed = sample(&text, "dsfeed_snapshot_timestamp_seconds").unwrap();
    let reloaded = sample(
        &text,
        &format!("dsfeed_kamailio_loaded_timestamp_seconds{reload}"),
    )
    .unwrap();
    assert!(
        reloaded >= changed && changed > 1.7e9,
        "{changed} {reloaded}"
    );

    // Kamailio goes away, then the sets change: the feed client follows,
    // the silent Kamailio is reported out of sync, which is what an alert
    // on dsfeed_kamailio_in_sync catches.
    kamailio.stop();
    replace_file(&sets_file, "sets:\n  1:\n    - sip:10.0.0.2:5060\n");
    let text = eventually("the stopped Kamailio out of sync", SETTLE, || async {
        let text = metrics(http).await;
        let behind = sample(&text, &format!("dsfeed_kamailio_in_sync{reload}")) == Some(0.0)
            && sample(&text, &format!("dsfeed_kamailio_in_sync{feed}")) == Some(1.0)
            && sample(&text, "dsfeed_acks_total{node=\"kam-feed\"}") == Some(2.0);
        behind.then_some(text)
    })
    .await;
    assert!(
        sample(&text, "dsfeed_snapshot_timestamp_seconds").unwrap() > changed,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "dsfeed_kamailio_version_info{{kamailio=\"{rpc}\",via=\"reload\",version=\"{version}\"}}"
            )
        ),
        Some(1.0),
        "it still holds the old version:\n{text}"
    );
}
