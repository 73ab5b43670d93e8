//! dsfeed.so facing a careless configuration or a feed larger than it
//! takes, in a real Kamailio 5.6.3: a token that would travel in clear text
//! to another host, or that others can read, stops Kamailio's start with
//! the parameter named; a response of 100,000 destinations is refused
//! without losing the stream, by the real feeder (it withholds it, with an
//! error) and by the module (it NACKs one a feeder sends anyway).

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use dsfeed_model::pb;
use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::module::{WAIT, kamailio, status, status_until, uris};
use dsfeed_tests::scripted::TestFeeder;
use dsfeed_tests::{HarnessError, KamailioBuilder, eventually, replace_file};

/// The size the issue asks about: twice what a response may carry.
const HUGE: usize = 100_000;

async fn start_failing(builder: KamailioBuilder) -> String {
    match builder.start().await {
        Ok(_) => panic!("kamailio started"),
        Err(HarnessError::Exited { log, .. }) => log,
        Err(other) => panic!("kamailio did not exit: {other}"),
    }
}

#[tokio::test]
async fn a_token_in_clear_text_to_another_host_stops_kamailio() {
    let feeder = "http://192.0.2.10:7000";
    let log = start_failing(
        kamailio("")
            .modparam("dsfeed", "feeder", feeder)
            .modparam("dsfeed", "token", "s3cret"),
    )
    .await;
    assert!(
        log.contains("modparam dsfeed token: the token would travel in clear text")
            && log.contains(feeder)
            && log.contains("insecure 1"),
        "{log}"
    );
    // Said explicitly, it is the operator's choice.
    let accepted = kamailio("")
        .modparam("dsfeed", "feeder", feeder)
        .modparam("dsfeed", "token", "s3cret")
        .modparam("dsfeed", "insecure", 1)
        .modparam("dsfeed", "reconnect_max_ms", 1000)
        .start()
        .await
        .unwrap();
    assert_eq!(status(&accepted).await.int("connected"), 0);
}

#[tokio::test]
async fn a_token_file_others_can_read_stops_kamailio() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = start_failing(
        kamailio("")
            .modparam("dsfeed", "feeder", "unix:/run/dsfeed-none.sock")
            .modparam("dsfeed", "token_file", token.as_path()),
    )
    .await;
    assert!(
        log.contains("modparam dsfeed token_file")
            && log.contains(&format!("chmod 600 {}", token.display())),
        "{log}"
    );
}

fn huge_response(version: &str) -> pb::FeedResponse {
    pb::FeedResponse {
        version_info: version.into(),
        nonce: format!("nonce-{version}"),
        sets: vec![pb::Set {
            id: 1,
            destinations: (0..HUGE)
                .map(|i| pb::WireDestination {
                    uri: format!("sip:10.{}.{}.{}:5060", i >> 16, (i >> 8) & 255, i & 255),
                    ..Default::default()
                })
                .collect(),
        }],
        ..Default::default()
    }
}

fn small_response(version: &str, uri: &str) -> pb::FeedResponse {
    pb::FeedResponse {
        version_info: version.into(),
        nonce: format!("nonce-{version}"),
        sets: vec![pb::Set {
            id: 1,
            destinations: vec![pb::WireDestination {
                uri: uri.into(),
                ..Default::default()
            }],
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_nacks_100000_destinations_and_keeps_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let feeder = TestFeeder::unix(&dir.path().join("feed.sock")).await;
    feeder.publish(small_response("v1", "sip:10.0.0.1:5060"));
    let kamailio = kamailio("")
        .modparam(
            "dsfeed",
            "feeder",
            format!("unix:{}", feeder.socket.display()),
        )
        .modparam("dsfeed", "reconnect_max_ms", 1000)
        .start()
        .await
        .unwrap();
    status_until(&kamailio, "v1 applied", |s| {
        s.text("applied_version") == "v1"
    })
    .await;

    // A feeder that sends it anyway (another version, or a hostile one).
    feeder.send_only(huge_response("v-huge"));
    let nack = feeder.wait_answer("nonce-v-huge", WAIT).await;
    let detail = nack.error_detail.expect("a NACK");
    assert!(!detail.retrying);
    assert!(
        detail.message.contains("100000 destinations") && detail.message.contains("50000"),
        "{}",
        detail.message
    );
    assert_eq!(nack.version_info, "v1", "the NACK names the version kept");
    let status = status(&kamailio).await;
    assert_eq!(status.text("applied_version"), "v1");
    assert_eq!(
        (status.int("connected"), status.int("connects")),
        (1, 1),
        "{status:?}"
    );
    assert_eq!(feeder.streams(), 1, "no reconnect, no second download");
    assert_eq!(uris(&kamailio, 1).await, ["sip:10.0.0.1:5060"]);

    // The stream still works.
    feeder.publish(small_response("v2", "sip:10.0.0.2:5060"));
    status_until(&kamailio, "v2 applied", |s| {
        s.text("applied_version") == "v2"
    })
    .await;
    assert_eq!(feeder.streams(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_feeder_withholds_100000_destinations_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let sets = dir.path().join("sets.yaml");
    replace_file(&sets, "sets:\n  1:\n    - 10.0.0.1\n");
    let socket = dir.path().join("feed.sock");
    let log = dir.path().join("dsfeed.log");
    let feeder = Feeder::start(
        Args::new(&["--mode", "grpc"])
            .sets_file(&sets)
            .listen_unix(&socket),
        &log,
    );
    let kamailio = kamailio("")
        .modparam("dsfeed", "feeder", format!("unix:{}", socket.display()))
        .modparam("dsfeed", "reconnect_max_ms", 1000)
        .start()
        .await
        .unwrap();
    let first = status_until(&kamailio, "the first snapshot applied", |s| {
        s.int("swaps") == 1
    })
    .await;
    let kept = first.text("applied_version").to_owned();

    let mut huge = String::from("sets:\n  1:\n");
    for i in 0..HUGE {
        huge.push_str(&format!(
            "    - 10.{}.{}.{}\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ));
    }
    replace_file(&sets, &huge);
    let text = eventually(
        "the feeder's error about the size",
        Duration::from_secs(120),
        || async {
            let text = feeder.log();
            text.contains("is not sent: it has 100000 destinations")
                .then_some(text)
        },
    )
    .await;
    assert!(text.contains("more than the 50000"), "{text}");
    let status = status(&kamailio).await;
    assert_eq!(status.text("applied_version"), kept);
    assert_eq!(
        (status.int("connects"), status.int("nacks")),
        (1, 0),
        "{status:?}"
    );

    replace_file(&sets, "sets:\n  1:\n    - 10.0.0.2\n");
    status_until(&kamailio, "the next small snapshot applied", |s| {
        s.int("swaps") == 2
    })
    .await;
    assert_eq!(uris(&kamailio, 1).await, ["sip:10.0.0.2:5060"]);
    assert_eq!(
        dsfeed_tests::module::status(&kamailio)
            .await
            .int("connects"),
        1
    );
}
