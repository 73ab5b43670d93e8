//! `--mode auto`, the sidecar default: the same feeder command serves a
//! stock Kamailio through dispatcher.list + reload, and steps aside for a
//! Kamailio running dsfeed.so, which applies the feed in memory.

use std::path::Path;

use dsfeed_tests::feeder::Feeder;
use dsfeed_tests::module::WAIT;
use dsfeed_tests::{Kamailio, eventually, replace_file, sets, until_loaded};

/// `dsfeed --sets-file … --listen unix:… -o LIST --rpc CTL`, no --mode.
fn auto_feeder(kamailio: &Kamailio, sets_file: &Path, socket: &Path, log: &Path) -> Feeder {
    let listen = format!("unix:{}", socket.display());
    let rpc = kamailio.ctl_unix().to_string();
    Feeder::start(
        &[
            "--sets-file",
            sets_file.to_str().unwrap(),
            "--listen",
            &listen,
            "-o",
            kamailio.list_path().to_str().unwrap(),
            "--rpc",
            &rpc,
        ],
        log,
    )
}

#[tokio::test]
async fn auto_mode_reloads_a_stock_kamailio() {
    let work = tempfile::tempdir().unwrap();
    let kamailio = Kamailio::builder("").reload_delta(1).start().await.unwrap();
    let sets_file = work.path().join("sets.yaml");
    replace_file(&sets_file, "sets:\n  1: [sip:10.0.0.1:5060]\n");
    let feeder = auto_feeder(
        &kamailio,
        &sets_file,
        &work.path().join("feed.sock"),
        &work.path().join("dsfeed.log"),
    );
    until_loaded(&kamailio, &sets(&[(1, &["sip:10.0.0.1:5060"])]), WAIT).await;
    replace_file(&sets_file, "sets:\n  1: [sip:10.0.0.2:5060]\n");
    until_loaded(&kamailio, &sets(&[(1, &["sip:10.0.0.2:5060"])]), WAIT).await;
    assert!(
        feeder.log().contains("without dsfeed.so"),
        "{}",
        feeder.log()
    );
}

#[tokio::test]
async fn auto_mode_leaves_a_module_kamailio_to_the_module() {
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("feed.sock");
    let list = "9 sip:10.9.9.9:5060 0 0\n";
    let kamailio = dsfeed_tests::module::kamailio(list)
        .modparam("dsfeed", "feeder", format!("unix:{}", socket.display()))
        .modparam("dsfeed", "reconnect_min_ms", 100)
        .modparam("dsfeed", "reconnect_max_ms", 500)
        .modparam("dsfeed", "min_swap_interval_ms", 500)
        .start()
        .await
        .unwrap();
    let sets_file = work.path().join("sets.yaml");
    replace_file(&sets_file, "sets:\n  1: [sip:10.0.0.1:5060]\n");
    let feeder = auto_feeder(
        &kamailio,
        &sets_file,
        &socket,
        &work.path().join("dsfeed.log"),
    );

    let first = sets(&[(1, &["sip:10.0.0.1:5060"]), (9, &["sip:10.9.9.9:5060"])]);
    until_loaded(&kamailio, &first, WAIT).await;
    replace_file(&sets_file, "sets:\n  1: [sip:10.0.0.2:5060]\n");
    let second = sets(&[(1, &["sip:10.0.0.2:5060"]), (9, &["sip:10.9.9.9:5060"])]);
    until_loaded(&kamailio, &second, WAIT).await;

    eventually("the feeder to step aside for the module", WAIT, || async {
        feeder.log().contains("runs dsfeed.so").then_some(())
    })
    .await;
    let log = feeder.log();
    assert!(
        !log.contains("wrote dispatcher.list") && !log.contains("reloaded"),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(kamailio.list_path()).unwrap(), list);
    assert!(
        !kamailio.log().contains("dispatcher_rpc_reload"),
        "no reload reached Kamailio"
    );
}
