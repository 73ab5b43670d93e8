//! What Kamailio's module loader reads (`module_version`, `module_flags`,
//! `exports`) and every function it calls. Each callback is a thin
//! `extern "C"` shell around `guard::call`.

#![allow(non_upper_case_globals)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::PathBuf;
use std::ptr::{null, null_mut};
use std::sync::{OnceLock, PoisonError};

use kamailio_sys as sys;

use super::dispatcher::{KamailioDispatcher, Symbols};
use super::guard;
use super::rpc::{Reply, Struct};
use super::shm::SharedCell;
use crate::config::{Config, PARAMS, ParamValue};
use crate::error::InitError;
use crate::feed::{self, Host};
use crate::status::{LinkState, Status, StatusRecord, StatusSink, rfc3339};

/// Read-only tables handed to Kamailio, which only reads them.
#[repr(transparent)]
pub struct Exported<T>(T);

// SAFETY: [api] the wrapped tables hold pointers to other immutable statics
// and to functions; nothing ever writes through them, so sharing is sound.
unsafe impl<T> Sync for Exported<T> {}

/// Must equal the core's `SER_FULL_VERSION` (the loader compares them).
#[unsafe(no_mangle)]
pub static module_version: Exported<*const c_char> = Exported(sys::SER_FULL_VERSION.as_ptr());

/// Must equal the core's `SER_COMPILE_FLAGS`.
#[unsafe(no_mangle)]
pub static module_flags: Exported<*const c_char> = Exported(sys::SER_COMPILE_FLAGS.as_ptr());

#[unsafe(no_mangle)]
pub static exports: Exported<sys::module_exports_t> = Exported(sys::module_exports_t {
    name: c"dsfeed".as_ptr().cast_mut(),
    dlflags: 0,
    cmds: null_mut(),
    params: (&raw const PARAM_EXPORTS.0)
        .cast::<sys::param_export_t>()
        .cast_mut(),
    rpc_methods: (&raw const RPC_EXPORTS.0)
        .cast::<sys::rpc_export_t>()
        .cast_mut(),
    pv_items: null_mut(),
    response_f: None,
    init_mod_f: Some(mod_init),
    init_child_f: Some(child_init),
    destroy_mod_f: None,
});

/// A `&'static CStr` from a string literal.
macro_rules! cstr {
    ($text:literal) => {
        match CStr::from_bytes_with_nul(concat!($text, "\0").as_bytes()) {
            Ok(text) => text,
            Err(_) => panic!("literal has an inner NUL"),
        }
    };
}

/// Declares the modparams: one setter per name (Kamailio does not tell a
/// setter which parameter it is for) and the `param_export_t` table.
macro_rules! params {
    ($($setter:ident: $name:literal, $kind:ident;)*) => {
        $(
            unsafe extern "C" fn $setter(kind: sys::modparam_t, value: *mut c_void) -> c_int {
                // SAFETY: [api] Kamailio calls a setter with the value of the
                // type declared in the table below, valid for the call.
                unsafe { set_param($name, kind, value) }
            }
        )*

        static PARAM_EXPORTS: Exported<[sys::param_export_t; params!(@count $($name)*) + 1]> =
            Exported([
                $(sys::param_export_t {
                    name: CStr::as_ptr(cstr!($name)).cast_mut(),
                    type_: params!(@kind $kind) | sys::DSFEED_PARAM_USE_FUNC,
                    param_pointer: $setter as *mut c_void,
                },)*
                sys::param_export_t { name: null_mut(), type_: 0, param_pointer: null_mut() },
            ]);
    };
    (@count) => { 0 };
    (@count $head:literal $($tail:literal)*) => { 1 + params!(@count $($tail)*) };
    (@kind Str) => { sys::PARAM_STRING };
    (@kind Int) => { sys::PARAM_INT };
}

params! {
    param_feeder: "feeder", Str;
    param_node_id: "node_id", Str;
    param_sets: "sets", Str;
    param_tls_ca: "tls_ca", Str;
    param_tls_cert: "tls_cert", Str;
    param_tls_key: "tls_key", Str;
    param_tls_domain: "tls_domain", Str;
    param_token: "token", Str;
    param_token_file: "token_file", Str;
    param_insecure: "insecure", Int;
    param_min_swap_interval_ms: "min_swap_interval_ms", Int;
    param_list_file_sync: "list_file_sync", Int;
    param_reconnect_min_ms: "reconnect_min_ms", Int;
    param_reconnect_max_ms: "reconnect_max_ms", Int;
    param_reconnect_jitter_pct: "reconnect_jitter_pct", Int;
}

static STATUS_DOC: Exported<[*const c_char; 2]> = Exported([
    c"dsfeed feed status: connection, applied version, sets, swaps, last error".as_ptr(),
    null(),
]);

