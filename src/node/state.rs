//! What a node shares with its accept thread and its connection threads: the
//! registry of connection threads (spawning, retiring, joining), the node's own
//! counters, its event queue, and the bookkeeping of shutdown.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpStream};

use crate::conn::stream::Stream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::session::{self, Origin};
use crate::config::Config;
use crate::conn::lane::Link;
use crate::conn::shared::{ConnShared, Owner, Unregister};
use crate::conn::sink::{EventSink, Outlets, SinkShared};
use crate::conn::window::{PeerFlow, Room};
use crate::error::{Error, HandshakeError, Limit, Result};
use crate::event::{Event, Lane, Message};
use crate::id::{ConnId, PeerId};
#[cfg(unix)]
use crate::node::idle::Idle;
use crate::node::redial::Redial;
use crate::node::table::PeerTable;
use crate::stats::{Counters, NodeStats, RequestCounters};
use crate::sync::{Budget, FutexRoom, WaitBudget};
use crate::sync::{LogLimit, Never};
use crate::timing::Timings;
use crate::wire::pool::BufPool;

/// State shared by the node handle, its acceptor and its connection threads.
pub(crate) struct NodeShared {
    pub(crate) id: PeerId,
    pub(crate) incarnation: u64,
    pub(crate) config: Config,
    pub(crate) local_addr: SocketAddr,
    pub(crate) table: Arc<PeerTable>,
    /// Recycled buffers for inbound data, shared by every reader.
    pub(crate) pool: Arc<BufPool>,
    /// Bytes of large inbound payloads held (`Config::inbound_bytes`).
    pub(crate) inbound_bytes: Arc<WaitBudget>,
    /// Rate-limits the warning that readers wait for `inbound_bytes`.
    pub(crate) inbound_log: LogLimit,
    /// Places for gossip in the inbound queue (`Config::inbound_capacity`).
    pub(crate) gossip_places: Arc<Budget>,
    /// Each peer's window across its connections, for as long as a connection or a
    /// message refers to it.
    flows: Mutex<HashMap<PeerId, Weak<PeerFlow>>>,
    /// Dials lost peers again, if `Config::reconnect_interval` is set.
    pub(crate) redial: Option<Redial>,
    /// Watches idle connections' sockets so that their readers can sleep.
    #[cfg(unix)]
    pub(crate) idle: Option<Idle>,
    registry: Mutex<Registry>,
    /// Disconnects when shutdown begins.
    /// What every connection's event sink shares: the drop count, the shutdown
    /// signal that ends a wait for room.
    sink: Arc<SinkShared>,
    shutdown_tx: Mutex<Option<Sender<Never>>>,
    /// Counts left behind by connections that have ended.
    totals: Counters,
    /// Requests and replies of every connection, counted as they happen.
    requests: Arc<RequestCounters>,
    /// Waits and round trips, for every connection.
    timings: Arc<Timings>,
    pub(crate) opened: AtomicU64,
    pub(crate) handshakes_failed: AtomicU64,
    limit_log: LogLimit,
    pub(crate) refusal_log: LogLimit,
    next_conn: AtomicU64,
    epoch: Instant,
}

/// The node's own threads besides the acceptor, as far as it runs them.
pub(crate) struct Services {
    pub(crate) redial: Option<Redial>,
    #[cfg(unix)]
    pub(crate) idle: Option<Idle>,
}

/// Every connection thread the node has started and not yet joined.
struct Registry {
    shut: bool,
    live: HashMap<ConnId, Arc<ConnShared>>,
    /// Connections still shaking hands, oldest first (ids only grow), and whether
    /// each is inbound.
    handshaking: BTreeMap<ConnId, bool>,
    handles: Vec<JoinHandle<()>>,
    /// The node's own senders; taken at shutdown so the queues disconnect once every
    /// connection (each holding clones) has ended.
    inbound: Option<Sender<Message>>,
    events: Option<EventSink>,
    /// Each connection thread holds a clone until it ends.
    alive: Option<Sender<Never>>,
}

