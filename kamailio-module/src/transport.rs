//! Opening the gRPC channel to the feeder: a sidecar's unix socket or a
//! feeder service over TCP, with TLS and a bearer token when configured.
//!
//! The feed process must stay one thread (it is a Kamailio process), so the
//! connector resolves host names itself instead of using hyper's resolver,
//! which runs `getaddrinfo` on a blocking-pool thread; and not with a
//! blocking `getaddrinfo` either, which can hold the process for minutes
//! (search domains × attempts × timeouts) while it should keep its list
//! in place. It reads `/etc/hosts` and `/etc/resolv.conf` as glibc does
//! and asks the name servers over async UDP, all within [`RESOLVE_TIMEOUT`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use dsfeed_model::dns::{self, Answer, ResolvConf};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UdpSocket, UnixStream};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use dsfeed_model::Endpoint as FeedEndpoint;

use crate::config::{Config, TlsFiles, Token, check_token};
use crate::error::SessionError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a name lookup may take, every candidate name, attempt and
/// name server included.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The feeder is silent while nothing changes, so HTTP/2 pings are what
/// notice a dead feeder or a silently dropped connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// One address the module may stream from: a configured feeder, or one of
/// the addresses a feeder's name resolves to (a headless Service's pods),
/// each of which counts as a feeder of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The configured feeder: its scheme, and the name TLS verifies.
    pub feeder: FeedEndpoint,
    /// The address to connect to; `None` for a unix socket.
    pub addr: Option<SocketAddr>,
}

impl std::fmt::Display for Candidate {
    /// The feeder as configured, with the address it resolved to when it
    /// is a name: what `dsfeed.status` and the log call it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.feeder, self.addr) {
            (FeedEndpoint::Net { host, .. }, Some(addr))
                if host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_err() =>
            {
                write!(f, "{} ({addr})", self.feeder)
            }
            _ => write!(f, "{}", self.feeder),
        }
    }
}

/// Every address to try, in the configured order: each feeder once, a name
/// once per address it resolves to (sorted, so the order is stable from one
/// lookup to the next). A name that does not resolve is left out; none at
/// all is an error naming each failure.
pub async fn candidates(config: &Config) -> Result<Vec<Candidate>, SessionError> {
    candidates_of(&System::read(), &config.feeders).await
}

async fn candidates_of(
    system: &System,
    feeders: &[FeedEndpoint],
) -> Result<Vec<Candidate>, SessionError> {
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for feeder in feeders {
        match feeder {
            FeedEndpoint::Unix(_) => found.push(Candidate {
                feeder: feeder.clone(),
                addr: None,
            }),
            FeedEndpoint::Net { host, port, .. } => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, resolve(system, bare, *port))
                    .await
                    .unwrap_or_else(|_| {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no answer for {host} within {RESOLVE_TIMEOUT:?}"),
                        ))
                    });
                match resolved {
                    Ok(mut addrs) => {
                        addrs.sort();
                        addrs.dedup();
                        found.extend(addrs.into_iter().map(|addr| Candidate {
                            feeder: feeder.clone(),
                            addr: Some(addr),
                        }));
                    }
                    Err(err) => failures.push(format!("{feeder}: {err}")),
                }
            }
        }
    }
    if found.is_empty() {
        return Err(SessionError::NoAddress(failures.join("; ")));
    }
    Ok(found)
}

