//! The stock dispatcher module, reached through its loaded `dispatcher.so`:
//! its loader (`ds_load_list`), its current list (`ds_get_list`) and its
//! `list_file` / `db_url` parameters, looked up with `dlsym` on the handle
//! Kamailio keeps for the module (modules are loaded RTLD_LOCAL, so their
//! symbols are not global).

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char, c_void};
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;

use kamailio_sys as sys;

use crate::engine::{Dispatcher, ListId};
use crate::error::{ApplyError, InitError};
use dsfeed_model::list::{RawDestination, RawSets};

/// The dispatcher's entry points, resolved once in `mod_init`.
#[derive(Clone, Copy)]
pub struct Symbols {
    load_list: unsafe extern "C" fn(*mut c_char) -> i32,
    get_list: unsafe extern "C" fn() -> *mut sys::ds_set_t,
}

/// What `mod_init` learns about the dispatcher's configuration.
pub struct DispatcherParams {
    /// Its `list_file` parameter.
    pub list_file: PathBuf,
    /// Whether it loads from a database (`db_url`), in which case
    /// `dispatcher.reload` would bring the database's sets back.
    pub uses_db: bool,
}

impl Symbols {
    /// Finds the loaded dispatcher module and its symbols. Runs in
    /// `mod_init`, after every `loadmodule`.
    pub fn resolve() -> Result<(Symbols, DispatcherParams), InitError> {
        // SAFETY: [api] find_module_by_name only reads Kamailio's module
        // list, complete once the configuration is parsed (before mod_init).
        let module = unsafe { sys::find_module_by_name(c"dispatcher".as_ptr().cast_mut()) };
        if module.is_null() {
            return Err(InitError::NoDispatcher);
        }
        // SAFETY: [api] a non-null module from Kamailio's list, alive for the
        // process's life; `handle` is its dlopen handle.
        let handle = unsafe { (*module).handle };
        let load_list = lookup(handle, c"ds_load_list")?;
        let get_list = lookup(handle, c"ds_get_list")?;
        let list_file = lookup(handle, c"dslistfile")?;
        let db_url = lookup(handle, c"ds_db_url")?;
        // SAFETY: [build] the symbols were checked against dispatch.h's types
        // at build time (ds_load_list_f, ds_get_list_f in kamailio-sys's
        // shim); a function's address is the function.
        let symbols = unsafe {
            Symbols {
                load_list: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*mut c_char) -> i32,
                >(load_list),
                get_list: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn() -> *mut sys::ds_set_t,
                >(get_list),
            }
        };
        // SAFETY: [build] [api] `dslistfile` is dispatcher.c's `char
        // *dslistfile` and `ds_db_url` its `str ds_db_url`; both are final
        // once modparams are parsed, and the string dslistfile points to
        // lives as long as the module.
        let params = unsafe {
            let file = *list_file.cast::<*const c_char>();
            let db = *db_url.cast::<sys::str_>();
            DispatcherParams {
                list_file: PathBuf::from(if file.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(file).to_string_lossy().into_owned()
                }),
                uses_db: !db.s.is_null() && db.len > 0,
            }
        };
        Ok((symbols, params))
    }
}

fn lookup(handle: *mut c_void, name: &'static CStr) -> Result<*mut c_void, InitError> {
    // SAFETY: [api] `handle` is a live dlopen handle; dlsym/dlerror are
    // thread-safe and the name is NUL-terminated.
    let address = unsafe {
        libc::dlerror();
        libc::dlsym(handle, name.as_ptr())
    };
    if address.is_null() {
        return Err(InitError::Symbol(name.to_string_lossy().into_owned()));
    }
    Ok(address)
}

/// The dispatcher as the apply engine drives it, from the feed process.
pub struct KamailioDispatcher {
    symbols: Symbols,
}

impl KamailioDispatcher {
    pub fn new(symbols: Symbols) -> Self {
        KamailioDispatcher { symbols }
    }

    fn root(&self) -> *mut sys::ds_set_t {
        // SAFETY: [build] ds_get_list only reads the shm index of the current
        // list.
        unsafe { (self.symbols.get_list)() }
    }
}

