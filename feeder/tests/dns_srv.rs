//! The DNS SRV source as a user runs it: the real `dsfeed` binary asking a
//! real DNS server on loopback (`--dns-server`), over UDP and, for long
//! answers, TCP. What the set holds is read back from `/sets`.

use std::time::{Duration, Instant};

use dsfeed_tests::dns_server::{Behavior, DnsServer, SrvRecord, srv};
use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::{PATIENCE, free_addr, wait_until};
use serde_json::Value;
use tempfile::TempDir;

const NAME: &str = "_sip._udp.pbx.dsfeed.test";

/// A feeder following `NAME` as set 1 on `dns`, serving HTTP, with `more`
/// flags.
async fn feeder(dir: &TempDir, dns: &DnsServer, more: &[&str]) -> Feeder {
    let args = Args::default()
        .arg("--dns-srv", format!("{NAME}=1"))
        .arg("--dns-server", dns.addr())
        .args(more)
        .listen_unix(&dir.path().join("feed.sock"))
        .http(free_addr());
    Feeder::serving(args).await
}

/// A DNS server answering `records` for `NAME`, and a [`feeder`] with
/// `more` flags following it; the directory holds the feed socket.
async fn answering(records: Vec<SrvRecord>, more: &[&str]) -> (DnsServer, TempDir, Feeder) {
    let dns = DnsServer::start().await;
    dns.set(NAME, records);
    let dir = TempDir::new().unwrap();
    let feeder = feeder(&dir, &dns, more).await;
    (dns, dir, feeder)
}

/// Set 1's destinations as `(uri, priority, attrs)`, in the snapshot's
/// order (highest priority first).
async fn set_one(feeder: &Feeder) -> Vec<(String, i64, String)> {
    read_set_one(feeder).await.unwrap()
}

/// [`set_one`], or what `/sets/1` answered instead.
async fn read_set_one(feeder: &Feeder) -> Result<Vec<(String, i64, String)>, String> {
    let (code, body) = feeder.get("/sets/1").await;
    if code != 200 {
        return Err(format!("{code} {body}"));
    }
    let page: Value = serde_json::from_str(&body).unwrap();
    Ok(dsfeed_tests::sets::shown(&page["destinations"]))
}

