//! A hostile ctl peer: whatever answers on `--rpc` may answer anything. The
//! real `dsfeed` binary asks it `dsfeed.status` again and again while it
//! gets no usable answer, and its peak memory (VmHWM, read from /proc) must
//! stay under 100 MB whatever the replies hold.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dsfeed_binrpc::{MAX_REPLY, Message};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixListener;

/// The bound on the feeder's memory under a hostile reply.
const LIMIT_KB: u64 = 100_000;

const PATIENCE: Duration = Duration::from_secs(120);

/// A binrpc reply header for `cookie` announcing a body of `body_len`
/// bytes: magic and version, reply type, 4-byte length, 4-byte cookie.
fn reply_header(cookie: u32, body_len: usize) -> Vec<u8> {
    let mut header = vec![0xA1, 0x10 | (3 << 2) | 3];
    header.extend_from_slice(&u32::try_from(body_len).unwrap().to_be_bytes());
    header.extend_from_slice(&cookie.to_be_bytes());
    header
}

/// Serves `socket`: connection N gets a reply whose body is `sizes[N %
/// len]` bytes of one-byte records (0x00, an int of size zero), the most
/// values per byte binrpc allows. Counts connections the feeder has let go.
async fn hostile_ctl(socket: &Path, sizes: Vec<usize>) -> Arc<AtomicUsize> {
    let listener = UnixListener::bind(socket).unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&done);
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let size = sizes[n % sizes.len()];
            n += 1;
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut request = vec![0; 4096];
                let len = stream.read(&mut request).await.unwrap();
                let cookie = Message::decode(&request[..len]).unwrap().cookie;
                let mut reply = reply_header(cookie, size);
                reply.resize(reply.len() + size, 0x00);
                // The feeder may hang up early: that is the point.
                let _ = stream.write_all(&reply).await;
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
                counter.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    done
}

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_hostile_ctl_reply_cannot_push_the_feeder_past_100_mb() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    // 60 MB of one-byte records (2 GB of decoded values before the
    // budgets), then the largest reply the feeder buffers, made of the same.
    let header_len = 10;
    let done = hostile_ctl(&socket, vec![60_000_000, MAX_REPLY - header_len]).await;
    let log = dir.path().join("dsfeed.log");
    let feeder = Killed(
        Command::new(env!("CARGO_BIN_EXE_dsfeed"))
            .args(["--static", "1=10.0.0.1", "--mode", "file", "-o"])
            .arg(dir.path().join("dispatcher.list"))
            .arg("--rpc")
            .arg(format!("unix:{}", socket.display()))
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("dsfeed starts"),
    );
    let pid = feeder.0.id();
    // The feeder asks again every second while ctl gives no usable answer.
    let deadline = Instant::now() + PATIENCE;
    while done.load(Ordering::SeqCst) < 4 {
        assert!(
            Instant::now() < deadline,
            "the feeder read {} hostile replies in {PATIENCE:?}; its log:\n{}",
            done.load(Ordering::SeqCst),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak = peak_rss_kb(pid);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        peak < LIMIT_KB,
        "the feeder's peak RSS was {peak} kB; its log:\n{text}"
    );
    eprintln!("peak RSS under hostile ctl replies: {peak} kB");
    assert!(
        text.contains("does not answer"),
        "the feeder should treat the replies as no answer:\n{text}"
    );
}
