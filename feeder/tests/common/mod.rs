//! A harness for the feed tests and the fan-out benchmark: a real `dsfeed`
//! process on its own sockets and ports, a sets file it watches, a real
//! gRPC client and a tiny HTTP client for its endpoints.
#![allow(dead_code)] // Each test binary uses a different part.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use dsfeed_model::pb::{self, Answer, FeedRequest, FeedResponse, Node, feed_client::FeedClient};
use dsfeed_model::{Destination, SetMap, Snapshot};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::{Status, Streaming};

/// How long any single expected event may take on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Sets as the tests write them: set id and destination targets.
pub type Sets<'a> = &'a [(u32, &'a [&'a str])];

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Runs `dsfeed watch ARGS` to completion.
pub async fn watch(args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_dsfeed"))
        .arg("watch")
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(PATIENCE, run)
        .await
        .expect("dsfeed watch ended in time")
        .unwrap()
}

/// A sets file the feeder watches; every write replaces it atomically.
pub struct SetsFile {
    pub path: PathBuf,
}

impl SetsFile {
    pub fn new(dir: &Path, sets: Sets<'_>) -> Self {
        let file = SetsFile {
            path: dir.join("sets.yaml"),
        };
        file.write(sets);
        file
    }

    pub fn write(&self, sets: Sets<'_>) {
        self.write_text(&yaml(sets));
    }

