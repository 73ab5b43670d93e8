//! The feeder's errors: one enum for everything that can go wrong at run
//! time. A destination Kamailio would misread is the model's
//! [`InvalidDestination`].

use std::path::PathBuf;

use dsfeed_model::InvalidDestination;

/// A flag value that does not read (`--set`, `--static`, ...): the value
/// as given, and why, so the message names the culprit whichever part of
/// it is wrong.
#[derive(Debug, thiserror::Error)]
#[error("'{spec}': {reason}")]
pub struct InvalidFlagValue {
    pub spec: String,
    pub reason: String,
}

impl InvalidFlagValue {
    /// The error about flag value `spec`.
    pub fn new(spec: &str, reason: impl Into<String>) -> Self {
        InvalidFlagValue {
            spec: spec.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Everything that can fail while running the feeder. New variants may
/// come in any release: match with a `_` arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("source {name} failed")]
    SourceFailed {
        name: String,
        #[source]
        cause: Box<Error>,
    },
    #[error("sink {name} failed")]
    SinkFailed {
        name: String,
        #[source]
        cause: Box<Error>,
    },
    /// The error of a source or sink written outside this crate, with the
    /// label it is counted under (see [`Error::other`]).
    #[error("{kind}")]
    Other {
        kind: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("sets file {path}: {reason}")]
    SetsFile { path: PathBuf, reason: String },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch {path}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error(transparent)]
    Invalid(#[from] InvalidDestination),
    #[error(transparent)]
    Flag(#[from] InvalidFlagValue),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup failed: {what}")]
    Tls {
        what: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("token file {path} is empty")]
    EmptyToken { path: PathBuf },
    #[error("token file {path} holds more than visible ASCII (the token is an HTTP header)")]
    BadToken { path: PathBuf },
    #[error("token file {path} cannot be used")]
    Secret {
        path: PathBuf,
        #[source]
        source: dsfeed_model::secret::SecretError,
    },
    #[error("the feed server on {addr} failed")]
    Serve {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the HTTP server on {addr} failed")]
    Http {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to the feeder at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the feeder at {addr} ended the stream ({code:?}): {message}")]
    Rejected {
        addr: String,
        code: tonic::Code,
        message: String,
    },
    #[error("Kubernetes: {reason}")]
    KubeConfig {
        reason: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot build the Kubernetes client")]
    KubeClient(#[source] kube::Error),
    #[error(transparent)]
    Rpc(#[from] dsfeed_binrpc::Error),
    #[error("the {0} task was cancelled")]
    Cancelled(&'static str),
    #[error("no first snapshot within {deadline:?} (--once-timeout): {}", waiting_list(.waiting))]
    NotSynced {
        deadline: std::time::Duration,
        waiting: Vec<Waiting>,
    },
}

/// A source that had not sent its first view when `--once` gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub source: String,
    /// The last error it reported; `None` when it reported none (a server
    /// that accepts the connection and never answers).
    pub last_error: Option<String>,
}

fn waiting_list(waiting: &[Waiting]) -> String {
    waiting
        .iter()
        .map(|w| match &w.last_error {
            Some(err) => format!("{} is still waiting, last error: {err}", w.source),
            None => format!(
                "{} is still waiting, with no answer and no error yet",
                w.source
            ),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// A short, stable label for metrics and structured logs.
    pub fn label(&self) -> &'static str {
        match self {
            Error::SourceFailed { cause, .. } | Error::SinkFailed { cause, .. } => cause.label(),
            Error::Other { kind, .. } => kind,
            Error::SetsFile { .. } => "sets_file",
            Error::Read { .. } => "read",
            Error::Write { .. } => "write",
            Error::Watch { .. } => "watch",
            Error::Invalid(_) | Error::Flag(_) => "invalid",
            Error::Listen { .. } => "listen",
            Error::Tls { .. } => "tls",
            Error::EmptyToken { .. } | Error::BadToken { .. } | Error::Secret { .. } => "token",
            Error::Serve { .. } => "serve",
            Error::Http { .. } => "http",
            Error::Connect { .. } => "connect",
            Error::Rejected { .. } => "rejected",
            Error::KubeConfig { .. } | Error::KubeClient(_) => "kubernetes",
            Error::Rpc(_) => "rpc",
            Error::Cancelled(_) => "cancelled",
            Error::NotSynced { .. } => "not_synced",
        }
    }

    /// The error a component of your own fails with, counted as `kind` (a
    /// short, stable label such as `inventory_unreachable`).
    pub fn other(
        kind: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Other {
            kind,
            source: source.into(),
        }
    }

    /// The error for a task of `what` that did not finish: a panic goes on
    /// unwinding here, so a bug is never mistaken for an error; a task is
    /// cancelled only when the runtime shuts down, which is no reason to panic.
    pub fn from_join(join: tokio::task::JoinError, what: &'static str) -> Error {
        if join.is_panic() {
            std::panic::resume_unwind(join.into_panic());
        }
        Error::Cancelled(what)
    }
}
