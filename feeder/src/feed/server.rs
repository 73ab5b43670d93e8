//! The feed server: one stream per client, xDS state of the world.
//!
//! Each stream holds at most two unanswered responses (`WINDOW`). A new
//! one is sent when the truth changes and the window has room, always built
//! from the newest snapshot, so a slow client skips what it missed instead
//! of receiving a backlog, and a stream costs two responses of memory at
//! most. A NACK of a response that a newer one overtook is the client
//! skipping it, not refusing it. Responses for equal filters of one snapshot are built once and
//! shared.
//!
//! A client that accepts deltas gets only the sets that changed since a
//! version it holds, when that version is among the last `HISTORY` (8)
//! snapshots this feeder served; otherwise, or when it answers that it
//! lacks the base, the full snapshot. Deltas too are built once per filter
//! and base and shared.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::transport::server::{TcpIncoming, UdsConnectInfo};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::feed::clients::{ClientHandle, ClientStatus};
use crate::feed::token::TokenFile;
use crate::feed::{ServeArgs, SetFilter, Shared};
use crate::sinks::SnapshotRx;
use dsfeed_model::Endpoint;
use dsfeed_model::Snapshot;
use dsfeed_model::pb::{self, FeedRequest, FeedResponse, feed_server};

/// The lists besides dispatcher sets a client asked for.
type Lists = std::collections::BTreeSet<dsfeed_model::ListKind>;

/// What a view depends on besides the snapshot: the client's set filter
/// and the lists it asked for.
type ViewKey = (SetFilter, Lists);

/// How many responses a stream may have unanswered. Two, so that a client
/// holding one until it may apply it (dsfeed.so paces its swaps) still
/// hears of a newer snapshot at once and applies the newest when its turn
/// comes; and no more, so a client that stops reading costs two responses
/// of memory at most.
const WINDOW: usize = 2;

/// How long a new stream may take to send its first request.
const FIRST_REQUEST: Duration = Duration::from_secs(30);

/// HTTP/2 pings find clients that vanished without closing their socket.
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request accepted; requests carry ids and short texts only.
const MAX_REQUEST: usize = 64 * 1024;

/// How long shutdown waits for streams to close before leaving anyway, so
/// that a client that stopped reading cannot hold the feeder up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The status a stream ends with when the feeder stops; clients reconnect,
/// possibly to another replica.
pub const SHUTTING_DOWN: &str = "the feeder is shutting down";

/// How many past snapshots the feed keeps to answer with deltas: a client
/// a few changes behind (a Kamailio pacing its swaps through a burst, one
/// that reconnects after a short cut) gets a delta, one further behind the
/// full snapshot.
const HISTORY: usize = 8;

/// The response content for one filter of one snapshot: the whole of it,
/// or a delta from `base`.
#[derive(Debug)]
struct View {
    version: String,
    sets: Vec<pb::Set>,
    rtpengine_sets: Vec<pb::RtpengineSet>,
    domains: Vec<pb::WireDomain>,
    /// Empty for a full view; else the version a delta applies on.
    base: String,
    /// In a delta: the sets `base` has and this version does not.
    removed: Vec<dsfeed_model::SetId>,
    /// Why this view is not sent: it is over what a client accepts
    /// ([`pb::Size::over_budget`]), so sending it would only make every
    /// client refuse it.
    withheld: Option<String>,
}

impl View {
    fn of(snapshot: &Snapshot, want: &ViewKey, metrics: &crate::metrics::Metrics) -> Self {
        let filter = &want.0;
        let snapshot = under(snapshot, want);
        let snapshot = &*snapshot;
        let response = pb::response(snapshot, String::new());
        let withheld = pb::Size::of(snapshot, &response).over_budget().map(|why| {
            let why = format!("version {} is not sent: it has {why}", snapshot.version());
            // Once per snapshot and filter, not once per client.
            tracing::error!(sets = ?filter, "{why}; clients keep the sets they have");
            metrics.count_withheld("over_budget");
            why
        });
        View {
            version: snapshot.version().to_owned(),
            sets: response.sets,
            rtpengine_sets: response.rtpengine_sets,
            domains: response.domains,
            base: String::new(),
            removed: Vec::new(),
            withheld,
        }
    }

