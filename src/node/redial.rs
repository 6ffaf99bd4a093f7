//! Dialling lost peers again (`Config::reconnect_interval`).
//!
//! When a connection this node dialled ends because the peer went silent, the socket
//! failed, or the peer closed it, the redial thread dials the same address again after
//! the interval, and again at doubling intervals up to `Config::reconnect_max`, until
//! the peer is connected again (by this or any other dial), the application calls
//! [`Node::disconnect`](crate::Node::disconnect) for it, or the node shuts down.
//!
//! The dials are non-blocking connects in one mio poll, so that shutdown, which wakes
//! the poll with its `mio::Waker`, never waits for a dial to time out. Once a socket
//! connects, the handshake runs on the new connection's own thread, as for any dial.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use crate::error::Error;
use crate::event::{DisconnectReason, Event};
use crate::id::PeerId;
use crate::node::acceptor::stop_poll_thread;
use crate::node::session::Origin;
use crate::node::state::NodeShared;

const WAKE: Token = Token(0);

/// Requests queued for the redial thread before it takes them; beyond, a request is
/// dropped with a warning (one per lost connection, so this takes a storm).
const REQUESTS: usize = 1024;

/// The application's side of the redial thread.
pub(crate) struct Redial {
    requests: Sender<Request>,
    waker: Waker,
    /// Peers waiting to be dialled again, or being dialled.
    pending: Arc<AtomicU64>,
    handle: Mutex<Option<JoinHandle<()>>>,
    /// Peers the application disconnected, not to be dialled again until it
    /// connects to them itself. Remembered here, not in the redial thread, because a
    /// cancel can come before the dying connection asks for its redial, or while a
    /// redial's handshake is under way: both check this set.
    stopped: Mutex<HashSet<PeerId>>,
}

/// The redial thread's own state, until it starts.
pub(crate) struct RedialLoop {
    poll: Poll,
    requests: Receiver<Request>,
    pending: Arc<AtomicU64>,
}

enum Request {
    /// The connection to `peer`, dialled at `addr`, was lost.
    Dial { peer: PeerId, addr: SocketAddr },
    /// `peer` is connected (again).
    Connected(PeerId),
    /// The handshake of a connection this node dialled at this address failed.
    Refused(SocketAddr),
    /// Stop dialling `peer`.
    Cancel(PeerId),
}

/// Whether a connection that ended for `reason` is one to dial again: the network or
/// the peer ended it, not a decision of this node.
pub(crate) fn is_lost(reason: &DisconnectReason) -> bool {
    matches!(
        reason,
        DisconnectReason::Dead | DisconnectReason::Io(_) | DisconnectReason::ClosedByPeer
    )
}

/// The two halves of a redial thread that has not started yet.
pub(crate) fn new() -> io::Result<(Redial, RedialLoop)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKE)?;
    let (tx, rx) = bounded(REQUESTS);
    let pending = Arc::new(AtomicU64::new(0));
    Ok((
        Redial {
            requests: tx,
            waker,
            pending: pending.clone(),
            handle: Mutex::new(None),
            stopped: Mutex::new(HashSet::new()),
        },
        RedialLoop {
            poll,
            requests: rx,
            pending,
        },
    ))
}

impl Redial {
    /// Starts the redial thread for `node`, whose `redial` this is.
    pub(crate) fn start(&self, node: Arc<NodeShared>, state: RedialLoop) -> io::Result<()> {
        let handle = thread::Builder::new()
            .name(format!("wl{}-redial", node.id.0))
            .stack_size(node.config.thread_stack_size)
            .spawn(move || run(state, node))?;
        *self.handle.lock() = Some(handle);
        Ok(())
    }

    /// Asks for `peer`, dialled at `addr`, to be dialled again, unless the
    /// application has disconnected it. Never blocks.
    pub(crate) fn lost(&self, node: PeerId, peer: PeerId, addr: SocketAddr) {
        if self.is_stopped(peer) {
            return;
        }
        self.request(node, Request::Dial { peer, addr });
    }

    /// Says `peer` is connected, so that a pending redial of it ends. Never blocks.
    pub(crate) fn connected(&self, node: PeerId, peer: PeerId) {
        self.request(node, Request::Connected(peer));
    }

