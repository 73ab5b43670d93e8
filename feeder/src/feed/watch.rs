//! `dsfeed watch ADDR`: a small feed client for people and scripts. It
//! prints every snapshot as `dispatcher.list` lines and ACKs it, refuses
//! (NACKs) what Kamailio could not load, and reconnects with the version it
//! holds, so a feeder restart prints nothing new unless the sets changed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::backoff::Backoff;
use crate::error::Error;
use crate::feed::pb::{self, FeedRequest, Node, feed_client::FeedClient};
use crate::snapshot::SetId;

/// The largest snapshot accepted (tonic's default of 4 MiB is about 50,000
/// destinations).
const MAX_SNAPSHOT: usize = 64 * 1024 * 1024;

/// Reconnection delays: doubled after each failure up to the maximum, up
/// to half of each cut at random so that the clients of a restarted feeder
/// do not reconnect in lockstep.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const BACKOFF_JITTER: f64 = 0.5;

/// How long `--once` waits for the feeder to take its ACK.
const ONCE_GRACE: Duration = Duration::from_secs(5);

/// Where the feeder is: `unix:PATH`, `tcp://HOST:PORT` or `http://HOST:PORT`
/// (clear text), or `https://HOST:PORT` (TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    Plain(String),
    Tls(String),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(format!("'{s}' has no socket path"));
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let (tls, authority) = if let Some(rest) = s.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("http://"))
        {
            (false, rest)
        } else {
            return Err(format!(
                "'{s}' is not unix:PATH, tcp://HOST:PORT, http://HOST:PORT or https://HOST:PORT"
            ));
        };
        let authority = authority.trim_end_matches('/');
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => return Err(format!("'{s}' needs HOST:PORT")),
        }
        Ok(if tls {
            Target::Tls(authority.to_owned())
        } else {
            Target::Plain(authority.to_owned())
        })
    }
}

/// The arguments of `dsfeed watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// The feeder: unix:PATH, tcp://HOST:PORT (clear text) or
    /// https://HOST:PORT (TLS; give --tls-ca).
    #[arg(value_name = "ADDR")]
    pub addr: Target,

    /// Only these set ids, comma-separated; default: every set.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub sets: Vec<SetId>,

    /// The node id to report; default: this host's name.
    #[arg(long, value_name = "ID")]
    pub node: Option<String>,

    /// A file holding the bearer token the feeder requires.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// PEM CA certificates to verify the feeder's certificate with.
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate, for a feeder that requires one.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Print the first snapshot, ACK it and exit; any error is final.
    #[arg(long)]
    pub once: bool,

    // Help is `--help` only, as for the feeder, whose `-h` is the binrpc host.
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

impl WatchArgs {
    pub fn validate(&self) -> Result<(), String> {
        let tls_options = self.tls_ca.is_some() || self.tls_cert.is_some();
        match &self.addr {
            Target::Tls(_) if self.tls_ca.is_none() => {
                Err("an https:// feeder needs --tls-ca to verify its certificate".into())
            }
            Target::Unix(_) | Target::Plain(_) if tls_options => {
                Err("--tls-ca and --tls-cert need an https:// address".into())
            }
            _ => Ok(()),
        }
    }
}

/// How one stream ended without a reason to give up.
enum Ended {
    /// `--once` got its snapshot.
    Done,
    /// The feeder closed the stream (restart, shutdown); reconnect.
    Closed,
}

/// Watches the feed until `--once` is satisfied or an error is final,
/// writing snapshots to `out`.
pub async fn run(args: &WatchArgs, out: &mut (impl Write + Send)) -> Result<(), Error> {
    let endpoint = endpoint(args).await?;
    let token = match &args.token_file {
        Some(path) => Some(crate::feed::server::read_token(path).await?),
        None => None,
    };
    let backoff =
        Backoff::new(BACKOFF_MIN, BACKOFF_MAX, BACKOFF_JITTER).expect("the constants are valid");
    let mut delays = backoff.iter();
    let mut applied = String::new();
    loop {
        let printed = applied.clone();
        let err = match stream(args, &endpoint, token.as_deref(), &mut applied, out).await {
            Ok(Ended::Done) => return Ok(()),
            Ok(Ended::Closed) => Error::Rejected {
                addr: display(&args.addr),
                code: Code::Unavailable,
                message: "closed with no error".into(),
            },
            Err(err) => err,
        };
        if args.once || is_final(&err) {
            return Err(err);
        }
        if applied != printed {
            // The stream worked for a while: start again from the shortest delay.
            delays = backoff.iter();
        }
        let delay = delays.next().expect("delays never end");
        tracing::warn!(error = %with_causes(&err), "reconnecting in {delay:.1?}");
        tokio::time::sleep(delay).await;
    }
}

/// The one place that decides which errors end `watch`: a refusal that a
/// retry cannot change, or an output nobody reads any more.
fn is_final(err: &Error) -> bool {
    match err {
        Error::Rejected { code, .. } => matches!(
            code,
            Code::Unauthenticated
                | Code::PermissionDenied
                | Code::InvalidArgument
                | Code::Unimplemented
        ),
        Error::Write { .. } => true,
        _ => false,
    }
}

