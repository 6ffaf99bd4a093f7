//! Where a connection delivers: the node's inbound queue and its event queue.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Select, Sender, TrySendError};

use crate::event::{Event, Message};
use crate::id::PeerId;
use crate::sync::{LogLimit, Never};

/// A connection's own clones of the node's queues, so that the queues disconnect
/// once the node has shut down and every connection has ended.
pub(crate) struct Outlets {
    pub(crate) inbound: Sender<Message>,
    pub(crate) events: EventSink,
}

/// The node's event queue, with what emitting needs: a count and a rate-limited log
/// of events dropped for want of room, and the node's shutdown signal, which ends a
/// wait for room.
#[derive(Clone)]
pub(crate) struct EventSink {
    tx: Sender<Event>,
    shared: Arc<SinkShared>,
}

/// The part of an [`EventSink`] every clone shares.
pub(crate) struct SinkShared {
    node: PeerId,
    dropped: AtomicU64,
    drops: LogLimit,
    epoch: Instant,
    /// Disconnects when the node begins to shut down.
    shutdown: Receiver<Never>,
}

impl SinkShared {
    pub(crate) fn new(node: PeerId, epoch: Instant, shutdown: Receiver<Never>) -> SinkShared {
        SinkShared {
            node,
            dropped: AtomicU64::new(0),
            drops: LogLimit::new(),
            epoch,
            shutdown,
        }
    }

    /// Informational events dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

impl EventSink {
    pub(crate) fn new(tx: Sender<Event>, shared: Arc<SinkShared>) -> EventSink {
        EventSink { tx, shared }
    }

    /// Emits an informational event; if the queue is full it is dropped and counted.
    pub(crate) fn emit(&self, event: Event) {
        if let Err(TrySendError::Full(event)) = self.tx.try_send(event) {
            let shared = &self.shared;
            shared.dropped.fetch_add(1, Relaxed);
            if let Some(n) = shared.drops.hit(shared.epoch.elapsed().as_millis() as u64) {
                log::warn!(
                    "{}: event queue is full; dropped {n} event(s) since the last report (latest: {event:?})",
                    shared.node
                );
            }
        }
    }

    /// Disconnects when the node begins to shut down.
    pub(crate) fn shutdown(&self) -> &Receiver<Never> {
        &self.shared.shutdown
    }

    /// Emits an event that must not be lost, waiting for room until the node shuts
    /// down. Returns whether it was delivered.
    pub(crate) fn emit_or_wait(&self, event: Event) -> bool {
        let event = match self.tx.try_send(event) {
            Ok(()) => return true,
            Err(TrySendError::Full(event)) => event,
            Err(TrySendError::Disconnected(_)) => return false,
        };
        let shutdown = &self.shared.shutdown;
        let mut sel = Select::new();
        let room = sel.send(&self.tx);
        sel.recv(shutdown);
        let oper = sel.select();
        if oper.index() == room {
            return oper.send(&self.tx, event).is_ok();
        }
        let _ = oper.recv(shutdown);
        // Shutting down: one last try, in case room appeared at the same moment.
        self.tx.try_send(event).is_ok()
    }
}
