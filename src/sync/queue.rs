//! A bounded multi-producer, single-consumer queue: the lanes of a connection. Its
//! memory is either allocated when it is made or follows what it holds
//! ([`Config::lanes_grow`](crate::Config::lanes_grow)).
//!
//! The fixed store is crossbeam's `bounded(n)`, which allocates its `n` slots when it
//! is created and writes each one's stamp, so every page of the buffer is resident
//! from the start: with the default capacities, 256 gossip and 384 private slots of
//! 40 bytes each, 25 KiB per connection before it carried a single message.
//!
//! The growing store carries the messages in crossbeam's `unbounded` channel, which
//! allocates blocks of 31 slots as they fill and frees each block once it has been
//! read, and the bound is a count of slots, taken before a message goes in and given
//! back after the consumer took it out: a lane that never carried a message costs
//! nothing, and one that is idle again keeps at most one block (about 1.3 KiB). The
//! price is a block allocated by the sending thread and freed by the writer every 31
//! messages, and the count: about a third of the rate of a stream of 64-byte
//! messages on one connection (`docs/performance.md`).
//!
//! The consumer of a growing queue gives slots back in small batches (a sixteenth of
//! the capacity, at once when it finds the queue empty, or when it says so with
//! [`QueueRx::give_back`], as the writer does after each batch it gathers): one
//! shared counter updated per message would add a cache line bouncing between the
//! sending and the writing cores for every message. So while the consumer is taking
//! messages out, a queue may look up to that many messages fuller than it is, never
//! emptier.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded, Receiver, Select, Sender, TryRecvError, TrySendError};

use super::{Interrupted, Never, WaitBudget};

/// Creates a queue that holds at most `capacity` messages (at least 1), its memory
/// growing with what it holds if `grows`, else allocated now.
pub(crate) fn queue<T>(capacity: usize, grows: bool) -> (QueueTx<T>, QueueRx<T>) {
    let capacity = capacity.max(1);
    let (tx, rx, slots) = if grows {
        let (tx, rx) = unbounded();
        (tx, rx, Some(Arc::new(WaitBudget::new(capacity))))
    } else {
        let (tx, rx) = bounded(capacity);
        (tx, rx, None)
    };
    (
        QueueTx {
            tx,
            slots: slots.clone(),
        },
        QueueRx {
            rx,
            slots,
            taken: Cell::new(0),
            batch: (capacity / 16).max(1),
        },
    )
}

/// The sending side; clone it for more senders. The queue disconnects when the last
/// clone is dropped.
pub(crate) struct QueueTx<T> {
    tx: Sender<T>,
    /// The count of free slots of a growing queue; a fixed one's channel is bounded.
    slots: Option<Arc<WaitBudget>>,
}

impl<T> Clone for QueueTx<T> {
    fn clone(&self) -> Self {
        QueueTx {
            tx: self.tx.clone(),
            slots: self.slots.clone(),
        }
    }
}

impl<T> QueueTx<T> {
    /// Queues `msg` if a slot is free; never waits.
    ///
    /// # Errors
    ///
    /// `Full` with the message if every slot is taken, `Disconnected` if the
    /// consumer is gone.
    pub(crate) fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        let Some(slots) = &self.slots else {
            return self.tx.try_send(msg);
        };
        if !slots.reserve(1) {
            return Err(TrySendError::Full(msg));
        }
        self.put(slots, msg).map_err(TrySendError::Disconnected)
    }

    /// Queues `msg`, waiting for a free slot until `deadline` (if any) or until
    /// `closed` disconnects.
    ///
    /// # Errors
    ///
    /// The message, with why it was not queued: the deadline passed, or `closed`
    /// disconnected or the consumer is gone.
    pub(crate) fn send_deadline(
        &self,
        msg: T,
        deadline: Option<Instant>,
        closed: &Receiver<Never>,
    ) -> Result<(), (Interrupted, T)> {
        let Some(slots) = &self.slots else {
            return self.send_bounded(msg, deadline, closed);
        };
        if let Err(why) = slots.wait(1, deadline, Some(closed)) {
            return Err((why, msg));
        }
        self.put(slots, msg)
            .map_err(|msg| (Interrupted::Closed, msg))
    }

    /// [`QueueTx::send_deadline`] on a fixed queue: a select of the channel's send
    /// and the close.
    fn send_bounded(
        &self,
        msg: T,
        deadline: Option<Instant>,
        closed: &Receiver<Never>,
    ) -> Result<(), (Interrupted, T)> {
        let mut sel = Select::new();
        let lane = sel.send(&self.tx);
        sel.recv(closed);
        let oper = match deadline {
            None => sel.select(),
            Some(deadline) => match sel.select_deadline(deadline) {
                Ok(oper) => oper,
                Err(_) => return Err((Interrupted::Timeout, msg)),
            },
        };
        if oper.index() == lane {
            oper.send(&self.tx, msg)
                .map_err(|e| (Interrupted::Closed, e.into_inner()))
        } else {
            let _ = oper.recv(closed);
            Err((Interrupted::Closed, msg))
        }
    }

    /// Messages in the queue now.
    pub(crate) fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether no message is in the queue now. A message whose sender has taken a
    /// slot but not yet put it in is not there yet: as with a channel, a send that
    /// has not returned is not ordered before anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// Puts a message in whose slot is reserved; gives the slot back if the
    /// consumer is gone. The channel is unbounded, so this never waits.
    fn put(&self, slots: &WaitBudget, msg: T) -> Result<(), T> {
        self.tx.send(msg).map_err(|e| {
            slots.release(1);
            e.into_inner()
        })
    }
}

