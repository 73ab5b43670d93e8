//! The `dsfeed` binary as a child process, the way users run it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Path of the `dsfeed` binary built next to the running test.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let bin = profile_dir.join("dsfeed");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --workspace --all-targets`, or `make test`)",
        bin.display()
    );
    bin
}

/// Runs `dsfeed ARGS` to completion (for `--once` and bad flags).
pub fn run(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env("RUST_LOG", "debug")
        .output()
        .expect("dsfeed runs")
}

/// A running `dsfeed` daemon; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Feeder {
    child: Child,
    log: PathBuf,
}

impl Feeder {
    /// Starts `dsfeed ARGS`, logging at debug level to `log`.
    pub fn start(args: &[&str], log: &Path) -> Feeder {
        let file = std::fs::File::create(log).expect("feeder log file");
        let child = Command::new(binary())
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("dsfeed starts");
        Feeder {
            child,
            log: log.to_owned(),
        }
    }

    /// Everything the feeder has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status if the feeder has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait on dsfeed")
    }

    /// SIGKILL, as a crash or an OOM kill would end it: no stream is closed
    /// cleanly and its unix socket stays on disk. Returns once it is reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (SIGSTOP and SIGCONT freeze and thaw it, as a
    /// starved or debugged process would be).
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("a pid fits in i32"));
        kill(pid, signal).expect("the feeder is running");
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("a pid fits in i32"));
        // It may exit by itself meanwhile; then the wait below sees it.
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// A free TCP address on 127.0.0.1, for `--http`.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
}

/// One `GET path` to a feeder's `--http` address: the status code and body.
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
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP reply: {head:?}")))?;
    Ok((code, body.to_owned()))
}

/// The feeder's `/status` page; `None` while it does not answer (starting,
/// stopped).
pub async fn status(addr: SocketAddr) -> Option<serde_json::Value> {
    match http_get(addr, "/status").await {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        if self.terminate(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
