//! The node: listen, dial, route sends to connections, report, shut down; its peer
//! table, its accept and redial threads, and the connection thread that drives one
//! connection's parts from `conn` through its life.

pub(crate) mod acceptor;
pub(crate) mod admission;
#[cfg(unix)]
pub(crate) mod idle;
mod probe;
pub(crate) mod redial;
pub(crate) mod requests;
pub(crate) mod session;
pub(crate) mod state;
pub(crate) mod table;

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use parking_lot::Mutex;

use crate::config::Config;
use crate::conn::lane::Patience;
use crate::error::{Error, HandshakeError, Result, SendError, SendTimeoutError, TrySendError};
use crate::event::{DisconnectReason, Event, Lane, Message};
use crate::id::PeerId;
use crate::stats::{LaneStats, NodeStats, PeerStats};
use crate::sync::Never;
use acceptor::Acceptor;
use session::Origin;
use state::{NodeShared, Services};
use table::Wait;

/// A wirelane node: a listening socket, a connection per peer, and the queues the
/// application reads.
///
/// Every connection has a reader thread and a writer thread. The application sends
/// through [`try_send`](Node::try_send) (gossip: never blocks, drops when full) and
/// [`send`](Node::send) / [`send_timeout`](Node::send_timeout) (private: waits for
/// room, holding no lock), and reads [`incoming`](Node::incoming) and
/// [`events`](Node::events). All methods take `&self`; share a node between threads
/// with an `Arc` or scoped threads.
///
/// Dropping a node shuts it down.
///
/// # Examples
///
/// ```
/// use wirelane::{Config, Lane, Node, PeerId};
///
/// let a = Node::bind(PeerId(1), "127.0.0.1:0", Config::default())?;
/// let b = Node::bind(PeerId(2), "127.0.0.1:0", Config::default())?;
/// let peer = a.connect(b.local_addr())?;
/// assert_eq!(peer, PeerId(2));
///
/// a.send(peer, b"private".to_vec())?;
/// let msg = b.incoming().recv()?;
/// assert_eq!((msg.from, msg.lane, &msg.payload[..]), (PeerId(1), Lane::Private, &b"private"[..]));
///
/// a.shutdown();
/// b.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Node {
    shared: Arc<NodeShared>,
    incoming: Receiver<Message>,
    events: Receiver<Event>,
    acceptor: Acceptor,
    /// Disconnects once every connection thread has finished.
    alive: Receiver<Never>,
    /// Held by the first `shutdown` call until it has finished; later callers wait
    /// for it to go.
    shutting_down: Mutex<Option<Sender<Never>>>,
    shut_down: Receiver<Never>,
}

impl Node {
    /// Binds a listening socket and starts accepting connections.
    ///
    /// # Errors
    ///
    /// Fails if the configuration is invalid, the address cannot be bound, or the
    /// accept thread cannot start.
    pub fn bind(id: PeerId, addr: impl ToSocketAddrs, config: Config) -> Result<Node> {
        config.validate()?;
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        // Bounded by what may enter it: each connection's window of private data
        // and `inbound_capacity` gossip messages (see `conn::window`).
        let (inbound, incoming) = unbounded();
        let (events_tx, events) = bounded(config.event_capacity);
        let (alive_tx, alive) = bounded(0);
        let (shutdown_tx, shutdown_rx) = bounded(0);
        let (shutting_down, shut_down) = bounded(0);
        let stack = config.thread_stack_size;
        let (redial, redial_loop) = match config.reconnect_interval {
            Some(_) => {
                let (redial, state) = redial::new()?;
                (Some(redial), Some(state))
            }
            None => (None, None),
        };
        #[cfg(unix)]
        let (idle, idle_loop) = idle::new()?;
        let shared = Arc::new(NodeShared::new(
            id,
            config,
            local_addr,
            (inbound, events_tx),
            alive_tx,
            (shutdown_tx, shutdown_rx),
            Services {
                redial,
                #[cfg(unix)]
                idle: Some(idle),
            },
        ));
        let started = (|| {
            if let (Some(redial), Some(state)) = (&shared.redial, redial_loop) {
                redial.start(shared.clone(), state)?;
            }
            #[cfg(unix)]
            if let Some(idle) = &shared.idle {
                idle.start(id, stack, idle_loop)?;
            }
            acceptor::start(shared.clone(), listener, stack)
        })();
        let acceptor = match started {
            Ok(acceptor) => acceptor,
            Err(e) => {
                // No connection has started; the node's threads must not outlive this.
                shared.begin_shutdown();
                shared.stop_services();
                return Err(e.into());
            }
        };
        log::info!("{id}: listening on {local_addr}");
        Ok(Node {
            shared,
            incoming,
            events,
            acceptor,
            alive,
            shutting_down: Mutex::new(Some(shutting_down)),
            shut_down,
        })
    }

