//! dsfeed.so against file mode (`make bench`), in real Kamailios side by
//! side: the figures an operator asks for before putting dsfeed.so in the
//! call path, each a ratio against the alternative measured in the same run.
//!
//! Two Kamailios run at once, fed from the same truth by two release
//! `dsfeed`s:
//! - module: dsfeed.so fed over a unix socket (`min_swap_interval_ms` 500,
//!   the smallest allowed), the feeder serving the stream only;
//! - file: the feeder writes dispatcher.list and sends `dispatcher.reload`
//!   over binrpc (`--min-reload-interval 500ms`, dispatcher's
//!   `reload_delta` 0, so no reload is refused).
//!
//! Sections:
//! 1. lone change: a Kubernetes EndpointSlice update (fake API server) and
//!    a Consul registration change (fake agent), 200 each, and a sets-file
//!    rename (100), each timed in both lanes at once until the new
//!    destination is in Kamailio's current list (`dispatcher.set_state` on
//!    it succeeds; polled every millisecond);
//! 2. churn as in a rolling restart, with default settings on both sides
//!    (`min_swap_interval_ms` 1000; `--min-reload-interval` 1s and
//!    `reload_delta` 5 s): staleness against the truth, longest lag, time
//!    until the final state is live (Kamailio's set read every 100 ms);
//! 3. swap cost by size: the module's swap (its log) against a
//!    `dispatcher.reload` of the same list, each lane changed and timed
//!    alone;
//! 4. memory: feeder RSS, Kamailio's shm before and after every swap of the
//!    run, the feed process's private memory;
//! 5. the SIP path: OPTIONS and INVITE transactions through Kamailio to
//!    sipp backends, without dsfeed.so, with it idle and with it swapping
//!    once a second.
//!
//! `QUICK=1` runs fewer changes and shorter churn. `DSFEED_MODULE`
//! overrides the module (default: target/release/libdsfeed.so).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dsfeed_binrpc::dispatcher;
use dsfeed_binrpc::{Client, Value};
use dsfeed_tests::fake_consul::{FakeConsul, Instance};
use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::report::{self, Report, percentile};
use dsfeed_tests::sipp::{Backend, Load, Request};
use dsfeed_tests::{Kamailio, eventually, replace_file};
use fake_kube::{FakeKube, endpoint, endpoint_slice};

/// The module's smallest allowed swap interval, and file mode's smallest
/// reload interval: the lone-change lanes pace alike.
const MIN_INTERVAL_MS: u64 = 500;

/// Between a change being seen and the next change: past both intervals
/// (counted from the end of the load) and past the file-mode feeder's
/// read-back of the sets after its reload.
const SPACING: Duration = Duration::from_millis(MIN_INTERVAL_MS + 150);

/// How long one change may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(60);

/// Kamailio's shared memory: tm keeps each transaction of the SIP path runs
/// a few seconds after its answer, thousands of them.
const SHM_MB: u32 = 256;

/// How often the churn section reads Kamailio's set.
const SAMPLE: Duration = Duration::from_millis(100);

/// The release dsfeed.so (beside this bench in `target/release`), built by
/// `make bench` before this runs.
fn module_so() -> PathBuf {
    let so = std::env::var_os("DSFEED_MODULE").map_or_else(
        || {
            let exe = std::env::current_exe().expect("the bench's path");
            let profile = exe.ancestors().nth(2).expect("target/<profile>/deps/NAME");
            profile.join("libdsfeed.so")
        },
        PathBuf::from,
    );
    assert!(
        so.is_file(),
        "{} is missing: run `cargo build --release -p dsfeed-module` (make bench does), \
         or set DSFEED_MODULE",
        so.display()
    );
    so
}

/// The most sets a sets file of the bench has.
const MAX_SETS: usize = 100;

/// `size` destinations in `sets` sets (ids 1..): `size - 1` fixed ones and
/// `probe` in set 1. The other sets up to [`MAX_SETS`] are written empty:
/// dsfeed.so keeps a set the feed stops carrying (it may be someone
/// else's), so a set that goes away is emptied, not left out.
fn sets_yaml(size: usize, sets: usize, probe: &str) -> String {
    let mut yaml = String::with_capacity(size * 32);
    yaml.push_str("sets:\n");
    for set in 1..=sets {
        yaml.push_str(&format!("  {set}:\n"));
        if set == 1 {
            yaml.push_str(&format!("    - {probe}\n"));
        }
        for i in (0..size - 1).filter(|i| i % sets == set - 1) {
            yaml.push_str(&format!("    - 10.1.{}.{}:5060\n", i / 250, i % 250 + 1));
        }
    }
    for set in sets + 1..=MAX_SETS {
        yaml.push_str(&format!("  {set}: []\n"));
    }
    yaml
}

