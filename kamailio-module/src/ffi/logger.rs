//! The `log` facade routed to Kamailio's logger, so the module's messages
//! obey Kamailio's debug level, log destination (syslog or stderr) and
//! per-module level (`dsfeed`), like any C module's `LM_*`.

use std::ffi::CString;
use std::sync::Once;

use kamailio_sys as sys;

struct KamailioLogger;

static LOGGER: KamailioLogger = KamailioLogger;

/// Installs the logger and a panic hook that logs through it. Idempotent;
/// every guarded entry point calls it, so logging works from the first
/// `modparam` on.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
        std::panic::set_hook(Box::new(|info| {
            let payload = super::guard::panic_message(info.payload());
            match info.location() {
                Some(at) => log::error!("panic at {}:{}: {payload}", at.file(), at.line()),
                None => log::error!("panic: {payload}"),
            }
        }));
    });
}

fn kamailio_level(level: log::Level) -> i32 {
    match level {
        log::Level::Error => sys::L_ERR,
        log::Level::Warn => sys::L_WARN as i32,
        log::Level::Info => sys::L_INFO as i32,
        log::Level::Debug | log::Level::Trace => sys::L_DBG as i32,
    }
}

/// Our own records at any level; other crates' (rustls) only when they
/// warn, so Kamailio's debug level does not flood the log with TLS detail.
fn wanted(metadata: &log::Metadata<'_>) -> bool {
    metadata.target().starts_with("dsfeed") || metadata.level() <= log::Level::Warn
}

impl log::Log for KamailioLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // SAFETY: [process] reads this process's debug level (a plain
        // function of Kamailio's core); called on the thread that runs
        // Kamailio code.
        wanted(metadata)
            && unsafe { sys::dsfeed_log_enabled(kamailio_level(metadata.level())) != 0 }
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = record.target();
        let target = target.strip_prefix("dsfeed::").unwrap_or(target);
        let text = |s: String| CString::new(s.replace('\0', "\\0")).unwrap_or_default();
        let target = text(target.to_owned());
        let message = text(record.args().to_string());
        // SAFETY: [process] both strings are NUL-terminated and outlive the
        // call, which copies them into the log line.
        unsafe {
            sys::dsfeed_log(
                kamailio_level(record.level()),
                target.as_ptr(),
                message.as_ptr(),
            );
        }
    }

    fn flush(&self) {}
}
