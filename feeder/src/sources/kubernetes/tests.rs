//! Scenarios against a fake API server (crate `fake-kube`) on 127.0.0.1,
//! reached through a kubeconfig file by the same client code users run.
//! Every view the source publishes is captured, so a flap (an empty or
//! stale view between two real ones) fails the test that provokes it.

use std::time::Duration;

use fake_kube::{FakeKube, Gone, Recorded, Scenario, endpoint, endpoint_slice};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;
use crate::sources::View;

/// Generous: the machine running the tests may be loaded.
const PATIENCE: Duration = Duration::from_secs(30);

struct Harness {
    kube: FakeKube,
    views: mpsc::Receiver<View>,
    _dir: tempfile::TempDir,
    _source: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Harness {
    /// Starts the source for `sets` (as given to `--set`) against a fresh
    /// fake API server, after `setup` has written the cluster's first state.
    async fn start(sets: &[&str], min_endpoints: usize, setup: impl FnOnce(&FakeKube)) -> Harness {
        let kube = FakeKube::start().await;
        setup(&kube);
        Harness::attach(kube, sets, min_endpoints)
    }

    fn attach(kube: FakeKube, sets: &[&str], min_endpoints: usize) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        kube.write_kubeconfig(&kubeconfig);
        let sets: Vec<ServiceSet> = sets.iter().map(|s| s.parse().unwrap()).collect();
        let source = KubernetesSource::new(
            &sets,
            "voice",
            Connection::Kubeconfig(kubeconfig),
            min_endpoints,
        )
        .with_backoff(
            Backoff::new(Duration::from_millis(50), Duration::from_millis(500), 0.5).unwrap(),
        );
        let (tx, views) = mpsc::channel(16);
        let metrics = crate::metrics::Metrics::new().source("kubernetes");
        let source = tokio::spawn(Box::new(source).run(Publisher::new(0, metrics, tx)));
        Harness {
            kube,
            views,
            _dir: dir,
            _source: source,
        }
    }

    /// Asserts that the next view the source publishes is `want`.
    async fn expect(&mut self, want: &[&str]) {
        assert_eq!(self.next().await, want);
    }

    /// Replaces slice `a` of `asterisk` with `endpoints`, and asserts that
    /// the next view is `want`.
    async fn change(&mut self, endpoints: &[Value], want: &[&str]) {
        self.kube.apply(asterisk("a", endpoints));
        self.expect(want).await;
    }

    /// The next view the source publishes, as `dispatcher.list` lines.
    async fn next(&mut self) -> Vec<String> {
        let view = tokio::time::timeout(PATIENCE, self.views.recv())
            .await
            .expect("the source published nothing in time")
            .expect("the source stopped");
        lines(&view.sets)
    }
}

/// Asserts that nothing is published while `settle` runs.
async fn quiet(views: &mut mpsc::Receiver<View>, settle: impl Future<Output = ()>) {
    tokio::select! {
        view = views.recv() => panic!("unexpected view: {:?}", view.map(|v| lines(&v.sets))),
        () = settle => {}
    }
    if let Ok(view) = views.try_recv() {
        panic!("unexpected view: {:?}", lines(&view.sets));
    }
}

/// Waits until the source has made `count` more requests matching
/// `matches` than it had made when `before` was taken.
async fn wait_for(
    kube: &FakeKube,
    before: &[Recorded],
    count: usize,
    matches: impl Fn(&Recorded) -> bool,
) {
    let already = before.iter().filter(|r| matches(r)).count();
    kube.wait_for_requests(already + count, PATIENCE, matches)
        .await;
}

fn lines(sets: &SetMap) -> Vec<String> {
    let mut out = Vec::new();
    for (id, dests) in sets {
        if dests.is_empty() {
            out.push(format!("{id} (empty)"));
        }
        for d in dests {
            let line = format!(
                "{id} {} {} {} {}",
                d.uri(),
                d.flags(),
                d.priority(),
                d.attrs()
            );
            out.push(line.trim_end().to_owned());
        }
    }
    out
}

fn is_slice_watch(r: &Recorded) -> bool {
    r.is_watch() && r.path.ends_with("/endpointslices")
}

fn is_slice_list(r: &Recorded) -> bool {
    !r.is_watch() && r.path.ends_with("/endpointslices")
}

/// An endpoint that is ready.
fn ready(ip: &str) -> Value {
    endpoint(ip, true, true, false)
}

