//! Room in the kernel's futex hash for a process with thousands of sleeping threads.
//!
//! A thread that waits on a channel, a lock or a park waits on a futex, and Linux
//! files waiting futexes in a hash table: waking a thread walks the chain of its
//! bucket. Since Linux 6.16 a process gets a table of its own, sized for its CPUs
//! rather than its threads: 16 buckets on a two-core machine. Each connection has
//! two threads, nearly all of the time waiting, so with 10,000 connections
//! each wake-up of a busy connection walked a chain of about 1,250 sleepers, and one
//! active connection among 10,000 idle ones kept 12% of its throughput alone
//! (`docs/performance.md`, "The futex hash").
//!
//! So the connection threads are counted, process-wide, and the process's own table
//! grows with them: to two buckets per thread, in powers of two, never shrinking.
//! Only a table the process already has is grown; a process that uses the kernel's
//! shared table (it set zero buckets) or a kernel without per-process tables is
//! left as it is, and so is a table already large enough (the application may have
//! sized it itself).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Threads counted below this many fit the table the kernel gives any process.
const FEW: usize = 64;

/// Connection threads alive in the process.
static THREADS: AtomicUsize = AtomicUsize::new(0);
/// The largest table asked for so far (or being asked for).
static ASKED: AtomicUsize = AtomicUsize::new(0);

/// Counts one connection thread for as long as it lives; hand it to the thread.
pub(crate) struct FutexRoom(());

impl FutexRoom {
    /// Counts a thread about to start, growing the process's table if the count
    /// calls for it. The growth is one system call, made by the caller at most
    /// once per doubling of the count, holding nothing.
    pub(crate) fn for_one_more() -> FutexRoom {
        make_room(THREADS.fetch_add(1, Relaxed) + 1);
        FutexRoom(())
    }
}

impl Drop for FutexRoom {
    fn drop(&mut self) {
        THREADS.fetch_sub(1, Relaxed);
    }
}

/// Grows the process's table for `threads`, unless it has been asked for already
/// or another thread is asking.
fn make_room(threads: usize) {
    let Some(want) = buckets_for(threads) else {
        return;
    };
    let asked = ASKED.load(Relaxed);
    if want <= asked
        || ASKED
            .compare_exchange(asked, want, Relaxed, Relaxed)
            .is_err()
    {
        return;
    }
    if !kernel::grow(want) {
        // A later thread tries again.
        let _ = ASKED.compare_exchange(want, asked, Relaxed, Relaxed);
    }
}

/// The table `threads` sleeping threads call for: two buckets each, a power of two;
/// `None` while they are few.
fn buckets_for(threads: usize) -> Option<usize> {
    (threads >= FEW).then(|| (2 * threads).next_power_of_two())
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod kernel {
    //! The one `unsafe` of the crate: `prctl`, which the `libc` crate declares
    //! variadic, with integer arguments only.

    use libc::{c_int, c_ulong};

    /// `PR_FUTEX_HASH` and its operations, from `linux/prctl.h` (Linux 6.16).
    const PR_FUTEX_HASH: c_int = 78;
    const SET_SLOTS: c_ulong = 1;
    const GET_SLOTS: c_ulong = 2;

    fn futex_hash(op: c_ulong, slots: c_ulong) -> c_int {
        // SAFETY: prctl(PR_FUTEX_HASH, ...) reads and writes no memory of the
        // caller's: every argument is an integer. Unknown options fail with EINVAL.
        unsafe { libc::prctl(PR_FUTEX_HASH, op, slots, 0 as c_ulong, 0 as c_ulong) }
    }

    /// The buckets of the process's own table; `None` if it has none (it uses the
    /// shared one, or the kernel has no per-process tables).
    pub(super) fn buckets() -> Option<usize> {
        let n = futex_hash(GET_SLOTS, 0);
        (n > 0).then_some(n as usize)
    }

    /// Grows the process's own table to `want` buckets if it is smaller. Returns
    /// whether the table now has at least that many, or is not ours to grow.
    pub(super) fn grow(want: usize) -> bool {
        let Some(had) = buckets() else {
            return true;
        };
        if had >= want {
            return true;
        }
        if futex_hash(SET_SLOTS, want as c_ulong) == 0 {
            log::debug!("grew the process's futex hash from {had} to {want} buckets");
            return true;
        }
        let e = std::io::Error::last_os_error();
        log::debug!("could not grow the process's futex hash to {want} buckets: {e}");
        false
    }
}

#[cfg(not(target_os = "linux"))]
mod kernel {
    pub(super) fn grow(_want: usize) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_buckets_a_thread_in_powers_of_two_once_there_are_many() {
        assert_eq!(buckets_for(1), None);
        assert_eq!(buckets_for(FEW - 1), None);
        assert_eq!(buckets_for(FEW), Some(128));
        assert_eq!(buckets_for(65), Some(256));
        assert_eq!(buckets_for(20_000), Some(65_536));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_table_grows_with_the_threads_counted() {
        let Some(before) = kernel::buckets() else {
            // This kernel has no per-process table (before 6.16), or the process
            // uses the shared one: there is nothing to grow.
            eprintln!("no per-process futex hash here");
            return;
        };
        let rooms: Vec<FutexRoom> = (0..600).map(|_| FutexRoom::for_one_more()).collect();
        let after = kernel::buckets().expect("a table that existed still does");
        assert!(
            after >= 1024 && after >= before,
            "600 threads counted: {before} buckets before, {after} after"
        );
        drop(rooms);
    }
}
