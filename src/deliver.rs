//! The reader's other half: handing what it read to the application.
//!
//! Gossip that finds the inbound queue full is dropped and counted; private data
//! waits for room, and a large payload waits, before it is even allocated, for room
//! in the node's budget for large payloads. Every wait selects on the connection's
//! close signal and holds no lock; while one lasts nothing is read, which pushes back
//! over TCP to the sender.

use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Select, SendTimeoutError, TrySendError};

use crate::budget::{Credit, WaitBudget};
use crate::connection::Gauge;
use crate::event::{DisconnectReason, Lane, Message};
use crate::frame::{FrameError, FrameKind};
use crate::reader::Reader;

/// What handling one frame asks of the loop.
pub(crate) enum Next {
    Continue,
    Stop(DisconnectReason),
}

/// Messages delivered since the counters were last updated; added once per read.
#[derive(Default)]
pub(crate) struct Tally {
    gossip: (u64, u64),
    private: (u64, u64),
}

impl Reader<'_> {
    /// Reserves `len` bytes (a large payload's buffer) of the node's budget for large
    /// inbound payloads
    /// (`Config::inbound_bytes`), first waiting, if they do not fit, for the
    /// application to drop earlier ones. Backpressure, as for a full inbound queue:
    /// while this waits nothing is read, and the time is not the peer's silence.
    ///
    /// The wait ends when the connection closes; a graceful close still allows until
    /// its linger deadline.
    pub(crate) fn inbound_credit(
        &self,
        len: usize,
        tally: &mut Tally,
        last_heard: &mut Instant,
    ) -> Result<Credit, DisconnectReason> {
        let budget = &self.node.inbound_bytes;
        if !budget.reserve(len) {
            // Counters first: the application may be waiting on them.
            self.flush(tally);
            *tally = Tally::default();
            if let Some(n) = self.node.inbound_log.hit(self.conn.now_ms()) {
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
                    self.wait_lingering(budget, len)
                }
                Err(_) => false,
            };
            drop(waiting);
            *last_heard = Instant::now();
            if !reserved {
                // The close already has its reason; this one is never recorded.
                return Err(DisconnectReason::ClosedByUs);
            }
        }
        Ok(Credit::reserved(budget.clone(), len))
    }

    /// Waits for room in `budget` while a graceful close lingers (the application
    /// dropping messages keeps it lingering). Returns whether `len` bytes were taken.
    fn wait_lingering(&self, budget: &WaitBudget, len: usize) -> bool {
        if self.app_stalled.get() {
            return false;
        }
        while let Some(deadline) = self.conn.linger_deadline() {
            match budget.wait(len, Some(deadline), None) {
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

    pub(crate) fn handle(
        &self,
        kind: FrameKind,
        payload: Bytes,
        tally: &mut Tally,
        last_heard: &mut Instant,
    ) -> Next {
        if matches!(kind, FrameKind::Gossip | FrameKind::Private) {
            // Data still arriving keeps a graceful close lingering; pings do not.
            self.conn.progress();
        }
        match kind {
            FrameKind::Gossip => {
                let len = payload.len() as u64;
                let msg = Message {
                    from: self.peer,
                    lane: Lane::Gossip,
                    payload,
                };
                match self.inbound.try_send(msg) {
                    Ok(()) => {
                        tally.gossip.0 += 1;
                        tally.gossip.1 += len;
                    }
                    Err(TrySendError::Full(_)) => {
                        self.conn.counters.inb.gossip.drop_n(1);
                        if let Some(n) = self.conn.recv_drops.hit(self.conn.now_ms()) {
                            log::warn!(
                                "{}: inbound queue is full; dropped {n} gossip message(s) from {} since the last report",
                                self.conn.node,
                                self.peer
                            );
                        }
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        return Next::Stop(DisconnectReason::Shutdown)
                    }
                }
                Next::Continue
            }
            FrameKind::Private => {
                let len = payload.len() as u64;
                let msg = Message {
                    from: self.peer,
                    lane: Lane::Private,
                    payload,
                };
                let msg = match self.inbound.try_send(msg) {
                    Ok(()) => {
                        tally.private.0 += 1;
                        tally.private.1 += len;
                        return Next::Continue;
                    }
                    Err(TrySendError::Full(msg)) => msg,
                    Err(TrySendError::Disconnected(_)) => {
                        return Next::Stop(DisconnectReason::Shutdown)
                    }
                };
                // Counters first: the application may be waiting on them.
                self.flush(tally);
                *tally = Tally::default();
                let delivered = self.deliver_blocking(msg);
                // Time spent waiting for the application is not the peer's silence.
                *last_heard = Instant::now();
                if delivered {
                    self.conn.counters.inb.private.add(1, len);
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
                Next::Continue
            }
            FrameKind::Ping => {
                // A pong already pending answers this ping too.
                let _ = self.pong.try_send(());
                Next::Continue
            }
            FrameKind::Pong => Next::Continue,
            FrameKind::Close => Next::Stop(DisconnectReason::ClosedByPeer),
            FrameKind::Hello | FrameKind::Accept | FrameKind::Auth => {
                Next::Stop(DisconnectReason::Protocol(FrameError::Unexpected(kind)))
            }
        }
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

    pub(crate) fn flush(&self, tally: &Tally) {
        let inb = &self.conn.counters.inb;
        inb.gossip.add(tally.gossip.0, tally.gossip.1);
        inb.private.add(tally.private.0, tally.private.1);
    }
}
