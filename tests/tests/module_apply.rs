//! Snapshots from a feeder applied to a real Kamailio's dispatcher: sets
//! replaced in memory with no reload, sets outside the feed kept exactly,
//! runtime state carried over, swaps paced (also against another writer's
//! loads and across a restart of the feed loop), invalid snapshots NACKed,
//! snapshots that could not be applied yet retried.

use std::time::{Duration, Instant};

use dsfeed_tests::module::{
    WAIT, error_until, fd_limits, feed_pid, flags, kamailio, kamcmd, lowest_free_fd, rpc, seen,
    set_fd_limit, sets, started_since_boot, status, status_until, uptime, uris,
};
use dsfeed_tests::scripted::{TestFeeder, response};
use dsfeed_tests::{Kamailio, KamailioBuilder, eventually};

/// How much earlier than the real moment a swap may look when seen by
/// polling `dispatcher.list` against the return of an RPC (an RPC's reply
/// time on a loaded machine).
const SLACK: Duration = Duration::from_millis(250);

/// Asserts that `gap`, measured with up to `slack` of error, is at least
/// `interval`; `what` names the gap, which is printed for the record.
fn assert_paced(gap: Duration, slack: Duration, interval: Duration, what: &str) {
    eprintln!("{what}: {gap:?} (interval {interval:?})");
    assert!(
        gap + slack >= interval,
        "{what} came after {gap:?}; the interval is {interval:?}"
    );
}

/// The shortest `min_swap_interval_ms` the module accepts.
const FASTEST: Duration = Duration::from_millis(500);

/// A Kamailio with `list` and dsfeed.so swapping at most every `interval`.
fn paced(list: &str, interval: Duration) -> KamailioBuilder {
    let ms = i64::try_from(interval.as_millis()).expect("an interval in ms fits i64");
    kamailio(list).modparam("dsfeed", "min_swap_interval_ms", ms)
}