static RPC_EXPORTS: Exported<[sys::rpc_export_t; 2]> = Exported([
    sys::rpc_export_t {
        name: c"dsfeed.status".as_ptr(),
        function: Some(rpc_status),
        doc_str: (&raw const STATUS_DOC.0).cast::<*const c_char>().cast_mut(),
        flags: 0,
    },
    sys::rpc_export_t {
        name: null(),
        function: None,
        doc_str: null_mut(),
        flags: 0,
    },
]);

/// What `mod_init` set up; inherited by every process Kamailio forks.
struct Module {
    config: Config,
    dispatcher: Symbols,
    list_file: Option<PathBuf>,
    status: SharedCell<StatusRecord>,
}

static MODULE: OnceLock<Module> = OnceLock::new();

/// # Safety
/// `value` is what Kamailio passes a setter of type `kind`: a
/// NUL-terminated string for `PARAM_STRING`, an int in the pointer for
/// `PARAM_INT`.
unsafe fn set_param(name: &'static str, kind: sys::modparam_t, value: *mut c_void) -> c_int {
    guard::call(
        name,
        || -1,
        || {
            let value = if kind & sys::PARAM_STRING != 0 {
                if value.is_null() {
                    log::error!("modparam dsfeed {name}: no value");
                    return -1;
                }
                // SAFETY: [contract] per this function's contract.
                match unsafe { CStr::from_ptr(value.cast::<c_char>()) }.to_str() {
                    Ok(text) => ParamValue::Str(text),
                    Err(_) => {
                        log::error!("modparam dsfeed {name}: not UTF-8");
                        return -1;
                    }
                }
            } else {
                // Kamailio passes an int parameter as the pointer's value.
                ParamValue::Int(i64::from(value as isize as c_int))
            };
            let mut params = PARAMS.lock().unwrap_or_else(PoisonError::into_inner);
            match params.set(name, value) {
                Ok(()) => 0,
                Err(err) => {
                    log::error!("{err}");
                    -1
                }
            }
        },
    )
}

unsafe extern "C" fn mod_init() -> c_int {
    guard::call(
        "mod_init",
        || -1,
        || match init() {
            Ok(()) => 0,
            Err(err) => {
                log::error!("{}", dsfeed_model::error_chain(&err));
                -1
            }
        },
    )
}

fn init() -> Result<(), InitError> {
    let params = PARAMS.lock().unwrap_or_else(PoisonError::into_inner);
    let config = params.build(|| {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    })?;
    drop(params);
    let (dispatcher, dispatcher_params) = Symbols::resolve()?;
    if dispatcher_params.uses_db {
        if config.list_file_sync {
            return Err(InitError::SyncWithDb);
        }
        log::warn!(
            "the dispatcher loads from db_url: dispatcher.reload would replace the feed's sets \
             with the database's until the next snapshot"
        );
    }
    let list_file = config.list_file_sync.then_some(dispatcher_params.list_file);
    if let Some(path) = &list_file {
        crate::listfile::remove_stale(path);
    }
    let status = SharedCell::new(StatusRecord::default()).ok_or(InitError::NoShm)?;
    // SAFETY: [process] mod_init runs once in the main process before any
    // fork, which is where Kamailio expects extra processes and cfg children
    // to be registered; child_init forks exactly this one process.
    unsafe {
        sys::register_procs(1);
        sys::cfg_register_child(1);
    }
    log::info!(
        "feeder {} as node {:?}, sets {}, min_swap_interval {:?}{}",
        config.feeder_list(),
        config.node_id,
        if config.sets.is_empty() {
            "all".to_owned()
        } else {
            format!("{:?}", config.sets)
        },
        config.min_swap_interval,
        match &list_file {
            Some(path) => format!(", syncing {}", path.display()),
            None => String::new(),
        }
    );
    let module = Module {
        config,
        dispatcher,
        list_file,
        status,
    };
    if MODULE.set(module).is_err() {
        log::warn!("mod_init called twice; keeping the first configuration");
    }
    Ok(())
}

unsafe extern "C" fn child_init(rank: c_int) -> c_int {
    guard::call(
        "child_init",
        || -1,
        || {
            if rank != sys::PROC_MAIN as c_int {
                return 0;
            }
            let Some(module) = MODULE.get() else {
                log::error!("child_init before a successful mod_init");
                return -1;
            };
            // SAFETY: [process] child_init(PROC_MAIN) runs in the main
            // process after mod_init registered this one extra process;
            // fork_process copies the description.
            let pid = unsafe {
                sys::fork_process(sys::PROC_NOCHLDINIT, c"dsfeed feed".as_ptr().cast_mut(), 1)
            };
            match pid {
                0 => feed_process(module),
                ..0 => {
                    log::error!("cannot fork the dsfeed feed process");
                    -1
                }
                _ => 0,
            }
        },
    )
}

