//! Sinks: where snapshots go once the hub has merged them.

pub mod file;
