//! The feed: the canonical snapshot streamed over gRPC (`dsfeed.v1`) to many
//! Kamailios, xDS style (see `proto/dsfeed/v1/feed.proto` for the rules).
//!
//! [`server`] serves the stream, [`dsfeed_model::pb`] is the one place where protobuf
//! meets the domain model, [`clients`] records who is connected for
//! `/status` and `/metrics`, and [`watch`] is the small client behind
//! `dsfeed watch`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dsfeed_model::Endpoint;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::sinks::SnapshotRx;
use dsfeed_model::Snapshot;

pub mod clients;
pub mod server;
pub mod token;
pub mod watch;

/// Parses a `--listen` address: the feed's [`Endpoint`] grammar, with an IP
/// address or `localhost` as the host, since a listener must know which
/// interface it binds.
fn parse_listen(s: &str) -> Result<Endpoint, String> {
    let endpoint: Endpoint = s
        .parse()
        .map_err(|e: dsfeed_model::InvalidEndpoint| e.to_string())?;
    if !matches!(endpoint, Endpoint::Unix(_)) {
        endpoint.socket_addr().map_err(|e| e.to_string())?;
    }
    Ok(endpoint)
}

/// Parses `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`. Names other than
/// localhost are refused: a listener must know which interface it binds.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    if let Some(port) = s.strip_prefix("localhost:") {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("port '{port}' is not a number from 0 to 65535"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse().map_err(|_| {
        "expected IP:PORT, [IPv6]:PORT or localhost:PORT (the host must be an address)".to_owned()
    })
}

/// How the feed and the HTTP endpoints are served; part of the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Serve the feed on unix:PATH (socket mode 0660; the sidecar's choice)
    /// or tcp://IP:PORT (https://IP:PORT insists on --tls-cert). Repeatable.
    #[arg(long, value_name = "ADDR", env = "DSFEED_LISTEN")]
    #[arg(value_delimiter = ' ', value_parser = parse_listen)]
    pub listen: Vec<Endpoint>,

    /// PEM certificate chain: serve TLS on every tcp:// listener.
    #[arg(long, value_name = "PATH", env = "DSFEED_TLS_CERT")]
    #[arg(requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH", env = "DSFEED_TLS_KEY")]
    #[arg(requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates: require TCP clients to present a certificate
    /// signed by one of them.
    #[arg(long, value_name = "PATH", env = "DSFEED_TLS_CLIENT_CA")]
    #[arg(requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// A file holding a bearer token every stream, and /status, must
    /// present (`authorization: Bearer TOKEN`). Readable by its owner only
    /// (chmod 600); read again when it changes.
    #[arg(long, value_name = "PATH", env = "DSFEED_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// The most feed streams served at once; more are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(
        long,
        value_name = "N",
        env = "DSFEED_MAX_CLIENTS",
        default_value_t = server::DEFAULT_MAX_CLIENTS,
        value_parser = parse_max_clients
    )]
    pub max_clients: usize,

    /// Serve /status (every destination, node and error) without a token on
    /// an --http address other machines can reach. Without it, such an
    /// address serves /healthz, /readyz and /metrics only.
    #[arg(long, env = "DSFEED_PUBLIC_STATUS", conflicts_with = "token_file")]
    pub public_status: bool,

    /// Allow a tcp:// listener without TLS on an address other machines
    /// can reach.
    #[arg(long, env = "DSFEED_INSECURE")]
    pub insecure: bool,

    /// Serve /healthz, /readyz, /metrics and /status on HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", env = "DSFEED_HTTP", value_parser = parse_socket_addr)]
    pub http: Option<SocketAddr>,
}

impl Default for ServeArgs {
    /// What the command line gives when no serving flag is set.
    fn default() -> Self {
        ServeArgs {
            listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            token_file: None,
            max_clients: server::DEFAULT_MAX_CLIENTS,
            public_status: false,
            insecure: false,
            http: None,
        }
    }
}

impl ServeArgs {
    /// Refuses combinations that would expose the feed by accident.
    pub fn validate(&self) -> Result<(), String> {
        let tcp = self.listen.iter().any(|l| !matches!(l, Endpoint::Unix(_)));
        if self.tls_cert.is_some() && !tcp {
            return Err(
                "--tls-cert applies to tcp:// listeners, and no --listen tcp:// is given".into(),
            );
        }
        if self.tls_cert.is_none()
            && let Some(https) = self.listen.iter().find(|l| l.tls())
        {
            return Err(format!(
                "--listen {https} asks for TLS: give --tls-cert and --tls-key"
            ));
        }
        if self.tls_cert.is_none()
            && !self.insecure
            && let Some(open) = self.listen.iter().find(|l| !l.is_local())
        {
            return Err(format!(
                "--listen {open} would serve the feed in clear text to other machines: \
                 give --tls-cert and --tls-key, or --insecure to accept that"
            ));
        }
        Ok(())
    }

    /// Who may read `/status`.
    pub fn status_access(&self) -> StatusAccess {
        match (&self.token_file, self.http) {
            (Some(_), _) => StatusAccess::Token,
            (None, Some(addr)) if addr.ip().is_loopback() || self.public_status => {
                StatusAccess::Open
            }
            (None, _) => StatusAccess::Off,
        }
    }

