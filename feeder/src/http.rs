//! `--http`: probes, metrics, a status page for people and the membership
//! API for scripts and services. `docs/openapi.yaml` describes every
//! endpoint, and a test holds the server to it.
//!
//! - `/healthz`: the process is serving.
//! - `/readyz`: every source has synced once, so the feed has a snapshot.
//! - `/metrics`: Prometheus text, see [`crate::metrics`].
//! - `/status`: JSON with the current snapshot and every connected node.
//! - `/sets`, `/sets/{id}`: every set, or one, with its destinations.
//! - `/check/{id}/{address}`: 200 when `address` (`HOST` or `HOST:PORT`)
//!   is a member of set `id`, with the matching destinations; 404 when not.
//!
//! It reads what the feed shares ([`Shared`]) and changes nothing.
//! `/status`, `/sets` and `/check` show what the feed protects (every
//! destination and attr, node ids, NACK texts), so they ask for the feed's
//! token when there is one, and are off on an address other machines reach
//! unless `--public-status` says otherwise. `/metrics` carries counts,
//! versions and ages only.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::error::Error;
use crate::feed::clients::ClientStatus;
use crate::feed::token::TokenFile;
use crate::feed::{Shared, StatusAccess};
use crate::sinks::{Sink, SinkFuture, Snapshots};
use dsfeed_model::{Destination, SetId, Snapshot};

/// The bound `--http` listener.
pub struct Http {
    listener: TcpListener,
}

impl Http {
    /// Binds `addr` at start, so that an unusable address fails the feeder
    /// at once.
    pub async fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                addr: format!("http://{addr}"),
                source,
            })?;
        Ok(Http { listener })
    }

    /// The endpoints as a sink of the hub: served from `shared` until the
    /// hub shuts down.
    pub fn sink(self, shared: Arc<Shared>, gate: StatusGate) -> HttpSink {
        HttpSink {
            http: self,
            shared,
            gate,
        }
    }

    /// Serves until `shutdown` resolves; `/status` as `gate` allows.
    pub async fn run(
        self,
        shared: Arc<Shared>,
        gate: StatusGate,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let addr = self
            .listener
            .local_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string());
        match &gate {
            StatusGate::Token(_) => {
                tracing::info!(%addr, "serving /healthz, /readyz, /metrics, and /status, /sets and /check to the feed's token")
            }
            StatusGate::Open => {
                tracing::info!(%addr, "serving /healthz, /readyz, /metrics, /status, /sets and /check")
            }
            StatusGate::Off => {
                tracing::info!(%addr, "serving /healthz, /readyz and /metrics; /status, /sets and /check are off on an address other machines reach without --token-file (or --public-status)")
            }
        }
        axum::serve(self.listener, router(shared, gate))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Http { addr, source })
    }
}

/// The HTTP endpoints, run by the hub like any sink.
pub struct HttpSink {
    http: Http,
    shared: Arc<Shared>,
    gate: StatusGate,
}

impl Sink for HttpSink {
    fn name(&self) -> &str {
        "http"
    }

    fn run(self: Box<Self>, snapshots: Snapshots) -> SinkFuture {
        let HttpSink { http, shared, gate } = *self;
        Box::pin(http.run(shared, gate, snapshots.closed()))
    }
}

/// Who may read `/status`, `/sets` and `/check`, with the token file when
/// it takes one.
#[derive(Debug, Clone)]
pub enum StatusGate {
    Token(Arc<TokenFile>),
    Open,
    Off,
}

impl StatusGate {
    /// The gate `access` asks for; `token` is the feed's token file, which
    /// [`StatusAccess::Token`] implies.
    pub fn new(access: StatusAccess, token: Option<Arc<TokenFile>>) -> Self {
        match (access, token) {
            (StatusAccess::Token, Some(token)) => StatusGate::Token(token),
            (StatusAccess::Open, _) => StatusGate::Open,
            _ => StatusGate::Off,
        }
    }
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    gate: StatusGate,
}

fn router(shared: Arc<Shared>, gate: StatusGate) -> Router {
    let state = AppState { shared, gate };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/sets", get(all_sets))
        .route("/sets/{id}", get(one_set))
        .route("/check/{id}/{address}", get(check))
        .with_state(state)
}

async fn readyz(State(AppState { shared, .. }): State<AppState>) -> impl IntoResponse {
    match shared.published() {
        Some(p) => (StatusCode::OK, format!("ready: {}\n", p.snapshot)),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for every source to sync once\n".to_owned(),
        ),
    }
}

