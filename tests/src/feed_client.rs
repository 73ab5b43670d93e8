//! A feed client for tests: the client's end of one `dsfeed.v1` stream,
//! answering each response as the test says.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use dsfeed_model::pb::{self, Answer, FeedRequest, FeedResponse, feed_client::FeedClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::{Status, Streaming};

use crate::PATIENCE;

/// A status's code, message and causes, as one line.
pub fn explain(status: &Status) -> String {
    let text = format!("{:?}: {}", status.code(), status.message());
    match std::error::Error::source(status) {
        Some(cause) => format!("{text}: {}", dsfeed_model::error_chain(cause)),
        None => text,
    }
}

pub fn unix_endpoint(path: &Path) -> Endpoint {
    Endpoint::from_shared(format!("unix://{}", path.display())).unwrap()
}

pub fn tcp_endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}")).unwrap()
}

/// The first request of a stream.
pub fn hello(node: &str, sets: &[u32], version: &str) -> FeedRequest {
    pb::hello(node, "feed-test", sets, version)
}

/// A client's end of one feed stream.
pub struct Stream {
    tx: mpsc::Sender<FeedRequest>,
    inbound: Streaming<FeedResponse>,
}

impl Stream {
    /// Opens a stream and sends `first`; `Err` carries whatever refused it.
    pub async fn open(
        endpoint: Endpoint,
        token: Option<&str>,
        first: FeedRequest,
    ) -> Result<Stream, String> {
        let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
        let mut client = FeedClient::new(channel);
        let (tx, rx) = mpsc::channel(4);
        tx.send(first).await.unwrap();
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let inbound = client
            .stream(request)
            .await
            .map_err(|s| explain(&s))?
            .into_inner();
        Ok(Stream { tx, inbound })
    }

    pub async fn connect(endpoint: Endpoint, first: FeedRequest) -> Stream {
        Stream::open(endpoint, None, first).await.unwrap()
    }

    /// The next message or the status the stream ended with.
    ///
    /// Use [`explain`] for the text of a transport failure.
    pub async fn next_result(&mut self) -> Result<Option<FeedResponse>, Status> {
        tokio::time::timeout(PATIENCE, self.inbound.message())
            .await
            .expect("no message in time")
    }

    pub async fn next(&mut self) -> FeedResponse {
        self.next_result()
            .await
            .expect("a response, not an error")
            .expect("a response, not the end")
    }

    /// Whether nothing arrives within `window`.
    pub async fn quiet_for(&mut self, window: Duration) -> bool {
        tokio::time::timeout(window, self.inbound.message())
            .await
            .is_err()
    }

    pub async fn ack(&self, response: &FeedResponse) {
        let answer = pb::answer(&response.nonce, &response.version_info, Answer::Ack);
        self.tx.send(answer).await.unwrap();
    }

    pub async fn nack(&self, response: &FeedResponse, kept: &str, error: &str) {
        let answer = pb::answer(&response.nonce, kept, Answer::Nack(error.into()));
        self.tx.send(answer).await.unwrap();
    }

    /// Answers `response` "retrying": valid, not applied yet, `kept` stays.
    pub async fn retrying(&self, response: &FeedResponse, kept: &str, error: &str) {
        let answer = pb::answer(&response.nonce, kept, Answer::Retrying(error.into()));
        self.tx.send(answer).await.unwrap();
    }

    /// Receives the next response and ACKs it.
    pub async fn next_acked(&mut self) -> FeedResponse {
        let response = self.next().await;
        self.ack(&response).await;
        response
    }
}
