//! Small pieces every layer uses: a signal type, gauges, the log limiter, deadlines,
//! byte budgets, the bounded queues of the lanes, and room in the kernel's futex
//! hash for the connection threads. A leaf: it names nothing else
//! of the crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod budget;
mod futex_room;
mod queue;

pub(crate) use budget::{Budget, Credit, Interrupted, WaitBudget};
pub(crate) use futex_room::FutexRoom;
pub(crate) use queue::{queue, QueueRx, QueueTx, QueueWatch};

/// A type with no values: channels of `Never` carry no message and are used only for
/// their disconnection, which wakes every receiver at once.
pub(crate) enum Never {}

/// Counts a thread in a gauge for as long as it lives.
pub(crate) struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    pub(crate) fn enter(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Gauge(gauge)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Lets a log line about a recurring event through at most once a second, saying how
/// many events it covers.
pub(crate) struct LogLimit {
    last_ms: AtomicU64,
    pending: AtomicU64,
}

const NEVER_LOGGED: u64 = u64::MAX;

impl LogLimit {
    pub(crate) fn new() -> Self {
        LogLimit {
            last_ms: AtomicU64::new(NEVER_LOGGED),
            pending: AtomicU64::new(0),
        }
    }

    /// Counts one event; returns `Some(n)` when a line covering `n` events is due.
    pub(crate) fn hit(&self, now_ms: u64) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != NEVER_LOGGED && now_ms < last.saturating_add(1000) {
            return None;
        }
        self.last_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.pending.swap(0, Ordering::Relaxed))
    }
}

/// How long a handshake read may block before the deadline.
pub(crate) fn until(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limit_lets_one_line_a_second_through_and_counts_the_rest() {
        let limit = LogLimit::new();
        assert_eq!(limit.hit(0), Some(1));
        assert_eq!(limit.hit(10), None);
        assert_eq!(limit.hit(999), None);
        assert_eq!(limit.hit(1000), Some(3));
        assert_eq!(limit.hit(1500), None);
        assert_eq!(limit.hit(5000), Some(2));
    }
}
