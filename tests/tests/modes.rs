//! `--mode auto`, the sidecar default: the same feeder command serves a
//! stock Kamailio through dispatcher.list + reload, and steps aside for a
//! Kamailio running dsfeed.so, which applies the feed in memory.

use std::path::Path;

use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::module::{WAIT, fed_by};
use dsfeed_tests::{Kamailio, replace_file, sets, until_loaded};

/// `dsfeed --sets-file WORK/sets.yaml --listen unix:WORK/feed.sock -o LIST
/// --rpc CTL`, no --mode, logging to WORK/dsfeed.log.
fn auto_feeder(kamailio: &Kamailio, work: &Path) -> Feeder {
    let args = Args::default()
        .sets_file(&work.join("sets.yaml"))
        .listen_unix(&work.join("feed.sock"));
    Feeder::start(args.reloading(kamailio), &work.join("dsfeed.log"))
}

#[tokio::test]
async fn auto_mode_reloads_a_stock_kamailio() {
    let work = tempfile::tempdir().unwrap();
    let kamailio = Kamailio::builder("").reload_delta(1).start().await.unwrap();
    let sets_file = work.path().join("sets.yaml");
    replace_file(&sets_file, "sets:\n  1: [sip:10.0.0.1:5060]\n");
    let feeder = auto_feeder(&kamailio, work.path());
    until_loaded(&kamailio, &sets(&[(1, &["sip:10.0.0.1:5060"])]), WAIT).await;
    replace_file(&sets_file, "sets:\n  1: [sip:10.0.0.2:5060]\n");
    until_loaded(&kamailio, &sets(&[(1, &["sip:10.0.0.2:5060"])]), WAIT).await;
    feeder.assert_logged("without dsfeed.so");
}

#[tokio::test]
async fn auto_mode_leaves_a_module_kamailio_to_the_module() {
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("feed.sock");
    let list = "9 sip:10.9.9.9:5060 0 0\n";
    let kamailio = fed_by(list, format!("unix:{}", socket.display()))
        .modparam("dsfeed", "min_swap_interval_ms", 500)
        .start()
        .await
        .unwrap();
    let sets_file = work.path().join("sets.yaml");
    replace_file(&sets_file, "sets:\n  1: [sip:10.0.0.1:5060]\n");
    let feeder = auto_feeder(&kamailio, work.path());

    let first = sets(&[(1, &["sip:10.0.0.1:5060"]), (9, &["sip:10.9.9.9:5060"])]);
    until_loaded(&kamailio, &first, WAIT).await;
    replace_file(&sets_file, "sets:\n  1: [sip:10.0.0.2:5060]\n");
    let second = sets(&[(1, &["sip:10.0.0.2:5060"]), (9, &["sip:10.9.9.9:5060"])]);
    until_loaded(&kamailio, &second, WAIT).await;

    feeder.wait_logged("runs dsfeed.so").await;
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
