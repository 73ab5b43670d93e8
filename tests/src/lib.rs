//! Harness for end-to-end tests: the real Kamailio, the `dsfeed` binary
//! and sipp, each on its own ports and stopped when the test ends; and fake
//! servers that stand in for the sources (Consul).

pub mod fake_consul;
pub mod feeder;
mod kamailio;
pub mod sipp;

pub use kamailio::{HarnessError, Kamailio, KamailioBuilder, ParamValue};