async fn metrics(State(AppState { shared, .. }): State<AppState>) -> impl IntoResponse {
    let published = shared.published();
    let clients: Vec<_> = shared
        .clients
        .list()
        .iter()
        .map(ClientStatus::sample)
        .collect();
    let text = shared.metrics.render(
        published.as_ref().map(|p| (&*p.snapshot, p.age())),
        &clients,
    );
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
}

#[derive(Debug, Serialize)]
struct StatusPage {
    ready: bool,
    snapshot: Option<SnapshotStatus>,
    clients: Vec<ClientStatus>,
}

#[derive(Debug, Serialize)]
struct SnapshotStatus {
    version: String,
    /// Unix time in seconds.
    published_at: f64,
    age_seconds: f64,
    sets: BTreeMap<SetId, Vec<DestinationStatus>>,
    /// rtpengine relays by set id.
    rtpengine: BTreeMap<SetId, Vec<RelayStatus>>,
    /// SIP domains, each with its did (empty: none).
    domains: Vec<DomainStatus>,
}

#[derive(Debug, Serialize)]
struct RelayStatus {
    url: String,
    weight: u32,
    disabled: bool,
}

#[derive(Debug, Serialize)]
struct DomainStatus {
    name: String,
    did: String,
}

#[derive(Debug, Serialize)]
struct DestinationStatus {
    uri: String,
    flags: u32,
    priority: u32,
    attrs: String,
}

/// Lets a request through `gate`, or answers it: 403 while the gate is
/// off, 401 without the right bearer token (503 while the token file
/// cannot be read).
fn admit(gate: &StatusGate, headers: &HeaderMap) -> Result<(), Early> {
    match gate {
        StatusGate::Open => Ok(()),
        StatusGate::Off => Err(Early::from((
            StatusCode::FORBIDDEN,
            "/status, /sets and /check show every destination and node: they are off on an --http address other machines reach; give --token-file (then send it as a bearer token) or --public-status\n",
        ))),
        StatusGate::Token(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            crate::feed::server::authorized(token, given).map_err(|refused| {
                let code = match refused.code() {
                    tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                Early::from((
                    code,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    format!("{}\n", refused.message()),
                ))
            })
        }
    }
}

async fn status(
    State(AppState { shared, gate }): State<AppState>,
    headers: HeaderMap,
) -> axum::response::Response {
    if let Err(refused) = admit(&gate, &headers) {
        return refused.into_response();
    }
    status_page(&shared).into_response()
}

fn status_page(shared: &Shared) -> Json<StatusPage> {
    let snapshot = shared.published().map(|p| SnapshotStatus {
        version: p.snapshot.version().to_owned(),
        published_at: p
            .at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64(),
        age_seconds: p.age().as_secs_f64(),
        sets: shown_by_set(p.snapshot.sets(), |d| DestinationStatus {
            uri: d.uri().to_owned(),
            flags: d.flags(),
            priority: d.priority(),
            attrs: d.attrs().to_owned(),
        }),
        rtpengine: shown_by_set(&p.snapshot.lists().rtpengine, |r| RelayStatus {
            url: r.url().to_owned(),
            weight: r.weight(),
            disabled: r.disabled(),
        }),
        domains: p
            .snapshot
            .lists()
            .domain_entries()
            .map(|(name, did)| DomainStatus {
                name: name.to_owned(),
                did: did.to_owned(),
            })
            .collect(),
    });
    Json(StatusPage {
        ready: snapshot.is_some(),
        snapshot,
        clients: shared.clients.list(),
    })
}

/// Each set's members as `/status` shows them: the dispatcher sets and the
/// rtpengine sets alike.
fn shown_by_set<T, S>(
    sets: &BTreeMap<SetId, Vec<T>>,
    show: impl Fn(&T) -> S,
) -> BTreeMap<SetId, Vec<S>> {
    sets.iter()
        .map(|(id, members)| (*id, members.iter().map(&show).collect()))
        .collect()
}

/// One destination as `/sets` and `/check` show it: its fields, and the
/// host and port of its URI, so that a client need not parse SIP URIs.
#[derive(Debug, Serialize)]
struct Member {
    uri: String,
    /// A name or an IPv4 address as written; an IPv6 address without
    /// brackets.
    host: String,
    /// `null` when the URI names no port.
    port: Option<u16>,
    flags: u32,
    priority: u32,
    attrs: String,
}

impl From<&Destination> for Member {
    fn from(d: &Destination) -> Self {
        Member {
            uri: d.uri().to_owned(),
            host: d.host().to_owned(),
            port: d.port(),
            flags: d.flags(),
            priority: d.priority(),
            attrs: d.attrs().to_owned(),
        }
    }
}

#[derive(Debug, Serialize)]
struct SetsPage {
    version: String,
    sets: Vec<SetPage>,
    /// Sets a source manages but cannot vouch for yet: their content is
    /// whatever Kamailio already has, unknown here.
    held: Vec<SetId>,
}

#[derive(Debug, Serialize)]
struct SetPage {
    id: SetId,
    destinations: Vec<Member>,
}

#[derive(Debug, Serialize)]
struct OneSet {
    version: String,
    id: SetId,
    destinations: Vec<Member>,
}

#[derive(Debug, Serialize)]
struct Membership {
    member: bool,
    set: SetId,
    /// The address asked about, as given.
    address: String,
    version: String,
    /// The destinations that match (several when no port was given and the
    /// set holds the host on several ports); empty when not a member.
    destinations: Vec<Member>,
}

#[derive(Debug, Serialize)]
struct Problem {
    error: String,
}

fn problem(code: StatusCode, error: String) -> Early {
    Early::from((code, Json(Problem { error })))
}

/// An answer that ends a request before its work: refused, not found, not
/// ready. Boxed, since a response is large and the work's result is not.
struct Early(Box<axum::response::Response>);

impl Early {
    fn from(answer: impl IntoResponse) -> Self {
        Early(Box::new(answer.into_response()))
    }
}

impl IntoResponse for Early {
    fn into_response(self) -> axum::response::Response {
        *self.0
    }
}

/// The current snapshot, or the 503 to answer while there is none.
fn current(shared: &Shared) -> Result<Arc<Snapshot>, Early> {
    shared.published().map(|p| p.snapshot).ok_or_else(|| {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for every source to sync once".into(),
        )
    })
}

