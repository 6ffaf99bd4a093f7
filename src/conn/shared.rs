//! One connection's shared state: identity, close signal, counters.
//!
//! Everyone who waits on a connection — a blocked sender, the writer, a reader
//! handing a message to a full inbound queue — waits in a crossbeam select that
//! includes this connection's close signal, so closing it wakes them all. See
//! [`crate::conn::lane`] for the senders' side.

use std::net::SocketAddr;

use crate::conn::stream::Stream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;

use super::lane::Link;
use super::request::Requests;
use super::timers::Linger;
use super::turn::Turn;
use super::window::{Inbox, Outbox};
use crate::config::Config;
use crate::event::DisconnectReason;
use crate::id::{ConnId, PeerId};
use crate::stats::{Counters, RequestCounters};
use crate::sync::{LogLimit, Never};
use crate::timing::Timings;

/// What a connection calls when it starts closing: takes it out of wherever senders
/// find it (the node's peer table), so that no new send reaches it. Returns the link
/// it removed, for the caller to drop outside any lock.
pub(crate) trait Unregister: Send + Sync {
    fn unregister(&self, conn: &ConnShared) -> Option<Arc<Link>>;
}

/// What a connection knows of the node that owns it.
pub(crate) struct Owner {
    /// Takes the connection out of the peer table when it closes.
    pub(crate) unregister: Weak<dyn Unregister>,
    /// The node's request counters.
    pub(crate) requests: Arc<RequestCounters>,
    /// The node's histograms of waits and round trips.
    pub(crate) timings: Arc<Timings>,
}

/// The state of one connection shared by its reader, its writer, the node and the
/// senders: identity, close signal, counters.
pub(crate) struct ConnShared {
    pub(crate) id: ConnId,
    /// Whether the peer dialled us.
    pub(crate) inbound: bool,
    pub(crate) local_addr: SocketAddr,
    pub(crate) peer_addr: SocketAddr,
    /// Our own node's id, for log lines.
    pub(crate) node: PeerId,
    /// The peer's id, set once when the connection is registered.
    pub(crate) peer: OnceLock<PeerId>,
    pub(crate) counters: Counters,
    /// The requests this side has sent on the connection and not yet had answered.
    pub(crate) requests: Requests,
    /// Flow control of the private lane: the window this side grants the peer (set
    /// once the peer is known, before the reader and writer start), and the window
    /// the peer grants us.
    inbox: OnceLock<Arc<Inbox>>,
    pub(crate) outbox: Arc<Outbox>,
    /// Wakes the writer when the peer granted room.
    pub(crate) flow_rx: Receiver<()>,
    /// The node's request counters. Requests are counted here as well as in the
    /// connection's own counters, because a requester or a responder may count an
    /// outcome after the connection has ended and its counters were added up.
    node_requests: Arc<RequestCounters>,
    /// The node's histograms of waits and round trips.
    pub(crate) timings: Arc<Timings>,
    stream: Arc<Stream>,
    /// Whose turn it is to write: the writer's, or a sender's while it is parked.
    pub(crate) turn: Turn,
    epoch: Instant,
    close: Mutex<CloseState>,
    closing: AtomicBool,
    /// Set once the reader and writer run; before that, closing must cut the socket
    /// to interrupt the handshake.
    established: AtomicBool,
    /// Set when the handshake was dropped to make room under the handshake limit.
    evicted: AtomicBool,
    closed_tx: Mutex<Option<Sender<Never>>>,
    /// Disconnects when the connection starts closing; selected on by everyone who
    /// waits on this connection.
    pub(crate) closed_rx: Receiver<Never>,
    unregister: Weak<dyn Unregister>,
    pub(crate) send_drops: LogLimit,
    /// How long a private send waits before it checks for the cycle through the
    /// application (the silence timeout), and whether it has warned of it.
    pub(crate) cycle_check: Duration,
    pub(crate) cycle_warned: AtomicBool,
    pub(crate) recv_drops: LogLimit,
}

#[derive(Debug)]
struct CloseState {
    reason: Option<DisconnectReason>,
    linger: Linger,
}

impl ConnShared {
    pub(crate) fn new(
        id: ConnId,
        node: PeerId,
        inbound: bool,
        stream: Arc<Stream>,
        config: &Config,
        epoch: Instant,
        owner: Owner,
    ) -> std::io::Result<ConnShared> {
        let Owner {
            unregister,
            requests: node_requests,
            timings,
        } = owner;
        let (closed_tx, closed_rx) = bounded(0);
        let (flow_tx, flow_rx) = bounded(1);
        Ok(ConnShared {
            id,
            inbound,
            local_addr: stream.local_addr()?,
            peer_addr: stream.peer_addr()?,
            node,
            peer: OnceLock::new(),
            counters: Counters::default(),
            requests: Requests::default(),
            inbox: OnceLock::new(),
            outbox: Arc::new(Outbox::new(flow_tx)),
            flow_rx,
            node_requests,
            timings,
            turn: Turn::new(stream.can_send_now()),
            stream,
            epoch,
            close: Mutex::new(CloseState {
                reason: None,
                linger: Linger::new(config.linger),
            }),
            closing: AtomicBool::new(false),
            established: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            closed_tx: Mutex::new(Some(closed_tx)),
            closed_rx,
            unregister,
            send_drops: LogLimit::new(),
            cycle_check: config.silence_timeout,
            cycle_warned: AtomicBool::new(false),
            recv_drops: LogLimit::new(),
        })
    }

