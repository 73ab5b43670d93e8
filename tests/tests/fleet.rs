//! A fleet on one machine: two feeder replicas (the real `dsfeed`, TLS and a
//! token) and three Kamailios with dsfeed.so, each on a host of its own (a
//! network namespace on a private bridge), SIP load from a caller host
//! through each Kamailio to backends on hosts of their own. Two Kamailios
//! list both replicas; the third names them with one name that resolves to
//! both. What is asserted is what an operator sees: `dispatcher.list` and
//! `dsfeed.status` over each Kamailio's ctl socket, and sipp's failed calls.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::module::{Status, WAIT, fed_by, status};
use dsfeed_tests::netns::{Host, Network};
use dsfeed_tests::pki::Pki;
use dsfeed_tests::sets::SetsFile;
use dsfeed_tests::sipp::{Backend, Load, call_on};
use dsfeed_tests::{Kamailio, eventually, loaded, write_secret};
use nix::sys::signal::Signal;

const PORT: u16 = 7000;
/// The name the third Kamailio resolves to both replicas.
const SERVICE: &str = "feeders.fleet.test";
/// How long one Kamailio's link stays cut.
const CUT: Duration = Duration::from_secs(30);
/// SIP load per Kamailio while a replica dies or both restart.
const RATE: u64 = 20;

fn addr(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 0, last)
}

type Loaded = BTreeMap<u32, BTreeSet<String>>;

/// The fleet's hosts and the files they share.
struct Fleet {
    dir: tempfile::TempDir,
    pki: Pki,
    sets: SetsFile,
    replicas: [Host; 2],
    caller: Host,
    backends: Vec<Backend>,
}

impl Fleet {
    /// Starts replica `i` (0 or 1) on its host.
    async fn replica(&self, i: usize) -> Feeder {
        let host = &self.replicas[i];
        let args = Args::default()
            .sets_file(&self.sets.path)
            .arg("--listen", format!("https://{}:{PORT}", host.addr))
            .arg("--tls-cert", self.pki.server_cert.display())
            .arg("--tls-key", self.pki.server_key.display())
            .arg("--token-file", self.dir.path().join("token").display());
        Feeder::serving_on(host, args).await
    }

    /// How backend `i` names itself in its answers.
    fn backend_name(&self, i: usize) -> String {
        self.backends[i].name()
    }

    fn feeder_of(&self, i: usize) -> String {
        format!("https://{}:{PORT}", self.replicas[i].addr)
    }

    /// A Kamailio on `host` fed by `feeder` (the module's `feeder`).
    async fn kamailio(&self, host: &Host, feeder: &str) -> Kamailio {
        fed_by("", feeder)
            .on_host(host)
            .modparam("dsfeed", "node_id", host.ns.as_str())
            .modparam("dsfeed", "tls_ca", self.pki.ca.as_path())
            .modparam(
                "dsfeed",
                "token_file",
                self.dir.path().join("token").as_path(),
            )
            .modparam("dsfeed", "reconnect_max_ms", 2000)
            .start()
            .await
            .unwrap()
    }

    /// SIP load through each of `kamailios` for `seconds`, set 1.
    fn load(&self, kamailios: &[&Kamailio], seconds: u64) -> Vec<Load> {
        kamailios
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let port = 5061 + u16::try_from(i).unwrap();
                let target = k.sip_addr().to_string();
                Load::start_on(
                    &self.caller,
                    port,
                    &target,
                    1,
                    RATE,
                    RATE * seconds,
                    self.dir.path(),
                )
            })
            .collect()
    }
}

/// Every load ended with each call answered.
async fn no_failed_call(loads: Vec<Load>) {
    for load in loads {
        let stats = load.finish(WAIT * 2).await;
        assert!(
            stats.failed == 0 && stats.successful == stats.created && stats.created > 0,
            "calls failed: {stats:?}"
        );
    }
}

/// Waits until every Kamailio's status passes `check`; returns them.
async fn all_until(
    kamailios: &[&Kamailio],
    what: &str,
    check: impl Fn(&Status) -> bool,
) -> Vec<Status> {
    let mut out = Vec::new();
    for k in kamailios {
        let seen = eventually(what, WAIT, || async {
            let s = status(k).await;
            check(&s).then_some(s)
        })
        .await;
        out.push(seen);
    }
    out
}

