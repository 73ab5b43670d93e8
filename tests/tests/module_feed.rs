//! The module's side of the feed protocol against a tonic feeder started in
//! the test: hello, ACKs, reconnection resuming from the applied version, a
//! lost feeder that changes nothing, the set filter, the bearer token, TCP.

use dsfeed_tests::eventually;
use dsfeed_tests::module::{
    WAIT, fed_by, feed_pid, sets, status, status_until, threads, unconnected_until, uris,
};
use dsfeed_tests::pki::Pki;
use dsfeed_tests::scripted::{Received, TestFeeder, response};

/// Waits for the first request of stream `n`.
async fn hello(feeder: &TestFeeder, n: usize) -> Received {
    eventually("a hello", WAIT, || async {
        feeder.received().into_iter().find(|r| r.stream == n)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resumes_from_the_applied_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut feeder = TestFeeder::unix(&dir.path().join("feed.sock")).await;
    let kamailio = fed_by("", feeder.endpoint())
        .modparam("dsfeed", "node_id", "kam-feed")
        .modparam("dsfeed", "min_swap_interval_ms", 500)
        .start()
        .await
        .unwrap();
    feeder.wait_streams(1, WAIT).await;
    feeder.publish(response("v1", "n1", &[(1, &[("sip:10.0.0.1:5060", 0, 0)])]));
    feeder.wait_answer("n1", WAIT).await;

    // The feeder goes away: the sets stay, the status says so.
    feeder.stop().await;
    let down = status_until(&kamailio, "the disconnect in dsfeed.status", |s| {
        s.int("connected") == 0
    })
    .await;
    // The module has taken in the disconnect: anything it would flush
    // because of it is flushed by now.
    assert_eq!(down.text("applied_version"), "v1");
    assert_eq!(
        uris(&kamailio, 1).await,
        ["sip:10.0.0.1:5060"],
        "a lost feeder flushes nothing"
    );

    // It comes back: the new stream's hello carries the applied version,
    // so an unchanged feeder sends nothing and nothing is re-applied.
    feeder.restart().await;
    feeder.wait_streams(2, WAIT).await;
    let second = hello(&feeder, 2).await.request;
    assert_eq!(second.version_info, "v1");
    assert_eq!(second.node.unwrap().id, "kam-feed");
    assert!(second.response_nonce.is_empty());
    let up = status_until(&kamailio, "connected again", |s| s.int("connected") == 1).await;
    assert_eq!(up.int("swaps"), 1);
    assert!(up.int("connects") >= 2);

    feeder.publish(response("v2", "n2", &[(1, &[("sip:10.0.0.2:5060", 0, 0)])]));
    let ack = feeder.wait_answer("n2", WAIT).await;
    assert_eq!(ack.version_info, "v2");
    assert_eq!(uris(&kamailio, 1).await, ["sip:10.0.0.2:5060"]);

    // A stream that fails mid-way is reopened the same way.
    feeder.drop_stream();
    feeder.wait_streams(3, WAIT).await;
    assert_eq!(hello(&feeder, 3).await.request.version_info, "v2");

    // Still one thread after HTTP/2 streams, a swap and reconnects.
    let pid = feed_pid(&kamailio).await;
    assert_eq!(
        threads(pid),
        1,
        "the dsfeed feed process must stay single-threaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_set_filter_is_requested_and_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let feeder = TestFeeder::unix(&dir.path().join("feed.sock")).await;
    let kamailio = fed_by("", feeder.endpoint())
        .modparam("dsfeed", "sets", "2, 1")
        .start()
        .await
        .unwrap();
    feeder.wait_streams(1, WAIT).await;
    assert_eq!(hello(&feeder, 1).await.request.set_ids, [1, 2]);
    feeder.publish(response("v1", "n1", &[(3, &[("sip:10.0.0.3:5060", 0, 0)])]));
    let nack = feeder.wait_answer("n1", WAIT).await;
    let error = nack
        .error_detail
        .expect("a set that was not asked for is NACKed");
    assert!(
        error.message.contains("set 3 was not requested"),
        "{error:?}"
    );
    assert!(sets(&kamailio).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_token_is_sent_and_a_refusal_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let feeder = TestFeeder::unix(&dir.path().join("feed.sock")).await;
    feeder.require_token("s3cret-token");

    let token_file = dir.path().join("token");
    dsfeed_tests::write_secret(&token_file, "s3cret-token\n");
    let good = fed_by("", feeder.endpoint())
        .modparam("dsfeed", "token_file", token_file.as_path())
        .start()
        .await
        .unwrap();
    feeder.wait_streams(1, WAIT).await;
    assert_eq!(
        hello(&feeder, 1).await.authorization.as_deref(),
        Some("Bearer s3cret-token")
    );
    status_until(&good, "connected", |s| s.int("connected") == 1).await;

    let bad = fed_by("", feeder.endpoint())
        .modparam("dsfeed", "token", "wrong")
        .start()
        .await
        .unwrap();
    let refused = unconnected_until(&bad, "refused").await;
    assert!(
        refused.text("last_error").contains("bearer token"),
        "{refused:?}"
    );
    assert_eq!(feeder.streams(), 1, "the refused stream never opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feeder_service_over_tcp() {
    let (feeder, port) = TestFeeder::tcp().await;
    let address = format!("http://localhost:{port}");
    let kamailio = fed_by("", address.as_str()).start().await.unwrap();
    feeder.wait_streams(1, WAIT).await;
    feeder.publish(response(
        "v1",
        "n1",
        &[(4, &[("sip:10.0.0.4:5060", 16, 0)])],
    ));
    let ack = feeder.wait_answer("n1", WAIT).await;
    assert!(ack.error_detail.is_none(), "{ack:?}");
    assert_eq!(uris(&kamailio, 4).await, ["sip:10.0.0.4:5060"]);
    // A name counts as one feeder per address, and the status says which.
    let status = status(&kamailio).await;
    assert_eq!(status.text("feeders"), address);
    assert_eq!(
        status.text("feeder"),
        format!("{address} (127.0.0.1:{port})")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feeder_service_over_mutual_tls_with_a_token() {
    let pki = Pki::new(&["localhost"]);
    let (feeder, port) = TestFeeder::tls(pki.tonic_server(true)).await;
    feeder.require_token("cluster-token");
    let address = format!("https://localhost:{port}");
    let trusted = fed_by("", address.as_str())
        .modparam("dsfeed", "tls_ca", pki.ca.as_path())
        .modparam("dsfeed", "tls_cert", pki.client_cert.as_path())
        .modparam("dsfeed", "tls_key", pki.client_key.as_path())
        .modparam("dsfeed", "token", "cluster-token")
        .start()
        .await
        .unwrap();
    feeder.wait_streams(1, WAIT).await;
    feeder.publish(response("v1", "n1", &[(5, &[("sip:10.0.0.5:5060", 0, 0)])]));
    assert!(feeder.wait_answer("n1", WAIT).await.error_detail.is_none());
    assert_eq!(uris(&trusted, 5).await, ["sip:10.0.0.5:5060"]);
    let pid = feed_pid(&trusted).await;
    assert_eq!(threads(pid), 1, "TLS adds no thread to the feed process");

    // Without a client certificate the handshake is refused, and said so.
    let anonymous = fed_by("", address.as_str())
        .modparam("dsfeed", "tls_ca", pki.ca.as_path())
        .modparam("dsfeed", "token", "cluster-token")
        .start()
        .await
        .unwrap();
    let refused = unconnected_until(&anonymous, &address).await;
    assert!(
        refused.text("last_error").contains("refused"),
        "{refused:?}"
    );
    assert_eq!(feeder.streams(), 1);
}
