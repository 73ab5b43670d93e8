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

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::channel::mpsc;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinSet};

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

struct Shared {
    state: Mutex<State>,
    /// Wakes tests polling for recorded requests.
    requested: Notify,
    /// The accept loop, stopped on `Down`.
    listener: Mutex<Option<AbortHandle>>,
    /// Every connection, cut on `DropConnections` and `Down`.
    connections: Mutex<JoinSet<()>>,
}

#[derive(Default)]
struct State {
    /// The last resourceVersion handed out.
    rv: u64,
    /// Watches from a resourceVersion below this are refused.
    compacted: u64,
    gone: Option<Gone>,
    objects: BTreeMap<Key, Value>,
    /// Every write, in order, for replay to watches that resume.
    history: Vec<Change>,
    watches: Vec<Watch>,
    requests: Vec<Recorded>,
    uid: u64,
    /// Plurals (`services`) whose every request is refused with 403.
    forbidden: Vec<String>,
}

/// A collection: the API prefix (`api/v1`, `apis/discovery.k8s.io/v1`) and
/// the plural resource name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Collection {
    prefix: String,
    plural: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    collection: Collection,
    namespace: String,
    name: String,
}

struct Change {
    rv: u64,
    key: Key,
    before: Option<Value>,
    after: Option<Value>,
}

struct Watch {
    collection: Collection,
    /// `None` for a watch across every namespace.
    namespace: Option<String>,
    filter: Filter,
    bookmarks: bool,
    kind: String,
    api_version: String,
    tx: mpsc::UnboundedSender<Bytes>,
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
            Scenario::Down => {
                if let Some(listener) = self
                    .shared
                    .listener
                    .lock()
                    .expect("the listener lock")
                    .take()
                {
                    listener.abort();
                }
                self.cut_connections();
            }
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
        if let Some(listener) = self
            .shared
            .listener
            .lock()
            .expect("the listener lock")
            .take()
        {
            listener.abort();
        }
        self.cut_connections();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("the state lock")
    }
}

impl State {
    /// Stores a write in history and sends it to every watch it concerns.
    fn record(&mut self, change: Change) {
        self.watches.retain(|w| match w.event_for(&change) {
            Some(event) => send(&w.tx, &event),
            None => !w.tx.is_closed(),
        });
        self.history.push(change);
    }
}

impl Watch {
    /// The event this watch sees for `change`: an object entering the
    /// selection is `ADDED`, one leaving it `DELETED`.
    fn event_for(&self, change: &Change) -> Option<Value> {
        if change.key.collection != self.collection
            || self
                .namespace
                .as_ref()
                .is_some_and(|ns| *ns != change.key.namespace)
        {
            return None;
        }
        let before = change.before.as_ref().filter(|o| self.filter.matches(o));
        let after = change.after.as_ref().filter(|o| self.filter.matches(o));
        let (kind, object) = match (before, after) {
            (None, Some(after)) => ("ADDED", after.clone()),
            (Some(_), Some(after)) => ("MODIFIED", after.clone()),
            (Some(before), None) => {
                let mut gone = change.after.clone().unwrap_or_else(|| before.clone());
                gone["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                ("DELETED", gone)
            }
            (None, None) => return None,
        };
        Some(json!({"type": kind, "object": object}))
    }
}

/// Binds with SO_REUSEADDR so the port can be taken again after `Down`.
async fn bind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    // The port may linger briefly after the last listener closed.
    for _ in 0..50 {
        if socket.bind(addr).is_ok() {
            return socket.listen(64).expect("listen");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot bind {addr}");
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let conn_shared = Arc::clone(&shared);
        let service = hyper::service::service_fn(move |req| {
            let shared = Arc::clone(&conn_shared);
            async move { Ok::<_, Infallible>(handle(&shared, req)) }
        });
        let connection = async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        };
        let mut connections = shared.connections.lock().expect("the connection lock");
        while connections.try_join_next().is_some() {}
        connections.spawn(connection);
    }
}

type Body = BoxBody<Bytes, Infallible>;

/// An EndpointSlice of `service` in `namespace` as the endpointslice
/// controller writes it: one UDP port named `sip` on `sip_port`, and
/// `endpoints` as given (addresses and conditions).
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

fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let query: BTreeMap<String, String> = req.uri().query().map(parse_query).unwrap_or_default();
    let recorded = Recorded {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        query,
    };
    shared.lock().requests.push(recorded.clone());
    shared.requested.notify_waiters();

    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "no valid token");
    }
    if req.method() != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "this fake serves GET only",
        );
    }
    let Some(target) = Target::parse(&recorded.path) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "no such path");
    };
    let filter = match Filter::parse(&recorded.query) {
        Ok(filter) => filter,
        Err(msg) => return status(StatusCode::BAD_REQUEST, "BadRequest", &msg),
    };
    let mut state = shared.lock();
    if state.forbidden.contains(&target.collection.plural) {
        let verb = if recorded.is_watch() { "watch" } else { "list" };
        let message = format!(
            "{} is forbidden: User \"system:serviceaccount:test:fake\" cannot {verb} resource \"{}\" in the namespace \"{}\"",
            target.collection.plural,
            target.collection.plural,
            target.namespace.as_deref().unwrap_or_default()
        );
        return status(StatusCode::FORBIDDEN, "Forbidden", &message);
    }
    match target.name {
        Some(name) => get(&state, &target.collection, target.namespace, name),
        None if recorded.is_watch() => watch(&mut state, target, filter, &recorded.query),
        None => list(&state, &target, &filter),
    }
}