/// A scripted feeder, and the Kamailio of `builder` following it as node
/// `kam-apply`, connected.
async fn start(builder: KamailioBuilder) -> (tempfile::TempDir, TestFeeder, Kamailio) {
    let dir = tempfile::tempdir().unwrap();
    let feeder = TestFeeder::unix(&dir.path().join("feed.sock")).await;
    let kamailio = builder
        .modparam("dsfeed", "feeder", feeder.endpoint())
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
    let (_dir, feeder, kamailio) = start(paced("", FASTEST)).await;
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
    for (n, c_flags, c_state) in [(3, 4, "DX"), (4, 0, "AX")] {
        let set = [(a, 0, 0), (b, 0, 0), (c, c_flags, 0)];
        let nonce = format!("n{n}");
        feeder.publish(response(&format!("v{n}"), &nonce, &[(1, &set)]));
        feeder.wait_answer(&nonce, WAIT).await;
        assert_eq!(flags(&kamailio, 1, c).await, c_state);
    }
    assert_eq!(flags(&kamailio, 1, a).await, "IP");
    assert_eq!(status(&kamailio).await.int("swaps"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_paced_and_ends_on_the_newest_snapshot() {
    let interval = Duration::from_millis(2000);
    let (_dir, feeder, kamailio) = start(paced("", interval)).await;
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
    let (_dir, feeder, kamailio) = start(paced("", FASTEST)).await;
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
    let status = error_until(&kamailio, "no-such-host").await;
    assert!(
        status.text("last_error").contains("did not load 1"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_file_sync_gives_a_cold_restart_the_last_sets() {
    let list = "7 sip:10.7.0.1:5060 0 0\n";
    let (_dir, feeder, kamailio) =
        start(paced(list, FASTEST).modparam("dsfeed", "list_file_sync", 1)).await;
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
    let (_dir, feeder, kamailio) = start(paced("1 sip:10.0.0.1:5060 0 0\n", FASTEST)).await;
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

/// After another writer's load the dispatcher no longer holds the applied
/// version, so that version sent again is swapped back in, not ACKed as
/// unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applied_version_sent_again_after_a_foreign_reload_is_swapped_back_in() {
    let interval = Duration::from_millis(2000);
    let list = "1 sip:10.0.0.1:5060 0 0\n";
    let (_dir, feeder, kamailio) = start(paced(list, interval).reload_delta(0)).await;
    let v1 = response("v1", "n1", &[(1, &[("sip:10.1.0.1:5060", 0, 0)])]);
    feeder.publish(v1.clone());
    feeder.wait_answer("n1", WAIT).await;
    rpc(&kamailio, "dispatcher.reload", &[]).await.unwrap();
    kamailio.wait_logged("re-applying version \"v1\"").await;
    feeder.send_only(pb_with_nonce(v1, "n2"));
    let ack = feeder.wait_answer("n2", WAIT).await;
    assert!(ack.error_detail.is_none(), "{ack:?}");
    assert_eq!(uris(&kamailio, 1).await, ["sip:10.1.0.1:5060"]);
    assert_eq!(status(&kamailio).await.int("swaps"), 2);
}

fn pb_with_nonce(
    mut response: dsfeed_model::pb::FeedResponse,
    nonce: &str,
) -> dsfeed_model::pb::FeedResponse {
    response.nonce = nonce.to_owned();
    response
}

/// The sidecar race of issue 9: a `dispatcher.reload` lands right before
/// the module's first snapshot. The module takes no list as its own until
/// it has swapped one in, so it sees the reload and waits a full interval
/// after it (two loads closer than a reader's window crash Kamailio).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_right_before_the_first_snapshot_is_waited_out() {
    let interval = Duration::from_millis(2000);
    let list = "1 sip:10.0.0.1:5060 0 0\n";
    let (_dir, feeder, kamailio) = start(paced(list, interval).reload_delta(0)).await;
    rpc(&kamailio, "dispatcher.reload", &[]).await.unwrap();
    let reloaded = Instant::now();
    feeder.publish(response("v1", "n1", &[(1, &[("sip:10.1.0.1:5060", 0, 0)])]));
    let swapped = seen(&kamailio, 1, &["sip:10.1.0.1:5060"]).await;
    let gap = swapped - reloaded;
    assert_paced(
        gap,
        SLACK,
        interval,
        "the first swap after a dispatcher.reload",
    );
    let ack = feeder.wait_answer("n1", WAIT).await;
    assert!(ack.error_detail.is_none(), "{ack:?}");
    assert!(kamailio.log().contains("replaced by something else"));
    assert_eq!(status(&kamailio).await.int("swaps"), 1);
}

/// Nothing tells when Kamailio loaded the list it started with, so the
/// module counts it as loaded when its feed process started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_swap_waits_an_interval_after_the_feed_process_starts() {
    let interval = Duration::from_millis(3000);
    let (_dir, feeder, kamailio) = start(paced("", interval)).await;
    let started = started_since_boot(feed_pid(&kamailio).await);
    feeder.publish(response("v1", "n1", &[(1, &[("sip:10.1.0.1:5060", 0, 0)])]));
    let swapped_at = eventually("set 1 from the feed", WAIT, || async {
        (uris(&kamailio, 1).await == ["sip:10.1.0.1:5060"]).then(uptime)
    })
    .await;
    let gap = Duration::from_secs_f64(swapped_at - started);
    // Both clocks count 10 ms ticks.
    let ticks = Duration::from_millis(20);
    assert_paced(
        gap,
        ticks,
        interval,
        "the first swap after the feed process started",
    );
}

/// A valid snapshot the dispatcher could not take now (no file descriptor
/// for the list, then the dispatcher's own open of it failing) is no NACK:
/// it is answered "retrying", shown in `dsfeed.status`, kept and tried
/// again, and its response is ACKed once the cause is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_fails_for_a_passing_reason_is_retried_not_nacked() {
    let (_dir, feeder, kamailio) = start(paced("", FASTEST)).await;
    feeder.publish(response("v1", "n1", &[(1, &[("sip:10.0.0.1:5060", 0, 0)])]));
    assert!(feeder.wait_answer("n1", WAIT).await.error_detail.is_none());
    let pid = feed_pid(&kamailio).await;
    let (soft, hard) = fd_limits(pid);
    let free = lowest_free_fd(pid);
    let retrying = |message: &'static str| {
        move |answer: &dsfeed_model::pb::FeedRequest| {
            answer
                .error_detail
                .as_ref()
                .is_some_and(|e| e.retrying && e.message.contains(message))
        }
    };

    // No descriptor left: the list cannot even be written to a memfd.
    set_fd_limit(pid, &free.to_string(), &hard);
    feeder.publish(response("v2", "n2", &[(1, &[("sip:10.0.0.2:5060", 0, 0)])]));
    let first = feeder
        .wait_answer_where(
            "n2",
            "a retrying answer (no memfd)",
            retrying("Too many open files"),
        )
        .await;
    assert_eq!(
        first.version_info, "v1",
        "the answer names the version kept"
    );
    let retrying_v2 = status_until(&kamailio, "v2 retrying", |s| {
        s.text("retrying_version") == "v2"
    })
    .await;
    assert!(retrying_v2.int("retries") >= 1, "{retrying_v2:?}");
    assert_eq!(retrying_v2.int("nacks"), 0, "{retrying_v2:?}");
    assert_eq!(retrying_v2.text("applied_version"), "v1");
    assert_eq!(uris(&kamailio, 1).await, ["sip:10.0.0.1:5060"]);

    // One descriptor: the memfd opens, the dispatcher's fopen of it fails
    // and ds_load_list refuses the load.
    set_fd_limit(pid, &(free + 1).to_string(), &hard);
    feeder
        .wait_answer_where(
            "n2",
            "a retrying answer (the dispatcher refused)",
            retrying("the dispatcher refused the list"),
        )
        .await;
    assert!(
        kamailio.log().contains("can't open list file"),
        "{}",
        kamailio.log()
    );
    assert_eq!(uris(&kamailio, 1).await, ["sip:10.0.0.1:5060"]);

    // Descriptors back: the next attempt applies it, and the same response
    // gets its ACK.
    set_fd_limit(pid, &soft, &hard);
    let restored = Instant::now();
    let ack = feeder
        .wait_answer_where("n2", "an ACK", |a| a.error_detail.is_none())
        .await;
    eprintln!(
        "applied {:?} after the limit was lifted",
        restored.elapsed()
    );
    assert_eq!(ack.version_info, "v2");
    assert_eq!(uris(&kamailio, 1).await, ["sip:10.0.0.2:5060"]);
    let status = status(&kamailio).await;
    assert_eq!(status.text("applied_version"), "v2");
    assert_eq!(status.text("retrying_version"), "");
    assert_eq!(
        (status.int("swaps"), status.int("nacks")),
        (2, 0),
        "{status:?}"
    );
    let answers = feeder.answers_to("n2");
    assert!(
        answers[..answers.len() - 1]
            .iter()
            .all(|a| a.error_detail.as_ref().is_some_and(|e| e.retrying)),
        "only retrying answers before the ACK: {answers:#?}"
    );
}

/// After a panic the feed loop starts over, keeping its pacing and what it
/// applied: the snapshot waiting when it comes back is not swapped in
/// closer to the previous swap than the interval, and its hello names the
/// applied version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_after_a_swap_keeps_the_pacing_and_the_applied_version() {
    // Longer than the 5 s pause before the loop starts over.
    let interval = Duration::from_millis(7000);
    let (_dir, feeder, kamailio) =
        start(paced("", interval).env("DSFEED_TEST_PANIC", "swapped")).await;
    feeder.publish(response("v1", "n1", &[(1, &[("sip:10.0.0.1:5060", 0, 0)])]));
    let first = seen(&kamailio, 1, &["sip:10.0.0.1:5060"]).await;
    kamailio.wait_logged("the feed loop panicked").await;
    // A change waits for the loop to come back.
    feeder.publish(response("v2", "n2", &[(1, &[("sip:10.0.0.2:5060", 0, 0)])]));
    feeder.wait_streams(2, WAIT).await;
    let hello = eventually("the second hello", WAIT, || async {
        feeder.received().into_iter().find(|r| r.stream == 2)
    })
    .await;
    assert_eq!(
        hello.request.version_info, "v1",
        "the applied version is kept"
    );
    let second = seen(&kamailio, 1, &["sip:10.0.0.2:5060"]).await;
    assert_paced(
        second - first,
        SLACK,
        interval,
        "two swaps across a restart",
    );
    assert_eq!(status(&kamailio).await.int("swaps"), 2);
    assert!(kamailio.is_running());
}

/// A `dispatcher.reload` while the feed loop restarts after a panic is
/// another writer's load all the same: the restarted loop notices it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_the_feed_loop_restarts_is_still_noticed() {
    let list = "1 sip:10.0.0.1:5060 0 0\n";
    let builder = paced(list, FASTEST).reload_delta(0);
    let (_dir, feeder, kamailio) = start(builder.env("DSFEED_TEST_PANIC", "swapped")).await;
    feeder.publish(response("v1", "n1", &[(1, &[("sip:10.1.0.1:5060", 0, 0)])]));
    seen(&kamailio, 1, &["sip:10.1.0.1:5060"]).await;
    kamailio.wait_logged("the feed loop panicked").await;
    rpc(&kamailio, "dispatcher.reload", &[]).await.unwrap();
    assert_eq!(uris(&kamailio, 1).await, ["sip:10.0.0.1:5060"]);
    // The restarted loop sees the list is not the one it installed, waits
    // an interval and swaps the feed's set back in.
    seen(&kamailio, 1, &["sip:10.1.0.1:5060"]).await;
    assert!(kamailio.log().contains("replaced by something else"));
    assert_eq!(status(&kamailio).await.int("swaps"), 2);
}