    /// Starts closing the connection, once; later calls return `false` and the first
    /// reason stands.
    ///
    /// Takes the connection out of the peer table (if it is still the registered one),
    /// wakes every thread waiting on it, and — unless the close is graceful and the
    /// connection is up — shuts the socket down so that blocked reads and writes
    /// return. A graceful close leaves the socket to the writer, which sends a close
    /// frame and half-closes, and to the reader, which reads until the peer's end.
    pub(crate) fn close(&self, reason: DisconnectReason) -> bool {
        let graceful = reason.is_graceful();
        {
            let mut state = self.close.lock();
            if state.reason.is_some() {
                return false;
            }
            state.reason = Some(reason);
            state.linger.start(Instant::now());
        }
        self.closing.store(true, Ordering::SeqCst);
        // Dropped here, outside the table's lock: the last `Link` going away is what
        // lets the writer finish draining the lanes.
        let removed = self.unregister.upgrade().and_then(|t| t.unregister(self));
        drop(removed);
        drop(self.closed_tx.lock().take());
        if !graceful || !self.established.load(Ordering::SeqCst) {
            self.stream.cut();
        }
        true
    }

    /// Sets the window this side grants the peer; once, before the reader and the
    /// writer start.
    pub(crate) fn set_inbox(&self, inbox: Inbox) {
        let _ = self.inbox.set(Arc::new(inbox));
    }

    /// The window this side grants the peer.
    ///
    /// # Panics
    ///
    /// Before [`ConnShared::set_inbox`]: only the reader and writer, started after
    /// it, call this.
    pub(crate) fn inbox(&self) -> &Arc<Inbox> {
        self.inbox
            .get()
            .expect("the inbox is set before the reader and writer start")
    }

    /// Whether the peer has used all the room this side granted it (`false` before
    /// the connection is up).
    pub(crate) fn inbox_closed(&self) -> bool {
        self.inbox.get().is_some_and(|i| i.is_closed())
    }

    /// Counts `n` of a request outcome, for the connection and for the node.
    pub(crate) fn count_request(&self, which: fn(&RequestCounters) -> &AtomicU64, n: u64) {
        which(&self.counters.requests).fetch_add(n, Ordering::Relaxed);
        which(&self.node_requests).fetch_add(n, Ordering::Relaxed);
    }

    /// The connection's byte stream.
    pub(crate) fn stream(&self) -> &Stream {
        &self.stream
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// The reason the connection is closing, if it is.
    pub(crate) fn reason(&self) -> Option<DisconnectReason> {
        self.close.lock().reason.clone()
    }

    /// When a graceful close stops waiting for the peer, as things stand: the
    /// deadline moves while data still moves.
    pub(crate) fn linger_deadline(&self) -> Option<Instant> {
        self.close.lock().linger.deadline()
    }

    /// Whether a graceful close has waited its linger out.
    pub(crate) fn linger_over(&self) -> bool {
        self.close.lock().linger.over(Instant::now())
    }

    /// Notes that data moved on a closing connection (bytes read or written, a
    /// message handed to the application): the peer is slow, not gone, and cutting
    /// the socket now would throw away what is in flight. No-op while open.
    pub(crate) fn progress(&self) {
        if !self.is_closing() {
            return;
        }
        self.close.lock().linger.progress(Instant::now());
    }

    /// Starts a graceful close's clock again, linger and cap alike. For a reader that
    /// could not deliver anything while it waited for the peer's earlier readers:
    /// the time it waited was not the peer's, nor the application's. No-op while
    /// open.
    pub(crate) fn restart_linger(&self) {
        if !self.is_closing() {
            return;
        }
        self.close.lock().linger.start(Instant::now());
    }

    /// Bounds this connection's close, whatever restarts its clock later, to one cap
    /// from now: the node is shutting down.
    pub(crate) fn limit_linger(&self) {
        let mut state = self.close.lock();
        let limit = Instant::now() + state.linger.longest();
        state.linger.limit(limit);
    }

    /// Whether a capped close has also had its linger to read what was sent.
    pub(crate) fn linger_drained(&self) -> bool {
        self.close.lock().linger.drained(Instant::now())
    }

    /// Whether a graceful close has lasted as long as it ever may, however steadily
    /// data still moves.
    pub(crate) fn linger_cap_over(&self) -> bool {
        self.close.lock().linger.capped(Instant::now())
    }

    /// Waits on `rx` until it yields or disconnects, or the linger runs out (the
    /// deadline may move while waiting). Returns `None` if the linger ran out.
    pub(crate) fn wait_lingering<T>(
        &self,
        rx: &Receiver<T>,
    ) -> Option<Result<T, crossbeam_channel::RecvError>> {
        loop {
            let deadline = self.linger_deadline()?;
            match rx.recv_deadline(deadline) {
                Ok(v) => return Some(Ok(v)),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Some(Err(crossbeam_channel::RecvError))
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) if self.linger_over() => {
                    return None
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Marks the handshake as done. Returns `false` if the connection was closed
    /// meanwhile (its socket is then already shut down).
    pub(crate) fn establish(&self) -> bool {
        self.established.store(true, Ordering::SeqCst);
        !self.is_closing()
    }

    /// Drops a connection still shaking hands, to make room for another.
    pub(crate) fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        self.close(DisconnectReason::ClosedByUs);
    }

    /// Whether [`ConnShared::evict`] dropped it.
    pub(crate) fn was_evicted(&self) -> bool {
        self.evicted.load(Ordering::SeqCst)
    }

    /// Cuts the socket in both directions, waking any blocked read or write.
    pub(crate) fn cut(&self) {
        self.stream.cut();
    }

    /// Milliseconds since the node started, for rate-limited logging.
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}