    /// This node's id.
    pub fn id(&self) -> PeerId {
        self.shared.id
    }

    /// The address the node listens on (with the real port if bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Dials a peer, runs the handshake, and returns the peer's id once the
    /// connection is registered on both sides.
    ///
    /// If the two nodes dial each other at the same moment, one connection survives
    /// and both calls return the peer's id. Connecting to a peer that is already
    /// connected returns its id and keeps the existing connection.
    ///
    /// # Errors
    ///
    /// Fails if the dial fails or times out, the handshake is refused or times out,
    /// or the node is shut down.
    pub fn connect(&self, addr: impl ToSocketAddrs) -> Result<PeerId> {
        if self.shared.is_shut() {
            return Err(Error::Shutdown);
        }
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let deadline = Instant::now() + self.shared.config.handshake_timeout;
        let mut retry = DUPLICATE_RETRY;
        loop {
            let stream = dial(&addrs[..], self.shared.config.connect_timeout)?;
            let (report, outcome) = bounded(1);
            self.shared
                .spawn_connection(stream, Origin::Connect(report))?;
            let peer = match outcome.recv() {
                Ok(Ok(peer)) => peer,
                // The pair is (or is about to be) connected over another socket: the
                // other half of a simultaneous dial, or a connection that already
                // existed — or one the peer still holds although this side has closed
                // it, because the peer has not yet read our close (we disconnected it
                // a moment ago). Wait a little for the first two; then dial again,
                // until the handshake's time is up.
                Ok(Err(HandshakeError::Duplicate(peer))) => {
                    let until = deadline.min(Instant::now() + retry);
                    match self.shared.table.wait_for(peer, until) {
                        Wait::Registered => peer,
                        Wait::Shutdown => return Err(Error::Shutdown),
                        Wait::TimedOut if Instant::now() < deadline => {
                            retry = (retry * 2).min(DUPLICATE_RETRY_MAX);
                            continue;
                        }
                        Wait::TimedOut => {
                            return Err(Error::Handshake(HandshakeError::Duplicate(peer)))
                        }
                    }
                }
                Ok(Err(e)) => return Err(e.into()),
                // The connection thread ended without a verdict: the node shut down.
                Err(_) => return Err(Error::Shutdown),
            };
            if let Some(redial) = &self.shared.redial {
                redial.resume(peer);
            }
            return Ok(peer);
        }
    }

