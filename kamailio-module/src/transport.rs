//! Opening the gRPC channel to the feeder: a sidecar's unix socket or a
//! feeder service over TCP, with TLS and a bearer token when configured.
//!
//! The feed process must stay one thread (it is a Kamailio process), so the
//! connector resolves host names itself on the calling thread instead of
//! using hyper's resolver, which runs `getaddrinfo` on a blocking-pool
//! thread.

use std::net::ToSocketAddrs;
use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use dsfeed_model::Endpoint as FeedEndpoint;

use crate::config::{Config, TlsFiles, Token, check_token};
use crate::error::SessionError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The feeder is silent while nothing changes, so HTTP/2 pings are what
/// notice a dead feeder or a silently dropped connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the configured feeder.
pub async fn connect(config: &Config) -> Result<Channel, SessionError> {
    let endpoint = match &config.feeder {
        // The authority is only a header value for a unix socket.
        FeedEndpoint::Unix(_) => Endpoint::from_static("http://localhost"),
        net => {
            let scheme = if net.tls() { "https" } else { "http" };
            let authority = net.authority().unwrap_or_default();
            Endpoint::from_shared(format!("{scheme}://{authority}"))
                .map_err(SessionError::Connect)?
        }
    }
    .connect_timeout(CONNECT_TIMEOUT)
    .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
    .keep_alive_timeout(KEEPALIVE_TIMEOUT)
    .keep_alive_while_idle(true);
    let endpoint = match &config.tls {
        Some(files) => endpoint
            .tls_config(tls_config(files)?)
            .map_err(SessionError::Tls)?,
        None => endpoint,
    };

    let feeder = config.feeder.clone();
    let connector = tower::service_fn(move |_: Uri| {
        let feeder = feeder.clone();
        async move {
            match feeder {
                FeedEndpoint::Unix(path) => {
                    Ok(Io::Unix(TokioIo::new(UnixStream::connect(path).await?)))
                }
                FeedEndpoint::Net { host, port, .. } => connect_tcp(&host, port).await.map(Io::Tcp),
            }
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(SessionError::Connect)
}

/// Resolves `host` here (blocking this thread briefly, which only delays
/// this process's own work) and tries each address in turn.
async fn connect_tcp(host: &str, port: u16) -> std::io::Result<TokioIo<TcpStream>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let mut last = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{host} has no address"),
    );
    for addr in (bare, port).to_socket_addrs()? {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(TokioIo::new(stream));
            }
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// Either kind of stream, so one connector serves both address kinds.
enum Io {
    Unix(TokioIo<UnixStream>),
    Tcp(TokioIo<TcpStream>),
}

macro_rules! forward {
    ($self:ident, $io:ident => $call:expr) => {
        match $self.get_mut() {
            Io::Unix($io) => {
                let $io = std::pin::Pin::new($io);
                $call
            }
            Io::Tcp($io) => {
                let $io = std::pin::Pin::new($io);
                $call
            }
        }
    };
}

impl hyper::rt::Read for Io {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        forward!(self, io => io.poll_read(cx, buf))
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        forward!(self, io => io.poll_write(cx, buf))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        forward!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        forward!(self, io => io.poll_shutdown(cx))
    }
}

fn tls_config(files: &TlsFiles) -> Result<ClientTlsConfig, SessionError> {
    let mut tls = ClientTlsConfig::new();
    tls = match &files.ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read("tls_ca", ca)?)),
        None => tls.with_native_roots(),
    };
    if let Some((cert, key)) = &files.identity {
        tls = tls.identity(Identity::from_pem(
            read("tls_cert", cert)?,
            read("tls_key", key)?,
        ));
    }
    if let Some(domain) = &files.domain {
        tls = tls.domain_name(domain.clone());
    }
    Ok(tls)
}

/// The `authorization` value for this connect, the token file re-read so a
/// rotated token takes effect.
pub fn bearer(token: Option<&Token>) -> Result<Option<MetadataValue<Ascii>>, SessionError> {
    let token = match token {
        None => return Ok(None),
        Some(Token::Literal(token)) => token.clone(),
        Some(Token::File(path)) => {
            let text = String::from_utf8_lossy(&read("token_file", path)?).into_owned();
            check_token(&text).map_err(SessionError::Token)?
        }
    };
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| SessionError::Token(crate::error::ConfigError::Token))?;
    Ok(Some(value))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, SessionError> {
    std::fs::read(path).map_err(|source| SessionError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}