/// The consuming side. Not `Sync`: one consumer takes messages out and keeps the
/// count of slots it has not given back yet.
pub(crate) struct QueueRx<T> {
    rx: Receiver<T>,
    slots: Option<Arc<WaitBudget>>,
    /// Messages taken whose slots are not given back yet.
    taken: Cell<usize>,
    /// Slots given back at once.
    batch: usize,
}

impl<T> QueueRx<T> {
    /// Takes the oldest message, if there is one. Finding the queue empty gives back
    /// every slot taken so far.
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        match self.rx.try_recv() {
            Ok(msg) => {
                self.took();
                Ok(msg)
            }
            Err(e) => {
                self.give_back();
                Err(e)
            }
        }
    }

    /// The channel itself, for a `select!`. A message received through it must be
    /// reported with [`QueueRx::took`], or its slot is never given back.
    pub(crate) fn channel(&self) -> &Receiver<T> {
        &self.rx
    }

    /// Counts a message taken out (through [`QueueRx::channel`] or by this type),
    /// giving slots back once a batch of them is due.
    pub(crate) fn took(&self) {
        if self.slots.is_none() {
            return;
        }
        self.taken.set(self.taken.get() + 1);
        if self.taken.get() >= self.batch {
            self.give_back();
        }
    }

    /// Gives back the slots of every message taken so far.
    pub(crate) fn give_back(&self) {
        let taken = self.taken.replace(0);
        if let (Some(slots), true) = (&self.slots, taken > 0) {
            slots.release(taken);
        }
    }

    /// Takes every message until the queue is empty and no sender is left.
    pub(crate) fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.rx.iter().inspect(|_| self.took())
    }

    /// Takes every message there is now.
    pub(crate) fn try_iter(&self) -> impl Iterator<Item = T> + '_ {
        self.rx.try_iter().inspect(|_| self.took())
    }

    /// A handle that tells whether the queue is full, for another thread.
    pub(crate) fn watch(&self) -> QueueWatch<T> {
        match &self.slots {
            Some(slots) => QueueWatch::Slots(slots.clone()),
            None => QueueWatch::Channel(self.rx.clone()),
        }
    }
}

/// Whether a queue is full, from any thread.
pub(crate) enum QueueWatch<T> {
    Slots(Arc<WaitBudget>),
    /// A fixed queue's channel (a receiver that never receives).
    Channel(Receiver<T>),
}

impl<T> Clone for QueueWatch<T> {
    fn clone(&self) -> QueueWatch<T> {
        match self {
            QueueWatch::Slots(slots) => QueueWatch::Slots(slots.clone()),
            QueueWatch::Channel(rx) => QueueWatch::Channel(rx.clone()),
        }
    }
}