/// Set `id` of `snapshot`: 404 when it has none, 503 while it is held.
fn set_of(snapshot: &Snapshot, id: SetId) -> Result<&[Destination], Early> {
    if snapshot.held().contains(&id) {
        return Err(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "set {id} is held: its source cannot vouch for its content yet (Kamailio keeps what it has)"
            ),
        ));
    }
    snapshot.sets().get(&id).map(Vec::as_slice).ok_or_else(|| {
        problem(
            StatusCode::NOT_FOUND,
            format!("no set {id} in the current snapshot"),
        )
    })
}

fn parse_set_id(id: &str) -> Result<SetId, Early> {
    id.parse::<u64>()
        .ok()
        .and_then(|id| dsfeed_model::validate_set_id(id).ok())
        .ok_or_else(|| {
            problem(
                StatusCode::BAD_REQUEST,
                format!("'{id}' is not a set id (0 to 2147483647)"),
            )
        })
}

async fn all_sets(
    State(AppState { shared, gate }): State<AppState>,
    headers: HeaderMap,
) -> axum::response::Response {
    let snapshot = match admit(&gate, &headers).and_then(|()| current(&shared)) {
        Ok(snapshot) => snapshot,
        Err(answer) => return answer.into_response(),
    };
    Json(SetsPage {
        version: snapshot.sets_version().to_owned(),
        sets: snapshot
            .sets()
            .iter()
            .map(|(id, dests)| SetPage {
                id: *id,
                destinations: dests.iter().map(Member::from).collect(),
            })
            .collect(),
        held: snapshot.held().iter().copied().collect(),
    })
    .into_response()
}

