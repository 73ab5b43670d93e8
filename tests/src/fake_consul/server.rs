//! The fake agent's HTTP side: connections (plain or TLS, closed all at
//! once by a restart), the health and agent endpoints, and blocking queries.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use super::model::{IndexHeader, Instance, Recorded, Service, State, Status};
use super::{AGENT_NODE, DEFAULT_DC};

/// Consul's default and largest blocking wait.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// Accepts connections until the fake is dropped; [`FakeConsul::restart`]
/// closes the open ones.
pub(super) async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: Handler,
    epoch: watch::Sender<u64>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let handler = handler.clone();
        let tls = tls.clone();
        let mut epoch = epoch.subscribe();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler.handle(request).await) }
            });
            let serve = async {
                match tls {
                    Some(tls) => {
                        // A client that fails the handshake is simply dropped.
                        if let Ok(stream) = tls.accept(stream).await {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                    None => {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            };
            tokio::select! {
                () = serve => {}
                _ = epoch.changed() => {}
            }
        });
    }
}

#[derive(Clone)]
pub(super) struct Handler {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) changes: watch::Sender<u64>,
}

type Reply = Response<Full<Bytes>>;

impl Handler {
    async fn handle(&self, request: Request<hyper::body::Incoming>) -> Reply {
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            Err(_) => return text(StatusCode::BAD_REQUEST, "unreadable body"),
        };
        let recorded = Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(parse_query).unwrap_or_default(),
            token: parts
                .headers
                .get("X-Consul-Token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
        };
        self.state
            .lock()
            .expect("never poisoned")
            .requests
            .push(recorded.clone());
        let path = recorded.path.as_str();
        if let Some(rest) = path.strip_prefix("/v1/agent/") {
            if parts.method != hyper::Method::PUT {
                return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            }
            return self.agent(rest, &recorded);
        }
        let Some(name) = path.strip_prefix("/v1/health/service/") else {
            return text(StatusCode::NOT_FOUND, "Not found");
        };
        if parts.method != hyper::Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        let name = decode(name);
        let min_index = match recorded.param("index").map(str::parse::<u64>) {
            None => 0,
            Some(Ok(index)) => index,
            Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "Invalid index"),
        };
        let wait = match recorded.param("wait").map(go_duration) {
            None => DEFAULT_WAIT,
            Some(Some(wait)) => wait.min(MAX_WAIT),
            Some(None) => return text(StatusCode::BAD_REQUEST, "Invalid wait time"),
        };
        let deadline = Instant::now() + wait;
        let mut changes = self.changes.subscribe();
        loop {
            changes.borrow_and_update();
            let hanging = {
                let state = self.state.lock().expect("never poisoned");
                if let (false, Some(status)) = (state.hang, state.fail) {
                    return text(status, "rpc error: fake failure");
                }
                let index = state.services.get(&name).map_or(state.index, |s| s.index);
                let due = min_index == 0 || index > min_index || Instant::now() >= deadline;
                if !state.hang && due {
                    return answer(&state, &name, index, &recorded);
                }
                state.hang
            };
            if hanging {
                let _ = changes.changed().await;
            } else {
                tokio::select! {
                    _ = changes.changed() => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
            }
        }
    }
}