/// Asserts, for `lasting`, that every Kamailio keeps `expected` loaded and
/// swaps nothing, polling all the while.
async fn hold(kamailios: &[&Kamailio], expected: &Loaded, swaps: &[i64], lasting: Duration) {
    let until = Instant::now() + lasting;
    while Instant::now() < until {
        for (k, swaps) in kamailios.iter().zip(swaps) {
            assert_eq!(&loaded(k).await, expected, "a Kamailio lost sets");
            let now = status(k).await;
            assert_eq!(now.int("swaps"), *swaps, "a Kamailio swapped: {now:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_fail_over_links_catch_up_and_restarts_empty_nothing() {
    let mut net = Network::create();
    let replicas = [net.host("feeder1", addr(11)), net.host("feeder2", addr(12))];
    let kam_hosts = [
        net.host("kam1", addr(21)),
        net.host("kam2", addr(22)),
        net.host("kam3", addr(23)),
    ];
    let caller = net.host("caller", addr(41));
    let backend_hosts = [net.host("back1", addr(31)), net.host("back2", addr(32))];
    kam_hosts[2].hosts_file(&[(addr(11), SERVICE), (addr(12), SERVICE)]);

    let dir = tempfile::tempdir().unwrap();
    write_secret(&dir.path().join("token"), "fleet-token\n");
    let sets_dir = dir.path().join("sets");
    std::fs::create_dir(&sets_dir).unwrap();
    let backends: Vec<Backend> = backend_hosts.iter().map(Backend::start_on).collect();
    let (b1, b2) = (backends[0].uri(), backends[1].uri());
    let first: &[(u32, &[&str])] = &[(1, &[b1.as_str(), b2.as_str()]), (2, &[b2.as_str()])];
    let fleet = Fleet {
        pki: Pki::new(&["10.99.0.11", "10.99.0.12", SERVICE]),
        // A directory of its own: the loads' files would wake the source.
        sets: SetsFile::new(&sets_dir, first),
        dir,
        replicas,
        caller,
        backends,
    };
    let mut feeders = [fleet.replica(0).await, fleet.replica(1).await];
    let list = format!("{},{}", fleet.feeder_of(0), fleet.feeder_of(1));
    let by_name = format!("https://{SERVICE}:{PORT}");
    let kams = [
        fleet.kamailio(&kam_hosts[0], &list).await,
        fleet.kamailio(&kam_hosts[1], &list).await,
        fleet.kamailio(&kam_hosts[2], &by_name).await,
    ];
    let all: Vec<&Kamailio> = kams.iter().collect();
    let expected: Loaded = dsfeed_tests::sets(first);

    // Every Kamailio applies the truth once, from the first replica.
    let statuses = all_until(&all, "the first replica's sets applied", |s| {
        s.int("connected") == 1 && s.int("swaps") == 1 && s.text("feeder").contains("10.99.0.11")
    })
    .await;
    for k in &all {
        assert_eq!(loaded(k).await, expected);
    }
    assert_eq!(
        statuses[2].text("feeder"),
        format!("{by_name} (10.99.0.11:{PORT})"),
        "a name resolving to both replicas counts as two feeders"
    );
    let version = statuses[0].text("applied_version").to_owned();
    assert!(
        statuses
            .iter()
            .all(|s| s.text("applied_version") == version)
    );

    // Kill the first replica under load: every Kamailio moves to the
    // second, which publishes the same version, so nothing is swapped and
    // no call fails.
    let loads = fleet.load(&all, 8);
    feeders[0].kill();
    all_until(&all, "every Kamailio on the second replica", |s| {
        s.int("connected") == 1 && s.text("feeder").contains("10.99.0.12")
    })
    .await;
    for k in &all {
        let s = status(k).await;
        assert_eq!(
            (s.int("swaps"), s.text("applied_version")),
            (1, version.as_str()),
            "{s:?}"
        );
        assert_eq!(loaded(k).await, expected);
    }
    no_failed_call(loads).await;
    feeders[0] = fleet.replica(0).await;

    // Cut the first Kamailio off for 30 s while the truth changes: it keeps
    // its sets, the others follow, and it catches up once back.
    let second: &[(u32, &[&str])] = &[(1, &[b1.as_str()]), (2, &[b1.as_str(), b2.as_str()])];
    let changed: Loaded = dsfeed_tests::sets(second);
    kam_hosts[0].cut();
    fleet.sets.write(second);
    let others = &all[1..];
    all_until(others, "the others to apply the change", |s| {
        s.int("swaps") == 2
    })
    .await;
    for k in others {
        assert_eq!(loaded(k).await, changed);
    }
    let cut_until = Instant::now() + CUT;
    while Instant::now() < cut_until {
        assert_eq!(
            loaded(&kams[0]).await,
            expected,
            "the cut-off Kamailio lost sets"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kam_hosts[0].restore();
    eventually("the cut-off Kamailio to catch up", WAIT * 2, || async {
        (loaded(&kams[0]).await == changed).then_some(())
    })
    .await;
    // It caught up with a delta on the version it held.
    let node = format!("node={}", kam_hosts[0].ns);
    assert!(
        feeders.iter().any(|f| f
            .log()
            .lines()
            .any(|l| l.contains("sending a delta") && l.contains(&node))),
        "no delta was sent to {node}"
    );

    // Both replicas restart at once: no Kamailio empties a set, none swaps,
    // no call fails, and all of them reconnect.
    let statuses = all_until(&all, "one version everywhere", |s| {
        s.int("connected") == 1 && s.int("swaps") == 2
    })
    .await;
    let version = statuses[0].text("applied_version").to_owned();
    let swaps = vec![2; all.len()];
    let loads = fleet.load(&all, 8);
    for feeder in &feeders {
        feeder.signal(Signal::SIGTERM);
    }
    for feeder in &mut feeders {
        feeder.wait_exit().await;
    }
    hold(&all, &changed, &swaps, Duration::from_secs(2)).await;
    feeders = [fleet.replica(0).await, fleet.replica(1).await];
    for (k, before) in all.iter().zip(&statuses) {
        let connects = before.int("connects");
        all_until(&[k], "every Kamailio reconnected", |s| {
            s.int("connected") == 1 && s.int("connects") > connects
        })
        .await;
    }
    hold(&all, &changed, &swaps, Duration::from_secs(1)).await;
    no_failed_call(loads).await;

    // All end on the same version, and SIP follows it: set 1 is the first
    // backend alone now, through every Kamailio.
    for k in &all {
        let s = status(k).await;
        assert_eq!(s.text("applied_version"), version, "{s:?}");
        assert_eq!(loaded(k).await, changed);
        let target = k.sip_addr().to_string();
        let reached = call_on(&fleet.caller, &target, 1, 4, fleet.dir.path());
        assert_eq!(reached, vec![fleet.backend_name(0); 4], "through {target}");
    }
    drop(kams);
    drop(feeders);
    drop(fleet);
    drop(net);
}