/// The address only round `round` has (rounds are numbered across the run).
fn probe_ip(round: usize) -> String {
    format!("10.200.{}.{}", round / 250 % 250, round % 250 + 1)
}

fn probe_uri(round: usize) -> String {
    format!("sip:{}:5060", probe_ip(round))
}

/// One Kamailio and the feeder that keeps it up to date.
struct Lane {
    name: &'static str,
    kamailio: Kamailio,
    /// The feeder's flags for this lane's delivery (the source comes on top).
    delivery: Args,
    feeder: Option<Feeder>,
    probe: Client,
    /// How many feeders this lane had, to name their logs.
    feeders: usize,
}

impl Lane {
    /// dsfeed.so swapping at most once per `interval_ms` (`None`: its
    /// default), fed on `socket`.
    async fn module(interval_ms: Option<u64>, socket: &Path) -> Lane {
        let mut builder = Kamailio::builder("")
            .shm_mb(SHM_MB)
            .loadmodule(module_so().display().to_string())
            .modparam("dsfeed", "feeder", format!("unix:{}", socket.display()))
            .modparam("dsfeed", "node_id", "bench")
            .modparam("dsfeed", "reconnect_min_ms", 100)
            .modparam("dsfeed", "reconnect_max_ms", 500);
        if let Some(ms) = interval_ms {
            builder = builder.modparam("dsfeed", "min_swap_interval_ms", ms as i64);
        }
        let kamailio = builder
            .start()
            .await
            .expect("Kamailio with dsfeed.so starts");
        let delivery = Args::new(&["--mode", "grpc"]).listen_unix(socket);
        Lane::new("module", kamailio, delivery)
    }

    /// File mode with `reload_delta` and the feeder's reload interval
    /// (`None`: its default).
    async fn file(reload_delta: u32, interval_ms: Option<u64>) -> Lane {
        let kamailio = Kamailio::builder("")
            .shm_mb(SHM_MB)
            .reload_delta(reload_delta)
            .start()
            .await
            .expect("Kamailio starts");
        let mut delivery = Args::new(&["--mode", "file"]).reloading(&kamailio);
        if let Some(ms) = interval_ms {
            delivery = delivery.arg("--min-reload-interval", format!("{ms}ms"));
        }
        Lane::new("file", kamailio, delivery)
    }

    fn new(name: &'static str, kamailio: Kamailio, delivery: Args) -> Lane {
        let probe = kamailio.client().with_timeout(Duration::from_secs(10));
        Lane {
            name,
            kamailio,
            delivery,
            feeder: None,
            probe,
            feeders: 0,
        }
    }

    /// Replaces this lane's feeder by one reading `source`.
    fn feed(&mut self, source: &Args) {
        self.feeder = None;
        self.feeders += 1;
        let log = self
            .kamailio
            .dir()
            .join(format!("dsfeed-{}-{}.log", self.name, self.feeders));
        let mut args = self.delivery.clone();
        for arg in source.as_ref() {
            args = args.args(&[arg.as_str()]);
        }
        self.feeder = Some(Feeder::start(args, &log));
    }

    fn feeder(&self) -> &Feeder {
        self.feeder.as_ref().expect("a feeder runs")
    }

    /// How long after `since` `uri` is in set 1 of Kamailio's current list.
    async fn until_has(&self, uri: &str, since: Instant) -> Duration {
        while !self.has(uri).await {
            assert!(
                since.elapsed() < PATIENCE,
                "{}: {uri} never reached Kamailio; its log is {}, the feeder's:\n{}",
                self.name,
                self.kamailio.log_path().display(),
                self.feeder().log()
            );
            assert!(self.kamailio.is_running(), "{}: Kamailio died", self.name);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        since.elapsed()
    }

    /// Whether `uri` is in set 1 of the dispatcher's current list. Marking
    /// it active changes nothing (it is active) and fails if it is absent.
    async fn has(&self, uri: &str) -> bool {
        let params = [
            Value::Str("a".into()),
            Value::Int(1),
            Value::Str(uri.into()),
        ];
        self.probe
            .call("dispatcher.set_state", &params)
            .await
            .is_ok()
    }

    /// Set 1 as Kamailio has it now.
    async fn set_one(&self) -> BTreeSet<String> {
        dispatcher::list(&self.probe)
            .await
            .expect("dispatcher.list answers")
            .remove(&1)
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.uri)
            .collect()
    }

