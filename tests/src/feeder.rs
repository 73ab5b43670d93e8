//! The `dsfeed` binary as a child process, the way users run it.

use std::ffi::OsStr;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::Host;
use crate::{Kamailio, PATIENCE, eventually, http, wait_until};

/// Path of the `dsfeed` binary built next to the running test or bench.
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

/// The standard output of a run that must have succeeded; all it wrote is
/// in the panic when it did not.
pub fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}: {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.into_owned()
}

/// Runs `dsfeed watch ARGS` to completion.
pub async fn watch(args: &[&str]) -> Output {
    let run = tokio::process::Command::new(binary())
        .arg("watch")
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(PATIENCE, run)
        .await
        .expect("dsfeed watch ended in time")
        .expect("dsfeed watch runs")
}

/// A `dsfeed` command line, built from the flags a test names: the
/// spellings of paths and addresses the harness knows are written once,
/// here, so that a test reads as the command it runs.
#[derive(Debug, Clone, Default)]
pub struct Args(Vec<String>);

impl Args {
    /// Flags and values as typed.
    pub fn new(args: &[&str]) -> Args {
        Args::default().args(args)
    }

    /// Adds flags and values as typed.
    pub fn args(mut self, args: &[&str]) -> Args {
        self.0.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Adds `flag value`.
    pub fn arg(mut self, flag: &str, value: impl Display) -> Args {
        self.0.extend([flag.to_owned(), value.to_string()]);
        self
    }

    /// `--sets-file PATH`.
    pub fn sets_file(self, path: &Path) -> Args {
        self.arg("--sets-file", path.display())
    }

    /// `--listen unix:PATH`.
    pub fn listen_unix(self, socket: &Path) -> Args {
        self.arg("--listen", format!("unix:{}", socket.display()))
    }

    /// `--http ADDR`: the feeder serves `/status`, `/metrics` and the probes.
    pub fn http(self, addr: SocketAddr) -> Args {
        self.arg("--http", addr)
    }

    /// `-o LIST --rpc CTL`: writes `kamailio`'s list file and reloads it
    /// over its unix ctl socket.
    pub fn reloading(self, kamailio: &Kamailio) -> Args {
        self.arg("-o", kamailio.list_path().display())
            .arg("--rpc", kamailio.ctl_unix())
    }
}

impl AsRef<[String]> for Args {
    fn as_ref(&self) -> &[String] {
        &self.0
    }
}

/// A running `dsfeed` daemon; stopped (SIGTERM, then SIGKILL) on drop, and
/// its log printed when the test failed.
pub struct Feeder {
    child: Child,
    log: PathBuf,
    /// Holds the log of [`Feeder::serving`] away from any watched
    /// directory: writes to it would wake the sets-file source.
    _log_dir: Option<tempfile::TempDir>,
    /// Its `--http` address, if it was given one.
    pub http: Option<SocketAddr>,
}

impl Feeder {
    /// Starts `dsfeed ARGS`, logging at debug level to `log`.
    pub fn start<S: AsRef<OsStr>>(args: impl AsRef<[S]>, log: &Path) -> Feeder {
        Feeder::spawn(args.as_ref(), log, None, None)
    }

    /// [`Feeder::serving`] on `host` of a private network, where its
    /// `--http` cannot be reached from the test: it waits until the feed is
    /// served instead.
    pub async fn serving_on<S: AsRef<OsStr>>(host: &Host, args: impl AsRef<[S]>) -> Feeder {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("dsfeed.log");
        let feeder = Feeder::spawn(args.as_ref(), &log, Some(dir), Some(host));
        feeder.wait_logged("serving the feed").await;
        feeder
    }

    /// Starts a feeder that serves the feed only (`--mode grpc` unless the
    /// arguments say otherwise), with a log of its own, and waits until it
    /// is ready when it serves HTTP.
    pub async fn serving<S: AsRef<OsStr>>(args: impl AsRef<[S]>) -> Feeder {
        let feeder = Feeder::spawn_serving(args);
        if let Some(http) = feeder.http {
            eventually("the feeder to be ready", PATIENCE, || async {
                matches!(http::get(http, "/readyz").await, Ok((200, _))).then_some(())
            })
            .await;
        }
        feeder
    }

