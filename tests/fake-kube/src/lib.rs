//! A fake Kubernetes API server for tests, on 127.0.0.1, speaking the real
//! HTTP protocol so the client under test runs its production code path
//! (kubeconfig, list, watch, reconnects) unchanged.
//!
//! It is stateful, like an apiserver in front of etcd: every write bumps one
//! global `resourceVersion`; lists return the current objects with that
//! version; watches replay the history after the version they name, then
//! stream live `ADDED` / `MODIFIED` / `DELETED` events (one JSON object per
//! line), with `BOOKMARK`s for clients that set `allowWatchBookmarks`.
//! Label selectors (`k=v`, `k!=v`, `k in (a,b)`, `k`) and the field
//! selectors `metadata.name` / `metadata.namespace` are honoured, and an
//! object that stops or starts matching a watch's selector is sent as
//! `DELETED` / `ADDED`, as the real apiserver does.
//!
//! Tests drive it in two ways: writes ([`FakeKube::apply`],
//! [`FakeKube::delete`]) and the faults of a [`Scenario`] ([`FakeKube::play`]):
//! dropped connections, expired history answered with 410 Gone (as an `ERROR`
//! watch event or as an HTTP 410), bookmarks, and the server going down and
//! coming back on the same port. Every request is recorded, so a test can
//! check what a client asked for ([`FakeKube::requests`]).
//!
//! Simplifications, each allowed by the API: a list returns every item in one
//! page (no `continue`), `timeoutSeconds` is honoured but `resourceVersion` on
//! a list is ignored (the list is always the most recent state), and the
//! plural of a kind is its lowercase name plus `s`.

mod http;
mod selector;
mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use http::{accept, bind, expired_status, send};
use store::{Change, Key, Shared, State, collection_of, key_of};

/// The bearer token the written kubeconfig carries; other requests get 401.
pub const TOKEN: &str = "fake-kube-token";

/// How a client is told that the resourceVersion it resumes from has been
/// compacted away. Real apiservers do both, depending on the version and on
/// whether the watch cache or etcd answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// `200 OK`, then one `ERROR` event carrying a `Status` with code 410.
    Event,
    /// `410 Gone` with a `Status` body, before any event.
    Http,
}

/// One thing the API server does to its clients, besides ordinary writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Cut every open connection mid-stream (no terminating chunk), as a
    /// load balancer or a crashed apiserver does. State and history are kept.
    DropConnections,
    /// End every open watch cleanly, as on `timeoutSeconds`.
    EndWatches,
    /// Send a `BOOKMARK` at the current resourceVersion on every watch that
    /// allowed them.
    Bookmark,
    /// Compact history: writes the clients did not see are forgotten, so a
    /// watch resuming from an older resourceVersion is refused as `Gone`.
    /// Open watches are ended: with [`Gone::Event`] by an `ERROR` 410 event,
    /// with [`Gone::Http`] by closing them, so the re-watch meets the 410.
    ExpireHistory(Gone),
    /// Stop listening and cut every connection. State is kept, and writes
    /// made while down are replayed to watches after [`Scenario::Up`].
    Down,
    /// Listen again on the same port.
    Up,
}

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
}

impl Recorded {
    /// Whether this is a watch (`?watch=true` or `1`).
    pub fn is_watch(&self) -> bool {
        matches!(
            self.query.get("watch").map(String::as_str),
            Some("true" | "1")
        )
    }
}

/// A running fake API server. Dropping it stops the server.
pub struct FakeKube {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeKube {
    /// Starts a server on a free port of 127.0.0.1.
    pub async fn start() -> FakeKube {
        let listener = bind("127.0.0.1:0".parse().expect("an address")).await;
        let addr = listener.local_addr().expect("a bound address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            requested: Notify::new(),
            listener: Mutex::new(None),
            connections: Mutex::new(JoinSet::new()),
        });
        let kube = FakeKube { addr, shared };
        kube.serve(listener);
        kube
    }

