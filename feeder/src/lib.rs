//! dsfeed: keeps Kamailio's dispatcher sets equal to the truth.
//!
//! Data flows one way: [`sources`] publish views, the [`hub`] merges them into
//! one canonical [`dsfeed_model::Snapshot`], and [`sinks`] deliver it to Kamailio;
//! the [`feed`] streams it to many Kamailios over gRPC.

pub mod check;
pub mod config;
pub mod error;
pub mod feed;
pub mod flag;
pub mod healthcheck;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod sinks;
pub mod sources;

pub use error::Error;
