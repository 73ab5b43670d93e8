//! dsfeed: keeps Kamailio's dispatcher sets equal to the truth.
//!
//! Data flows one way: [`sources`] publish views, the [`hub`] merges them into
//! one canonical [`dsfeed_model::Snapshot`], and [`sinks`] deliver it to Kamailio;
//! the [`feed`] streams it to many Kamailios over gRPC.
//!
//! This crate is also a library, the one the `dsfeed` binary is built from:
//! a feeder of your own is a [`hub::Hub`] with sources ([`sources::Source`])
//! and sinks ([`sinks::Sink`]) of your own beside the built-in ones, which
//! use nothing but that public surface. `examples/custom_components.rs`
//! plugs one of each in under 100 lines.
//!
//! Stable API: [`sources::Source`], [`sources::Publisher`],
//! [`sources::hold`], [`sinks::Sink`], [`sinks::Snapshots`], [`hub::Hub`]
//! and [`Error`] (non-exhaustive), with the model crate's `Destination`,
//! `Snapshot`, `SetMap` and `SetId`. The rest is public for the binary and
//! the tests and follows the command line it mirrors.

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
