//! A fake Consul agent for tests: the real HTTP protocol of
//! `GET /v1/health/service/NAME` on 127.0.0.1 (plain or TLS), driven by the
//! test, so the feeder is reached through the same client code users run.
//!
//! What it does as Consul does:
//! - every answer carries `X-Consul-Index`: the index of the service's last
//!   change (registration, health change, deregistration), or the catalog's
//!   index for a service never registered;
//! - a query with `index=N` (N > 0) is held until the service's index moves
//!   past N or `wait` runs out (Go durations such as `300s` or `1500ms`;
//!   default 5m, capped at 10m; no jitter is added), then answers the
//!   current state; `index=0` or no index answers at once;
//! - `passing=true` leaves out instances with any check not passing; `tag=`
//!   (repeatable; every tag must match, ignoring case) and `dc=` filter; a
//!   datacenter nobody registered in answers 500 "No path to datacenter";
//! - with [`FakeConsul::require_token`], an unknown `X-Consul-Token` answers
//!   403 "ACL not found" and a query without a token is anonymous: 200 with
//!   an empty list and `X-Consul-Results-Filtered-By-ACLs: true`;
//! - a malformed `index` or `wait` answers 400;
//! - the agent endpoints `PUT /v1/agent/service/register` (a TTL check
//!   starts critical), `PUT /v1/agent/check/update/CHECK_ID` and
//!   `PUT /v1/agent/service/deregister/ID` change what the health endpoint
//!   answers; unknown IDs answer 404. Agent registrations live on the node
//!   [`AGENT_NODE`] at 127.0.0.1.
//!
//! And what a test needs to break it:
//! - [`FakeConsul::fail`]: every query answers the given status;
//! - [`FakeConsul::hang`]: queries are accepted and never answered;
//! - [`FakeConsul::index_header`]: leave `X-Consul-Index` out, or send 0;
//! - [`FakeConsul::restart`]: the agent loses its state, as a dev-mode or
//!   single-node agent that restarts: open connections are closed, every
//!   service is gone and the index starts again from 1;
//! - [`FakeConsul::requests`]: every request, as received.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The datacenter instances are in unless a test says otherwise.
pub const DEFAULT_DC: &str = "dc1";

/// The node the fake agent registers services on.
pub const AGENT_NODE: &str = "fake-agent";

/// Consul's default and largest blocking wait.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// A service check's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Passing,
    Warning,
    Critical,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "passing" => Some(Status::Passing),
            "warning" => Some(Status::Warning),
            "critical" => Some(Status::Critical),
            _ => None,
        }
    }
}

/// How answers carry `X-Consul-Index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexHeader {
    /// The real index.
    Real,
    /// No header at all, as some proxies do.
    Missing,
    /// Always 0, a Consul bug clients must survive.
    Zero,
}

/// One registered service instance, with one service check.
#[derive(Debug, Clone)]
pub struct Instance {
    pub service: String,
    pub id: String,
    pub node: String,
    pub node_address: String,
    /// Empty means "use the node's address", as in Consul.
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub node_meta: BTreeMap<String, String>,
    /// `Weights.Passing`, `Weights.Warning`.
    pub weights: (i64, i64),
    pub status: Status,
    /// The service check's ID (`service:ID` unless registered otherwise)
    /// and its last output.
    pub check_id: String,
    pub output: String,
    pub datacenter: String,
}

impl Instance {
    /// A passing instance `id` of `service` at `address:port`, on its own
    /// node `node-ID` whose address is 192.0.2.1.
    pub fn new(service: &str, id: &str, address: &str, port: u16) -> Self {
        Instance {
            service: service.into(),
            id: id.into(),
            node: format!("node-{id}"),
            node_address: "192.0.2.1".into(),
            address: address.into(),
            port,
            tags: Vec::new(),
            meta: BTreeMap::new(),
            node_meta: BTreeMap::new(),
            weights: (1, 1),
            status: Status::Passing,
            check_id: format!("service:{id}"),
            output: String::new(),
            datacenter: DEFAULT_DC.into(),
        }
    }

    pub fn node(mut self, name: &str, address: &str) -> Self {
        self.node = name.into();
        self.node_address = address.into();
        self
    }

    pub fn tag(mut self, tag: &str) -> Self {
        self.tags.push(tag.into());
        self
    }

