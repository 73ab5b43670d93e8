//! Fan-out benchmark (`make bench`): one feeder, many concurrent clients
//! over TCP on loopback. Each round replaces one destination of set 1 in the
//! sets file (a rename, read at once) and measures the time until the last
//! client has ACKed the new snapshot, with 10 and with 10,000 destinations
//! per snapshot; the first client's ACK is the floor (inotify, the merge,
//! one encode) that the last one is measured against. Also the feeder's
//! memory, idle and with every client connected.
//!
//! `DSFEED_BENCH_CLIENTS` (default 1000), `DSFEED_BENCH_ROUNDS` (default 50
//! at 10 destinations; a fifth of it at 10,000) size the run; `QUICK=1`
//! shortens it.

use std::time::{Duration, Instant};

use dsfeed_tests::feed_client::{self, Stream, hello};
use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::report::{self, Report, percentile};
use dsfeed_tests::sets::{Sets, SetsFile, snapshot, yaml};
use dsfeed_tests::{PATIENCE, free_addr};
use tokio::sync::mpsc;

/// The filters clients ask for, in turn; every one includes set 1, which
/// changes each round.
const FILTERS: &[&[u32]] = &[&[], &[1], &[1, 2], &[1, 3, 4]];

/// Destinations per snapshot (all four sets), in the order they are run,
/// with how the report writes them.
const SIZES: [(usize, &str); 2] = [(10, "10"), (10_000, "10,000")];

/// Four sets of `total` destinations between them; set 1's first one is
/// the one only `round` has.
fn sets_text(round: usize, total: usize) -> (String, Vec<(u32, Vec<String>)>) {
    let sets: Vec<(u32, Vec<String>)> = (1..=4u32)
        .map(|id| {
            let size = total / 4 + if id == 1 { total % 4 } else { 0 };
            let mut targets: Vec<String> = (1..size)
                .map(|i| format!("10.{id}.{}.{}:5060", i / 250, i % 250 + 1))
                .collect();
            let first = if id == 1 {
                format!("10.99.{}.{}:5060", round / 250 % 250, round % 250 + 1)
            } else {
                format!("10.{id}.250.1:5060")
            };
            targets.insert(0, first);
            (id, targets)
        })
        .collect();
    (with_sets(&sets, yaml), sets)
}