    /// [`Feeder::serving`] without waiting for anything.
    pub fn spawn_serving<S: AsRef<OsStr>>(args: impl AsRef<[S]>) -> Feeder {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("dsfeed.log");
        Feeder::spawn(args.as_ref(), &log, Some(dir), None)
    }

    fn spawn<S: AsRef<OsStr>>(
        args: &[S],
        log: &Path,
        dir: Option<tempfile::TempDir>,
        host: Option<&Host>,
    ) -> Feeder {
        let file = std::fs::File::create(log).expect("feeder log file");
        let http = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy())
            .skip_while(|a| a != "--http")
            .nth(1)
            .map(|addr| addr.parse().expect("--http IP:PORT"));
        let mut command = match host {
            Some(host) => host.command(binary()),
            None => Command::new(binary()),
        };
        command
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        if dir.is_some() {
            command.env("DSFEED_MODE", "grpc");
        }
        Feeder {
            child: command.spawn().expect("dsfeed starts"),
            log: log.to_owned(),
            _log_dir: dir,
            http,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the feeder has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times the feeder has logged `text` so far, to count its
    /// reloads and the like.
    pub fn times_logged(&self, text: &str) -> usize {
        self.log().matches(text).count()
    }

    /// Asserts that the feeder has logged `text`; the failure shows the log.
    #[track_caller]
    pub fn assert_logged(&self, text: &str) {
        let log = self.log();
        assert!(
            log.contains(text),
            "the feeder did not log {text:?}:\n{log}"
        );
    }

    /// Waits until the feeder logs `text`.
    pub async fn wait_logged(&self, text: &str) {
        let what = format!("the feeder to log {text:?}");
        wait_until(&what, PATIENCE, || async {
            let log = self.log();
            if log.contains(text) { Ok(()) } else { Err(log) }
        })
        .await;
    }

    /// The exit status if the feeder has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait on dsfeed")
    }

    /// Waits for the feeder to exit by itself.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        eventually("dsfeed to exit", PATIENCE, || {
            let exited = self.exited();
            async move { exited }
        })
        .await
    }

    /// SIGKILL, as a crash or an OOM kill would end it: no stream is closed
    /// cleanly and its unix socket stays on disk. Returns once it is reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal`: SIGTERM as Kubernetes does on shutdown, SIGSTOP and
    /// SIGCONT to freeze and thaw it as a starved process would be.
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.pid()).expect("a pid fits in i32"));
        kill(pid, signal).expect("the feeder is running");
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        // It may exit by itself meanwhile; then the wait below sees it.
        let _ = kill(
            Pid::from_raw(i32::try_from(self.pid()).expect("a pid fits in i32")),
            Signal::SIGTERM,
        );
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the feeder is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// One GET on its `--http` address.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let http = self.http.expect("a feeder started with --http");
        http::get(http, path)
            .await
            .expect("the feeder answers HTTP")
    }

    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = self.get("/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("/status is JSON")
    }

    pub async fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics").await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Polls `/status` until `check` accepts it.
    pub async fn wait_status(&self, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
        let what = format!("/status to show {what}");
        wait_until(&what, PATIENCE, || async {
            let status = self.status().await;
            if check(&status) {
                Ok(())
            } else {
                Err(format!("{status:#}"))
            }
        })
        .await;
    }

    /// Polls `/metrics` until it has a line equal to `line`.
    pub async fn wait_metric(&self, line: &str) {
        let what = format!("/metrics to have {line}");
        wait_until(&what, PATIENCE, || async {
            let text = self.metrics().await;
            if text.lines().any(|l| l == line) {
                Ok(())
            } else {
                Err(text)
            }
        })
        .await;
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        if self.terminate(Duration::from_secs(5)).is_none() {
            self.kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- dsfeed log ({}) ---\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}
