//! The two lanes of a connection, from the senders' side: the [`Link`] the peer table
//! holds, and the budgets that bound each lane in bytes as well as in messages.
//!
//! The lock rule lives here. A sender finds a `Link` in the peer table under a short
//! read lock, clones the `Arc`, releases the lock, and only then touches the lanes.
//! Waiting — for bytes or for a slot on the private lane — is a crossbeam select over
//! what it waits for and the connection's close signal, with no lock of ours held, so
//! the writer that empties the lane and the reader that feeds the other side never
//! stop for a blocked sender (the Fabric FAB-10469 deadlock).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::TrySendError as ChanTrySend;

use crate::config::Config;
use crate::conn::request::{request_closed, Outbound, Pending, Ticket};
use crate::conn::shared::ConnShared;
use crate::error::{RequestError, SendTimeoutError, TrySendError};
use crate::event::{DisconnectReason, Lane};
use crate::id::PeerId;
use crate::sync::Gauge;
use crate::sync::{queue, QueueRx, QueueTx};
use crate::sync::{Budget, Interrupted, WaitBudget};
use crate::timing::WaitTimer;
use crate::wire::frame::FrameKind;

/// The byte budgets of a connection's lanes, shared by its senders and its writer.
/// A full gossip budget drops; a full private budget makes senders wait.
pub(crate) struct Budgets {
    pub(crate) gossip: Budget,
    pub(crate) private: WaitBudget,
}

impl Budgets {
    fn new(config: &Config) -> Budgets {
        Budgets {
            gossip: Budget::new(config.gossip_lane_bytes),
            private: WaitBudget::new(config.private_lane_bytes),
        }
    }

    /// The writer took messages of `gossip` and `private` bytes out of the lanes.
    pub(crate) fn release(&self, gossip: usize, private: usize) {
        if gossip > 0 {
            self.gossip.release(gossip);
        }
        if private > 0 {
            self.private.release(private);
        }
    }
}

/// The registered handle to a connection: the senders of its two lanes.
///
/// Only the peer table keeps a `Link` for long; a send holds a clone for its duration.
/// When the last clone goes the lanes disconnect, which is how the writer knows that
/// no message can arrive after its final drain.
pub(crate) struct Link {
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) peer: PeerId,
    pub(crate) incarnation: u64,
    /// The arbiter's generation of this connection: orders the arbiter's verdicts
    /// for one peer, so that both sides keep the same connection. Set once, when the
    /// connection is registered.
    pub(crate) generation: AtomicU64,
    /// The largest payload the peer said it accepts.
    pub(crate) peer_max_frame: u32,
    pub(crate) gossip: QueueTx<Bytes>,
    pub(crate) private: QueueTx<Outbound>,
    pub(crate) budgets: Arc<Budgets>,
}

/// The receiving ends of a connection's lanes, owned by its writer.
pub(crate) struct LaneRx {
    pub(crate) gossip: QueueRx<Bytes>,
    pub(crate) private: QueueRx<Outbound>,
    pub(crate) budgets: Arc<Budgets>,
}

/// The sending ends of a connection's lanes, for its `Link`.
pub(crate) struct LaneTx {
    pub(crate) gossip: QueueTx<Bytes>,
    pub(crate) private: QueueTx<Outbound>,
    pub(crate) budgets: Arc<Budgets>,
}

/// Creates the two bounded lanes of a connection, allocated at once or growing with
/// what they hold ([`Config::lanes_grow`], [`crate::sync::queue`]).
pub(crate) fn lanes(config: &Config) -> (LaneTx, LaneRx) {
    let (gossip_tx, gossip) = queue(config.gossip_capacity, config.lanes_grow);
    let (private_tx, private) = queue(config.private_capacity, config.lanes_grow);
    let budgets = Arc::new(Budgets::new(config));
    (
        LaneTx {
            gossip: gossip_tx,
            private: private_tx,
            budgets: budgets.clone(),
        },
        LaneRx {
            gossip,
            private,
            budgets,
        },
    )
}

