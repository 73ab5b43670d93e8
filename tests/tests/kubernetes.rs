//! End to end: EndpointSlice changes in a (fake) Kubernetes API reach a real
//! Kamailio (5.6.3, or 6.0.1 in a Debian 13 root) through the `dsfeed`
//! binary in file mode, and SIP follows:
//! sipp backends stand behind the endpoints, a sipp caller goes through
//! Kamailio to set 1.

use std::collections::BTreeSet;
use std::time::Duration;

use dsfeed_binrpc::Client;
use dsfeed_binrpc::dispatcher::{self, ListedSets};
use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::sipp::{self, Backend};
use dsfeed_tests::{Kamailio, sets, until_loaded, wait_until};
use fake_kube::{FakeKube, Gone, Scenario, endpoint, endpoint_slice};
use serde_json::{Value, json};

/// Generous: several engineers build on the same two cores.
const PATIENCE: Duration = Duration::from_secs(60);

/// A slice of Service `asterisk` in `voice` whose one endpoint is the
/// backend on `port` (named port `sip`), in the given state.
fn slice(name: &str, backend: &Backend, ready: bool, terminating: bool) -> Value {
    let endpoints = vec![endpoint("127.0.0.1", ready, true, terminating)];
    endpoint_slice("voice", "asterisk", name, "IPv4", backend.port, endpoints)
}

/// Set 1 as Kamailio has it loaded: `(uri, flags)` pairs.
fn set_one(sets: &ListedSets) -> BTreeSet<(String, String)> {
    sets.get(&1)
        .into_iter()
        .flatten()
        .map(|d| (d.uri.clone(), d.flags.clone()))
        .collect()
}

/// Polls Kamailio's `dispatcher.list` until set 1 is `want`.
async fn wait_for_set(client: &Client, feeder: &Feeder, want: &[(&Backend, &str)]) {
    let want: BTreeSet<(String, String)> = want
        .iter()
        .map(|(b, flags)| (b.uri(), (*flags).to_owned()))
        .collect();
    let what = format!("Kamailio's set 1 to become {want:?}");
    wait_until(&what, PATIENCE, || async {
        let seen = dispatcher::list(client).await.map(|sets| set_one(&sets));
        match seen {
            Ok(seen) if seen == want => Ok(()),
            seen => Err(format!("{seen:?}; feeder log:\n{}", feeder.log())),
        }
    })
    .await;
}

/// The backends that answered `calls` OPTIONS sent to set 1.
fn reached(kamailio: &Kamailio, calls: u32) -> BTreeSet<u16> {
    sipp::call(&kamailio.sip_addr().to_string(), 1, calls, kamailio.dir())
        .iter()
        .filter_map(|b| b.rsplit_once(':')?.1.parse().ok())
        .collect()
}

#[tokio::test]
async fn slice_changes_reach_kamailio_and_sip_follows() {
    let a = Backend::start();
    let b = Backend::start();
    let kube = FakeKube::start().await;
    kube.apply(slice("asterisk-a", &a, true, false));

    let kamailio = Kamailio::builder("").reload_delta(1).start().await.unwrap();
    let client = kamailio.client();
    let kubeconfig = kamailio.dir().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    let ctl = kamailio.ctl_udp().to_string();
    let ctl_port = ctl.rsplit_once(':').unwrap().1;
    // CyCoreSystems/dispatchers' flags, binrpc over UDP.
    let feeder = Feeder::start(
        [
            "-set",
            "voice:asterisk=1:sip",
            "-kubecfg",
            kubeconfig.to_str().unwrap(),
            "-o",
            kamailio.list_path().to_str().unwrap(),
            "-h",
            "127.0.0.1",
            "-p",
            ctl_port,
        ],
        &kamailio.dir().join("dsfeed.log"),
    );

    wait_for_set(&client, &feeder, &[(&a, "AX")]).await;
    assert_eq!(reached(&kamailio, 4), BTreeSet::from([a.port]));

    // A second slice: its endpoint joins the set, calls spread over both.
    kube.apply(slice("asterisk-b", &b, true, false));
    wait_for_set(&client, &feeder, &[(&a, "AX"), (&b, "AX")]).await;
    assert_eq!(reached(&kamailio, 6), BTreeSet::from([a.port, b.port]));

    // The API server loses its history: the relist changes nothing.
    let version = std::fs::read_to_string(kamailio.list_path()).unwrap();
    let lists = kube.requests().iter().filter(|r| !r.is_watch()).count();
    kube.play(Scenario::ExpireHistory(Gone::Event)).await;
    kube.wait_for_requests(lists + 1, PATIENCE, |r| !r.is_watch())
        .await;
    kube.play(Scenario::DropConnections).await;

    // A's pod terminates: it drains (flag 4), new calls avoid it.
    kube.apply(slice("asterisk-a", &a, false, true));
    wait_for_set(&client, &feeder, &[(&a, "DX"), (&b, "AX")]).await;
    assert_ne!(
        std::fs::read_to_string(kamailio.list_path()).unwrap(),
        version
    );
    assert_eq!(reached(&kamailio, 4), BTreeSet::from([b.port]));

    // A's pod is gone.
    assert!(kube.delete(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "voice",
        "asterisk-a"
    ));
    wait_for_set(&client, &feeder, &[(&b, "AX")]).await;
    assert!(kamailio.is_running());
    let log = feeder.log();
    assert_eq!(
        log.matches("kubernetes sets changed").count(),
        4,
        "one change per real change, none for the relist:\n{log}"
    );
}

#[tokio::test]
async fn a_long_attrs_annotation_drops_the_attrs_and_other_sets_keep_changing() {
    let kube = FakeKube::start().await;
    let slice = |service: &str, name: &str, ip: &str| {
        let endpoints = vec![endpoint(ip, true, true, false)];
        endpoint_slice("voice", service, name, "IPv4", 5060, endpoints)
    };
    // 1,100 bytes of attrs: no line of set 1 could fit Kamailio's buffer.
    let attrs = format!("duid={}", "x".repeat(1095));
    kube.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "voice", "name": "asterisk",
                     "annotations": {"dsfeed.io/attrs": attrs}},
        "spec": {"ports": [{"name": "sip", "port": 5060}]}
    }));
    kube.apply(slice("asterisk", "a", "10.0.0.1"));
    kube.apply(slice("media", "m", "10.0.0.5"));

    let kamailio = Kamailio::builder("").reload_delta(1).start().await.unwrap();
    let kubeconfig = kamailio.dir().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    let args = Args::new(&["--set", "voice:asterisk=1", "--set", "voice:media=2"])
        .arg("--kubecfg", kubeconfig.display());
    let feeder = Feeder::start(
        args.reloading(&kamailio),
        &kamailio.dir().join("dsfeed.log"),
    );
    let first = sets(&[(1, &["sip:10.0.0.1:5060"]), (2, &["sip:10.0.0.5:5060"])]);
    until_loaded(&kamailio, &first, PATIENCE).await;
    let on_disk = std::fs::read_to_string(kamailio.list_path()).unwrap();
    assert!(on_disk.contains("\n1 sip:10.0.0.1:5060 0 0\n"), "{on_disk}");
    let log = feeder.log();
    assert!(
        log.contains("dsfeed.io/attrs") && log.contains("1024-byte"),
        "{log}"
    );

    kube.apply(slice("media", "m", "10.0.0.6"));
    let second = sets(&[(1, &["sip:10.0.0.1:5060"]), (2, &["sip:10.0.0.6:5060"])]);
    until_loaded(&kamailio, &second, PATIENCE).await;
}
