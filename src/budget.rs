//! Byte budgets: how many bytes of something may be held at once, and a way to wait
//! for room without holding a lock.
//!
//! A count of messages does not bound memory: a lane of a thousand one-megabyte
//! messages is not "bounded". The lanes (see [`crate::lane`]) and the node's large
//! inbound payloads (see [`crate::reader`]) are therefore also bounded in bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Select, Sender};

use crate::connection::Never;

/// Bytes held against a limit.
pub(crate) struct Budget {
    held: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Budget {
        Budget {
            held: AtomicUsize::new(0),
            limit,
        }
    }

    /// Takes `len` bytes of the budget, if they fit. An empty budget takes anything,
    /// so that one item larger than the limit (but within every other limit) still
    /// goes through, alone.
    pub(crate) fn reserve(&self, len: usize) -> bool {
        let before = self.held.fetch_add(len, Ordering::SeqCst);
        if before == 0 || before + len <= self.limit {
            return true;
        }
        self.held.fetch_sub(len, Ordering::SeqCst);
        false
    }

    /// Gives back `len` bytes taken with [`Budget::reserve`].
    pub(crate) fn release(&self, len: usize) {
        self.held.fetch_sub(len, Ordering::SeqCst);
    }

    /// Bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether the budget holds as many bytes as it may.
    pub(crate) fn is_full(&self) -> bool {
        self.held() >= self.limit
    }
}

/// What ended a wait for room: the close signal, or the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupted {
    Closed,
    Timeout,
}

/// A [`Budget`] that threads can wait on until room appears.
///
/// A waiter registers, looks again, and then sleeps in a crossbeam select on a
/// one-slot "room" channel and its own way out (a close signal, a deadline). A
/// release that sees a registered waiter leaves a token in the slot. No lock is
/// involved, so a thread waiting here never stops the one that would make room.
pub(crate) struct WaitBudget {
    budget: Budget,
    /// Threads waiting for room.
    waiting: AtomicUsize,
    /// A token here says bytes were released; capacity one, so a release never
    /// blocks and a token is never lost.
    room_tx: Sender<()>,
    room_rx: Receiver<()>,
}

impl WaitBudget {
    pub(crate) fn new(limit: usize) -> WaitBudget {
        let (room_tx, room_rx) = bounded(1);
        WaitBudget {
            budget: Budget::new(limit),
            waiting: AtomicUsize::new(0),
            room_tx,
            room_rx,
        }
    }

    /// Takes `len` bytes if they fit now; see [`Budget::reserve`].
    pub(crate) fn reserve(&self, len: usize) -> bool {
        self.budget.reserve(len)
    }

    /// Gives back `len` bytes and wakes a waiter, if any.
    pub(crate) fn release(&self, len: usize) {
        self.budget.release(len);
        self.wake_one();
    }

    pub(crate) fn held(&self) -> usize {
        self.budget.held()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.budget.is_full()
    }

    /// Waits until `len` bytes fit and takes them, until `closed` disconnects (if
    /// given) or the deadline passes (if any).
    pub(crate) fn wait(
        &self,
        len: usize,
        deadline: Option<Instant>,
        closed: Option<&Receiver<Never>>,
    ) -> Result<(), Interrupted> {
        loop {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            // Registered as waiting first, then looked again: bytes released
            // meanwhile are seen here, or the releaser sees us and leaves a token.
            let took = self.budget.reserve(len);
            let woken = if took {
                Ok(())
            } else {
                self.sleep(deadline, closed)
            };
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            woken?;
            if took || self.budget.reserve(len) {
                // Pass the token on: others may fit in what is left.
                self.wake_one();
                return Ok(());
            }
        }
    }

    /// Sleeps until a token arrives, `closed` disconnects, or the deadline passes.
    fn sleep(
        &self,
        deadline: Option<Instant>,
        closed: Option<&Receiver<Never>>,
    ) -> Result<(), Interrupted> {
        let mut sel = Select::new();
        let room = sel.recv(&self.room_rx);
        if let Some(closed) = closed {
            sel.recv(closed);
        }
        let oper = match deadline {
            None => sel.select(),
            Some(deadline) => sel
                .select_deadline(deadline)
                .map_err(|_| Interrupted::Timeout)?,
        };
        if oper.index() == room {
            // The budget owns both ends, so the slot never disconnects.
            let _ = oper.recv(&self.room_rx);
            Ok(())
        } else {
            let closed = closed.expect("the only other operation is the close signal");
            let _ = oper.recv(closed);
            Err(Interrupted::Closed)
        }
    }

    /// Wakes a waiter, if any. Pairs with the waiter's check-after-registering in
    /// [`WaitBudget::wait`]: one of them always sees the other.
    fn wake_one(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _ = self.room_tx.try_send(());
        }
    }
}

/// Bytes held against a [`WaitBudget`] until this is dropped.
pub(crate) struct Credit {
    budget: Arc<WaitBudget>,
    len: usize,
}

impl Credit {
    /// Takes responsibility for `len` bytes already reserved on `budget`.
    pub(crate) fn reserved(budget: Arc<WaitBudget>, len: usize) -> Credit {
        Credit { budget, len }
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        self.budget.release(self.len);
    }
}

#[cfg(test)]
mod tests {
    use std::thread;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_budget_admits_what_fits_and_always_one_item() {
        let budget = Budget::new(100);
        assert!(budget.reserve(60));
        assert!(budget.reserve(40));
        assert!(!budget.reserve(1), "full");
        budget.release(100);
        assert!(
            budget.reserve(500),
            "an empty budget takes one item of any size"
        );
        assert!(!budget.reserve(1));
        assert_eq!(budget.held(), 500);
        assert!(budget.is_full());
    }

    #[test]
    fn a_waiter_wakes_when_a_credit_is_dropped() {
        let budget = Arc::new(WaitBudget::new(100));
        assert!(budget.reserve(100));
        let credit = Credit::reserved(budget.clone(), 100);
        let waiter = {
            let budget = budget.clone();
            // The deadline only turns a lost wake-up into a failure.
            let guard = Instant::now() + Duration::from_secs(60);
            thread::spawn(move || budget.wait(50, Some(guard), None))
        };
        // Dropped once the waiter is asleep (or about to be), so that it is the
        // release that wakes it.
        let guard = Instant::now() + Duration::from_secs(60);
        while budget.waiting.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < guard, "the waiter never waited");
            thread::yield_now();
        }
        drop(credit);
        assert_eq!(waiter.join().unwrap(), Ok(()));
        assert_eq!(budget.held(), 50);
    }

    #[test]
    fn a_wait_ends_at_its_deadline_or_its_close_signal() {
        let budget = WaitBudget::new(10);
        assert!(budget.reserve(10));
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(budget.wait(5, Some(soon), None), Err(Interrupted::Timeout));
        let (closed_tx, closed_rx) = bounded::<Never>(0);
        drop(closed_tx);
        assert_eq!(
            budget.wait(5, None, Some(&closed_rx)),
            Err(Interrupted::Closed)
        );
        assert_eq!(budget.held(), 10, "interrupted waits take nothing");
    }
}