    /// Says the handshake of a connection dialled at `addr` failed, so that a redial
    /// waiting on it tries again later. Never blocks.
    pub(crate) fn refused(&self, node: PeerId, addr: SocketAddr) {
        self.request(node, Request::Refused(addr));
    }

    /// Stops dialling `peer` again, now and after later losses, until
    /// [`Redial::resume`]. Never blocks.
    pub(crate) fn cancel(&self, node: PeerId, peer: PeerId) {
        // Recorded before the request, and before `disconnect` looks for the link:
        // a redial's handshake checks it after the link opens (see `session`).
        self.stopped.lock().insert(peer);
        self.request(node, Request::Cancel(peer));
    }

    /// The application connected to `peer` itself: its losses are redialled again.
    pub(crate) fn resume(&self, peer: PeerId) {
        self.stopped.lock().remove(&peer);
    }

    /// Whether the application has disconnected `peer` (and not connected it since).
    pub(crate) fn is_stopped(&self, peer: PeerId) -> bool {
        self.stopped.lock().contains(&peer)
    }

    fn request(&self, node: PeerId, request: Request) {
        match self.requests.try_send(request) {
            Ok(()) => {
                if let Err(e) = self.waker.wake() {
                    log::error!("{node}: cannot wake the redial thread: {e}");
                }
            }
            Err(TrySendError::Full(_)) => {
                log::warn!("{node}: {REQUESTS} redial requests are waiting; dropped one")
            }
            // The thread has ended: the node is shutting down.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Peers waiting to be dialled again, or being dialled, now.
    pub(crate) fn pending(&self) -> u64 {
        self.pending.load(Relaxed)
    }

    /// Stops the thread and joins it; the node is already marked as shutting down.
    /// Idempotent.
    pub(crate) fn stop(&self) {
        stop_poll_thread(&self.waker, &self.handle, "redial");
    }
}

/// A peer to dial again.
struct Entry {
    peer: PeerId,
    addr: SocketAddr,
    /// When to dial; or, after a dial whose socket connected, when its handshake
    /// has had its time.
    due: Instant,
    /// Whether a dial's socket connected and its handshake is under way.
    shaking_hands: bool,
    /// The wait after the next failure.
    backoff: Backoff,
    /// The attempt the next dial is.
    attempt: u32,
}

/// A non-blocking connect in progress.
struct Dial {
    entry: Entry,
    stream: mio::net::TcpStream,
    deadline: Instant,
}

/// The redial thread's loop.
struct Redialer {
    node: Arc<NodeShared>,
    interval: Duration,
    max: Duration,
    waiting: HashMap<PeerId, Entry>,
    dialing: HashMap<Token, Dial>,
    next_token: usize,
}

fn run(mut state: RedialLoop, node: Arc<NodeShared>) {
    let interval = node
        .config
        .reconnect_interval
        .expect("the redial thread runs only with a reconnect interval");
    let mut r = Redialer {
        max: node.config.reconnect_max.max(interval),
        node,
        interval,
        waiting: HashMap::new(),
        dialing: HashMap::new(),
        next_token: 1,
    };
    let mut events = Events::with_capacity(16);
    loop {
        let wake_at = r
            .waiting
            .values()
            .map(|e| e.due)
            .chain(r.dialing.values().map(|d| d.deadline))
            .min();
        let timeout = wake_at.map(|at| at.saturating_duration_since(Instant::now()));
        if let Err(e) = state.poll.poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("{}: redial loop failed: {e}", r.node.id);
                return;
            }
        }
        if r.node.is_shut() {
            return;
        }
        for event in events.iter() {
            if event.token() != WAKE {
                r.connected_or_failed(&state.poll, event.token(), Instant::now());
            }
        }
        while let Ok(request) = state.requests.try_recv() {
            r.take(&state.poll, request, Instant::now());
        }
        if r.run_due(&state.poll, Instant::now()).is_err() {
            return;
        }
        state
            .pending
            .store((r.waiting.len() + r.dialing.len()) as u64, Relaxed);
    }
}