impl NodeShared {
    /// The state of a new node: the senders of its queues, its liveness token (each
    /// connection thread holds a clone) and its shutdown signal.
    pub(crate) fn new(
        id: PeerId,
        config: Config,
        local_addr: SocketAddr,
        (inbound, events): (Sender<Message>, Sender<Event>),
        alive: Sender<Never>,
        (shutdown_tx, shutdown_rx): (Sender<Never>, Receiver<Never>),
        services: Services,
    ) -> NodeShared {
        let epoch = Instant::now();
        let sink = Arc::new(SinkShared::new(id, epoch, shutdown_rx));
        NodeShared {
            redial: services.redial,
            #[cfg(unix)]
            idle: services.idle,
            id,
            incarnation: incarnation(id),
            inbound_bytes: Arc::new(WaitBudget::new(config.inbound_bytes)),
            gossip_places: Arc::new(Budget::new(config.inbound_capacity)),
            flows: Mutex::default(),
            config,
            local_addr,
            table: Arc::new(PeerTable::default()),
            pool: Arc::new(BufPool::default()),
            inbound_log: LogLimit::new(),
            registry: Mutex::new(Registry {
                shut: false,
                live: HashMap::new(),
                handshaking: BTreeMap::new(),
                handles: Vec::new(),
                inbound: Some(inbound),
                events: Some(EventSink::new(events, sink.clone())),
                alive: Some(alive),
            }),
            sink,
            shutdown_tx: Mutex::new(Some(shutdown_tx)),
            totals: Counters::default(),
            requests: Arc::default(),
            timings: Arc::default(),
            opened: AtomicU64::new(0),
            handshakes_failed: AtomicU64::new(0),
            limit_log: LogLimit::new(),
            refusal_log: LogLimit::new(),
            next_conn: AtomicU64::new(1),
            epoch,
        }
    }

    /// Stops the redial and idle threads, for a node that failed to start.
    pub(crate) fn stop_services(&self) {
        if let Some(redial) = &self.redial {
            redial.stop();
        }
        #[cfg(unix)]
        if let Some(idle) = &self.idle {
            idle.stop();
        }
    }

    /// The window `peer` is granted, shared by its connections: the one still
    /// referred to, or a fresh one.
    pub(crate) fn peer_flow(&self, peer: PeerId) -> Arc<PeerFlow> {
        let mut flows = self.flows.lock();
        if let Some(flow) = flows.get(&peer).and_then(Weak::upgrade) {
            return flow;
        }
        // Forget the peers nothing refers to any more, now and then (each time the
        // map doubles), so that it stays about as small as the set of peers with a
        // connection or a message in the queue, at a constant cost per insert.
        if flows.len() >= 64 && flows.len().is_power_of_two() {
            flows.retain(|_, f| f.strong_count() > 0);
        }
        let flow = Arc::new(PeerFlow::new(Room {
            frames: self.config.private_window as u64,
            bytes: self.config.private_window_bytes as u64,
        }));
        flows.insert(peer, Arc::downgrade(&flow));
        flow
    }

    /// Queues an informational event, or drops and counts it if the queue is full;
    /// nothing after shutdown.
    pub(crate) fn emit(&self, event: Event) {
        // Cloned in a statement of its own, so that the registry's lock is not held
        // while the event is queued.
        let events = self.registry.lock().events.clone();
        if let Some(events) = events {
            events.emit(event);
        }
    }

