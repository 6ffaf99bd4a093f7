//! Requests and replies on one connection.
//!
//! Requester side: a request takes one of [`REQUESTS_IN_FLIGHT`] slots, is
//! registered under a fresh id, and travels on the private lane (so it keeps the
//! lane's order with private messages); its slot comes back when the reply arrives.
//! Responder side: because the requester never has more requests in flight than
//! that, the responder's reply lane, bounded by the same number, always has room for
//! every reply it owes — so [`Node::respond`](crate::Node::respond), called on the
//! application's receive loop, never waits, and the cycle through the application
//! (both sides blocked answering, nobody reading) cannot form.
//!
//! No lock here is held across a wait: the pending table's mutex guards inserts and
//! removals only, and a reply is handed to its waiter after the lock is released.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{bounded, unbounded, Receiver, Select, Sender, TrySendError};
use parking_lot::Mutex;

use super::shared::ConnShared;
use crate::error::{RequestError, RespondError};
use crate::event::DisconnectReason;
use crate::sync::{Never, WaitBudget};
use crate::wire::frame::{
    FrameKind, REPLY_ANSWERED, REPLY_PREFIX, REPLY_UNANSWERED, REQUESTS_IN_FLIGHT,
};

/// What travels on a connection's private lane, in one order.
pub(crate) enum Outbound {
    Private(Bytes),
    Request(Arc<Pending>),
}

impl Outbound {
    /// The payload bytes, against the lane's byte budget.
    pub(crate) fn len(&self) -> usize {
        match self {
            Outbound::Private(msg) => msg.len(),
            Outbound::Request(req) => req.body.len(),
        }
    }
}

/// A request's state, between its requester and the writer.
const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const CANCELLED: u8 = 2;

/// A request on its way: queued, or written and waiting for its reply.
pub(crate) struct Pending {
    pub(crate) id: u64,
    pub(crate) body: Bytes,
    state: AtomicU8,
}

