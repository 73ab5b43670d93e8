//! Fault injection under SIP load: while the sets churn and sipp sends
//! requests through Kamailio, the feeder is killed with SIGKILL, frozen
//! with SIGSTOP for 30 s, Kamailio is restarted under it, and Kamailio's
//! ctl replies are dropped. Kamailio must stay up with every worker alive,
//! every request must be answered, and Kamailio must end on the final sets.
//!
//! Two shapes: the README's sidecar (dsfeed.so applies the feed, the feeder
//! in `--mode auto` must never reload it) and file mode against a stock
//! Kamailio with `reload_delta=0` (the feeder's own pacing is all there is).
//! Each runs for about a minute.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dsfeed_tests::ctl_proxy::CtlProxy;
use dsfeed_tests::feeder::Feeder;
use dsfeed_tests::loads::{Event, LoadLog};
use dsfeed_tests::module::{WAIT, rpc};
use dsfeed_tests::sipp::{Backend, Load};
use dsfeed_tests::{Kamailio, KamailioBuilder, replace_file, sets, until_loaded};
use nix::sys::signal::Signal;

/// SIP requests per second through Kamailio.
const RATE: u64 = 100;

/// How long the feeder stays frozen.
const FROZEN: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// dsfeed.so applies the feed; `--mode auto --listen … --rpc …`.
    Sidecar,
    /// A stock Kamailio with `reload_delta=0`; `--mode file`.
    File,
}

struct Pod {
    shape: Shape,
    dir: tempfile::TempDir,
    backends: [Backend; 2],
}

impl Pod {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn kamailio(&self) -> KamailioBuilder {
        let builder = match self.shape {
            Shape::Sidecar => dsfeed_tests::module::kamailio("")
                .modparam(
                    "dsfeed",
                    "feeder",
                    format!("unix:{}", self.path("feed.sock").display()),
                )
                .modparam("dsfeed", "reconnect_min_ms", 100)
                .modparam("dsfeed", "reconnect_max_ms", 1000),
            Shape::File => Kamailio::builder("").reload_delta(0),
        };
        builder
            .debug(3)
            .children(4)
            .shm_mb(256)
            .modparam(
                "dispatcher",
                "list_file",
                self.path("dispatcher.list").as_path(),
            )
            .modparam(
                "ctl",
                "binrpc",
                format!("unix:{}", self.path("kamailio_ctl").display()),
            )
    }

    fn feeder(&self, rpc: &str) -> Feeder {
        let listen = format!("unix:{}", self.path("feed.sock").display());
        let (sets_file, list) = (self.path("sets.yaml"), self.path("dispatcher.list"));
        let mut args = vec![
            "--sets-file",
            text(&sets_file),
            "-o",
            text(&list),
            "--rpc",
            rpc,
        ];
        match self.shape {
            Shape::Sidecar => args.extend(["--listen", &listen]),
            Shape::File => args.extend(["--mode", "file"]),
        }
        Feeder::start(&args, &self.path("dsfeed.log"))
    }

    /// Set 1 as the `n`th churn step has it: A, B, or both.
    fn step(&self, n: usize) -> Vec<String> {
        let [a, b] = &self.backends;
        match n % 3 {
            0 => vec![a.uri()],
            1 => vec![b.uri()],
            _ => vec![a.uri(), b.uri()],
        }
    }
}

fn text(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn yaml(uris: &[String]) -> String {
    format!("sets:\n  1: [{}]\n", uris.join(", "))
}

/// Rewrites the sets file every 20 ms until stopped.
struct Churn {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<usize>,
}

impl Churn {
    fn start(file: PathBuf, steps: Vec<Vec<String>>) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    replace_file(&file, &yaml(&steps[n % steps.len()]));
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                n
            }
        });
        Churn { stop, task }
    }

    async fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// The processes Kamailio runs (`core.psx`): a dead worker takes Kamailio
/// down with it, but count them anyway.
async fn processes(kamailio: &Kamailio) -> usize {
    rpc(kamailio, "core.psx", &[]).await.unwrap().len()
}

