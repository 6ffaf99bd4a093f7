//! Handing what the reader read to the application.
//!
//! Handing over never waits for the application. Private data and requests fit in
//! the window this side granted the peer ([`crate::conn::window`]); gossip that
//! finds the inbound queue's gossip places taken is dropped and counted.
//!
//! One wait is left: a large gossip payload waits, before it is even allocated, for
//! room in the node's budget for large payloads. It selects on the connection's
//! close signal and holds no lock; while it lasts nothing is read, which pushes back
//! over TCP to the sender.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::Sender;

use super::request::Inquiry;
use super::shared::ConnShared;
use super::timers::Silence;
use super::window::Hold;
use crate::event::{DisconnectReason, Lane, Message};
use crate::id::PeerId;
use crate::sync::{Budget, Credit, Gauge, LogLimit, WaitBudget};
use crate::wire::frame::{FrameError, FrameKind};

/// Delivers one connection's data frames to the node's inbound queue.
pub(crate) struct Delivery<'a> {
    pub(crate) conn: &'a ConnShared,
    pub(crate) peer: PeerId,
    pub(crate) inbound: &'a Sender<Message>,
    /// Bytes of large inbound payloads held, node-wide (`Config::inbound_bytes`).
    pub(crate) inbound_bytes: &'a Arc<WaitBudget>,
    /// Places for gossip in the inbound queue, node-wide (`Config::inbound_capacity`).
    pub(crate) gossip_places: &'a Arc<Budget>,
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
        gossip_places: &'a Arc<Budget>,
    ) -> Delivery<'a> {
        Delivery {
            conn,
            peer,
            inbound,
            inbound_bytes,
            gossip_places,
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
        kind: FrameKind,
        len: usize,
        silence: &mut Silence,
    ) -> Result<Option<Credit>, DisconnectReason> {
        let budget = self.inbound_bytes;
        if matches!(kind, FrameKind::Private | FrameKind::Request) {
            // Bounded by the window this side granted: never waits, even when the
            // budget is spent (it then holds more than its limit for a while).
            budget.force(len);
        } else if !budget.reserve(len) {
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

    /// Hands a data frame's payload to the application. Never waits: private data
    /// and requests fit in the window this side granted (a frame beyond it is the
    /// peer breaking the protocol), and gossip is dropped and counted when the
    /// inbound queue holds `inbound_capacity` gossip messages. `Err` when the
    /// node's queue is gone (shutdown) or the peer overran its window.
    pub(crate) fn deliver(
        &self,
        lane: Lane,
        payload: Bytes,
        request: Option<Inquiry>,
    ) -> Result<(), DisconnectReason> {
        // Data still arriving keeps a graceful close lingering; pings do not.
        self.conn.progress();
        let len = payload.len() as u64;
        let hold = if lane == Lane::Gossip {
            if !self.gossip_places.reserve(1) {
                self.drop_gossip();
                return Ok(());
            }
            Hold::Gossip(self.gossip_places.clone())
        } else {
            let inbox = self.conn.inbox();
            if !inbox.receive(len) {
                return Err(DisconnectReason::Protocol(
                    FrameError::WindowExceeded.into(),
                ));
            }
            Hold::Window(inbox.flow().clone(), len)
        };
        let msg = Message {
            from: self.peer,
            lane,
            payload,
            request,
            hold,
        };
        if lane == Lane::Request {
            // Counted before it is handed over, not with the batch: the application
            // may answer it, and the requester look at the counters, a moment from
            // now. (Should the queue be gone, the request is dropped unanswered, and
            // counted so, too.)
            self.conn.count_request(|c| &c.served, 1);
        }
        // The queue is bounded by what is let into it, above: sending never waits.
        if self.inbound.send(msg).is_err() {
            return Err(DisconnectReason::Shutdown);
        }
        let mut tally = self.tally.get();
        match lane {
            Lane::Gossip => tally.gossip = (tally.gossip.0 + 1, tally.gossip.1 + len),
            Lane::Private => tally.private = (tally.private.0 + 1, tally.private.1 + len),
            Lane::Request => {}
        }
        self.tally.set(tally);
        Ok(())
    }

    /// Counts (and now and then logs) a gossip message that found no room.
    fn drop_gossip(&self) {
        self.conn.counters.inb.gossip.drop_n(1);
        if let Some(n) = self.conn.recv_drops.hit(self.conn.now_ms()) {
            log::warn!(
                "{}: inbound queue holds inbound_capacity gossip messages; dropped {n} gossip message(s) from {} since the last report",
                self.conn.node,
                self.peer
            );
        }
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

    /// Adds what was delivered since the last flush to the counters.
    pub(crate) fn flush(&self) {
        let tally = self.tally.take();
        let inb = &self.conn.counters.inb;
        inb.gossip.add(tally.gossip.0, tally.gossip.1);
        inb.private.add(tally.private.0, tally.private.1);
    }
}
