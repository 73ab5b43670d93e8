//! Module mode against file mode (`make bench`): how long a sets-file change
//! takes to reach a real Kamailio 5.6.3's in-memory sets.
//!
//! Two Kamailios run side by side, each with its own release `dsfeed`:
//! - module: dsfeed.so (release) fed over a unix socket, the feeder serving
//!   the stream only; `min_swap_interval_ms` 500, the smallest allowed;
//! - file: the feeder writes dispatcher.list and sends `dispatcher.reload`
//!   over binrpc; dispatcher's `reload_delta` is 0, so no reload is refused.
//!
//! Each change replaces one destination of set 1 in the sets file; the time
//! runs from the file's rename until `dispatcher.set_state` finds the new
//! destination in the dispatcher's current list (polled every millisecond
//! over binrpc; the same probe for both modes, and cheap at any set size).
//! Changes alternate between the two modes and are spaced well past the
//! module's swap interval, so every change is a lone one that applies at
//! once. Both figures include the sets-file source's 50 ms settle delay.
//!
//! `DSFEED_BENCH_CHANGES` (default 200) changes per mode at 10 destinations;
//! `DSFEED_BENCH_SIZE_CHANGES` (default 10) per mode at 1,000 and 10,000.
//! `DSFEED_MODULE` overrides the module (default: target/release/libdsfeed.so).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dsfeed_binrpc::{Client, Value};
use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::{Kamailio, replace_file};

/// Sizes of set 1 for the swap table; the first is also the latency run's.
const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// The module's smallest allowed swap interval.
const MIN_SWAP_INTERVAL_MS: i64 = 500;

/// Between a change being seen and the next change: past the swap interval
/// (counted from the end of the module's load) and past the file-mode
/// feeder's read-back of the sets after its reload.
const SPACING: Duration = Duration::from_millis(MIN_SWAP_INTERVAL_MS as u64 + 150);

/// How many changes per size also time a bare `dispatcher.reload` of the
/// file lane's unchanged list.
const RELOADS_TIMED: usize = 10;

/// How long one change may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(60);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `target/<profile>`, from the bench binary in `target/<profile>/deps`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the bench's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("benches run from target/<profile>/deps")
        .to_owned()
}