    /// Whether anything is to be served at all.
    pub fn serves(&self) -> bool {
        !self.listen.is_empty() || self.http.is_some()
    }
}

/// Who may read `/status`, which shows every destination, attr, node and
/// NACK text: what the feed itself protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAccess {
    /// Whoever presents the feed's token.
    Token,
    /// Anyone who reaches `--http`: a loopback address, or `--public-status`.
    Open,
    /// Nobody: `--http` is reachable from other machines and no token is set.
    Off,
}

fn parse_max_clients(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("'{s}' is not a number of clients above 0")),
    }
}

/// A set filter as a client sent it: `None` asks for every set.
pub type SetFilter = Option<std::collections::BTreeSet<dsfeed_model::SetId>>;

/// When the current snapshot was first seen by this feeder.
#[derive(Debug, Clone)]
pub struct Published {
    pub snapshot: Arc<Snapshot>,
    pub at: SystemTime,
}

impl Published {
    pub fn age(&self) -> Duration {
        self.at.elapsed().unwrap_or_default()
    }
}

/// What the feed serves from and what it knows of its clients, read by the
/// HTTP endpoints too.
#[derive(Debug)]
pub struct Shared {
    pub snapshots: SnapshotRx,
    pub clients: Arc<clients::Clients>,
    pub metrics: Metrics,
    published: Mutex<Option<Published>>,
}

impl Shared {
    pub fn new(snapshots: SnapshotRx, metrics: Metrics) -> Arc<Self> {
        let shared = Arc::new(Shared {
            snapshots,
            clients: Arc::default(),
            metrics,
            published: Mutex::new(None),
        });
        shared.note_publication();
        shared
    }

    /// The current snapshot and when it appeared; `None` until every source
    /// has synced once.
    pub fn published(&self) -> Option<Published> {
        self.note_publication();
        self.published.lock().expect("not poisoned").clone()
    }

    /// Records the time of each new snapshot until `stop`, so that its age
    /// is measured from when it was published, not from when it was read.
    pub async fn track_publications(self: Arc<Self>, stop: CancellationToken) {
        let mut snapshots = self.snapshots.clone();
        loop {
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { return },
                () = stop.cancelled() => return,
            }
            self.note_publication();
        }
    }

    fn note_publication(&self) {
        let current = self.snapshots.borrow().clone();
        let mut published = self.published.lock().expect("not poisoned");
        match (current, published.as_ref()) {
            (Some(now), Some(known)) if now.version() == known.snapshot.version() => {}
            (Some(now), _) => {
                *published = Some(Published {
                    snapshot: now,
                    at: SystemTime::now(),
                });
            }
            (None, _) => *published = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_need_an_ip() {
        assert_eq!(
            parse_listen("unix:///run/dsfeed.sock").unwrap(),
            Endpoint::Unix("/run/dsfeed.sock".into())
        );
        assert!(parse_listen("tcp://localhost:7000").unwrap().is_local());
        for bad in [
            "unix:",
            "tcp://host.example:7000",
            "tcp://1.2.3.4",
            "1.2.3.4:7000",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    fn serve(listen: &[&str]) -> ServeArgs {
        ServeArgs {
            listen: listen.iter().map(|l| parse_listen(l).unwrap()).collect(),
            ..ServeArgs::default()
        }
    }

    #[test]
    fn status_needs_the_token_or_a_private_address() {
        let with = |http: &str, token: bool, public: bool| ServeArgs {
            http: Some(http.parse().unwrap()),
            token_file: token.then(|| "t".into()),
            public_status: public,
            ..ServeArgs::default()
        };
        for (http, token, public, access) in [
            ("127.0.0.1:9090", false, false, StatusAccess::Open),
            ("[::1]:9090", false, false, StatusAccess::Open),
            ("0.0.0.0:9090", false, false, StatusAccess::Off),
            ("0.0.0.0:9090", false, true, StatusAccess::Open),
            ("127.0.0.1:9090", true, false, StatusAccess::Token),
            ("0.0.0.0:9090", true, false, StatusAccess::Token),
        ] {
            assert_eq!(
                with(http, token, public).status_access(),
                access,
                "{http} token={token} public={public}"
            );
        }
        assert!(parse_max_clients("0").is_err() && parse_max_clients("x").is_err());
        assert_eq!(parse_max_clients("10"), Ok(10));
    }

    #[test]
    fn clear_text_on_the_network_needs_insecure() {
        assert!(
            serve(&["unix:/x", "tcp://127.0.0.1:7000"])
                .validate()
                .is_ok()
        );
        let err = serve(&["tcp://0.0.0.0:7000"]).validate().unwrap_err();
        assert!(
            err.contains("--insecure") && err.contains("0.0.0.0:7000"),
            "{err}"
        );
        let mut insecure = serve(&["tcp://0.0.0.0:7000"]);
        insecure.insecure = true;
        assert!(insecure.validate().is_ok());
        let mut tls = serve(&["tcp://[::]:7000"]);
        tls.tls_cert = Some("c.pem".into());
        tls.tls_key = Some("k.pem".into());
        assert!(tls.validate().is_ok());
        let mut tls_on_unix = serve(&["unix:/x"]);
        tls_on_unix.tls_cert = Some("c.pem".into());
        assert!(tls_on_unix.validate().is_err());
        assert!(serve(&["https://127.0.0.1:7000"]).validate().is_err());
    }
}