/// Calls `f` with `sets` borrowed as the harness's [`Sets`].
fn with_sets<T>(sets: &[(u32, Vec<String>)], f: impl FnOnce(Sets<'_>) -> T) -> T {
    let borrowed: Vec<Vec<&str>> = sets
        .iter()
        .map(|(_, t)| t.iter().map(String::as_str).collect())
        .collect();
    let pairs: Vec<(u32, &[&str])> = sets
        .iter()
        .zip(&borrowed)
        .map(|((id, _), t)| (*id, t.as_slice()))
        .collect();
    f(&pairs)
}

/// The version each filter should see in `round`.
fn expected_versions(round: usize, total: usize) -> Vec<String> {
    let (_, sets) = sets_text(round, total);
    with_sets(&sets, |sets| {
        FILTERS
            .iter()
            .map(|f| {
                let only = (!f.is_empty()).then_some(*f);
                snapshot(sets, only).version().to_owned()
            })
            .collect()
    })
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The first and last clients' ACK times of `rounds` changes, sorted.
struct Acks {
    first: Vec<Duration>,
    last: Vec<Duration>,
}

/// `rounds` changes of a snapshot of `total` destinations, `clients`
/// reporting each ACK on `reports`.
async fn rounds(
    file: &SetsFile,
    reports: &mut mpsc::UnboundedReceiver<(usize, String, Instant)>,
    clients: usize,
    rounds: usize,
    total: usize,
    round: &mut usize,
) -> Acks {
    let mut acks = Acks {
        first: Vec::with_capacity(rounds),
        last: Vec::with_capacity(rounds),
    };
    // The first round brings every client to this size, unmeasured.
    for measured in std::iter::once(false).chain(std::iter::repeat_n(true, rounds)) {
        *round += 1;
        let expected = expected_versions(*round, total);
        let text = sets_text(*round, total).0;
        // Before the write: a client may ACK before this task runs again.
        let changed = Instant::now();
        file.write_text(&text);
        let mut first = None;
        let mut last = changed;
        for _ in 0..clients {
            let (i, version, at) = tokio::time::timeout(PATIENCE, reports.recv())
                .await
                .expect("every client ACKs in time")
                .unwrap();
            assert_eq!(
                version,
                expected[i % FILTERS.len()],
                "client {i} got the wrong version in round {round}"
            );
            first.get_or_insert(at);
            last = last.max(at);
        }
        if measured {
            acks.first.push(first.unwrap() - changed);
            acks.last.push(last - changed);
        }
    }
    acks.first.sort();
    acks.last.sort();
    acks
}

#[tokio::main]
async fn main() {
    let clients = report::count("DSFEED_BENCH_CLIENTS", 1000, 200);
    let small_rounds = report::count("DSFEED_BENCH_ROUNDS", 50, 10);
    let big_rounds = (small_rounds / 5).max(2);
    let mut report = Report::new("fanout");
    report.context("clients", clients);
    report.context("quick", report::quick());
    let dir = tempfile::TempDir::new().unwrap();
    let file = SetsFile {
        path: dir.path().join("sets.yaml"),
    };
    file.write_text(&sets_text(0, SIZES[0].0).0);
    let tcp = free_addr();
    let args = Args::default().sets_file(&file.path);
    let feeder = Feeder::serving(
        args.arg("--listen", format!("tcp://{tcp}"))
            .http(free_addr()),
    )
    .await;
    let rss_idle = feeder.rss_kib();

    // Every client ACKs what it gets and reports (client, version, when).
    let (report_tx, mut reports) = mpsc::unbounded_channel::<(usize, String, Instant)>();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for batch in (0..clients).collect::<Vec<_>>().chunks(100) {
        let mut connecting = Vec::new();
        for &i in batch {
            let filter = FILTERS[i % FILTERS.len()];
            connecting.push(tokio::spawn(Stream::connect(
                feed_client::tcp_endpoint(tcp),
                hello(&format!("bench-{i}"), filter, ""),
            )));
        }
        for (k, stream) in connecting.into_iter().enumerate() {
            let mut stream = stream.await.unwrap();
            let i = batch[k];
            let report = report_tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(Some(response)) = stream.next_result().await {
                    stream.ack(&response).await;
                    let _ = report.send((i, response.version_info, Instant::now()));
                }
            }));
        }
    }
    // Everyone's first snapshot.
    for _ in 0..clients {
        reports.recv().await.unwrap();
    }
    let connected_in = started.elapsed();
    let rss_connected = feeder.rss_kib();
    println!("fan-out: {clients} clients over TCP, all synced in {connected_in:.2?}");

    // Each size in turn, and the feeder's memory once its rounds are done.
    let mut round = 0;
    let mut runs = Vec::with_capacity(SIZES.len());
    for ((size, label), n) in SIZES.into_iter().zip([small_rounds, big_rounds]) {
        let acks = rounds(&file, &mut reports, clients, n, size, &mut round).await;
        runs.push((label, n, acks, feeder.rss_kib()));
    }
    let rss_peak = vm_kib(feeder.pid(), "VmHWM:");
    for task in tasks {
        task.abort();
    }

    let section = format!("fan-out: one-destination change -> {clients} clients' ACKs");
    for (label, n, acks, _) in &runs {
        for p in [50.0, 99.0] {
            report.versus_ms(
                &section,
                &format!("{label} destinations: last ACK, p{p:.0} of {n}"),
                percentile(&acks.last, p),
                "first client's ACK (the floor)",
                percentile(&acks.first, p),
            );
        }
    }
    let ((small, _, small_acks, _), (big, _, big_acks, _)) = (&runs[0], &runs[runs.len() - 1]);
    report.versus_ms(
        &section,
        &format!("{big} vs {small} destinations: last ACK, p50"),
        percentile(&big_acks.last, 50.0),
        &format!("{small} destinations"),
        percentile(&small_acks.last, 50.0),
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    let against = "the same feeder idle, no client";
    let memory = "memory: feeder RSS";
    for (label, _, _, rss) in &runs {
        report.versus(
            memory,
            &format!("{clients} clients, {label} destinations"),
            "MiB",
            mib(*rss),
            against,
            mib(rss_idle),
        );
    }
    report.versus(
        memory,
        &format!("{clients} clients connected, first sync"),
        "MiB",
        mib(rss_connected),
        against,
        mib(rss_idle),
    );
    report.versus(
        memory,
        "peak (VmHWM)",
        "MiB",
        mib(rss_peak),
        against,
        mib(rss_idle),
    );
    report.finish();
}