    /// Sends a gossip message: queues it, or drops it at once if the peer's gossip lane
    /// is full. Never blocks.
    ///
    /// A drop is counted in the peer's stats (`gossip.dropped`) and logged at most once
    /// a second per peer.
    ///
    /// # Errors
    ///
    /// Returns the message with [`TrySendError::Full`] when the lane is full, and with
    /// the reason when the peer is not connected, the connection is closing, the node
    /// is shut down, or the payload is over the peer's frame limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use wirelane::{Config, Node, PeerId, TrySendError};
    ///
    /// let a = Node::bind(PeerId(1), "127.0.0.1:0", Config::default())?;
    /// let b = Node::bind(PeerId(2), "127.0.0.1:0", Config::default())?;
    /// let peer = a.connect(b.local_addr())?;
    /// match a.try_send(peer, b"state digest".to_vec()) {
    ///     Ok(()) => {}
    ///     // Dropped and counted; gossip is cheap to lose, so just move on.
    ///     Err(TrySendError::Full(_)) => {}
    ///     Err(e) => return Err(e.into()),
    /// }
    /// assert_eq!(&b.incoming().recv()?.payload[..], b"state digest");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_send(
        &self,
        peer: PeerId,
        payload: impl Into<Bytes>,
    ) -> Result<(), TrySendError<Bytes>> {
        let payload = payload.into();
        match self.shared.table.get(peer) {
            Some(link) => link.try_send(payload),
            None => Err(self.unroutable(payload).into()),
        }
    }

    /// Sends a private message, waiting for room on the peer's private lane.
    ///
    /// No lock is held while it waits: every other operation of the node, on this peer
    /// or any other, proceeds meanwhile. The wait ends when there is room, or when the
    /// connection closes or the node shuts down, in which case the message comes back
    /// in the error.
    ///
    /// Messages queued here are written in order; if the connection ends before one is
    /// written it comes back in an [`Event::Undelivered`].
    ///
    /// # Errors
    ///
    /// Returns the message when the peer is not connected, the connection closes, the
    /// node shuts down, or the payload is over the peer's frame limit.
    pub fn send(&self, peer: PeerId, payload: impl Into<Bytes>) -> Result<(), SendError<Bytes>> {
        let payload = payload.into();
        match self.shared.table.get(peer) {
            Some(link) => link.send(payload, Patience::Forever).map_err(|e| match e {
                SendTimeoutError::NotConnected(m) => SendError::NotConnected(m),
                SendTimeoutError::Shutdown(m) => SendError::Shutdown(m),
                SendTimeoutError::TooLarge(m) => SendError::TooLarge(m),
                // No deadline was given, so the wait cannot time out.
                SendTimeoutError::Disconnected(m) | SendTimeoutError::Timeout(m) => {
                    SendError::Disconnected(m)
                }
            }),
            None => Err(self.unroutable(payload)),
        }
    }

    /// Like [`send`](Node::send), but gives up after `timeout`.
    ///
    /// # Errors
    ///
    /// Returns the message with [`SendTimeoutError::Timeout`] if the lane stayed full,
    /// and as [`send`](Node::send) does otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use wirelane::{Config, Node, PeerId, SendTimeoutError};
    ///
    /// let a = Node::bind(PeerId(1), "127.0.0.1:0", Config::default())?;
    /// let b = Node::bind(PeerId(2), "127.0.0.1:0", Config::default())?;
    /// let peer = a.connect(b.local_addr())?;
    /// match a.send_timeout(peer, b"payment".to_vec(), Duration::from_millis(250)) {
    ///     Ok(()) => {}
    ///     // The peer is slow: the message comes back, to retry or reroute.
    ///     Err(SendTimeoutError::Timeout(msg)) => println!("{} bytes not queued", msg.len()),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_timeout(
        &self,
        peer: PeerId,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<Bytes>> {
        let payload = payload.into();
        match self.shared.table.get(peer) {
            Some(link) => link.send(payload, Patience::For(timeout)),
            None => Err(self.unroutable(payload).into()),
        }
    }

    /// Sends a gossip message to every connected peer, sharing one payload buffer.
    /// Never blocks; returns how many peers it was queued for (the others' lanes were
    /// full, and the drops were counted).
    pub fn broadcast(&self, payload: impl Into<Bytes>) -> usize {
        let payload = payload.into();
        self.shared
            .table
            .links()
            .iter()
            .filter(|link| link.try_send(payload.clone()).is_ok())
            .count()
    }

    /// Messages received from every peer, in arrival order per connection and lane.
    ///
    /// After [`shutdown`](Node::shutdown), the receiver reports disconnection once the
    /// last message has been taken.
    pub fn incoming(&self) -> &Receiver<Message> {
        &self.incoming
    }

    /// Connection events: connected, disconnected (with the reason), undelivered
    /// private messages, refused handshakes.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// The peers connected now, in id order.
    pub fn peers(&self) -> Vec<PeerId> {
        self.shared.table.peers()
    }

    /// Whether a connection to `peer` is registered.
    pub fn is_connected(&self, peer: PeerId) -> bool {
        self.shared.table.contains(peer)
    }

    /// Closes the connection to `peer`, gracefully: senders waiting on it get their
    /// messages back at once, messages still queued come back in an
    /// [`Event::Undelivered`], and frames already written are delivered if the peer
    /// reads them within the linger. With
    /// [`Config::reconnect_interval`](Config::reconnect_interval) set, it also stops
    /// dialling `peer` again. Returns whether there was a connection.
    pub fn disconnect(&self, peer: PeerId) -> bool {
        if let Some(redial) = &self.shared.redial {
            redial.cancel(self.shared.id, peer);
        }
        match self.shared.table.get(peer) {
            Some(link) => link.conn.close(DisconnectReason::ClosedByUs),
            None => false,
        }
    }

    /// A snapshot of the node's counters.
    pub fn stats(&self) -> NodeStats {
        let mut stats = self.shared.counted();
        for link in self.shared.table.links() {
            stats.peers += 1;
            stats.gossip.queued += link.gossip.len() as u64;
            stats.private.queued += link.private.len() as u64;
            stats.gossip.queued_bytes += link.queued_bytes(Lane::Gossip) as u64;
            stats.private.queued_bytes += link.queued_bytes(Lane::Private) as u64;
        }
        stats
    }

    /// A snapshot of the counters of the connection to `peer`, or `None` if no
    /// connection to it is registered.
    ///
    /// # Examples
    ///
    /// ```
    /// use wirelane::{Config, Node, PeerId};
    ///
    /// let a = Node::bind(PeerId(1), "127.0.0.1:0", Config::default())?;
    /// let b = Node::bind(PeerId(2), "127.0.0.1:0", Config::default())?;
    /// let peer = a.connect(b.local_addr())?;
    /// a.send(peer, vec![0; 100])?;
    /// b.incoming().recv()?;
    ///
    /// let stats = b.peer_stats(PeerId(1)).expect("registered on both sides");
    /// println!("{stats}"); // received, dropped, queued, bytes: per lane
    /// assert!(b.peer_stats(PeerId(3)).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peer_stats(&self, peer: PeerId) -> Option<PeerStats> {
        let link = self.shared.table.get(peer)?;
        let conn = &link.conn;
        let counters = &conn.counters;
        Some(PeerStats {
            peer,
            conn: conn.id,
            local_addr: conn.local_addr,
            peer_addr: conn.peer_addr,
            inbound: conn.inbound,
            gossip: LaneStats {
                queued_bytes: link.queued_bytes(Lane::Gossip) as u64,
                ..counters.lane(Lane::Gossip, link.gossip.len() as u64)
            },
            private: LaneStats {
                queued_bytes: link.queued_bytes(Lane::Private) as u64,
                ..counters.lane(Lane::Private, link.private.len() as u64)
            },
            requests: counters.requests.snapshot(),
            bytes_in: counters.bytes_in(),
            bytes_out: counters.bytes_out(),
            blocked_senders: counters.waiting.load(Relaxed),
            reader_waiting: counters.reader_waiting.load(Relaxed) > 0,
            window_closed: conn.outbox.is_blocked(),
            written_by_senders: counters.out.by_senders.load(Relaxed),
            window_wait: conn.outbox.waited(),
        })
    }

    /// Shuts the node down: stops accepting, refuses handshakes that finish late,
    /// closes every connection (waking blocked senders with their messages and handing
    /// back queued private messages), and joins every thread it started.
    ///
    /// Idempotent: a second call, or a call from another thread while the first is
    /// under way, returns once the first has finished. Graceful closes let data that
    /// still moves be delivered or counted: while the application takes messages, for
    /// up to ten [`linger`](Config::linger)s from the shutdown, then, reading what is
    /// left without waiting for it, until nothing arrives for a linger (at most ten
    /// more).
    pub fn shutdown(&self) {
        let Some(done) = self.shutting_down.lock().take() else {
            // Returns when the first caller drops `done`.
            let _ = self.shut_down.recv();
            return;
        };
        let id = self.shared.id;
        log::info!("{id}: shutting down");
        let (links, conns) = self.shared.begin_shutdown();
        self.acceptor.stop();
        if let Some(redial) = &self.shared.redial {
            redial.stop();
        }
        for conn in &conns {
            conn.close(DisconnectReason::Shutdown);
            // Connections closing already (replaced, say) included: shutdown waits
            // one cap at most, however many of them wait for one another.
            conn.limit_linger();
        }
        drop(links);
        drop(conns);
        // Every connection thread holds an `alive` sender; this returns once the last
        // one has finished (its JoinHandle is registered before its token goes).
        let _ = self.alive.recv();
        for handle in self.shared.take_handles() {
            if handle.join().is_err() {
                log::error!("{id}: a connection thread panicked");
            }
        }
        // After the connections: their readers rest with it until they end.
        #[cfg(unix)]
        if let Some(idle) = &self.shared.idle {
            idle.stop();
        }
        log::info!("{id}: shut down");
        drop(done);
    }

    fn unroutable(&self, payload: Bytes) -> SendError<Bytes> {
        if self.shared.is_shut() {
            SendError::Shutdown(payload)
        } else {
            SendError::NotConnected(payload)
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.shared.id)
            .field("local_addr", &self.shared.local_addr)
            .field("peers", &self.shared.table.len())
            .finish_non_exhaustive()
    }
}

/// How long `connect` first waits, after its peer answered `Duplicate`, for the
/// connection the peer holds to appear here before it dials again; doubled after each
/// try, up to [`DUPLICATE_RETRY_MAX`]. Long enough for the other half of a
/// simultaneous dial to register (well under a millisecond on loopback), short enough
/// that a dial right after `disconnect` succeeds soon after the peer reads the close.
const DUPLICATE_RETRY: Duration = Duration::from_millis(20);
const DUPLICATE_RETRY_MAX: Duration = Duration::from_millis(250);

/// Dials each address in turn; returns the first connection made.
fn dial(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream> {
    let mut last = None;
    for &addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(Error::NoAddress, Error::Io))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn node_is_send_and_sync() {
        assert_send_sync::<Node>();
    }
}
