//! Shared by the `module*` tests: a real Kamailio with `dsfeed.so`, and a
//! scriptable feeder serving the real gRPC contract.

#![allow(dead_code)]

pub mod feeder;
pub mod kamailio;