    /// The module's swap count and applied version, from `dsfeed.status`.
    async fn swaps(&self) -> (i32, String) {
        let reply = self
            .probe
            .call("dsfeed.status", &[])
            .await
            .expect("dsfeed.status answers");
        let field = |name| reply[0].get(name).unwrap_or_else(|| panic!("no {name}"));
        (
            field("swaps").as_int().expect("an int"),
            field("applied_version")
                .as_str()
                .expect("a string")
                .to_owned(),
        )
    }

    /// The version the module applied after swap `before` (read, not
    /// timed: the swap's own time comes from Kamailio's log).
    async fn applied_after(&self, before: i32) -> String {
        let what = format!("a swap after swap {before} in dsfeed.status");
        eventually(&what, PATIENCE, || async {
            let (swaps, version) = self.swaps().await;
            (swaps > before).then_some(version)
        })
        .await
    }

    /// How long Kamailio takes to reload its list file, timed around the
    /// `dispatcher.reload` RPC: file mode's equivalent of a module swap.
    async fn reload_time(&self) -> Duration {
        let started = Instant::now();
        self.probe
            .call("dispatcher.reload", &[])
            .await
            .expect("dispatcher.reload succeeds");
        started.elapsed()
    }

    /// How long the module's swap of `version` took, from its log line
    /// `applied version "V": N sets, M destinations in 1.2ms (swap K)`.
    fn swap_time(&self, version: &str) -> Duration {
        let log = self.kamailio.log();
        let marker = format!("applied version {version:?}: ");
        log.lines()
            .rev()
            .find(|l| l.contains(&marker))
            .and_then(|line| line.split(" destinations in ").nth(1))
            .and_then(|after| parse_duration(after.split_whitespace().next()?))
            .unwrap_or_else(|| panic!("no swap of {version} in the module's log"))
    }

    /// Kamailio's shared memory in use (`core.shmmem`'s `used`), in bytes.
    async fn shm_used(&self) -> f64 {
        let reply = self
            .probe
            .call("core.shmmem", &[])
            .await
            .expect("core.shmmem answers");
        f64::from(
            reply[0]
                .get("used")
                .and_then(Value::as_int)
                .expect("core.shmmem has used"),
        )
    }

    /// The pid of the first Kamailio process whose description contains
    /// `what` (`core.psx`).
    async fn process(&self, what: &str) -> u32 {
        let processes = self.probe.call("core.psx", &[]).await.expect("core.psx");
        processes
            .iter()
            .find(|p| {
                p.get("DSC")
                    .and_then(Value::as_str)
                    .is_some_and(|d| d.contains(what))
            })
            .and_then(|p| p.get("PID").and_then(Value::as_int))
            .unwrap_or_else(|| panic!("no {what} process in core.psx")) as u32
    }
}

/// Private memory (clean and dirty) of process `pid`, in KiB.
fn private_kib(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("Private_"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum()
}

/// Parses Rust's `Debug` of a `Duration` (`850ns`, `12.3µs`, `4.5ms`, `1.2s`).
fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_alphabetic() || c == 'µ')?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ns" => value / 1e9,
        "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// Where changes come from in a lone-change run.
enum Truth {
    SetsFile(PathBuf),
    Kubernetes(FakeKube),
    Consul(FakeConsul),
}

