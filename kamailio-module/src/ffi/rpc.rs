//! A safe reply builder over Kamailio's `rpc_t`, the interface every RPC
//! transport (binrpc for kamcmd, jsonrpcs, xmlrpc) implements.

use std::ffi::{CString, c_int, c_void};

use kamailio_sys as sys;

/// The reply of one RPC call.
pub struct Reply<'a> {
    rpc: &'a sys::rpc_t,
    ctx: *mut c_void,
}

/// A structure in the reply (or nested in another).
pub struct Struct<'a> {
    rpc: &'a sys::rpc_t,
    handle: *mut c_void,
}

/// Kamailio takes `char *`; our strings never contain NUL, but a stray
/// one must not truncate silently or fail the reply.
fn c_text(text: &str) -> CString {
    CString::new(text.replace('\0', "\\0")).unwrap_or_default()
}

impl<'a> Reply<'a> {
    /// # Safety
    /// `rpc` and `ctx` are the arguments Kamailio passed to an RPC function
    /// and the returned reply is used only during that call.
    pub unsafe fn new(rpc: *mut sys::rpc_t, ctx: *mut c_void) -> Option<Self> {
        // SAFETY: [contract] per this function's contract, `rpc` is null or
        // valid for 'a.
        let rpc = unsafe { rpc.as_ref() }?;
        Some(Reply { rpc, ctx })
    }

    pub fn fault(&self, code: i32, message: &str) {
        let message = c_text(message);
        if let Some(fault) = self.rpc.fault {
            // SAFETY: [api] `fault` is the transport's printf-like fault
            // function; "%s" consumes exactly the one NUL-terminated string
            // given.
            unsafe { fault(self.ctx, code, c"%s".as_ptr().cast_mut(), message.as_ptr()) };
        }
    }

    /// Starts the reply's top-level structure.
    pub fn structure(&self) -> Option<Struct<'a>> {
        let add = self.rpc.add?;
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: [api] "{" makes `add` store a new structure's handle
        // through the one `void **` argument.
        let rc = unsafe { add(self.ctx, c"{".as_ptr().cast_mut(), &raw mut handle) };
        (rc >= 0 && !handle.is_null()).then_some(Struct {
            rpc: self.rpc,
            handle,
        })
    }
}

impl Struct<'_> {
    pub fn str(&self, name: &str, value: &str) {
        let (name, value) = (c_text(name), c_text(value));
        if let Some(struct_add) = self.rpc.struct_add {
            // SAFETY: [api] "s" takes a member name and one NUL-terminated
            // string; the transport copies both before returning.
            unsafe {
                struct_add(
                    self.handle,
                    c"s".as_ptr().cast_mut(),
                    name.as_ptr(),
                    value.as_ptr(),
                )
            };
        }
    }

    /// Adds an integer, clamped to the C `int` every transport carries.
    pub fn int(&self, name: &str, value: i64) {
        let name = c_text(name);
        let value =
            c_int::try_from(value).unwrap_or(if value < 0 { c_int::MIN } else { c_int::MAX });
        if let Some(struct_add) = self.rpc.struct_add {
            // SAFETY: [api] "d" takes a member name and one C int.
            unsafe { struct_add(self.handle, c"d".as_ptr().cast_mut(), name.as_ptr(), value) };
        }
    }

    /// Adds a nested structure.
    pub fn structure(&self, name: &str) -> Option<Struct<'_>> {
        let struct_add = self.rpc.struct_add?;
        let name = c_text(name);
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: [api] "{" takes a member name and stores the nested
        // structure's handle through the `void **` argument.
        let rc = unsafe {
            struct_add(
                self.handle,
                c"{".as_ptr().cast_mut(),
                name.as_ptr(),
                &raw mut handle,
            )
        };
        (rc >= 0 && !handle.is_null()).then_some(Struct {
            rpc: self.rpc,
            handle,
        })
    }
}
