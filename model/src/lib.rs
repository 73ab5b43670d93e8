//! The dispatcher-set model every part of dsfeed shares: the feeder's
//! sources and sinks, the feed server, `dsfeed watch` and the dsfeed.so
//! Kamailio module. A rule about what Kamailio's dispatcher can load lives
//! here once, so a change to it reaches every user through the compiler.
//!
//! - [`Destination`]: one line of `dispatcher.list` minus its set id,
//!   checked the way Kamailio's loader reads it back;
//! - [`Snapshot`]: every set in canonical order, with a version that is a
//!   hash of the content (equal truth, equal version, on every feeder);
//! - [`Lists`]: what a snapshot carries beside dispatcher sets, rtpengine
//!   [`Relay`]s by set id and SIP [`domain`]s by did; [`dbtext`]: the
//!   `db_text` tables the rtpengine and domain modules load them from;
//! - [`list`]: the `dispatcher.list` line format, for text and for the raw
//!   bytes of a list read from Kamailio's memory;
//! - [`pb`]: the `dsfeed.v1` wire form of a snapshot and the requests a
//!   client answers with, and which stream errors are final;
//! - [`Endpoint`]: the one grammar for a feed address, wherever a user
//!   types one; [`Backoff`]: the one retry schedule; [`error_chain`]: an
//!   error and its causes on one line;
//! - [`atomic`]: replacing a list file atomically; [`secret`]: reading a
//!   token file only its owner can read; [`dns`]: the wire and config
//!   parts of the module's non-blocking name lookup.
//!
//! It has no async runtime and no Kubernetes types, so the Kamailio module
//! can link it.

pub mod atomic;
mod backoff;
pub mod dbtext;
mod destination;
pub mod dns;
pub mod domain;
mod endpoint;
mod error;
pub mod list;
mod lists;
pub mod pb;
mod relay;
pub mod secret;
mod snapshot;

pub use backoff::{Backoff, Delays};
pub use destination::{
    DEFAULT_PORT, Destination, FLAG_DISABLED, KNOWN_FLAGS, MAX_DESTINATION_LINE, MAX_INT, MAX_LINE,
    STATE_FLAGS, SetId, split_host_port, validate_set_id,
};
pub use endpoint::Endpoint;
pub use error::{
    InvalidBackoff, InvalidDestination, InvalidDomain, InvalidEndpoint, InvalidRelay,
    InvalidSnapshot, error_chain,
};
pub use lists::{ListKind, Lists};
pub use relay::{DEFAULT_RTPENGINE_PORT, DEFAULT_WEIGHT, Relay, RelayMap};
pub use snapshot::{SetMap, Snapshot};
