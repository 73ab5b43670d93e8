//! The rules that keep Kamailio alive, counted at Kamailio's side (its own
//! log, see `dsfeed_tests::loads`):
//! - one writer: a Kamailio running dsfeed.so gets no `dispatcher.reload`
//!   from the feeder, whatever the start order and the `--mode`;
//! - paced: reloads of a stock Kamailio are at least
//!   `--min-reload-interval` apart even with `reload_delta=0`, and a burst
//!   ends on the newest sets.

mod module_harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use dsfeed_tests::feeder::{Feeder, free_addr, http_get};
use dsfeed_tests::loads::{Event, LoadLog};
use dsfeed_tests::{Kamailio, KamailioBuilder, eventually, replace_file, sets, until_loaded};
use module_harness::WAIT;

/// The files a sidecar pod shares between its two containers.
struct Pod {
    dir: tempfile::TempDir,
}

impl Pod {
    fn new() -> Pod {
        Pod {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn socket(&self) -> PathBuf {
        self.path("feed.sock")
    }

    fn ctl(&self) -> PathBuf {
        self.path("kamailio_ctl")
    }

    fn list(&self) -> PathBuf {
        self.path("dispatcher.list")
    }

    fn sets_file(&self) -> PathBuf {
        self.path("sets.yaml")
    }

    /// A feeder that only serves the feed the module reads.
    fn serving_feeder(&self) -> Feeder {
        let listen = format!("unix:{}", self.socket().display());
        let sets_file = self.sets_file();
        let args = [
            "--sets-file",
            path(&sets_file),
            "--mode",
            "grpc",
            "--listen",
            &listen,
        ];
        Feeder::start(&args, &self.path("serving.log"))
    }

    /// The feeder container: the README's sidecar command.
    fn feeder(&self, extra: &[&str]) -> Feeder {
        let listen = format!("unix:{}", self.socket().display());
        let rpc = format!("unix:{}", self.ctl().display());
        let (sets_file, list) = (self.sets_file(), self.list());
        let mut args = vec![
            "--sets-file",
            path(&sets_file),
            "-o",
            path(&list),
            "--rpc",
            &rpc,
        ];
        if !extra.contains(&"--no-listen") {
            args.extend(["--listen", &listen]);
        }
        args.extend(extra.iter().filter(|a| **a != "--no-listen"));
        Feeder::start(&args, &self.path("dsfeed.log"))
    }

    /// The Kamailio container with dsfeed.so, reading the shared list file
    /// and answering on the shared ctl socket, with the dispatcher's debug
    /// log on so that every load shows.
    fn kamailio(&self) -> KamailioBuilder {
        module_harness::kamailio("")
            .debug(3)
            .modparam("dispatcher", "list_file", self.list().as_path())
            .modparam("ctl", "binrpc", format!("unix:{}", self.ctl().display()))
            .modparam(
                "dsfeed",
                "feeder",
                format!("unix:{}", self.socket().display()),
            )
            .modparam("dsfeed", "reconnect_min_ms", 100)
            .modparam("dsfeed", "reconnect_max_ms", 500)
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn set_yaml(uri: &str) -> String {
    format!("sets:\n  1: [{uri}]\n")
}

/// Asserts that every load Kamailio logged was its start-up load or one of
/// dsfeed.so's swaps, and that no reload was even attempted.
fn assert_only_the_module_loaded(loads: &LoadLog, kamailio: &Kamailio, context: &str) {
    let (loaded, swaps) = (loads.count(Event::Loaded), loads.count(Event::ModuleSwap));
    assert!(
        swaps >= 1 && loaded == swaps + 1 && loads.count(Event::ReloadRefused) == 0,
        "{context}: {loaded} loads for {swaps} module swaps (plus the start-up load) and {} refused reloads; Kamailio's log:\n{}",
        loads.count(Event::ReloadRefused),
        kamailio.log()
    );
    assert!(
        !kamailio.log().contains("replaced by something else"),
        "{context}: the module saw another writer:\n{}",
        kamailio.log()
    );
}

/// The sidecar pod's two containers start in either order; in neither does
/// the feeder reload the dispatcher behind dsfeed.so.
async fn sidecar_round(feeder_first: bool, round: usize) {
    let pod = Pod::new();
    replace_file(&pod.sets_file(), &set_yaml("sip:10.0.0.1:5060"));
    let context = format!(
        "round {round}, {} first",
        if feeder_first { "feeder" } else { "Kamailio" }
    );
    let mut feeder = None;
    if feeder_first {
        feeder = Some(pod.feeder(&[]));
        // With Kamailio not answering yet, the file is written for it to
        // read at start, and the reload waits.
        eventually("the feeder to write the list", WAIT, || async {
            pod.list().exists().then_some(())
        })
        .await;
    } else {
        std::fs::write(pod.list(), "").unwrap();
    }
    let kamailio = pod.kamailio().start().await.unwrap();
    let loads = LoadLog::follow(kamailio.log_path());
    let feeder = feeder.unwrap_or_else(|| pod.feeder(&[]));
    let first = sets(&[(1, &["sip:10.0.0.1:5060"])]);
    until_loaded(&kamailio, &first, WAIT).await;
    replace_file(&pod.sets_file(), &set_yaml("sip:10.0.0.2:5060"));
    let second = sets(&[(1, &["sip:10.0.0.2:5060"])]);
    until_loaded(&kamailio, &second, WAIT).await;
    eventually("the feeder to step aside for the module", WAIT, || async {
        feeder.log().contains("runs dsfeed.so").then_some(())
    })
    .await;
    // Everything the feeder would ever send has been sent once it is gone.
    drop(feeder);
    assert_only_the_module_loaded(&loads, &kamailio, &context);
}

#[tokio::test]
async fn sidecar_started_feeder_first_never_reloads_the_module_kamailio() {
    for round in 1..=3 {
        sidecar_round(true, round).await;
    }
}

#[tokio::test]
async fn sidecar_started_kamailio_first_never_reloads_the_module_kamailio() {
    for round in 1..=3 {
        sidecar_round(false, round).await;
    }
}

#[tokio::test]
async fn mode_file_refuses_a_module_kamailio_and_says_why() {
    let pod = Pod::new();
    replace_file(&pod.sets_file(), &set_yaml("sip:10.0.0.1:5060"));
    // Another feeder serves the module; this one is told to use the file.
    let serving = pod.serving_feeder();
    std::fs::write(pod.list(), "").unwrap();
    let kamailio = pod.kamailio().start().await.unwrap();
    let loads = LoadLog::follow(kamailio.log_path());
    until_loaded(&kamailio, &sets(&[(1, &["sip:10.0.0.1:5060"])]), WAIT).await;
    let before = std::fs::read(pod.list()).unwrap();

    let http = free_addr();
    let rpc = format!("unix:{}", pod.ctl().display());
    let (sets_file, list) = (pod.sets_file(), pod.list());
    let args = [
        "--sets-file",
        path(&sets_file),
        "-o",
        path(&list),
        "--rpc",
        &rpc,
        "--mode",
        "file",
        "--http",
        &http.to_string(),
    ];
    let file_feeder = Feeder::start(&args, &pod.path("file.log"));
    // Labelled with the Kamailio it reloads, then the reason.
    let (metric, reason) = (
        "dsfeed_reloads_withheld_total{",
        "reason=\"dsfeed_module\"}",
    );
    eventually("the refusal to show in /metrics", WAIT, || async {
        let (_, body) = http_get(http, "/metrics").await.ok()?;
        body.lines()
            .any(|l| l.starts_with(metric) && l.contains(reason) && !l.ends_with(" 0"))
            .then_some(())
    })
    .await;
    let log = file_feeder.log();
    assert!(
        log.contains("runs dsfeed.so") && log.contains("only writer"),
        "{log}"
    );
    drop(file_feeder);
    drop(serving);
    assert_eq!(
        std::fs::read(pod.list()).unwrap(),
        before,
        "the file is untouched"
    );
    assert_only_the_module_loaded(&loads, &kamailio, "--mode file");
}

#[tokio::test]
async fn mode_auto_without_listen_steps_aside_for_a_module_kamailio() {
    let pod = Pod::new();
    replace_file(&pod.sets_file(), &set_yaml("sip:10.0.0.1:5060"));
    let serving = pod.serving_feeder();
    std::fs::write(pod.list(), "").unwrap();
    let kamailio = pod.kamailio().start().await.unwrap();
    let loads = LoadLog::follow(kamailio.log_path());
    until_loaded(&kamailio, &sets(&[(1, &["sip:10.0.0.1:5060"])]), WAIT).await;
    let before = std::fs::read(pod.list()).unwrap();
    // A second feeder in auto mode with no feed of its own, as a file-mode
    // deployment left running next to the module would be.
    let auto = pod.feeder(&["--no-listen"]);
    replace_file(&pod.sets_file(), &set_yaml("sip:10.0.0.2:5060"));
    until_loaded(&kamailio, &sets(&[(1, &["sip:10.0.0.2:5060"])]), WAIT).await;
    eventually("the auto feeder to step aside", WAIT, || async {
        auto.log().contains("runs dsfeed.so").then_some(())
    })
    .await;
    drop(auto);
    drop(serving);
    assert_eq!(
        std::fs::read(pod.list()).unwrap(),
        before,
        "the file is untouched"
    );
    assert_only_the_module_loaded(&loads, &kamailio, "--mode auto without --listen");
}

#[tokio::test]
async fn a_burst_against_reload_delta_0_is_paced_and_ends_on_the_newest() {
    let work = tempfile::tempdir().unwrap();
    let kamailio = Kamailio::builder("")
        .reload_delta(0)
        .debug(3)
        .start()
        .await
        .unwrap();
    let loads = LoadLog::follow(kamailio.log_path());
    let sets_file = work.path().join("sets.yaml");
    replace_file(&sets_file, &set_yaml("sip:10.0.0.100:5060"));
    let rpc = kamailio.ctl_unix().to_string();
    let interval = Duration::from_secs(1);
    let feeder = Feeder::start(
        &[
            "--sets-file",
            path(&sets_file),
            "-o",
            path(kamailio.list_path()),
            "--rpc",
            &rpc,
            "--mode",
            "file",
        ],
        &work.path().join("dsfeed.log"),
    );
    until_loaded(&kamailio, &sets(&[(1, &["sip:10.0.0.100:5060"])]), WAIT).await;
    for i in 1..=20 {
        replace_file(&sets_file, &set_yaml(&format!("sip:10.0.0.{i}:5060")));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    until_loaded(&kamailio, &sets(&[(1, &["sip:10.0.0.20:5060"])]), WAIT).await;
    drop(feeder);

    let times = loads.times(Event::Loaded);
    // The start-up load, the first snapshot's, then the burst's.
    assert!(
        times.len() >= 3,
        "{} loads:\n{}",
        times.len(),
        kamailio.log()
    );
    let gaps: Vec<Duration> = times[1..].windows(2).map(|w| w[1] - w[0]).collect();
    // The log is read every few milliseconds: allow for that, not more.
    let slack = Duration::from_millis(60);
    assert!(
        gaps.iter().all(|gap| *gap + slack >= interval),
        "reloads closer than {interval:?}: {gaps:?}"
    );
    assert!(
        times.len() <= 2 + 20usize.div_ceil(2),
        "a burst of 20 edits over 0.6 s took {} loads: {gaps:?}",
        times.len()
    );
}