impl Truth {
    /// Makes round `round`'s probe destination (with 9 fixed ones) the
    /// truth of set 1.
    fn change(&self, round: usize) {
        match self {
            Truth::SetsFile(path) => replace_file(path, &sets_yaml(10, 1, &probe_uri(round))),
            Truth::Kubernetes(kube) => {
                let endpoints = (1..10)
                    .map(|i| format!("10.1.0.{i}"))
                    .chain([probe_ip(round)])
                    .map(|ip| endpoint(&ip, true, true, false))
                    .collect();
                kube.apply(endpoint_slice(
                    "voice",
                    "asterisk",
                    "asterisk-a",
                    "IPv4",
                    5060,
                    endpoints,
                ));
            }
            Truth::Consul(consul) => {
                consul.register(Instance::new("pbx", "probe", &probe_ip(round), 5060));
            }
        }
    }

    /// The feeder's flags for this source.
    fn args(&self, dir: &Path) -> Args {
        match self {
            Truth::SetsFile(path) => Args::default().sets_file(path),
            Truth::Kubernetes(kube) => {
                let kubeconfig = dir.join("kubeconfig");
                kube.write_kubeconfig(&kubeconfig);
                Args::new(&["--set", "voice:asterisk=1:sip"]).arg("--kubecfg", kubeconfig.display())
            }
            Truth::Consul(consul) => consul.feeder_args(&["pbx=1"]),
        }
    }

    /// The shortest time from one change to the next. Consul's source
    /// starts a query at most once a second (consul-template's habit), so
    /// a change sooner after the previous one waits for the next query in
    /// both lanes alike; spaced wider, each change answers a query that is
    /// already waiting.
    fn period(&self) -> Duration {
        match self {
            Truth::Consul(_) => dsfeed::sources::consul::MIN_INTERVAL + Duration::from_millis(150),
            Truth::SetsFile(_) | Truth::Kubernetes(_) => Duration::ZERO,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Truth::SetsFile(_) => "sets file (rename)",
            Truth::Kubernetes(_) => "Kubernetes EndpointSlice",
            Truth::Consul(_) => "Consul health",
        }
    }
}

/// `changes` lone changes of `truth`, each timed in both lanes at once,
/// after one unmeasured change that brings both lanes onto this source;
/// the times, sorted, module lane first.
async fn lone_changes(
    lanes: &mut [Lane; 2],
    truth: &Truth,
    dir: &Path,
    changes: usize,
    round: &mut usize,
) -> [Vec<Duration>; 2] {
    for lane in lanes.iter_mut() {
        lane.feed(&truth.args(dir));
    }
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..=changes {
        *round += 1;
        // Before the change: Kamailio may have it before this task runs
        // again.
        let changed = Instant::now();
        truth.change(*round);
        let uri = probe_uri(*round);
        let (m, f) = tokio::join!(
            lanes[0].until_has(&uri, changed),
            lanes[1].until_has(&uri, changed)
        );
        tokio::time::sleep(SPACING).await;
        tokio::time::sleep_until((changed + truth.period()).into()).await;
        if i > 0 {
            times[0].push(m);
            times[1].push(f);
        }
    }
    for t in &mut times {
        t.sort();
    }
    times
}

fn report_lone(report: &mut Report, truth: &Truth, times: &[Vec<Duration>; 2]) {
    for p in [50.0, 99.0] {
        report.versus_ms(
            "lone change -> Kamailio's memory",
            &format!("{}, p{p:.0} of {}", truth.name(), times[0].len()),
            percentile(&times[0], p),
            "file + dispatcher.reload",
            percentile(&times[1], p),
        );
    }
}

/// One churn run's figures for one lane.
#[derive(Debug, Default)]
struct Churned {
    /// The integral of destinations differing from the truth, in
    /// destination-seconds.
    staleness: f64,
    /// The longest time from a destination joining the truth to its being
    /// in Kamailio.
    longest_lag: Duration,
    /// From the last change to the final state being live.
    final_live: Duration,
}

