//! Harness for end-to-end tests: a real Kamailio on its own ports.

mod kamailio;

pub use kamailio::{HarnessError, Kamailio, KamailioBuilder, ParamValue};
