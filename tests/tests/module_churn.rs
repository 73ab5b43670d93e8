//! Churn: sipp sends SIP requests through `ds_select_dst` with failover
//! while a feeder on TCP changes set 1 every 5 ms; Kamailio must stay up, the
//! module must end on the newest snapshot, and requests must keep flowing.
//!
//! This is the scenario that crashes a stock Kamailio 5.6 whose lists are
//! swapped without pacing (a SIP worker reads a freed list; 6.0 frees its
//! lists the same way). It runs for a minute; `make test` runs it on each
//! Kamailio, and so does:
//!
//! ```sh
//! cargo test --workspace --test module_churn -- --nocapture
//! ```
//!
//! `DSFEED_CHURN_SECS` (default 60) and `DSFEED_CHURN_RATE` (requests per
//! second, default 2000) change the load.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dsfeed_binrpc::Value;
use dsfeed_tests::module::{WAIT, kamailio, rpc, status};
use dsfeed_tests::scripted::{Dest, TestFeeder, response};
use dsfeed_tests::{free_udp_port, sipp};

/// OPTIONS to `sip:1@kamailio`: the harness routes it to set 1 with
/// `ds_select_dst` and fails over on 5xx/timeouts with `ds_next_dst`.
const UAC: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="dsfeed churn uac">
  <send retrans="500">
    <![CDATA[
      OPTIONS sip:1@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:1@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" />
</scenario>
"#;

/// A backend that refuses everything, so every request sent there must
/// fail over.
const UAS_503: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="dsfeed churn failing backend">
  <recv request="OPTIONS" />
  <send>
    <![CDATA[
      SIP/2.0 503 Service Unavailable
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

/// A sipp process, killed when dropped.
struct Sipp(Child);

impl Sipp {
    fn spawn(dir: &Path, scenario: &str, port: u16, extra: &[String]) -> Sipp {
        let log = std::fs::File::create(dir.join(format!("sipp-{port}.log"))).unwrap();
        let child = Command::new("sipp")
            .current_dir(dir)
            .args(["-sf", scenario, "-t", "u1", "-i", "127.0.0.1", "-nostdin"])
            .args(["-p", &port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot run sipp (apt-get install sip-tester)");
        Sipp(child)
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The last row of sipp's statistics file, by column name.
fn sipp_stats(path: &Path) -> impl Fn(&str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let fields = |line: Option<&str>| -> Vec<String> {
        line.unwrap_or_default()
            .split(';')
            .map(str::to_owned)
            .collect()
    };
    let header = fields(lines.next());
    let last = fields(lines.next_back());
    move |column: &str| {
        header
            .iter()
            .position(|h| h == column)
            .and_then(|i| last.get(i))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {column} in sipp's statistics"))
    }
}

/// Real MB of shm in use (`core.shmmem m`): an int from 5.6, a double
/// from 6.0, which made it an unsigned long.
async fn shm_used(kamailio: &dsfeed_tests::Kamailio) -> i32 {
    let reply = rpc(kamailio, "core.shmmem", &["m"]).await.unwrap();
    match reply[0].get("real_used") {
        Some(Value::Int(mb)) => *mb,
        Some(Value::Double(mb)) => *mb as i32,
        other => panic!("no real_used in core.shmmem: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_survives_snapshot_churn_under_sip_load() {
    let secs = env_number("DSFEED_CHURN_SECS", 60);
    let rate = env_number("DSFEED_CHURN_RATE", 2000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("uac.xml"), UAC).unwrap();
    std::fs::write(dir.path().join("uas503.xml"), UAS_503).unwrap();

    let good = [sipp::Backend::start(), sipp::Backend::start()];
    let failing_port = free_udp_port();
    let _failing = Sipp::spawn(dir.path(), "uas503.xml", failing_port, &[]);
    let (good_a, good_b) = (good[0].uri(), good[1].uri());
    let failing = format!("sip:127.0.0.1:{failing_port}");

    // Over TCP, as a feeder service serves many Kamailios (the other module
    // tests cover the sidecar's unix socket).
    let (feeder, feeder_port) = TestFeeder::tcp().await;
    let kamailio = kamailio(&format!("1 {good_a} 0 0\n"))
        .children(4)
        // tm keeps each transaction for its 5 s wait timer: ~70 MB at 2000/s.
        .shm_mb(512)
        .modparam(
            "dsfeed",
            "feeder",
            format!("http://127.0.0.1:{feeder_port}"),
        )
        .start()
        .await
        .unwrap();
    feeder.wait_streams(1, WAIT).await;

    let total = rate * secs;
    let stats = dir.path().join("uac-stats.csv");
    let mut uac = Sipp::spawn(
        dir.path(),
        "uac.xml",
        free_udp_port(),
        &[
            kamailio.sip_addr().to_string(),
            "-r".into(),
            rate.to_string(),
            "-m".into(),
            total.to_string(),
            "-l".into(),
            (rate * 4).to_string(),
            "-trace_stat".into(),
            "-stf".into(),
            stats.display().to_string(),
            "-fd".into(),
            "1".into(),
            "-timeout".into(),
            format!("{}s", secs * 3 + 60),
        ],
    );

    // Every 5 ms a new snapshot: the failing backend first or not, one of
    // the good ones drained now and then, and a changing attr so every
    // snapshot is a new version.
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published = 0u64;
    let mut shm_samples = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        if published.is_multiple_of(1000) {
            shm_samples.push(shm_used(&kamailio).await);
        }
        published += 1;
        let n = published as u32;
        let drain = |i: u32| if n % 7 == i { 4 } else { 0 };
        let mut dests: Vec<Dest<'_>> = vec![(&good_a, drain(1), 0), (&good_b, drain(2), 0)];
        if n.is_multiple_of(2) {
            dests.insert(0, (&failing, 0, 0));
        }
        let mut snapshot = response(&format!("v{n}"), &format!("n{n}"), &[(1, &dests)]);
        snapshot.sets[0].destinations[0].attrs = format!("churn={n}");
        feeder.publish(snapshot);
        assert!(
            kamailio.is_running(),
            "kamailio died after {published} snapshots"
        );
    }
    let churn = started.elapsed();

    let last = response(
        "final",
        "final",
        &[(1, &[(&good_a, 0, 0), (&good_b, 0, 0)])],
    );
    feeder.publish(last);
    let ack = feeder.wait_answer("final", Duration::from_secs(60)).await;
    assert!(ack.error_detail.is_none(), "{ack:?}");

    let deadline = Instant::now() + Duration::from_secs(secs * 3 + 120);
    let sipp_done = loop {
        if let Some(status) = uac.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sipp did not finish its requests"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let load = started.elapsed();
    assert!(kamailio.is_running(), "kamailio died");
    let log = kamailio.log();
    assert!(
        !log.contains("signal 11") && !log.contains("SIGSEGV"),
        "{log}"
    );

    let stat = sipp_stats(&stats);
    let (created, ok, failed) = (
        stat("TotalCallCreated"),
        stat("SuccessfulCall(C)"),
        stat("FailedCall(C)"),
    );
    shm_samples.push(shm_used(&kamailio).await);
    let status = status(&kamailio).await;
    let answers = feeder.received();
    let nacks: Vec<&str> = answers
        .iter()
        .filter_map(|r| r.request.error_detail.as_ref())
        .map(|e| e.message.as_str())
        .collect();
    let superseded = nacks.iter().filter(|m| m.contains("superseded")).count();
    eprintln!(
        "churn: {published} snapshots in {churn:?}; {} swaps, final {:?}; {superseded} superseded, \
         {} other NACKs; sipp ({sipp_done}): {created} requests created, {ok} ok, {failed} failed \
         in {load:?} ({:.0}/s); shm MB used every ~5 s: {shm_samples:?}",
        status.int("swaps"),
        status.text("applied_version"),
        nacks.len() - superseded,
        created as f64 / load.as_secs_f64(),
    );
    assert_eq!(status.text("applied_version"), "final");
    let others: Vec<&&str> = nacks.iter().filter(|m| !m.contains("superseded")).collect();
    assert!(
        others.is_empty(),
        "only superseded snapshots are NACKed: {others:?}"
    );
    assert!(status.int("swaps") >= 2);
    assert_eq!(created, total, "sipp did not create every request");
    // Failover hides the failing backend; allow a sliver of overload
    // timeouts on a shared machine.
    assert!(
        ok * 100 >= total * 99,
        "only {ok} of {total} requests succeeded"
    );
}