    /// The delta from `base` to `snapshot`, both already [`under`] one
    /// client's filter and lists.
    fn delta(base: &Snapshot, snapshot: &Snapshot) -> Self {
        let response = pb::delta(base, snapshot);
        View {
            version: response.version_info,
            sets: response.sets,
            rtpengine_sets: response.rtpengine_sets,
            domains: response.domains,
            base: response.base_version,
            removed: response.removed_set_ids,
            withheld: None,
        }
    }

    /// This view as a response with `nonce`.
    fn response(&self, nonce: String) -> FeedResponse {
        FeedResponse {
            version_info: self.version.clone(),
            nonce,
            sets: self.sets.clone(),
            rtpengine_sets: self.rtpengine_sets.clone(),
            domains: self.domains.clone(),
            base_version: self.base.clone(),
            removed_set_ids: self.removed.clone(),
        }
    }
}

/// `snapshot` as a client with `want` sees it: only the lists it asked
/// for, and their version (a client that asked for none sees the sets
/// alone, as before lists existed), then only the sets it asked for.
fn under<'a>(snapshot: &'a Snapshot, want: &ViewKey) -> std::borrow::Cow<'a, Snapshot> {
    let (filter, lists) = want;
    let only = snapshot.with_only(lists);
    match filter {
        None => only,
        Some(ids) => std::borrow::Cow::Owned(only.filtered(ids)),
    }
}

/// Views of the current snapshot by what clients want (filter and lists),
/// and deltas onto it by want and base; cleared when the snapshot changes,
/// so it holds one snapshot's worth per distinct want and base. The
/// snapshots before it are kept, [`HISTORY`] of them, as the bases deltas
/// are made from.
#[derive(Debug, Default)]
struct Views {
    inner: Mutex<ViewsInner>,
}

#[derive(Debug, Default)]
struct ViewsInner {
    current: Option<Arc<Snapshot>>,
    full: HashMap<ViewKey, Arc<View>>,
    /// Only deltas whose base is in the history: their count is bounded by
    /// the history times the wants in use, whatever versions clients
    /// name.
    deltas: HashMap<(ViewKey, String), Arc<View>>,
    /// Past snapshots, oldest first.
    history: VecDeque<Arc<Snapshot>>,
}

impl ViewsInner {
    /// Makes `snapshot` the current one, if it is not yet.
    fn follow(&mut self, snapshot: &Arc<Snapshot>) {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.version() == snapshot.version())
        {
            return;
        }
        if let Some(old) = self.current.replace(Arc::clone(snapshot)) {
            self.history.push_back(old);
            if self.history.len() > HISTORY {
                self.history.pop_front();
            }
        }
        self.full.clear();
        self.deltas.clear();
    }
}

impl Views {
    fn get(
        &self,
        snapshot: &Arc<Snapshot>,
        want: &ViewKey,
        metrics: &crate::metrics::Metrics,
    ) -> Arc<View> {
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.follow(snapshot);
        Arc::clone(
            inner
                .full
                .entry(want.clone())
                .or_insert_with(|| Arc::new(View::of(snapshot, want, metrics))),
        )
    }

    /// The delta onto `snapshot` under `want` from the version `base` (a
    /// version under the same want), if that version is in the history.
    fn delta(&self, snapshot: &Arc<Snapshot>, want: &ViewKey, base: &str) -> Option<Arc<View>> {
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.follow(snapshot);
        let key = (want.clone(), base.to_owned());
        if let Some(view) = inner.deltas.get(&key) {
            return Some(Arc::clone(view));
        }
        let old = inner
            .history
            .iter()
            .rev()
            .map(|old| under(old, want))
            .find(|old| old.version() == base)?;
        let view = Arc::new(View::delta(&old, &under(snapshot, want)));
        inner.deltas.insert(key, Arc::clone(&view));
        Some(view)
    }
}

/// The default `--max-clients`: above the 1,000 Kamailios of the fan-out
/// benchmark, far below what would exhaust the feeder's memory or file
/// descriptors.
pub const DEFAULT_MAX_CLIENTS: usize = 1024;