impl Dispatcher for KamailioDispatcher {
    fn list_id(&self) -> ListId {
        ListId(self.root() as usize)
    }

    fn live(&self) -> RawSets {
        let mut sets = RawSets::new();
        // SAFETY: [single-writer] the current list is only freed by the
        // next load, and the module is the only writer, running in this
        // very process: nothing frees it while we walk it. Flags may
        // change concurrently (probing), which only makes a value slightly
        // stale.
        unsafe { walk(self.root(), &mut sets) };
        sets
    }

    fn counts(&self) -> BTreeMap<i32, usize> {
        let mut counts = BTreeMap::new();
        // SAFETY: [single-writer] as in `live`: only this process's next
        // load frees the current list.
        unsafe { count(self.root(), &mut counts) };
        counts
    }

    fn load(&mut self, list: &[u8]) -> Result<(), ApplyError> {
        // A memfd, read back through /proc/self/fd: no file on disk.
        let fd = rustix::fs::memfd_create(c"dsfeed-list", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|errno| ApplyError::ListFile(errno.into()))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(list).map_err(ApplyError::ListFile)?;
        let path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .expect("a path of digits has no NUL");
        // SAFETY: [process] ds_load_list reads the NUL-terminated path (it
        // does not keep or modify it) and builds the new list in shm, from
        // this Kamailio process's only thread; [single-writer] the pacing
        // in `feed` and the identity checks in `engine` keep it from
        // freeing a list a reader may hold.
        let rc = unsafe { (self.symbols.load_list)(path.as_ptr().cast_mut()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(ApplyError::Refused)
        }
    }
}

/// Collects the sets of the AVL tree under `node`, exactly as they are in
/// memory (bytes, signed ints): a set the feed does not carry is written
/// back from this.
///
/// # Safety
/// `node` is null or a live `ds_set_t` tree built by the dispatcher, not
/// freed during the call.
unsafe fn walk(node: *const sys::ds_set_t, sets: &mut RawSets) {
    // SAFETY: [contract] per this function's contract.
    let Some(set) = (unsafe { node.as_ref() }) else {
        return;
    };
    for child in set.next {
        // SAFETY: [contract] [build] children of a live tree are live trees
        // or null.
        unsafe { walk(child, sets) };
    }
    let count = usize::try_from(set.nr).unwrap_or(0);
    let mut dests = Vec::with_capacity(count);
    let mut dest = set.dlist.cast_const();
    while dests.len() < count {
        // SAFETY: [build] `dlist` holds `nr` destinations linked through
        // `next`.
        let Some(d) = (unsafe { dest.as_ref() }) else {
            break;
        };
        dests.push(RawDestination {
            // SAFETY: [build] the dispatcher's `str`s point into shm it owns.
            uri: unsafe { str_bytes(&d.uri) },
            flags: d.flags,
            priority: d.priority,
            // SAFETY: [build] as above.
            attrs: unsafe { str_bytes(&d.attrs.body) },
        });
        dest = d.next;
    }
    sets.insert(set.id, dests);
}

/// Each set's destination count (`nr`) in the AVL tree under `node`.
///
/// # Safety
/// As for [`walk`].
unsafe fn count(node: *const sys::ds_set_t, counts: &mut BTreeMap<i32, usize>) {
    // SAFETY: [contract] per this function's contract.
    let Some(set) = (unsafe { node.as_ref() }) else {
        return;
    };
    for child in set.next {
        // SAFETY: [contract] [build] children of a live tree are live trees
        // or null.
        unsafe { count(child, counts) };
    }
    counts.insert(set.id, usize::try_from(set.nr).unwrap_or(0));
}

/// # Safety
/// `s.s` is null or points to `s.len` readable bytes.
unsafe fn str_bytes(s: &sys::str_) -> Vec<u8> {
    if s.s.is_null() || s.len <= 0 {
        return Vec::new();
    }
    // SAFETY: [contract] per this function's contract.
    unsafe { std::slice::from_raw_parts(s.s.cast::<u8>(), s.len as usize) }.to_vec()
}