    /// The server's URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig that reaches this server with [`TOKEN`].
    pub fn write_kubeconfig(&self, path: &Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             users:\n- name: fake\n  user:\n    token: {TOKEN}\n",
            url = self.url()
        );
        std::fs::write(path, text).expect("the kubeconfig is written");
    }

    /// Creates or replaces an object (it must carry `apiVersion`, `kind`,
    /// `metadata.name` and `metadata.namespace`), giving it a new
    /// resourceVersion, and returns it as stored.
    pub fn apply(&self, mut object: Value) -> Value {
        let key = key_of(&object);
        let mut state = self.shared.lock();
        state.rv += 1;
        let rv = state.rv;
        let before = state.objects.get(&key).cloned();
        let uid = match before.as_ref().and_then(|b| b["metadata"]["uid"].as_str()) {
            Some(uid) => uid.to_owned(),
            None => {
                state.uid += 1;
                format!("00000000-0000-4000-8000-{:012}", state.uid)
            }
        };
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        meta["uid"] = json!(uid);
        meta.as_object_mut()
            .expect("metadata is an object")
            .entry("creationTimestamp")
            .or_insert(json!("2026-01-01T00:00:00Z"));
        state.objects.insert(key.clone(), object.clone());
        state.record(Change {
            rv,
            key,
            before,
            after: Some(object.clone()),
        });
        object
    }

    /// Deletes an object by its API version, kind, namespace and name;
    /// returns whether it existed.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let key = Key {
            collection: collection_of(api_version, kind),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let mut state = self.shared.lock();
        let Some(mut before) = state.objects.remove(&key) else {
            return false;
        };
        state.rv += 1;
        let rv = state.rv;
        // The deleted object is sent with the deletion's resourceVersion.
        before["metadata"]["resourceVersion"] = json!(rv.to_string());
        state.record(Change {
            rv,
            key,
            before: Some(before),
            after: None,
        });
        true
    }

    /// Makes the server do what `scenario` says.
    pub async fn play(&self, scenario: Scenario) {
        match scenario {
            Scenario::DropConnections => self.cut_connections(),
            Scenario::EndWatches => self.shared.lock().watches.clear(),
            Scenario::Bookmark => {
                let mut state = self.shared.lock();
                let rv = state.rv;
                state.watches.retain(|w| {
                    !w.bookmarks
                        || send(
                            &w.tx,
                            &json!({"type": "BOOKMARK", "object": {
                                "kind": w.kind, "apiVersion": w.api_version,
                                "metadata": {"resourceVersion": rv.to_string()}}}),
                        )
                });
            }
            Scenario::ExpireHistory(gone) => {
                let mut state = self.shared.lock();
                // Writes elsewhere in the cluster move the revision on, and
                // compaction forgets everything up to it.
                state.rv += 1;
                state.compacted = state.rv;
                state.history.clear();
                state.gone = Some(gone);
                let status = expired_status(0, state.compacted);
                for watch in state.watches.drain(..) {
                    if gone == Gone::Event {
                        send(&watch.tx, &json!({"type": "ERROR", "object": status}));
                    }
                }
            }
            Scenario::Down => self.go_down(),
            Scenario::Up => {
                let listener = bind(self.addr).await;
                self.serve(listener);
            }
        }
    }

    /// Refuses every request for `plural` (such as `services`) with 403
    /// Forbidden, as RBAC does when a role lacks the rule, or accepts them
    /// again.
    pub fn forbid(&self, plural: &str, forbidden: bool) {
        let mut state = self.shared.lock();
        state.forbidden.retain(|p| p != plural);
        if forbidden {
            state.forbidden.push(plural.to_owned());
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Waits until `count` requests satisfy `matches`, or panics after
    /// `timeout` listing what was received.
    pub async fn wait_for_requests(
        &self,
        count: usize,
        timeout: Duration,
        matches: impl Fn(&Recorded) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.requested.notified();
            let seen = self.requests().iter().filter(|r| matches(r)).count();
            if seen >= count {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "waited {timeout:?} for {count} matching requests, saw {seen}: {:#?}",
                    self.requests()
                );
            }
        }
    }

    /// The number of watches open right now.
    pub fn open_watches(&self) -> usize {
        let mut state = self.shared.lock();
        state.watches.retain(|w| !w.tx.is_closed());
        state.watches.len()
    }

    /// Waits until at least `count` watches are open, or panics after
    /// `timeout`.
    pub async fn wait_for_watches(&self, count: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.open_watches() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {timeout:?} for {count} open watches, have {}",
                self.open_watches()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops listening and cuts every connection, as a server going down.
    fn go_down(&self) {
        let listener = self
            .shared
            .listener
            .lock()
            .expect("the listener lock")
            .take();
        if let Some(listener) = listener {
            listener.abort();
        }
        self.cut_connections();
    }

    fn cut_connections(&self) {
        let mut connections = self.shared.connections.lock().expect("the connection lock");
        // Dropping a JoinSet aborts every task in it.
        *connections = JoinSet::new();
        self.shared.lock().watches.clear();
    }

    fn serve(&self, listener: TcpListener) {
        let task = tokio::spawn(accept(listener, Arc::clone(&self.shared)));
        *self.shared.listener.lock().expect("the listener lock") = Some(task.abort_handle());
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.go_down();
    }
}
/// An endpoint of an EndpointSlice: one address in the given conditions,
/// belonging to a pod named after it (`pod-10-0-0-1`).
pub fn endpoint(ip: &str, ready: bool, serving: bool, terminating: bool) -> Value {
    json!({
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": {"kind": "Pod", "name": format!("pod-{}", ip.replace([':', '.'], "-"))},
    })
}

