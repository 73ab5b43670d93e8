//! `dsfeed watch ADDR`: a small feed client for people and scripts. It
//! prints every snapshot as `dispatcher.list` lines and ACKs it, refuses
//! (NACKs) what Kamailio could not load, and reconnects with the version it
//! holds, so a feeder restart prints nothing new unless the sets changed.
//! It takes deltas, and prints each completed into the whole snapshot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{self, Certificate, ClientTlsConfig, Identity};

use dsfeed_model::pb::{self, Answer, Incoming};
use dsfeed_model::{Backoff, Endpoint, ListKind, SetId, Snapshot, error_chain};

use crate::error::Error;
use crate::sinks::file::ListWriter;

/// Reconnection delays: doubled after each failure up to the maximum, up
/// to half of each cut at random so that the clients of a restarted feeder
/// do not reconnect in lockstep.
const BACKOFF: Backoff =
    Backoff::constant(Duration::from_millis(250), Duration::from_secs(10), 0.5);

/// How long `--once` waits for the feeder to take its ACK.
const ONCE_GRACE: Duration = Duration::from_secs(5);

/// The arguments of `dsfeed watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// The feeder: unix:PATH, tcp://HOST:PORT (clear text) or
    /// https://HOST:PORT (TLS; give --tls-ca).
    #[arg(value_name = "ADDR")]
    pub addr: Endpoint,

    /// Only these set ids, comma-separated; default: every set.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub sets: Vec<SetId>,

    /// Also the lists besides dispatcher sets, comma-separated: rtpengine
    /// (relays), domain (SIP domains). Printed after the sets as comment
    /// lines, `# rtpengine SETID URL weight=N [disabled]` and `# domain
    /// NAME [did=DID]`; not written with -o.
    #[arg(long, value_name = "LISTS", value_delimiter = ',')]
    pub lists: Vec<ListKind>,

    /// The node id to report (ASCII letters, digits and .-_:@); default:
    /// this host's name.
    #[arg(long, value_name = "ID", value_parser = parse_node)]
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

    /// Write each snapshot to this dispatcher.list (atomically, as the
    /// feeder does) instead of printing it: with --once, the init container
    /// that gives a Kamailio fed by a cluster service its first list.
    #[arg(short = 'o', long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    // Help is `--help` only, as for the feeder, whose `-h` is the binrpc host.
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

impl WatchArgs {
    pub fn validate(&self) -> Result<(), String> {
        let tls_options = self.tls_ca.is_some() || self.tls_cert.is_some();
        match (self.addr.tls(), tls_options) {
            (true, _) if self.tls_ca.is_none() => {
                Err("an https:// feeder needs --tls-ca to verify its certificate".into())
            }
            (false, true) => Err("--tls-ca and --tls-cert need an https:// address".into()),
            _ => Ok(()),
        }
    }
}

fn parse_node(s: &str) -> Result<String, String> {
    pb::check_node_id(s).map(|()| s.to_owned())
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
        Some(path) => Some(crate::feed::token::read_token(path)?),
        None => None,
    };
    let mut delays = BACKOFF.iter();
    // The last snapshot taken: its version goes in each hello, and deltas
    // are completed against it.
    let mut applied: Option<Snapshot> = None;
    loop {
        let printed = version_of(applied.as_ref()).to_owned();
        let err = match stream(args, &endpoint, token.as_deref(), &mut applied, out).await {
            Ok(Ended::Done) => return Ok(()),
            Ok(Ended::Closed) => Error::Rejected {
                addr: args.addr.to_string(),
                code: Code::Unavailable,
                message: "closed with no error".into(),
            },
            // Whoever read the snapshots stopped (`dsfeed watch | head`):
            // they had what they wanted.
            Err(Error::Write { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
                return Ok(());
            }
            Err(err) => err,
        };
        if args.once || is_final(&err) {
            return Err(err);
        }
        if version_of(applied.as_ref()) != printed {
            // The stream worked for a while: start again from the shortest delay.
            delays = BACKOFF.iter();
        }
        let delay = delays.next().expect("delays never end");
        tracing::warn!(error = %error_chain(&err), "reconnecting in {delay:.1?}");
        tokio::time::sleep(delay).await;
    }
}

