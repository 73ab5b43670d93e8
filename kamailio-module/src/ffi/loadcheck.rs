//! Says which Kamailio dsfeed.so was built for when it is loaded into
//! another one, and how to get the right build.
//!
//! Kamailio's loader refuses such a module itself, after `dlopen`:
//! "module version mismatch for PATH; core: kamailio 6.0.1 (x86_64/linux);
//! module: kamailio 5.6.3 (x86_64/linux)", or for equal versions built
//! differently two long `flags` lines to compare by eye. Neither says what
//! to do. A constructor runs inside `dlopen`, before that check, so it can
//! add one line that names both versions, the differing flags and the fix;
//! Kamailio then refuses the module and exits as before.
//!
//! The constructor calls nothing of Kamailio's, since the layouts and
//! functions it was built against may be the wrong ones: it reads three
//! symbols every Kamailio since 5.x exports with stable types (`full_version`
//! and `ver_flags`, `const char[]`; `log_stderr`, `int`) and writes to
//! stderr or syslog(3) itself, where Kamailio's own messages go. Outside
//! Kamailio (a unit test binary) none of the symbols exist and it does
//! nothing.

use std::ffi::{CStr, CString, c_char, c_int};
use std::io::Write as _;

use kamailio_sys as sys;

#[used]
#[unsafe(link_section = ".init_array")]
static CHECK_ON_LOAD: extern "C" fn() = check_on_load;

extern "C" fn check_on_load() {
    // Nothing may unwind out of a constructor; a failed check only loses
    // the extra line, Kamailio's own check still runs.
    let _ = std::panic::catch_unwind(|| {
        let (Some(core_version), Some(core_flags)) =
            (core_string(c"full_version"), core_string(c"ver_flags"))
        else {
            return;
        };
        let ours = (
            sys::SER_FULL_VERSION.to_string_lossy(),
            sys::SER_COMPILE_FLAGS.to_string_lossy(),
        );
        if let Some(message) = mismatch(&ours.0, &ours.1, &core_version, &core_flags) {
            report(&message);
        }
    });
}

/// A `const char[]` the Kamailio core exports, if this process is one.
fn core_string(name: &CStr) -> Option<String> {
    // SAFETY: [build] dlsym with RTLD_DEFAULT only looks the name up in the
    // objects already loaded; it is allowed during dlopen.
    let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if symbol.is_null() {
        return None;
    }
    // SAFETY: [build] in every Kamailio release these two symbols are
    // NUL-terminated `const char[]` arrays (core/ver.c), valid for the
    // process's lifetime.
    let text = unsafe { CStr::from_ptr(symbol.cast::<c_char>()) };
    Some(text.to_string_lossy().into_owned())
}

/// The extra line, if the core is not the Kamailio this module was built
/// for. `core_version` is the core's `full_version`: `SER_FULL_VERSION`
/// followed by a space and the repository version (empty in Debian's
/// builds).
fn mismatch(
    our_version: &str,
    our_flags: &str,
    core_version: &str,
    core_flags: &str,
) -> Option<String> {
    let core_version = core_version.trim_end();
    let same_version = core_version
        .strip_prefix(our_version)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '));
    let fix = "build dsfeed.so for this Kamailio: `make module` on a host where it is \
               installed, `make module KAMAILIO_ROOT=DIR` for one installed in the root DIR, \
               or KAMAILIO_SRC for another build (kamailio-module/README.md, \"Building\")";
    if !same_version {
        return Some(format!(
            "dsfeed.so was built for {our_version} but this is {core_version}: Kamailio will \
             refuse to load it; {fix}"
        ));
    }
    if our_flags == core_flags {
        return None;
    }
    let split =
        |flags: &str| -> Vec<String> { flags.split(',').map(|f| f.trim().to_owned()).collect() };
    let (ours, core) = (split(our_flags), split(core_flags));
    let only = |a: &[String], b: &[String]| -> String {
        let names: Vec<&str> = a
            .iter()
            .filter(|f| !b.contains(f))
            .map(String::as_str)
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    Some(format!(
        "dsfeed.so was built for {our_version} with other compile flags than this \
         {core_version} (only the core has: {}; only dsfeed.so has: {}): Kamailio will refuse \
         to load it; {fix}",
        only(&core, &ours),
        only(&ours, &core),
    ))
}

/// Writes `message` where Kamailio's loader writes its own refusal: stderr
/// when it logs there (`-E`, `log_stderror=yes`), else syslog.
fn report(message: &str) {
    // SAFETY: [build] looked up as above; `log_stderr` is a plain `int` in every
    // Kamailio release (core/dprint.c).
    let log_stderr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"log_stderr".as_ptr()) };
    // SAFETY: [build] a valid, aligned `int` of the core when non-null; read once
    // by the only thread that exists during loading.
    let to_stderr = !log_stderr.is_null() && unsafe { *log_stderr.cast::<c_int>() } != 0;
    if to_stderr {
        let line = format!(
            " 0({}) ERROR: dsfeed [load]: {message}\n",
            std::process::id()
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    } else if let Ok(text) = CString::new(format!("ERROR: dsfeed [load]: {message}")) {
        // SAFETY: [contract] a constant format and a NUL-terminated argument.
        unsafe { libc::syslog(libc::LOG_ERR, c"%s".as_ptr(), text.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::mismatch;

    const V56: &str = "kamailio 5.6.3 (x86_64/linux)";
    const V60: &str = "kamailio 6.0.1 (x86_64/linux)";
    const FLAGS: &str = "USE_TCP, USE_TLS, PKG_MALLOC, Q_MALLOC";
    const FLAGS_JOIN: &str = "USE_TCP, USE_TLS, PKG_MALLOC, MEM_JOIN_FREE, Q_MALLOC";

    #[test]
    fn the_same_kamailio_says_nothing_whatever_its_repository_suffix() {
        assert_eq!(mismatch(V60, FLAGS, V60, FLAGS), None);
        assert_eq!(mismatch(V60, FLAGS, &format!("{V60} "), FLAGS), None);
        assert_eq!(mismatch(V60, FLAGS, &format!("{V60} 1a2b3c"), FLAGS), None);
    }

    #[test]
    fn another_version_is_named_with_ours_and_the_fix() {
        let message = mismatch(V56, FLAGS, &format!("{V60} "), FLAGS).unwrap();
        assert!(
            message.starts_with(&format!("dsfeed.so was built for {V56} but this is {V60}:")),
            "{message}"
        );
        assert!(
            message.contains("make module KAMAILIO_ROOT=DIR"),
            "{message}"
        );
    }

    #[test]
    fn other_flags_are_named_one_by_one() {
        let message = mismatch(V56, FLAGS, V56, FLAGS_JOIN).unwrap();
        assert!(
            message.contains("only the core has: MEM_JOIN_FREE; only dsfeed.so has: none"),
            "{message}"
        );
    }
}
