//! File mode end to end: the `dsfeed` binary writes dispatcher.list and
//! reloads a real Kamailio (5.6.3, or 6.0.1 in a Debian 13 root) over
//! binrpc; sipp shows where SIP goes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dsfeed_tests::feeder::{self, Args, Feeder};
use dsfeed_tests::loads::{Event, LoadLog};
use dsfeed_tests::sipp::{self, Backend};
use dsfeed_tests::{Kamailio, eventually, loaded, replace_file, sets, until_loaded};

/// Generous: CI runs these on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(20);

fn sets_yaml(set: u32, uris: &[&str]) -> String {
    let mut yaml = format!("sets:\n  {set}:\n");
    for uri in uris {
        yaml.push_str(&format!("    - {uri}\n"));
    }
    yaml
}

/// A Kamailio with `reload_delta`, and a feeder keeping it equal to a sets
/// file in Kamailio's directory whose set 1 holds `uris`; returns once
/// Kamailio has loaded them.
async fn fed_from_sets_file(reload_delta: u32, uris: &[&str]) -> (Kamailio, PathBuf, Feeder) {
    let builder = Kamailio::builder("").reload_delta(reload_delta);
    let kamailio = builder.start().await.unwrap();
    let sets_file = kamailio.dir().join("sets.yaml");
    replace_file(&sets_file, &sets_yaml(1, uris));
    let args = Args::default().sets_file(&sets_file).reloading(&kamailio);
    let feeder = Feeder::start(args, &kamailio.dir().join("dsfeed.log"));
    until_loaded(&kamailio, &sets(&[(1, uris)]), SETTLE).await;
    (kamailio, sets_file, feeder)
}

/// Edits set 1 of the sets file to `uris` and waits until Kamailio has them.
async fn edit(kamailio: &Kamailio, sets_file: &Path, uris: &[&str]) {
    replace_file(sets_file, &sets_yaml(1, uris));
    until_loaded(kamailio, &sets(&[(1, uris)]), SETTLE).await;
}

#[tokio::test]
async fn a_lone_edit_is_one_reload_that_kamailio_accepts() {
    // reload_delta 0: nothing throttles the lone edit but dsfeed's own
    // pacing, which a lone edit past the interval never meets.
    let (kamailio, sets_file, feeder) = fed_from_sets_file(0, &["sip:10.0.0.1:5060"]).await;
    let loads = LoadLog::follow(kamailio.log_path());
    let reloads = || feeder.times_logged("Kamailio reloaded dispatcher.list");
    let before = reloads();
    edit(&kamailio, &sets_file, &["sip:10.0.0.2:5060"]).await;
    assert_eq!(
        reloads(),
        before + 1,
        "one reload for one edit:\n{}",
        feeder.log()
    );
    assert_eq!(loads.count(Event::ReloadRefused), 0, "{}", kamailio.log());
}

#[tokio::test]
async fn edits_inside_reload_delta_end_on_the_newest() {
    let (kamailio, sets_file, feeder) = fed_from_sets_file(2, &["sip:10.0.0.1:5060"]).await;
    let loads = LoadLog::follow(kamailio.log_path());

    // Two more edits right away, inside reload_delta: Kamailio refuses the
    // reloads for a while, and still ends with the newest sets.
    replace_file(&sets_file, &sets_yaml(1, &["sip:10.0.0.3:5060"]));
    tokio::time::sleep(Duration::from_millis(150)).await;
    replace_file(
        &sets_file,
        &sets_yaml(1, &["sip:10.0.0.3:5060", "sip:10.0.0.4:5060"]),
    );
    let newest = sets(&[(1, &["sip:10.0.0.3:5060", "sip:10.0.0.4:5060"])]);
    until_loaded(&kamailio, &newest, SETTLE).await;
    let on_disk = std::fs::read_to_string(kamailio.list_path()).unwrap();
    assert!(on_disk.contains("1 sip:10.0.0.4:5060 0 0\n"), "{on_disk}");
    assert!(loads.count(Event::ReloadRefused) > 0, "{}", kamailio.log());
    // The refusals are logged.
    feeder.assert_logged("reload_delta");
}

