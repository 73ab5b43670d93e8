//! rtpengine relays and SIP domains end to end: the `dsfeed` binary writes
//! the rtpengine and domain modules' `db_text` tables and reloads them in a
//! real Kamailio (5.6.3, or 6.0.1 in a Debian 13 root), driven by a sets
//! file, a (fake) Kubernetes and a (fake) Consul. What Kamailio loaded is
//! read with its own RPCs, `rtpengine.show all` and `domain.dump`; no
//! rtpengine daemon is needed for that.
//!
//! Each Kamailio starts on tables `dsfeed --once` wrote, as an init
//! container would, then a daemon keeps them current. rtpengine refuses
//! reloads within 10 s of its start and of each other, so each test makes
//! one or two changes.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dsfeed_binrpc::lists::{domain_dump, rtpengine_show};
use dsfeed_tests::fake_consul::{FakeConsul, Instance, Status};
use dsfeed_tests::feeder::{self, Args, Feeder};
use dsfeed_tests::module::fed_by;
use dsfeed_tests::{
    Kamailio, KamailioBuilder, replace_file, sets, target, until_loaded, wait_until,
};
use fake_kube::{FakeKube, endpoint, endpoint_slice};
use tempfile::TempDir;

/// rtpengine's own 10 s between reloads, and a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(60);

/// A relay as the rtpengine module has it: set, URL, weight and whether the
/// table disables it (a relay that missed a ping is disabled for a while,
/// which is not compared).
type Shown = (i32, String, i32, bool);

fn relay(set: i32, url: &str, weight: i32, disabled: bool) -> Shown {
    (set, url.to_owned(), weight, disabled)
}

/// The `db_text` directory the tables live in, visible inside a Debian
/// root too (the host's temp dir is).
struct Db {
    dir: TempDir,
}

impl Db {
    fn new() -> Db {
        Db {
            dir: tempfile::Builder::new()
                .prefix("dsfeed-db-")
                .tempdir()
                .unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `--rtpengine-table` and `--domain-table` in this directory.
    fn args(&self) -> Args {
        Args::default()
            .arg("--rtpengine-table", self.path().join("rtpengine").display())
            .arg("--domain-table", self.path().join("domain").display())
    }

    /// Writes the tables once from `source`, as an init container does
    /// before Kamailio starts.
    fn init(&self, source: &Args) {
        let args = self
            .args()
            .args(&strs(source))
            .arg("-o", self.path().join("dispatcher.list").display())
            .args(&["--once"]);
        feeder::succeeded(&feeder::run(&strs(&args)));
    }

    /// A Kamailio loading its rtpengine relays and domains from here with
    /// the lines of the README's example configurations.
    async fn kamailio(&self) -> Kamailio {
        self.loading(Kamailio::builder("")).start().await.unwrap()
    }

    /// `builder` with those lines.
    fn loading(&self, builder: KamailioBuilder) -> KamailioBuilder {
        let fragment =
            lists_fragment("router.cfg").replace(EXAMPLE_DIR, &self.path().display().to_string());
        fragment
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .fold(builder, |builder, line| builder.global(line))
    }
}

/// Where the example configurations keep dsfeed's tables.
const EXAMPLE_DIR: &str = "/data/kamailio/dbtext";

/// The example configurations, in docs/examples.
fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples")
}

/// The part of example `name` that loads the lists from db_text.
fn lists_fragment(name: &str) -> String {
    let text = std::fs::read_to_string(examples().join(name)).unwrap();
    let begin = text
        .find("# -- dsfeed lists (begin) --")
        .expect("begin marker");
    let end = text.find("# -- dsfeed lists (end) --").expect("end marker");
    text[begin..end].to_owned()
}

#[test]
fn the_example_configurations_check_and_share_their_lists_part() {
    assert_eq!(lists_fragment("router.cfg"), lists_fragment("sbc.cfg"));
    let examples = examples().canonicalize().unwrap();
    for name in ["router.cfg", "sbc.cfg"] {
        let out = target()
            .command(&[&examples])
            .arg("-c")
            .arg("-f")
            .arg(examples.join(name))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("config file ok"),
            "{name}: {text}"
        );
    }
}

