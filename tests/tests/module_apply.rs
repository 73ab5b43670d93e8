//! Snapshots from a feeder applied to a real Kamailio's dispatcher: sets
//! replaced in memory with no reload, sets outside the feed kept, runtime
//! state carried over, swaps paced, invalid snapshots NACKed.

mod module_harness;

use std::time::{Duration, Instant};

use dsfeed_tests::{Kamailio, KamailioBuilder};
use module_harness::feeder::{TestFeeder, response};
use module_harness::{WAIT, flags, kamailio, rpc, sets, status, status_until, uris};

async fn start(builder: KamailioBuilder) -> (tempfile::TempDir, TestFeeder, Kamailio) {
    let dir = tempfile::tempdir().unwrap();
    let feeder = TestFeeder::unix(&dir.path().join("feed.sock")).await;
    let kamailio = builder
        .modparam(
            "dsfeed",
            "feeder",
            format!("unix:{}", feeder.socket.display()),
        )
        .modparam("dsfeed", "node_id", "kam-apply")
        .start()
        .await
        .unwrap();
    feeder.wait_streams(1, WAIT).await;
    (dir, feeder, kamailio)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_replace_sets_in_memory_and_leave_the_others() {
    let original = "1 sip:10.0.0.1:5060 0 0\n2 sip:10.0.0.2:5060 0 0\n";
    let (_dir, feeder, kamailio) = start(kamailio(original)).await;
    let hello = &feeder.received()[0].request;
    assert_eq!(hello.node.as_ref().unwrap().id, "kam-apply");
    let user_agent = &hello.node.as_ref().unwrap().user_agent;
    assert!(
        user_agent.contains(dsfeed_tests::target().version()),
        "{user_agent}"
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
    let ack = feeder.wait_answer("n1", WAIT).await;
    assert_eq!(ack.version_info, "v1");
    assert!(ack.error_detail.is_none(), "{ack:?}");

    assert_eq!(
        uris(&kamailio, 1).await,
        ["sip:10.1.0.1:5060", "sip:10.1.0.2:5060"]
    );
    assert_eq!(
        uris(&kamailio, 2).await,
        ["sip:10.0.0.2:5060"],
        "a set outside the feed is kept"
    );
    assert_eq!(
        uris(&kamailio, 3).await,
        ["sip:10.3.0.1:5060;transport=tcp"]
    );
    let status = status(&kamailio).await;
    assert_eq!(status.int("connected"), 1);
    assert_eq!(status.text("applied_version"), "v1");
    assert!(!status.text("applied_at").is_empty());
    assert_eq!(status.int("swaps"), 1);
    assert_eq!(status.int("destinations"), 4);
    assert_eq!(status.sets(), [(1, 2), (2, 1), (3, 1)]);
    // In memory only: the dispatcher's file is untouched.
    assert_eq!(
        std::fs::read_to_string(kamailio.list_path()).unwrap(),
        original
    );

    // An empty set in the feed empties that set; set 2 still stays.
    feeder.publish(response(
        "v2",
        "n2",
        &[(1, &[]), (3, &[("sip:10.3.0.1:5060", 0, 0)])],
    ));
    assert!(feeder.wait_answer("n2", WAIT).await.error_detail.is_none());
    let ids: Vec<u32> = sets(&kamailio).await.into_keys().collect();
    assert_eq!(ids, [2, 3]);
    assert!(kamailio.log().contains("applied version \"v2\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_state_survives_swaps_and_feed_changes_win() {
    let (_dir, feeder, kamailio) =
        start(kamailio("").modparam("dsfeed", "min_swap_interval_ms", 200)).await;
    let a = "sip:10.0.0.1:5060";
    let b = "sip:10.0.0.2:5060";
    let c = "sip:10.0.0.3:5060";
    feeder.publish(response("v1", "n1", &[(1, &[(a, 0, 0), (b, 0, 0)])]));
    feeder.wait_answer("n1", WAIT).await;

    // Probing finds a down; an operator disables b.
    rpc(&kamailio, "dispatcher.set_state", &["ip", "1", a])
        .await
        .unwrap();
    rpc(&kamailio, "dispatcher.set_state", &["d", "1", b])
        .await
        .unwrap();
    assert_eq!(flags(&kamailio, 1, a).await, "IP");
    assert_eq!(flags(&kamailio, 1, b).await, "DX");

    feeder.publish(response(
        "v2",
        "n2",
        &[(1, &[(a, 0, 0), (b, 0, 0), (c, 0, 0)])],
    ));
    assert!(feeder.wait_answer("n2", WAIT).await.error_detail.is_none());
    assert_eq!(uris(&kamailio, 1).await, [a, b, c]);
    assert_eq!(
        flags(&kamailio, 1, a).await,
        "IP",
        "inactive+probing survives the swap"
    );
    assert_eq!(
        flags(&kamailio, 1, b).await,
        "DX",
        "ds_mark_dst's disable survives the swap"
    );
    assert_eq!(flags(&kamailio, 1, c).await, "AX");

    // The feed drains c, then brings it back.
    feeder.publish(response(
        "v3",
        "n3",
        &[(1, &[(a, 0, 0), (b, 0, 0), (c, 4, 0)])],
    ));
    feeder.wait_answer("n3", WAIT).await;
    assert_eq!(flags(&kamailio, 1, c).await, "DX");
    feeder.publish(response(
        "v4",
        "n4",
        &[(1, &[(a, 0, 0), (b, 0, 0), (c, 0, 0)])],
    ));
    feeder.wait_answer("n4", WAIT).await;
    assert_eq!(flags(&kamailio, 1, c).await, "AX");
    assert_eq!(flags(&kamailio, 1, a).await, "IP");
    assert_eq!(status(&kamailio).await.int("swaps"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_paced_and_ends_on_the_newest_snapshot() {
    let interval = Duration::from_millis(2000);
    let (_dir, feeder, kamailio) = start(kamailio("").modparam(
        "dsfeed",
        "min_swap_interval_ms",
        interval.as_millis() as i64,
    ))
    .await;
    let dest = |n: u32| format!("sip:10.0.{n}.1:5060");
    feeder.publish(response("v1", "n1", &[(1, &[(&dest(1), 0, 0)])]));
    feeder.wait_answer("n1", WAIT).await;
    let first_ack = Instant::now();

    for n in 2..=6 {
        let uri = dest(n);
        feeder.publish(response(
            &format!("v{n}"),
            &format!("n{n}"),
            &[(1, &[(&uri, 0, 0)])],
        ));
    }
    let last = feeder.wait_answer("n6", WAIT).await;
    let gap = first_ack.elapsed();
    assert_eq!(last.version_info, "v6");
    assert!(last.error_detail.is_none(), "{last:?}");
    assert_eq!(uris(&kamailio, 1).await, [dest(6)]);
    // The burst waited for the interval (a lower bound: load only adds).
    assert!(gap >= interval / 2, "second swap {gap:?} after the first");

    // Every response was answered; the ones overtaken by a newer one say so.
    let mut superseded = 0;
    for n in 2..=5 {
        let answer = feeder.wait_answer(&format!("n{n}"), WAIT).await;
        if let Some(error) = answer.error_detail {
            assert!(error.message.contains("superseded"), "{error:?}");
            assert_eq!(answer.version_info, "v1", "a NACK names the version kept");
            superseded += 1;
        }
    }
    assert!(superseded >= 1);
    let swaps = status(&kamailio).await.int("swaps");
    assert!(
        swaps < 6,
        "{swaps} swaps for 6 snapshots: the burst was not coalesced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_snapshots_are_nacked_and_the_sets_stay() {
    let (_dir, feeder, kamailio) =
        start(kamailio("").modparam("dsfeed", "min_swap_interval_ms", 200)).await;
    feeder.publish(response("v1", "n1", &[(1, &[("sip:10.0.0.1:5060", 0, 0)])]));
    feeder.wait_answer("n1", WAIT).await;

    feeder.send_only(response(
        "v2",
        "n2",
        &[(1, &[("sip:10.0.0.9:5060", 64, 0)])],
    ));
    let nack = feeder.wait_answer("n2", WAIT).await;
    assert_eq!(nack.version_info, "v1");
    let message = nack.error_detail.unwrap().message;
    assert!(
        message.contains("set 1") && message.contains("flags"),
        "{message}"
    );
    assert_eq!(uris(&kamailio, 1).await, ["sip:10.0.0.1:5060"]);
    let status = status(&kamailio).await;
    assert_eq!(status.text("applied_version"), "v1");
    assert_eq!(status.int("nacks"), 1);
    assert!(status.text("last_error").contains("flags"), "{status:?}");

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
    let ack = feeder.wait_answer("n3", WAIT).await;
    assert!(ack.error_detail.is_none());
    assert_eq!(uris(&kamailio, 1).await, ["sip:10.0.0.1:5060"]);
    let status = status_until(&kamailio, "the dropped destination in the status", |s| {
        s.text("last_error").contains("no-such-host")
    })
    .await;
    assert!(
        status.text("last_error").contains("did not load 1"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_file_sync_gives_a_cold_restart_the_last_sets() {
    let (_dir, feeder, kamailio) = start(
        kamailio("7 sip:10.7.0.1:5060 0 0\n")
            .modparam("dsfeed", "list_file_sync", 1)
            .modparam("dsfeed", "min_swap_interval_ms", 200),
    )
    .await;
    feeder.publish(response(
        "v1",
        "n1",
        &[(
            1,
            &[("sip:10.1.0.1:5060", 4, 5), ("sip:10.1.0.2:5060", 0, 1)],
        )],
    ));
    feeder.wait_answer("n1", WAIT).await;
    let file = std::fs::read_to_string(kamailio.list_path()).unwrap();
    assert!(
        file.starts_with("# written by dsfeed.so: feed version v1\n"),
        "{file}"
    );
    assert!(file.contains("1 sip:10.1.0.1:5060 4 5\n"), "{file}");
    assert!(file.contains("7 sip:10.7.0.1:5060 0 0\n"), "{file}");
    assert_eq!(status(&kamailio).await.int("list_file_sync"), 1);
    drop(kamailio);
    drop(feeder);

    // A cold start from that file, with no feeder at all: the last applied
    // sets come back, the drained destination still drained.
    let restarted = Kamailio::start(file).await.unwrap();
    assert_eq!(
        uris(&restarted, 1).await,
        ["sip:10.1.0.1:5060", "sip:10.1.0.2:5060"]
    );
    assert_eq!(flags(&restarted, 1, "sip:10.1.0.1:5060").await, "DX");
    assert_eq!(uris(&restarted, 7).await, ["sip:10.7.0.1:5060"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_reload_is_undone_with_the_last_snapshot() {
    let (_dir, feeder, kamailio) = start(kamailio("1 sip:10.0.0.1:5060 0 0\n").modparam(
        "dsfeed",
        "min_swap_interval_ms",
        200,
    ))
    .await;
    feeder.publish(response("v1", "n1", &[(1, &[("sip:10.1.0.1:5060", 0, 0)])]));
    feeder.wait_answer("n1", WAIT).await;

    // An operator reloads the (stale) list file behind the module's back.
    rpc(&kamailio, "dispatcher.reload", &[]).await.unwrap();
    dsfeed_tests::eventually("the feed's set back in memory", WAIT, || async {
        let status = status(&kamailio).await;
        let back = uris(&kamailio, 1).await == ["sip:10.1.0.1:5060"] && status.int("swaps") == 2;
        back.then_some(())
    })
    .await;
    assert!(kamailio.log().contains("replaced by something else"));
    assert_eq!(status(&kamailio).await.text("applied_version"), "v1");
    // Nothing was sent to the feeder for the re-application.
    assert_eq!(feeder.received().len(), 2, "{:?}", feeder.received());
}
