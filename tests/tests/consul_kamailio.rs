//! The Consul source end to end: a fake Consul agent, the `dsfeed` binary in
//! file mode, a real Kamailio (5.6.3, or 6.0.1 in a Debian 13 root)
//! reloaded over binrpc, and sipp backends that show where SIP goes.

use std::time::Duration;

use dsfeed_tests::fake_consul::{FakeConsul, Instance, Status};
use dsfeed_tests::feeder::{self, Args, Feeder};
use dsfeed_tests::sipp::{self, Backend};
use dsfeed_tests::{Kamailio, eventually, sets, until_loaded};

/// Generous: CI runs these on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(30);

fn backend(id: &str, backend: &Backend) -> Instance {
    Instance::new("pbx", id, "127.0.0.1", backend.port)
}

/// The feeder of `args` writing `kamailio`'s list file and reloading it.
fn start_feeder(args: Args, kamailio: &Kamailio) -> Feeder {
    Feeder::start(args.reloading(kamailio), &kamailio.dir().join("dsfeed.log"))
}

// Several threads: sipp calls block, and the fake Consul must keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_health_drives_kamailios_sets_and_sip() {
    let kamailio = Kamailio::builder("").reload_delta(1).start().await.unwrap();
    let sip = kamailio.sip_addr().to_string();
    let (a, b) = (Backend::start(), Backend::start());
    let consul = FakeConsul::start().await;
    consul.register(backend("a", &a).meta("node", "pbx-a"));
    let args = consul
        .feeder_args(&["pbx=1"])
        .args(&[
            "--consul-attr",
            "duid=Meta.node",
            "--consul-empty-grace",
            "10m",
        ])
        // Short, so that the query held across the restart returns soon.
        .args(&["--consul-wait", "2s"]);
    let feeder = start_feeder(args, &kamailio);
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
    consul.restart_and_await_reread(SETTLE).await;
    feeder
        .wait_logged("keeping the last ones until the grace runs out")
        .await;
    until_loaded(&kamailio, &sets(&[(1, &[&b.uri()])]), SETTLE).await;
    assert_eq!(sipp::call(&sip, 1, 4, kamailio.dir()), vec![b.name(); 4]);
    assert!(kamailio.is_running());
}

#[tokio::test]
async fn once_prints_consuls_instances_with_consuls_environment() {
    let consul = FakeConsul::start().await;
    consul.require_token("s3cr3t");
    consul.register(Instance::new("pbx", "a", "10.0.0.1", 5060).weights(7, 1));
    let url = consul.url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(feeder::binary())
            .args([
                "--once",
                "--consul-service",
                "pbx=4:5080",
                "--consul-attr",
                "weight=Weights.Passing",
                "-o",
                "-",
            ])
            .env("CONSUL_HTTP_ADDR", url)
            .env("CONSUL_HTTP_TOKEN", "s3cr3t")
            .output()
            .expect("dsfeed runs")
    })
    .await
    .unwrap();
    let stdout = feeder::succeeded(&out);
    assert!(
        stdout.ends_with("\n4 sip:10.0.0.1:5080 0 0 weight=7\n"),
        "{stdout}"
    );
    assert!(
        consul
            .requests()
            .iter()
            .all(|r| r.token.as_deref() == Some("s3cr3t"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_is_registered_while_it_answers_and_deregistered_on_shutdown() {
    let kamailio = Kamailio::builder("").start().await.unwrap();
    let consul = FakeConsul::start().await;
    consul.register(Instance::new("pbx", "a", "10.0.0.1", 5060));
    let sip_port = kamailio.sip_addr().port();
    let register = format!("kamailio:{sip_port},id=kam1,ttl=3s");
    let args = consul
        .feeder_args(&["pbx=1"])
        .arg("--consul-register", register);
    let mut feeder = start_feeder(args, &kamailio);
    let status = |want: Status| {
        let consul = &consul;
        move || async move {
            consul
                .instance("kamailio", "kam1")
                .filter(|i| i.status == want)
        }
    };
    let passing = eventually("kam1 passing", SETTLE, status(Status::Passing)).await;
    assert_eq!(passing.port, sip_port);
    assert!(
        passing.output.contains("Kamailio answers core.version"),
        "{}",
        passing.output
    );

    // Kamailio stops: the check goes critical.
    kamailio.stop();
    let critical = eventually("kam1 critical", SETTLE, status(Status::Critical)).await;
    assert!(
        critical.output.contains("Kamailio's ctl"),
        "{}",
        critical.output
    );

    // dsfeed stops: the service is deregistered.
    let exit = feeder.terminate(SETTLE).expect("dsfeed exits on SIGTERM");
    assert!(exit.success(), "{exit:?}\n{}", feeder.log());
    assert!(consul.instance("kamailio", "kam1").is_none());
    feeder.assert_logged("deregistered from Consul");
}

#[tokio::test]
async fn a_feeder_restarted_while_consul_answers_empty_keeps_kamailios_set() {
    // What the previous feeder run left: set 1 from pbx, set 2 from peers.
    let kamailio = Kamailio::builder("1 sip:10.0.0.1:5060 0 0\n2 sip:10.0.0.8:5060 0 0\n")
        .reload_delta(1)
        .start()
        .await
        .unwrap();
    // The agent restarted too: pbx is not registered yet, peers is.
    let consul = FakeConsul::start().await;
    consul.register(Instance::new("peers", "p1", "10.0.0.9", 5060));
    let args = consul.feeder_args(&["pbx=1", "peers=2"]);
    let feeder = start_feeder(args.args(&["--consul-empty-grace", "10m"]), &kamailio);
    let held = sets(&[(1, &["sip:10.0.0.1:5060"]), (2, &["sip:10.0.0.9:5060"])]);
    until_loaded(&kamailio, &held, SETTLE).await;
    let on_disk = std::fs::read_to_string(kamailio.list_path()).unwrap();
    assert!(on_disk.contains("\n1 sip:10.0.0.1:5060 0 0\n"), "{on_disk}");
    feeder.assert_logged("held sets {1}");

    consul.register(Instance::new("pbx", "a2", "10.0.0.2", 5060));
    let back = sets(&[(1, &["sip:10.0.0.2:5060"]), (2, &["sip:10.0.0.9:5060"])]);
    until_loaded(&kamailio, &back, SETTLE).await;
}