async fn stream(
    args: &WatchArgs,
    endpoint: &Endpoint,
    token: Option<&str>,
    applied: &mut String,
    out: &mut (impl Write + Send),
) -> Result<Ended, Error> {
    let addr = display(&args.addr);
    let channel = endpoint.connect().await.map_err(|source| Error::Connect {
        addr: addr.clone(),
        source,
    })?;
    let mut client = FeedClient::new(channel).max_decoding_message_size(MAX_SNAPSHOT);
    let (tx, rx) = mpsc::channel(4);
    tx.send(FeedRequest {
        node: Some(Node {
            id: args.node.clone().unwrap_or_else(host_name),
            user_agent: format!("dsfeed-watch/{}", env!("CARGO_PKG_VERSION")),
        }),
        set_ids: args.sets.clone(),
        version_info: applied.clone(),
        ..FeedRequest::default()
    })
    .await
    .expect("the receiver is alive");
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        let value =
            MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| Error::Rejected {
                addr: addr.clone(),
                code: Code::InvalidArgument,
                message: "the token contains characters a header cannot carry".into(),
            })?;
        request.metadata_mut().insert("authorization", value);
    }
    let rejected = |status: tonic::Status| Error::Rejected {
        addr: addr.clone(),
        code: status.code(),
        message: explain(&status),
    };
    let mut inbound = client.stream(request).await.map_err(rejected)?.into_inner();
    while let Some(response) = inbound.message().await.map_err(rejected)? {
        let reply = match pb::snapshot_from_pb(response.sets) {
            Ok(snapshot) => {
                write!(out, "{}", snapshot.to_dispatcher_list())
                    .and_then(|()| out.flush())
                    .map_err(|source| Error::Write {
                        path: "standard output".into(),
                        source,
                    })?;
                response.version_info.clone_into(applied);
                pb::ack(applied, &response.nonce)
            }
            Err(err) => {
                tracing::error!(version = %response.version_info, error = %err, "refusing a snapshot");
                pb::nack(applied, &response.nonce, err.to_string())
            }
        };
        let acked = reply.error_detail.is_none();
        if tx.send(reply).await.is_err() {
            break;
        }
        if args.once && acked {
            // Close our side and let the feeder end the stream, so that the
            // ACK is read before the connection goes.
            drop(tx);
            let _ = tokio::time::timeout(ONCE_GRACE, async {
                while let Ok(Some(_)) = inbound.message().await {}
            })
            .await;
            return Ok(Ended::Done);
        }
    }
    Ok(Ended::Closed)
}

async fn endpoint(args: &WatchArgs) -> Result<Endpoint, Error> {
    let uri = match &args.addr {
        Target::Unix(path) => {
            let path = std::path::absolute(path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            format!("unix://{}", path.display())
        }
        Target::Plain(authority) => format!("http://{authority}"),
        Target::Tls(authority) => format!("https://{authority}"),
    };
    let bad_uri = |source| Error::Connect {
        addr: display(&args.addr),
        source,
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(bad_uri)?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if let Some(ca) = &args.tls_ca {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca).await?));
        if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
            tls = tls.identity(Identity::from_pem(read(cert).await?, read(key).await?));
        }
        endpoint = endpoint.tls_config(tls).map_err(|source| Error::Tls {
            what: "the client TLS settings are unusable".into(),
            source,
        })?;
    }
    Ok(endpoint)
}

/// The status message followed by its causes: for a broken transport
/// (a refused TLS handshake) the message alone says only "transport error".
fn explain(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    append_causes(&mut text, std::error::Error::source(status));
    text
}

/// An error and its causes on one line, for a log that would otherwise show
/// only the outermost ("cannot connect").
fn with_causes(err: &Error) -> String {
    let mut text = err.to_string();
    append_causes(&mut text, std::error::Error::source(err));
    text
}

fn append_causes(text: &mut String, mut cause: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(err) = cause {
        let line = err.to_string();
        // tonic repeats an I/O error at each layer; say it once.
        if !text.ends_with(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = err.source();
    }
}

fn display(target: &Target) -> String {
    match target {
        Target::Unix(path) => format!("unix:{}", path.display()),
        Target::Plain(authority) => format!("tcp://{authority}"),
        Target::Tls(authority) => format!("https://{authority}"),
    }
}

async fn read(path: &Path) -> Result<Vec<u8>, Error> {
    tokio::fs::read(path).await.map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// This host's name, the natural node id of a watcher.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "dsfeed-watch".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            "unix:/run/dsfeed.sock".parse::<Target>().unwrap(),
            Target::Unix("/run/dsfeed.sock".into())
        );
        assert_eq!(
            "tcp://127.0.0.1:7000".parse::<Target>().unwrap(),
            Target::Plain("127.0.0.1:7000".into())
        );
        assert_eq!(
            "https://feeder.example:7443/".parse::<Target>().unwrap(),
            Target::Tls("feeder.example:7443".into())
        );
        for bad in [
            "feeder:7000",
            "tcp://feeder",
            "https://:1",
            "unix:",
            "tcp://h:0",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_unreachable_refusals_are_final() {
        let rejected = |code| Error::Rejected {
            addr: "x".into(),
            code,
            message: String::new(),
        };
        assert!(is_final(&rejected(Code::Unauthenticated)));
        assert!(!is_final(&rejected(Code::Unavailable)));
    }
}