    /// Takes the join handles of every connection thread not yet joined, for
    /// shutdown to join once the last of them has finished.
    pub(crate) fn take_handles(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.registry.lock().handles)
    }
    pub(crate) fn is_shut(&self) -> bool {
        self.registry.lock().shut
    }

    /// Wraps a socket in the node's transport: TLS when the node has a TLS config.
    pub(crate) fn stream(&self, tcp: TcpStream, inbound: bool) -> Stream {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.config.tls {
            return Stream::with_tls(tcp, Some(tls.session(inbound)));
        }
        let _ = inbound;
        Stream::plain(tcp)
    }

    /// Registers a new connection and starts its thread, which runs the handshake and
    /// then the reader.
    pub(crate) fn spawn_connection(
        self: &Arc<Self>,
        stream: TcpStream,
        origin: Origin,
    ) -> Result<()> {
        let inbound = matches!(origin, Origin::Inbound);
        stream.set_nodelay(true)?;
        // Accepted sockets may inherit non-blocking mode from the listener on some
        // platforms; the reader and writer rely on blocking I/O with timeouts.
        stream.set_nonblocking(false)?;
        let stream = Arc::new(self.stream(stream, inbound));
        let id = ConnId(self.next_conn.fetch_add(1, Relaxed));
        let conn = Arc::new(ConnShared::new(
            id,
            self.id,
            inbound,
            stream.clone(),
            &self.config,
            self.epoch,
            Owner {
                unregister: Arc::downgrade(&(self.table.clone() as Arc<dyn Unregister>)),
                requests: self.requests.clone(),
                timings: self.timings.clone(),
            },
        )?);
        let (outlets, alive, evicted) = {
            let mut registry = self.registry.lock();
            let (Some(inbound_tx), Some(events), Some(alive), false) = (
                registry.inbound.clone(),
                registry.events.clone(),
                registry.alive.clone(),
                registry.shut,
            ) else {
                return Err(Error::Shutdown);
            };
            if registry.live.len() >= self.config.max_connections {
                drop(registry);
                return Err(self.at_limit(&conn, Error::Limit(Limit::Connections)));
            }
            let mut evicted = None;
            if registry.handshaking.len() >= self.config.max_handshakes {
                // Only an inbound connection may push out a stranger's handshake;
                // the application's own dials are never dropped for it.
                let oldest = inbound
                    .then(|| {
                        registry
                            .handshaking
                            .iter()
                            .find(|(_, &inb)| inb)
                            .map(|(&id, _)| id)
                    })
                    .flatten();
                let Some(oldest) = oldest else {
                    drop(registry);
                    return Err(self.at_limit(&conn, Error::Limit(Limit::Handshakes)));
                };
                registry.handshaking.remove(&oldest);
                evicted = registry.live.get(&oldest).cloned();
            }
            registry.handshaking.insert(id, inbound);
            registry.live.insert(id, conn.clone());
            let outlets = Outlets {
                inbound: inbound_tx,
                events,
            };
            (outlets, alive, evicted)
        };
        if let Some(old) = evicted {
            if let Some(n) = self.limit_log.hit(self.epoch.elapsed().as_millis() as u64) {
                log::warn!(
                    "{}: {} handshakes in progress; dropped the oldest ({} of them since the last report), from {}",
                    self.id,
                    self.config.max_handshakes,
                    n,
                    old.peer_addr
                );
            }
            old.evict();
        }
        let node = self.clone();
        let thread_alive = alive.clone();
        let room = FutexRoom::for_one_more();
        let spawned = thread::Builder::new()
            .name(format!("wl{}-r{}", self.id.0, id.get()))
            .stack_size(self.config.thread_stack_size)
            .spawn(move || {
                let _alive = thread_alive;
                let _room = room;
                session::run(node, conn, stream, outlets, origin);
            });
        let handle = match spawned {
            Ok(handle) => handle,
            Err(e) => {
                let mut registry = self.registry.lock();
                registry.live.remove(&id);
                // Or the slot would stay taken for good: a dial's entry is never
                // evicted.
                registry.handshaking.remove(&id);
                return Err(Error::Io(e));
            }
        };
        // Join connection threads that have already finished, so a long-lived node
        // with churning peers keeps no dead handles. The joins happen outside the lock.
        let finished: Vec<JoinHandle<()>> = {
            let mut registry = self.registry.lock();
            registry.handles.push(handle);
            let (done, running) = std::mem::take(&mut registry.handles)
                .into_iter()
                .partition(|h| h.is_finished());
            registry.handles = running;
            done
        };
        // Only now may shutdown stop waiting: the handle is where it will look.
        drop(alive);
        for handle in finished {
            let _ = handle.join();
        }
        Ok(())
    }

    /// Called by a connection thread as its last act: forget the connection and keep
    /// its counts in the node's totals.
    pub(crate) fn retire(&self, conn: &ConnShared) {
        let mut registry = self.registry.lock();
        registry.live.remove(&conn.id);
        registry.handshaking.remove(&conn.id);
        self.totals.absorb(&conn.counters);
    }

    /// Called when a connection's handshake has finished: it no longer counts against
    /// the handshake limit.
    pub(crate) fn handshake_done(&self, conn: &ConnShared) {
        self.registry.lock().handshaking.remove(&conn.id);
    }

    /// Reports a connection refused by a limit: one log line (at most one a second),
    /// a counter, an event for inbound connections. Returns the error.
    fn at_limit(&self, conn: &ConnShared, error: Error) -> Error {
        self.handshakes_failed.fetch_add(1, Relaxed);
        if let Some(n) = self.limit_log.hit(self.epoch.elapsed().as_millis() as u64) {
            log::warn!(
                "{}: {error}; refused {n} connection(s) since the last report, the latest {} {}",
                self.id,
                if conn.inbound { "from" } else { "to" },
                conn.peer_addr
            );
        }
        if conn.inbound {
            self.emit(Event::Refused {
                addr: conn.peer_addr,
                error: match &error {
                    Error::Limit(limit) => HandshakeError::Limit(*limit),
                    _ => HandshakeError::Limit(Limit::Connections),
                },
            });
        }
        conn.cut();
        error
    }

    /// Counts of ended connections plus live ones (queue depths are added by the
    /// caller from the peer table).
    pub(crate) fn counted(&self) -> NodeStats {
        let registry = self.registry.lock();
        let all = std::iter::once(&self.totals).chain(registry.live.values().map(|c| &c.counters));
        let mut stats = NodeStats {
            connections_opened: self.opened.load(Relaxed),
            handshakes_failed: self.handshakes_failed.load(Relaxed),
            events_dropped: self.sink.dropped(),
            ..NodeStats::default()
        };
        stats.inbound_bytes = self.inbound_bytes.held() as u64;
        stats.requests = self.requests.snapshot();
        stats.send_wait = self.timings.send_wait.snapshot();
        stats.request_time = self.timings.request.snapshot();
        stats.redials_pending = self.redial.as_ref().map_or(0, Redial::pending);
        #[cfg(unix)]
        {
            stats.resting = self.idle.as_ref().map_or(0, Idle::resting);
        }
        for counters in all {
            stats.readers_waiting += counters.reader_waiting.load(Relaxed);
            stats.gossip += counters.lane(Lane::Gossip, 0);
            stats.private += counters.lane(Lane::Private, 0);
            stats.bytes_in += counters.bytes_in();
            stats.bytes_out += counters.bytes_out();
        }
        stats
    }

    /// Refuses new connections and registrations; returns what is to be closed.
    pub(crate) fn begin_shutdown(&self) -> (Vec<Arc<Link>>, Vec<Arc<ConnShared>>) {
        let links = self.table.shut();
        let conns = {
            let mut registry = self.registry.lock();
            registry.shut = true;
            registry.inbound = None;
            registry.events = None;
            registry.alive = None;
            registry.live.values().cloned().collect()
        };
        drop(self.shutdown_tx.lock().take());
        (links, conns)
    }
}

/// A random number per node instance, so that a peer can tell a restart of this node
/// from a second connection of the same run.
fn incarnation(id: PeerId) -> u64 {
    let mut random = [0u8; 8];
    if getrandom::fill(&mut random).is_ok() {
        return u64::from_be_bytes(random);
    }
    // No system randomness: the clock and the process still tell runs apart.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(id.0);
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}
