//! The module's errors. Each names its culprit, because the only place a
//! user sees them is Kamailio's log, the `dsfeed.status` RPC or a NACK on
//! the feeder's side.

/// A bad `modparam("dsfeed", ...)`: Kamailio refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("modparam dsfeed {0} is required")]
    Missing(&'static str),
    #[error("dsfeed has no parameter {0:?}")]
    Unknown(String),
    #[error("modparam dsfeed {0} must be {1}")]
    Type(String, &'static str),
    #[error("modparam dsfeed feeder {0}")]
    Feeder(#[source] dsfeed_model::InvalidEndpoint),
    #[error("modparam dsfeed sets: {0:?} is not a set id (0..2147483647)")]
    Sets(String),
    #[error("modparam dsfeed {0} needs https:// feeders, and {1} is not one")]
    TlsWithoutHttps(&'static str, String),
    #[error("modparam dsfeed {0} and {1} cannot both be set")]
    Conflict(&'static str, &'static str),
    #[error("modparam dsfeed {name} {path:?} cannot be read")]
    File {
        name: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the dsfeed token must be non-empty visible ASCII (it is sent as an HTTP header)")]
    Token,
    #[error("modparam dsfeed token_file: {0}")]
    Secret(#[source] dsfeed_model::secret::SecretError),
    #[error(
        "modparam dsfeed {0}: the token would travel in clear text to {1}, which is not this \
         host; use an https:// feeder (or a unix socket), or set modparam dsfeed insecure 1 to \
         accept that anyone on the path can read it"
    )]
    ClearTextToken(&'static str, String),
    #[error("modparam dsfeed node_id: {0}")]
    NodeId(String),
    #[error("modparam dsfeed {0} must not be negative, got {1}")]
    Negative(&'static str, i64),
    #[error(
        "modparam dsfeed min_swap_interval_ms {0} is below 500: the stock dispatcher frees the \
         list retired by one swap when the next starts, while SIP workers were measured reading \
         it for up to ~107 ms under load and a probing round over 10,000 destinations takes \
         ~350 ms; a shorter interval can free a list under a reader and crash Kamailio"
    )]
    SwapInterval(i64),
    #[error("modparam dsfeed {0} must be 0 or 1, got {1}")]
    Bool(&'static str, i64),
    #[error("modparam dsfeed reconnect_jitter_pct must be 0..100, got {0}")]
    Jitter(i64),
    #[error("modparam dsfeed reconnect: {0}")]
    Backoff(#[from] dsfeed_model::InvalidBackoff),
}

/// Why a valid snapshot could not be swapped in. None of these is the
/// snapshot's fault, so none is NACKed: the snapshot stays pending and is
/// tried again (see [`ApplyError::retry`]). A snapshot that is itself
/// invalid is a [`dsfeed_model::InvalidSnapshot`], refused before it gets
/// here.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// `ds_load_list` returned without loading because another load was in
    /// progress ("load command already generated").
    #[error("the dispatcher skipped the load (another load was in progress); retrying")]
    Skipped,
    /// The dispatcher's list changed since the module last looked: another
    /// writer loaded it, and the next load must wait a full interval.
    #[error("the dispatcher's list was replaced by another writer; waiting a full interval")]
    ForeignLoad,
    /// No memfd, no file descriptor, no memory to write the list into.
    #[error("could not hand the list to the dispatcher")]
    ListFile(#[source] std::io::Error),
    /// `ds_load_list` failed: it could not open the list (no file
    /// descriptor), ran out of shm, or refused a destination with
    /// `ds_load_mode` 1.
    #[error("the dispatcher refused the list (see its log lines); the previous sets stay")]
    Refused,
    /// A set the feed does not carry holds a destination no list line can
    /// load back as it is; rewriting it would change it silently.
    #[error(
        "set {set} (not carried by the feed) cannot be rewritten exactly: destination {uri:?}: \
         {why}; fix or remove it in Kamailio, or have the feed carry set {set}"
    )]
    Unrenderable { set: i32, uri: String, why: String },
}

/// What the feed does after an [`ApplyError`]: the one place that decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again at the next paced turn, silently: the dispatcher was busy
    /// or had another writer, which the pacing itself waits out.
    Paced,
    /// Could not apply now: answer the response as retrying, and try again
    /// after a backoff.
    Backoff,
}

impl ApplyError {
    pub fn retry(&self) -> Retry {
        match self {
            ApplyError::Skipped | ApplyError::ForeignLoad => Retry::Paced,
            ApplyError::ListFile(_) | ApplyError::Refused | ApplyError::Unrenderable { .. } => {
                Retry::Backoff
            }
        }
    }

    /// Whether the pacing must count this as a swap now: a refused load may
    /// have freed the list the last swap retired before it failed, and a
    /// skipped one means another writer is loading at this moment.
    pub fn counts_as_a_swap(&self) -> bool {
        matches!(self, ApplyError::Skipped | ApplyError::Refused)
    }
}

/// Why a feed session ended; every one of them is retried after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot read {what} {path:?}")]
    ReadFile {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad TLS settings")]
    Tls(#[source] tonic::transport::Error),
    #[error("bad token")]
    Token(#[source] ConfigError),
    #[error("no feeder has an address ({0})")]
    NoAddress(String),
    #[error("cannot connect")]
    Connect(#[source] tonic::transport::Error),
    #[error("the feeder refused the stream: {}", status_text(.0))]
    Refused(tonic::Status),
    #[error("the stream failed: {}", status_text(.0))]
    Stream(tonic::Status),
    #[error("the feeder closed the stream")]
    Closed,
}

/// A gRPC status on one line: its code, message and causes (a TLS or
/// connection error under a transport failure).
fn status_text(status: &tonic::Status) -> String {
    let text = format!("{:?}: {}", status.code(), status.message());
    match std::error::Error::source(status) {
        Some(cause) => format!("{text}: {}", dsfeed_model::error_chain(cause)),
        None => text,
    }
}

impl SessionError {
    /// The one place that decides how hard to back off: errors a retry
    /// cannot fix soon (credentials, a feeder that does not serve the Feed
    /// API) go straight to the longest delay instead of hammering.
    pub fn is_persistent(&self) -> bool {
        match self {
            SessionError::ReadFile { .. } | SessionError::Tls(_) | SessionError::Token(_) => true,
            SessionError::Refused(status) | SessionError::Stream(status) => {
                dsfeed_model::pb::is_final(status.code())
            }
            SessionError::NoAddress(_) | SessionError::Connect(_) | SessionError::Closed => false,
        }
    }
}

/// Why `mod_init` failed: Kamailio refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the dispatcher module is not loaded: loadmodule \"dispatcher.so\" before dsfeed.so")]
    NoDispatcher,
    #[error("dispatcher.so has no symbol {0} (dsfeed.so was built for Kamailio 5.6's dispatcher)")]
    Symbol(String),
    #[error(
        "modparam dsfeed list_file_sync needs the dispatcher to load from list_file, not db_url"
    )]
    SyncWithDb,
    #[error("out of shared memory for the dsfeed status")]
    NoShm,
}