    pub fn meta(mut self, key: &str, value: &str) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }

    pub fn weights(mut self, passing: i64, warning: i64) -> Self {
        self.weights = (passing, warning);
        self
    }

    pub fn status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }

    pub fn datacenter(mut self, dc: &str) -> Self {
        self.datacenter = dc.into();
        self
    }

    fn to_json(&self, index: u64) -> Value {
        let checks = json!([
            {
                "Node": self.node, "CheckID": "serfHealth", "Name": "Serf Health Status",
                "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
                "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
                "CreateIndex": index, "ModifyIndex": index
            },
            {
                "Node": self.node, "CheckID": self.check_id,
                "Name": format!("Service '{}' check", self.service),
                "Status": self.status.as_str(), "Notes": "", "Output": self.output,
                "ServiceID": self.id, "ServiceName": self.service, "ServiceTags": self.tags,
                "Type": "ttl", "CreateIndex": index, "ModifyIndex": index
            }
        ]);
        json!({
            "Node": {
                "ID": "", "Node": self.node, "Address": self.node_address,
                "Datacenter": self.datacenter,
                "TaggedAddresses": {"lan": self.node_address, "wan": self.node_address},
                "Meta": self.node_meta, "CreateIndex": index, "ModifyIndex": index
            },
            "Service": {
                "ID": self.id, "Service": self.service, "Tags": self.tags,
                "Address": self.address, "Meta": if self.meta.is_empty() { Value::Null } else { json!(self.meta) },
                "Port": self.port,
                "Weights": {"Passing": self.weights.0, "Warning": self.weights.1},
                "EnableTagOverride": false, "Proxy": {}, "Connect": {},
                "CreateIndex": index, "ModifyIndex": index
            },
            "Checks": checks
        })
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    pub token: Option<String>,
    pub body: String,
}

impl std::fmt::Display for Recorded {
    /// One line: method, path, decoded query, token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        for (i, (k, v)) in self.query.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        if let Some(token) = &self.token {
            write!(f, " (token {token})")?;
        }
        Ok(())
    }
}