impl Handler {
    /// The agent endpoints: register, update a TTL check, deregister.
    fn agent(&self, path: &str, request: &Recorded) -> Reply {
        let mut state = self.state.lock().expect("never poisoned");
        if let Some(required) = &state.token
            && request.token.as_ref() != Some(required)
        {
            return text(StatusCode::FORBIDDEN, "Permission denied");
        }
        let changed = if path == "service/register" {
            let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
                return text(StatusCode::BAD_REQUEST, "Request decode failed");
            };
            let (Some(name), Some(id)) = (body["Name"].as_str(), body["ID"].as_str()) else {
                return text(StatusCode::BAD_REQUEST, "Missing service name or ID");
            };
            let mut instance = Instance::new(
                name,
                id,
                body["Address"].as_str().unwrap_or_default(),
                body["Port"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(0),
            )
            .node(AGENT_NODE, "127.0.0.1");
            instance.tags = body["Tags"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(meta) = body["Meta"].as_object() {
                for (k, v) in meta {
                    instance
                        .meta
                        .insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
                }
            }
            if let Some(check) = body["Check"].as_object() {
                if let Some(check_id) = check.get("CheckID").and_then(Value::as_str) {
                    instance.check_id = check_id.to_owned();
                }
                // A TTL check is critical until its first update.
                instance.status = Status::Critical;
            }
            let service = state
                .services
                .entry(name.to_owned())
                .or_insert_with(|| Service {
                    index: 0,
                    instances: Vec::new(),
                });
            service.instances.retain(|i| i.id != id);
            service.instances.push(instance);
            name.to_owned()
        } else if let Some(check_id) = path.strip_prefix("check/update/") {
            let check_id = decode(check_id);
            let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
                return text(StatusCode::BAD_REQUEST, "Request decode failed");
            };
            let Some(status) = body["Status"].as_str().and_then(Status::parse) else {
                return text(StatusCode::BAD_REQUEST, "Invalid check status");
            };
            let found = state.services.iter_mut().find_map(|(name, service)| {
                let instance = service
                    .instances
                    .iter_mut()
                    .find(|i| i.check_id == check_id)?;
                instance.status = status;
                instance.output = body["Output"].as_str().unwrap_or_default().to_owned();
                Some(name.clone())
            });
            match found {
                Some(name) => name,
                None => {
                    return text(
                        StatusCode::NOT_FOUND,
                        &format!("Unknown check ID \"{check_id}\""),
                    );
                }
            }
        } else if let Some(id) = path.strip_prefix("service/deregister/") {
            let id = decode(id);
            let found = state.services.iter_mut().find_map(|(name, service)| {
                let before = service.instances.len();
                service.instances.retain(|i| i.id != id);
                (service.instances.len() < before).then(|| name.clone())
            });
            match found {
                Some(name) => name,
                None => {
                    return text(
                        StatusCode::NOT_FOUND,
                        &format!("Unknown service ID \"{id}\""),
                    );
                }
            }
        } else {
            return text(StatusCode::NOT_FOUND, "Not found");
        };
        state.index += 1;
        let index = state.index;
        if let Some(service) = state.services.get_mut(&changed) {
            service.index = index;
        }
        drop(state);
        self.changes.send_modify(|c| *c += 1);
        text(StatusCode::OK, "")
    }
}

/// The current answer for service `name`.
fn answer(state: &State, name: &str, index: u64, request: &Recorded) -> Reply {
    let dc = request.param("dc").unwrap_or(DEFAULT_DC);
    if !state.datacenters.contains(dc) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter");
    }
    let mut anonymous = false;
    if let Some(required) = &state.token {
        match &request.token {
            Some(token) if token == required => {}
            Some(_) => return text(StatusCode::FORBIDDEN, "ACL not found"),
            None => anonymous = true,
        }
    }
    let passing_only = request.param("passing").is_some_and(|p| p != "false");
    let tags = request.params("tag");
    let entries: Vec<Value> = state
        .services
        .get(name)
        .map(|s| s.instances.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|i| !anonymous && i.datacenter == dc)
        .filter(|i| !passing_only || i.status == Status::Passing)
        .filter(|i| {
            tags.iter()
                .all(|t| i.tags.iter().any(|have| have.eq_ignore_ascii_case(t)))
        })
        .map(|i| i.to_json(index))
        .collect();
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .header("X-Consul-Knownleader", "true")
        .header("X-Consul-Lastcontact", "0");
    match state.index_header {
        IndexHeader::Real => response = response.header("X-Consul-Index", index.to_string()),
        IndexHeader::Zero => response = response.header("X-Consul-Index", "0"),
        IndexHeader::Missing => {}
    }
    if anonymous {
        response = response.header("X-Consul-Results-Filtered-By-ACLs", "true");
    }
    response
        .body(Full::new(Bytes::from(Value::Array(entries).to_string())))
        .expect("a valid response")
}

fn text(status: StatusCode, body: &str) -> Reply {
    Response::builder()
        .status(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a valid response")
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A percent-encoded path segment.
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A `wait` as Consul's clients send it, a Go duration (`300s`, `1500ms`).
fn go_duration(s: &str) -> Option<Duration> {
    let parsed: jiff::SignedDuration = s.parse().ok()?;
    Duration::try_from(parsed).ok()
}