/// An endpoint of a terminating pod that still serves (draining).
fn draining(ip: &str) -> Value {
    endpoint(ip, false, true, true)
}

/// An EndpointSlice of `service` in `namespace`, with port `sip` on 5060.
fn slice(namespace: &str, service: &str, name: &str, endpoints: &[Value]) -> Value {
    endpoint_slice(namespace, service, name, "IPv4", 5060, endpoints.to_vec())
}

/// Slice `name` of Service `asterisk` in `voice`, the Service of set 1 in
/// most scenarios.
fn asterisk(name: &str, endpoints: &[Value]) -> Value {
    slice("voice", "asterisk", name, endpoints)
}

fn service(namespace: &str, name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"ports": [{"name": "sip", "port": 5060, "protocol": "UDP"}]},
    })
}

fn delete_slice(kube: &FakeKube, namespace: &str, name: &str) {
    assert!(kube.delete("discovery.k8s.io/v1", "EndpointSlice", namespace, name));
}

#[tokio::test]
async fn all_slices_of_a_service_merge_and_a_deleted_slice_takes_only_its_endpoints() {
    let mut h = Harness::start(&["asterisk=1"], 0, |kube| {
        kube.apply(asterisk(
            "asterisk-a",
            &[ready("10.0.0.1"), ready("10.0.0.2")],
        ));
        kube.apply(asterisk("asterisk-b", &[ready("10.0.0.3")]));
        // During a rebalance an endpoint may sit in two slices at once.
        kube.apply(asterisk(
            "asterisk-c",
            &[ready("10.0.0.4"), ready("10.0.0.3")],
        ));
        kube.apply(slice("voice", "other", "other-a", &[ready("10.9.9.9")]));
    })
    .await;
    h.expect(&[
        "1 sip:10.0.0.1:5060 0 0",
        "1 sip:10.0.0.2:5060 0 0",
        "1 sip:10.0.0.3:5060 0 0",
        "1 sip:10.0.0.4:5060 0 0",
    ])
    .await;
    delete_slice(&h.kube, "voice", "asterisk-a");
    h.expect(&["1 sip:10.0.0.3:5060 0 0", "1 sip:10.0.0.4:5060 0 0"])
        .await;
    delete_slice(&h.kube, "voice", "asterisk-c");
    h.expect(&["1 sip:10.0.0.3:5060 0 0"]).await;
}

#[tokio::test]
async fn a_pod_replaced_by_another_is_propagated() {
    let mut h = started(&["10.0.0.1", "10.0.0.2"], 0).await;
    // Same count, new address: the defect of the tool we replace.
    h.change(
        &[ready("10.0.0.1"), ready("10.0.0.7")],
        &["1 sip:10.0.0.1:5060 0 0", "1 sip:10.0.0.7:5060 0 0"],
    )
    .await;
}

#[tokio::test]
async fn a_destination_walks_active_then_disabled_then_removed() {
    let mut h = started(&["10.0.0.1", "10.0.0.2"], 0).await;
    h.change(
        &[ready("10.0.0.1"), draining("10.0.0.2")],
        &["1 sip:10.0.0.1:5060 0 0", "1 sip:10.0.0.2:5060 4 0"],
    )
    .await;
    // Still terminating but no longer serving: it goes.
    h.change(
        &[ready("10.0.0.1"), endpoint("10.0.0.2", false, false, true)],
        &["1 sip:10.0.0.1:5060 0 0"],
    )
    .await;
    // A new pod that is not ready yet is not offered.
    h.kube.apply(asterisk(
        "a",
        &[ready("10.0.0.1"), endpoint("10.0.0.3", false, false, false)],
    ));
    h.change(
        &[ready("10.0.0.1"), ready("10.0.0.3")],
        &["1 sip:10.0.0.1:5060 0 0", "1 sip:10.0.0.3:5060 0 0"],
    )
    .await;
}