impl LaneRx {
    /// Takes every message left in the lanes once no sender can add more, counting
    /// discarded gossip, and returns the private messages oldest first.
    ///
    /// Blocks until every `Link` is gone: the caller has already closed the
    /// connection, so the table no longer holds one and any send in flight returns
    /// promptly.
    ///
    /// Requests left in the lane are not handed back: their requesters, woken by the
    /// close, have their payloads back in the error already.
    pub(crate) fn drain(self, counters: &crate::stats::Counters) -> Vec<Bytes> {
        let private: Vec<Bytes> = self
            .private
            .iter()
            .filter_map(|item| match item {
                Outbound::Private(msg) => Some(msg),
                Outbound::Request(_) => None,
            })
            .collect();
        let gossip = self.gossip.try_iter().count() as u64;
        counters.out.gossip.drop_n(gossip);
        private
    }
}

/// How long a private send may wait for room.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Patience {
    Forever,
    /// From the moment the send first has to wait: a send that finds room at once
    /// never reads the clock (which was 2% of a busy sender's time).
    For(Duration),
}

/// The deadline of one send, read off the clock the first time it is needed.
struct Deadline {
    patience: Patience,
    at: Option<Option<Instant>>,
}

impl Deadline {
    fn new(patience: Patience) -> Deadline {
        Deadline { patience, at: None }
    }

    /// A deadline already read off the clock.
    fn fixed(at: Option<Instant>) -> Deadline {
        Deadline {
            patience: Patience::Forever,
            at: Some(at),
        }
    }

    /// `None` for no deadline.
    fn get(&mut self) -> Option<Instant> {
        let patience = self.patience;
        *self.at.get_or_insert_with(|| match patience {
            Patience::Forever => None,
            // A timeout too large to add is as good as none.
            Patience::For(timeout) => Instant::now().checked_add(timeout),
        })
    }
}

impl Link {
    pub(crate) fn new(
        conn: Arc<ConnShared>,
        peer: PeerId,
        incarnation: u64,
        peer_max_frame: u32,
        tx: LaneTx,
    ) -> Link {
        Link {
            conn,
            peer,
            incarnation,
            generation: AtomicU64::new(0),
            peer_max_frame,
            gossip: tx.gossip,
            private: tx.private,
            budgets: tx.budgets,
        }
    }

    /// Queues a gossip message, or drops it if the lane is full (in messages or in
    /// bytes).
    pub(crate) fn try_send(&self, msg: Bytes) -> Result<(), TrySendError<Bytes>> {
        if msg.len() > self.peer_max_frame as usize {
            return Err(TrySendError::TooLarge(msg));
        }
        if self.conn.is_closing() {
            return Err(self.closed_try(msg));
        }
        let msg = match self.write_now(Lane::Gossip, msg) {
            Ok(()) => return Ok(()),
            Err(msg) => msg,
        };
        let len = msg.len();
        if !self.budgets.gossip.reserve(len) {
            return Err(self.dropped(msg));
        }
        match self.gossip.try_send(msg) {
            Ok(()) => Ok(()),
            Err(ChanTrySend::Full(msg)) => {
                self.budgets.release(len, 0);
                Err(self.dropped(msg))
            }
            Err(ChanTrySend::Disconnected(msg)) => {
                self.budgets.release(len, 0);
                Err(self.closed_try(msg))
            }
        }
    }

    /// Writes a data message from the calling thread, if the writer is parked and
    /// nothing is queued ahead of it (`crate::conn::turn`): private data when the
    /// private lane is empty and the peer's window has room, gossip when both lanes
    /// are empty. Returns the message when it must be queued instead.
    fn write_now(&self, lane: Lane, msg: Bytes) -> Result<(), Bytes> {
        let Some(turn) = self.conn.turn.take() else {
            return Err(msg);
        };
        let kind = match lane {
            Lane::Gossip if self.private.is_empty() && self.gossip.is_empty() => FrameKind::Gossip,
            Lane::Private if self.private.is_empty() && turn.has_room(&self.conn.outbox) => {
                turn.spend(msg.len() as u64);
                FrameKind::Private
            }
            _ => return Err(msg),
        };
        turn.write(&self.conn, kind, &[], msg);
        Ok(())
    }

