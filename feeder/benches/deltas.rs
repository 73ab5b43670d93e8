//! Bytes per change (`make bench`): what one changed destination costs on
//! the wire when 1,000 clients hold 10,000 destinations each, sent as full
//! snapshots and as deltas. A real feeder serves a sets file over TCP on
//! loopback; real feed clients connect, take their first snapshot, and
//! report the encoded size of each response they get after one destination
//! of one set changes. The full clients and the delta clients run one
//! after the other, so memory holds one group's streams at a time.
//!
//! A delta carries each changed set whole, so its size is that of the set
//! the destination is in: the run measures 10 sets of 1,000 destinations
//! and 100 sets of 100.
//!
//! `DSFEED_BENCH_DELTA_CLIENTS` (default 1000) sizes each group; `QUICK=1`
//! runs 50 clients. The bytes are the protobuf messages' encoded lengths
//! (gRPC and HTTP/2 framing add a few bytes per message).

use std::time::{Duration, Instant};

use dsfeed_model::pb::{self, FeedRequest};
use dsfeed_tests::feed_client::{self, Stream, hello};
use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::sets::SetsFile;
use dsfeed_tests::{PATIENCE, free_addr};
use tokio::sync::mpsc;

/// 10,000 destinations in all, as (sets, destinations per set).
const SHAPES: [(u32, u32); 2] = [(10, 1000), (100, 100)];

/// The sets file of `shape` with destination `changed` (an index into
/// set 1) moved to another address.
fn sets_text((sets, size): (u32, u32), changed: Option<u32>) -> String {
    let mut out = String::from("sets:\n");
    for id in 1..=sets {
        out.push_str(&format!("  {id}:\n"));
        for i in 0..size {
            let (a, b) = if id == 1 && Some(i) == changed {
                (250, 250)
            } else {
                (id / 250, id % 250)
            };
            out.push_str(&format!(
                "    - \"10.{a}.{b}.{}:{}\"\n",
                i % 250 + 1,
                5060 + i / 250
            ));
        }
    }
    out
}

/// What one group of clients received for one change.
struct Group {
    /// Encoded bytes of the first responses (every client's full snapshot).
    initial: usize,
    /// Encoded bytes of the responses for the change, all clients.
    change: usize,
    /// How many of those were deltas.
    deltas: usize,
    /// From the change to the last client's response.
    took: Duration,
}

/// Connects `clients` clients (`first` makes each one's hello), waits for
/// every first snapshot, applies `change` to the sets file, and measures
/// what reaches the clients for it.
async fn run_group(
    clients: usize,
    tcp: std::net::SocketAddr,
    file: &SetsFile,
    change: &str,
    first: impl Fn(usize) -> FeedRequest,
) -> Group {
    let (report_tx, mut reports) = mpsc::unbounded_channel::<(usize, bool, Instant)>();
    let mut tasks = Vec::with_capacity(clients);
    for batch in (0..clients).collect::<Vec<_>>().chunks(100) {
        let mut connecting = Vec::new();
        for &i in batch {
            connecting.push(tokio::spawn(Stream::connect(
                feed_client::tcp_endpoint(tcp),
                first(i),
            )));
        }
        for stream in connecting {
            let mut stream = stream.await.unwrap();
            let report = report_tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(Some(response)) = stream.next_result().await {
                    stream.ack(&response).await;
                    let delta = !response.base_version.is_empty();
                    let _ = report.send((pb::encoded_len(&response), delta, Instant::now()));
                }
            }));
        }
    }
    let mut initial = 0;
    for _ in 0..clients {
        let (bytes, _, _) = reports.recv().await.unwrap();
        initial += bytes;
    }
    file.write_text(change);
    let changed = Instant::now();
    let (mut bytes, mut deltas, mut last) = (0, 0, changed);
    for _ in 0..clients {
        let (size, delta, at) = tokio::time::timeout(PATIENCE, reports.recv())
            .await
            .expect("every client gets the change in time")
            .unwrap();
        bytes += size;
        deltas += usize::from(delta);
        last = last.max(at);
    }
    for task in tasks {
        task.abort();
    }
    Group {
        initial,
        change: bytes,
        deltas,
        took: last - changed,
    }
}

fn mb(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Both groups on one shape, with a feeder of their own; prints the result.
async fn measure(shape: (u32, u32), clients: usize) {
    let dir = tempfile::TempDir::new().unwrap();
    let file = SetsFile {
        path: dir.path().join("sets.yaml"),
    };
    file.write_text(&sets_text(shape, None));
    let tcp = free_addr();
    let args = Args::default()
        .sets_file(&file.path)
        .arg("--listen", format!("tcp://{tcp}"))
        .arg("--max-clients", clients + 10)
        .http(free_addr());
    let feeder = Feeder::serving(args).await;
    let full = run_group(clients, tcp, &file, &sets_text(shape, Some(0)), |i| {
        hello(&format!("full-{i}"), &[], "")
    })
    .await;
    assert_eq!(full.deltas, 0);
    let delta = run_group(clients, tcp, &file, &sets_text(shape, Some(1)), |i| {
        pb::hello_with_deltas(&format!("delta-{i}"), "bench", &[], "")
    })
    .await;
    assert_eq!(delta.deltas, clients, "every delta client got a delta");
    drop(feeder);

    let (sets, size) = shape;
    println!(
        "bytes per change: one destination changes among {} ({sets} sets of {size}), {clients} clients",
        sets * size
    );
    println!(
        "  first snapshot: {} to all ({} per client)",
        mb(full.initial),
        full.initial / clients
    );
    for (what, group) in [("full snapshots", &full), ("deltas", &delta)] {
        println!(
            "  {what:<14}: {} to all ({} per client), last client's response {:.1?} after the change",
            mb(group.change),
            group.change / clients,
            group.took
        );
    }
    println!(
        "  ratio full/delta bytes per change ({sets} sets of {size}): {:.0}x",
        full.change as f64 / delta.change as f64
    );
}

#[tokio::main]
async fn main() {
    let quick = std::env::var("QUICK").is_ok_and(|v| v == "1");
    let clients = std::env::var("DSFEED_BENCH_DELTA_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 50 } else { 1000 });
    for shape in SHAPES {
        measure(shape, clients).await;
    }
}
