//! Fan-out benchmark (`make bench`): one feeder, many concurrent clients
//! over TCP on loopback. Each round rewrites the sets file and measures the
//! time until the last client has ACKed the new snapshot; at the end it
//! prints p50/p99 over the rounds and the feeder's memory.
//!
//! `DSFEED_BENCH_CLIENTS` (default 1000) and `DSFEED_BENCH_ROUNDS` (default
//! 50) size the run. The time includes the sets-file source's settle delay
//! (50 ms) and inotify; the first-ACK figure shows that floor.

use std::time::{Duration, Instant};

use dsfeed_tests::feed_client::{self, Stream, hello};
use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::sets::{Sets, SetsFile, snapshot, yaml};
use dsfeed_tests::{PATIENCE, free_addr};
use tokio::sync::mpsc;

/// The filters clients ask for, in turn; every one includes set 1, which
/// changes each round.
const FILTERS: &[&[u32]] = &[&[], &[1], &[1, 2], &[1, 3, 4]];

/// Destinations per set.
const SET_SIZE: usize = 25;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Four sets of [`SET_SIZE`] destinations; set 1 differs in every round.
fn sets_text(round: usize) -> (String, Vec<(u32, Vec<String>)>) {
    let sets: Vec<(u32, Vec<String>)> = (1..=4u32)
        .map(|id| {
            let salt = if id == 1 { round } else { 0 };
            let targets = (0..SET_SIZE)
                .map(|i| format!("10.{id}.{}.{}:5060", salt % 250, i + 1))
                .collect();
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
fn expected_versions(round: usize) -> Vec<String> {
    let (_, sets) = sets_text(round);
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let clients = env_or("DSFEED_BENCH_CLIENTS", 1000);
    let rounds = env_or("DSFEED_BENCH_ROUNDS", 50);
    let dir = tempfile::TempDir::new().unwrap();
    let file = SetsFile {
        path: dir.path().join("sets.yaml"),
    };
    file.write_text(&sets_text(0).0);
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

    let mut last_ack = Vec::with_capacity(rounds);
    let mut first_ack = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let expected = expected_versions(round);
        let (text, _) = sets_text(round);
        file.write_text(&text);
        let changed = Instant::now();
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
        first_ack.push(first.unwrap() - changed);
        last_ack.push(last - changed);
    }
    let rss_end = feeder.rss_kib();
    let rss_peak = vm_kib(feeder.pid(), "VmHWM:");
    for task in tasks {
        task.abort();
    }

    last_ack.sort();
    first_ack.sort();
    println!("fan-out: {clients} clients over TCP, {rounds} sets-file changes");
    println!("  all clients connected and synced in {connected_in:.2?}");
    println!(
        "  change -> last client's ACK: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        percentile(&last_ack, 50.0),
        percentile(&last_ack, 99.0),
        last_ack[last_ack.len() - 1],
    );
    println!(
        "  change -> first client's ACK: p50 {:.1?} (the floor: inotify and the sets file's settle delay)",
        percentile(&first_ack, 50.0),
    );
    println!(
        "  feeder RSS: {} KiB idle, {} KiB with clients, {} KiB at the end, {} KiB peak",
        rss_idle, rss_connected, rss_end, rss_peak
    );
}