/// The `dsfeed.v1.Feed` service.
#[derive(Debug, Clone)]
pub struct FeedService {
    shared: Arc<Shared>,
    views: Arc<Views>,
    token: Option<Arc<TokenFile>>,
    /// One permit per open stream: `--max-clients`.
    streams: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl FeedService {
    /// A service publishing `shared`'s snapshots to at most `max_clients`
    /// streams at once; streams end with UNAVAILABLE when `shutdown` is
    /// cancelled.
    pub fn new(
        shared: Arc<Shared>,
        token: Option<Arc<TokenFile>>,
        max_clients: usize,
        shutdown: CancellationToken,
    ) -> Self {
        FeedService {
            shared,
            views: Arc::default(),
            token,
            streams: Arc::new(Semaphore::new(max_clients)),
            shutdown,
        }
    }

    /// The tonic service, with requests capped at `MAX_REQUEST` and
    /// responses at what a client decodes.
    pub fn into_server(self) -> feed_server::FeedServer<Self> {
        feed_server::FeedServer::new(self)
            .max_decoding_message_size(MAX_REQUEST)
            .max_encoding_message_size(pb::MAX_RESPONSE_BYTES)
    }

    fn authorize(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(file) = &self.token else {
            return Ok(());
        };
        authorized(
            file,
            metadata.get("authorization").and_then(|v| v.to_str().ok()),
        )
    }
}

/// Checks an `authorization` header value against the token in `file`
/// (read again if it changed): the feed's streams and `/status` alike.
pub fn authorized(file: &TokenFile, header: Option<&str>) -> Result<(), Status> {
    let token = file.current().map_err(|_| {
        Status::unavailable("the feeder's token file cannot be used right now; see its log")
    })?;
    match header.and_then(|v| v.strip_prefix("Bearer ")) {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(Status::unauthenticated(
            "a valid bearer token is required (authorization: Bearer TOKEN)",
        )),
    }
}

#[tonic::async_trait]
impl feed_server::Feed for FeedService {
    type StreamStream = ReceiverStream<Result<FeedResponse, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<FeedRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        self.authorize(request.metadata())?;
        let permit = Arc::clone(&self.streams).try_acquire_owned().map_err(|_| {
            tracing::warn!("a stream was refused: --max-clients streams are open");
            Status::resource_exhausted(
                "the feeder serves no more clients (its --max-clients); try another replica or later",
            )
        })?;
        let peer = peer_of(&request);
        // Room for one response and the final status.
        let (tx, rx) = mpsc::channel(2);
        let session = Session {
            service: self.clone(),
            inbound: request.into_inner(),
            tx,
            _permit: permit,
        };
        tokio::spawn(session.run(peer));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn peer_of<T>(request: &Request<T>) -> String {
    if let Some(addr) = request.remote_addr() {
        return addr.to_string();
    }
    let pid = request
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .and_then(|cred| cred.pid());
    match pid {
        Some(pid) => format!("unix (pid {pid})"),
        None => "unix".into(),
    }
}

/// Compares without an early exit, so response times do not reveal how much
/// of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The response a stream is waiting to hear back about.
#[derive(Debug)]
struct Outstanding {
    nonce: String,
    version: String,
    /// It was a delta: a NACK may only mean the client lacks its base.
    delta: bool,
}

/// One client's stream.
struct Session {
    service: FeedService,
    inbound: Streaming<FeedRequest>,
    tx: mpsc::Sender<Result<FeedResponse, Status>>,
    /// Held for as long as the stream is served.
    _permit: OwnedSemaphorePermit,
}

impl Session {
    async fn run(mut self, peer: String) {
        let shutdown = self.service.shutdown.clone();
        let first = tokio::select! {
            first = tokio::time::timeout(FIRST_REQUEST, self.inbound.message()) => first,
            () = shutdown.cancelled() => return self.end(Status::unavailable(SHUTTING_DOWN)),
        };
        let first = match first {
            Ok(Ok(Some(first))) => first,
            Ok(Ok(None) | Err(_)) => return,
            Err(_) => {
                return self.end(Status::deadline_exceeded(format!(
                    "no first request within {} s",
                    FIRST_REQUEST.as_secs()
                )));
            }
        };
        let Some(node) = first.node.filter(|n| !n.id.is_empty()) else {
            return self.end(Status::invalid_argument(
                "the first request must name the node (node.id)",
            ));
        };
        // The node id becomes a metric label and a log field.
        if let Err(why) = pb::check_node_id(&node.id) {
            return self.end(Status::invalid_argument(why));
        }
        if first.set_ids.len() > pb::MAX_SETS {
            return self.end(Status::invalid_argument(format!(
                "the first request asks for {} set ids, more than {}",
                first.set_ids.len(),
                pb::MAX_SETS
            )));
        }
        let filter = pb::filter(&first.set_ids);
        let lists = pb::lists(&first.lists);
        let client = self.service.shared.clients.register(ClientStatus::new(
            &node.id,
            &node.user_agent,
            peer,
            filter.as_ref().map(|ids| ids.iter().copied().collect()),
            &first.version_info,
        ));
        client.update(|c| c.deltas = first.accept_deltas);
        tracing::info!(node = %node.id, sets = ?filter, version = %first.version_info, deltas = first.accept_deltas, "client connected");
        let end = self
            .serve(
                &client,
                &node.id,
                &(filter, lists),
                first.version_info,
                first.accept_deltas,
            )
            .await;
        tracing::info!(node = %node.id, "client disconnected");
        drop(client);
        let shared = &self.service.shared;
        if !shared.clients.list().iter().any(|c| c.node == node.id) {
            // Its series go with its last stream: node ids are chosen by
            // clients, and a label set that only grows is a memory leak.
            shared.metrics.forget_node(&node.id);
        }
        if let Some(status) = end {
            self.end(status);
        }
    }