/// `backends` destinations in set 1, one replaced every `step` for
/// `duration`, through the sets file; both lanes sampled every [`SAMPLE`].
async fn churn(
    lanes: &mut [Lane; 2],
    dir: &Path,
    backends: usize,
    step: Duration,
    duration: Duration,
) -> [Churned; 2] {
    let path = dir.join(format!("churn-{backends}-{}.yaml", step.as_millis()));
    let backend = |i: usize| format!("sip:10.50.{}.{}:5060", i / 250, i % 250 + 1);
    let mut truth: Vec<String> = (0..backends).map(backend).collect();
    let yaml = |truth: &[String]| {
        let mut text = String::from("sets:\n  1:\n");
        for uri in truth {
            text.push_str(&format!("    - {uri}\n"));
        }
        text
    };
    replace_file(&path, &yaml(&truth));
    for lane in lanes.iter_mut() {
        lane.feed(&Args::default().sets_file(&path));
    }
    let initial: BTreeSet<String> = truth.iter().cloned().collect();
    for lane in lanes.iter() {
        let since = Instant::now();
        while lane.set_one().await != initial {
            assert!(since.elapsed() < PATIENCE, "{} never synced", lane.name);
            tokio::time::sleep(SAMPLE).await;
        }
    }
    // Past both lanes' intervals, so the first change is a lone one.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let start = Instant::now();
    let steps = (duration.as_millis() / step.as_millis()) as usize;
    // (when, the truth from then on, the destination that joined).
    let mut history: Vec<(Instant, BTreeSet<String>, String)> = Vec::with_capacity(steps);
    let mut samples: [Vec<(Instant, BTreeSet<String>)>; 2] = [Vec::new(), Vec::new()];
    let mut next_step = start;
    let mut next_sample = start;
    let mut k = 0;
    let mut final_at: [Option<Instant>; 2] = [None, None];
    loop {
        let now = Instant::now();
        if k < steps && now >= next_step {
            let new = backend(backends + k);
            truth[k % backends] = new.clone();
            let text = yaml(&truth);
            history.push((Instant::now(), truth.iter().cloned().collect(), new));
            replace_file(&path, &text);
            k += 1;
            next_step += step;
        }
        if now >= next_sample {
            let (m, f) = tokio::join!(lanes[0].set_one(), lanes[1].set_one());
            let at = Instant::now();
            for (i, seen) in [m, f].into_iter().enumerate() {
                if k == steps
                    && final_at[i].is_none()
                    && history.last().is_some_and(|h| h.1 == seen)
                {
                    final_at[i] = Some(at);
                }
                samples[i].push((at, seen));
            }
            next_sample += SAMPLE;
            if k == steps && final_at.iter().all(Option::is_some) {
                break;
            }
            assert!(
                start.elapsed() < duration + PATIENCE,
                "churn: a lane never reached the final state"
            );
        }
        let wake = if k < steps {
            next_step.min(next_sample)
        } else {
            next_sample
        };
        tokio::time::sleep_until(wake.into()).await;
    }
    let last_change = history.last().map_or(start, |h| h.0);
    let mut out = [Churned::default(), Churned::default()];
    for (i, lane_samples) in samples.iter().enumerate() {
        let mut previous = start;
        for (at, seen) in lane_samples {
            let truth_then = history
                .iter()
                .rev()
                .find(|h| h.0 <= *at)
                .map_or(&initial, |h| &h.1);
            let differing = seen.symmetric_difference(truth_then).count();
            out[i].staleness += differing as f64 * (*at - previous).as_secs_f64();
            previous = *at;
        }
        for (when, _, joined) in &history {
            if let Some((at, _)) = lane_samples
                .iter()
                .find(|(at, seen)| at >= when && seen.contains(joined))
            {
                out[i].longest_lag = out[i].longest_lag.max(*at - *when);
            }
        }
        out[i].final_live = final_at[i].map_or(Duration::ZERO, |at| at - last_change);
    }
    out
}

