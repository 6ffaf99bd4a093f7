//! Byte budgets: how many bytes of something may be held at once, and a way to wait
//! for room without holding a lock.
//!
//! A count of messages does not bound memory: a lane of a thousand one-megabyte
//! messages is not "bounded". The lanes (see [`crate::conn::lane`]) and the node's large
//! inbound payloads (see [`crate::conn::deliver`]) are therefore also bounded in bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Select, Sender};
use parking_lot::Mutex;

use crate::sync::Never;

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
    ///
    /// A compare-and-swap rather than an add and an undo: the undo would leave a
    /// moment in which the budget looks fuller than it is, and a waiter checking
    /// then would go back to sleep with nothing left to wake it.
    pub(crate) fn reserve(&self, len: usize) -> bool {
        let mut held = self.held.load(Ordering::SeqCst);
        loop {
            if held != 0 && held.saturating_add(len) > self.limit {
                return false;
            }
            match self.held.compare_exchange_weak(
                held,
                held + len,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => held = now,
            }
        }
    }

    /// Takes `len` bytes whether they fit or not, for what something else bounds.
    pub(crate) fn force(&self, len: usize) {
        self.held.fetch_add(len, Ordering::SeqCst);
    }

    /// Gives back `len` bytes taken with [`Budget::reserve`] or [`Budget::force`].
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
/// Waiters sleep, in a crossbeam select with their own way out (a close signal, a
/// deadline), on the current *generation*: a channel that carries nothing and is
/// disconnected by the next release that sees a waiter, which wakes every waiter of
/// that generation at once and puts a fresh one in its place. Waking them all, not
/// one, is what lets a small waiter that fits go ahead of a large one that does not:
/// a single token handed to the large one would be lost when it went back to sleep.
///
/// The mutex guards only the swap of the generation's channel; no thread holds it
/// while it waits, so a thread waiting here never stops the one that would make
/// room.
pub(crate) struct WaitBudget {
    budget: Budget,
    /// Threads waiting for room.
    waiting: AtomicUsize,
    generation: Mutex<Generation>,
}

/// One generation of waiters: its sender is dropped to wake them.
struct Generation {
    _wake: Sender<Never>,
    woken: Receiver<Never>,
}

impl Generation {
    fn new() -> Generation {
        let (wake, woken) = bounded(0);
        Generation { _wake: wake, woken }
    }
}

impl WaitBudget {
    pub(crate) fn new(limit: usize) -> WaitBudget {
        WaitBudget {
            budget: Budget::new(limit),
            waiting: AtomicUsize::new(0),
            generation: Mutex::new(Generation::new()),
        }
    }

    /// Takes `len` bytes if they fit now; see [`Budget::reserve`].
    pub(crate) fn reserve(&self, len: usize) -> bool {
        self.budget.reserve(len)
    }

    /// Takes `len` bytes whether they fit or not; see [`Budget::force`].
    pub(crate) fn force(&self, len: usize) {
        self.budget.force(len);
    }

    /// Gives back `len` bytes and wakes every waiter, if any.
    pub(crate) fn release(&self, len: usize) {
        self.budget.release(len);
        // Pairs with the waiter's register-then-check in `wait`: either the waiter
        // sees these bytes, or this sees the waiter and wakes its generation.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let old = std::mem::replace(&mut *self.generation.lock(), Generation::new());
            // Dropped outside the lock: this is what wakes the waiters.
            drop(old);
        }
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
            // The generation first, then registered as waiting, then looked again:
            // bytes released before the look are seen by it, and a release after it
            // sees us and wakes this generation (or a later one, whose release came
            // after the look too).
            let woken = self.generation.lock().woken.clone();
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let result = if self.budget.reserve(len) {
                Some(Ok(()))
            } else {
                self.sleep(&woken, deadline, closed).err().map(Err)
            };
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            if let Some(result) = result {
                return result;
            }
        }
    }

    /// Sleeps until the generation is woken, `closed` disconnects, or the deadline
    /// passes.
    fn sleep(
        &self,
        woken: &Receiver<Never>,
        deadline: Option<Instant>,
        closed: Option<&Receiver<Never>>,
    ) -> Result<(), Interrupted> {
        let mut sel = Select::new();
        let room = sel.recv(woken);
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
            let _ = oper.recv(woken);
            Ok(())
        } else {
            let closed = closed.expect("the only other operation is the close signal");
            let _ = oper.recv(closed);
            Err(Interrupted::Closed)
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

    /// Waits until `n` threads are registered as waiting on `budget`.
    fn until_waiting(budget: &WaitBudget, n: usize) {
        let guard = Instant::now() + Duration::from_secs(60);
        while budget.waiting.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < guard, "the waiters never waited");
            thread::yield_now();
        }
    }

    /// Regression test: one release left one token, which went to the first waiter;
    /// a waiter that did not fit went back to sleep with it, and a second waiter that
    /// would have fit was never woken.
    #[test]
    fn a_release_wakes_a_waiter_that_fits_even_when_an_earlier_one_does_not() {
        // Far beyond any wake-up; only turns a lost one into a failure.
        const GUARD: Duration = Duration::from_secs(20);
        for round in 0..20 {
            let budget = Arc::new(WaitBudget::new(64));
            assert!(budget.reserve(20) && budget.reserve(44));
            let (small, large) = (
                Credit::reserved(budget.clone(), 20),
                Credit::reserved(budget.clone(), 44),
            );
            let waiter = |len: usize| {
                let budget = budget.clone();
                let guard = Instant::now() + GUARD;
                thread::spawn(move || budget.wait(len, Some(guard), None))
            };
            // The one that will not fit waits first, then the one that will.
            let big = waiter(48);
            until_waiting(&budget, 1);
            let fits = waiter(20);
            until_waiting(&budget, 2);

            // 44 held: room for 20, not for 48.
            drop(small);
            assert_eq!(fits.join().unwrap(), Ok(()), "round {round}: lost wake-up");
            assert_eq!(budget.held(), 64, "round {round}");
            drop(large);
            budget.release(20);
            assert_eq!(big.join().unwrap(), Ok(()), "round {round}");
            assert_eq!(budget.held(), 48, "round {round}");
        }
    }

    /// Regression test: `reserve` added its bytes and took them back when they did
    /// not fit, so for a moment the budget looked fuller than it was. A waiter that
    /// looked again at that moment went to sleep, and the take-back woke no one.
    #[test]
    fn a_failed_reservation_never_hides_room_from_a_waiter() {
        use std::sync::atomic::AtomicBool;
        const GUARD: Duration = Duration::from_secs(20);
        for round in 0..200 {
            let budget = Arc::new(WaitBudget::new(64));
            assert!(budget.reserve(44) && budget.reserve(20));
            let credit = Credit::reserved(budget.clone(), 20);
            let stop = Arc::new(AtomicBool::new(false));
            // Keeps trying a reservation that never fits.
            let hammer = {
                let (budget, stop) = (budget.clone(), stop.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        assert!(!budget.reserve(48), "48 never fits beside 44");
                    }
                })
            };
            let waiter = {
                let budget = budget.clone();
                let guard = Instant::now() + GUARD;
                thread::spawn(move || budget.wait(20, Some(guard), None))
            };
            until_waiting(&budget, 1);
            drop(credit);
            let woken = waiter.join().unwrap();
            stop.store(true, Ordering::Relaxed);
            hammer.join().unwrap();
            assert_eq!(woken, Ok(()), "round {round}: lost wake-up");
            assert_eq!(budget.held(), 64, "round {round}");
        }
    }
}
