//! Handing what the reader read to the application.
//!
//! Gossip that finds the inbound queue full is dropped and counted; private data
//! waits for room, and a large payload waits, before it is even allocated, for room
//! in the node's budget for large payloads. Every wait selects on the connection's
//! close signal and holds no lock; while one lasts nothing is read, which pushes back
//! over TCP to the sender.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Select, SendTimeoutError, Sender, TrySendError};

use super::request::Inquiry;
use super::shared::ConnShared;
use super::timers::Silence;
use crate::event::{DisconnectReason, Lane, Message};
use crate::id::PeerId;
use crate::sync::{Credit, Gauge, LogLimit, WaitBudget};

/// Delivers one connection's data frames to the node's inbound queue.
pub(crate) struct Delivery<'a> {
    pub(crate) conn: &'a ConnShared,
    pub(crate) peer: PeerId,
    pub(crate) inbound: &'a Sender<Message>,
    /// Bytes of large inbound payloads held, node-wide (`Config::inbound_bytes`).
    pub(crate) inbound_bytes: &'a Arc<WaitBudget>,
    /// Rate-limits the warning that readers wait for `inbound_bytes`, node-wide.
    pub(crate) inbound_log: &'a LogLimit,
    /// Set when, during a graceful close, the application let a whole linger pass
    /// without making room: from then on frames are delivered only if there is room
    /// at once, and counted as `recv_dropped` otherwise.
    app_stalled: Cell<bool>,
    /// Messages delivered since the counters were last updated.
    tally: Cell<Tally>,
}

/// Messages delivered and their bytes, per lane; added to the counters once per read.
#[derive(Default, Clone, Copy)]
struct Tally {
    gossip: (u64, u64),
    private: (u64, u64),
}

