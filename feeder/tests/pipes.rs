//! The binary in a shell pipeline: a reader that stops early
//! (`dsfeed --once -o - | head`, `dsfeed ... 2>&1 | head`) loses the rest
//! of the output, and the exit status is still dsfeed's own, not a panic's.

use std::process::{Command, Stdio};

fn dsfeed(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dsfeed"));
    command.args(args).stdin(Stdio::null());
    command
}

#[test]
fn a_list_printed_to_a_reader_that_stops_early_still_succeeds() {
    // 4,000 destinations: more than a pipe holds, so the write meets the
    // closed end even if it starts before the read end is dropped.
    let hosts: Vec<String> = (0..4000)
        .map(|i| format!("10.{}.{}.1", i / 256, i % 256))
        .collect();
    let set = format!("1={}", hosts.join(","));
    let mut child = dsfeed(&["--static", &set, "--once", "-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_failure_told_to_a_closed_stderr_keeps_its_exit_status() {
    // Nothing listens on port 1: Consul never answers, and --once gives up
    // after its timeout, logging meanwhile, then saying why.
    let mut child = dsfeed(&[
        "--consul-service",
        "asterisk=1",
        "--consul-addr",
        "127.0.0.1:1",
        "--once",
        "--once-timeout",
        "1s",
        "-o",
        "-",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}");
}