impl Pending {
    /// The writer takes the request to write it; `false` if its requester gave up
    /// first (it is then never written).
    pub(crate) fn take(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The requester gives up; `true` if the request had not been taken, and will
    /// never reach the socket.
    fn cancel(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// What the requester hears back.
#[derive(Debug)]
pub(crate) enum Answer {
    Replied(Bytes),
    Unanswered,
}

/// A registered request: the way to its requester, until it gives up.
struct Entry {
    pending: Arc<Pending>,
    answer: Option<Sender<Answer>>,
}

/// The requester side of one connection: ids, the pending table, the slots.
pub(crate) struct Requests {
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Entry>>,
    /// One unit per request registered and not yet answered (or cancelled unsent).
    pub(crate) slots: WaitBudget,
}

impl Default for Requests {
    fn default() -> Requests {
        Requests {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            slots: WaitBudget::new(REQUESTS_IN_FLIGHT),
        }
    }
}

/// Why a reply frame was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UnknownReply;

impl Requests {
    /// Registers a request, whose slot the caller holds. Returns it, to queue, and
    /// where its answer will come.
    pub(crate) fn register(&self, body: Bytes) -> (Arc<Pending>, Receiver<Answer>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let pending = Arc::new(Pending {
            id,
            body,
            state: AtomicU8::new(QUEUED),
        });
        let (tx, rx) = bounded(1);
        let entry = Entry {
            pending: pending.clone(),
            answer: Some(tx),
        };
        self.pending.lock().insert(id, entry);
        (pending, rx)
    }

    /// Forgets a request that will never be written — it never made it onto the
    /// lane, or the writer found it cancelled — and frees its slot.
    pub(crate) fn unregister(&self, id: u64) {
        // Taken out in a statement of its own: the entry (its requester's sender) is
        // dropped after the table's lock, as everywhere else.
        let removed = self.pending.lock().remove(&id);
        if removed.is_some() {
            self.slots.release(1);
        }
    }

    /// The requester stops waiting. Returns `Some(was_sent)` if it did so before the
    /// reply came — `was_sent` false when the request will never reach the socket —
    /// or `None` if the reply is already on its way to `rx`.
    pub(crate) fn abandon(&self, pending: &Pending) -> Option<bool> {
        let sender = {
            let mut table = self.pending.lock();
            let entry = table.get_mut(&pending.id)?;
            entry.answer.take()
        };
        // Dropped outside the lock.
        drop(sender);
        // If it was not taken yet the writer will skip it and free its slot;
        // otherwise the late reply frees it.
        Some(!pending.cancel())
    }

    /// A reply arrived: frees the slot, and returns the answer with the way to its
    /// requester, or `None` for a late reply (the requester gave up). The caller
    /// counts the outcome before it hands the answer over, so that a requester that
    /// has its answer sees it counted.
    pub(crate) fn complete(
        &self,
        id: u64,
        status: u8,
        body: Bytes,
    ) -> Result<Option<(Sender<Answer>, Answer)>, UnknownReply> {
        let entry = self.pending.lock().remove(&id);
        let Some(entry) = entry else {
            return Err(UnknownReply);
        };
        if entry.pending.state.load(Ordering::Acquire) != TAKEN {
            // A reply to a request that was never written.
            return Err(UnknownReply);
        }
        self.slots.release(1);
        let answer = match status {
            REPLY_ANSWERED => Answer::Replied(body),
            REPLY_UNANSWERED => Answer::Unanswered,
            _ => return Err(UnknownReply),
        };
        Ok(entry.answer.map(|tx| (tx, answer)))
    }
}

/// A reply waiting in the reply lane for the writer.
pub(crate) struct ReplyOut {
    pub(crate) id: u64,
    pub(crate) status: u8,
    pub(crate) body: Bytes,
}

/// The responder side of one connection: the reply lane, and how many replies are
/// owed (requests delivered whose replies the writer has not taken yet).
pub(crate) struct Replies {
    pub(crate) tx: Sender<ReplyOut>,
    pub(crate) owed: AtomicUsize,
}

/// Creates a connection's reply lane: room for every reply it may owe.
///
/// Bounded by what it may owe, not by the channel: [`Replies::owe`] refuses the
/// request beyond [`REQUESTS_IN_FLIGHT`], and each request delivered is answered at
/// most once, so the lane never holds more than that many replies. The channel is
/// crossbeam's unbounded one, which allocates as replies arrive: a `bounded(128)`
/// allocated and touched 7 KiB per connection up front, a tenth of what an idle
/// connection cost (`wirelane-bench scale`).
pub(crate) fn reply_lane() -> (Arc<Replies>, Receiver<ReplyOut>) {
    let (tx, rx) = unbounded();
    let replies = Arc::new(Replies {
        tx,
        owed: AtomicUsize::new(0),
    });
    (replies, rx)
}

impl Replies {
    /// A request arrived: one more reply owed. `false` if the peer has more
    /// requests in flight than the protocol allows.
    pub(crate) fn owe(&self) -> bool {
        self.owed.fetch_add(1, Ordering::AcqRel) < REQUESTS_IN_FLIGHT
    }

    /// The writer took `n` replies out of the lane.
    pub(crate) fn taken(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.owed.fetch_sub(n, Ordering::AcqRel);
    }
}

/// What [`Node::respond`](crate::Node::respond) needs of a request: shared by the
/// clones of its message, and answered at most once. When the last clone goes
/// unanswered, the requester is told.
#[derive(Clone)]
pub(crate) struct Inquiry(Arc<InquiryInner>);

struct InquiryInner {
    id: u64,
    conn: Weak<ConnShared>,
    replies: Arc<Replies>,
    peer_max_frame: u32,
    answered: AtomicBool,
    /// Disconnects when the node begins to shut down: tells a reply refused after
    /// the connection is gone whether the node shut down.
    shutdown: Receiver<Never>,
}

impl Inquiry {
    pub(crate) fn new(
        id: u64,
        conn: &Arc<ConnShared>,
        replies: Arc<Replies>,
        peer_max_frame: u32,
        shutdown: &Receiver<Never>,
    ) -> Inquiry {
        Inquiry(Arc::new(InquiryInner {
            id,
            conn: Arc::downgrade(conn),
            replies,
            peer_max_frame,
            answered: AtomicBool::new(false),
            shutdown: shutdown.clone(),
        }))
    }

    /// Queues the reply. Never waits: the reply lane has room for every reply owed.
    pub(crate) fn respond(&self, body: Bytes) -> Result<(), RespondError<Bytes>> {
        let inner = &self.0;
        if body.len() > inner.peer_max_frame as usize {
            return Err(RespondError::TooLarge(body));
        }
        if inner.answered.swap(true, Ordering::AcqRel) {
            return Err(RespondError::AlreadyAnswered(body));
        }
        let Some(conn) = inner.conn.upgrade().filter(|c| !c.is_closing()) else {
            return Err(self.closed(inner.conn.upgrade().as_deref(), body));
        };
        // Written from this thread if the writer is parked and no reply is queued
        // (`crate::conn::turn`); the reply lane has room for it either way.
        if let Some(turn) = conn.turn.take().filter(|_| inner.replies.tx.is_empty()) {
            let mut prefix = [0u8; REPLY_PREFIX];
            prefix[..8].copy_from_slice(&inner.id.to_be_bytes());
            prefix[8] = REPLY_ANSWERED;
            // The debt is settled before the first byte leaves: once the reply is on
            // the wire the peer may reuse its request slot at once, and the reader
            // must find room for that request (the writer does the same in `gather`).
            inner.replies.taken(1);
            turn.write(&conn, FrameKind::Reply, &prefix, body);
            conn.count_request(|c| &c.responded, 1);
            return Ok(());
        }
        let reply = ReplyOut {
            id: inner.id,
            status: REPLY_ANSWERED,
            body,
        };
        match inner.replies.tx.try_send(reply) {
            Ok(()) => {
                conn.count_request(|c| &c.responded, 1);
                Ok(())
            }
            Err(TrySendError::Disconnected(reply)) => Err(self.closed(Some(&conn), reply.body)),
            Err(TrySendError::Full(reply)) => {
                // Cannot happen: the lane is unbounded, and `Replies::owe` bounds
                // it. Kept as an error rather than a panic.
                log::error!(
                    "{}: no room for a reply on {} although every reply owed has room",
                    conn.node,
                    conn.id
                );
                Err(self.closed(Some(&conn), reply.body))
            }
        }
    }

    /// The error for a reply whose connection has closed (or is gone).
    fn closed(&self, conn: Option<&ConnShared>, body: Bytes) -> RespondError<Bytes> {
        let shut = matches!(
            self.0.shutdown.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        );
        match conn.and_then(ConnShared::reason) {
            Some(DisconnectReason::Shutdown) => RespondError::Shutdown(body),
            _ if shut => RespondError::Shutdown(body),
            _ => RespondError::Disconnected(body),
        }
    }
}

impl Drop for InquiryInner {
    fn drop(&mut self) {
        if *self.answered.get_mut() {
            return;
        }
        let Some(conn) = self.conn.upgrade().filter(|c| !c.is_closing()) else {
            return;
        };
        let reply = ReplyOut {
            id: self.id,
            status: REPLY_UNANSWERED,
            body: Bytes::new(),
        };
        if self.replies.tx.try_send(reply).is_ok() {
            conn.count_request(|c| &c.dropped, 1);
        }
    }
}

impl PartialEq for Inquiry {
    fn eq(&self, other: &Inquiry) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Inquiry {}

impl fmt::Debug for Inquiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Inquiry({})", self.0.id)
    }
}

/// The error for a request whose connection closed.
pub(crate) fn request_closed(conn: &ConnShared, body: Bytes) -> RequestError<Bytes> {
    match conn.reason() {
        Some(DisconnectReason::Shutdown) => RequestError::Shutdown(body),
        _ => RequestError::Disconnected(body),
    }
}

/// A request queued or written, whose reply can be waited for.
pub(crate) struct Ticket {
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) pending: Arc<Pending>,
    pub(crate) answer: Receiver<Answer>,
    /// When the request was made, for its round trip.
    pub(crate) started: Instant,
}

impl Ticket {
    /// The channel the answer comes on, for a caller selecting over many tickets.
    pub(crate) fn answer(&self) -> &Receiver<Answer> {
        &self.answer
    }

