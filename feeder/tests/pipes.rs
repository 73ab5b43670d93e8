//! The binary in a shell pipeline: a reader that stops early
//! (`dsfeed --once -o - | head`, `dsfeed ... 2>&1 | head`) loses the rest
//! of the output, and the exit status is still dsfeed's own, not a panic's.

use std::process::{Command, ExitStatus, Stdio};

use dsfeed_tests::feeder::{Args, Feeder};

/// Which output's reader goes away.
enum Closed {
    Stdout,
    Stderr,
}

/// Runs `dsfeed args` with the reader of `closed` gone from the start, and
/// returns how it exited with what it wrote on the other one.
fn run_closing(closed: Closed, args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsfeed"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    match closed {
        Closed::Stdout => drop(child.stdout.take()),
        Closed::Stderr => drop(child.stderr.take()),
    }
    let output = child.wait_with_output().unwrap();
    let other = match closed {
        Closed::Stdout => output.stderr,
        Closed::Stderr => output.stdout,
    };
    (output.status, String::from_utf8_lossy(&other).into_owned())
}

/// A `--static` set of 4,000 destinations: its list is more than a pipe
/// holds, so writing it meets the closed end even if the write starts
/// before the read end is dropped.
fn big_set() -> String {
    let hosts: Vec<String> = (0..4000)
        .map(|i| format!("10.{}.{}.1", i / 256, i % 256))
        .collect();
    format!("1={}", hosts.join(","))
}

#[test]
fn a_list_printed_to_a_reader_that_stops_early_still_succeeds() {
    let set = big_set();
    let (status, stderr) = run_closing(Closed::Stdout, &["--static", &set, "--once", "-o", "-"]);
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn watch_ends_quietly_when_its_reader_stops() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("feed.sock");
    let feeder = Feeder::start(
        Args::new(&["--mode", "grpc", "--static", &big_set()]).listen_unix(&socket),
        &dir.path().join("dsfeed.log"),
    );
    feeder.wait_logged("serving the feed").await;
    let feed = format!("unix:{}", socket.display());
    let (status, stderr) = run_closing(Closed::Stdout, &["watch", &feed]);
    assert!(status.success(), "{status:?}: {stderr}");
}

#[test]
fn a_failure_told_to_a_closed_stderr_keeps_its_exit_status() {
    // Nothing listens on port 1: Consul never answers, and --once gives up
    // after its timeout, logging meanwhile, then saying why.
    let (status, _) = run_closing(
        Closed::Stderr,
        &[
            "--consul-service",
            "asterisk=1",
            "--consul-addr",
            "127.0.0.1:1",
            "--once",
            "--once-timeout",
            "1s",
            "-o",
            "-",
        ],
    );
    assert_eq!(status.code(), Some(1), "{status:?}");
}
