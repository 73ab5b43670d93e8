//! What the destination flags dsfeed writes mean to the stock dispatcher's
//! script functions, checked on the target Kamailio (5.6.3, or 6.0.1 in a
//! Debian 13 root): dsfeed marks a draining backend disabled (flag 4), and
//! that is only right while `ds_is_from_list` keeps recognising it, so
//! in-dialog requests from a call it still carries are trusted.

use dsfeed_tests::{Kamailio, probe};
use std::net::UdpSocket;

/// Answers every request with what `ds_is_from_list` said about its
/// source: in set 1 at all (mode 2: any transport), and among set 1's
/// active destinations (mode 2 + 4).
const FROM_LIST: &str = r#"
request_route {
    $var(any) = 0;
    $var(active) = 0;
    if (ds_is_from_list("1", "2")) {
        $var(any) = 1;
    }
    if (ds_is_from_list("1", "6")) {
        $var(active) = 1;
    }
    sl_send_reply("200", "any=$var(any) active=$var(active)");
}
"#;

/// What `ds_is_from_list` said about the source of one OPTIONS sent from
/// `socket`: the 200's reason phrase.
fn ask(socket: &UdpSocket, kamailio: std::net::SocketAddr) -> String {
    match probe::options(socket, kamailio) {
        (200, reason) => reason,
        other => panic!("not a 200: {other:?}"),
    }
}

#[tokio::test]
async fn disabled_and_inactive_destinations_are_still_from_the_list_unless_active_is_asked() {
    let bind = probe::socket;
    let (active, disabled, inactive, stranger) = (bind(), bind(), bind(), bind());
    let port = |s: &UdpSocket| s.local_addr().unwrap().port();
    let list = format!(
        "1 sip:127.0.0.1:{} 0 0\n1 sip:127.0.0.1:{} 4 0\n1 sip:127.0.0.1:{} 1 0\n",
        port(&active),
        port(&disabled),
        port(&inactive)
    );
    let kamailio = Kamailio::builder(list)
        .routes(FROM_LIST)
        .start()
        .await
        .unwrap();
    let sip = kamailio.sip_addr();
    for (who, socket, expected) in [
        ("active (0)", &active, "any=1 active=1"),
        ("disabled (4)", &disabled, "any=1 active=0"),
        ("inactive (1)", &inactive, "any=1 active=0"),
        ("not listed", &stranger, "any=0 active=0"),
    ] {
        assert_eq!(
            ask(socket, sip),
            expected,
            "a request from the {who} destination"
        );
    }
}
