//! A scriptable feeder: a real tonic server of the `dsfeed.v1.Feed` service
//! on a unix socket (or TCP), started inside the test. It records every
//! request the module sends, sends the latest snapshot to a new stream
//! whose hello names another version (as the real feeder does), and lets
//! the test push responses, drop the stream or stop serving.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dsfeed_model::pb;
use dsfeed_model::pb::feed_server::{Feed, FeedServer};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::ServerTlsConfig;
use tonic::{Request, Response, Status, Streaming};

use crate::wait_until;

/// One request the module sent, with the number of the stream it came on
/// (1 for the first connection).
#[derive(Debug, Clone)]
pub struct Received {
    pub stream: usize,
    pub request: pb::FeedRequest,
    /// The `authorization` metadata of that stream.
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Shared {
    latest: Option<pb::FeedResponse>,
    current: Option<mpsc::UnboundedSender<Result<pb::FeedResponse, Status>>>,
    streams: usize,
    received: Vec<Received>,
    token: Option<String>,
}

#[derive(Clone, Default)]
struct Service(Arc<Mutex<Shared>>);

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::FeedResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Feed for Service {
    type StreamStream = ResponseStream;

    async fn stream(
        &self,
        request: Request<Streaming<pb::FeedRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (tx, rx) = mpsc::unbounded_channel();
        let number = {
            let mut shared = self.0.lock().unwrap();
            if let Some(token) = &shared.token
                && authorization.as_deref() != Some(&format!("Bearer {token}"))
            {
                return Err(Status::unauthenticated("bad or missing bearer token"));
            }
            shared.streams += 1;
            shared.current = Some(tx.clone());
            shared.streams
        };
        let mut inbound = request.into_inner();
        let shared = self.0.clone();
        tokio::spawn(async move {
            let mut first = true;
            while let Some(Ok(request)) = inbound.next().await {
                let mut state = shared.lock().unwrap();
                if first {
                    first = false;
                    if let Some(latest) = &state.latest
                        && latest.version_info != request.version_info
                    {
                        let _ = tx.send(Ok(latest.clone()));
                    }
                }
                state.received.push(Received {
                    stream: number,
                    request,
                    authorization: authorization.clone(),
                });
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

pub struct TestFeeder {
    service: Service,
    /// The unix socket served (empty for TCP).
    pub socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestFeeder {
    /// Serves on a unix socket at `socket`.
    pub async fn unix(socket: &Path) -> TestFeeder {
        Self::unix_with(socket, Service::default()).await
    }

    async fn unix_with(socket: &Path, service: Service) -> TestFeeder {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).expect("cannot bind the feeder socket");
        let (stop, stopped) = oneshot::channel();
        let server = tonic::transport::Server::builder()
            .add_service(FeedServer::new(service.clone()))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stopped.await;
            });
        let task = tokio::spawn(async move {
            server.await.expect("feeder server failed");
        });
        TestFeeder {
            service,
            socket: socket.to_owned(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Serves plain HTTP/2 on 127.0.0.1; returns the feeder and its port.
    pub async fn tcp() -> (TestFeeder, u16) {
        Self::tcp_with(None).await
    }

    /// Serves HTTP/2 over TLS on 127.0.0.1 (mutual TLS when `tls` asks for
    /// client certificates); returns the feeder and its port.
    pub async fn tls(tls: ServerTlsConfig) -> (TestFeeder, u16) {
        Self::tcp_with(Some(tls)).await
    }

    async fn tcp_with(tls: Option<ServerTlsConfig>) -> (TestFeeder, u16) {
        let service = Service::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).expect("a valid server TLS config");
        }
        let server = builder
            .add_service(FeedServer::new(service.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            });
        let task = tokio::spawn(async move {
            server.await.expect("feeder server failed");
        });
        let feeder = TestFeeder {
            service,
            socket: PathBuf::new(),
            stop: Some(stop),
            task: Some(task),
        };
        (feeder, port)
    }

    /// `unix:SOCKET`: the module's `feeder` parameter for this feeder.
    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// Requires `authorization: Bearer TOKEN` on every stream.
    pub fn require_token(&self, token: &str) {
        self.service.0.lock().unwrap().token = Some(token.to_owned());
    }

    /// Makes `response` the latest snapshot and sends it on the current
    /// stream, if any.
    pub fn publish(&self, response: pb::FeedResponse) {
        let mut shared = self.service.0.lock().unwrap();
        shared.latest = Some(response.clone());
        if let Some(current) = &shared.current {
            let _ = current.send(Ok(response));
        }
    }

    /// Sends `response` on the current stream without making it the latest
    /// (for invalid snapshots).
    pub fn send_only(&self, response: pb::FeedResponse) {
        let shared = self.service.0.lock().unwrap();
        if let Some(current) = &shared.current {
            let _ = current.send(Ok(response));
        }
    }

    /// Ends the current stream with an error; the module must reconnect.
    pub fn drop_stream(&self) {
        let mut shared = self.service.0.lock().unwrap();
        if let Some(current) = shared.current.take() {
            let _ = current.send(Err(Status::unavailable("feeder going away")));
        }
    }

    pub fn streams(&self) -> usize {
        self.service.0.lock().unwrap().streams
    }

    pub fn received(&self) -> Vec<Received> {
        self.service.0.lock().unwrap().received.clone()
    }

    /// The answer (ACK or NACK) to the response with `nonce`, if any.
    fn answer_to(&self, nonce: &str) -> Option<pb::FeedRequest> {
        self.received()
            .into_iter()
            .map(|r| r.request)
            .find(|r| r.response_nonce == nonce)
    }

    /// Waits for the answer to `nonce`.
    pub async fn wait_answer(&self, nonce: &str, timeout: Duration) -> pb::FeedRequest {
        let what = format!("the answer to nonce {nonce}");
        wait_until(&what, timeout, || async {
            self.answer_to(nonce)
                .ok_or_else(|| format!("{:#?}", self.received()))
        })
        .await
    }

    /// Waits for an answer to `nonce` that `check` accepts (a response
    /// answered "retrying" is answered again later).
    pub async fn wait_answer_where(
        &self,
        nonce: &str,
        what: &str,
        check: impl Fn(&pb::FeedRequest) -> bool,
    ) -> pb::FeedRequest {
        let what = format!("an answer to nonce {nonce} with {what}");
        wait_until(&what, crate::module::WAIT, || async {
            self.received()
                .into_iter()
                .map(|r| r.request)
                .find(|r| r.response_nonce == nonce && check(r))
                .ok_or_else(|| format!("{:#?}", self.received()))
        })
        .await
    }

    /// Every answer to `nonce`, in order.
    pub fn answers_to(&self, nonce: &str) -> Vec<pb::FeedRequest> {
        self.received()
            .into_iter()
            .map(|r| r.request)
            .filter(|r| r.response_nonce == nonce)
            .collect()
    }

    /// Waits until `n` streams were opened.
    pub async fn wait_streams(&self, n: usize, timeout: Duration) {
        wait_until(&format!("{n} streams"), timeout, || async {
            let streams = self.streams();
            if streams >= n {
                Ok(())
            } else {
                Err(format!("{streams} streams"))
            }
        })
        .await;
    }

    /// Stops serving (the socket goes away); the recorded state survives
    /// into `restart`.
    pub async fn stop(&mut self) {
        self.drop_stream();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        if !self.socket.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.socket);
        }
    }

    /// Serves again on the same socket with the same state.
    pub async fn restart(&mut self) {
        self.stop().await;
        let again = Self::unix_with(&self.socket, self.service.clone()).await;
        *self = again;
    }
}

impl Drop for TestFeeder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A destination as (uri, flags, priority).
pub type Dest<'a> = (&'a str, u32, u32);

/// A response with `sets` as (id, destinations).
pub fn response(version: &str, nonce: &str, sets: &[(u32, &[Dest<'_>])]) -> pb::FeedResponse {
    pb::FeedResponse {
        version_info: version.into(),
        nonce: nonce.into(),
        sets: sets
            .iter()
            .map(|(id, dests)| pb::Set {
                id: *id,
                destinations: dests
                    .iter()
                    .map(|(uri, flags, priority)| pb::WireDestination {
                        uri: (*uri).into(),
                        flags: *flags,
                        priority: *priority,
                        attrs: String::new(),
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    }
}