/// Sets of `size` destinations in `sets` sets: each lane's change timed,
/// then the module's swap (from its log) and a `dispatcher.reload` of the
/// file lane's same list.
async fn sizes(
    report: &mut Report,
    lanes: &mut [Lane; 2],
    dir: &Path,
    shapes: &[(usize, usize)],
    changes: usize,
    round: &mut usize,
) {
    // A file per lane, changed one lane at a time: a swap and a reload of
    // thousands of destinations each take a core, and are timed alone.
    let paths = [dir.join("sizes-module.yaml"), dir.join("sizes-file.yaml")];
    for (lane, path) in lanes.iter_mut().zip(&paths) {
        replace_file(path, &sets_yaml(10, 1, &probe_uri(*round)));
        lane.feed(&Args::default().sets_file(path));
    }
    // The feeders' RSS while they hold 10,000 destinations.
    let mut rss = None;
    for &(size, sets) in shapes {
        let (mut swaps, mut reloads) = (Vec::new(), Vec::new());
        for i in 0..=changes {
            *round += 1;
            let (before, _) = lanes[0].swaps().await;
            let yaml = sets_yaml(size, sets, &probe_uri(*round));
            let uri = probe_uri(*round);
            for (lane, path) in lanes.iter().zip(&paths) {
                let changed = Instant::now();
                replace_file(path, &yaml);
                lane.until_has(&uri, changed).await;
            }
            let version = lanes[0].applied_after(before).await;
            tokio::time::sleep(SPACING).await;
            if i == 0 {
                continue;
            }
            swaps.push(lanes[0].swap_time(&version));
            reloads.push(lanes[1].reload_time().await);
            tokio::time::sleep(SPACING).await;
        }
        swaps.sort();
        reloads.sort();
        let shape = if sets == 1 {
            format!("{size} in one set")
        } else {
            format!("{size} in {sets} sets")
        };
        report.versus_ms(
            "swap cost by size (equal priority)",
            &format!("{shape}, p50 of {changes}"),
            percentile(&swaps, 50.0),
            "dispatcher.reload of the same list",
            percentile(&reloads, 50.0),
        );
        if size == 10_000 && sets == 1 {
            rss = Some((lanes[0].feeder().rss_kib(), lanes[1].feeder().rss_kib()));
        }
    }
    if let Some((module, file)) = rss {
        report.versus(
            "memory",
            "feeder RSS, 10,000 destinations",
            "MiB",
            module as f64 / 1024.0,
            "file-mode feeder",
            file as f64 / 1024.0,
        );
    }
}

/// `total` `request`s through `kamailio` (OPTIONS to set 1's backend,
/// INVITEs to set 3's), [`CONCURRENCY`] at a time:
/// the requests answered per second, and the p99 response time (sipp
/// measures in whole milliseconds).
async fn sip_rate(kamailio: &Kamailio, request: Request, total: u64) -> (f64, f64) {
    // The previous run's transactions hold shared memory until tm's wait
    // timer frees them: start from none.
    let client = kamailio.client();
    let since = Instant::now();
    loop {
        let stats = client
            .call("tm.stats", &[])
            .await
            .expect("tm.stats answers");
        if stats[0].get("current").and_then(Value::as_int) == Some(0) {
            break;
        }
        assert!(
            since.elapsed() < PATIENCE,
            "tm keeps transactions: {stats:?}"
        );
        tokio::time::sleep(SAMPLE).await;
    }
    let started = Instant::now();
    let set = match request {
        Request::Options => 1,
        Request::Invite => 3,
    };
    let load = Load::closed_loop(
        request,
        &kamailio.sip_addr().to_string(),
        set,
        CONCURRENCY,
        total,
        kamailio.dir(),
    );
    let stats = load.finish(PATIENCE * 5).await;
    let rate = stats.successful as f64 / started.elapsed().as_secs_f64();
    let n = stats.response_ms.len();
    let rank = (0.99 * n as f64).ceil() as usize;
    let p99 = stats.response_ms.get(rank.clamp(1, n.max(1)) - 1).copied();
    (rate, p99.unwrap_or(0.0))
}

/// Requests in flight in the SIP path runs: enough to keep Kamailio's two
/// workers busy.
const CONCURRENCY: u64 = 20;