#[tokio::test]
async fn sip_requests_follow_the_sets() {
    let (a, b) = (Backend::start(), Backend::start());
    let (kamailio, sets_file, _feeder) = fed_from_sets_file(1, &[&a.uri()]).await;
    let sip = kamailio.sip_addr().to_string();
    let reached = sipp::call(&sip, 1, 4, kamailio.dir());
    assert_eq!(reached, vec![a.name(); 4]);

    // B added: round robin reaches both.
    edit(&kamailio, &sets_file, &[&a.uri(), &b.uri()]).await;
    let reached = sipp::call(&sip, 1, 6, kamailio.dir());
    assert_eq!(reached.len(), 6, "{reached:?}");
    assert!(
        reached.contains(&a.name()) && reached.contains(&b.name()),
        "{reached:?}"
    );

    // A removed: no request reaches it any more.
    edit(&kamailio, &sets_file, &[&b.uri()]).await;
    let reached = sipp::call(&sip, 1, 4, kamailio.dir());
    assert_eq!(reached, vec![b.name(); 4]);
    assert!(kamailio.is_running());
}

#[tokio::test]
async fn static_only_start_writes_the_file_and_kamailio_loads_it_with_ipv6() {
    let kamailio = Kamailio::builder("").ipv6().start().await.unwrap();
    assert!(loaded(&kamailio).await.is_empty());
    let rpc = kamailio.ctl_tcp().to_string();
    let list = kamailio.list_path().to_str().unwrap();
    let _feeder = Feeder::start(
        [
            "-static",
            "1=127.0.0.1:5070,[2001:db8::1]",
            "-static",
            "2=sip:127.0.0.1:5080;transport=tcp",
            "-o",
            list,
            "--rpc",
            &rpc,
        ],
        &kamailio.dir().join("dsfeed.log"),
    );
    let expected = sets(&[
        (1, &["sip:127.0.0.1:5070", "sip:[2001:db8::1]:5060"]),
        (2, &["sip:127.0.0.1:5080;transport=tcp"]),
    ]);
    until_loaded(&kamailio, &expected, SETTLE).await;
    let on_disk = std::fs::read_to_string(list).unwrap();
    assert!(
        on_disk.contains("1 sip:[2001:db8::1]:5060 0 0\n"),
        "{on_disk}"
    );
}

#[tokio::test]
async fn once_writes_reloads_and_exits() {
    let kamailio = Kamailio::start("").await.unwrap();
    let rpc = kamailio.ctl_udp().to_string();
    let list = kamailio.list_path().to_str().unwrap();
    feeder::succeeded(&feeder::run(&[
        "--once",
        "--static",
        "7=127.0.0.1:5099",
        "-o",
        list,
        "-p",
        &port_of(&rpc),
    ]));
    assert_eq!(
        loaded(&kamailio).await,
        sets(&[(7, &["sip:127.0.0.1:5099"])])
    );

    // `-o -` prints the list and touches nothing else.
    let out = feeder::run(&["--once", "--static", "3=[::1]:5062", "-o", "-"]);
    let stdout = feeder::succeeded(&out);
    assert!(
        stdout.starts_with("# dispatcher.list generated by dsfeed, version "),
        "{stdout}"
    );
    assert!(stdout.ends_with("\n3 sip:[::1]:5062 0 0\n"), "{stdout}");
}

/// `udp:127.0.0.1:PORT` → `PORT`, for the `-p` flag.
fn port_of(addr: &str) -> String {
    addr.rsplit(':').next().unwrap().to_owned()
}

