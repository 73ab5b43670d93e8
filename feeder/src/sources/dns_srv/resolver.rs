//! SRV lookups over UDP, and over TCP when an answer does not fit a
//! datagram, against `--dns-server` or the name servers of
//! `/etc/resolv.conf` (with its search domains, `ndots`, `timeout` and
//! `attempts`, as glibc reads them: the model's [`ResolvConf`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};

use dsfeed_model::dns::{self, ResolvConf, Srv, SrvAnswer};

/// The system's resolver configuration.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Per query to `--dns-server`, which is one server with no fallback.
const SERVER_TIMEOUT: Duration = Duration::from_secs(2);
const SERVER_ATTEMPTS: usize = 2;

/// What went wrong asking for a name; the source keeps its last answer.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("no answer from {server} for {name} within {after:?}")]
    Timeout {
        server: SocketAddr,
        name: String,
        after: Duration,
    },
    #[error("{server} answered {} for {name}", rcode_name(*.rcode))]
    Rcode {
        server: SocketAddr,
        name: String,
        rcode: u8,
    },
    #[error("asking {server} for {name} failed")]
    Io {
        server: SocketAddr,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{server} sent a malformed answer for {name}: {reason}")]
    Malformed {
        server: SocketAddr,
        name: String,
        reason: &'static str,
    },
    #[error("cannot read {path}")]
    ResolvConf {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl DnsError {
    /// A short, stable label for metrics and structured logs.
    pub fn label(&self) -> &'static str {
        match self {
            DnsError::Timeout { .. } => "dns_timeout",
            DnsError::Rcode { .. } => "dns_rcode",
            DnsError::Io { .. } => "dns_io",
            DnsError::Malformed { .. } => "dns_malformed",
            DnsError::ResolvConf { .. } => "dns_setup",
        }
    }
}

fn rcode_name(rcode: u8) -> String {
    match rcode {
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        other => format!("rcode {other}"),
    }
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The SRV records of the first name (search domains applied) that has
    /// any.
    Records(Vec<Srv>),
    /// No name has an SRV record: NXDOMAIN, or names without SRV records.
    Empty,
}

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    conf: ResolvConf,
    timeout: Duration,
    attempts: usize,
}

impl Resolver {
    /// Asks `server` only; names are taken as they are written, with no
    /// search domain.
    pub fn server(server: SocketAddr) -> Self {
        Resolver {
            servers: vec![server],
            conf: ResolvConf {
                ndots: 0,
                ..ResolvConf::default()
            },
            timeout: SERVER_TIMEOUT,
            attempts: SERVER_ATTEMPTS,
        }
    }

    /// Asks the name servers of `/etc/resolv.conf` (the local one when it
    /// names none, or is missing, as glibc does).
    pub fn system() -> Result<Self, DnsError> {
        let text = match std::fs::read_to_string(RESOLV_CONF) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(DnsError::ResolvConf {
                    path: RESOLV_CONF,
                    source,
                });
            }
        };
        Ok(Resolver::from_conf(ResolvConf::parse(&text)))
    }

    /// Asks the name servers `conf` names, on port 53.
    pub fn from_conf(conf: ResolvConf) -> Self {
        Resolver {
            servers: conf
                .nameservers
                .iter()
                .map(|ip| SocketAddr::new(*ip, 53))
                .collect(),
            timeout: Duration::from_secs(conf.timeout),
            attempts: conf.attempts,
            conf,
        }
    }

    /// The servers asked, for `--check` and logs.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The SRV records of `name` (`absolute`: no search domain). Each
    /// candidate name is asked of each server in turn, `attempts` rounds: a
    /// server that fails or does not answer passes the question to the
    /// next, and the last failure is the error when none answers.
    pub async fn srv(&self, name: &str, absolute: bool) -> Result<Lookup, DnsError> {
        let candidates = if absolute {
            vec![name.to_owned()]
        } else {
            self.conf.candidates(name)
        };
        'names: for candidate in candidates {
            let mut last = None;
            for _ in 0..self.attempts {
                for server in &self.servers {
                    match self.ask(*server, &candidate).await {
                        Ok(SrvAnswer::Records(records)) if !records.is_empty() => {
                            return Ok(Lookup::Records(records));
                        }
                        Ok(SrvAnswer::Records(_) | SrvAnswer::NoSuchName) => continue 'names,
                        Ok(SrvAnswer::Failed(rcode)) => {
                            last = Some(DnsError::Rcode {
                                server: *server,
                                name: candidate.clone(),
                                rcode,
                            });
                        }
                        Ok(SrvAnswer::Truncated) => unreachable!("asked again over TCP"),
                        Err(err) => last = Some(err),
                    }
                }
            }
            if let Some(err) = last {
                return Err(err);
            }
        }
        Ok(Lookup::Empty)
    }

    /// One question to one server: over UDP, again over TCP when the answer
    /// is truncated.
    async fn ask(&self, server: SocketAddr, name: &str) -> Result<SrvAnswer, DnsError> {
        let id = rand::random::<u16>();
        let query = dns::query(id, name, dns::TYPE_SRV).ok_or_else(|| DnsError::Malformed {
            server,
            name: name.to_owned(),
            reason: "the name cannot be asked",
        })?;
        let io = |source| DnsError::Io {
            server,
            name: name.to_owned(),
            source,
        };
        let timeout = || DnsError::Timeout {
            server,
            name: name.to_owned(),
            after: self.timeout,
        };
        let answer = tokio::time::timeout(self.timeout, udp(server, id, &query))
            .await
            .map_err(|_| timeout())?
            .map_err(io)?;
        let answer = match answer {
            SrvAnswer::Truncated => tokio::time::timeout(self.timeout, tcp(server, &query))
                .await
                .map_err(|_| timeout())?
                .map_err(io)?,
            answer => return Ok(answer),
        };
        match dns::parse_srv_answer(id, &answer) {
            Ok(SrvAnswer::Truncated) | Err(_) => Err(DnsError::Malformed {
                server,
                name: name.to_owned(),
                reason: "a TCP answer that is not a whole answer to the question",
            }),
            Ok(answer) => Ok(answer),
        }
    }
}

/// Sends `query` and waits for the answer with its id; stray or malformed
/// datagrams are ignored, as a resolver must (anyone may send one).
async fn udp(server: SocketAddr, id: u16, query: &[u8]) -> std::io::Result<SrvAnswer> {
    let local: SocketAddr = match server.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        if let Ok(answer) = dns::parse_srv_answer(id, &buf[..n]) {
            return Ok(answer);
        }
    }
}

/// Sends `query` over TCP (each message behind its two-byte length) and
/// returns the answer's bytes.
async fn tcp(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let mut len = [0; 2];
    stream.read_exact(&mut len).await?;
    let mut answer = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}