    pub fn write_text(&self, text: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}

pub fn yaml(sets: Sets<'_>) -> String {
    let mut out = String::from("sets:\n");
    for (id, targets) in sets {
        if targets.is_empty() {
            out.push_str(&format!("  {id}: []\n"));
            continue;
        }
        out.push_str(&format!("  {id}:\n"));
        for target in *targets {
            out.push_str(&format!("    - \"{target}\"\n"));
        }
    }
    out
}

/// The snapshot the feeder should publish for `sets`, restricted to `only`.
pub fn snapshot(sets: Sets<'_>, only: Option<&[u32]>) -> Snapshot {
    let map: SetMap = sets
        .iter()
        .map(|(id, targets)| {
            let dests = targets
                .iter()
                .map(|t| Destination::parse_target(t).unwrap())
                .collect();
            (*id, dests)
        })
        .collect();
    let full = Snapshot::new(map);
    match only {
        Some(ids) => full.filtered(&ids.iter().copied().collect::<BTreeSet<_>>()),
        None => full,
    }
}

/// The URIs of each set in a response, as (id, uris).
pub fn uris(response: &FeedResponse) -> Vec<(u32, Vec<String>)> {
    response
        .sets
        .iter()
        .map(|s| (s.id, s.destinations.iter().map(|d| d.uri.clone()).collect()))
        .collect()
}

/// A `dsfeed` process, killed when dropped; its log is printed if the test
/// failed.
pub struct Feeder {
    child: Child,
    log: PathBuf,
    /// Holds the log away from the sets file: writes to the log are events
    /// in a watched directory, which would wake the sets-file source.
    _log_dir: tempfile::TempDir,
    pub http: Option<SocketAddr>,
}

impl Feeder {
    /// Starts `dsfeed ARGS` and, when it serves HTTP, waits until it is ready.
    pub async fn start(args: &[String]) -> Feeder {
        let feeder = Feeder::spawn(args);
        if let Some(http) = feeder.http {
            let deadline = Instant::now() + PATIENCE;
            loop {
                if let Ok((200, _)) = http_get(http, "/readyz").await {
                    break;
                }
                assert!(Instant::now() < deadline, "the feeder never became ready");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        feeder
    }

    /// Starts `dsfeed ARGS` without waiting for anything. These tests are
    /// about the feed, so the feeder serves it only (`--mode grpc`) and never
    /// writes dispatcher.list.
    pub fn spawn(args: &[String]) -> Feeder {
        let log_dir = tempfile::TempDir::new().unwrap();
        let log = log_dir.path().join("dsfeed.log");
        let http = args
            .iter()
            .position(|a| a == "--http")
            .map(|i| args[i + 1].parse().expect("--http IP:PORT"));
        let child = Command::new(env!("CARGO_BIN_EXE_dsfeed"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("DSFEED_MODE", "grpc")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("dsfeed starts");
        Feeder {
            child,
            log,
            _log_dir: log_dir,
            http,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM, as Kubernetes does on shutdown.
    pub fn terminate(&self) {
        let pid = Pid::from_raw(i32::try_from(self.pid()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
    }

    /// Waits for the process to exit by itself.
    pub async fn exited(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "dsfeed did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http.expect("--http"), path).await.unwrap()
    }

    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = self.get("/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub async fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics").await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Polls `/status` until `check` accepts it.
    pub async fn wait_status(&self, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = self.status().await;
            if check(&status) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/status never showed {what}: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `/metrics` until it has a line equal to `line`.
    pub async fn wait_metric(&self, line: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.metrics().await;
            if text.lines().any(|l| l == line) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/metrics never had {line}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- dsfeed log ---\n{}", self.log());
        }
    }
}

/// One GET over HTTP/1.1; returns the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_owned()))
}

/// A status's code, message and causes, as one line.
pub fn explain(status: &Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut cause = std::error::Error::source(status);
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    text
}

pub fn unix_endpoint(path: &Path) -> Endpoint {
    Endpoint::from_shared(format!("unix://{}", path.display())).unwrap()
}

pub fn tcp_endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}")).unwrap()
}

/// The first request of a stream.
pub fn hello(node: &str, sets: &[u32], version: &str) -> FeedRequest {
    FeedRequest {
        node: Some(Node {
            id: node.into(),
            user_agent: "feed-test".into(),
        }),
        set_ids: sets.to_vec(),
        version_info: version.into(),
        ..FeedRequest::default()
    }
}

/// A client's end of one feed stream.
pub struct Stream {
    tx: mpsc::Sender<FeedRequest>,
    inbound: Streaming<FeedResponse>,
}

impl Stream {
    /// Opens a stream and sends `first`; `Err` carries whatever refused it.
    pub async fn open(
        endpoint: Endpoint,
        token: Option<&str>,
        first: FeedRequest,
    ) -> Result<Stream, String> {
        let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
        let mut client = FeedClient::new(channel);
        let (tx, rx) = mpsc::channel(4);
        tx.send(first).await.unwrap();
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let inbound = client
            .stream(request)
            .await
            .map_err(|s| explain(&s))?
            .into_inner();
        Ok(Stream { tx, inbound })
    }

    pub async fn connect(endpoint: Endpoint, first: FeedRequest) -> Stream {
        Stream::open(endpoint, None, first).await.unwrap()
    }

    /// The next message or the status the stream ended with.
    ///
    /// Use [`explain`] for the text of a transport failure.
    pub async fn next_result(&mut self) -> Result<Option<FeedResponse>, Status> {
        tokio::time::timeout(PATIENCE, self.inbound.message())
            .await
            .expect("no message in time")
    }

    pub async fn next(&mut self) -> FeedResponse {
        self.next_result()
            .await
            .expect("a response, not an error")
            .expect("a response, not the end")
    }

    /// Whether nothing arrives within `window`.
    pub async fn quiet_for(&mut self, window: Duration) -> bool {
        tokio::time::timeout(window, self.inbound.message())
            .await
            .is_err()
    }

    pub async fn ack(&self, response: &FeedResponse) {
        let answer = pb::answer(&response.nonce, &response.version_info, Answer::Ack);
        self.tx.send(answer).await.unwrap();
    }

    pub async fn nack(&self, response: &FeedResponse, kept: &str, error: &str) {
        let answer = pb::answer(&response.nonce, kept, Answer::Nack(error.into()));
        self.tx.send(answer).await.unwrap();
    }

    /// Answers `response` "retrying": valid, not applied yet, `kept` stays.
    pub async fn retrying(&self, response: &FeedResponse, kept: &str, error: &str) {
        let answer = pb::answer(&response.nonce, kept, Answer::Retrying(error.into()));
        self.tx.send(answer).await.unwrap();
    }

    /// Receives the next response and ACKs it.
    pub async fn next_acked(&mut self) -> FeedResponse {
        let response = self.next().await;
        self.ack(&response).await;
        response
    }
}
