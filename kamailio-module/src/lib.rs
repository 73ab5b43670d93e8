//! `dsfeed.so`: a Kamailio 5.6 module that keeps the stock `dispatcher`
//! module's sets equal to what a dsfeed feeder streams over gRPC.
//!
//! In `mod_init` it checks its parameters, finds the dispatcher and
//! registers one extra process; in that process (forked from `child_init`)
//! a single-threaded tokio runtime holds the feed stream (`feed`) and each
//! snapshot becomes one paced swap of the dispatcher's list (`engine`,
//! `pacing`). `dsfeed.status` reports from shared memory (`status`).
//!
//! All unsafe code is in `ffi`; see `kamailio-module/SAFETY.md` for the
//! Kamailio invariants it relies on.

#![deny(unsafe_code)]

mod config;
mod engine;
mod error;
mod feed;
mod ffi;
mod listfile;
mod pacing;
mod reconnect;
mod status;
mod testhook;
mod transport;