/// Waits until Kamailio's rtpengine module has exactly `relays` and its
/// domain module exactly `domains`, the lists a test changes together.
async fn until_lists(
    kamailio: &Kamailio,
    feeder: Option<&Feeder>,
    relays: &[Shown],
    domains: &[(&str, &str)],
) {
    until_relays(kamailio, feeder, relays).await;
    until_domains(kamailio, feeder, domains).await;
}

/// Waits until Kamailio's rtpengine module has exactly `want`.
async fn until_relays(kamailio: &Kamailio, feeder: Option<&Feeder>, want: &[Shown]) {
    let client = kamailio.client();
    until_exactly("Kamailio's rtpengine relays", feeder, want, || async {
        Ok(rtpengine_show(&client)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|r| {
                let disabled = r.disabled_by_table();
                (r.set, r.url, r.weight, disabled)
            })
            .collect())
    })
    .await;
}

/// Waits until Kamailio's domain module has exactly `want` (domain, did).
async fn until_domains(kamailio: &Kamailio, feeder: Option<&Feeder>, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(d, did)| ((*d).to_owned(), (*did).to_owned()))
        .collect();
    let client = kamailio.client();
    until_exactly("Kamailio's domains", feeder, &want, || async {
        Ok(domain_dump(&client)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect())
    })
    .await;
}

/// Waits until `read` (what Kamailio has of `what`) gives exactly `want`;
/// the failure shows the feeder's log, which says why it did not.
async fn until_exactly<T, F, Fut>(what: &str, feeder: Option<&Feeder>, want: &[T], read: F)
where
    T: Ord + Clone + Debug,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<BTreeSet<T>, String>>,
{
    let want: BTreeSet<T> = want.iter().cloned().collect();
    wait_until(what, SETTLE, || async {
        let seen = read().await?;
        if seen == want {
            Ok(())
        } else {
            Err(format!(
                "{seen:?}, want {want:?}; feeder log:\n{}",
                feeder.map(Feeder::log).unwrap_or_default()
            ))
        }
    })
    .await;
}

/// The README's file-mode start: `--once` writes the tables (as an init
/// container does), Kamailio starts on them and must show `relays` and
/// `domains`, then the feeder starts and Kamailio loads dispatcher set 1
/// from it.
async fn started_on(
    db: &Db,
    source: &Args,
    relays: &[Shown],
    domains: &[(&str, &str)],
) -> (Kamailio, Feeder) {
    db.init(source);
    let kamailio = db.kamailio().await;
    until_lists(&kamailio, None, relays, domains).await;
    let feeder = start_feeder(db, source, &kamailio);
    until_loaded(&kamailio, &sets(&[(1, &["sip:127.0.0.1:5070"])]), SETTLE).await;
    (kamailio, feeder)
}

/// The feeder keeping `db`'s tables and `kamailio`'s dispatcher.list
/// current, reloading over its ctl.
fn start_feeder(db: &Db, source: &Args, kamailio: &Kamailio) -> Feeder {
    let args = db.args().reloading(kamailio).args(&strs(source));
    Feeder::start(args, &kamailio.dir().join("dsfeed.log"))
}

fn strs(args: &Args) -> Vec<&str> {
    args.as_ref().iter().map(String::as_str).collect()
}

fn sets_file(dispatcher: &str, rtpengine: &str, domains: &str) -> String {
    format!("sets:\n{dispatcher}rtpengine:\n{rtpengine}domains:\n{domains}")
}

