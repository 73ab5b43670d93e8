//! A small HTTP/1.1 client on hyper, for the feeder's `--http` endpoints and
//! anything else a test asks over HTTP.

use std::net::SocketAddr;

use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// One `GET path` to `addr`: the status code and the body as text.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let response = fetch(addr, path, None).await?;
    Ok((response.status, response.body))
}

/// A feeder's `/status` page; `None` while it does not answer (starting,
/// stopped).
pub async fn status(addr: SocketAddr) -> Option<serde_json::Value> {
    match get(addr, "/status").await {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// A whole response, as the membership and OpenAPI tests read it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The `content-type` header, if any.
    pub content_type: Option<String>,
    /// Every header, names in lower case.
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: String,
}

impl Response {
    /// The body as JSON; panics, showing it, when it is not.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.body))
    }
}

/// One `GET path` to `addr`, with `authorization: Bearer TOKEN` when a
/// token is given.
pub async fn fetch(addr: SocketAddr, path: &str, token: Option<&str>) -> std::io::Result<Response> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let mut request = Request::get(path).header(hyper::header::HOST, addr.to_string());
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(std::io::Error::other)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok(Response {
        status,
        content_type,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
