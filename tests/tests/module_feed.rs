//! The module's side of the feed protocol against a tonic feeder started in
//! the test: hello, ACKs, reconnection resuming from the applied version, a
//! lost feeder that changes nothing, the set filter, the bearer token, TCP.

mod module_harness;

use std::time::Duration;

use module_harness::feeder::{TestFeeder, response};
use module_harness::kamailio::{Kamailio, Setup, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn uris(kamailio: &Kamailio, set: u32) -> Vec<String> {
    kamailio
        .sets()
        .get(&set)
        .map(|d| d.iter().map(|(uri, _)| uri.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resumes_from_the_applied_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut feeder = TestFeeder::unix(&dir.path().join("feed.sock")).await;
    let kamailio = Kamailio::start(
        Setup::default()
            .dsfeed("feeder", &format!("unix:{}", feeder.socket.display()))
            .dsfeed("node_id", "kam-feed")
            .dsfeed_int("reconnect_min_ms", 100)
            .dsfeed_int("reconnect_max_ms", 500)
            .dsfeed_int("min_swap_interval_ms", 200),
    );
    feeder.wait_streams(1, WAIT).await;
    feeder.publish(response("v1", "n1", &[(1, &[("sip:10.0.0.1:5060", 0, 0)])]));
    feeder.wait_answer("n1", WAIT).await;

    // The feeder goes away: the sets stay, the status says so.
    feeder.stop().await;
    let status = wait_for("the disconnect in dsfeed.status", WAIT, || {
        let status = kamailio.status();
        (status.int("connected") == 0).then_some(status)
    });
    assert_eq!(status.str("applied_version"), "v1");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        uris(&kamailio, 1),
        ["sip:10.0.0.1:5060"],
        "a lost feeder flushes nothing"
    );

    // It comes back: the new stream's hello carries the applied version,
    // so an unchanged feeder sends nothing and nothing is re-applied.
    feeder.restart().await;
    feeder.wait_streams(2, WAIT).await;
    let hello = wait_for("the second hello", WAIT, || {
        feeder.received().into_iter().find(|r| r.stream == 2)
    });
    assert_eq!(hello.request.version_info, "v1");
    assert_eq!(hello.request.node.unwrap().id, "kam-feed");
    assert!(hello.request.response_nonce.is_empty());
    wait_for("connected again", WAIT, || {
        (kamailio.status().int("connected") == 1).then_some(())
    });
    let status = kamailio.status();
    assert_eq!(status.int("swaps"), 1);
    assert!(status.int("connects") >= 2);

    feeder.publish(response("v2", "n2", &[(1, &[("sip:10.0.0.2:5060", 0, 0)])]));
    let ack = feeder.wait_answer("n2", WAIT).await;
    assert_eq!(ack.version_info, "v2");
    assert_eq!(uris(&kamailio, 1), ["sip:10.0.0.2:5060"]);

    // A stream that fails mid-way is reopened the same way.
    feeder.drop_stream();
    feeder.wait_streams(3, WAIT).await;
    let hello = wait_for("the third hello", WAIT, || {
        feeder.received().into_iter().find(|r| r.stream == 3)
    });
    assert_eq!(hello.request.version_info, "v2");

    // Still one thread after TLS-less HTTP/2, a swap and reconnects.
    let pid = feed_pid(&kamailio);
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert_eq!(
        threads, 1,
        "the dsfeed feed process must stay single-threaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_set_filter_is_requested_and_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let feeder = TestFeeder::unix(&dir.path().join("feed.sock")).await;
    let kamailio = Kamailio::start(
        Setup::default()
            .dsfeed("feeder", &format!("unix:{}", feeder.socket.display()))
            .dsfeed("sets", "2, 1"),
    );
    feeder.wait_streams(1, WAIT).await;
    let hello = wait_for("the hello", WAIT, || feeder.received().into_iter().next());
    assert_eq!(hello.request.set_ids, [1, 2]);
    feeder.publish(response("v1", "n1", &[(3, &[("sip:10.0.0.3:5060", 0, 0)])]));
    let nack = feeder.wait_answer("n1", WAIT).await;
    let error = nack
        .error_detail
        .expect("a set that was not asked for is NACKed");
    assert!(
        error.message.contains("set 3 was not requested"),
        "{error:?}"
    );
    assert!(kamailio.sets().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_token_is_sent_and_a_refusal_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let feeder = TestFeeder::unix(&dir.path().join("feed.sock")).await;
    feeder.require_token("s3cret-token");
    let feeder_param = format!("unix:{}", feeder.socket.display());

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let good = Kamailio::start(
        Setup::default()
            .dsfeed("feeder", &feeder_param)
            .dsfeed("token_file", &token_file.display().to_string()),
    );
    feeder.wait_streams(1, WAIT).await;
    let hello = wait_for("the hello", WAIT, || feeder.received().into_iter().next());
    assert_eq!(hello.authorization.as_deref(), Some("Bearer s3cret-token"));
    wait_for("connected", WAIT, || {
        (good.status().int("connected") == 1).then_some(())
    });

    let bad = Kamailio::start(
        Setup::default()
            .dsfeed("feeder", &feeder_param)
            .dsfeed("token", "wrong"),
    );
    let status = wait_for("the refusal in dsfeed.status", WAIT, || {
        let status = bad.status();
        status
            .str("last_error")
            .contains("refused")
            .then_some(status)
    });
    assert_eq!(status.int("connected"), 0);
    assert!(
        status.str("last_error").contains("bearer token"),
        "{status:?}"
    );
    assert_eq!(feeder.streams(), 1, "the refused stream never opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feeder_service_over_tcp() {
    let (feeder, port) = TestFeeder::tcp().await;
    let kamailio =
        Kamailio::start(Setup::default().dsfeed("feeder", &format!("http://localhost:{port}")));
    feeder.wait_streams(1, WAIT).await;
    feeder.publish(response(
        "v1",
        "n1",
        &[(4, &[("sip:10.0.0.4:5060", 16, 0)])],
    ));
    let ack = feeder.wait_answer("n1", WAIT).await;
    assert!(ack.error_detail.is_none(), "{ack:?}");
    assert_eq!(uris(&kamailio, 4), ["sip:10.0.0.4:5060"]);
    assert_eq!(
        kamailio.status().str("feeder"),
        format!("http://localhost:{port}")
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
