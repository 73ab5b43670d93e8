//! dsfeed.so in a real Kamailio (5.6.3, or 6.0.1 in a Debian 13 root): it
//! loads, answers `dsfeed.status`, refuses bad parameters by name, contains
//! panics, and a build for another Kamailio is refused with both versions
//! named.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use dsfeed_tests::module::{
    WAIT, error_until, feed_pid, kamailio, module_path, rpc, status, threads, unconnected_until,
};
use dsfeed_tests::{HarnessError, KamailioBuilder, eventually, sets, target};

/// A Kamailio whose dsfeed.so has no feeder to reach and panics on purpose
/// at `place` (`DSFEED_TEST_PANIC`).
fn panicking_at(place: &str) -> KamailioBuilder {
    kamailio("")
        .modparam("dsfeed", "feeder", "unix:/nonexistent/feed.sock")
        .env("DSFEED_TEST_PANIC", place)
}

/// Starts a Kamailio that must fail; returns its exit status and log.
async fn start_failing(builder: KamailioBuilder) -> (std::process::ExitStatus, String) {
    match builder.start().await {
        Ok(_) => panic!("kamailio started"),
        Err(HarnessError::Exited { status, log }) => (status, log),
        Err(other) => panic!("kamailio did not exit: {other}"),
    }
}

#[tokio::test]
async fn loads_and_reports_status_without_a_feeder() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-feeder.sock");
    let feeder = format!("unix:{}", socket.display());
    let kamailio = kamailio("1 sip:10.0.0.1:5060 0 0\n2 sip:10.0.0.2:5060 0 0\n")
        .modparam("dsfeed", "feeder", feeder.as_str())
        .modparam("dsfeed", "node_id", "kam-test-0")
        .modparam("dsfeed", "reconnect_max_ms", 1000)
        .start()
        .await
        .unwrap();
    let status = unconnected_until(&kamailio, "").await;
    assert!(
        ["connecting", "backoff"].contains(&status.text("state")),
        "{status:?}"
    );
    assert_eq!(status.text("feeder"), feeder);
    assert_eq!(status.text("node_id"), "kam-test-0");
    assert_eq!(status.text("applied_version"), "");
    assert_eq!(status.int("swaps"), 0);
    assert_eq!(status.int("min_swap_interval_ms"), 1000);
    assert!(status.text("last_error").contains(&feeder), "{status:?}");
    // No feeder never means no sets: the list file's sets are untouched.
    let loaded = dsfeed_tests::loaded(&kamailio).await;
    assert_eq!(
        loaded,
        sets(&[(1, &["sip:10.0.0.1:5060"]), (2, &["sip:10.0.0.2:5060"])])
    );
    assert!(
        kamailio.log().contains("dsfeed [feed]: feeder unix:"),
        "logs go through Kamailio's logger"
    );
}

#[tokio::test]
async fn bad_parameters_stop_kamailio_with_the_culprit_named() {
    let cases: [(KamailioBuilder, &str); 5] = [
        (kamailio(""), "modparam dsfeed feeder is required"),
        (
            kamailio("")
                .modparam("dsfeed", "feeder", "unix:/run/x.sock")
                .modparam("dsfeed", "min_swap_interval_ms", 5),
            "min_swap_interval_ms 5 is below 500",
        ),
        // Below the floor, the error says why: the measured reader windows.
        (
            kamailio("")
                .modparam("dsfeed", "feeder", "unix:/run/x.sock")
                .modparam("dsfeed", "min_swap_interval_ms", 200),
            "min_swap_interval_ms 200 is below 500: the stock dispatcher frees the list retired \
             by one swap when the next starts, while SIP workers were measured reading it for up \
             to ~107 ms under load and a probing round over 10,000 destinations takes ~350 ms",
        ),
        (
            kamailio("").modparam("dsfeed", "feeder", "grpc://feeder:1"),
            "feeder 'grpc://feeder:1'",
        ),
        (
            kamailio("")
                .modparam("dsfeed", "feeder", "http://feeder:1")
                .modparam("dsfeed", "tls_ca", "/etc/hostname"),
            "tls_ca needs https:// feeders, and http://feeder:1 is not one",
        ),
    ];
    for (builder, expected) in cases {
        let (status, log) = start_failing(builder).await;
        assert!(!status.success());
        assert!(log.contains(expected), "no {expected:?} in:\n{log}");
    }
}

/// Runs the target Kamailio to completion on a config written by hand
/// around `module`: `dispatcher` says whether it loads the dispatcher, which
/// the shared harness always does. Returns the exit status and the log.
fn run_by_hand(module: &Path, dispatcher: bool) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kamailio.cfg");
    let list = dir.path().join("dispatcher.list");
    std::fs::write(&list, "").unwrap();
    let dispatcher = if dispatcher {
        format!(
            "loadmodule \"dispatcher.so\"\nmodparam(\"dispatcher\", \"list_file\", \"{}\")\n",
            list.display()
        )
    } else {
        String::new()
    };
    std::fs::write(
        &cfg,
        format!(
            "#!KAMAILIO\nlog_stderror=yes\nlisten=udp:127.0.0.1:0\n{dispatcher}\
             loadmodule \"{}\"\nmodparam(\"dsfeed\", \"feeder\", \"unix:/run/x.sock\")\n\
             request_route {{ drop; }}\n",
            module.display()
        ),
    )
    .unwrap();
    let output = target()
        .command(&[module.parent().unwrap()])
        .args(["-DD", "-E", "-f"])
        .arg(&cfg)
        .arg("-Y")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn needs_the_dispatcher_module() {
    let (status, log) = run_by_hand(&module_path(), false);
    assert!(!status.success());
    assert!(log.contains("the dispatcher module is not loaded"), "{log}");
}