/// Waits until set 1 holds exactly `uris` (in any order).
async fn until_set_one(feeder: &Feeder, uris: &[&str]) {
    let mut want: Vec<&str> = uris.to_vec();
    want.sort_unstable();
    wait_until(&format!("set 1 to be {want:?}"), PATIENCE, || async {
        let got = read_set_one(feeder).await?;
        let mut uris: Vec<&str> = got.iter().map(|(u, _, _)| u.as_str()).collect();
        uris.sort_unstable();
        if uris == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
}

fn owned(rows: &[(&str, i64, &str)]) -> Vec<(String, i64, String)> {
    rows.iter()
        .map(|(u, p, a)| ((*u).to_owned(), *p, (*a).to_owned()))
        .collect()
}

#[tokio::test]
async fn records_become_a_set_with_priorities_turned_over_and_weights_as_shares() {
    let records = vec![
        srv(10, 60, 5060, "a.pbx.dsfeed.test", 1),
        srv(10, 20, 5080, "b.pbx.dsfeed.test", 1),
        srv(10, 20, 5060, "c.pbx.dsfeed.test", 1),
        srv(20, 0, 5060, "backup.pbx.dsfeed.test", 1),
    ];
    let (dns, _dir, feeder) = answering(records, &[]).await;
    // DNS priority 10 is preferred to 20: the dispatcher's is higher.
    assert_eq!(
        set_one(&feeder).await,
        owned(&[
            ("sip:a.pbx.dsfeed.test:5060", 65525, "weight=60"),
            ("sip:b.pbx.dsfeed.test:5080", 65525, "weight=20"),
            ("sip:c.pbx.dsfeed.test:5060", 65525, "weight=20"),
            ("sip:backup.pbx.dsfeed.test:5060", 65515, "weight=100"),
        ])
    );

    // A record removed and one added: seen within the records' TTL (1 s).
    dns.set(
        NAME,
        vec![
            srv(10, 60, 5060, "a.pbx.dsfeed.test", 1),
            srv(10, 20, 5060, "c.pbx.dsfeed.test", 1),
            srv(10, 20, 5060, "d.pbx.dsfeed.test", 1),
        ],
    );
    until_set_one(
        &feeder,
        &[
            "sip:a.pbx.dsfeed.test:5060",
            "sip:c.pbx.dsfeed.test:5060",
            "sip:d.pbx.dsfeed.test:5060",
        ],
    )
    .await;
    feeder.assert_logged("SRV records changed");
}

#[tokio::test]
async fn a_failed_lookup_keeps_the_last_answer() {
    let records = vec![
        srv(0, 1, 5060, "a.pbx.dsfeed.test", 1),
        srv(0, 1, 5060, "b.pbx.dsfeed.test", 1),
    ];
    let (dns, _dir, feeder) = answering(records, &[]).await;
    let before = set_one(&feeder).await;
    assert_eq!(before.len(), 2, "{before:?}");

    // SERVFAIL, then no answer at all: each counted, the set unchanged.
    dns.behave(Behavior::ServFail);
    feeder
        .wait_metric(&format!(
            "dsfeed_source_errors_total{{source=\"dns {NAME}\",kind=\"dns_rcode\"}} 1"
        ))
        .await;
    assert_eq!(set_one(&feeder).await, before);
    feeder.assert_logged("SERVFAIL");
    dns.behave(Behavior::Silent);
    feeder
        .wait_metric(&format!(
            "dsfeed_source_errors_total{{source=\"dns {NAME}\",kind=\"dns_timeout\"}} 1"
        ))
        .await;
    assert_eq!(set_one(&feeder).await, before);

    // Back, with a change: the set follows again.
    dns.set(NAME, vec![srv(0, 1, 5060, "b.pbx.dsfeed.test", 1)]);
    dns.behave(Behavior::Answer);
    until_set_one(&feeder, &["sip:b.pbx.dsfeed.test:5060"]).await;
}

#[tokio::test]
async fn a_name_gone_is_held_for_the_grace_then_emptied() {
    let records = vec![srv(0, 1, 5060, "a.pbx.dsfeed.test", 1)];
    let grace = Duration::from_secs(3);
    let (dns, _dir, feeder) = answering(records, &["--dns-empty-grace", "3s"]).await;
    until_set_one(&feeder, &["sip:a.pbx.dsfeed.test:5060"]).await;

    dns.remove(NAME);
    let removed = Instant::now();
    feeder.wait_logged("no usable SRV record").await;
    // NXDOMAIN seen, and the set still has its destination.
    until_set_one(&feeder, &["sip:a.pbx.dsfeed.test:5060"]).await;
    until_set_one(&feeder, &[]).await;
    assert!(
        removed.elapsed() >= grace,
        "emptied {:?} after the name went, before the grace",
        removed.elapsed()
    );
    feeder.assert_logged("emptying the set");

    // The name back: the set follows it again.
    dns.set(NAME, vec![srv(0, 1, 5060, "c.pbx.dsfeed.test", 1)]);
    until_set_one(&feeder, &["sip:c.pbx.dsfeed.test:5060"]).await;
}

#[tokio::test]
async fn a_first_empty_answer_holds_the_set_and_the_others_go_ahead() {
    let dns = DnsServer::start().await;
    let dir = TempDir::new().unwrap();
    // NXDOMAIN from the start; a static set beside it.
    let feeder = feeder(&dir, &dns, &["--static", "2=10.0.0.2"]).await;
    let (code, body) = feeder.get("/sets").await;
    assert_eq!(code, 200, "{body}");
    let sets: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sets["held"], serde_json::json!([1]), "{sets:#}");
    assert_eq!(sets["sets"][0]["id"], 2, "{sets:#}");
    let (code, body) = feeder.get("/sets/1").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("held"), "{body}");

    dns.set(NAME, vec![srv(0, 1, 5060, "a.pbx.dsfeed.test", 1)]);
    until_set_one(&feeder, &["sip:a.pbx.dsfeed.test:5060"]).await;
}