#[tokio::test]
async fn named_ports_ipv6_and_two_namespaces() {
    let mut h = Harness::start(
        // "voice" is the harness's default namespace, as from POD_NAMESPACE.
        &[
            "asterisk=1:sip",
            "edge:kamailio=2:sip",
            "edge:kamailio=3:5070",
        ],
        0,
        |kube| {
            for (namespace, service, name, family, port, ip) in [
                ("voice", "asterisk", "a4", "IPv4", 5080, "10.0.0.1"),
                ("voice", "asterisk", "a6", "IPv6", 5090, "fd00::1"),
                ("edge", "kamailio", "k", "IPv6", 5060, "fd00:0:0::a"),
                // Same name in another namespace: not ours.
                ("edge", "asterisk", "x", "IPv4", 5060, "10.9.9.9"),
            ] {
                kube.apply(endpoint_slice(
                    namespace,
                    service,
                    name,
                    family,
                    port,
                    vec![ready(ip)],
                ));
            }
        },
    )
    .await;
    assert_eq!(
        h.next().await,
        [
            "1 sip:10.0.0.1:5080 0 0",
            "1 sip:[fd00::1]:5090 0 0",
            "2 sip:[fd00::a]:5060 0 0",
            "3 sip:[fd00::a]:5070 0 0"
        ]
    );
    // The port's number changes in one slice: resolved again.
    h.kube.apply(endpoint_slice(
        "voice",
        "asterisk",
        "a4",
        "IPv4",
        5081,
        vec![ready("10.0.0.1")],
    ));
    assert_eq!(h.next().await[0], "1 sip:10.0.0.1:5081 0 0");
    h.kube.apply(endpoint_slice(
        "voice",
        "asterisk",
        "f",
        "FQDN",
        5060,
        vec![ready("pbx.example.com")],
    ));
    assert!(
        h.next()
            .await
            .contains(&"1 sip:pbx.example.com:5060 0 0".to_owned())
    );
}

#[tokio::test]
async fn only_the_named_services_in_their_namespaces_are_read() {
    let mut h = Harness::start(&["asterisk=1:sip", "edge:kamailio=2"], 0, |_| {}).await;
    h.expect(&["1 (empty)", "2 (empty)"]).await;
    let requests = h.kube.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        let slices = r.path.ends_with("/endpointslices");
        let (ns, name) = if r.path.contains("/namespaces/voice/") {
            ("voice", "asterisk")
        } else if r.path.contains("/namespaces/edge/") {
            ("edge", "kamailio")
        } else {
            panic!("a request outside the two namespaces: {r:?}");
        };
        if slices {
            assert_eq!(
                r.path,
                format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices")
            );
            assert_eq!(
                r.query.get("labelSelector").map(String::as_str),
                Some(format!("kubernetes.io/service-name={name}").as_str()),
                "{r:?}"
            );
        } else {
            assert_eq!(r.path, format!("/api/v1/namespaces/{ns}/services"), "{r:?}");
            assert_eq!(
                r.query.get("fieldSelector").map(String::as_str),
                Some(format!("metadata.name={name}").as_str()),
                "{r:?}"
            );
        }
    }
}

#[tokio::test]
async fn service_annotations_set_flags_priority_attrs_and_weights() {
    let mut h = Harness::start(&["asterisk=1", "asterisk=2,priority=7"], 0, |kube| {
        kube.apply(service(
            "voice",
            "asterisk",
            json!({"dsfeed.io/priority": "5", "dsfeed.io/attrs": "duid=pbx"}),
        ));
        kube.apply(asterisk("a", &[ready("10.0.0.1"), draining("10.0.0.2")]));
    })
    .await;
    h.expect(&[
        "1 sip:10.0.0.1:5060 0 5 duid=pbx",
        "1 sip:10.0.0.2:5060 4 5 duid=pbx",
        "2 sip:10.0.0.1:5060 0 7 duid=pbx",
        "2 sip:10.0.0.2:5060 4 7 duid=pbx",
    ])
    .await;
    h.kube.apply(service(
        "voice",
        "asterisk",
        json!({"dsfeed.io/flags": "8", "dsfeed.io/priority": "5", "dsfeed.io/weights": "pod-10-0-0-1=90"}),
    ));
    h.expect(&[
        "1 sip:10.0.0.1:5060 8 5 weight=90",
        "1 sip:10.0.0.2:5060 12 5",
        "2 sip:10.0.0.1:5060 8 7 weight=90",
        "2 sip:10.0.0.2:5060 12 7",
    ])
    .await;
    // The Service goes: its annotations go with it, the endpoints stay.
    assert!(h.kube.delete("v1", "Service", "voice", "asterisk"));
    h.expect(&[
        "1 sip:10.0.0.1:5060 0 0",
        "1 sip:10.0.0.2:5060 4 0",
        "2 sip:10.0.0.1:5060 0 7",
        "2 sip:10.0.0.2:5060 4 7",
    ])
    .await;
}

