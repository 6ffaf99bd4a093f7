//! Named threads, joins with a deadline, and the way out when a thread cannot be
//! joined. Every thread is named, so that a stack dump or `top -H` of a stuck run
//! says what each was for, and joined, so that a job's figures include all its work.
//! `std` has no join with a timeout, and a bench that exists partly to catch
//! deadlocks must not hang on one, so [`Named::join_by`] polls up to a deadline.

use std::fmt;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often a join or a wait checks its condition: short next to any deadline the
/// bench uses, long enough not to cost a core.
const POLL: Duration = Duration::from_millis(2);

/// A thread the bench started, with its name kept for error messages.
#[derive(Debug)]
pub struct Named<T> {
    name: String,
    handle: JoinHandle<T>,
}

/// Why a thread could not be joined: it was still running at the deadline (it is
/// then left running, unjoined), or it panicked (its panic message was printed to
/// stderr when it happened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinError(String);

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JoinError {}

impl<T> Named<T> {
    /// Waits until the thread has finished, but not past `deadline`, and returns
    /// what it returned.
    ///
    /// # Errors
    ///
    /// A [`JoinError`] if the thread is still running at the deadline or panicked.
    pub fn join_by(self, deadline: Instant) -> Result<T, JoinError> {
        if !wait_until(deadline, || self.handle.is_finished()) {
            return Err(JoinError(format!(
                "thread `{}` did not finish in time",
                self.name
            )));
        }
        self.handle
            .join()
            .map_err(|_| JoinError(format!("thread `{}` panicked", self.name)))
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// Gives up on the run when one of its threads cannot be started or joined: it is
/// stuck (a hang is what this bench exists to catch) or it panicked. The process
/// exits at once, because anything else would wait on that thread: the nodes it
/// holds, when dropped, would wait for their own shutdown to finish.
pub fn abandon(what: impl fmt::Display) -> ! {
    eprintln!("wirelane-bench: FAIL: {what}; exiting without waiting for it");
    std::process::exit(1)
}

/// Starts a named thread, or gives up on the run: a run with a thread missing would
/// measure nothing useful.
pub fn start<T, F>(name: impl Into<String>, f: F) -> Named<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let name = name.into();
    match thread::Builder::new().name(name.clone()).spawn(f) {
        Ok(handle) => Named { name, handle },
        Err(e) => abandon(format_args!("could not start thread `{name}`: {e}")),
    }
}

/// Joins every thread by the deadline, in order, or gives up on the run.
pub fn join_all<T>(threads: Vec<Named<T>>, deadline: Instant) -> Vec<T> {
    threads
        .into_iter()
        .map(|t| t.join_by(deadline).unwrap_or_else(|e| abandon(e)))
        .collect()
}

/// Polls `condition` until it holds or the deadline passes; returns whether it held.
pub fn wait_until(deadline: Instant, mut condition: impl FnMut() -> bool) -> bool {
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(POLL.min(deadline - now));
    }
}
