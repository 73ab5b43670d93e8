//! What can go wrong talking to Consul. Setup errors stop the feeder at
//! start; query errors are logged and retried, never fatal.

use std::path::PathBuf;
use std::time::Duration;

use hyper::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("cannot read {what} {path}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read token file {path}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: dsfeed_model::secret::SecretError,
    },
    #[error("{what} {path} is not usable PEM")]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what} {path} holds no certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("the TLS settings for Consul are unusable")]
    Tls(#[source] rustls::Error),
    #[error(
        "no trusted root certificate found on this system; give Consul's CA with --consul-cacert or CONSUL_CACERT"
    )]
    NoRoots,
    #[error("'{0}' is not a valid TLS server name")]
    ServerName(String),
    #[error("the Consul token from {from} is not a valid HTTP header value")]
    BadToken { from: String },
    #[error("{request} failed")]
    Request {
        request: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{request}: no answer within {after:?}")]
    Timeout { request: String, after: Duration },
    #[error("{request}: reading the answer failed")]
    Body {
        request: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{request}: Consul answered {status}: {body}")]
    Status {
        request: String,
        status: StatusCode,
        body: String,
    },
    #[error(
        "Consul's ACLs filtered instances from the answer (X-Consul-Results-Filtered-By-ACLs): the token (CONSUL_HTTP_TOKEN or --consul-token-file) is missing or lacks service:read and node:read"
    )]
    FilteredByAcls,
    #[error("{request}: the answer is not a list of health entries")]
    Json {
        request: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the answer to {request} {reason}")]
    OverBudget { request: String, reason: String },
}

impl ConsulError {
    /// A short, stable label for metrics and structured logs.
    pub fn label(&self) -> &'static str {
        match self {
            ConsulError::ReadFile { .. }
            | ConsulError::TokenFile { .. }
            | ConsulError::Pem { .. }
            | ConsulError::NoCertificate { .. }
            | ConsulError::Tls(_)
            | ConsulError::NoRoots
            | ConsulError::ServerName(_)
            | ConsulError::BadToken { .. } => "consul_setup",
            ConsulError::Request { .. } => "consul_request",
            ConsulError::Timeout { .. } => "consul_timeout",
            ConsulError::Body { .. } => "consul_body",
            ConsulError::Status { .. } => "consul_status",
            ConsulError::Json { .. } | ConsulError::OverBudget { .. } => "consul_json",
            ConsulError::FilteredByAcls => "consul_acl_filtered",
        }
    }
}