fn get(
    state: &State,
    collection: &Collection,
    namespace: Option<String>,
    name: String,
) -> Response<Body> {
    let key = Key {
        collection: collection.clone(),
        namespace: namespace.unwrap_or_default(),
        name,
    };
    match state.objects.get(&key) {
        Some(object) => json_response(StatusCode::OK, object),
        None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
    }
}

fn list(state: &State, target: &Target, filter: &Filter) -> Response<Body> {
    let (api_version, kind) = state.type_of(&target.collection);
    let items: Vec<Value> = state
        .selected(target, filter)
        .map(|o| {
            // Items of a typed list carry no apiVersion or kind.
            let mut item = o.clone();
            if let Some(fields) = item.as_object_mut() {
                fields.remove("apiVersion");
                fields.remove("kind");
            }
            item
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": api_version,
            "kind": format!("{kind}List"),
            "metadata": {"resourceVersion": state.rv.to_string()},
            "items": items,
        }),
    )
}

fn watch(
    state: &mut State,
    target: Target,
    filter: Filter,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    let from = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let (api_version, kind) = state.type_of(&target.collection);
    let (tx, rx) = mpsc::unbounded();
    let watch = Watch {
        collection: target.collection.clone(),
        namespace: target.namespace.clone(),
        filter,
        bookmarks: query.get("allowWatchBookmarks").map(String::as_str) == Some("true"),
        kind,
        api_version,
        tx,
    };
    if from.is_empty() || from == "0" {
        // "Any" or "most recent": the current state as ADDED events first.
        for object in state.selected(&target, &watch.filter) {
            send(&watch.tx, &json!({"type": "ADDED", "object": object}));
        }
    } else {
        let Ok(from) = from.parse::<u64>() else {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "invalid resourceVersion",
            );
        };
        if from < state.compacted {
            let expired = expired_status(from, state.compacted);
            if state.gone == Some(Gone::Http) {
                return json_response(StatusCode::GONE, &expired);
            }
            send(&watch.tx, &json!({"type": "ERROR", "object": expired}));
            return stream_response(rx, None);
        }
        for change in state.history.iter().filter(|c| c.rv > from) {
            if let Some(event) = watch.event_for(change) {
                send(&watch.tx, &event);
            }
        }
    }
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    state.watches.push(watch);
    stream_response(rx, timeout)
}

impl State {
    /// The objects of `target` (all namespaces when it names none) that
    /// `filter` selects.
    fn selected<'a>(
        &'a self,
        target: &'a Target,
        filter: &'a Filter,
    ) -> impl Iterator<Item = &'a Value> {
        self.objects
            .iter()
            .filter(move |(key, object)| {
                key.collection == target.collection
                    && target
                        .namespace
                        .as_ref()
                        .is_none_or(|ns| *ns == key.namespace)
                    && filter.matches(object)
            })
            .map(|(_, object)| object)
    }

    /// The apiVersion and kind of a collection, taken from a stored object,
    /// or guessed from the plural when it is empty.
    fn type_of(&self, collection: &Collection) -> (String, String) {
        let stored = self
            .objects
            .iter()
            .find(|(k, _)| k.collection == *collection)
            .map(|(_, o)| o);
        let api_version = collection
            .prefix
            .strip_prefix("apis/")
            .or_else(|| collection.prefix.strip_prefix("api/"))
            .unwrap_or(&collection.prefix)
            .to_owned();
        let kind = stored
            .and_then(|o| o["kind"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| known_kind(&collection.plural));
        (api_version, kind)
    }
}

/// The kind of a plural this fake may serve before any object exists.
fn known_kind(plural: &str) -> String {
    match plural {
        "endpointslices" => "EndpointSlice".into(),
        "services" => "Service".into(),
        "pods" => "Pod".into(),
        other => other.trim_end_matches('s').to_owned(),
    }
}

fn stream_response(
    rx: mpsc::UnboundedReceiver<Bytes>,
    timeout: Option<Duration>,
) -> Response<Body> {
    let frames = rx.map(|line| Ok::<_, Infallible>(Frame::data(line)));
    let body: Body = match timeout {
        Some(timeout) => {
            let deadline = Box::pin(tokio::time::sleep(timeout));
            BodyExt::boxed(StreamBody::new(frames.take_until(deadline)))
        }
        None => BodyExt::boxed(StreamBody::new(frames)),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(body)
        .expect("a response")
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .expect("a response")
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn expired_status(from: u64, oldest: u64) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("too old resource version: {from} ({oldest})"),
           "reason": "Expired", "code": 410})
}