/// Connects to `candidate`, one address of a configured feeder.
pub async fn connect(config: &Config, candidate: &Candidate) -> Result<Channel, SessionError> {
    let endpoint = match &candidate.feeder {
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

    let target = candidate.clone();
    let connector = tower::service_fn(move |_: Uri| {
        let target = target.clone();
        async move {
            match (target.feeder, target.addr) {
                (FeedEndpoint::Unix(path), _) => {
                    Ok(Io::Unix(TokioIo::new(UnixStream::connect(path).await?)))
                }
                (_, Some(addr)) => {
                    let stream = TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    Ok(Io::Tcp(TokioIo::new(stream)))
                }
                (feeder, None) => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{feeder} has no address to connect to"),
                )),
            }
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(SessionError::Connect)
}

/// What the resolver reads from the system, once per connect.
pub(crate) struct System {
    hosts: String,
    conf: ResolvConf,
    /// The name servers' port: 53, but for tests.
    dns_port: u16,
}

impl System {
    fn read() -> System {
        System {
            hosts: std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
            conf: ResolvConf::parse(
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            ),
            dns_port: 53,
        }
    }
}

/// The addresses of `host`: an IP literal as it is, `localhost`, then
/// `/etc/hosts`, then each candidate name (search domains, `ndots`) asked
/// of each name server for A and AAAA, `attempts` rounds of `timeout`.
pub(crate) async fn resolve(
    system: &System,
    host: &str,
    port: u16,
) -> std::io::Result<Vec<SocketAddr>> {
    let with_port = |ips: Vec<IpAddr>| {
        ips.into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect()
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(with_port(vec![
            Ipv4Addr::LOCALHOST.into(),
            Ipv6Addr::LOCALHOST.into(),
        ]));
    }
    let listed = dns::hosts_lookup(&system.hosts, host);
    if !listed.is_empty() {
        return Ok(with_port(listed));
    }
    let conf = &system.conf;
    let per_try = Duration::from_secs(conf.timeout);
    let mut last = format!("no name server answered for {host}");
    'names: for name in conf.candidates(host) {
        for _ in 0..conf.attempts {
            for ns in &conf.nameservers {
                let server = SocketAddr::new(*ns, system.dns_port);
                match tokio::time::timeout(per_try, ask(server, &name)).await {
                    Ok(Ok(Answer::Addresses(ips))) if !ips.is_empty() => return Ok(with_port(ips)),
                    Ok(Ok(Answer::Addresses(_) | Answer::NoSuchName)) => continue 'names,
                    Ok(Ok(Answer::Failed(code))) => {
                        last = format!("{server} answered rcode {code} for {name}")
                    }
                    Ok(Err(err)) => last = format!("{server}: {err}"),
                    Err(_) => {
                        last = format!("{server} did not answer for {name} within {per_try:?}")
                    }
                }
            }
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::NotFound, last))
}

/// Asks `server` for the A and AAAA records of `name` at once, and merges
/// the two answers.
async fn ask(server: SocketAddr, name: &str) -> std::io::Result<Answer> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    let invalid = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not a DNS name"),
        )
    };
    let mut pending = Vec::new();
    for qtype in [dns::TYPE_A, dns::TYPE_AAAA] {
        let id = rand::random::<u16>();
        socket
            .send(&dns::query(id, name, qtype).ok_or_else(invalid)?)
            .await?;
        pending.push(id);
    }
    let mut found = Vec::new();
    let mut nxdomain = false;
    let mut buf = vec![0; 1500];
    while !pending.is_empty() {
        let n = socket.recv(&mut buf).await?;
        let Some(i) = pending
            .iter()
            .position(|id| dns::parse_answer(*id, &buf[..n]).is_ok())
        else {
            continue; // a stray or malformed datagram
        };
        let id = pending.swap_remove(i);
        match dns::parse_answer(id, &buf[..n]) {
            Ok(Answer::Addresses(ips)) => found.extend(ips),
            Ok(Answer::NoSuchName) => nxdomain = true,
            Ok(failed @ Answer::Failed(_)) => return Ok(failed),
            Err(_) => {}
        }
    }
    Ok(if found.is_empty() && nxdomain {
        Answer::NoSuchName
    } else {
        Answer::Addresses(found)
    })
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
            let text = dsfeed_model::secret::read_secret(path)
                .map_err(|e| SessionError::Token(crate::error::ConfigError::Secret(e)))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn system(dns_port: u16, conf: &str) -> System {
        System {
            hosts: "10.0.0.7 feeder-in-hosts\n".into(),
            conf: ResolvConf::parse(conf),
            dns_port,
        }
    }

    /// A name server on 127.0.0.1 that answers every A query for
    /// `feeder.test` with 10.1.2.3, NXDOMAIN for other names, and AAAA with
    /// nothing; or, `silent`, never.
    async fn name_server(silent: bool) -> u16 {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = vec![0; 1500];
            loop {
                let (n, from) = socket.recv_from(&mut buf).await.unwrap();
                if silent {
                    continue;
                }
                let mut answer = buf[..n].to_vec();
                answer[2] = 0x81;
                answer[3] = 0x80;
                let qtype = u16::from_be_bytes([answer[n - 4], answer[n - 3]]);
                if !answer[12..].starts_with(b"\x06feeder\x04test\x00") {
                    answer[3] = 0x83;
                } else if qtype == dns::TYPE_A {
                    answer[7] = 1;
                    answer
                        .extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 9, 0, 4, 10, 1, 2, 3]);
                }
                socket.send_to(&answer, from).await.unwrap();
            }
        });
        port
    }

    #[tokio::test]
    async fn names_resolve_through_hosts_search_domains_and_name_servers() {
        let port = name_server(false).await;
        let sys = system(port, "nameserver 127.0.0.1\nsearch test\noptions timeout:1");
        let got = resolve(&sys, "feeder", 7000).await.unwrap();
        assert_eq!(got, ["10.1.2.3:7000".parse().unwrap()]);
        assert_eq!(
            resolve(&sys, "feeder-in-hosts", 1).await.unwrap(),
            ["10.0.0.7:1".parse().unwrap()]
        );
        assert_eq!(
            resolve(&sys, "::1", 1).await.unwrap(),
            ["[::1]:1".parse().unwrap()]
        );
        let err = resolve(&sys, "nowhere", 1).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    }

    #[tokio::test]
    async fn a_name_with_several_addresses_counts_as_several_feeders() {
        let feeder: FeedEndpoint = "https://feeders.test:7000".parse().unwrap();
        let shown = |addr: &str| {
            Candidate {
                feeder: feeder.clone(),
                addr: Some(addr.parse().unwrap()),
            }
            .to_string()
        };
        assert_eq!(
            shown("10.0.0.2:7000"),
            "https://feeders.test:7000 (10.0.0.2:7000)"
        );
        let literal: FeedEndpoint = "https://10.0.0.2:7000".parse().unwrap();
        let by_ip = Candidate {
            feeder: literal,
            addr: Some("10.0.0.2:7000".parse().unwrap()),
        };
        assert_eq!(by_ip.to_string(), "https://10.0.0.2:7000");
        let sys = System {
            hosts: "10.0.0.9 feeders.test\n10.0.0.2 feeders.test\n".into(),
            conf: ResolvConf::parse("options timeout:1 attempts:1"),
            dns_port: 53,
        };
        let unix: FeedEndpoint = "unix:/run/f.sock".parse().unwrap();
        let got = candidates_of(&sys, &[feeder.clone(), unix]).await.unwrap();
        let got: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                shown("10.0.0.2:7000"),
                shown("10.0.0.9:7000"),
                "unix:/run/f.sock".to_owned()
            ]
        );
        let nowhere: FeedEndpoint = "https://nowhere.test:1".parse().unwrap();
        let err = candidates_of(&sys, &[nowhere]).await.unwrap_err();
        assert!(err.to_string().contains("nowhere.test"), "{err}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_silent_name_server_never_blocks_the_only_thread() {
        let port = name_server(true).await;
        let sys = system(port, "nameserver 127.0.0.1\noptions timeout:1 attempts:2");
        // While the lookup waits, the same thread keeps running others.
        let ticks = std::rc::Rc::new(std::cell::Cell::new(0));
        let counter = ticks.clone();
        let local = tokio::task::LocalSet::new();
        let started = tokio::time::Instant::now();
        let err = local
            .run_until(async move {
                tokio::task::spawn_local(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        counter.set(counter.get() + 1);
                    }
                });
                resolve(&sys, "feeder.test", 1).await.unwrap_err()
            })
            .await;
        assert!(err.to_string().contains("did not answer"), "{err}");
        assert!(
            started.elapsed() < RESOLVE_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
        assert!(
            ticks.get() >= 5,
            "only {} ticks ran during the lookup",
            ticks.get()
        );
    }
}