/// An EndpointSlice `name` of `service` in `namespace`, with the port named
/// `sip` on `sip_port` (UDP).
pub fn endpoint_slice(
    namespace: &str,
    service: &str,
    name: &str,
    address_type: &str,
    sip_port: u16,
    endpoints: Vec<Value>,
) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": address_type,
        "ports": [{"name": "sip", "port": sip_port, "protocol": "UDP"}],
        "endpoints": endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Target, parse_query};
    use crate::selector::Filter;
    #[test]
    fn paths_name_collections() {
        let t = Target::parse("/apis/discovery.k8s.io/v1/namespaces/voice/endpointslices").unwrap();
        assert_eq!(t.collection.prefix, "apis/discovery.k8s.io/v1");
        assert_eq!(t.collection.plural, "endpointslices");
        assert_eq!(t.namespace.as_deref(), Some("voice"));
        let t = Target::parse("/api/v1/namespaces/voice/services/asterisk").unwrap();
        assert_eq!(t.name.as_deref(), Some("asterisk"));
        let t = Target::parse("/apis/discovery.k8s.io/v1/endpointslices").unwrap();
        assert!(t.namespace.is_none());
        assert!(Target::parse("/healthz").is_none());
    }

    #[test]
    fn selectors_filter_objects() {
        let object = json!({"metadata": {"name": "a", "labels": {"kubernetes.io/service-name": "asterisk"}}});
        let query = |q: &str| Filter::parse(&parse_query(q)).unwrap();
        assert!(query("labelSelector=kubernetes.io%2Fservice-name%3Dasterisk").matches(&object));
        assert!(!query("labelSelector=kubernetes.io%2Fservice-name%3Dother").matches(&object));
        assert!(query("labelSelector=kubernetes.io/service-name+in+(x,asterisk)").matches(&object));
        assert!(query("fieldSelector=metadata.name%3Da").matches(&object));
        assert!(!query("fieldSelector=metadata.name%3Db").matches(&object));
        assert!(Filter::parse(&parse_query("fieldSelector=spec.x%3Da")).is_err());
    }
}