impl Recorded {
    /// The first value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of query parameter `key`.
    pub fn params(&self, key: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `index` parameter as a number, if any.
    pub fn index(&self) -> Option<u64> {
        self.param("index").and_then(|i| i.parse().ok())
    }
}

#[derive(Debug)]
struct Service {
    index: u64,
    instances: Vec<Instance>,
}

#[derive(Debug)]
struct State {
    /// The catalog's index: the last change to anything.
    index: u64,
    services: BTreeMap<String, Service>,
    datacenters: BTreeSet<String>,
    token: Option<String>,
    fail: Option<StatusCode>,
    hang: bool,
    index_header: IndexHeader,
    requests: Vec<Recorded>,
}

/// The TLS material of a test PKI, written as PEM files.
#[derive(Debug)]
pub struct TestPki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// A CA, a server certificate for `server_names` (DNS names or IP
    /// addresses) and a client certificate, all signed by the CA.
    pub fn new(server_names: &[&str]) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("writable temporary directory");
            path
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "dsfeed test CA");
        let ca_key = KeyPair::generate().expect("a CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("a CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names).expect("valid names");
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().expect("a key");
            let cert = params.signed_by(&key, &issuer).expect("a certificate");
            (cert.pem(), key.serialize_pem())
        };
        let names = server_names.iter().map(|n| n.to_string()).collect();
        let (server_cert, server_key) = leaf(names, ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = leaf(
            vec!["dsfeed.client".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        TestPki {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server_cert),
            server_key: write("server-key.pem", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client-key.pem", client_key),
            _dir: dir,
        }
    }

    /// A rustls server configuration with this PKI's server certificate,
    /// demanding a client certificate signed by the CA when `mutual`.
    fn server_config(&self, mutual: bool) -> rustls::ServerConfig {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions");
        let builder = if mutual {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&self.ca).expect("CA file") {
                roots.add(cert.expect("CA PEM")).expect("CA certificate");
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("a client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let chain = CertificateDer::pem_file_iter(&self.server_cert)
            .expect("server certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("server certificate PEM");
        let key = PrivateKeyDer::from_pem_file(&self.server_key).expect("server key");
        builder
            .with_single_cert(chain, key)
            .expect("a usable server certificate")
    }
}

/// A running fake Consul agent; stops when dropped.
pub struct FakeConsul {
    addr: SocketAddr,
    https: bool,
    state: Arc<Mutex<State>>,
    /// Bumped on every change, to wake held queries.
    changes: watch::Sender<u64>,
    /// Bumped by [`FakeConsul::restart`], to close every connection.
    epoch: watch::Sender<u64>,
    server: JoinHandle<()>,
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeConsul {
    /// A plain-HTTP fake on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    /// An HTTPS fake presenting `pki`'s server certificate; with `mutual`,
    /// it refuses clients without a certificate signed by `pki`'s CA.
    pub async fn start_tls(pki: &TestPki, mutual: bool) -> Self {
        Self::serve(Some(Arc::new(pki.server_config(mutual)))).await
    }

    async fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port on 127.0.0.1");
        let addr = listener.local_addr().expect("a bound address");
        let state = Arc::new(Mutex::new(State {
            index: 1,
            services: BTreeMap::new(),
            datacenters: BTreeSet::from([DEFAULT_DC.to_owned()]),
            token: None,
            fail: None,
            hang: false,
            index_header: IndexHeader::Real,
            requests: Vec::new(),
        }));
        let (changes, _) = watch::channel(0);
        let (epoch, _) = watch::channel(0);
        let https = tls.is_some();
        let server = tokio::spawn(accept(
            listener,
            tls.map(tokio_rustls::TlsAcceptor::from),
            Handler {
                state: state.clone(),
                changes: changes.clone(),
            },
            epoch.clone(),
        ));
        FakeConsul {
            addr,
            https,
            state,
            changes,
            epoch,
            server,
        }
    }

    /// `http://127.0.0.1:PORT` or `https://...`, for `--consul-addr`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `HOST:PORT`, for `--consul-addr` without a scheme.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The port the fake listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Registers `instance`, or replaces the one with the same service and ID.
    pub fn register(&self, instance: Instance) {
        self.change(|state| {
            state.datacenters.insert(instance.datacenter.clone());
            let service = state
                .services
                .entry(instance.service.clone())
                .or_insert_with(|| Service {
                    index: 0,
                    instances: Vec::new(),
                });
            service.instances.retain(|i| i.id != instance.id);
            service.instances.push(instance.clone());
            Some(instance.service.clone())
        });
    }

    /// Sets the status of instance `id`'s service check.
    pub fn set_status(&self, service: &str, id: &str, status: Status) {
        self.change(|state| {
            let instance = state
                .services
                .get_mut(service)?
                .instances
                .iter_mut()
                .find(|i| i.id == id)?;
            instance.status = status;
            Some(service.to_owned())
        });
    }

    /// Removes instance `id` of `service`.
    pub fn deregister(&self, service: &str, id: &str) {
        self.change(|state| {
            state
                .services
                .get_mut(service)?
                .instances
                .retain(|i| i.id != id);
            Some(service.to_owned())
        });
    }

    /// Loses every registration and restarts the index from 1, closing the
    /// connections the agent had open.
    pub fn restart(&self) {
        {
            let mut state = self.lock();
            state.index = 1;
            state.services.clear();
        }
        self.epoch.send_modify(|e| *e += 1);
        self.changes.send_modify(|c| *c += 1);
    }

    /// Demands `token` in `X-Consul-Token` from now on.
    pub fn require_token(&self, token: &str) {
        self.lock().token = Some(token.to_owned());
        self.changes.send_modify(|c| *c += 1);
    }

    /// Answers every query with `status` (with `None`, normally again).
    pub fn fail(&self, status: Option<u16>) {
        self.lock().fail = status.map(|s| StatusCode::from_u16(s).expect("a valid status"));
        self.changes.send_modify(|c| *c += 1);
    }

    /// Holds every query, new or already waiting, without answering.
    pub fn hang(&self, hang: bool) {
        self.lock().hang = hang;
        self.changes.send_modify(|c| *c += 1);
    }

    /// How answers carry `X-Consul-Index` from now on.
    pub fn index_header(&self, header: IndexHeader) {
        self.lock().index_header = header;
    }

    /// Instance `id` of `service` as the fake holds it now.
    pub fn instance(&self, service: &str, id: &str) -> Option<Instance> {
        self.lock()
            .services
            .get(service)?
            .instances
            .iter()
            .find(|i| i.id == id)
            .cloned()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Waits until a request matching `pred` has arrived after the first
    /// `after` requests; panics after `timeout`. Returns its position.
    pub async fn wait_for_request(
        &self,
        after: usize,
        timeout: Duration,
        pred: impl Fn(&Recorded) -> bool,
    ) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self
                .requests()
                .iter()
                .enumerate()
                .skip(after)
                .find(|(_, r)| pred(r))
                .map(|(i, _)| i)
            {
                return found;
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = self.requests().iter().map(|r| r.to_string()).collect();
                panic!(
                    "no matching request after #{after} within {timeout:?}; requests:\n{}",
                    seen.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the fake's state is never poisoned")
    }

    /// Applies a change to one service; it gets the next index.
    fn change(&self, apply: impl FnOnce(&mut State) -> Option<String>) {
        {
            let mut state = self.lock();
            let Some(name) = apply(&mut state) else {
                return;
            };
            state.index += 1;
            let index = state.index;
            if let Some(service) = state.services.get_mut(&name) {
                service.index = index;
            }
        }
        self.changes.send_modify(|c| *c += 1);
    }
}

/// Accepts connections until the fake is dropped; [`FakeConsul::restart`]
/// closes the open ones.
async fn accept(
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
struct Handler {
    state: Arc<Mutex<State>>,
    changes: watch::Sender<u64>,
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
        let wait = match recorded
            .param("wait")
            .map(|w| dsfeed::flag::duration(w).ok())
        {
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