/// Starts set 1 on `asterisk` with the ready endpoints `ips`, and takes
/// the first view, which holds them.
async fn started(ips: &[&str], min_endpoints: usize) -> Harness {
    let endpoints: Vec<Value> = ips.iter().map(|ip| ready(ip)).collect();
    let mut h = Harness::start(&["asterisk=1"], min_endpoints, |kube| {
        kube.apply(asterisk("a", &endpoints));
    })
    .await;
    let first: Vec<String> = ips
        .iter()
        .map(|ip| format!("1 sip:{ip}:5060 0 0"))
        .collect();
    assert_eq!(h.next().await, first);
    h
}

/// Starts with one ready endpoint, `10.0.0.1`, in set 1.
async fn running() -> Harness {
    let h = started(&["10.0.0.1"], 0).await;
    // Listed is not yet watching: faults must meet open watches.
    h.kube.wait_for_watches(2, PATIENCE).await;
    h
}

/// A real change after a fault: it must be the very next view.
async fn changes_still_flow(h: &mut Harness) {
    h.change(
        &[ready("10.0.0.1"), ready("10.0.0.2")],
        &["1 sip:10.0.0.1:5060 0 0", "1 sip:10.0.0.2:5060 0 0"],
    )
    .await;
}

#[tokio::test]
async fn dropped_connections_change_nothing() {
    let mut h = running().await;
    for _ in 0..3 {
        let before = h.kube.requests();
        h.kube.play(Scenario::DropConnections).await;
        quiet(&mut h.views, wait_for(&h.kube, &before, 1, is_slice_watch)).await;
    }
    // Resumed from the last resourceVersion: no list was needed.
    assert_eq!(
        h.kube
            .requests()
            .iter()
            .filter(|r| is_slice_list(r))
            .count(),
        1
    );
    changes_still_flow(&mut h).await;
}

#[tokio::test]
async fn a_write_missed_while_disconnected_is_replayed() {
    let mut h = running().await;
    let before = h.kube.requests();
    h.kube.play(Scenario::Down).await;
    h.kube.apply(asterisk("a", &[ready("10.0.0.9")]));
    h.kube.play(Scenario::Up).await;
    h.expect(&["1 sip:10.0.0.9:5060 0 0"]).await;
    wait_for(&h.kube, &before, 1, is_slice_watch).await;
}

/// History expires, told as `gone`: the source relists and watches again
/// (`watches` times) without publishing anything, since the relist finds
/// the same data, and a change after that still flows.
async fn relists_without_a_flap(gone: Gone, watches: usize) {
    let mut h = running().await;
    let before = h.kube.requests();
    h.kube.play(Scenario::ExpireHistory(gone)).await;
    let relisted = async {
        wait_for(&h.kube, &before, 1, is_slice_list).await;
        wait_for(&h.kube, &before, watches, is_slice_watch).await;
    };
    quiet(&mut h.views, relisted).await;
    changes_still_flow(&mut h).await;
}

#[tokio::test]
async fn gone_as_a_watch_event_relists_without_a_flap() {
    relists_without_a_flap(Gone::Event, 1).await;
}

#[tokio::test]
async fn gone_as_an_http_410_relists_without_a_flap() {
    // The re-watch meets the 410, then a fresh list and watch follow.
    relists_without_a_flap(Gone::Http, 2).await;
}

#[tokio::test]
async fn a_relist_after_gone_brings_the_changes_it_missed() {
    let mut h = running().await;
    h.kube.play(Scenario::Down).await;
    h.kube
        .apply(asterisk("a", &[draining("10.0.0.1"), ready("10.0.0.5")]));
    // The apiserver comes back with its history compacted.
    h.kube.play(Scenario::ExpireHistory(Gone::Http)).await;
    h.kube.play(Scenario::Up).await;
    h.expect(&["1 sip:10.0.0.1:5060 4 0", "1 sip:10.0.0.5:5060 0 0"])
        .await;
}

#[tokio::test]
async fn an_api_server_down_for_a_while_changes_nothing() {
    let mut h = running().await;
    let before = h.kube.requests();
    h.kube.play(Scenario::Down).await;
    // Several failed reconnects (the backoff tops out at 500 ms here).
    quiet(&mut h.views, tokio::time::sleep(Duration::from_secs(3))).await;
    h.kube.play(Scenario::Up).await;
    quiet(&mut h.views, wait_for(&h.kube, &before, 1, is_slice_watch)).await;
    changes_still_flow(&mut h).await;
}

