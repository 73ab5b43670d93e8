//! The rules that keep Kamailio alive, counted at Kamailio's side (its own
//! log, see `dsfeed_tests::loads`):
//! - one writer: a Kamailio running dsfeed.so gets no `dispatcher.reload`
//!   from the feeder, whatever the start order and the `--mode`;
//! - paced: reloads of a stock Kamailio are at least
//!   `--min-reload-interval` apart even with `reload_delta=0`, and a burst
//!   ends on the newest sets.

use std::path::PathBuf;
use std::time::Duration;

use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::free_addr;
use dsfeed_tests::http::get as http_get;
use dsfeed_tests::loads::{Event, LoadLog};
use dsfeed_tests::module::{WAIT, fed_by};
use dsfeed_tests::{Kamailio, KamailioBuilder, eventually, replace_file, sets, until_loaded};

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

    /// Kamailio's ctl socket, as `--rpc` and `ctl`'s `binrpc` name it.
    fn rpc(&self) -> String {
        format!("unix:{}", self.ctl().display())
    }

    /// A feeder that only serves the feed the module reads.
    fn serving_feeder(&self) -> Feeder {
        let args = Args::default().sets_file(&self.sets_file());
        let args = args.args(&["--mode", "grpc"]).listen_unix(&self.socket());
        Feeder::start(args, &self.path("serving.log"))
    }

    /// The feeder container's command, the README's sidecar command
    /// without its `--listen`: the sets file, the shared list file and
    /// Kamailio's ctl socket.
    fn feeder_args(&self) -> Args {
        let args = Args::default().sets_file(&self.sets_file());
        args.arg("-o", self.list().display())
            .arg("--rpc", self.rpc())
    }

    /// The feeder container: the README's sidecar command.
    fn feeder(&self) -> Feeder {
        let args = self.feeder_args().listen_unix(&self.socket());
        Feeder::start(args, &self.path("dsfeed.log"))
    }

    /// The Kamailio container with dsfeed.so, reading the shared list file
    /// and answering on the shared ctl socket, with the dispatcher's debug
    /// log on so that every load shows.
    fn kamailio(&self) -> KamailioBuilder {
        fed_by("", format!("unix:{}", self.socket().display()))
            .debug(3)
            .modparam("dispatcher", "list_file", self.list().as_path())
            .modparam("ctl", "binrpc", self.rpc())
    }
}

/// A pod whose Kamailio runs dsfeed.so fed by a serving feeder, with set 1
/// loaded, for a second feeder to be started next to them.
struct Served {
    pod: Pod,
    serving: Feeder,
    kamailio: Kamailio,
    loads: LoadLog,
    /// The list file once set 1 was loaded.
    list: Vec<u8>,
}

impl Served {
    async fn start() -> Served {
        let pod = Pod::new();
        replace_file(&pod.sets_file(), &set_yaml("sip:10.0.0.1:5060"));
        let serving = pod.serving_feeder();
        std::fs::write(pod.list(), "").unwrap();
        let kamailio = pod.kamailio().start().await.unwrap();
        let loads = LoadLog::follow(kamailio.log_path());
        until_loaded(&kamailio, &sets(&[(1, &["sip:10.0.0.1:5060"])]), WAIT).await;
        let list = std::fs::read(pod.list()).unwrap();
        Served {
            pod,
            serving,
            kamailio,
            loads,
            list,
        }
    }

    /// Stops `other` and the serving feeder: everything they would ever
    /// send has been sent then. Asserts that the list file is untouched and
    /// that only the module loaded lists.
    fn assert_untouched_after(self, other: Feeder, context: &str) {
        drop(other);
        drop(self.serving);
        assert_eq!(
            std::fs::read(self.pod.list()).unwrap(),
            self.list,
            "the file is untouched"
        );
        assert_only_the_module_loaded(&self.loads, &self.kamailio, context);
    }
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
        feeder = Some(pod.feeder());
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
    let feeder = feeder.unwrap_or_else(|| pod.feeder());
    let first = sets(&[(1, &["sip:10.0.0.1:5060"])]);
    until_loaded(&kamailio, &first, WAIT).await;
    replace_file(&pod.sets_file(), &set_yaml("sip:10.0.0.2:5060"));
    let second = sets(&[(1, &["sip:10.0.0.2:5060"])]);
    until_loaded(&kamailio, &second, WAIT).await;
    feeder.wait_logged("runs dsfeed.so").await;
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
    // Another feeder serves the module; this one is told to use the file.
    let served = Served::start().await;
    let pod = &served.pod;
    let http = free_addr();
    let args = pod.feeder_args().args(&["--mode", "file"]).http(http);
    let file_feeder = Feeder::start(args, &pod.path("file.log"));
    let rpc = pod.rpc();
    let metric = format!("dsfeed_reloads_withheld_total{{rpc=\"{rpc}\",reason=\"dsfeed_module\"}}");
    eventually("the refusal to show in /metrics", WAIT, || async {
        let (_, body) = http_get(http, "/metrics").await.ok()?;
        body.lines()
            .any(|l| l.starts_with(&metric) && !l.ends_with(" 0"))
            .then_some(())
    })
    .await;
    file_feeder.assert_logged("runs dsfeed.so");
    file_feeder.assert_logged("only writer");
    served.assert_untouched_after(file_feeder, "--mode file");
}

#[tokio::test]
async fn mode_auto_without_listen_steps_aside_for_a_module_kamailio() {
    let served = Served::start().await;
    let pod = &served.pod;
    // A second feeder in auto mode with no feed of its own, as a file-mode
    // deployment left running next to the module would be.
    let auto = Feeder::start(pod.feeder_args(), &pod.path("dsfeed.log"));
    replace_file(&pod.sets_file(), &set_yaml("sip:10.0.0.2:5060"));
    let second = sets(&[(1, &["sip:10.0.0.2:5060"])]);
    until_loaded(&served.kamailio, &second, WAIT).await;
    auto.wait_logged("runs dsfeed.so").await;
    served.assert_untouched_after(auto, "--mode auto without --listen");
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
    let interval = Duration::from_secs(1);
    let args = Args::default().sets_file(&sets_file).reloading(&kamailio);
    let feeder = Feeder::start(
        args.args(&["--mode", "file"]),
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
