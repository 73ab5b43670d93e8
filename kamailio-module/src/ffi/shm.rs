//! A value in Kamailio's shared memory behind a Kamailio lock, for data one
//! process writes and others read (the feed process's status, read by
//! whichever process serves `dsfeed.status`).

use std::mem::{align_of, size_of};
use std::ptr::NonNull;

use kamailio_sys as sys;

#[repr(C)]
struct Shared<T> {
    lock: sys::gen_lock_t,
    value: T,
}

/// A `T` in shm. Allocated once in `mod_init`, before Kamailio forks, so
/// every process maps it at the same address; never freed (Kamailio tears
/// shm down at exit).
pub struct SharedCell<T: Copy + 'static> {
    shared: NonNull<Shared<T>>,
}

// SAFETY: [shm] the pointee lives in shm for the whole life of every Kamailio
// process and is only touched under its lock, so the handle may be used
// from any process (each process uses it from its single thread).
unsafe impl<T: Copy + Send + 'static> Send for SharedCell<T> {}
// SAFETY: [shm] as above; all access goes through `store`/`load`, which lock.
unsafe impl<T: Copy + Send + 'static> Sync for SharedCell<T> {}

impl<T: Copy + 'static> SharedCell<T> {
    /// Allocates the cell; `None` when shm is exhausted or misaligned.
    /// Must run in `mod_init` (the main process, before the fork).
    pub fn new(initial: T) -> Option<Self> {
        // SAFETY: [shm] [process] `dsfeed_shm_malloc` is Kamailio's
        // `shm_malloc`, usable in the main process once shm is initialised
        // (it is before mod_init).
        let raw = unsafe { sys::dsfeed_shm_malloc(size_of::<Shared<T>>()) };
        let shared = NonNull::new(raw.cast::<Shared<T>>())?;
        if !(shared.as_ptr() as usize).is_multiple_of(align_of::<Shared<T>>()) {
            // SAFETY: [shm] `raw` came from shm_malloc just above and is
            // unused.
            unsafe { sys::dsfeed_shm_free(raw) };
            return None;
        }
        // SAFETY: [shm] the block is ours, large enough and aligned
        // (checked); `write` initialises it without reading the old bytes,
        // then the lock is initialised in place, as Kamailio's lock_init
        // expects.
        unsafe {
            shared.as_ptr().write(Shared {
                lock: sys::gen_lock_t::default(),
                value: initial,
            });
            sys::dsfeed_lock_init(&raw mut (*shared.as_ptr()).lock);
        }
        Some(SharedCell { shared })
    }

    pub fn store(&self, value: &T) {
        let shared = self.shared.as_ptr();
        // SAFETY: [shm] `shared` is valid for the process's life (see the
        // type); the value is written only while holding its lock.
        unsafe {
            sys::dsfeed_lock_get(&raw mut (*shared).lock);
            (&raw mut (*shared).value).write(*value);
            sys::dsfeed_lock_release(&raw mut (*shared).lock);
        }
    }

    pub fn load(&self) -> T {
        let shared = self.shared.as_ptr();
        // SAFETY: [shm] as in `store`; `T: Copy` has no drop glue, so the
        // copy read under the lock is an independent value.
        unsafe {
            sys::dsfeed_lock_get(&raw mut (*shared).lock);
            let value = (&raw const (*shared).value).read();
            sys::dsfeed_lock_release(&raw mut (*shared).lock);
            value
        }
    }
}