#[tokio::test]
async fn a_sets_file_drives_all_three_lists() {
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("sets.yaml");
    replace_file(
        &file,
        &sets_file(
            "  1: [sip:127.0.0.1:5070]\n",
            "  1:\n    - 127.0.0.1\n    - url: udp:127.0.0.2:22223\n      weight: 3\n  2:\n    - url: udp:127.0.0.3:22222\n      disabled: true\n",
            "  - SIP.example.com\n  - name: t1.example.com\n    did: tenant-1\n",
        ),
    );
    let source = Args::default().sets_file(&file);
    // What Kamailio read at start, from the tables --once wrote.
    let (kamailio, feeder) = started_on(
        &db,
        &source,
        &[
            relay(1, "udp:127.0.0.1:22222", 1, false),
            relay(1, "udp:127.0.0.2:22223", 3, false),
            relay(2, "udp:127.0.0.3:22222", 1, true),
        ],
        &[
            ("sip.example.com", "sip.example.com"),
            ("t1.example.com", "tenant-1"),
        ],
    )
    .await;

    // One edit changes all three lists: a relay replaced, set 2 gone, a
    // domain replaced, a dispatcher destination added.
    replace_file(
        &file,
        &sets_file(
            "  1: [sip:127.0.0.1:5070, sip:127.0.0.2:5070]\n",
            "  1:\n    - 127.0.0.4\n    - url: udp:127.0.0.2:22223\n      weight: 3\n",
            "  - new.example.com\n  - name: t1.example.com\n    did: tenant-1\n",
        ),
    );
    until_lists(
        &kamailio,
        Some(&feeder),
        &[
            relay(1, "udp:127.0.0.4:22222", 1, false),
            relay(1, "udp:127.0.0.2:22223", 3, false),
        ],
        &[
            ("new.example.com", "new.example.com"),
            ("t1.example.com", "tenant-1"),
        ],
    )
    .await;
    until_loaded(
        &kamailio,
        &sets(&[(1, &["sip:127.0.0.1:5070", "sip:127.0.0.2:5070"])]),
        SETTLE,
    )
    .await;
    feeder.assert_logged("Kamailio reloaded the rtpengine table");
    feeder.assert_logged("Kamailio reloaded the domain table");

    // A domain alone changes: dispatcher.list is neither rewritten nor
    // reloaded (its version is that of the sets alone).
    let list = std::fs::read_to_string(kamailio.list_path()).unwrap();
    let reloads = || feeder.times_logged("Kamailio reloaded dispatcher.list");
    let before = reloads();
    replace_file(
        &file,
        &sets_file(
            "  1: [sip:127.0.0.1:5070, sip:127.0.0.2:5070]\n",
            "  1:\n    - 127.0.0.4\n    - url: udp:127.0.0.2:22223\n      weight: 3\n",
            "  - other.example.com\n  - name: t1.example.com\n    did: tenant-1\n",
        ),
    );
    until_domains(
        &kamailio,
        Some(&feeder),
        &[
            ("other.example.com", "other.example.com"),
            ("t1.example.com", "tenant-1"),
        ],
    )
    .await;
    assert_eq!(std::fs::read_to_string(kamailio.list_path()).unwrap(), list);
    assert_eq!(reloads(), before, "{}", feeder.log());
    let version = std::fs::read_to_string(db.path().join("version")).unwrap();
    assert_eq!(
        version,
        "id(int,auto) table_name(string) table_version(int) \n1:rtpengine:1\n2:domain:2\n3:domain_attrs:1\n"
    );
    assert!(kamailio.is_running());
}

#[tokio::test]
async fn a_kamailio_running_dsfeed_so_reloads_its_tables_and_only_the_module_swaps_sets() {
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sets.yaml");
    let socket = dir.path().join("feed.sock");
    replace_file(
        &file,
        &sets_file(
            "  1: [sip:127.0.0.1:5070]\n",
            "  1: [127.0.0.1]\n",
            "  - a.example.com\n",
        ),
    );
    let source = Args::default().sets_file(&file).listen_unix(&socket);
    db.init(&Args::default().sets_file(&file));
    let kamailio = db
        .loading(fed_by("", format!("unix:{}", socket.display())))
        .modparam("dsfeed", "min_swap_interval_ms", 500)
        .start()
        .await
        .unwrap();
    // --mode auto, the sidecar default.
    let feeder = start_feeder(&db, &source, &kamailio);
    until_loaded(&kamailio, &sets(&[(1, &["sip:127.0.0.1:5070"])]), SETTLE).await;
    replace_file(
        &file,
        &sets_file(
            "  1: [sip:127.0.0.2:5070]\n",
            "  1: [127.0.0.2]\n",
            "  - b.example.com\n",
        ),
    );
    until_loaded(&kamailio, &sets(&[(1, &["sip:127.0.0.2:5070"])]), SETTLE).await;
    until_lists(
        &kamailio,
        Some(&feeder),
        &[relay(1, "udp:127.0.0.2:22222", 1, false)],
        &[("b.example.com", "b.example.com")],
    )
    .await;
    feeder.wait_logged("runs dsfeed.so").await;
    let log = feeder.log();
    assert!(!log.contains("wrote dispatcher.list"), "{log}");
    assert!(
        log.contains("Kamailio reloaded the rtpengine table"),
        "{log}"
    );
    assert!(
        !kamailio.log().contains("dispatcher_rpc_reload"),
        "no dispatcher reload reached Kamailio"
    );
}

