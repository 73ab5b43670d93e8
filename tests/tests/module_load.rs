//! dsfeed.so in a real Kamailio 5.6.3: it loads, answers `dsfeed.status`,
//! refuses bad parameters by name, and contains panics.

mod module_harness;

use std::time::Duration;

use module_harness::kamailio::{Kamailio, Setup, wait_for};

#[test]
fn loads_and_reports_status_without_a_feeder() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-feeder.sock");
    let kamailio = Kamailio::start(
        Setup::default()
            .list("1 sip:10.0.0.1:5060 0 0\n2 sip:10.0.0.2:5060 0 0\n")
            .dsfeed("feeder", &format!("unix:{}", socket.display()))
            .dsfeed("node_id", "kam-test-0")
            .dsfeed_int("reconnect_max_ms", 1000),
    );
    let status = wait_for(
        "a failed connect in dsfeed.status",
        Duration::from_secs(30),
        || {
            let status = kamailio.status();
            (!status.str("last_error").is_empty()).then_some(status)
        },
    );
    assert_eq!(status.int("connected"), 0);
    assert!(
        ["connecting", "backoff"].contains(&status.str("state")),
        "{status:?}"
    );
    assert_eq!(status.str("feeder"), format!("unix:{}", socket.display()));
    assert_eq!(status.str("node_id"), "kam-test-0");
    assert_eq!(status.str("applied_version"), "");
    assert_eq!(status.int("swaps"), 0);
    assert_eq!(status.int("min_swap_interval_ms"), 1000);
    assert!(
        status
            .str("last_error")
            .contains(&socket.display().to_string()),
        "{status:?}"
    );
    // No feeder never means no sets: the list file's sets are untouched.
    let sets = kamailio.sets();
    assert_eq!(sets.keys().copied().collect::<Vec<_>>(), [1, 2]);
    assert!(
        kamailio.log().contains("dsfeed [feed]: feeder unix:"),
        "log goes through Kamailio's logger"
    );
}

#[test]
fn bad_parameters_stop_kamailio_with_the_culprit_named() {
    let cases: [(Setup, &str); 4] = [
        (Setup::default(), "modparam dsfeed feeder is required"),
        (
            Setup::default()
                .dsfeed("feeder", "unix:/run/x.sock")
                .dsfeed_int("min_swap_interval_ms", 5),
            "min_swap_interval_ms 5 is below 100",
        ),
        (
            Setup::default().dsfeed("feeder", "grpc://feeder:1"),
            "feeder \"grpc://feeder:1\"",
        ),
        (
            Setup::default()
                .dsfeed("feeder", "http://feeder:1")
                .dsfeed("tls_ca", "/etc/hostname"),
            "tls_ca needs an https:// feeder",
        ),
    ];
    for (setup, expected) in cases {
        let failed = match Kamailio::try_start(setup) {
            Ok(_) => panic!("kamailio started despite: {expected}"),
            Err(failed) => failed,
        };
        let status = failed.status.expect("kamailio should exit");
        assert!(!status.success());
        assert!(
            failed.log.contains(expected),
            "no {expected:?} in:\n{}",
            failed.log
        );
    }
}

#[test]
fn needs_the_dispatcher_module() {
    let mut setup = Setup::default().dsfeed("feeder", "unix:/run/x.sock");
    setup.load_dispatcher = false;
    let failed = match Kamailio::try_start(setup) {
        Ok(_) => panic!("kamailio started without the dispatcher module"),
        Err(failed) => failed,
    };
    assert!(!failed.status.unwrap().success());
    assert!(
        failed.log.contains("the dispatcher module is not loaded"),
        "{}",
        failed.log
    );
}

#[test]
fn a_panic_in_an_rpc_is_an_rpc_fault_and_kamailio_keeps_running() {
    let mut kamailio = Kamailio::start(
        Setup::default()
            .dsfeed("feeder", "unix:/nonexistent/feed.sock")
            .env("DSFEED_TEST_PANIC", "dsfeed.status"),
    );
    let fault = kamailio.rpc(&["dsfeed.status"]).unwrap_err();
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
        kamailio.status().str("feeder"),
        "unix:/nonexistent/feed.sock"
    );
    assert!(kamailio.rpc(&["core.version"]).is_ok());
}

#[test]
fn a_panic_in_mod_init_fails_the_start_cleanly() {
    let failed = match Kamailio::try_start(
        Setup::default()
            .dsfeed("feeder", "unix:/nonexistent/feed.sock")
            .env("DSFEED_TEST_PANIC", "mod_init"),
    ) {
        Ok(_) => panic!("kamailio started despite the panic in mod_init"),
        Err(failed) => failed,
    };
    assert!(
        failed.log.contains("mod_init failed (panic"),
        "{}",
        failed.log
    );
    // An orderly exit through Kamailio's error path, not a signal.
    let status = failed.status.unwrap();
    assert!(status.code().is_some(), "{status:?}");
}

#[test]
fn the_feed_process_is_one_thread_and_survives_a_panic() {
    let kamailio = Kamailio::start(
        Setup::default()
            .dsfeed("feeder", "unix:/nonexistent/feed.sock")
            .env("DSFEED_TEST_PANIC", "feed"),
    );
    let pid = feed_pid(&kamailio);
    wait_for("the restarted feed loop", Duration::from_secs(30), || {
        kamailio
            .log()
            .contains("the feed loop panicked")
            .then_some(())
    });
    wait_for(
        "a connect attempt after the panic",
        Duration::from_secs(30),
        || (!kamailio.status().str("last_error").is_empty()).then_some(()),
    );
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert_eq!(
        threads, 1,
        "the dsfeed feed process must stay single-threaded"
    );
    assert_eq!(
        feed_pid(&kamailio),
        pid,
        "the process itself never restarts"
    );
}

/// The pid of the "dsfeed feed" process, from `core.psx`.
fn feed_pid(kamailio: &Kamailio) -> u32 {
    let processes = kamailio.rpc(&["core.psx"]).unwrap();
    processes
        .iter()
        .find(|p| p.str("DSC") == "dsfeed feed")
        .map(|p| p.int("PID") as u32)
        .expect("no dsfeed feed process in core.psx")
}