    /// Sends the newest view whenever it differs from what the client holds,
    /// with at most [`WINDOW`] responses unanswered; returns the status to
    /// end with, if any.
    async fn serve(
        &mut self,
        client: &ClientHandle,
        node: &str,
        want: &ViewKey,
        mut applied: String,
        deltas: bool,
    ) -> Option<Status> {
        let shared = Arc::clone(&self.service.shared);
        let shutdown = self.service.shutdown.clone();
        let mut snapshots: SnapshotRx = shared.snapshots.clone();
        // Unanswered responses, oldest first.
        let mut outstanding: VecDeque<Outstanding> = VecDeque::with_capacity(WINDOW);
        // A response the client answered "retrying": it keeps it and may
        // still ACK it, and it is not sent again.
        let mut retrying: Option<Outstanding> = None;
        // A version the client refused is not offered again until the truth
        // moves on.
        let mut rejected: Option<String> = None;
        // The client lacked the base of a delta: the next response is full.
        let mut full_next = false;
        let mut sent = 0u64;
        loop {
            if outstanding.len() < WINDOW {
                let current = snapshots.borrow_and_update().clone();
                if let Some(snapshot) = current {
                    let view = self.service.views.get(&snapshot, want, &shared.metrics);
                    client.update(|c| c.withheld = view.withheld.clone());
                    let newest_sent = outstanding.back().map(|o| &o.version);
                    if view.withheld.is_none()
                        && view.version != applied
                        && rejected.as_ref() != Some(&view.version)
                        && retrying.as_ref().map(|r| &r.version) != Some(&view.version)
                        && newest_sent != Some(&view.version)
                    {
                        sent += 1;
                        let nonce = format!("{}-{sent}", client.id());
                        // The newest version the client holds: the last one
                        // sent, which it has even if not applied yet, or the
                        // one it applied.
                        let base = newest_sent.unwrap_or(&applied);
                        let delta = (deltas && !full_next && !base.is_empty())
                            .then(|| self.service.views.delta(&snapshot, want, base))
                            .flatten();
                        full_next = false;
                        if let Some(delta) = &delta {
                            tracing::debug!(%node, version = %delta.version, base = %delta.base, sets = delta.sets.len(), removed = delta.removed.len(), "sending a delta");
                        }
                        let response = delta.as_ref().unwrap_or(&view).response(nonce.clone());
                        let kind = if delta.is_some() { "delta" } else { "full" };
                        shared
                            .metrics
                            .count_response(kind, pb::encoded_len(&response));
                        if self.tx.send(Ok(response)).await.is_err() {
                            return None;
                        }
                        client.update(|c| c.sent_version = Some(view.version.clone()));
                        outstanding.push_back(Outstanding {
                            nonce,
                            version: view.version.clone(),
                            delta: delta.is_some(),
                        });
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return Some(Status::unavailable(SHUTTING_DOWN)),
                () = self.tx.closed() => return None,
                changed = snapshots.changed(), if outstanding.len() < WINDOW => {
                    if changed.is_err() {
                        return Some(Status::unavailable(SHUTTING_DOWN));
                    }
                }
                message = self.inbound.message() => match message {
                    Ok(Some(reply)) => {
                        let nonce = reply.response_nonce.as_str();
                        let position = outstanding.iter().position(|o| o.nonce == nonce);
                        // Answered before a newer response that is still
                        // unanswered: the client saw the newer one first.
                        let overtaken = position.is_some_and(|p| p + 1 < outstanding.len());
                        let Some(answered) = position
                            .and_then(|p| outstanding.remove(p))
                            .or_else(|| retrying.take_if(|r| r.nonce == nonce))
                        else {
                            tracing::debug!(%nonce, "ignoring a reply to no outstanding response");
                            continue;
                        };
                        applied = reply.version_info;
                        match reply.error_detail {
                            Some(error) if overtaken && !error.retrying => {
                                tracing::debug!(%node, version = %answered.version, error = %error.message, "client skipped a snapshot a newer one overtook");
                            }
                            Some(error) if answered.delta && !error.retrying => {
                                tracing::debug!(%node, version = %answered.version, error = %error.message, "client refused a delta; sending the full snapshot");
                                full_next = true;
                            }
                            Some(error) if error.retrying => {
                                tracing::warn!(%node, version = %answered.version, error = %error.message, "client could not apply a snapshot yet; it keeps retrying");
                                shared.metrics.count_retry(node);
                                client.update(|c| c.retry(&applied, &answered.version, &error.message));
                                retrying = Some(answered);
                            }
                            Some(error) => {
                                tracing::warn!(%node, version = %answered.version, error = %error.message, "client refused a snapshot");
                                shared.metrics.count_nack(node);
                                client.update(|c| c.nack(&applied, &error.message));
                                rejected = Some(answered.version);
                            }
                            None => {
                                shared.metrics.count_ack(node);
                                client.update(|c| c.ack(&applied));
                                rejected = None;
                                retrying = None;
                            }
                        }
                    }
                    // The client closed its side: it can ACK nothing more.
                    Ok(None) => return None,
                    Err(status) => {
                        tracing::debug!(%status, "stream broke");
                        return None;
                    }
                },
            }
        }
    }

    fn end(&self, status: Status) {
        // If the client stopped reading the channel may be full; it is
        // going away anyway.
        let _ = self.tx.try_send(Err(status));
    }
}

/// One listener's server, run until the feed stops.
type Serving = Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// A bound listener, ready to serve.
enum Bound {
    Unix {
        path: PathBuf,
        listener: UnixListener,
    },
    Tcp {
        addr: String,
        incoming: TcpIncoming,
    },
}

/// Every listener of the feed, bound at start so that an unusable address
/// fails the feeder at once.
pub struct Server {
    listeners: Vec<Bound>,
    /// The TLS settings with the files they came from, for error messages.
    tls: Option<(ServerTlsConfig, PathBuf, PathBuf)>,
    token: Option<Arc<TokenFile>>,
    max_clients: usize,
}

impl Server {
    /// The feed's token file, which `/status` asks for too.
    pub fn token(&self) -> Option<Arc<TokenFile>> {
        self.token.clone()
    }

    /// Reads the TLS files and the token and binds every address.
    pub async fn bind(args: &ServeArgs) -> Result<Self, Error> {
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                let identity = Identity::from_pem(read(cert).await?, read(key).await?);
                let mut tls = ServerTlsConfig::new()
                    .identity(identity)
                    .timeout(Duration::from_secs(10));
                if let Some(ca) = &args.tls_client_ca {
                    tls = tls.client_ca_root(Certificate::from_pem(read(ca).await?));
                }
                // Building a server with it parses the certificate and key,
                // so that an unusable pair fails at start, naming the files.
                tonic::transport::Server::builder()
                    .tls_config(tls.clone())
                    .map_err(|source| tls_error(cert, key, source))?;
                Some((tls, cert.clone(), key.clone()))
            }
            _ => None,
        };
        let token = match &args.token_file {
            Some(path) => Some(Arc::new(TokenFile::open(path)?)),
            None => None,
        };
        if tls.is_some() && args.tls_client_ca.is_none() && token.is_none() {
            for open in args
                .listen
                .iter()
                .filter(|l| !matches!(l, Endpoint::Unix(_)))
            {
                tracing::warn!(
                    listen = %open,
                    "the feed on {open} is open to every client that can reach it: TLS hides it \
                     from the network, but without --tls-client-ca or --token-file it asks \
                     nobody who they are"
                );
            }
        }
        let mut listeners = Vec::new();
        for listen in &args.listen {
            let bind_err = |source| Error::Listen {
                addr: listen.to_string(),
                source,
            };
            listeners.push(match listen {
                Endpoint::Unix(path) => Bound::Unix {
                    path: path.clone(),
                    listener: bind_unix(path).map_err(bind_err)?,
                },
                net => Bound::Tcp {
                    addr: listen.to_string(),
                    // Checked when the flags were read.
                    incoming: TcpIncoming::bind(net.socket_addr().map_err(|e| {
                        bind_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                    })?)
                    .map_err(bind_err)?
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(KEEPALIVE)),
                },
            });
        }
        Ok(Server {
            listeners,
            tls,
            token,
            max_clients: args.max_clients,
        })
    }

