//! The README's membership check from a Kamailio script, run as written:
//! Kamailio's `http_client` asks the feeder's `/check/1/$siz:$sp` about
//! each request's source and answers 200 (a member of set 1) or 403 (not,
//! or no answer). On both Kamailios (`make test`'s second pass runs it in
//! the Debian 13 root, which carries `kamailio-utils-modules`).

use std::net::{SocketAddr, UdpSocket};

use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::sets::SetsFile;
use dsfeed_tests::{Kamailio, PATIENCE, eventually, free_addr, probe, write_secret};
use tempfile::TempDir;

/// The README's route, with `QUERY` standing for its `http_client_query`
/// call; the reason phrase carries the HTTP status for the assertions.
const ROUTE: &str = r#"
request_route {
    QUERY;
    $var(status) = $rc;
    if ($var(status) != 200) {
        sl_send_reply("403", "Forbidden $var(status)");
        exit;
    }
    sl_send_reply("200", "Member");
}
"#;

/// A Kamailio whose script checks every request's source with `query`.
async fn kamailio(query: &str) -> Kamailio {
    Kamailio::builder("")
        .loadmodule("http_client.so")
        .modparam("http_client", "connection_timeout", 1)
        .routes(ROUTE.replace("QUERY", query))
        .start()
        .await
        .unwrap()
}

/// A feeder serving set 1 from `file` on `--http`, with `more` flags.
async fn feeder(dir: &TempDir, file: &SetsFile, more: &[&str]) -> Feeder {
    let args = Args::default()
        .sets_file(&file.path)
        .listen_unix(&dir.path().join("feed.sock"))
        .args(more);
    Feeder::serving(args.http(free_addr())).await
}

fn set_one(members: &[&UdpSocket]) -> String {
    let lines: String = members
        .iter()
        .map(|s| format!("    - {}\n", probe::address(s)))
        .collect();
    if lines.is_empty() {
        "sets:\n  1: []\n".to_owned()
    } else {
        format!("sets:\n  1:\n{lines}")
    }
}

/// Waits until Kamailio answers a request from `socket` with `code`.
async fn until_answered(kamailio: SocketAddr, socket: &UdpSocket, code: u16) -> String {
    let who = probe::address(socket);
    eventually(&format!("{code} for {who}"), PATIENCE, || async {
        let (got, reason) = probe::options(socket, kamailio);
        (got == code).then_some(reason)
    })
    .await
}

#[tokio::test]
async fn a_script_admits_only_members_and_follows_the_set() {
    let dir = TempDir::new().unwrap();
    let (backend, stranger) = (probe::socket(), probe::socket());
    let file = SetsFile {
        path: dir.path().join("sets.yaml"),
    };
    file.write_text(&set_one(&[&backend]));
    let mut feeder = feeder(&dir, &file, &[]).await;
    let http = feeder.http.unwrap();
    let kamailio = kamailio(&format!(
        r#"http_client_query("http://{http}/check/1/$siz:$sp", "$var(member)")"#
    ))
    .await;
    let sip = kamailio.sip_addr();

    assert_eq!(probe::options(&backend, sip), (200, "Member".to_owned()));
    assert_eq!(
        probe::options(&stranger, sip),
        (403, "Forbidden 404".to_owned())
    );

    // The set changes: the script follows the feeder's snapshot.
    file.write_text(&set_one(&[&stranger]));
    until_answered(sip, &stranger, 200).await;
    assert_eq!(
        probe::options(&backend, sip),
        (403, "Forbidden 404".to_owned())
    );

    // No feeder, no admission: the query fails and the script refuses.
    feeder.kill();
    let (code, reason) = probe::options(&stranger, sip);
    assert_eq!(code, 403, "{reason}");
    assert_ne!(reason, "Forbidden 404", "an answer from a dead feeder");
}

#[tokio::test]
async fn with_a_token_the_script_sends_it_and_a_wrong_one_is_refused() {
    let dir = TempDir::new().unwrap();
    let backend = probe::socket();
    let file = SetsFile {
        path: dir.path().join("sets.yaml"),
    };
    file.write_text(&set_one(&[&backend]));
    let token = dir.path().join("token");
    write_secret(&token, "s3cret\n");
    let feeder = feeder(&dir, &file, &["--token-file", token.to_str().unwrap()]).await;
    let http = feeder.http.unwrap();
    let query = |token: &str| {
        format!(
            r#"http_client_query("http://{http}/check/1/$siz:$sp", "", "Authorization: Bearer {token}", "$var(member)")"#
        )
    };

    let right = kamailio(&query("s3cret")).await;
    assert_eq!(
        probe::options(&backend, right.sip_addr()),
        (200, "Member".to_owned())
    );
    let wrong = kamailio(&query("guess")).await;
    assert_eq!(
        probe::options(&backend, wrong.sip_addr()),
        (403, "Forbidden 401".to_owned())
    );
}