impl<T> QueueWatch<T> {
    /// Whether every slot is taken (or, in a growing queue, not yet given back by
    /// the consumer).
    pub(crate) fn is_full(&self) -> bool {
        match self {
            QueueWatch::Slots(slots) => slots.is_full(),
            QueueWatch::Channel(rx) => rx.is_full(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::thread;
    use std::time::Duration;

    use crossbeam_channel::bounded;

    use super::*;

    #[test]
    fn a_queue_takes_its_capacity_and_no_more() {
        for grows in [true, false] {
            let (tx, rx) = queue::<u32>(3, grows);
            for i in 0..3 {
                tx.try_send(i).unwrap();
            }
            assert!(matches!(tx.try_send(9), Err(TrySendError::Full(9))));
            assert!(rx.watch().is_full());
            assert_eq!(rx.try_recv(), Ok(0));
            assert!(matches!(tx.try_send(3), Ok(())), "a slot came back");
            assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
        }
    }

    #[test]
    fn slots_come_back_in_batches_and_when_the_queue_is_found_empty() {
        let (tx, rx) = queue::<u32>(64, true);
        let watch = rx.watch();
        for i in 0..64 {
            tx.try_send(i).unwrap();
        }
        // A batch is 4 slots: three taken are not given back yet.
        for i in 0..3 {
            assert_eq!(rx.try_recv(), Ok(i));
        }
        assert!(watch.is_full(), "three slots still held by the consumer");
        assert_eq!(rx.try_recv(), Ok(3));
        assert!(!watch.is_full(), "the fourth gave the batch back");
        for i in 4..64 {
            assert_eq!(rx.try_recv(), Ok(i));
        }
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        for i in 0..64 {
            tx.try_send(i).unwrap();
        }
        assert!(tx.try_send(64).is_err(), "all 64 slots came back, no more");
    }

    #[test]
    fn a_waiting_sender_gets_the_slot_the_consumer_frees() {
        for grows in [true, false] {
            let (tx, rx) = queue::<u32>(1, grows);
            let (_open, closed) = bounded::<Never>(0);
            tx.try_send(1).unwrap();
            let sender = thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                tx.send_deadline(2, Some(deadline), &closed)
                    .map_err(|e| e.0)
            });
            let first = rx.channel().recv_timeout(Duration::from_secs(10));
            assert_eq!(first, Ok(1));
            rx.took();
            assert_eq!(sender.join().unwrap(), Ok(()));
            assert_eq!(rx.try_recv(), Ok(2));
        }
    }

    #[test]
    fn blocked_senders_always_get_the_slots_the_consumer_gives_back() {
        // Many senders on a small queue (slots given back one at a time, then in
        // batches of three), a consumer that takes messages both ways (try_recv,
        // and the channel with `took`) and sometimes gives back what it holds: every
        // message arrives, each sender's in order, and no sender is left waiting for
        // a slot that was given back.
        for capacity in [3, 48] {
            exchange(capacity, true);
            exchange(capacity, false);
        }
    }

    fn exchange(capacity: usize, grows: bool) {
        const SENDERS: u32 = 4;
        const EACH: u32 = 5_000;
        let (tx, rx) = queue::<(u32, u32)>(capacity, grows);
        let (_open, closed) = bounded::<Never>(0);
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let (tx, closed) = (tx.clone(), closed.clone());
                thread::spawn(move || {
                    for n in 0..EACH {
                        let deadline = Instant::now() + Duration::from_secs(30);
                        if tx.try_send((s, n)).is_err() {
                            tx.send_deadline((s, n), Some(deadline), &closed)
                                .expect("a slot within the guard deadline");
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let mut next = [0u32; SENDERS as usize];
        let mut got = 0;
        while got < SENDERS * EACH {
            let (s, n) = if got % 3 == 0 {
                let msg = rx
                    .channel()
                    .recv_timeout(Duration::from_secs(30))
                    .expect("a message within the guard deadline");
                rx.took();
                msg
            } else {
                match rx.try_recv() {
                    Ok(msg) => msg,
                    Err(_) => continue,
                }
            };
            if got % 50 == 0 {
                rx.give_back();
            }
            assert_eq!(n, next[s as usize], "sender {s} out of order");
            next[s as usize] += 1;
            got += 1;
        }
        for s in senders {
            s.join().unwrap();
        }
    }

    #[test]
    fn a_waiting_sender_leaves_with_its_message_at_the_deadline_or_the_close() {
        for grows in [true, false] {
            let (tx, _rx) = queue::<u32>(1, grows);
            tx.try_send(1).unwrap();
            let (open, closed) = bounded::<Never>(0);
            let soon = Instant::now() + Duration::from_millis(20);
            assert_eq!(
                tx.send_deadline(2, Some(soon), &closed),
                Err((Interrupted::Timeout, 2))
            );
            drop(open);
            assert_eq!(
                tx.send_deadline(3, None, &closed),
                Err((Interrupted::Closed, 3))
            );
        }
    }

    #[test]
    fn a_queue_without_its_consumer_refuses_and_keeps_no_slot() {
        for grows in [true, false] {
            let (tx, rx) = queue::<u32>(1, grows);
            drop(rx);
            assert!(matches!(tx.try_send(1), Err(TrySendError::Disconnected(1))));
            assert!(matches!(tx.try_send(2), Err(TrySendError::Disconnected(2))));
            let (_open, closed) = bounded::<Never>(0);
            assert_eq!(
                tx.send_deadline(3, None, &closed),
                Err((Interrupted::Closed, 3))
            );
        }
    }
}