    /// Serves until `shutdown` resolves or a listener fails; on shutdown
    /// every stream ends with UNAVAILABLE and the unix sockets are removed.
    pub async fn run(
        self,
        shared: Arc<Shared>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let stop = CancellationToken::new();
        tokio::spawn(Arc::clone(&shared).track_publications(stop.clone()));
        let service = FeedService::new(
            Arc::clone(&shared),
            self.token.clone(),
            self.max_clients,
            stop.clone(),
        );
        let mut tasks: JoinSet<Result<(), Error>> = JoinSet::new();
        let mut sockets = Vec::new();
        for listener in self.listeners {
            let mut builder = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(KEEPALIVE))
                .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
            let service = service.clone().into_server();
            let stopped = stop.clone().cancelled_owned();
            // The two kinds of listener serve different streams; boxed, one
            // task shape serves both.
            let (addr, serving): (String, Serving) = match listener {
                Bound::Unix { path, listener } => {
                    tracing::info!(path = %path.display(), "serving the feed on a unix socket");
                    let addr = format!("unix:{}", path.display());
                    sockets.push(path);
                    let incoming = UnixListenerStream::new(listener);
                    let router = builder.add_service(service);
                    (
                        addr,
                        Box::pin(router.serve_with_incoming_shutdown(incoming, stopped)),
                    )
                }
                Bound::Tcp { addr, incoming } => {
                    if let Some((tls, cert, key)) = &self.tls {
                        builder = builder
                            .tls_config(tls.clone())
                            .map_err(|source| tls_error(cert, key, source))?;
                    }
                    tracing::info!(%addr, tls = self.tls.is_some(), "serving the feed");
                    let router = builder.add_service(service);
                    (
                        addr,
                        Box::pin(router.serve_with_incoming_shutdown(incoming, stopped)),
                    )
                }
            };
            tasks.spawn(async move {
                serving
                    .await
                    .map_err(|source| Error::Serve { addr, source })
            });
        }

