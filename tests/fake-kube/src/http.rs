//! The fake API server's HTTP side: connections, routing, lists, watches
//! (history replay, live events, bookmarks) and the faults of a scenario.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
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

use crate::selector::Filter;
use crate::store::{Collection, Key, Shared, State, Watch};
use crate::{Gone, Recorded, TOKEN};

pub(crate) async fn bind(addr: SocketAddr) -> TcpListener {
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

pub(crate) async fn accept(listener: TcpListener, shared: Arc<Shared>) {
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

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// An EndpointSlice of `service` in `namespace` as the endpointslice
/// controller writes it: one UDP port named `sip` on `sip_port`, and
/// `endpoints` as given (addresses and conditions).
pub(crate) fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
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

pub(crate) fn get(
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

pub(crate) fn list(state: &State, target: &Target, filter: &Filter) -> Response<Body> {
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

pub(crate) fn watch(
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
    pub(crate) fn selected<'a>(
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
    pub(crate) fn type_of(&self, collection: &Collection) -> (String, String) {
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
pub(crate) fn known_kind(plural: &str) -> String {
    match plural {
        "endpointslices" => "EndpointSlice".into(),
        "services" => "Service".into(),
        "pods" => "Pod".into(),
        other => other.trim_end_matches('s').to_owned(),
    }
}

pub(crate) fn stream_response(
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

pub(crate) fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .expect("a response")
}

pub(crate) fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

pub(crate) fn expired_status(from: u64, oldest: u64) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("too old resource version: {from} ({oldest})"),
           "reason": "Expired", "code": 410})
}

/// Sends one watch event as a line; false when the client has gone.
pub(crate) fn send(tx: &mpsc::UnboundedSender<Bytes>, event: &Value) -> bool {
    let mut line = event.to_string();
    line.push('\n');
    tx.unbounded_send(Bytes::from(line)).is_ok()
}

/// What a request path names.
pub(crate) struct Target {
    pub(crate) collection: Collection,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
}

impl Target {
    /// Parses `/api/v1[/namespaces/NS]/PLURAL[/NAME]` and
    /// `/apis/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME]`.
    pub(crate) fn parse(path: &str) -> Option<Target> {
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

pub(crate) fn parse_query(query: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
