//! A mutex with priority inheritance (POSIX `PTHREAD_PRIO_INHERIT`), for state that a real-time
//! thread shares with a normal one.
//!
//! The media shell's pacer thread runs under `SCHED_RR` and its I/O thread under normal scheduling;
//! both take the shard's engine. With an ordinary mutex, an I/O thread preempted while holding it
//! would keep the pacer waiting until the scheduler gives the I/O thread a core again (milliseconds
//! on a busy machine: priority inversion). Under priority inheritance the kernel runs the holder at
//! the waiter's priority until it unlocks, so the pacer waits at most for the critical section
//! itself. Uncontended, locking and unlocking stay in user space (a compare-and-swap each, as for
//! `std::sync::Mutex`).
//!
//! Where the C library refuses the protocol, the mutex is an ordinary one ([`PiMutex::inherits`]).

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};

extern "C" {
    // In glibc and musl; not (yet) declared by the libc crate for Linux.
    fn pthread_mutexattr_setprotocol(attr: *mut libc::pthread_mutexattr_t, protocol: libc::c_int) -> libc::c_int;
}

/// `PTHREAD_PRIO_INHERIT` (glibc and musl: 1).
const PRIO_INHERIT: libc::c_int = 1;

pub struct PiMutex<T> {
    // Boxed: a pthread mutex must not move once initialised.
    raw: Box<UnsafeCell<libc::pthread_mutex_t>>,
    inherits: bool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, which the pthread mutex makes exclusive.
unsafe impl<T: Send> Send for PiMutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for PiMutex<T> {}

impl<T> PiMutex<T> {
    pub fn new(value: T) -> PiMutex<T> {
        // SAFETY: all-zero is valid storage for the types, which pthread_*_init then initialise.
        let raw: Box<UnsafeCell<libc::pthread_mutex_t>> = Box::new(UnsafeCell::new(unsafe { std::mem::zeroed() }));
        let mut attr: libc::pthread_mutexattr_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to storage that lives through the calls; the attribute object is
        // destroyed after use, the mutex in Drop.
        let inherits = unsafe {
            let ok = libc::pthread_mutexattr_init(&mut attr) == 0;
            let inherits = ok && pthread_mutexattr_setprotocol(&mut attr, PRIO_INHERIT) == 0;
            let rc = libc::pthread_mutex_init(raw.get(), if ok { &attr } else { std::ptr::null() });
            if ok {
                libc::pthread_mutexattr_destroy(&mut attr);
            }
            assert_eq!(rc, 0, "pthread_mutex_init failed");
            inherits
        };
        PiMutex { raw, inherits, value: UnsafeCell::new(value) }
    }

    /// Whether the mutex has the priority-inheritance protocol.
    pub fn inherits(&self) -> bool {
        self.inherits
    }

    pub fn lock(&self) -> PiGuard<'_, T> {
        // SAFETY: an initialised mutex, not moved since; the guard unlocks it exactly once.
        let rc = unsafe { libc::pthread_mutex_lock(self.raw.get()) };
        // A default or PI mutex only fails on deadlock detection or a dead owner, which would be a
        // bug here (each thread takes each mutex once, never recursively).
        assert_eq!(rc, 0, "pthread_mutex_lock failed");
        PiGuard { mutex: self }
    }
}

impl<T> Drop for PiMutex<T> {
    fn drop(&mut self) {
        // SAFETY: no guard can be alive (they borrow self), so the mutex is unlocked.
        unsafe { libc::pthread_mutex_destroy(self.raw.get()) };
    }
}

pub struct PiGuard<'a, T> {
    mutex: &'a PiMutex<T>,
}

impl<T> Deref for PiGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held for the guard's lifetime.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T> DerefMut for PiGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the lock is held for the guard's lifetime, and the guard is borrowed mutably.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T> Drop for PiGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this thread holds the lock (taken in lock()).
        unsafe { libc::pthread_mutex_unlock(self.mutex.raw.get()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn has_the_protocol_on_linux() {
        assert!(PiMutex::new(()).inherits());
    }

    #[test]
    fn excludes_other_threads() {
        // Four threads add one 100,000 times each through a non-atomic read-modify-write: a mutex
        // that let two in at once would lose increments.
        let m = Arc::new(PiMutex::new(0u64));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        let mut g = m.lock();
                        let v = *g;
                        std::hint::black_box(&v);
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*m.lock(), 400_000);
    }
}