        let result = tokio::select! {
            () = shutdown => Ok(()),
            failed = first_failure(&mut tasks) => Err(failed),
        };
        tracing::info!("closing every stream");
        stop.cancel();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("some clients did not close in time; leaving anyway");
        }
        for path in sockets {
            let _ = std::fs::remove_file(path);
        }
        result
    }
}

/// The first server task's error; never resolves while all run.
async fn first_failure(tasks: &mut JoinSet<Result<(), Error>>) -> Error {
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return err,
            Err(join) => return Error::from_join(join, "server"),
        }
    }
    std::future::pending().await
}

/// Binds a unix socket with mode 0660, replacing a socket left by a previous
/// run but never a live one or another kind of file. The socket is bound in
/// a private directory beside `path`, given its mode there and renamed into
/// place, so at `path` it never exists with the mode the umask gave it.
fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process is serving on this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let private = dir.join(format!(".dsfeed-bind-{:016x}", rand::random::<u64>()));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let bound = (|| {
        let staged = private.join("s");
        let listener = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o660))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound
}

fn tls_error(cert: &Path, key: &Path, source: tonic::transport::Error) -> Error {
    Error::Tls {
        what: format!(
            "certificate {} or key {} is unusable",
            cert.display(),
            key.display()
        ),
        source,
    }
}