    /// Counts and reports a gossip message refused because its lane was full.
    fn dropped(&self, msg: Bytes) -> TrySendError<Bytes> {
        self.conn
            .counters
            .gossip_full
            .fetch_add(1, Ordering::Relaxed);
        if let Some(n) = self.conn.send_drops.hit(self.conn.now_ms()) {
            log::warn!(
                "{}: gossip lane to {} is full; dropped {n} message(s) since the last report",
                self.conn.node,
                self.peer
            );
        }
        TrySendError::Full(msg)
    }

    /// Queues a private message, waiting for room (bytes, then a slot) as long as
    /// `patience` allows.
    ///
    /// Every wait is a select with the connection's close signal, holding no lock: a
    /// close, a shutdown or the deadline always gets the sender out, with its message.
    pub(crate) fn send(
        &self,
        msg: Bytes,
        patience: Patience,
    ) -> Result<(), SendTimeoutError<Bytes>> {
        if msg.len() > self.peer_max_frame as usize {
            return Err(SendTimeoutError::TooLarge(msg));
        }
        if self.conn.is_closing() {
            return Err(self.closed(msg));
        }
        let msg = match self.write_now(Lane::Private, msg) {
            Ok(()) => return Ok(()),
            Err(msg) => msg,
        };
        let mut deadline = Deadline::new(patience);
        self.enqueue(Outbound::Private(msg), &mut deadline)
            .map_err(|(why, item)| match item {
                Outbound::Private(msg) => self.interrupted(why, msg),
                Outbound::Request(_) => unreachable!("a private message was queued"),
            })
    }

    /// Puts an item on the private lane, waiting for room (bytes, then a slot) until
    /// `deadline`. On failure the item comes back, its bytes released.
    fn enqueue(
        &self,
        item: Outbound,
        deadline: &mut Deadline,
    ) -> Result<(), (Interrupted, Outbound)> {
        let len = item.len();
        // Started at the first wait, recorded when the send ends, however it ends.
        let mut timer = None;
        if !self.budgets.private.reserve(len) {
            timer = Some(WaitTimer::start(&self.conn.timings.send_wait));
            let _waiting = Gauge::enter(&self.conn.counters.waiting);
            let closed = Some(&self.conn.closed_rx);
            if let Err(why) = self.budgets.private.wait(len, deadline.get(), closed) {
                return Err((why, item));
            }
        }
        let item = match self.private.try_send(item) {
            Ok(()) => return Ok(()),
            Err(ChanTrySend::Full(item)) => item,
            Err(ChanTrySend::Disconnected(item)) => {
                return Err(self.give_back(Interrupted::Closed, item))
            }
        };

        let _timer = timer.unwrap_or_else(|| WaitTimer::start(&self.conn.timings.send_wait));
        let _waiting = Gauge::enter(&self.conn.counters.waiting);
        let deadline = deadline.get();
        let mut item = item;
        loop {
            // Woken once a silence timeout to look for the cycle through the
            // application; the deadline itself is not moved.
            let check = Instant::now().checked_add(self.conn.cycle_check);
            let until = match (deadline, check) {
                (Some(d), Some(c)) => d.min(c),
                (d, c) => d.or(c).unwrap_or_else(Instant::now),
            };
            // If the close raced a slot, the writer's final drain (which waits for
            // this `Link` to be dropped) still hands the message back.
            match self
                .private
                .send_deadline(item, Some(until), &self.conn.closed_rx)
            {
                Ok(()) => return Ok(()),
                Err((Interrupted::Timeout, back))
                    if deadline.is_none_or(|d| Instant::now() < d) =>
                {
                    item = back;
                    self.warn_of_cycle();
                }
                Err((why, back)) => return Err(self.give_back(why, back)),
            }
        }
    }

    /// Warns, once per connection, of the cycle a private send blocked for a whole
    /// silence timeout may be part of: the peer's window is closed to us (its
    /// application takes nothing of ours) and ours is closed to it (our application
    /// takes nothing of the peer's). If the thread blocked here is the one that
    /// reads `incoming()`, and the peer does the same, neither node moves again.
    fn warn_of_cycle(&self) {
        let cycle = self.conn.outbox.is_blocked() && self.conn.inbox_closed();
        if !cycle || self.conn.cycle_warned.swap(true, Ordering::Relaxed) {
            return;
        }
        log::warn!(
            "{}: a private send to {} has waited {:?} for room while the window each node grants the other is closed: neither application takes the other's messages from incoming(). If the thread blocked in send() is the one that reads incoming(), and the peer does the same, both nodes wait for each other for good: answer requests with respond(), which never waits, or send from another thread, or use send_timeout",
            self.conn.node,
            self.peer,
            self.conn.cycle_check,
        );
    }

