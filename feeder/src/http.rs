//! `--http`: probes, metrics and a status page for people.
//!
//! - `/healthz`: the process is serving.
//! - `/readyz`: every source has synced once, so the feed has a snapshot.
//! - `/metrics`: Prometheus text, see [`crate::metrics`].
//! - `/status`: JSON with the current snapshot and every connected node.
//!
//! It reads what the feed shares ([`Shared`]) and changes nothing.
//! `/status` shows what the feed protects (every destination and attr, node
//! ids, NACK texts), so it asks for the feed's token when there is one, and
//! is off on an address other machines reach unless `--public-status` says
//! otherwise. `/metrics` carries counts, versions and ages only.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::error::Error;
use crate::feed::clients::ClientStatus;
use crate::feed::token::TokenFile;
use crate::feed::{Shared, StatusAccess};
use dsfeed_model::SetId;

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
                tracing::info!(%addr, "serving /healthz, /readyz, /metrics, and /status to the feed's token")
            }
            StatusGate::Open => {
                tracing::info!(%addr, "serving /healthz, /readyz, /metrics and /status")
            }
            StatusGate::Off => {
                tracing::info!(%addr, "serving /healthz, /readyz and /metrics; /status is off on an address other machines reach without --token-file (or --public-status)")
            }
        }
        axum::serve(self.listener, router(shared, gate))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Http { addr, source })
    }
}

/// Who may read `/status`, with the token file when it takes one.
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
}

#[derive(Debug, Serialize)]
struct DestinationStatus {
    uri: String,
    flags: u32,
    priority: u32,
    attrs: String,
}

async fn status(
    State(AppState { shared, gate }): State<AppState>,
    headers: HeaderMap,
) -> axum::response::Response {
    match &gate {
        StatusGate::Open => {}
        StatusGate::Off => {
            return (
                StatusCode::FORBIDDEN,
                "/status shows every destination and node: it is off on an --http address other machines reach; give --token-file (then send it as a bearer token) or --public-status\n",
            )
                .into_response();
        }
        StatusGate::Token(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if let Err(refused) = crate::feed::server::authorized(token, given) {
                let code = match refused.code() {
                    tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                return (
                    code,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    format!("{}\n", refused.message()),
                )
                    .into_response();
            }
        }
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
        sets: p
            .snapshot
            .sets()
            .iter()
            .map(|(id, dests)| {
                let dests = dests
                    .iter()
                    .map(|d| DestinationStatus {
                        uri: d.uri().to_owned(),
                        flags: d.flags(),
                        priority: d.priority(),
                        attrs: d.attrs().to_owned(),
                    })
                    .collect();
                (*id, dests)
            })
            .collect(),
    });
    Json(StatusPage {
        ready: snapshot.is_some(),
        snapshot,
        clients: shared.clients.list(),
    })
}