async fn read(path: &Path) -> Result<Vec<u8>, Error> {
    tokio::fs::read(path).await.map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn views_are_shared_per_filter_and_snapshot() {
        use dsfeed_model::{Destination, SetMap};
        let snapshot = |host: &str| {
            Arc::new(Snapshot::new(SetMap::from([
                (1, vec![Destination::parse_target(host).unwrap()]),
                (2, vec![]),
            ])))
        };
        let views = Views::default();
        let first = snapshot("10.0.0.1");
        let one: ViewKey = (Some([1].into()), Lists::new());
        let all_sets: ViewKey = (None, Lists::new());
        let metrics = crate::metrics::Metrics::new();
        let a = views.get(&first, &one, &metrics);
        assert!(Arc::ptr_eq(&a, &views.get(&first, &one, &metrics)));
        assert_eq!(
            views.get(&first, &all_sets, &metrics).version,
            first.version()
        );
        assert_eq!(a.sets.len(), 1);
        assert!(a.withheld.is_none());
        let second = snapshot("10.0.0.2");
        let b = views.get(&second, &one, &metrics);
        assert_ne!(a.version, b.version);
        assert_eq!(views.inner.lock().unwrap().full.len(), 1);

        // Deltas onto the second snapshot, from a version of the history
        // under the same filter, built once.
        let delta = views.delta(&second, &one, &a.version).unwrap();
        assert_eq!(
            (delta.base.as_str(), delta.sets.len()),
            (a.version.as_str(), 1)
        );
        assert!(Arc::ptr_eq(
            &delta,
            &views.delta(&second, &one, &a.version).unwrap()
        ));
        let all = views.delta(&second, &all_sets, first.version()).unwrap();
        assert_eq!(all.sets.len(), 1, "set 2 did not change");
        assert!(views.delta(&second, &one, "unknown").is_none());
        assert!(
            views.delta(&second, &all_sets, &a.version).is_none(),
            "another filter's version"
        );
    }

    #[test]
    fn the_history_is_short() {
        use dsfeed_model::{Destination, SetMap};
        let views = Views::default();
        let metrics = crate::metrics::Metrics::new();
        let all_sets: ViewKey = (None, Lists::new());
        let snapshots: Vec<Arc<Snapshot>> = (0..=HISTORY + 1)
            .map(|i| {
                let dest = Destination::parse_target(&format!("10.0.0.{i}")).unwrap();
                Arc::new(Snapshot::new(SetMap::from([(1, vec![dest])])))
            })
            .collect();
        for snapshot in &snapshots {
            views.get(snapshot, &all_sets, &metrics);
        }
        let newest = snapshots.last().unwrap();
        assert!(
            views
                .delta(newest, &all_sets, snapshots[0].version())
                .is_none()
        );
        assert!(
            views
                .delta(newest, &all_sets, snapshots[1].version())
                .is_some()
        );
    }

    #[test]
    fn a_view_over_the_client_budget_is_withheld_and_counted() {
        use dsfeed_model::{Destination, SetMap};
        let dests = (0..=pb::MAX_DESTINATIONS)
            .map(|i| {
                Destination::parse_target(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
                    .unwrap()
            })
            .collect();
        let big = Arc::new(Snapshot::new(SetMap::from([(1, dests)])));
        let metrics = crate::metrics::Metrics::new();
        let view = Views::default().get(&big, &(None, Lists::new()), &metrics);
        let why = view.withheld.as_deref().unwrap();
        assert!(
            why.contains("50001 destinations") && why.contains(big.version()),
            "{why}"
        );
        let text = metrics.render(None, &[]);
        assert!(
            text.contains("dsfeed_responses_withheld_total{reason=\"over_budget\"} 1"),
            "{text}"
        );
    }
}