/// A slice `name` of Service `service` in `namespace` with one endpoint
/// at `ip`, port `port`.
fn slice(
    namespace: &str,
    service: &str,
    name: &str,
    ip: &str,
    port: u16,
    ready: bool,
    terminating: bool,
) -> serde_json::Value {
    endpoint_slice(
        namespace,
        service,
        name,
        "IPv4",
        port,
        vec![endpoint(ip, ready, true, terminating)],
    )
}

/// A slice of Service `rtpengine` in `media`, control port 22222.
fn media_slice(name: &str, ip: &str, ready: bool, terminating: bool) -> serde_json::Value {
    slice("media", "rtpengine", name, ip, 22222, ready, terminating)
}

// Several threads: `dsfeed --once` blocks one, and the fake API server must
// keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_drives_all_three_lists() {
    let kube = FakeKube::start().await;
    kube.apply(media_slice("rtpengine-a", "127.0.0.1", true, false));
    kube.apply(media_slice("rtpengine-b", "127.0.0.2", true, false));
    kube.apply(slice(
        "voice",
        "asterisk",
        "asterisk-a",
        "127.0.0.1",
        5070,
        true,
        false,
    ));
    kube.apply(slice(
        "edge",
        "sbc",
        "sbc-a",
        "127.0.0.11",
        5060,
        true,
        false,
    ));
    let db = Db::new();
    let kubeconfig = db.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    let source = Args::new(&[
        "--rtpengine-set",
        "media:rtpengine=1",
        "--set",
        "voice:asterisk=1:sip",
        "--domain-set",
        "edge:sbc=edge",
    ])
    .arg("--kubecfg", kubeconfig.display());
    let (kamailio, feeder) = started_on(
        &db,
        &source,
        &[
            relay(1, "udp:127.0.0.1:22222", 1, false),
            relay(1, "udp:127.0.0.2:22222", 1, false),
        ],
        &[("127.0.0.11", "edge")],
    )
    .await;

    // B's pod terminates: its relay is disabled (drained); C's pod starts;
    // a second SBC and a second Asterisk start.
    kube.apply(media_slice("rtpengine-b", "127.0.0.2", false, true));
    kube.apply(media_slice("rtpengine-c", "127.0.0.3", true, false));
    kube.apply(slice(
        "edge",
        "sbc",
        "sbc-b",
        "127.0.0.12",
        5060,
        true,
        false,
    ));
    kube.apply(slice(
        "voice",
        "asterisk",
        "asterisk-b",
        "127.0.0.2",
        5070,
        true,
        false,
    ));
    until_lists(
        &kamailio,
        Some(&feeder),
        &[
            relay(1, "udp:127.0.0.1:22222", 1, false),
            relay(1, "udp:127.0.0.2:22222", 1, true),
            relay(1, "udp:127.0.0.3:22222", 1, false),
        ],
        &[("127.0.0.11", "edge"), ("127.0.0.12", "edge")],
    )
    .await;
    until_loaded(
        &kamailio,
        &sets(&[(1, &["sip:127.0.0.1:5070", "sip:127.0.0.2:5070"])]),
        SETTLE,
    )
    .await;
    assert!(kamailio.is_running());
}

