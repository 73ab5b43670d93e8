//! The boundary with Kamailio, and the only `unsafe` code in the crate.
//!
//! - `exports`: the symbols Kamailio's loader reads and every function it
//!   calls (modparams, `mod_init`, `child_init`, the RPC);
//! - `guard`: the one panic guard all of them run through;
//! - `logger`: the `log` facade routed to Kamailio's logger;
//! - `loadcheck`: names both versions when loaded into another Kamailio;
//! - `dispatcher`: the stock dispatcher's loader and in-memory list;
//! - `shm`: a lock-guarded value in Kamailio's shared memory;
//! - `rpc`: a safe reply builder over `rpc_t`.
//!
//! Every `unsafe` block carries a `SAFETY:` comment; the invariants they
//! share are in `kamailio-module/SAFETY.md`.

#![allow(unsafe_code)]

mod dispatcher;
mod exports;
mod guard;
mod loadcheck;
mod logger;
mod rpc;
mod shm;