impl Redialer {
    fn take(&mut self, poll: &Poll, request: Request, now: Instant) {
        match request {
            Request::Dial { peer, addr } => {
                let dialing = self.dialing.values_mut().find(|d| d.entry.peer == peer);
                if let Some(entry) = self
                    .waiting
                    .get_mut(&peer)
                    .or(dialing.map(|d| &mut d.entry))
                {
                    // Lost again soon after a redial: keep its backoff.
                    entry.addr = addr;
                    return;
                }
                let mut backoff =
                    Backoff::new(self.interval, self.max, peer.0 ^ self.node.incarnation);
                let wait = backoff.first();
                log::info!(
                    "{}: lost {peer} at {addr}; dialling it again in {wait:?}",
                    self.node.id,
                );
                self.waiting.insert(
                    peer,
                    Entry {
                        peer,
                        addr,
                        due: now + wait,
                        shaking_hands: false,
                        backoff,
                        attempt: 1,
                    },
                );
                self.node.emit(Event::Redialing {
                    peer,
                    attempt: 1,
                    next_in: wait,
                });
            }
            Request::Refused(addr) => {
                let peer = self
                    .waiting
                    .values()
                    .find(|e| e.shaking_hands && e.addr == addr)
                    .map(|e| e.peer);
                if let Some(entry) = peer.and_then(|peer| self.waiting.remove(&peer)) {
                    let refused = io::Error::other("the handshake was refused");
                    self.failed(entry, &refused, now);
                }
            }
            Request::Connected(peer) | Request::Cancel(peer) => {
                if self.waiting.remove(&peer).is_some() {
                    log::info!("{}: stopped dialling {peer} again", self.node.id);
                }
                let tokens: Vec<Token> = self
                    .dialing
                    .iter()
                    .filter(|(_, d)| d.entry.peer == peer)
                    .map(|(&t, _)| t)
                    .collect();
                for token in tokens {
                    if let Some(mut dial) = self.dialing.remove(&token) {
                        let _ = poll.registry().deregister(&mut dial.stream);
                    }
                }
            }
        }
    }

    /// Dials every peer that is due, after checking it is still not connected; fails
    /// dials past their deadline. `Err` when the node is shutting down.
    fn run_due(&mut self, poll: &Poll, now: Instant) -> Result<(), Error> {
        let late: Vec<Token> = self
            .dialing
            .iter()
            .filter(|(_, d)| d.deadline <= now)
            .map(|(&t, _)| t)
            .collect();
        for token in late {
            if let Some(mut dial) = self.dialing.remove(&token) {
                let _ = poll.registry().deregister(&mut dial.stream);
                self.failed(dial.entry, &io::ErrorKind::TimedOut.into(), now);
            }
        }
        let due: Vec<PeerId> = self
            .waiting
            .values()
            .filter(|e| e.due <= now)
            .map(|e| e.peer)
            .collect();
        for peer in due {
            let Some(entry) = self.waiting.remove(&peer) else {
                continue;
            };
            let stopped = self
                .node
                .redial
                .as_ref()
                .is_some_and(|r| r.is_stopped(peer));
            if stopped || self.node.table.contains(peer) {
                continue;
            }
            if entry.shaking_hands {
                let timeout =
                    io::Error::new(io::ErrorKind::TimedOut, "the handshake did not complete");
                self.failed(entry, &timeout, now);
                continue;
            }
            self.dial(poll, entry, now);
        }
        if self.node.is_shut() {
            return Err(Error::Shutdown);
        }
        Ok(())
    }

    fn dial(&mut self, poll: &Poll, entry: Entry, now: Instant) {
        let mut stream = match mio::net::TcpStream::connect(entry.addr) {
            Ok(stream) => stream,
            Err(e) => return self.failed(entry, &e, now),
        };
        let token = Token(self.next_token);
        self.next_token += 1;
        if let Err(e) = poll
            .registry()
            .register(&mut stream, token, Interest::WRITABLE)
        {
            return self.failed(entry, &e, now);
        }
        let deadline = now + self.node.config.connect_timeout;
        self.dialing.insert(
            token,
            Dial {
                entry,
                stream,
                deadline,
            },
        );
    }