/// Sends one watch event as a line; false when the client has gone.
fn send(tx: &mpsc::UnboundedSender<Bytes>, event: &Value) -> bool {
    let mut line = event.to_string();
    line.push('\n');
    tx.unbounded_send(Bytes::from(line)).is_ok()
}

/// What a request path names.
struct Target {
    collection: Collection,
    namespace: Option<String>,
    name: Option<String>,
}

impl Target {
    /// Parses `/api/v1[/namespaces/NS]/PLURAL[/NAME]` and
    /// `/apis/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME]`.
    fn parse(path: &str) -> Option<Target> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (prefix, rest) = match parts.as_slice() {
            ["api", version, rest @ ..] => (format!("api/{version}"), rest),
            ["apis", group, version, rest @ ..] => (format!("apis/{group}/{version}"), rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
            rest => (None, rest),
        };
        let (plural, name) = match rest {
            [plural] => (*plural, None),
            [plural, name] if namespace.is_some() => (*plural, Some((*name).to_owned())),
            _ => return None,
        };
        Some(Target {
            collection: Collection {
                prefix,
                plural: plural.to_owned(),
            },
            namespace,
            name,
        })
    }
}

fn collection_of(api_version: &str, kind: &str) -> Collection {
    let prefix = if api_version.contains('/') {
        format!("apis/{api_version}")
    } else {
        format!("api/{api_version}")
    };
    Collection {
        prefix,
        plural: format!("{}s", kind.to_ascii_lowercase()),
    }
}

fn key_of(object: &Value) -> Key {
    let field = |v: &Value, what: &str| -> String {
        v.as_str()
            .unwrap_or_else(|| panic!("an applied object needs {what}: {object}"))
            .to_owned()
    };
    Key {
        collection: collection_of(
            &field(&object["apiVersion"], "apiVersion"),
            &field(&object["kind"], "kind"),
        ),
        namespace: field(&object["metadata"]["namespace"], "metadata.namespace"),
        name: field(&object["metadata"]["name"], "metadata.name"),
    }
}

/// A label and field selector, each a conjunction of requirements.
#[derive(Debug, Default)]
struct Filter {
    labels: Vec<Requirement>,
    fields: Vec<(String, String)>,
}

#[derive(Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    Exists(String),
}

impl Filter {
    fn parse(query: &BTreeMap<String, String>) -> Result<Filter, String> {
        let mut filter = Filter::default();
        if let Some(labels) = query.get("labelSelector").filter(|s| !s.is_empty()) {
            filter.labels = split_terms(labels)
                .into_iter()
                .map(|term| Requirement::parse(&term))
                .collect::<Result<_, _>>()?;
        }
        if let Some(fields) = query.get("fieldSelector").filter(|s| !s.is_empty()) {
            for term in fields.split(',') {
                let (field, value) = term
                    .split_once("==")
                    .or_else(|| term.split_once('='))
                    .ok_or_else(|| format!("unsupported field selector '{term}'"))?;
                if !matches!(field, "metadata.name" | "metadata.namespace") {
                    return Err(format!("field label not supported: {field}"));
                }
                filter.fields.push((field.to_owned(), value.to_owned()));
            }
        }
        Ok(filter)
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels[k].as_str();
        self.labels.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => label(k).is_some(),
        }) && self.fields.iter().all(|(field, value)| {
            let path = field.strip_prefix("metadata.").unwrap_or(field);
            object["metadata"][path].as_str() == Some(value.as_str())
        })
    }
}

impl Requirement {
    fn parse(term: &str) -> Result<Requirement, String> {
        let term = term.trim();
        if let Some((k, v)) = term.split_once("!=") {
            return Ok(Requirement::NotEquals(k.trim().into(), v.trim().into()));
        }
        if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            return Ok(Requirement::Equals(k.trim().into(), v.trim().into()));
        }
        if let Some((k, set)) = term.split_once(" in ") {
            let set = set
                .trim()
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("unsupported label selector '{term}'"))?;
            return Ok(Requirement::In(
                k.trim().into(),
                set.split(',').map(|v| v.trim().to_owned()).collect(),
            ));
        }
        if term.is_empty() || term.contains([' ', '!', '(']) {
            return Err(format!("unsupported label selector '{term}'"));
        }
        Ok(Requirement::Exists(term.to_owned()))
    }
}

/// Splits a label selector on the commas that are not inside `( )`.
fn split_terms(selector: &str) -> Vec<String> {
    let mut terms = vec![String::new()];
    let mut depth = 0;
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(String::new());
                continue;
            }
            _ => {}
        }
        terms.last_mut().expect("one term").push(c);
    }
    terms
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