async fn sip_path(report: &mut Report, lanes: &mut [Lane; 2], dir: &Path, total: u64, reps: usize) {
    let options = Backend::start();
    let invites = Backend::answering(Request::Invite);
    let path = dir.join("sip.yaml");
    let (set_one, set_three) = (options.uri(), invites.uri());
    let yaml = move |round: usize| {
        format!(
            "sets:\n  1:\n    - {set_one}\n  2:\n    - {}\n  3:\n    - {set_three}\n",
            probe_uri(round)
        )
    };
    // The file lane follows a copy that never changes: while the module
    // swaps, nothing else on the machine works for the feed.
    let still = dir.join("sip-file.yaml");
    replace_file(&path, &yaml(0));
    replace_file(&still, &yaml(0));
    for (lane, path) in lanes.iter_mut().zip([&path, &still]) {
        lane.feed(&Args::default().sets_file(path));
    }
    for lane in lanes.iter() {
        let since = Instant::now();
        while !lane.set_one().await.contains(&options.uri()) {
            assert!(since.elapsed() < PATIENCE, "{} never synced", lane.name);
            tokio::time::sleep(SAMPLE).await;
        }
    }
    // Set 2 changes every second while `swapping` is on: the module swaps
    // under the load (set 1, the one called, stays).
    let (swapping, mut swap) = tokio::sync::watch::channel(false);
    let changer = {
        let path = path.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for round in 1.. {
                tick.tick().await;
                if swap.wait_for(|on| *on).await.is_err() {
                    break;
                }
                replace_file(&path, &yaml(round));
            }
        })
    };
    // The three conditions in turn, `reps` times: the machine's other load
    // comes and goes, and the median of each is compared.
    let mut swaps = 0;
    let requests = [Request::Options, Request::Invite];
    let mut runs: [[Vec<(f64, f64)>; 3]; 2] = Default::default();
    for _ in 0..reps {
        for (request, runs) in requests.iter().zip(&mut runs) {
            runs[0].push(sip_rate(&lanes[1].kamailio, *request, total).await);
            runs[1].push(sip_rate(&lanes[0].kamailio, *request, total).await);
            swapping.send_replace(true);
            let (at_start, _) = lanes[0].swaps().await;
            runs[2].push(sip_rate(&lanes[0].kamailio, *request, total).await);
            swapping.send_replace(false);
            swaps += lanes[0].swaps().await.0 - at_start;
        }
    }
    drop(swapping);
    changer.await.unwrap();
    let median = |runs: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let against = "no dsfeed.so (same Kamailio setup)";
    let section =
        format!("SIP path: {CONCURRENCY} in flight, median of {reps} ({swaps} swaps in all)");
    for (request, runs) in requests.iter().zip(runs) {
        let kind = match request {
            Request::Options => "OPTIONS",
            Request::Invite => "INVITE",
        };
        let [without, idle, busy] = runs.map(|r| (median(&r, |x| x.0), median(&r, |x| x.1)));
        for (name, run) in [("dsfeed.so idle", idle), ("dsfeed.so swapping 1/s", busy)] {
            let mean = |rate: f64| CONCURRENCY as f64 / rate * 1e3;
            let figure = |what: &str| format!("{kind}, {name}: {what}");
            report.versus(
                &section,
                &figure("transactions/s"),
                "/s",
                run.0,
                against,
                without.0,
            );
            report.versus(
                &section,
                &figure("mean response (in flight / rate)"),
                "ms",
                mean(run.0),
                against,
                mean(without.0),
            );
            report.versus(
                &section,
                &figure("p99 response"),
                "ms",
                run.1,
                against,
                without.1,
            );
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = report::quick();
    let changes = report::count("DSFEED_BENCH_CHANGES", 200, 20);
    let size_changes = report::count("DSFEED_BENCH_SIZE_CHANGES", 5, 1);
    let sip_requests = report::count("DSFEED_BENCH_SIP_REQUESTS", 10_000, 2_000) as u64;
    let dir = tempfile::Builder::new()
        .prefix("dsfeed-bench-")
        .tempdir()
        .unwrap();
    let started = Instant::now();
    let mut report = Report::new("module");
    let mut lanes = [
        Lane::module(Some(MIN_INTERVAL_MS), &dir.path().join("feed.sock")).await,
        Lane::file(0, Some(MIN_INTERVAL_MS)).await,
    ];
    let version = lanes[0]
        .probe
        .call("core.version", &[])
        .await
        .expect("core.version answers");
    let version = version
        .first()
        .and_then(Value::as_str)
        .unwrap_or("?")
        .trim()
        .to_owned();
    println!(
        "dsfeed.so vs file mode in {version}; {}",
        module_so().display()
    );
    report.context("kamailio", &version);
    report.context("quick", quick);

    // Both lanes on 10 destinations: the memory baseline.
    let mut round = 0;
    let sets_file = dir.path().join("sets.yaml");
    replace_file(&sets_file, &sets_yaml(10, 1, &probe_uri(round)));
    let sets_file = Truth::SetsFile(sets_file);
    lone_changes(&mut lanes, &sets_file, dir.path(), 1, &mut round).await;
    let shm_before = [lanes[0].shm_used().await, lanes[1].shm_used().await];
    let (swaps_before, _) = lanes[0].swaps().await;

    // Lone changes from each source.
    let kube = Truth::Kubernetes(FakeKube::start().await);
    kube.change(round);
    let consul = Truth::Consul(FakeConsul::start().await);
    consul.change(round);
    // The orchestrators' paths take `changes` each; the sets file, the
    // local case, half as many.
    for (truth, n) in [
        (&sets_file, changes / 2),
        (&kube, changes),
        (&consul, changes),
    ] {
        let times = lone_changes(&mut lanes, truth, dir.path(), n, &mut round).await;
        report_lone(&mut report, truth, &times);
        println!("{}: done at {:.0?}", truth.name(), started.elapsed());
    }

    // Swap cost by size.
    let shapes: &[(usize, usize)] = &[(10, 1), (1_000, 1), (10_000, 1), (10_000, 100)];
    sizes(
        &mut report,
        &mut lanes,
        dir.path(),
        shapes,
        size_changes,
        &mut round,
    )
    .await;
    println!("sizes: done at {:.0?}", started.elapsed());

    // Memory after every swap so far, back on 10 destinations.
    lone_changes(&mut lanes, &sets_file, dir.path(), 1, &mut round).await;
    report_memory(&mut report, &lanes, shm_before, swaps_before).await;

    let reps = if quick { 1 } else { 3 };
    sip_path(&mut report, &mut lanes, dir.path(), sip_requests, reps).await;
    println!("SIP path: done at {:.0?}", started.elapsed());
    drop(lanes);

    // Churn, with default settings on both sides.
    let mut lanes = [
        Lane::module(None, &dir.path().join("churn.sock")).await,
        Lane::file(5, None).await,
    ];
    let runs: &[(usize, u64, u64)] = if quick {
        &[(80, 250, 10)]
    } else {
        &[(80, 250, 20), (200, 250, 20), (80, 50, 20)]
    };
    for &(backends, step_ms, seconds) in runs {
        let step = Duration::from_millis(step_ms);
        let duration = Duration::from_secs(seconds);
        let [m, f] = churn(&mut lanes, dir.path(), backends, step, duration).await;
        let section =
            format!("churn: {backends} backends, one replaced every {step_ms} ms for {seconds} s");
        let against = "file + reload, reload_delta 5 s";
        report.versus(
            &section,
            "staleness",
            "dest*s",
            m.staleness,
            against,
            f.staleness,
        );
        report.versus_ms(
            &section,
            "longest lag",
            m.longest_lag,
            against,
            f.longest_lag,
        );
        let last = "last change -> final state live";
        report.versus_ms(&section, last, m.final_live, against, f.final_live);
        println!("{section}: done at {:.0?}", started.elapsed());
    }
    report.context("took", format!("{:.0?}", started.elapsed()));
    report.finish();
}

/// Kamailio's shared memory now against `shm_before` (each lane on 10
/// destinations both times), the feed process's private memory, and the
/// feeders' RSS.
async fn report_memory(report: &mut Report, lanes: &[Lane; 2], shm_before: [f64; 2], swaps: i32) {
    let (swaps_after, _) = lanes[0].swaps().await;
    let shm_after = [lanes[0].shm_used().await, lanes[1].shm_used().await];
    let kib = |bytes: f64| bytes / 1024.0;
    let swaps = swaps_after - swaps;
    report.versus(
        "memory",
        &format!("Kamailio shm growth over {swaps} swaps"),
        "KiB",
        kib(shm_after[0] - shm_before[0]),
        "file mode, the same changes",
        kib(shm_after[1] - shm_before[1]),
    );
    report.versus(
        "memory",
        "Kamailio shm used, 10 destinations",
        "KiB",
        kib(shm_after[0]),
        "file mode",
        kib(shm_after[1]),
    );
    let feed = lanes[0].process("dsfeed feed").await;
    let worker = lanes[0].process("receiver").await;
    report.versus(
        "memory",
        "dsfeed.so's feed process, private memory",
        "KiB",
        private_kib(feed),
        "a SIP worker of the same Kamailio",
        private_kib(worker),
    );
    report.versus(
        "memory",
        "feeder RSS, 10 destinations",
        "MiB",
        lanes[0].feeder().rss_kib() as f64 / 1024.0,
        "file-mode feeder",
        lanes[1].feeder().rss_kib() as f64 / 1024.0,
    );
}