    /// Disconnects when the request's connection starts closing.
    pub(crate) fn closed(&self) -> &Receiver<crate::sync::Never> {
        &self.conn.closed_rx
    }

    /// Waits for the reply until `deadline`, or until the connection closes (which
    /// fails every pending request at once, not at its deadline).
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Result<Bytes, RequestError<Bytes>> {
        let mut sel = Select::new();
        let answer = sel.recv(&self.answer);
        sel.recv(&self.conn.closed_rx);
        let oper = match deadline {
            None => Some(sel.select()),
            Some(deadline) => sel.select_deadline(deadline).ok(),
        };
        match oper {
            Some(oper) if oper.index() == answer => {
                let got = oper.recv(&self.answer);
                self.settle(got.ok())
            }
            Some(oper) => {
                let _ = oper.recv(&self.conn.closed_rx);
                self.give_up(false)
            }
            None => self.give_up(true),
        }
    }

    /// What an answer means for the requester.
    pub(crate) fn settle(&self, answer: Option<Answer>) -> Result<Bytes, RequestError<Bytes>> {
        match answer {
            Some(Answer::Replied(body)) => {
                self.conn.timings.request.record(self.started.elapsed());
                Ok(body)
            }
            Some(Answer::Unanswered) => Err(RequestError::Unanswered(self.pending.body.clone())),
            // The answer's sender went without a word: only when the request was
            // forgotten at a close.
            None => self.give_up(false),
        }
    }

    /// Stops waiting: the deadline passed (`timed_out`) or the connection closed.
    /// A reply that was already on its way is taken after all.
    pub(crate) fn give_up(&self, timed_out: bool) -> Result<Bytes, RequestError<Bytes>> {
        let body = self.pending.body.clone();
        if self.conn.requests.abandon(&self.pending).is_none() {
            // The reader took the entry first: the answer is in the channel, or its
            // sender is about to go.
            return match self.answer.recv() {
                Ok(Answer::Replied(body)) => Ok(body),
                Ok(Answer::Unanswered) => Err(RequestError::Unanswered(body)),
                Err(_) => {
                    self.conn.count_request(|c| &c.failed, 1);
                    Err(request_closed(&self.conn, body))
                }
            };
        }
        if timed_out && !self.conn.is_closing() {
            self.conn.count_request(|c| &c.timed_out, 1);
            Err(RequestError::Timeout(body))
        } else {
            self.conn.count_request(|c| &c.failed, 1);
            Err(request_closed(&self.conn, body))
        }
    }

    /// Stops waiting for a request whose outcome no one asks for any more
    /// (`request_many` had its replies): a reply that comes is counted late.
    pub(crate) fn abandon(&self) {
        if self.conn.requests.abandon(&self.pending).is_some() {
            self.conn.count_request(|c| &c.abandoned, 1);
        }
    }
}