    /// Sends a request: takes a request slot, registers it, and queues it on the
    /// private lane, each wait ending at `deadline` or at the close. The reply is
    /// waited for with the returned [`Ticket`].
    pub(crate) fn start_request(
        &self,
        body: Bytes,
        deadline: Option<Instant>,
    ) -> Result<Ticket, RequestError<Bytes>> {
        let started = Instant::now();
        if body.len() > self.peer_max_frame as usize {
            return Err(RequestError::TooLarge(body));
        }
        if self.conn.is_closing() {
            return Err(self.request_interrupted(Interrupted::Closed, body));
        }
        let requests = &self.conn.requests;
        if !requests.slots.reserve(1) {
            let _waiting = Gauge::enter(&self.conn.counters.waiting);
            let closed = Some(&self.conn.closed_rx);
            if let Err(why) = requests.slots.wait(1, deadline, closed) {
                return Err(self.request_interrupted(why, body));
            }
        }
        let (pending, answer) = requests.register(body.clone());
        if !self.write_request_now(&pending) {
            let mut patience = Deadline::fixed(deadline);
            if let Err((why, _)) = self.enqueue(Outbound::Request(pending.clone()), &mut patience) {
                requests.unregister(pending.id);
                return Err(self.request_interrupted(why, body));
            }
        }
        Ok(Ticket {
            conn: self.conn.clone(),
            pending,
            answer,
            started,
        })
    }

    /// Writes a request from the calling thread, as [`Link::write_now`] does a
    /// private message. Returns whether it did (or handed its rest to the writer).
    fn write_request_now(&self, pending: &Pending) -> bool {
        let Some(turn) = self.conn.turn.take() else {
            return false;
        };
        if !self.private.is_empty() || !turn.has_room(&self.conn.outbox) || !pending.take() {
            return false;
        }
        // Counted before it is written: the reply can come back before the write
        // returns.
        self.conn.count_request(|c| &c.sent, 1);
        turn.spend(pending.body.len() as u64);
        turn.write(
            &self.conn,
            FrameKind::Request,
            &pending.id.to_be_bytes(),
            pending.body.clone(),
        );
        true
    }

    fn request_interrupted(&self, why: Interrupted, body: Bytes) -> RequestError<Bytes> {
        match why {
            Interrupted::Timeout => {
                self.conn.count_request(|c| &c.timed_out, 1);
                RequestError::Timeout(body)
            }
            Interrupted::Closed => {
                self.conn.count_request(|c| &c.failed, 1);
                self.request_closed(body)
            }
        }
    }

    fn request_closed(&self, body: Bytes) -> RequestError<Bytes> {
        request_closed(&self.conn, body)
    }

    /// Returns the bytes an item had reserved, and the item with the reason.
    fn give_back(&self, why: Interrupted, item: Outbound) -> (Interrupted, Outbound) {
        self.budgets.private.release(item.len());
        (why, item)
    }

    fn interrupted(&self, why: Interrupted, msg: Bytes) -> SendTimeoutError<Bytes> {
        match why {
            Interrupted::Timeout => SendTimeoutError::Timeout(msg),
            Interrupted::Closed => self.closed(msg),
        }
    }

    fn closed(&self, msg: Bytes) -> SendTimeoutError<Bytes> {
        match self.conn.reason() {
            Some(DisconnectReason::Shutdown) => SendTimeoutError::Shutdown(msg),
            _ => SendTimeoutError::Disconnected(msg),
        }
    }

    fn closed_try(&self, msg: Bytes) -> TrySendError<Bytes> {
        match self.conn.reason() {
            Some(DisconnectReason::Shutdown) => TrySendError::Shutdown(msg),
            _ => TrySendError::Disconnected(msg),
        }
    }

    /// Bytes queued on a lane now.
    pub(crate) fn queued_bytes(&self, lane: Lane) -> usize {
        match lane {
            Lane::Gossip => self.budgets.gossip.held(),
            Lane::Private | Lane::Request => self.budgets.private.held(),
        }
    }
}