#[tokio::test]
async fn a_watch_resumes_from_its_last_bookmark() {
    let mut h = running().await;
    // A write the watch does not select moves the resourceVersion on; only
    // a bookmark tells the client.
    let other = h
        .kube
        .apply(slice("voice", "other", "o", &[ready("10.9.9.9")]));
    let bookmark = other["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = h.kube.requests();
    h.kube.play(Scenario::Bookmark).await;
    // The bookmark is on the stream before its end, so it is read first.
    h.kube.play(Scenario::EndWatches).await;
    wait_for(&h.kube, &before, 1, is_slice_watch).await;
    let requests = h.kube.requests();
    let rewatch = requests.iter().rev().find(|r| is_slice_watch(r)).unwrap();
    assert_eq!(
        rewatch.query.get("resourceVersion"),
        Some(&bookmark),
        "{rewatch:?}"
    );
    assert_eq!(
        rewatch.query.get("allowWatchBookmarks").map(String::as_str),
        Some("true")
    );
    assert_eq!(requests.iter().filter(|r| is_slice_list(r)).count(), 1);
    changes_still_flow(&mut h).await;
}

#[tokio::test]
async fn nothing_is_published_before_every_watch_has_listed() {
    let kube = FakeKube::start().await;
    kube.apply(asterisk("a", &[ready("10.0.0.1")]));
    kube.play(Scenario::Down).await;
    let mut h = Harness::attach(kube, &["asterisk=1"], 0);
    quiet(&mut h.views, tokio::time::sleep(Duration::from_secs(2))).await;
    h.kube.play(Scenario::Up).await;
    h.expect(&["1 sip:10.0.0.1:5060 0 0"]).await;
}

#[tokio::test]
async fn a_service_without_endpoints_is_an_empty_set() {
    let mut h = running().await;
    delete_slice(&h.kube, "voice", "a");
    h.expect(&["1 (empty)"]).await;
}

#[tokio::test]
async fn min_endpoints_holds_the_last_view_that_had_enough() {
    let mut h = started(&["10.0.0.1", "10.0.0.2"], 2).await;
    h.kube.apply(asterisk("a", &[ready("10.0.0.1")]));
    h.kube.wait_for_watches(2, PATIENCE).await;
    let before = h.kube.requests();
    delete_slice(&h.kube, "voice", "a");
    // Held: the source keeps following but publishes nothing.
    quiet(&mut h.views, async {
        h.kube.play(Scenario::DropConnections).await;
        wait_for(&h.kube, &before, 1, is_slice_watch).await;
    })
    .await;
    h.kube
        .apply(asterisk("b", &[ready("10.0.0.3"), ready("10.0.0.4")]));
    h.expect(&["1 sip:10.0.0.3:5060 0 0", "1 sip:10.0.0.4:5060 0 0"])
        .await;
}

#[tokio::test]
async fn without_rights_on_services_the_flags_alone_apply() {
    let mut h = Harness::start(&["asterisk=1,priority=3"], 0, |kube| {
        kube.forbid("services", true);
        kube.apply(service(
            "voice",
            "asterisk",
            json!({"dsfeed.io/attrs": "duid=pbx"}),
        ));
        kube.apply(asterisk("a", &[ready("10.0.0.1")]));
    })
    .await;
    h.expect(&["1 sip:10.0.0.1:5060 0 3"]).await;
    // The role is fixed: the annotations apply without a restart.
    h.kube.forbid("services", false);
    h.expect(&["1 sip:10.0.0.1:5060 0 3 duid=pbx"]).await;
}

#[tokio::test]
async fn without_rights_on_endpointslices_nothing_is_published() {
    let kube = FakeKube::start().await;
    kube.forbid("endpointslices", true);
    kube.apply(asterisk("a", &[ready("10.0.0.1")]));
    let mut h = Harness::attach(kube, &["asterisk=1"], 0);
    let refused = wait_for(&h.kube, &[], 3, is_slice_list);
    quiet(&mut h.views, refused).await;
    h.kube.forbid("endpointslices", false);
    h.expect(&["1 sip:10.0.0.1:5060 0 0"]).await;
}
