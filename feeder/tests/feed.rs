//! The feed as a client sees it: a real `dsfeed` process serving a sets file
//! over a unix socket and TCP, real gRPC clients, and its HTTP endpoints.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;

use dsfeed_model::pb::FeedResponse;
use dsfeed_tests::feed_client::{self, Stream, hello};
use dsfeed_tests::feeder::{Args, Feeder, watch};
use dsfeed_tests::sets::{Sets, SetsFile, snapshot, uris};
use dsfeed_tests::{PATIENCE, free_addr, write_secret};
use nix::sys::signal::Signal;
use tempfile::TempDir;

/// Long enough for a wrongly sent response to arrive on a loaded machine.
const QUIET: Duration = Duration::from_millis(1500);

const THREE_SETS: Sets<'static> = &[(1, &["10.0.0.1", "10.0.0.2"]), (2, &["10.0.1.1"]), (3, &[])];

/// THREE_SETS with set 1 holding `targets` instead.
fn set_one_as<'a>(targets: &'a [&'a str]) -> [(u32, &'a [&'a str]); 3] {
    [(1, targets), (2, &["10.0.1.1"]), (3, &[])]
}

/// `--sets-file FILE --listen unix:SOCKET --http (a free address)`: the
/// feeder most tests start, ready for more flags.
fn serving(file: &Path, socket: &Path) -> Args {
    Args::default()
        .sets_file(file)
        .listen_unix(socket)
        .http(free_addr())
}

/// A feeder on a sets file of `sets`, a unix socket, TCP on loopback and
/// HTTP, all in a fresh directory (returned first: keep it while the
/// feeder runs).
async fn feeder(sets: Sets<'_>) -> (TempDir, Feeder, SetsFile, PathBuf, SocketAddr) {
    let dir = TempDir::new().unwrap();
    let file = SetsFile::new(dir.path(), sets);
    let socket = dir.path().join("feed.sock");
    let tcp = free_addr();
    let args = serving(&file.path, &socket).arg("--listen", format!("tcp://{tcp}"));
    let feeder = Feeder::serving(args).await;
    (dir, feeder, file, socket, tcp)
}

#[tokio::test]
async fn each_client_gets_exactly_its_sets_and_every_change() {
    let (_dir, feeder, file, socket, tcp) = feeder(THREE_SETS).await;

    let mut all = Stream::connect(
        feed_client::unix_endpoint(&socket),
        hello("kam-all", &[], ""),
    )
    .await;
    let mut one = Stream::connect(feed_client::tcp_endpoint(tcp), hello("kam-one", &[1], "")).await;
    let mut two = Stream::connect(
        feed_client::unix_endpoint(&socket),
        hello("kam-two", &[3, 2, 99], ""),
    )
    .await;

    let got_all = all.next_acked().await;
    let got_one = one.next_acked().await;
    let got_two = two.next_acked().await;
    assert_eq!(
        uris(&got_all),
        [
            (
                1,
                vec!["sip:10.0.0.1:5060".into(), "sip:10.0.0.2:5060".into()]
            ),
            (2, vec!["sip:10.0.1.1:5060".into()]),
            (3, vec![]),
        ]
    );
    assert_eq!(
        uris(&got_one),
        [(
            1,
            vec!["sip:10.0.0.1:5060".into(), "sip:10.0.0.2:5060".into()]
        )]
    );
    assert_eq!(
        uris(&got_two),
        [(2, vec!["sip:10.0.1.1:5060".into()]), (3, vec![])]
    );
    // Versions are the content hash of exactly the sets sent.
    assert_eq!(got_all.version_info, snapshot(THREE_SETS, None).version());
    assert_eq!(
        got_one.version_info,
        snapshot(THREE_SETS, Some(&[1])).version()
    );
    assert_eq!(
        got_two.version_info,
        snapshot(THREE_SETS, Some(&[2, 3])).version()
    );
    assert_ne!(got_one.version_info, got_two.version_info);

    feeder
        .wait_status("three ACKs", |s| {
            let clients = s["clients"].as_array().unwrap();
            clients.len() == 3
                && clients
                    .iter()
                    .all(|c| c["acked_version"] == c["sent_version"])
        })
        .await;
    let status = feeder.status().await;
    assert_eq!(status["ready"], true);
    assert_eq!(status["snapshot"]["version"], got_all.version_info.as_str());
    assert_eq!(
        status["snapshot"]["sets"]["1"][1]["uri"],
        "sip:10.0.0.2:5060"
    );
    let by_node = |node: &str| {
        status["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["node"] == node)
            .cloned()
            .unwrap_or_else(|| panic!("{node} not in {status:#}"))
    };
    assert_eq!(
        by_node("kam-one")["acked_version"],
        got_one.version_info.as_str()
    );
    assert_eq!(by_node("kam-one")["sets"], serde_json::json!([1]));
    assert_eq!(by_node("kam-all")["sets"], serde_json::Value::Null);
    assert!(
        by_node("kam-one")["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(
        by_node("kam-two")["peer"]
            .as_str()
            .unwrap()
            .starts_with("unix")
    );

    let metrics = feeder.metrics().await;
    for line in [
        "dsfeed_clients_connected 3".to_owned(),
        format!(
            "dsfeed_snapshot_info{{version=\"{}\"}} 1",
            got_all.version_info
        ),
        "dsfeed_set_destinations{set=\"1\"} 2".to_owned(),
        "dsfeed_set_destinations{set=\"3\"} 0".to_owned(),
        format!(
            "dsfeed_client_acked_version_info{{node=\"kam-two\",version=\"{}\"}} 1",
            got_two.version_info
        ),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("dsfeed_snapshot_age_seconds "),
        "{metrics}"
    );

    // Set 1 changes: the clients that want it get it, the other hears nothing.
    let set_one_changed = set_one_as(&["10.0.0.3"]);
    file.write(&set_one_changed);
    let next_all = all.next_acked().await;
    let next_one = one.next_acked().await;
    assert_eq!(uris(&next_one), [(1, vec!["sip:10.0.0.3:5060".into()])]);
    assert_eq!(
        next_all.version_info,
        snapshot(&set_one_changed, None).version()
    );
    assert_eq!(
        next_one.version_info,
        snapshot(&set_one_changed, Some(&[1])).version()
    );
    assert!(two.quiet_for(QUIET).await, "set 2 and 3 did not change");

    // Set 2 changes: the set-2 client gets it too.
    const SET_TWO_CHANGED: Sets<'static> = &[(1, &["10.0.0.3"]), (2, &["10.0.1.2"]), (3, &[])];
    file.write(SET_TWO_CHANGED);
    let next_two = two.next_acked().await;
    assert_eq!(
        uris(&next_two),
        [(2, vec!["sip:10.0.1.2:5060".into()]), (3, vec![])]
    );
    assert_eq!(
        all.next_acked().await.version_info,
        snapshot(SET_TWO_CHANGED, None).version()
    );
    assert!(one.quiet_for(QUIET).await, "set 1 did not change");
    feeder
        .wait_metric(&format!(
            "dsfeed_client_acked_version_info{{node=\"kam-two\",version=\"{}\"}} 1",
            next_two.version_info
        ))
        .await;
}

#[tokio::test]
async fn a_client_that_holds_the_current_version_gets_nothing_until_a_change() {
    let (_dir, feeder, file, socket, tcp) = feeder(THREE_SETS).await;
    let current = snapshot(THREE_SETS, Some(&[1])).version().to_owned();

    // Reconnecting with the version it has applied: no resend.
    let mut same = Stream::connect(
        feed_client::unix_endpoint(&socket),
        hello("kam-a", &[1], &current),
    )
    .await;
    assert!(
        same.quiet_for(QUIET).await,
        "the client already had {current}"
    );
    feeder
        .wait_status("kam-a's reported version", |s| {
            s["clients"][0]["acked_version"] == current.as_str()
        })
        .await;

    // Reconnecting with an old version: the newest, at once.
    let mut old = Stream::connect(
        feed_client::tcp_endpoint(tcp),
        hello("kam-b", &[1], "0123456789abcdef"),
    )
    .await;
    let newest = old.next_acked().await;
    assert_eq!(newest.version_info, current);

    // A second feeder on the same file publishes the same versions, so a
    // client moving to it re-applies nothing.
    let replica_dir = TempDir::new().unwrap();
    let replica_socket = replica_dir.path().join("replica.sock");
    let _replica = Feeder::serving(serving(&file.path, &replica_socket)).await;
    let mut moved = Stream::connect(
        feed_client::unix_endpoint(&replica_socket),
        hello("kam-a", &[1], &current),
    )
    .await;
    assert!(moved.quiet_for(QUIET).await, "the replica resent {current}");
    let mut fresh = Stream::connect(
        feed_client::unix_endpoint(&replica_socket),
        hello("kam-c", &[], ""),
    )
    .await;
    assert_eq!(
        fresh.next_acked().await.version_info,
        snapshot(THREE_SETS, None).version()
    );

    // A change reaches the silent ones, identically from both feeders.
    let changed = set_one_as(&["10.0.0.9"]);
    file.write(&changed);
    let from_first = same.next_acked().await;
    let from_replica = moved.next_acked().await;
    assert_eq!(from_first.version_info, from_replica.version_info);
    assert_eq!(
        from_first.version_info,
        snapshot(&changed, Some(&[1])).version()
    );
    assert_eq!(from_first.sets, from_replica.sets);
}

#[tokio::test]
async fn a_client_that_stops_reading_costs_no_memory_and_then_gets_the_newest() {
    let dir = TempDir::new().unwrap();
    // Big sets, so that a backlog would show in the feeder's memory: each
    // snapshot is about 300 KB on the wire.
    let big = |round: usize| -> String {
        let mut text = String::from("sets:\n  1:\n");
        for i in 0..3000 {
            text.push_str(&format!(
                "    - uri: sip:10.{}.{}.{}:5060\n      attrs: duid=backend-{round}-{i};weight=50;socket=udp:10.255.255.1:5060\n",
                (i / 250) % 250,
                i % 250,
                round % 250 + 1,
            ));
        }
        text
    };
    let file = SetsFile {
        path: dir.path().join("sets.yaml"),
    };
    file.write_text(&big(0));
    let socket = dir.path().join("feed.sock");
    let feeder = Feeder::serving(serving(&file.path, &socket)).await;

    let mut slow =
        Stream::connect(feed_client::unix_endpoint(&socket), hello("slow", &[], "")).await;
    let mut fast =
        Stream::connect(feed_client::unix_endpoint(&socket), hello("fast", &[], "")).await;
    slow.next_acked().await;
    fast.next_acked().await;

    // Warm up: let the allocator reach its working size.
    for round in 1..=5 {
        file.write_text(&big(round));
        fast.next_acked().await;
        slow.next_acked().await;
    }
    let before = feeder.rss_kib();

    // The slow client stops reading; the fast one sees every change.
    const ROUNDS: usize = 100;
    let mut last = FeedResponse::default();
    for round in 6..6 + ROUNDS {
        file.write_text(&big(round));
        let response = fast.next_acked().await;
        assert_ne!(response.version_info, last.version_info);
        last = response;
    }
    let after = feeder.rss_kib();
    // A backlog of ROUNDS snapshots would be some 30 MB.
    assert!(
        after < before + 12 * 1024,
        "RSS grew from {before} KiB to {after} KiB while a client was not reading"
    );
    // Two responses went out before the stall (the window); nothing more.
    let status = feeder.status().await;
    let slow_status = status["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["node"] == "slow")
        .unwrap()
        .clone();
    assert_ne!(
        slow_status["sent_version"],
        last.version_info.as_str(),
        "{slow_status:#}"
    );

    // Resuming, it reads the two responses in flight, then the newest.
    for _ in 0..2 {
        let in_flight = slow.next_acked().await;
        assert_ne!(in_flight.version_info, last.version_info);
    }
    let newest = slow.next_acked().await;
    assert_eq!(newest.version_info, last.version_info);
    assert_eq!(newest.sets, last.sets);
    assert!(slow.quiet_for(QUIET).await, "a backlog followed the newest");
}

/// A feeder on THREE_SETS (in its directory, returned first) with one
/// client of set 1, `node`, which has ACKed the first snapshot (returned);
/// then set 1 changes and the client receives the change (returned, not
/// answered).
async fn one_client_and_a_change(
    node: &str,
) -> (
    TempDir,
    Feeder,
    SetsFile,
    Stream,
    FeedResponse,
    FeedResponse,
) {
    let (dir, feeder, file, socket, _) = feeder(THREE_SETS).await;
    let hello = hello(node, &[1], "");
    let mut client = Stream::connect(feed_client::unix_endpoint(&socket), hello).await;
    let first = client.next_acked().await;
    file.write(&set_one_as(&["10.0.0.7"]));
    let changed = client.next().await;
    (dir, feeder, file, client, first, changed)
}

#[tokio::test]
async fn a_held_response_is_overtaken_by_the_newest_and_its_skip_is_no_nack() {
    // A paced client (dsfeed.so) holds a response until its next swap; the
    // truth moving on meanwhile reaches it at once, so the swap applies the
    // newest.
    let (_dir, feeder, file, mut client, first, held) = one_client_and_a_change("kam-paced").await;
    const NEWEST: Sets<'static> = &[(1, &["10.0.0.8"]), (2, &["10.0.1.1"]), (3, &[])];
    file.write(NEWEST);
    let newest = client.next().await;
    assert_eq!(newest.version_info, snapshot(NEWEST, Some(&[1])).version());
    client
        .nack(
            &held,
            &first.version_info,
            "superseded before it was applied",
        )
        .await;
    client.ack(&newest).await;
    feeder
        .wait_status("the newest acked", |s| {
            s["clients"][0]["acked_version"] == newest.version_info.as_str()
        })
        .await;
    let status = feeder.status().await;
    assert_eq!(status["clients"][0]["nacks"], 0, "{status:#}");
    assert!(
        !feeder
            .metrics()
            .await
            .contains("dsfeed_nacks_total{node=\"kam-paced\"}"),
        "a skip counted as a NACK"
    );
}

#[tokio::test]
async fn a_nack_is_visible_with_its_text_and_not_resent() {
    let (_dir, feeder, file, mut client, first, refused) =
        one_client_and_a_change("kam-nack").await;
    client
        .nack(
            &refused,
            &first.version_info,
            "ds_load_list failed: no memory",
        )
        .await;
    feeder
        .wait_status("the NACK", |s| s["clients"][0]["nacks"] == 1)
        .await;
    let status = feeder.status().await;
    let entry = &status["clients"][0];
    assert_eq!(entry["last_error"], "ds_load_list failed: no memory");
    assert_eq!(entry["acked_version"], first.version_info.as_str());
    assert_eq!(entry["sent_version"], refused.version_info.as_str());
    feeder
        .wait_metric("dsfeed_nacks_total{node=\"kam-nack\"} 1")
        .await;
    assert!(
        client.quiet_for(QUIET).await,
        "the refused version was resent"
    );

    // The truth moves on: the new version is offered.
    let again = set_one_as(&["10.0.0.8"]);
    file.write(&again);
    assert_eq!(
        client.next_acked().await.version_info,
        snapshot(&again, Some(&[1])).version()
    );
}

#[tokio::test]
async fn a_retrying_answer_is_no_nack_and_the_later_ack_counts() {
    // Valid, but Kamailio could not load the change now: the client keeps
    // the first.
    let (_dir, feeder, file, mut client, first, stuck) = one_client_and_a_change("kam-retry").await;
    let client_status = || async { feeder.status().await["clients"][0].clone() };
    let refused = "cannot apply version now (attempt 1): the dispatcher refused the list";
    client.retrying(&stuck, &first.version_info, refused).await;
    feeder
        .wait_status("the client retrying", |s| {
            s["clients"][0]["retrying"]["version"] == stuck.version_info.as_str()
        })
        .await;
    let entry = client_status().await;
    assert_eq!(entry["retrying"]["error"], refused, "{entry:#}");
    assert_eq!(entry["retrying"]["attempts"], 1, "{entry:#}");
    assert_eq!(entry["nacks"], 0, "a retrying answer is no NACK: {entry:#}");
    assert_eq!(entry["acked_version"], first.version_info.as_str());
    feeder
        .wait_metric(&format!(
            "dsfeed_client_retrying_version_info{{node=\"kam-retry\",version=\"{}\"}} 1",
            stuck.version_info
        ))
        .await;
    let metrics = feeder.metrics().await;
    assert!(metrics.contains("dsfeed_retries_total{node=\"kam-retry\"} 1"));
    assert!(!metrics.contains("dsfeed_nacks_total{node=\"kam-retry\"}"));
    assert!(
        client.quiet_for(QUIET).await,
        "the version being retried was sent again"
    );

    // Another failed attempt, then success: both answer the same nonce.
    client
        .retrying(&stuck, &first.version_info, "no file descriptor")
        .await;
    feeder
        .wait_status("the second attempt", |s| {
            s["clients"][0]["retrying"]["attempts"] == 2
        })
        .await;
    client.ack(&stuck).await;
    feeder
        .wait_status("the late ACK", |s| {
            s["clients"][0]["acked_version"] == stuck.version_info.as_str()
                && s["clients"][0]["retrying"].is_null()
        })
        .await;

    // A newer truth is sent while a retry goes on, and supersedes it.
    file.write(&set_one_as(&["10.0.0.8"]));
    let again = client.next().await;
    client
        .retrying(&again, &stuck.version_info, "no memory")
        .await;
    feeder
        .wait_status("the second retry", |s| {
            s["clients"][0]["retrying"]["version"] == again.version_info.as_str()
        })
        .await;
    let newest_sets = set_one_as(&["10.0.0.9"]);
    file.write(&newest_sets);
    let newest = client.next_acked().await;
    assert_eq!(
        newest.version_info,
        snapshot(&newest_sets, Some(&[1])).version()
    );
    feeder
        .wait_status("the newest applied", |s| {
            s["clients"][0]["acked_version"] == newest.version_info.as_str()
                && s["clients"][0]["retrying"].is_null()
        })
        .await;
    let entry = client_status().await;
    assert_eq!(
        (entry["nacks"].as_u64(), entry["retries"].as_u64()),
        (Some(0), Some(3))
    );
}

#[tokio::test]
async fn sigterm_ends_every_stream_with_a_status() {
    let (_dir, mut feeder, _file, socket, tcp) = feeder(THREE_SETS).await;
    let mut unix =
        Stream::connect(feed_client::unix_endpoint(&socket), hello("kam-u", &[], "")).await;
    let mut tcp = Stream::connect(feed_client::tcp_endpoint(tcp), hello("kam-t", &[], "")).await;
    unix.next_acked().await;
    tcp.next_acked().await;
    feeder
        .wait_status("both clients", |s| {
            s["clients"].as_array().unwrap().len() == 2
        })
        .await;

    feeder.signal(Signal::SIGTERM);
    for stream in [&mut unix, &mut tcp] {
        let status = stream
            .next_result()
            .await
            .expect_err("the stream ends with a status");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert_eq!(status.message(), dsfeed::feed::server::SHUTTING_DOWN);
    }
    let exit = feeder.wait_exit().await;
    assert!(exit.success(), "{exit:?}\n{}", feeder.log());
    assert!(!socket.exists(), "the socket file was left behind");
}

#[tokio::test]
async fn plain_tcp_on_every_interface_needs_insecure() {
    let dir = TempDir::new().unwrap();
    let file = SetsFile::new(dir.path(), THREE_SETS);
    let port = free_addr().port();
    let args = Args::default().sets_file(&file.path);
    let open = args.arg("--listen", format!("tcp://0.0.0.0:{port}"));
    let mut refused = Feeder::spawn_serving(open.clone());
    let exit = refused.wait_exit().await;
    assert_eq!(exit.code(), Some(2), "{}", refused.log());
    let log = refused.log();
    assert!(
        log.contains(&format!("tcp://0.0.0.0:{port}")) && log.contains("--insecure"),
        "{log}"
    );

    let accepted = Feeder::serving(open.args(&["--insecure"]).http(free_addr())).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = Stream::connect(feed_client::tcp_endpoint(addr), hello("kam", &[], "")).await;
    assert_eq!(
        client.next().await.version_info,
        snapshot(THREE_SETS, None).version()
    );
    drop(accepted);
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_rejected() {
    let dir = TempDir::new().unwrap();
    let file = SetsFile::new(dir.path(), THREE_SETS);
    let token_file = dir.path().join("token");
    write_secret(&token_file, "s3cret-token\n");
    let socket = dir.path().join("feed.sock");
    let args = serving(&file.path, &socket).arg("--token-file", token_file.display());
    let _feeder = Feeder::serving(args).await;
    for token in [None, Some("wrong"), Some("s3cret-token-and-more")] {
        let err = Stream::open(
            feed_client::unix_endpoint(&socket),
            token,
            hello("kam", &[], ""),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("token {token:?} was accepted"));
        assert!(err.starts_with("Unauthenticated"), "{token:?}: {err}");
    }
    let mut good = Stream::open(
        feed_client::unix_endpoint(&socket),
        Some("s3cret-token"),
        hello("kam", &[], ""),
    )
    .await
    .unwrap();
    assert_eq!(
        good.next().await.version_info,
        snapshot(THREE_SETS, None).version()
    );

    // dsfeed watch gives up at once on a refused token, saying why.
    let wrong = dir.path().join("wrong");
    write_secret(&wrong, "nope");
    let output = watch(&[
        &format!("unix:{}", socket.display()),
        "--token-file",
        wrong.to_str().unwrap(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Unauthenticated") && stderr.contains("bearer token"),
        "{stderr}"
    );
    let output = watch(&[
        &format!("unix:{}", socket.display()),
        "--once",
        "--token-file",
        token_file.to_str().unwrap(),
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
}

#[tokio::test]
async fn watch_prints_each_snapshot_and_acks_it() {
    let (_dir, mut feeder, file, socket, _) = feeder(THREE_SETS).await;
    let mut watcher = tokio::process::Command::new(env!("CARGO_BIN_EXE_dsfeed"))
        .args([
            "watch",
            &format!("unix:{}", socket.display()),
            "--sets",
            "1,3",
            "--node",
            "watcher",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(watcher.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("watch still running")
    };
    let first = snapshot(THREE_SETS, Some(&[1, 3]));
    assert_eq!(
        next_line().await,
        format!(
            "# dispatcher.list generated by dsfeed, version {}",
            first.version()
        )
    );
    assert_eq!(next_line().await, "1 sip:10.0.0.1:5060 0 0");
    assert_eq!(next_line().await, "1 sip:10.0.0.2:5060 0 0");
    feeder
        .wait_status("the watcher's ACK", |s| {
            s["clients"][0]["node"] == "watcher"
                && s["clients"][0]["acked_version"] == first.version()
        })
        .await;

    let changed = set_one_as(&["10.0.0.5"]);
    file.write(&changed);
    let second = snapshot(&changed, Some(&[1, 3]));
    assert_eq!(
        next_line().await,
        format!(
            "# dispatcher.list generated by dsfeed, version {}",
            second.version()
        )
    );
    assert_eq!(next_line().await, "1 sip:10.0.0.5:5060 0 0");
    feeder
        .wait_status("the watcher's second ACK", |s| {
            s["clients"][0]["acked_version"] == second.version()
        })
        .await;
    // It took that one as a delta and printed it whole.
    assert_eq!(feeder.status().await["clients"][0]["deltas"], true);
    feeder.assert_logged("sending a delta");

    // The feeder restarts: the watcher reconnects with what it has and
    // prints nothing, until the sets change again.
    feeder.signal(Signal::SIGTERM);
    assert!(feeder.wait_exit().await.success());
    let restarted = Feeder::serving(serving(&file.path, &socket)).await;
    restarted
        .wait_status("the watcher back with its version", |s| {
            s["clients"][0]["node"] == "watcher"
                && s["clients"][0]["acked_version"] == second.version()
        })
        .await;
    let reprinted = tokio::time::timeout(QUIET, lines.next_line()).await;
    assert!(reprinted.is_err(), "printed again: {reprinted:?}");
    let again = set_one_as(&["10.0.0.6"]);
    file.write(&again);
    let line = tokio::time::timeout(PATIENCE, lines.next_line()).await;
    let third = snapshot(&again, Some(&[1, 3]));
    assert_eq!(
        line.unwrap().unwrap().unwrap(),
        format!(
            "# dispatcher.list generated by dsfeed, version {}",
            third.version()
        )
    );
}

/// An in-process server whose snapshot the test sets by hand.
#[tokio::test]
async fn ready_only_once_every_source_has_synced() {
    let dir = TempDir::new().unwrap();
    let socket = dir.path().join("feed.sock");
    let http = free_addr();
    let serve = dsfeed::feed::ServeArgs {
        listen: vec![dsfeed_model::Endpoint::Unix(socket.clone())],
        http: Some(http),
        ..Default::default()
    };
    let server = dsfeed::feed::server::Server::bind(&serve).await.unwrap();
    let endpoints = dsfeed::http::Http::bind(http).await.unwrap();
    let (tx, rx) = tokio::sync::watch::channel(None);
    let shared = dsfeed::feed::Shared::new(rx, dsfeed::metrics::Metrics::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(endpoints.run(
        shared.clone(),
        dsfeed::http::StatusGate::Open,
        std::future::pending(),
    ));
    let running = tokio::spawn(server.run(shared, async {
        let _ = stopped.await;
    }));

    assert_eq!(
        dsfeed_tests::http::get(http, "/healthz").await.unwrap().0,
        200
    );
    let (code, body) = dsfeed_tests::http::get(http, "/readyz").await.unwrap();
    assert_eq!(code, 503, "{body}");
    let mut early =
        Stream::connect(feed_client::unix_endpoint(&socket), hello("early", &[], "")).await;
    assert!(
        early.quiet_for(QUIET).await,
        "a client got something before the sources synced"
    );

    // A first request that does not say who it is, is refused.
    let mut nameless =
        Stream::connect(feed_client::unix_endpoint(&socket), hello("", &[], "")).await;
    let refused = nameless.next_result().await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    let synced = snapshot(THREE_SETS, None);
    tx.send(Some(std::sync::Arc::new(synced.clone()))).unwrap();
    assert_eq!(early.next_acked().await.version_info, synced.version());
    let (code, body) = dsfeed_tests::http::get(http, "/readyz").await.unwrap();
    assert_eq!(code, 200, "{body}");

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(
        early.next_result().await.expect_err("ended").code(),
        tonic::Code::Unavailable
    );
}

/// Asserts that `response` is the whole snapshot `version`, on no base,
/// with `sets` sets.
fn assert_full(response: &FeedResponse, version: &str, sets: usize) {
    assert_eq!(
        (
            response.version_info.as_str(),
            response.base_version.as_str(),
            response.sets.len()
        ),
        (version, "", sets)
    );
}

/// The first request of a client that completes deltas.
fn hello_deltas(node: &str, sets: &[u32], version: &str) -> dsfeed_model::pb::FeedRequest {
    dsfeed_model::pb::hello_with_deltas(node, "feed-test", sets, version)
}

#[tokio::test]
async fn a_client_that_takes_deltas_gets_only_what_changed_since_its_version() {
    let (_dir, feeder, file, socket, _tcp) = feeder(THREE_SETS).await;
    let endpoint = || feed_client::unix_endpoint(&socket);
    let v1 = snapshot(THREE_SETS, None);

    // Holding nothing: the full snapshot.
    let mut client = Stream::connect(endpoint(), hello_deltas("kam-delta", &[], "")).await;
    assert_full(&client.next_acked().await, v1.version(), 3);
    feeder
        .wait_status("a client that takes deltas", |s| {
            s["clients"][0]["deltas"] == true
        })
        .await;

    // One set changes, one goes: the changed set whole, the removed id.
    let changed: Sets<'_> = &[(1, &["10.0.0.1", "10.0.0.3"]), (3, &[])];
    file.write(changed);
    let v2 = snapshot(changed, None);
    let delta = client.next().await;
    assert_eq!(delta.version_info, v2.version());
    assert_eq!(delta.base_version, v1.version());
    assert_eq!(
        uris(&delta),
        [(
            1,
            vec!["sip:10.0.0.1:5060".into(), "sip:10.0.0.3:5060".into()]
        )]
    );
    assert_eq!(delta.removed_set_ids, [2]);
    let completed = dsfeed_model::pb::complete(&delta, &[], &[&v1]).unwrap();
    assert_eq!(completed, v2);
    let metrics = feeder.metrics().await;
    let counted = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert_eq!(counted("dsfeed_responses_total{kind=\"delta\"}"), 1);
    assert_eq!(counted("dsfeed_responses_total{kind=\"full\"}"), 1);
    let delta_bytes = counted("dsfeed_response_bytes_total{kind=\"delta\"}");
    assert!(delta_bytes < counted("dsfeed_response_bytes_total{kind=\"full\"}"));
    assert_eq!(delta_bytes, dsfeed_model::pb::encoded_len(&delta) as u64);

    // Lacking the base, the client NACKs: the same version comes in full,
    // and the NACK is not counted as a refusal.
    client.nack(&delta, v1.version(), "no such base").await;
    assert_full(&client.next_acked().await, v2.version(), 2);
    feeder
        .wait_status("the full snapshot ACKed", |s| {
            s["clients"][0]["acked_version"] == v2.version() && s["clients"][0]["nacks"] == 0
        })
        .await;
    drop(client);

    // Reconnecting with a version of the history: a delta on it; with an
    // unknown one, or without asking for deltas: the full snapshot.
    let mut back = Stream::connect(endpoint(), hello_deltas("kam-delta", &[], v1.version())).await;
    let delta = back.next().await;
    assert_eq!(
        (
            delta.base_version.as_str(),
            delta.removed_set_ids.as_slice()
        ),
        (v1.version(), &[2][..])
    );
    let mut stranger =
        Stream::connect(endpoint(), hello_deltas("kam-x", &[], "0123456789abcdef")).await;
    assert_eq!(stranger.next().await.base_version, "");
    let mut plain = Stream::connect(endpoint(), hello("kam-plain", &[], v1.version())).await;
    let plain = plain.next().await;
    assert_eq!((plain.base_version.as_str(), plain.sets.len()), ("", 2));

    // A filtered client's delta carries only its own sets.
    let mut one = Stream::connect(endpoint(), hello_deltas("kam-one", &[1], "")).await;
    one.next_acked().await;
    file.write(&[(1, &["10.0.0.4"]), (3, &["10.0.2.1"])]);
    let delta = one.next().await;
    assert_eq!(uris(&delta), [(1, vec!["sip:10.0.0.4:5060".into()])]);
    assert!(delta.removed_set_ids.is_empty());
}

#[tokio::test]
async fn a_delta_carries_the_lists_a_client_asked_for_whole() {
    use dsfeed_model::ListKind;
    use dsfeed_model::pb::{self, wire_lists};
    let dir = TempDir::new().unwrap();
    let with_relay =
        |relay: &str| format!("sets:\n  1:\n    - 10.0.0.1\nrtpengine:\n  0:\n    - {relay}\n");
    let file = SetsFile::new(dir.path(), &[]);
    file.write_text(&with_relay("10.0.0.5"));
    let socket = dir.path().join("feed.sock");
    let _feeder = Feeder::serving(serving(&file.path, &socket)).await;
    let mut hello = hello_deltas("kam-lists", &[], "");
    hello.lists = wire_lists(&[ListKind::Rtpengine].into());
    let mut client = Stream::connect(feed_client::unix_endpoint(&socket), hello).await;
    let first = client.next_acked().await;
    assert_eq!(first.rtpengine_sets[0].relays[0].url, "udp:10.0.0.5:22222");
    let held = pb::complete(&first, &[], &[]).unwrap();

    // Only a relay changes: a delta with no set, and the relays whole.
    file.write_text(&with_relay("10.0.0.6"));
    let delta = client.next().await;
    assert_eq!(delta.base_version, first.version_info);
    assert!(delta.sets.is_empty() && delta.removed_set_ids.is_empty());
    assert_eq!(delta.rtpengine_sets[0].relays[0].url, "udp:10.0.0.6:22222");
    let completed = pb::complete(&delta, &[], &[&held]).unwrap();
    assert_eq!(completed.sets(), held.sets());
    assert_eq!(completed.lists().relay_count(), 1);
}
