//! The one guard every function Kamailio calls runs through: the body runs
//! under `catch_unwind`, a panic is logged through Kamailio's logger and
//! becomes the caller's error value, so no panic ever unwinds into C.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::logger;
use crate::testhook;

/// Runs `body` for Kamailio's call into `entry`; on a panic, logs it and
/// returns `on_panic()` instead.
pub fn call<R>(entry: &str, on_panic: impl FnOnce() -> R, body: impl FnOnce() -> R) -> R {
    logger::install();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        testhook::maybe_panic(entry);
        body()
    }));
    match outcome {
        Ok(value) => value,
        Err(payload) => {
            log::error!(
                "{entry} failed (panic: {}); returning an error to Kamailio",
                panic_message(payload.as_ref())
            );
            on_panic()
        }
    }
}

/// The text of a panic payload (`panic!` with a string or format).
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}
