//! Harness for end-to-end tests: the real Kamailio, the `dsfeed` binary
//! and sipp, each on its own ports and stopped when the test ends.

pub mod feeder;
pub mod sipp;