/// Asserts Kamailio is up with all of its processes and never crashed.
async fn assert_alive(kamailio: &Kamailio, processes_at_start: usize, when: &str) {
    assert!(
        kamailio.is_running(),
        "{when}: Kamailio died:\n{}",
        kamailio.log()
    );
    assert_eq!(processes(kamailio).await, processes_at_start, "{when}");
    let log = kamailio.log();
    for crash in ["signal 11", "SIGSEGV", "core dumped", "exited by a signal"] {
        assert!(!log.contains(crash), "{when}: {crash}:\n{log}");
    }
}

/// Runs the faults against one shape.
async fn faults(shape: Shape) {
    let pod = Pod {
        shape,
        dir: tempfile::tempdir().unwrap(),
        backends: [Backend::start(), Backend::start()],
    };
    let steps: Vec<Vec<String>> = (0..3).map(|n| pod.step(n)).collect();
    replace_file(&pod.path("sets.yaml"), &yaml(&steps[2]));
    std::fs::write(pod.path("dispatcher.list"), "").unwrap();
    let proxy = CtlProxy::start(&pod.path("ctl-proxy.sock"), &pod.path("kamailio_ctl"));

    let kamailio = pod.kamailio().start().await.unwrap();
    let loads = LoadLog::follow(kamailio.log_path());
    let at_start = processes(&kamailio).await;
    let mut feeder = pod.feeder(&proxy.addr());
    let both = sets(&[(1, &[&steps[2][0], &steps[2][1]])]);
    until_loaded(&kamailio, &both, WAIT).await;

    // Load for the first Kamailio's whole life, about 60 s.
    let load = Load::start(
        &kamailio.sip_addr().to_string(),
        1,
        RATE,
        RATE * 60,
        pod.dir.path(),
    );
    let churn = Churn::start(pod.path("sets.yaml"), steps.clone());

    // SIGKILL while it churns (in file mode, while it writes the list).
    tokio::time::sleep(Duration::from_secs(3)).await;
    feeder.kill();
    feeder = pod.feeder(&proxy.addr());
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Frozen for 30 s while the sets keep changing.
    feeder.signal(Signal::SIGSTOP);
    tokio::time::sleep(FROZEN).await;
    feeder.signal(Signal::SIGCONT);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Kamailio's answers lost for a while: no answer is never a yes.
    proxy.drop_replies(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.drop_replies(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = load.finish(Duration::from_secs(120)).await;
    assert_alive(&kamailio, at_start, "after the feeder's faults").await;
    assert_eq!(stats.created, RATE * 60);
    assert_eq!(stats.failed, 0, "requests failed: {stats:#?}");
    if shape == Shape::Sidecar {
        assert_eq!(
            loads.count(Event::Loaded),
            loads.count(Event::ModuleSwap) + 1,
            "something but dsfeed.so loaded the list:\n{}",
            kamailio.log()
        );
    }

    // Kamailio restarted under the feeder, under load again.
    drop(loads);
    drop(kamailio);
    let kamailio = pod.kamailio().start().await.unwrap();
    let loads = LoadLog::follow(kamailio.log_path());
    let at_start = processes(&kamailio).await;
    let load = Load::start(
        &kamailio.sip_addr().to_string(),
        1,
        RATE,
        RATE * 10,
        pod.dir.path(),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let churned = churn.stop().await;

    // The final sets reach Kamailio.
    let last = &steps[(churned + 1) % 3];
    replace_file(&pod.path("sets.yaml"), &yaml(last));
    let want: Vec<&str> = last.iter().map(String::as_str).collect();
    until_loaded(&kamailio, &sets(&[(1, &want)]), WAIT).await;
    let stats = load.finish(Duration::from_secs(60)).await;
    assert_alive(&kamailio, at_start, "after Kamailio's restart").await;
    assert_eq!(stats.failed, 0, "requests failed: {stats:#?}");
    if shape == Shape::Sidecar {
        drop(feeder);
        assert_eq!(
            loads.count(Event::Loaded),
            loads.count(Event::ModuleSwap) + 1,
            "something but dsfeed.so loaded the list:\n{}",
            kamailio.log()
        );
    }
    assert!(
        !kamailio.log().contains("replaced by something else"),
        "{}",
        kamailio.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_survives_feeder_and_kamailio_faults_under_load() {
    faults(Shape::Sidecar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_survives_feeder_and_kamailio_faults_under_load() {
    faults(Shape::File).await;
}