async fn one_set(
    State(AppState { shared, gate }): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> axum::response::Response {
    let answer = admit(&gate, &headers).and_then(|()| {
        let id = parse_set_id(&id)?;
        let snapshot = current(&shared)?;
        let dests = set_of(&snapshot, id)?;
        Ok(Json(OneSet {
            version: snapshot.sets_version().to_owned(),
            id,
            destinations: dests.iter().map(Member::from).collect(),
        })
        .into_response())
    });
    answer.unwrap_or_else(IntoResponse::into_response)
}

async fn check(
    State(AppState { shared, gate }): State<AppState>,
    Path((id, address)): Path<(String, String)>,
    headers: HeaderMap,
) -> axum::response::Response {
    let answer = admit(&gate, &headers).and_then(|()| {
        let id = parse_set_id(&id)?;
        let wanted = Address::parse(&address)
            .map_err(|reason| problem(StatusCode::BAD_REQUEST, format!("'{address}': {reason}")))?;
        let snapshot = current(&shared)?;
        let dests = match set_of(&snapshot, id) {
            Ok(dests) => dests,
            // No such set: nothing is a member of it.
            Err(_) if !snapshot.held().contains(&id) => &[],
            Err(held) => return Err(held),
        };
        let matching: Vec<Member> = dests
            .iter()
            .filter(|d| wanted.matches(d))
            .map(Member::from)
            .collect();
        let code = if matching.is_empty() {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        Ok((
            code,
            Json(Membership {
                member: !matching.is_empty(),
                set: id,
                address: address.clone(),
                version: snapshot.sets_version().to_owned(),
                destinations: matching,
            }),
        )
            .into_response())
    });
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// The address `/check` asks about: an IP address or a host name, with
/// or without a port.
#[derive(Debug, PartialEq, Eq)]
struct Address {
    host: Host,
    port: Option<u16>,
}

#[derive(Debug, PartialEq, Eq)]
enum Host {
    Ip(std::net::IpAddr),
    /// Lower case, without a trailing dot.
    Name(String),
}

impl Host {
    fn parse(host: &str) -> Host {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<std::net::IpAddr>() {
            // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
            Ok(ip) => Host::Ip(ip.to_canonical()),
            Err(_) => Host::Name(host.trim_end_matches('.').to_ascii_lowercase()),
        }
    }
}

impl Address {
    /// Parses `HOST`, `HOST:PORT`, `[IPv6]`, `[IPv6]:PORT` or a bare IPv6
    /// address (which has no port: every colon is its own).
    fn parse(text: &str) -> Result<Address, String> {
        if let Ok(ip) = text.parse::<std::net::Ipv6Addr>() {
            return Ok(Address {
                host: Host::Ip(std::net::IpAddr::V6(ip).to_canonical()),
                port: None,
            });
        }
        let (host, port) = dsfeed_model::split_host_port(text.trim_end_matches('.'))?;
        Ok(Address {
            host: Host::parse(host),
            port,
        })
    }

    /// Whether `dest` is at this address: the same IP address (however it
    /// is written) or the same name (case-insensitively), and the same port
    /// when one is asked for. A destination whose URI names no port matches
    /// any, as `ds_is_from_list` does. A name is not resolved: it matches
    /// the destinations written with that name.
    fn matches(&self, dest: &Destination) -> bool {
        Host::parse(dest.host()) == self.host
            && match (self.port, dest.port()) {
                (Some(asked), Some(port)) => asked == port,
                _ => true,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(target: &str) -> Destination {
        Destination::parse_target(target).unwrap()
    }

    #[test]
    fn addresses_match_with_and_without_ports() {
        // The same host however it is spelled, and the same port unless one
        // side names none.
        let members = [
            ("10.0.0.1", "10.0.0.1:5080"),
            ("10.0.0.1:5080", "10.0.0.1:5080"),
            ("::ffff:10.0.0.1", "10.0.0.1"),
            ("2001:db8::1", "[2001:db8:0:0::1]:5060"),
            ("[2001:db8::1]:5060", "[2001:db8::1]:5060"),
            ("PBX.example.", "pbx.example:5060"),
            ("pbx.example:5060", "pbx.example"),
            ("pbx.example:5061", "sips:pbx.example"),
        ];
        // Another port on both sides, or another host.
        let strangers = [
            ("10.0.0.1:5060", "10.0.0.1:5080"),
            ("[2001:db8::1]:5061", "[2001:db8::1]:5060"),
            ("10.0.0.2", "10.0.0.1"),
            ("pbx.example", "10.0.0.1"),
        ];
        for (asked, target) in members {
            let address = Address::parse(asked).unwrap();
            assert!(address.matches(&dest(target)), "{asked} in {target}");
        }
        for (asked, target) in strangers {
            let address = Address::parse(asked).unwrap();
            assert!(!address.matches(&dest(target)), "{asked} not in {target}");
        }
        for bad in ["", "10.0.0.1:", "10.0.0.1:99999", "[nope]", "a b", "[::1"] {
            assert!(Address::parse(bad).is_err(), "{bad:?}");
        }
    }
}