/// The forked feed process. It never returns, not even on an error or a
/// panic: returning would run Kamailio's main-process code (its error path,
/// its main loop) in this child. It exits with `_exit` instead, which
/// Kamailio's main process sees as a child that died, and shuts down.
fn feed_process(module: &'static Module) -> ! {
    let outcome = std::panic::catch_unwind(|| {
        crate::testhook::maybe_panic("feed_process");
        // SAFETY: [process] in the new process, once, before any cfg
        // access, as the cfg framework requires of a child registered with
        // cfg_register_child.
        if unsafe { sys::cfg_child_init() } != 0 {
            log::error!("cfg_child_init failed in the dsfeed feed process; exiting");
            return;
        }
        let user_agent = format!(
            "dsfeed.so/{} ({})",
            env!("CARGO_PKG_VERSION"),
            sys::SER_FULL_VERSION.to_string_lossy()
        );
        feed::run_forever(
            module.config.clone(),
            user_agent,
            module.list_file.clone(),
            || {
                (
                    KamailioDispatcher::new(module.dispatcher),
                    ShmStatus(&module.status),
                    KamailioProcess,
                )
            },
        )
    });
    if let Err(payload) = outcome {
        log::error!(
            "the dsfeed feed process failed (panic: {}); exiting",
            guard::panic_message(payload.as_ref())
        );
    }
    // SAFETY: [process] `_exit` ends this forked child without running
    // Kamailio's atexit handlers or flushing stdio buffers it inherited
    // from the main process.
    unsafe { libc::_exit(1) }
}

/// Publishes the feed's status into shm for `dsfeed.status`.
struct ShmStatus(&'static SharedCell<StatusRecord>);

impl StatusSink for ShmStatus {
    fn publish(&mut self, status: &Status) {
        self.0.store(&StatusRecord::from_status(status));
    }
}

/// The feed process's duties towards Kamailio.
struct KamailioProcess;

impl Host for KamailioProcess {
    fn turn(&mut self) {
        // SAFETY: [process] cfg_update in a process registered with
        // cfg_register_child, after its cfg_child_init, on its own thread.
        unsafe { sys::dsfeed_cfg_update() };
    }
}

unsafe extern "C" fn rpc_status(rpc: *mut sys::rpc_t, ctx: *mut c_void) {
    // SAFETY: [api] Kamailio calls an RPC function with a valid rpc_t and
    // context for the duration of the call, which is all `reply` is used for.
    let Some(reply) = (unsafe { Reply::new(rpc, ctx) }) else {
        return;
    };
    guard::call(
        "dsfeed.status",
        || reply.fault(500, "dsfeed.status failed (internal error, see the log)"),
        || status_reply(&reply),
    );
}

fn status_reply(reply: &Reply<'_>) {
    let Some(module) = MODULE.get() else {
        reply.fault(500, "dsfeed is not initialised");
        return;
    };
    let (status, truncated) = module.status.load().to_status();
    let Some(top) = reply.structure() else {
        reply.fault(500, "cannot build the reply");
        return;
    };
    let config = &module.config;
    let time = |at: Option<std::time::SystemTime>| at.map(rfc3339).unwrap_or_default();
    top.str("state", status.state.as_str());
    top.int("connected", i64::from(status.state == LinkState::Connected));
    // The feeder in use (or being tried), and the list it is taken from.
    let feeders = config.feeder_list();
    let current = match status.feeder.as_str() {
        "" => config.feeders[0].to_string(),
        current => current.to_owned(),
    };
    top.str("feeder", &current);
    top.str("feeders", &feeders);
    top.str("node_id", &config.node_id);
    top.str("applied_version", &status.applied_version);
    top.str("applied_at", &time(status.applied_at));
    if let Some(sets) = top.structure("sets") {
        add_sets(&sets, &status);
    }
    if truncated {
        top.int("sets_truncated", 1);
    }
    top.int("destinations", saturating(status.destinations as u64));
    top.int("swaps", saturating(status.swaps));
    top.int("nacks", saturating(status.nacks));
    top.int("connects", saturating(status.connects));
    top.str("last_error", &status.last_error);
    top.str("last_error_at", &time(status.last_error_at));
    top.str("retrying_version", &status.retrying_version);
    top.int("retries", saturating(status.retries));
    top.int(
        "min_swap_interval_ms",
        saturating(config.min_swap_interval.as_millis() as u64),
    );
    top.int("list_file_sync", i64::from(module.list_file.is_some()));
}

fn add_sets(sets: &Struct<'_>, status: &Status) {
    for (id, count) in &status.sets {
        sets.int(&id.to_string(), saturating(*count as u64));
    }
}

fn saturating(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