// Several threads, for the fake Consul, as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_drives_relays_and_domains_and_a_restart_blanks_neither() {
    let consul = FakeConsul::start().await;
    consul.register(Instance::new("rtpengine", "rtp-a", "127.0.0.1", 22222));
    consul.register(Instance::new("sbc", "sbc-a", "127.0.0.11", 5060));
    consul.register(Instance::new("asterisk", "pbx-a", "127.0.0.1", 5070));
    let db = Db::new();
    let source = consul.feeder_args(&["asterisk=1"]).args(&[
        "--consul-rtpengine",
        "rtpengine=1",
        "--consul-domain",
        "sbc",
        "--consul-empty-grace",
        "10m",
        "--consul-wait",
        "2s",
    ]);
    let (kamailio, feeder) = started_on(
        &db,
        &source,
        &[relay(1, "udp:127.0.0.1:22222", 1, false)],
        &[("127.0.0.11", "127.0.0.11")],
    )
    .await;

    // A second relay and a second SBC register; the first relay fails its
    // health check.
    consul.register(Instance::new("rtpengine", "rtp-b", "127.0.0.2", 22222));
    consul.register(Instance::new("sbc", "sbc-b", "127.0.0.12", 5060));
    consul.set_status("rtpengine", "rtp-a", Status::Critical);
    until_lists(
        &kamailio,
        Some(&feeder),
        &[relay(1, "udp:127.0.0.2:22222", 1, false)],
        &[("127.0.0.11", "127.0.0.11"), ("127.0.0.12", "127.0.0.12")],
    )
    .await;

    // The agent restarts and answers empty: relays and domains stay.
    consul.restart_and_await_reread(SETTLE).await;
    feeder
        .wait_logged("keeping the last ones until the grace runs out")
        .await;
    let relays = std::fs::read_to_string(db.path().join("rtpengine")).unwrap();
    assert!(relays.contains("udp\\:127.0.0.2\\:22222"), "{relays}");
    let domains = std::fs::read_to_string(db.path().join("domain")).unwrap();
    assert!(domains.contains(":127.0.0.12::0"), "{domains}");
    until_lists(
        &kamailio,
        Some(&feeder),
        &[relay(1, "udp:127.0.0.2:22222", 1, false)],
        &[("127.0.0.11", "127.0.0.11"), ("127.0.0.12", "127.0.0.12")],
    )
    .await;
    until_loaded(&kamailio, &sets(&[(1, &["sip:127.0.0.1:5070"])]), SETTLE).await;
    assert!(kamailio.is_running());
}

/// `dsfeed watch --once` against a feeder serving `source` on a socket in
/// `dir`, asking for `lists`; its output.
async fn watched(dir: &Path, name: &str, source: &[&str], lists: &[&str]) -> String {
    let socket = dir.join(format!("{name}.sock"));
    let http = dsfeed_tests::free_addr();
    let _feeder = Feeder::serving(Args::new(source).listen_unix(&socket).http(http)).await;
    let addr = format!("unix:{}", socket.display());
    let mut args = vec![addr.as_str(), "--once"];
    args.extend_from_slice(lists);
    feeder::succeeded(&feeder::watch(&args).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_carries_lists_only_to_clients_that_ask() {
    let dir = tempfile::tempdir().unwrap();
    let sets_only = ["--static", "1=10.0.0.1"];
    let with_lists = [
        "--static",
        "1=10.0.0.1",
        "--static-rtpengine",
        "2=10.0.0.5,udp:10.0.0.6:2223",
        "--static-domain",
        "t1=SIP.example.com",
    ];
    let plain = watched(dir.path(), "plain", &sets_only, &[]).await;
    // A client that does not ask for lists sees exactly what it saw before
    // lists existed, version included: a list change never wakes it.
    let unasked = watched(dir.path(), "unasked", &with_lists, &[]).await;
    assert_eq!(unasked, plain);
    let asked = watched(
        dir.path(),
        "asked",
        &with_lists,
        &["--lists", "rtpengine,domain"],
    )
    .await;
    assert_ne!(
        asked.lines().next(),
        plain.lines().next(),
        "its own version"
    );
    let body: Vec<&str> = asked.lines().skip(1).collect();
    assert_eq!(
        body,
        [
            "1 sip:10.0.0.1:5060 0 0",
            "# rtpengine 2 udp:10.0.0.5:22222 weight=1",
            "# rtpengine 2 udp:10.0.0.6:2223 weight=1",
            "# domain sip.example.com did=t1",
        ]
    );
    let domains_only = watched(dir.path(), "domains", &with_lists, &["--lists", "domain"]).await;
    assert!(!domains_only.contains("rtpengine"), "{domains_only}");
    assert!(
        domains_only.contains("# domain sip.example.com did=t1"),
        "{domains_only}"
    );
}
