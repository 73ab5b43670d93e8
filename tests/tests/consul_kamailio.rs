//! The Consul source end to end: a fake Consul agent, the `dsfeed` binary in
//! file mode, a real Kamailio 5.6.3 reloaded over binrpc, and sipp backends
//! that show where SIP goes.

use std::time::Duration;

use dsfeed_tests::fake_consul::{FakeConsul, Instance, Status};
use dsfeed_tests::feeder::{self, Feeder};
use dsfeed_tests::sipp::{self, Backend};
use dsfeed_tests::{Kamailio, eventually, sets, until_loaded};

/// Generous: CI runs these on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(30);

fn backend(id: &str, backend: &Backend) -> Instance {
    Instance::new("pbx", id, "127.0.0.1", backend.port)
}

// Several threads: sipp calls block, and the fake Consul must keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_health_drives_kamailios_sets_and_sip() {
    let kamailio = Kamailio::builder("").reload_delta(1).start().await.unwrap();
    let sip = kamailio.sip_addr().to_string();
    let (a, b) = (Backend::start(), Backend::start());
    let consul = FakeConsul::start().await;
    consul.register(backend("a", &a).meta("node", "pbx-a"));
    let (addr, rpc) = (consul.addr(), kamailio.ctl_unix().to_string());
    let feeder = Feeder::start(
        &[
            "--consul-service",
            "pbx=1",
            "--consul-addr",
            &addr,
            "--consul-attr",
            "duid=Meta.node",
            "--consul-empty-grace",
            "10m",
            // Short, so that the query held across the restart returns soon.
            "--consul-wait",
            "2s",
            "-o",
            kamailio.list_path().to_str().unwrap(),
            "--rpc",
            &rpc,
        ],
        &kamailio.dir().join("dsfeed.log"),
    );
    until_loaded(&kamailio, &sets(&[(1, &[&a.uri()])]), SETTLE).await;
    let on_disk = std::fs::read_to_string(kamailio.list_path()).unwrap();
    assert!(
        on_disk.contains(&format!("1 {} 0 0 duid=pbx-a\n", a.uri())),
        "{on_disk}"
    );
    assert_eq!(sipp::call(&sip, 1, 4, kamailio.dir()), vec![a.name(); 4]);

    // B registers: round robin reaches both.
    consul.register(backend("b", &b));
    until_loaded(&kamailio, &sets(&[(1, &[&a.uri(), &b.uri()])]), SETTLE).await;
    let reached = sipp::call(&sip, 1, 6, kamailio.dir());
    assert!(
        reached.contains(&a.name()) && reached.contains(&b.name()),
        "{reached:?}"
    );

    // A fails its health check: no request reaches it any more.
    consul.set_status("pbx", "a", Status::Critical);
    until_loaded(&kamailio, &sets(&[(1, &[&b.uri()])]), SETTLE).await;
    assert_eq!(sipp::call(&sip, 1, 4, kamailio.dir()), vec![b.name(); 4]);

    // The agent restarts and answers empty: Kamailio keeps routing to B.
    consul.restart();
    let restarted = consul.requests().len();
    let reread = consul
        .wait_for_request(restarted, SETTLE, |r| r.index().is_none())
        .await;
    consul
        .wait_for_request(reread, SETTLE, |r| r.index().is_some())
        .await;
    eventually("the feeder to log the hold", SETTLE, || async {
        feeder
            .log()
            .contains("keeping the last ones until the grace runs out")
            .then_some(())
    })
    .await;
    until_loaded(&kamailio, &sets(&[(1, &[&b.uri()])]), SETTLE).await;
    assert_eq!(sipp::call(&sip, 1, 4, kamailio.dir()), vec![b.name(); 4]);
    assert!(kamailio.is_running());
}

#[tokio::test]
async fn once_prints_consuls_instances() {
    let consul = FakeConsul::start().await;
    consul.register(Instance::new("pbx", "a", "10.0.0.1", 5060).weights(7, 1));
    let addr = consul.addr();
    let out = tokio::task::spawn_blocking(move || {
        feeder::run(&[
            "--once",
            "--consul-service",
            "pbx=4:5080",
            "--consul-addr",
            &addr,
            "--consul-attr",
            "weight=Weights.Passing",
            "-o",
            "-",
        ])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.ends_with("\n4 sip:10.0.0.1:5080 0 0 weight=7\n"),
        "{stdout}"
    );
}

#[test]
fn bad_consul_flags_exit_2_naming_the_culprit() {
    for (args, culprit) in [
        (&["--consul-service", "pbx"][..], "'pbx'"),
        (
            &["--consul-service", "pbx=1,near=x"],
            "unknown option 'near'",
        ),
        (
            &[
                "--consul-service",
                "pbx=1",
                "--consul-addr",
                "unix:///c.sock",
            ],
            "unix socket",
        ),
        (
            &["--consul-service", "pbx=1", "--consul-attr", "w=Weights"],
            "unknown field 'Weights'",
        ),
        (
            &["--consul-service", "pbx=1", "--consul-wait", "1h"],
            "between 1s and 10m",
        ),
    ] {
        let out = feeder::run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(culprit), "{args:?}: {stderr}");
    }
}
