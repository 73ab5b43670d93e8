//! A deliberate panic for tests: with `DSFEED_TEST_PANIC=NAME` in
//! Kamailio's environment, the first call of entry point NAME in each
//! process panics (`mod_init`, `dsfeed.status`, `feed`, ...). Inert
//! otherwise; it exists so a test can show that a panic never crosses into
//! Kamailio.

use std::sync::atomic::{AtomicBool, Ordering};

static FIRED: AtomicBool = AtomicBool::new(false);

/// Panics if the environment asks for a panic in `entry` and none has
/// fired in this process yet.
pub fn maybe_panic(entry: &str) {
    let requested = std::env::var("DSFEED_TEST_PANIC").is_ok_and(|name| name == entry);
    if requested && !FIRED.swap(true, Ordering::Relaxed) {
        panic!("DSFEED_TEST_PANIC={entry}: panicking on purpose");
    }
}