#[tokio::test]
async fn one_bad_record_drops_only_itself() {
    let records = vec![
        srv(0, 1, 5060, "good.pbx.dsfeed.test", 1),
        srv(0, 1, 0, "port-zero.pbx.dsfeed.test", 1),
        srv(0, 1, 5060, "bad#name.pbx.dsfeed.test", 1),
    ];
    let (_dns, _dir, feeder) = answering(records, &[]).await;
    assert_eq!(
        set_one(&feeder).await,
        owned(&[("sip:good.pbx.dsfeed.test:5060", 65535, "weight=100")])
    );
    feeder.assert_logged("port-zero.pbx.dsfeed.test of _sip._udp.pbx.dsfeed.test left out: port 0");
    feeder.assert_logged("bad#name.pbx.dsfeed.test of _sip._udp.pbx.dsfeed.test left out");
}

#[tokio::test]
async fn an_answer_too_long_for_a_datagram_comes_over_tcp() {
    let targets: Vec<String> = (0..40)
        .map(|i| format!("backend-{i:02}.pbx.dsfeed.test"))
        .collect();
    let records = targets.iter().map(|t| srv(0, 1, 5060, t, 60)).collect();
    let (dns, _dir, feeder) = answering(records, &[]).await;
    let uris: Vec<String> = targets.iter().map(|t| format!("sip:{t}:5060")).collect();
    let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
    until_set_one(&feeder, &uris).await;
    assert!(dns.tcp_questions() > 0, "the answer came over TCP");
    // 40 records with equal weights share 100 as 3 (rounded) each.
    assert!(
        set_one(&feeder)
            .await
            .iter()
            .all(|(_, _, a)| a == "weight=3")
    );
}

#[tokio::test]
async fn once_prints_the_records_as_dispatcher_list_lines() {
    let dns = DnsServer::start().await;
    dns.set(
        "_sip._tcp.pbx.dsfeed.test",
        vec![
            srv(5, 3, 5061, "a.pbx.dsfeed.test", 30),
            srv(5, 1, 5062, "b.pbx.dsfeed.test", 30),
        ],
    );
    let output = tokio::process::Command::new(dsfeed_tests::feeder::binary())
        .args([
            "--dns-srv",
            "_sip._tcp.pbx.dsfeed.test.=7,flags=8,attrs=duid=pbx",
        ])
        .args(["--dns-server", &dns.addr().to_string(), "--once", "-o", "-"])
        .output()
        .await
        .unwrap();
    let stdout = dsfeed_tests::feeder::succeeded(&output);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "7 sip:a.pbx.dsfeed.test:5061;transport=tcp 8 65530 duid=pbx;weight=75",
            "7 sip:b.pbx.dsfeed.test:5062;transport=tcp 8 65530 duid=pbx;weight=25",
        ],
        "{stdout}"
    );
}

#[test]
fn bad_dns_flags_exit_2_naming_the_culprit() {
    for (args, needle) in [
        (
            &["--dns-srv", "_sip._udp.x=1:5060"][..],
            "port comes from each SRV record",
        ),
        (
            &["--dns-srv", "_sip._udp.x=1,weight=5"],
            "unknown option 'weight'",
        ),
        (
            &["--dns-srv", "_sip._udp.x=1", "--dns-server", "ns.example"],
            "'ns.example' is not IP[:PORT]",
        ),
        (
            &["--dns-srv", "_sip._udp.x=1", "--dns-empty-grace", "soon"],
            "'soon' is not a duration",
        ),
    ] {
        let output = dsfeed_tests::feeder::run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let output = std::process::Command::new(dsfeed_tests::feeder::binary())
        .args(["--dns-srv", "_sip._udp.pbx.example=3", "--check=flags"])
        .env("DSFEED_DNS_SERVER", "127.0.0.1:5353")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("DNS SRV _sip._udp.pbx.example as set 3 (name server 127.0.0.1:5353)"),
        "{stdout}"
    );
}