impl<'a> Delivery<'a> {
    pub(crate) fn new(
        conn: &'a ConnShared,
        peer: PeerId,
        inbound: &'a Sender<Message>,
        inbound_bytes: &'a Arc<WaitBudget>,
        inbound_log: &'a LogLimit,
    ) -> Delivery<'a> {
        Delivery {
            conn,
            peer,
            inbound,
            inbound_bytes,
            inbound_log,
            app_stalled: Cell::new(false),
            tally: Cell::new(Tally::default()),
        }
    }

    /// Reserves `len` bytes (a large payload's buffer) of the node's budget for
    /// large inbound payloads, first waiting, if they do not fit, for the application
    /// to drop earlier ones. Backpressure, as for a full inbound queue: while this
    /// waits nothing is read, and the time is not the peer's silence.
    ///
    /// The wait ends when the connection closes; a graceful close still allows until
    /// its linger deadline.
    pub(crate) fn credit(
        &self,
        len: usize,
        silence: &mut Silence,
    ) -> Result<Option<Credit>, DisconnectReason> {
        let budget = self.inbound_bytes;
        if !budget.reserve(len) {
            // Counters first: the application may be waiting on them.
            self.flush();
            if let Some(n) = self.inbound_log.hit(self.conn.now_ms()) {
                log::warn!(
                    "{}: large payloads received and not yet dropped by the application hold {} bytes, the inbound_bytes limit; reading from {} waits for room ({n} wait(s) since the last report)",
                    self.conn.node,
                    budget.held(),
                    self.peer
                );
            }
            let waiting = Gauge::enter(&self.conn.counters.reader_waiting);
            let reserved = match budget.wait(len, None, Some(&self.conn.closed_rx)) {
                Ok(()) => true,
                Err(_) if self.conn.reason().is_some_and(|r| r.is_graceful()) => {
                    self.wait_lingering(len)
                }
                Err(_) => false,
            };
            drop(waiting);
            silence.heard(Instant::now());
            if !reserved {
                // The close already has its reason; this one is never recorded.
                return Err(DisconnectReason::ClosedByUs);
            }
        }
        Ok(Some(Credit::reserved(budget.clone(), len)))
    }

    /// Waits for room in the budget while a graceful close lingers (the application
    /// dropping messages keeps it lingering). Returns whether `len` bytes were taken.
    fn wait_lingering(&self, len: usize) -> bool {
        if self.app_stalled.get() {
            return false;
        }
        while let Some(deadline) = self.conn.linger_deadline() {
            match self.inbound_bytes.wait(len, Some(deadline), None) {
                Ok(()) => {
                    self.conn.progress();
                    return true;
                }
                Err(_) if self.conn.linger_over() => {
                    self.app_stalled.set(true);
                    return false;
                }
                Err(_) => {}
            }
        }
        false
    }

    /// Hands a data frame's payload to the application: gossip if there is room,
    /// private data and requests waiting for room. `Err` when the node's queue is
    /// gone (shutdown).
    pub(crate) fn deliver(
        &self,
        lane: Lane,
        payload: Bytes,
        request: Option<Inquiry>,
        silence: &mut Silence,
    ) -> Result<(), DisconnectReason> {
        // Data still arriving keeps a graceful close lingering; pings do not.
        self.conn.progress();
        let len = payload.len() as u64;
        let msg = Message {
            from: self.peer,
            lane,
            payload,
            request,
        };
        let msg = match self.inbound.try_send(msg) {
            Ok(()) => {
                let mut tally = self.tally.get();
                match lane {
                    Lane::Gossip => tally.gossip = (tally.gossip.0 + 1, tally.gossip.1 + len),
                    Lane::Private => {
                        tally.private = (tally.private.0 + 1, tally.private.1 + len);
                    }
                    // Counted at once, not with the batch: the requester may have
                    // its reply (and look at the counters) a moment from now.
                    Lane::Request => self.conn.count_request(|c| &c.served, 1),
                }
                self.tally.set(tally);
                return Ok(());
            }
            Err(TrySendError::Full(msg)) => msg,
            Err(TrySendError::Disconnected(_)) => return Err(DisconnectReason::Shutdown),
        };
        if lane == Lane::Gossip {
            self.conn.counters.inb.gossip.drop_n(1);
            if let Some(n) = self.conn.recv_drops.hit(self.conn.now_ms()) {
                log::warn!(
                    "{}: inbound queue is full; dropped {n} gossip message(s) from {} since the last report",
                    self.conn.node,
                    self.peer
                );
            }
            return Ok(());
        }
        // Counters first: the application may be waiting on them.
        self.flush();
        let delivered = self.deliver_blocking(msg);
        // Time spent waiting for the application is not the peer's silence.
        silence.heard(Instant::now());
        if delivered && lane == Lane::Request {
            self.conn.count_request(|c| &c.served, 1);
        } else if delivered {
            self.conn.counters.inb.private.add(1, len);
        } else if lane == Lane::Request {
            // Not delivered: the requester is told by the close (its connection
            // ends), so nothing is counted as lost here.
        } else {
            self.conn.counters.inb.private.drop_n(1);
            if let Some(n) = self.conn.discards.hit(self.conn.now_ms()) {
                log::warn!(
                    "{}: connection to {} is closing and the application took no room for its private messages; discarded {n} since the last report",
                    self.conn.node,
                    self.peer
                );
            }
        }
        Ok(())
    }

    /// Stops waiting for the application for the rest of this close: frames are
    /// delivered if there is room at once, and counted otherwise.
    pub(crate) fn stop_waiting(&self) {
        self.app_stalled.set(true);
    }

    /// Whether [`Delivery::stop_waiting`] (or a linger without room) ended the waits.
    pub(crate) fn stopped_waiting(&self) -> bool {
        self.app_stalled.get()
    }

    /// Counts a data frame received but never delivered: its connection ended while
    /// it was being read.
    pub(crate) fn lost(&self, lane: Lane) {
        self.conn.counters.inb.lane(lane).drop_n(1);
    }

    /// Waits for room in the inbound queue. Backpressure: while this waits, nothing
    /// is read, and the peer's writes block once the socket buffers fill.
    ///
    /// The wait ends when the connection closes; a graceful close still allows until
    /// its linger deadline. Returns whether the message was delivered.
    fn deliver_blocking(&self, msg: Message) -> bool {
        let _waiting = Gauge::enter(&self.conn.counters.reader_waiting);
        let mut sel = Select::new();
        let room = sel.send(self.inbound);
        sel.recv(&self.conn.closed_rx);
        let oper = sel.select();
        let mut msg = if oper.index() == room {
            return oper.send(self.inbound, msg).is_ok();
        } else {
            let _ = oper.recv(&self.conn.closed_rx);
            msg
        };
        if !self.conn.reason().is_some_and(|r| r.is_graceful()) || self.app_stalled.get() {
            return false;
        }
        // Closing gracefully: keep waiting while the close lingers (the application
        // taking other messages, or the socket moving, keeps it lingering).
        loop {
            let Some(deadline) = self.conn.linger_deadline() else {
                return false;
            };
            match self.inbound.send_deadline(msg, deadline) {
                Ok(()) => {
                    self.conn.progress();
                    return true;
                }
                Err(SendTimeoutError::Disconnected(_)) => return false,
                Err(SendTimeoutError::Timeout(_)) if self.conn.linger_over() => {
                    // Once the application has let a whole linger pass, the rest of
                    // this close does not wait for it again (each frame that arrives
                    // would otherwise start another linger, up to the cap).
                    self.app_stalled.set(true);
                    return false;
                }
                Err(SendTimeoutError::Timeout(back)) => msg = back,
            }
        }
    }

    /// Adds what was delivered since the last flush to the counters.
    pub(crate) fn flush(&self) {
        let tally = self.tally.take();
        let inb = &self.conn.counters.inb;
        inb.gossip.add(tally.gossip.0, tally.gossip.1);
        inb.private.add(tally.private.0, tally.private.1);
    }
}
