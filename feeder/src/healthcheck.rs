//! `dsfeed healthcheck`: one `GET /healthz` to a running feeder, for the
//! image's `HEALTHCHECK`. The runtime image holds no shell and no curl, so
//! the feeder's own binary asks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Longer than any healthy answer takes; Docker's own default timeout is
/// 30 s, so this one decides first.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The most of the answer read: the status line is all that matters.
const MAX_REPLY: u64 = 4096;

/// Asks `addr`'s `/healthz`; `Ok` with the status line when it answers 200,
/// `Err` saying what happened otherwise. A wildcard address (`0.0.0.0`,
/// `[::]`), as `--http` is often given, is asked on loopback.
pub async fn check(addr: SocketAddr) -> Result<String, String> {
    let addr = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    tokio::time::timeout(TIMEOUT, ask(addr))
        .await
        .map_err(|_| format!("http://{addr}/healthz did not answer within {TIMEOUT:?}"))?
}

async fn ask(addr: SocketAddr) -> Result<String, String> {
    let url = format!("http://{addr}/healthz");
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut reply = Vec::new();
    stream
        .take(MAX_REPLY)
        .read_to_end(&mut reply)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&reply);
    let status = text.lines().next().unwrap_or_default().trim().to_owned();
    match status.split_whitespace().nth(1) {
        Some("200") => Ok(status),
        _ => Err(format!("{url} answered {status:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(reply: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0; 1024];
            let _ = conn.read(&mut buf).await.unwrap();
            conn.write_all(reply.as_bytes()).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn only_a_200_is_healthy() {
        let ok = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").await;
        assert_eq!(check(ok).await.unwrap(), "HTTP/1.1 200 OK");
        let sick = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let err = check(sick).await.unwrap_err();
        assert!(err.contains("503"), "{err}");
    }

    #[tokio::test]
    async fn a_wildcard_address_is_asked_on_loopback_and_a_closed_port_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = check(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port))
            .await
            .unwrap_err();
        assert!(
            err.contains(&format!("http://127.0.0.1:{port}/healthz")),
            "{err}"
        );
    }
}
