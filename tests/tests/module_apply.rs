//! Snapshots from a feeder applied to a real Kamailio's dispatcher: sets
//! replaced in memory with no reload, sets outside the feed kept, runtime
//! state carried over, swaps paced, invalid snapshots NACKed.

mod module_harness;

use std::time::{Duration, Instant};

use module_harness::feeder::{TestFeeder, response};
use module_harness::kamailio::{Kamailio, Setup, wait_for};

const ANSWER: Duration = Duration::from_secs(30);

fn sets_of(kamailio: &Kamailio) -> Vec<(u32, Vec<(String, String)>)> {
    kamailio.sets().into_iter().collect()
}

fn uris(kamailio: &Kamailio, set: u32) -> Vec<String> {
    kamailio
        .sets()
        .get(&set)
        .map(|d| d.iter().map(|(uri, _)| uri.clone()).collect())
        .unwrap_or_default()
}

fn flags(kamailio: &Kamailio, set: u32, uri: &str) -> String {
    kamailio.sets()[&set]
        .iter()
        .find(|(u, _)| u == uri)
        .map(|(_, f)| f.clone())
        .unwrap_or_else(|| panic!("{uri} not in set {set}"))
}

async fn start(setup: Setup) -> (tempfile::TempDir, TestFeeder, Kamailio) {
    let dir = tempfile::tempdir().unwrap();
    let feeder = TestFeeder::unix(&dir.path().join("feed.sock")).await;
    let kamailio = Kamailio::start(
        setup
            .dsfeed("feeder", &format!("unix:{}", feeder.socket.display()))
            .dsfeed("node_id", "kam-apply"),
    );
    feeder.wait_streams(1, ANSWER).await;
    (dir, feeder, kamailio)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_replace_sets_in_memory_and_leave_the_others() {
    let original = "1 sip:10.0.0.1:5060 0 0\n2 sip:10.0.0.2:5060 0 0\n";
    let (_dir, feeder, kamailio) = start(Setup::default().list(original)).await;
    let hello = &feeder.received()[0].request;
    assert_eq!(hello.node.as_ref().unwrap().id, "kam-apply");
    assert!(
        hello
            .node
            .as_ref()
            .unwrap()
            .user_agent
            .contains("kamailio 5.6.3")
    );
    assert!(hello.set_ids.is_empty());
    assert_eq!(hello.version_info, "");

    feeder.publish(response(
        "v1",
        "n1",
        &[
            (
                1,
                &[("sip:10.1.0.1:5060", 0, 0), ("sip:10.1.0.2:5060", 0, 0)],
            ),
            (3, &[("sip:10.3.0.1:5060;transport=tcp", 0, 0)]),
        ],
    ));
    let ack = feeder.wait_answer("n1", ANSWER).await;
    assert_eq!(ack.version_info, "v1");
    assert!(ack.error_detail.is_none(), "{ack:?}");

    assert_eq!(
        uris(&kamailio, 1),
        ["sip:10.1.0.1:5060", "sip:10.1.0.2:5060"]
    );
    assert_eq!(
        uris(&kamailio, 2),
        ["sip:10.0.0.2:5060"],
        "a set outside the feed is kept"
    );
    assert_eq!(uris(&kamailio, 3), ["sip:10.3.0.1:5060;transport=tcp"]);
    let status = kamailio.status();
    assert_eq!(status.int("connected"), 1);
    assert_eq!(status.str("applied_version"), "v1");
    assert!(!status.str("applied_at").is_empty());
    assert_eq!(status.int("swaps"), 1);
    assert_eq!(status.int("destinations"), 4);
    let sets = status.get("sets").unwrap().pairs();
    let expected: Vec<(String, String)> = [("1", "2"), ("2", "1"), ("3", "1")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(sets, expected);
    // In memory only: the dispatcher's file is untouched.
    let file = std::fs::read_to_string(kamailio.dir().join("dispatcher.list")).unwrap();
    assert_eq!(file, original);

    // An empty set in the feed empties that set; set 2 still stays.
    feeder.publish(response(
        "v2",
        "n2",
        &[(1, &[]), (3, &[("sip:10.3.0.1:5060", 0, 0)])],
    ));
    assert!(
        feeder
            .wait_answer("n2", ANSWER)
            .await
            .error_detail
            .is_none()
    );
    let sets = sets_of(&kamailio);
    assert_eq!(sets.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2, 3]);
    assert!(kamailio.log().contains("applied version \"v2\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_state_survives_swaps_and_feed_changes_win() {
    let (_dir, feeder, kamailio) =
        start(Setup::default().dsfeed_int("min_swap_interval_ms", 200)).await;
    let a = "sip:10.0.0.1:5060";
    let b = "sip:10.0.0.2:5060";
    let c = "sip:10.0.0.3:5060";
    feeder.publish(response("v1", "n1", &[(1, &[(a, 0, 0), (b, 0, 0)])]));
    feeder.wait_answer("n1", ANSWER).await;

    // Probing finds a down; an operator disables b.
    kamailio
        .rpc(&["dispatcher.set_state", "ip", "1", a])
        .unwrap();
    kamailio
        .rpc(&["dispatcher.set_state", "d", "1", b])
        .unwrap();
    assert_eq!(flags(&kamailio, 1, a), "IP");
    assert_eq!(flags(&kamailio, 1, b), "DX");

    feeder.publish(response(
        "v2",
        "n2",
        &[(1, &[(a, 0, 0), (b, 0, 0), (c, 0, 0)])],
    ));
    assert!(
        feeder
            .wait_answer("n2", ANSWER)
            .await
            .error_detail
            .is_none()
    );
    assert_eq!(uris(&kamailio, 1), [a, b, c]);
    assert_eq!(
        flags(&kamailio, 1, a),
        "IP",
        "inactive+probing survives the swap"
    );
    assert_eq!(
        flags(&kamailio, 1, b),
        "DX",
        "ds_mark_dst's disable survives the swap"
    );
    assert_eq!(flags(&kamailio, 1, c), "AX");

    // The feed drains c, then brings it back.
    feeder.publish(response(
        "v3",
        "n3",
        &[(1, &[(a, 0, 0), (b, 0, 0), (c, 4, 0)])],
    ));
    feeder.wait_answer("n3", ANSWER).await;
    assert_eq!(flags(&kamailio, 1, c), "DX");
    feeder.publish(response(
        "v4",
        "n4",
        &[(1, &[(a, 0, 0), (b, 0, 0), (c, 0, 0)])],
    ));
    feeder.wait_answer("n4", ANSWER).await;
    assert_eq!(flags(&kamailio, 1, c), "AX");
    assert_eq!(flags(&kamailio, 1, a), "IP");
    assert_eq!(kamailio.status().int("swaps"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_paced_and_ends_on_the_newest_snapshot() {
    let interval = Duration::from_millis(2000);
    let (_dir, feeder, kamailio) =
        start(Setup::default().dsfeed_int("min_swap_interval_ms", interval.as_millis() as i64))
            .await;
    let dest = |n: u32| format!("sip:10.0.{n}.1:5060");
    feeder.publish(response("v1", "n1", &[(1, &[(&dest(1), 0, 0)])]));
    feeder.wait_answer("n1", ANSWER).await;
    let first_ack = Instant::now();

    for n in 2..=6 {
        let uri = dest(n);
        feeder.publish(response(
            &format!("v{n}"),
            &format!("n{n}"),
            &[(1, &[(&uri, 0, 0)])],
        ));
    }
    let last = feeder.wait_answer("n6", ANSWER).await;
    let gap = first_ack.elapsed();
    assert_eq!(last.version_info, "v6");
    assert!(last.error_detail.is_none(), "{last:?}");
    assert_eq!(uris(&kamailio, 1), [dest(6)]);
    // The burst waited for the interval (a lower bound: load only adds).
    assert!(gap >= interval / 2, "second swap {gap:?} after the first");

    // Every response was answered; the ones overtaken by a newer one say so.
    let mut superseded = 0;
    for n in 2..=5 {
        let answer = feeder.wait_answer(&format!("n{n}"), ANSWER).await;
        if let Some(error) = answer.error_detail {
            assert!(error.message.contains("superseded"), "{error:?}");
            assert_eq!(answer.version_info, "v1", "a NACK names the version kept");
            superseded += 1;
        }
    }
    assert!(superseded >= 1);
    let swaps = kamailio.status().int("swaps");
    assert!(
        swaps < 6,
        "{swaps} swaps for 6 snapshots: the burst was not coalesced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_snapshots_are_nacked_and_the_sets_stay() {
    let (_dir, feeder, kamailio) =
        start(Setup::default().dsfeed_int("min_swap_interval_ms", 200)).await;
    feeder.publish(response("v1", "n1", &[(1, &[("sip:10.0.0.1:5060", 0, 0)])]));
    feeder.wait_answer("n1", ANSWER).await;

    feeder.send_only(response(
        "v2",
        "n2",
        &[(1, &[("sip:10.0.0.9:5060", 64, 0)])],
    ));
    let nack = feeder.wait_answer("n2", ANSWER).await;
    assert_eq!(nack.version_info, "v1");
    let message = nack.error_detail.unwrap().message;
    assert!(
        message.contains("set 1") && message.contains("flags"),
        "{message}"
    );
    assert_eq!(uris(&kamailio, 1), ["sip:10.0.0.1:5060"]);
    let status = kamailio.status();
    assert_eq!(status.str("applied_version"), "v1");
    assert_eq!(status.int("nacks"), 1);
    assert!(status.str("last_error").contains("flags"), "{status:?}");

    // A destination the dispatcher itself drops (no such host) is
    // reported, and the rest of the snapshot is applied.
    feeder.publish(response(
        "v3",
        "n3",
        &[(
            1,
            &[
                ("sip:10.0.0.1:5060", 0, 0),
                ("sip:no-such-host.invalid:5060", 0, 0),
            ],
        )],
    ));
    let ack = feeder.wait_answer("n3", ANSWER).await;
    assert!(ack.error_detail.is_none());
    assert_eq!(uris(&kamailio, 1), ["sip:10.0.0.1:5060"]);
    let status = wait_for("the dropped destination in the status", ANSWER, || {
        let status = kamailio.status();
        status
            .str("last_error")
            .contains("no-such-host")
            .then_some(status)
    });
    assert!(
        status.str("last_error").contains("did not load 1"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_file_sync_gives_a_cold_restart_the_last_sets() {
    let dir = tempfile::tempdir().unwrap();
    let mut feeder = TestFeeder::unix(&dir.path().join("feed.sock")).await;
    let setup = || {
        Setup::default()
            .dsfeed(
                "feeder",
                &format!("unix:{}", dir.path().join("feed.sock").display()),
            )
            .dsfeed_int("list_file_sync", 1)
            .dsfeed_int("min_swap_interval_ms", 200)
    };
    let kamailio = Kamailio::start(setup().list("7 sip:10.7.0.1:5060 0 0\n"));
    feeder.wait_streams(1, ANSWER).await;
    feeder.publish(response(
        "v1",
        "n1",
        &[(
            1,
            &[("sip:10.1.0.1:5060", 4, 5), ("sip:10.1.0.2:5060", 0, 1)],
        )],
    ));
    feeder.wait_answer("n1", ANSWER).await;
    let file = std::fs::read_to_string(kamailio.dir().join("dispatcher.list")).unwrap();
    assert!(
        file.starts_with("# written by dsfeed.so: feed version v1\n"),
        "{file}"
    );
    assert!(file.contains("1 sip:10.1.0.1:5060 4 5\n"), "{file}");
    assert!(file.contains("7 sip:10.7.0.1:5060 0 0\n"), "{file}");
    assert!(kamailio.status().int("list_file_sync") == 1);

    // Cold restart with the feeder down: the last applied sets come back.
    feeder.stop().await;
    let kept = kamailio.stop();
    let mut again = setup();
    again.list = None;
    let kamailio =
        Kamailio::try_start_in(kept, again).unwrap_or_else(|failed| panic!("{failed:?}"));
    assert_eq!(
        uris(&kamailio, 1),
        ["sip:10.1.0.1:5060", "sip:10.1.0.2:5060"]
    );
    assert_eq!(flags(&kamailio, 1, "sip:10.1.0.1:5060"), "DX");
    assert_eq!(uris(&kamailio, 7), ["sip:10.7.0.1:5060"]);
}