/// The release dsfeed.so, built by `make bench` before this runs.
fn module_so() -> PathBuf {
    let so = std::env::var_os("DSFEED_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir().join("libdsfeed.so"));
    assert!(
        so.is_file(),
        "{} is missing: run `cargo build --release -p dsfeed-module` (make bench does), \
         or set DSFEED_MODULE",
        so.display()
    );
    so
}

/// Set 1: `size - 1` fixed destinations and one that is new in `round`.
fn sets_yaml(size: usize, round: usize) -> String {
    let mut yaml = String::with_capacity(size * 32);
    yaml.push_str("sets:\n  1:\n");
    for i in 0..size - 1 {
        yaml.push_str(&format!("    - 10.1.{}.{}:5060\n", i / 250, i % 250 + 1));
    }
    yaml.push_str(&format!("    - {}\n", probe_target(round)));
    yaml
}

/// The destination only `round` has (rounds are numbered across sizes).
fn probe_target(round: usize) -> String {
    format!("10.200.{}.{}:5060", round / 250, round % 250 + 1)
}

fn probe_uri(round: usize) -> String {
    format!("sip:{}", probe_target(round))
}

/// One Kamailio and the feeder that keeps it up to date.
struct Lane {
    name: &'static str,
    kamailio: Kamailio,
    feeder: Feeder,
    sets_file: PathBuf,
    /// Holds the sets file alone: the feeder watches its directory.
    _sets_dir: tempfile::TempDir,
    probe: Client,
}

impl Lane {
    async fn module(dir: &Path, size: usize) -> Lane {
        let socket = dir.join("feed.sock");
        let kamailio = Kamailio::builder("")
            .loadmodule(module_so().display().to_string())
            .modparam("dsfeed", "feeder", format!("unix:{}", socket.display()))
            .modparam("dsfeed", "node_id", "bench")
            .modparam("dsfeed", "min_swap_interval_ms", MIN_SWAP_INTERVAL_MS)
            .modparam("dsfeed", "reconnect_min_ms", 100)
            .modparam("dsfeed", "reconnect_max_ms", 1000)
            .start()
            .await
            .expect("Kamailio with dsfeed.so starts");
        let args = Args::new(&["--mode", "grpc"]).listen_unix(&socket);
        Lane::new("module", kamailio, args, dir, size)
    }

    async fn file(dir: &Path, size: usize) -> Lane {
        let kamailio = Kamailio::builder("")
            .reload_delta(0)
            .start()
            .await
            .expect("Kamailio starts");
        let args = Args::new(&["--mode", "file"]).reloading(&kamailio);
        Lane::new("file", kamailio, args, dir, size)
    }

    /// The lane of `kamailio`, with a feeder started with `args` on a sets
    /// file of `size` destinations of its own (logging in `dir`).
    fn new(name: &'static str, kamailio: Kamailio, args: Args, dir: &Path, size: usize) -> Lane {
        let (sets_dir, sets_file) = sets_file(size);
        let log = dir.join(format!("dsfeed-{name}.log"));
        let feeder = Feeder::start(args.sets_file(&sets_file), &log);
        let probe = kamailio.client().with_timeout(Duration::from_secs(10));
        Lane {
            name,
            kamailio,
            feeder,
            sets_file,
            _sets_dir: sets_dir,
            probe,
        }
    }

    /// Writes round `round`'s sets and returns how long until Kamailio has
    /// them in memory.
    async fn change(&self, size: usize, round: usize) -> Duration {
        replace_file(&self.sets_file, &sets_yaml(size, round));
        let changed = Instant::now();
        let uri = probe_uri(round);
        while !self.has(&uri).await {
            assert!(
                changed.elapsed() < PATIENCE,
                "{}: {uri} never reached Kamailio; its log is {}",
                self.name,
                self.kamailio.log_path().display()
            );
            assert!(self.kamailio.is_running(), "{}: Kamailio died", self.name);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        changed.elapsed()
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

    /// The version the module applied in the swap after swap `before`: its
    /// status is published just after the new list becomes current.
    async fn applied_after(&self, before: i32) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (swaps, version) = self.swaps().await;
            if swaps > before {
                assert_eq!(swaps, before + 1, "one swap per change");
                return version;
            }
            assert!(
                Instant::now() < deadline,
                "dsfeed.status stays at swap {before}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
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
    fn swap_time(&self, version: &str) -> Option<Duration> {
        let log = self.kamailio.log();
        let marker = format!("applied version {version:?}: ");
        let line = log.lines().rev().find(|l| l.contains(&marker))?;
        let after = line.split(" destinations in ").nth(1)?;
        parse_duration(after.split_whitespace().next()?)
    }
}

fn sets_file(size: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("dsfeed-bench-sets-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("sets.yaml");
    std::fs::write(&path, sets_yaml(size, 0)).unwrap();
    (dir, path)
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn ratio(module: Duration, file: Duration) -> String {
    format!("{:.2}", module.as_secs_f64() / file.as_secs_f64())
}

/// Measurements of one size: change-to-memory per mode, and what one swap
/// costs inside Kamailio in each mode.
#[derive(Default)]
struct Run {
    module: Vec<Duration>,
    file: Vec<Duration>,
    swaps: Vec<Duration>,
    reloads: Vec<Duration>,
}

impl Run {
    fn sort(&mut self) {
        self.module.sort();
        self.file.sort();
        self.swaps.sort();
        self.reloads.sort();
    }
}

/// `changes` alternating changes per mode at `size` destinations, after one
/// unmeasured change that brings both lanes to that size.
async fn run(module: &Lane, file: &Lane, size: usize, changes: usize, round: &mut usize) -> Run {
    let mut run = Run::default();
    for i in 0..=changes {
        *round += 1;
        let (before, _) = module.swaps().await;
        let m = module.change(size, *round).await;
        let version = module.applied_after(before).await;
        tokio::time::sleep(SPACING).await;
        let f = file.change(size, *round).await;
        tokio::time::sleep(SPACING).await;
        if i == 0 {
            continue;
        }
        if i <= RELOADS_TIMED {
            run.reloads.push(file.reload_time().await);
            tokio::time::sleep(SPACING).await;
        }
        run.module.push(m);
        run.file.push(f);
        run.swaps.push(
            module
                .swap_time(&version)
                .unwrap_or_else(|| panic!("no swap of {version} in the module's log")),
        );
    }
    run.sort();
    run
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let changes = env_or("DSFEED_BENCH_CHANGES", 200);
    let size_changes = env_or("DSFEED_BENCH_SIZE_CHANGES", 10);
    let dir = tempfile::Builder::new()
        .prefix("dsfeed-bench-")
        .tempdir()
        .unwrap();
    let module = Lane::module(dir.path(), SIZES[0]).await;
    let file = Lane::file(dir.path(), SIZES[0]).await;
    let version = module
        .probe
        .call("core.version", &[])
        .await
        .expect("core.version answers");
    println!(
        "module vs file mode: sets-file change -> Kamailio's in-memory set\n  {}; module {}",
        version
            .first()
            .and_then(Value::as_str)
            .unwrap_or("?")
            .trim(),
        module_so().display()
    );

    // Both lanes on round 0's sets, and the module's first swap reported.
    for lane in [&module, &file] {
        let deadline = Instant::now() + PATIENCE;
        while !lane.has(&probe_uri(0)).await {
            assert!(Instant::now() < deadline, "{} never synced", lane.name);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    module.applied_after(0).await;

    let mut round = 0;
    let started = Instant::now();
    let mut runs = Vec::new();
    for (k, size) in SIZES.into_iter().enumerate() {
        let n = if k == 0 { changes } else { size_changes };
        runs.push((size, run(&module, &file, size, n, &mut round).await));
    }

    let (size, latency) = &runs[0];
    println!(
        "\n{} changes per mode, set 1 of {size} destinations, interleaved \
         (reload_delta 0, min_swap_interval_ms {MIN_SWAP_INTERVAL_MS}):",
        latency.module.len()
    );
    println!(
        "  {:<26} {:>10} {:>10} {:>10} {:>10}",
        "", "p50", "p99", "min", "max"
    );
    for (name, times) in [
        ("module (gRPC, in-memory)", &latency.module),
        ("file (write + reload)", &latency.file),
    ] {
        println!(
            "  {name:<26} {:>10} {:>10} {:>10} {:>10}",
            ms(percentile(times, 50.0)),
            ms(percentile(times, 99.0)),
            ms(times[0]),
            ms(times[times.len() - 1]),
        );
    }
    let pick = |times: &[Duration], p| percentile(times, p);
    println!(
        "  {:<26} {:>10} {:>10} {:>10} {:>10}",
        "module / file",
        ratio(pick(&latency.module, 50.0), pick(&latency.file, 50.0)),
        ratio(pick(&latency.module, 99.0), pick(&latency.file, 99.0)),
        ratio(latency.module[0], latency.file[0]),
        ratio(
            latency.module[latency.module.len() - 1],
            latency.file[latency.file.len() - 1]
        ),
    );

    println!(
        "\nby set size, p50: change -> in memory, and one swap inside Kamailio \
         (module: its log; file: a dispatcher.reload RPC of the same list, on the first \
         {RELOADS_TIMED} changes of each size)"
    );
    println!(
        "  {:>12} {:>8} {:>11} {:>11} {:>8} {:>12} {:>12} {:>8}",
        "destinations", "changes", "module", "file", "ratio", "module swap", "file reload", "ratio"
    );
    for (size, run) in &runs {
        let p50 = |times: &[Duration]| percentile(times, 50.0);
        println!(
            "  {:>12} {:>8} {:>11} {:>11} {:>8} {:>12} {:>12} {:>8}",
            size,
            run.module.len(),
            ms(p50(&run.module)),
            ms(p50(&run.file)),
            ratio(p50(&run.module), p50(&run.file)),
            ms(p50(&run.swaps)),
            ms(p50(&run.reloads)),
            ratio(p50(&run.swaps), p50(&run.reloads)),
        );
    }
    // What would make the comparison unfair: a throttled reload, or a swap
    // the module did not make.
    let file_log = file.feeder.log();
    assert!(
        !file_log.contains("refused the reload"),
        "reload_delta 0 still refused a reload:\n{file_log}"
    );
    assert!(!module.kamailio.log().contains("replaced by something else"));
    println!(
        "\nthe floor for both: inotify plus the sets file's 50 ms settle delay; bench took {:.0?}",
        started.elapsed()
    );
}