/// dsfeed.so built for another Kamailio than the target: `make test` gives
/// the build for its other Kamailio (5.6.3 or 6.0.1) in
/// `DSFEED_FOREIGN_MODULE`; without it, a copy of this build whose
/// `module_version` names another version stands in.
fn foreign_module(scratch: &Path) -> PathBuf {
    if let Some(path) = std::env::var_os("DSFEED_FOREIGN_MODULE") {
        return PathBuf::from(path);
    }
    let ours = target().version();
    // "kamailio 6.0.1 (x86_64/linux)" -> "kamailio 9.9.9 (x86_64/linux)":
    // the same length, so the string table keeps its layout.
    let (name, rest) = ours.split_once(' ').unwrap();
    let (number, rest) = rest.split_once(' ').unwrap();
    let other = format!(
        "{name} {} {rest}",
        number.replace(|c: char| c.is_ascii_digit(), "9")
    );
    assert_ne!(ours, other);
    let mut bytes = std::fs::read(module_path()).unwrap();
    let mut replaced = 0;
    let mut at = 0;
    while let Some(found) = bytes[at..]
        .windows(ours.len())
        .position(|w| w == ours.as_bytes())
    {
        let start = at + found;
        bytes[start..start + ours.len()].copy_from_slice(other.as_bytes());
        replaced += 1;
        at = start + ours.len();
    }
    assert!(replaced > 0, "no {ours:?} in {}", module_path().display());
    let path = scratch.join("dsfeed.so");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_build_for_another_kamailio_is_refused_with_both_versions_and_the_fix() {
    let scratch = tempfile::tempdir().unwrap();
    let module = foreign_module(scratch.path());
    let (status, log) = run_by_hand(&module, true);
    assert!(!status.success(), "{log}");
    let ours = target().version();

    // Kamailio's own refusal names both versions ...
    let refusal = format!(
        "module version mismatch for {}; core: {ours}; module: ",
        module.display()
    );
    let built_for = log
        .lines()
        .find_map(|l| l.split_once(&refusal).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {refusal:?} in:\n{log}"));
    assert_ne!(built_for, ours);
    // ... and dsfeed.so adds the way out, before Kamailio exits.
    let hint = format!(
        "dsfeed [load]: dsfeed.so was built for {built_for} but this is {ours}: \
         Kamailio will refuse to load it; build dsfeed.so for this Kamailio"
    );
    assert!(log.contains(&hint), "no {hint:?} in:\n{log}");
    assert!(log.contains("make module KAMAILIO_ROOT=DIR"), "{log}");
}

#[tokio::test]
async fn a_panic_in_an_rpc_is_an_rpc_fault_and_kamailio_keeps_running() {
    let kamailio = panicking_at("dsfeed.status").start().await.unwrap();
    let fault = rpc(&kamailio, "dsfeed.status", &[]).await.unwrap_err();
    assert!(
        fault.contains("500") && fault.contains("internal error"),
        "{fault}"
    );
    let log = kamailio.log();
    assert!(log.contains("panicking on purpose"), "{log}");
    assert!(log.contains("dsfeed.status failed (panic"), "{log}");
    assert!(kamailio.is_running());
    // The same process serves the next call normally.
    assert_eq!(
        status(&kamailio).await.text("feeder"),
        "unix:/nonexistent/feed.sock"
    );
    assert!(rpc(&kamailio, "core.version", &[]).await.is_ok());
}

#[tokio::test]
async fn a_panic_in_mod_init_fails_the_start_cleanly() {
    let (status, log) = start_failing(panicking_at("mod_init")).await;
    assert!(log.contains("mod_init failed (panic"), "{log}");
    // An orderly exit through Kamailio's error path, not a signal.
    assert!(status.code().is_some(), "{status:?}");
}

/// The feed process is forked from `child_init(PROC_MAIN)`. If it could not
/// start, returning from `child_init` there would run Kamailio's main
/// process error path (or main loop) in that child; it must end itself.
#[tokio::test]
async fn a_feed_process_that_cannot_start_exits_without_returning_into_kamailio() {
    let builder = panicking_at("feed_process");
    // Kamailio may answer on ctl before it notices its child is gone.
    let (status, log) = match builder.start().await {
        Err(HarnessError::Exited { status, log }) => (status, log),
        Err(other) => panic!("kamailio did not start or exit: {other}"),
        Ok(kamailio) => {
            eventually(
                "Kamailio to stop without its feed process",
                WAIT,
                || async { kamailio.exit_status() },
            )
            .await;
            (kamailio.stop(), kamailio.log())
        }
    };
    assert!(
        !log.contains("error in init_child") && !log.contains("init_child(PROC_MAIN)"),
        "the feed process ran Kamailio's main-process error path:\n{log}"
    );
    assert!(
        log.contains("the dsfeed feed process failed (panic: DSFEED_TEST_PANIC=feed_process"),
        "{log}"
    );
    // The main process saw its child exit, and shut down in order.
    assert!(log.contains("exited normally, status=1"), "{log}");
    assert!(status.code().is_some(), "{status:?}");
}

#[tokio::test]
async fn the_feed_process_is_one_thread_and_survives_a_panic() {
    let kamailio = panicking_at("feed").start().await.unwrap();
    let pid = feed_pid(&kamailio).await;
    kamailio.wait_logged("the feed loop panicked").await;
    error_until(&kamailio, "").await;
    assert_eq!(
        threads(pid),
        1,
        "the dsfeed feed process must stay single-threaded"
    );
    assert_eq!(
        feed_pid(&kamailio).await,
        pid,
        "the process itself never restarts"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(kamailio.is_running());
}
