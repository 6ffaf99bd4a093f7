//! Named threads and joins with a deadline.
//!
//! Every thread the bench starts is named, so that a stack dump or `top -H` of a
//! stuck run says what each thread was for, and every thread is joined, so that a
//! job's figures include all the work its threads did. `std` has no join with a
//! timeout; a bench that exists partly to catch deadlocks must not hang on one, so
//! [`Named::join_by`] polls for the thread's end until a deadline instead.

use std::fmt;
use std::io;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often [`Named::join_by`] checks whether the thread has finished. Short next
/// to any deadline the bench uses, long enough not to cost a core.
const JOIN_POLL: Duration = Duration::from_millis(2);

/// A thread the bench started, with its name kept for error messages.
#[derive(Debug)]
pub struct Named<T> {
    name: String,
    handle: JoinHandle<T>,
}

/// Starts a thread with this name.
///
/// # Errors
///
/// Fails if the operating system cannot create the thread.
pub fn spawn<T, F>(name: String, f: F) -> io::Result<Named<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let handle = thread::Builder::new().name(name.clone()).spawn(f)?;
    Ok(Named { name, handle })
}

/// Why a thread could not be joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// It was still running at the deadline; it has not been joined.
    TimedOut(String),
    /// It panicked; its panic message was printed to stderr when it happened.
    Panicked(String),
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::TimedOut(name) => write!(f, "thread `{name}` did not finish in time"),
            JoinError::Panicked(name) => write!(f, "thread `{name}` panicked"),
        }
    }
}

impl std::error::Error for JoinError {}

impl<T> Named<T> {
    /// Waits until the thread has finished, but not past `deadline`, and returns
    /// what it returned.
    ///
    /// # Errors
    ///
    /// [`JoinError::TimedOut`] if the thread is still running at the deadline (it is
    /// then left running, unjoined), [`JoinError::Panicked`] if it panicked.
    pub fn join_by(self, deadline: Instant) -> Result<T, JoinError> {
        while !self.handle.is_finished() {
            let now = Instant::now();
            if now >= deadline {
                return Err(JoinError::TimedOut(self.name));
            }
            thread::sleep(JOIN_POLL.min(deadline - now));
        }
        // Finished, so this returns at once.
        self.handle
            .join()
            .map_err(|_| JoinError::Panicked(self.name))
    }
}