/// Sets the feed does not carry are written back from memory at every
/// swap. What `dispatcher.add` (or a database) can put there and a list
/// line cannot carry is never changed silently: bytes that are not UTF-8
/// come back exactly; attrs with a space or a negative priority make the
/// swap wait ("retrying"), with the set and destination named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_outside_the_feed_come_back_exactly_or_the_swap_waits() {
    let list = "9 sip:10.9.0.1:5060 0 0 name=plain\n";
    let (_dir, feeder, kamailio) = start(paced(list, FASTEST).reload_delta(0)).await;
    feeder.publish(response("v1", "n1", &[(1, &[("sip:10.1.0.1:5060", 0, 0)])]));
    assert!(feeder.wait_answer("n1", WAIT).await.error_detail.is_none());

    // Latin-1 bytes in attrs, added at runtime: another writer's load,
    // after which the module swaps v1 back in, rewriting set 9.
    kamcmd(
        &kamailio,
        &[
            b"dispatcher.add",
            b"9",
            b"sip:10.9.0.2:5060",
            b"0",
            b"0",
            b"name=caf\xe9",
        ],
    );
    status_until(&kamailio, "v1 swapped back in", |s| s.int("swaps") == 2).await;
    let listed = kamcmd(&kamailio, &[b"dispatcher.list"]);
    assert!(
        contains(&listed, b"name=caf\xe9") && !contains(&listed, "\u{fffd}".as_bytes()),
        "{}",
        String::from_utf8_lossy(&listed)
    );
    let mut set9 = uris(&kamailio, 9).await;
    set9.sort();
    assert_eq!(set9, ["sip:10.9.0.1:5060", "sip:10.9.0.2:5060"]);

    // Attrs with a space: no list line can carry them.
    kamcmd(
        &kamailio,
        &[
            b"dispatcher.add",
            b"9",
            b"sip:10.9.0.3:5060",
            b"0",
            b"0",
            b"a=1; b=2",
        ],
    );
    let stuck = error_until(&kamailio, "sip:10.9.0.3:5060").await;
    let error = stuck.text("last_error");
    assert!(
        error.contains("set 9") && error.contains("attrs contain whitespace"),
        "{stuck:?}"
    );
    assert_eq!(stuck.text("retrying_version"), "v1");
    assert_eq!(stuck.int("swaps"), 2, "nothing was swapped");
    let attrs = |listed: &dsfeed_binrpc::dispatcher::ListedSets, uri: &str| {
        listed[&9]
            .iter()
            .find(|d| d.uri == uri)
            .map(|d| (d.attrs.clone(), d.priority))
            .unwrap()
    };
    let listed = sets(&kamailio).await;
    assert_eq!(attrs(&listed, "sip:10.9.0.3:5060").0, "a=1; b=2");
    // A snapshot from the feed meanwhile is not NACKed: it waits too.
    feeder.publish(response("v2", "n2", &[(1, &[("sip:10.1.0.2:5060", 0, 0)])]));
    let answer = feeder
        .wait_answer_where("n2", "a retrying answer", |a| {
            a.error_detail
                .as_ref()
                .is_some_and(|e| e.retrying && e.message.contains("set 9"))
        })
        .await;
    assert_eq!(answer.version_info, "v1");

    // The operator removes it: v2 goes in, set 9 as it was.
    rpc(&kamailio, "dispatcher.remove", &["9", "sip:10.9.0.3:5060"])
        .await
        .unwrap();
    let ack = feeder
        .wait_answer_where("n2", "an ACK", |a| a.error_detail.is_none())
        .await;
    assert_eq!(ack.version_info, "v2");
    assert_eq!(uris(&kamailio, 1).await, ["sip:10.1.0.2:5060"]);
    let listed = kamcmd(&kamailio, &[b"dispatcher.list"]);
    assert!(
        contains(&listed, b"name=caf\xe9"),
        "{}",
        String::from_utf8_lossy(&listed)
    );

    // A negative priority: the loader reads digits only.
    rpc(
        &kamailio,
        "dispatcher.add",
        &["9", "sip:10.9.0.4:5060", "0", "-5"],
    )
    .await
    .unwrap();
    feeder.publish(response("v3", "n3", &[(1, &[("sip:10.1.0.3:5060", 0, 0)])]));
    let refused = error_until(&kamailio, "priority -5").await;
    assert!(
        refused.text("last_error").contains("sip:10.9.0.4:5060"),
        "{refused:?}"
    );
    assert_eq!(refused.text("applied_version"), "v2");
    assert_eq!(attrs(&sets(&kamailio).await, "sip:10.9.0.4:5060").1, -5);
    assert_eq!(status(&kamailio).await.int("nacks"), 0);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