    /// A connect in progress became writable: it connected or failed.
    fn connected_or_failed(&mut self, poll: &Poll, token: Token, now: Instant) {
        let Some(mut dial) = self.dialing.remove(&token) else {
            return;
        };
        let outcome = match dial.stream.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match dial.stream.peer_addr() {
                Ok(_) => Ok(()),
                // Not connected yet: a spurious wake-up; the next event will tell.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    self.dialing.insert(token, dial);
                    return;
                }
                Err(e) => Err(e),
            },
        };
        let _ = poll.registry().deregister(&mut dial.stream);
        let Dial {
            mut entry, stream, ..
        } = dial;
        if let Err(e) = outcome {
            return self.failed(entry, &e, now);
        }
        match self.node.spawn_connection(stream.into(), Origin::Redial) {
            Ok(()) => {
                // `Connected` ends the entry; if none comes within the handshake's
                // time, the dial failed.
                entry.due = now + self.node.config.handshake_timeout;
                entry.shaking_hands = true;
                self.waiting.insert(entry.peer, entry);
            }
            Err(Error::Shutdown) => {}
            Err(e) => self.failed(entry, &io::Error::other(e.to_string()), now),
        }
    }

    /// Schedules the next dial of a peer whose dial (or handshake) failed.
    fn failed(&mut self, mut entry: Entry, error: &io::Error, now: Instant) {
        let wait = entry.backoff.fail();
        log::info!(
            "{}: dialling {} at {} again failed ({error}); next try in {wait:?}",
            self.node.id,
            entry.peer,
            entry.addr,
        );
        entry.due = now + wait;
        entry.shaking_hands = false;
        entry.attempt = entry.attempt.saturating_add(1);
        self.node.emit(Event::Redialing {
            peer: entry.peer,
            attempt: entry.attempt,
            next_in: wait,
        });
        self.waiting.insert(entry.peer, entry);
    }
}

/// The wait before each next dial of a lost peer: the interval, doubled after every
/// failure, up to the maximum; each wait drawn between three quarters of that and
/// all of it, so that nodes which lost each other at the same moment (a switch
/// reboot, a partition healing) do not all dial at the same instants.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    next: Duration,
    max: Duration,
    /// A xorshift state, seeded per node and peer: the jitter need not be secret,
    /// only different between nodes.
    seed: u64,
}

impl Backoff {
    fn new(interval: Duration, max: Duration, seed: u64) -> Backoff {
        // One splitmix64 step, so that seeds that differ in a bit or two (peer ids
        // that follow each other) start far apart.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Backoff {
            next: interval,
            max: max.max(interval),
            // Xorshift never leaves zero.
            seed: (z ^ (z >> 31)) | 1,
        }
    }

    /// The wait before the first dial after the loss.
    fn first(&mut self) -> Duration {
        let base = self.next;
        self.jitter(base)
    }

    /// A dial failed: how long to wait before the next.
    fn fail(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        self.jitter(base)
    }

    /// `base` less up to a quarter of it.
    fn jitter(&mut self, base: Duration) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let quarter = base.as_nanos() as u64 / 4;
        let off = if quarter == 0 { 0 } else { self.seed % quarter };
        base - Duration::from_nanos(off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_after_each_failure_up_to_the_maximum_less_some_jitter() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(500), 42);
        let first = backoff.first();
        assert!(first > ms(75) && first <= ms(100), "{first:?}");
        let waits: Vec<Duration> = (0..5).map(|_| backoff.fail()).collect();
        for (wait, base) in waits.iter().zip([100, 200, 400, 500, 500]) {
            assert!(
                *wait > ms(base) * 3 / 4 && *wait <= ms(base),
                "{wait:?} for {base} ms"
            );
        }
        let mut odd = Backoff::new(ms(300), ms(100), 7);
        assert!(
            odd.fail() > ms(225) && odd.fail() > ms(225),
            "a maximum below the interval"
        );
    }

    #[test]
    fn nodes_draw_different_jitter() {
        let ms = Duration::from_millis;
        let waits: std::collections::BTreeSet<Duration> = (0..16)
            .map(|seed| Backoff::new(ms(1000), ms(1000), seed).first())
            .collect();
        assert!(waits.len() > 8, "{waits:?}");
    }
}
