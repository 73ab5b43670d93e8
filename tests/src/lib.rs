//! Harness for end-to-end tests: a real Kamailio on its own ports.

pub mod fake_consul;