#[test]
fn bad_flags_exit_2_naming_the_culprit() {
    for (args, culprit) in [
        (&["--static", "1=10.0.0.1:99999"][..], "99999"),
        (&["-static", "1=2001:db8::1:5060x"], "brackets"),
        (&["--static", "one=10.0.0.1"], "'one'"),
        (
            &["--static", "1=10.0.0.1", "--rpc", "localhost:9998"],
            "localhost:9998",
        ),
        (&["--static", "1=10.0.0.1", "--frobnicate"], "--frobnicate"),
        (&[], "no source"),
    ] {
        let out = feeder::run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(culprit), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn bad_input_never_replaces_the_last_good_list() {
    let (kamailio, sets_file, feeder) = fed_from_sets_file(1, &["sip:10.0.0.1:5060"]).await;
    let good = sets(&[(1, &["sip:10.0.0.1:5060"])]);
    let good_file = std::fs::read_to_string(kamailio.list_path()).unwrap();

    let bad_edits = [
        ("sets:\n  1: [\n", "unclosed bracket"),
        (
            "sets:\n  1:\n    - uri: sip:10.0.0.2:5060\n      attrs: \"a=1 b=2\"\n",
            "'a=1 b=2'",
        ),
        (
            "sets:\n  1:\n    - uri: sip:10.0.0.2:5060\n      attrs: \"a=1\\nb=2\"\n",
            "'a=1\nb=2'",
        ),
        ("sets:\n  1:\n    - 10.0.0.2:99999\n", "99999"),
        // Nothing after `sets:` or a set id is a cut-short file, not "empty".
        ("sets:\n", "'sets' is missing or empty"),
        ("sets:\n  1:\n", "set 1 has nothing after it"),
    ];
    for (text, culprit) in bad_edits {
        replace_file(&sets_file, text);
        feeder.wait_logged(culprit).await;
        assert_eq!(
            std::fs::read_to_string(kamailio.list_path()).unwrap(),
            good_file
        );
        assert_eq!(loaded(&kamailio).await, good);
    }

    // A good edit after the bad ones flows again.
    edit(&kamailio, &sets_file, &["sip:10.0.0.9:5060"]).await;

    // Removing every set on purpose is written `sets: {}`, and said loudly.
    replace_file(&sets_file, "sets: {}\n");
    until_loaded(&kamailio, &sets(&[]), SETTLE).await;
    feeder.assert_logged("manages no set at all");
    edit(&kamailio, &sets_file, &["sip:10.0.0.9:5060"]).await;

    // `--once` with bad input fails, naming the file and the culprit, and
    // leaves the list alone.
    replace_file(
        &sets_file,
        "sets:\n  2:\n    - uri: sip:10.0.0.5\n      attrs: 'x=#1'\n",
    );
    let before = std::fs::read_to_string(kamailio.list_path()).unwrap();
    let out = feeder::run(&[
        "--once",
        "--sets-file",
        sets_file.to_str().unwrap(),
        "-o",
        kamailio.list_path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("sets.yaml")
            && stderr.contains("set 2, entry 1")
            && stderr.contains("x=#1"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(kamailio.list_path()).unwrap(),
        before
    );
}

#[tokio::test]
async fn an_unreachable_rpc_address_is_reported_and_nothing_is_lost() {
    let kamailio = Kamailio::start("1 sip:10.0.0.1:5060 0 0\n").await.unwrap();
    let dead = kamailio.dir().join("nobody-listens.sock");
    let dead_rpc = format!("unix:{}", dead.display());
    let list = kamailio.dir().join("elsewhere.list");

    // --once: a clear error naming the address.
    let out = feeder::run(&[
        "--once",
        "--static",
        "1=10.0.0.2",
        "-o",
        list.to_str().unwrap(),
        "--rpc",
        &dead_rpc,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&dead_rpc), "{stderr}");

    // The daemon writes the file, holds the reload until Kamailio answers,
    // and says why; Kamailio keeps its sets.
    let mut feeder = Feeder::start(
        [
            "--static",
            "1=10.0.0.3",
            "-o",
            list.to_str().unwrap(),
            "--rpc",
            &dead_rpc,
        ],
        &kamailio.dir().join("dsfeed.log"),
    );
    eventually("the feeder to report the dead address", SETTLE, || async {
        let log = feeder.log();
        (log.contains("does not answer") && log.contains(&dead_rpc)).then_some(())
    })
    .await;
    assert!(
        feeder.exited().is_none(),
        "the feeder keeps running:\n{}",
        feeder.log()
    );
    assert_eq!(
        loaded(&kamailio).await,
        sets(&[(1, &["sip:10.0.0.1:5060"])])
    );
}
