//! A deliberate panic for tests: with `DSFEED_TEST_PANIC=NAME` in
//! Kamailio's environment, the first pass through point NAME in each
//! process panics. Inert otherwise; it exists so a test can show that a
//! panic never crosses into Kamailio. The points: every function Kamailio
//! calls, by its name (`mod_init`, `child_init`, `dsfeed.status`, a
//! modparam's name); `feed_process`, the forked feed process before it
//! starts the feed; `feed`, the start of the feed loop; `swapped`, right
//! after a successful swap.

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