/// The version of `snapshot`, empty for none.
fn version_of(snapshot: Option<&Snapshot>) -> &str {
    snapshot.map_or("", Snapshot::version)
}

/// Which errors end `watch`: a refusal that a retry cannot change (the
/// contract's rule, [`pb::is_final`]), or an output nobody reads any more.
fn is_final(err: &Error) -> bool {
    match err {
        Error::Rejected { code, .. } => pb::is_final(*code),
        Error::Write { .. } => true,
        _ => false,
    }
}

async fn stream(
    args: &WatchArgs,
    endpoint: &transport::Endpoint,
    token: Option<&str>,
    applied: &mut Option<Snapshot>,
    out: &mut (impl Write + Send),
) -> Result<Ended, Error> {
    let addr = args.addr.to_string();
    let channel = endpoint.connect().await.map_err(|source| Error::Connect {
        addr: addr.clone(),
        source,
    })?;
    let (tx, rx) = mpsc::channel(4);
    let node = args.node.clone().unwrap_or_else(host_name);
    let user_agent = format!("dsfeed-watch/{}", env!("CARGO_PKG_VERSION"));
    let mut hello =
        pb::hello_with_deltas(&node, &user_agent, &args.sets, version_of(applied.as_ref()));
    hello.lists = pb::wire_lists(&args.lists.iter().copied().collect());
    tx.send(hello).await.expect("the receiver is alive");
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
    let mut inbound = pb::open_stream(channel, request).await.map_err(rejected)?;
    while let Some(incoming) = inbound.message().await.map_err(rejected)? {
        let response = match incoming {
            Incoming::Response(response) => response,
            Incoming::OverBudget {
                version,
                nonce,
                reason,
            } => {
                let why = format!("version {version:?} has {reason}");
                tracing::error!("refusing a snapshot: {why}");
                let kept = version_of(applied.as_ref());
                if tx
                    .send(pb::answer(&nonce, kept, Answer::Nack(why)))
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
        };
        let held: Vec<&Snapshot> = applied.iter().collect();
        let reply = match pb::complete(&response, &args.sets, &held) {
            Ok(snapshot) => {
                match &args.output {
                    Some(path) => {
                        ListWriter::new(path.clone()).write(&snapshot)?;
                    }
                    None => write!(
                        out,
                        "{}{}",
                        snapshot.to_dispatcher_list(),
                        snapshot.lists().to_comment_lines()
                    )
                    .and_then(|()| out.flush())
                    .map_err(|source| Error::Write {
                        path: "standard output".into(),
                        source,
                    })?,
                }
                let answer = pb::answer(&response.nonce, snapshot.version(), Answer::Ack);
                *applied = Some(snapshot);
                answer
            }
            Err(err) => {
                let kept = version_of(applied.as_ref());
                if err.wants_full() {
                    // The feeder sends the full snapshot on this NACK.
                    tracing::debug!(version = %response.version_info, error = %err, "asking for the full snapshot");
                } else {
                    tracing::error!(version = %response.version_info, error = %err, "refusing a snapshot");
                }
                pb::answer(&response.nonce, kept, Answer::Nack(err.to_string()))
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

async fn endpoint(args: &WatchArgs) -> Result<transport::Endpoint, Error> {
    let uri = match &args.addr {
        Endpoint::Unix(path) => {
            let path = std::path::absolute(path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            format!("unix://{}", path.display())
        }
        net => {
            let scheme = if net.tls() { "https" } else { "http" };
            format!("{scheme}://{}", net.authority().unwrap_or_default())
        }
    };
    let bad_uri = |source| Error::Connect {
        addr: args.addr.to_string(),
        source,
    };
    let mut endpoint = transport::Endpoint::from_shared(uri)
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
    match std::error::Error::source(status) {
        Some(cause) => format!("{}: {}", status.message(), error_chain(cause)),
        None => status.message().to_owned(),
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
