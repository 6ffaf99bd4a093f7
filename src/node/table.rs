//! The peer table: which connection carries traffic to each peer.
//!
//! Its locks guard map updates only. Nothing here sends, reads, dials or joins while
//! holding one; a `Link` taken out of the map is handed back to the caller to drop or
//! close after the lock is released.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, RwLock};

use crossbeam_channel::{Receiver, TryRecvError};

use crate::conn::handshake::Holds;
use crate::conn::lane::Link;
use crate::conn::shared::{ConnShared, Unregister};
use crate::id::{ConnId, PeerId};
use crate::sync::Never;

/// How a new connection is registered when the peer already has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// We arbitrate (ours is the lower id). A connection, open or pending, to the same
    /// incarnation of the peer is kept and the new one refused — unless the peer says
    /// it has opened that connection and no longer holds it: then it is one the peer
    /// has closed (its close not yet read here), and the new one replaces it. (In a
    /// simultaneous dial the peer has not opened the other connection yet, so the
    /// first one stays.) A connection to an older incarnation (the peer restarted) is
    /// always replaced.
    Arbitrate { peer: Holds },
    /// The peer arbitrated and chose this connection, as its `generation`: it replaces
    /// any connection of an earlier generation, and is refused if one of the same
    /// incarnation with a later generation is here (the arbiter's verdicts can reach
    /// us out of order over two sockets).
    Follow { generation: u64 },
}

/// Why a connection could not be registered or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The node is shutting down.
    Shutdown,
    /// The connection was closed while it shook hands.
    Closing,
    /// A live connection to the same peer is kept.
    Duplicate,
}

#[derive(Default)]
struct Inner {
    /// The open link of each peer: the one sends go to.
    peers: HashMap<PeerId, Arc<Link>, IdHashing>,
    /// A link per peer whose handshake has been decided on this side but is not
    /// finished: it takes part in arbitration, but no send can reach it and it
    /// replaces nothing until it opens. So a handshake that fails at its last step
    /// leaves the open link alone and has nothing to hand back.
    pending: HashMap<PeerId, Arc<Link>, IdHashing>,
    /// Every reader of each peer's messages that has not finished, oldest first,
    /// with the signal that disconnects when it has. A reader that opens waits for
    /// all of them before delivering anything, so a peer's messages are delivered in
    /// order across any number of quick reconnections: waiting for the immediate
    /// predecessor alone is not enough, because that one may end (closed, or never
    /// having delivered anything) while an older one is still delivering.
    readers: HashMap<PeerId, Vec<(ConnId, Receiver<Never>)>, IdHashing>,
    shut: bool,
    /// The last generation given to a connection this side arbitrated.
    generation: u64,
    /// Per peer: its incarnation and the latest generation of a connection of it
    /// that opened here, for the `Holds` this side reports when the peer arbitrates.
    /// Bounded: cleared when it outgrows `SEEN_MAX`, which only costs the peers it
    /// forgot a slower `connect` right after a `disconnect` (a redial, not a replace).
    seen: HashMap<PeerId, (u64, u64), IdHashing>,
}

/// Peers remembered in [`Inner::seen`] at most.
const SEEN_MAX: usize = 65_536;

/// A connection that opened.
pub(crate) struct Opened {
    /// The link this one replaced, for the caller to close.
    pub(crate) replaced: Option<Arc<Link>>,
    /// Disconnect when every earlier reader of this peer has finished delivering.
    pub(crate) after: Vec<Receiver<Never>>,
}

/// How [`PeerTable::wait_for`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    Registered,
    TimedOut,
    Shutdown,
}

/// Hashes peer ids for the table, which every send looks up. SipHash, the default,
/// defends against chosen-key floods at a cost of tens of nanoseconds per lookup; here
/// the keys are peer ids of live connections, few and bounded, so one multiply is
/// enough — mixed with a random seed per table so that a peer cannot choose ids that
/// collide.
#[derive(Clone)]
struct IdHashing {
    seed: u64,
}

impl Default for IdHashing {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut random = std::collections::hash_map::RandomState::new().build_hasher();
        random.write_u64(0x5EED);
        IdHashing {
            seed: random.finish() | 1,
        }
    }
}

impl std::hash::BuildHasher for IdHashing {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.seed)
    }
}

/// A multiplicative hasher for `u64` keys.
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }

    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ (self.0 >> 31)
    }
}

#[derive(Default)]
pub(crate) struct PeerTable {
    inner: RwLock<Inner>,
    /// Paired with `registered`, so that `connect` can wait for a peer that arrived
    /// over another connection (the other half of a simultaneous dial).
    generation: Mutex<u64>,
    registered: Condvar,
}

impl PeerTable {
    pub(crate) fn get(&self, peer: PeerId) -> Option<Arc<Link>> {
        self.inner.read().peers.get(&peer).cloned()
    }

    /// What this side holds of `peer`'s connections, that incarnation's: for the
    /// `Holds` it sends when `peer` arbitrates.
    pub(crate) fn holds(&self, peer: PeerId, incarnation: u64) -> Holds {
        let inner = self.inner.read();
        let current = [inner.peers.get(&peer), inner.pending.get(&peer)]
            .into_iter()
            .flatten()
            .filter(|l| l.incarnation == incarnation)
            .map(|l| l.generation.load(Relaxed))
            .max()
            .unwrap_or(0);
        let latest = match inner.seen.get(&peer) {
            Some(&(seen, generation)) if seen == incarnation => generation,
            _ => 0,
        };
        Holds { current, latest }
    }

    pub(crate) fn contains(&self, peer: PeerId) -> bool {
        self.inner.read().peers.contains_key(&peer)
    }

    pub(crate) fn links(&self) -> Vec<Arc<Link>> {
        self.inner.read().peers.values().cloned().collect()
    }

    pub(crate) fn peers(&self) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self.inner.read().peers.keys().copied().collect();
        peers.sort_unstable();
        peers
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.read().peers.len()
    }

    /// Enters a connection whose handshake this side has decided on, as its
    /// [`Policy`] says; refused if the node is shutting down or the connection is
    /// closing. Returns the connection's generation. Until [`PeerTable::open`] the
    /// link is invisible to senders.
    pub(crate) fn register(&self, link: Arc<Link>, policy: Policy) -> Result<u64, Refusal> {
        let mut inner = self.inner.write();
        if inner.shut {
            return Err(Refusal::Shutdown);
        }
        // Checked under the table's lock: `ConnShared::close` marks the connection
        // closing before it takes this lock to remove it, so either we see the mark
        // here or it sees the entry there.
        if link.conn.is_closing() {
            return Err(Refusal::Closing);
        }
        // The generations of this peer's links here, open and pending, that belong
        // to the same incarnation as the new one.
        let same: Vec<u64> = [inner.peers.get(&link.peer), inner.pending.get(&link.peer)]
            .into_iter()
            .flatten()
            .filter(|l| l.incarnation == link.incarnation)
            .map(|l| l.generation.load(Relaxed))
            .collect();
        let generation = match policy {
            Policy::Arbitrate { peer } => {
                let abandoned = |g: u64| peer.latest >= g && peer.current != g;
                if !same.iter().all(|&g| abandoned(g)) {
                    return Err(Refusal::Duplicate);
                }
                inner.generation += 1;
                inner.generation
            }
            Policy::Follow { generation } => {
                let later = same.iter().any(|&g| g > generation);
                if later {
                    return Err(Refusal::Duplicate);
                }
                generation
            }
        };
        link.generation.store(generation, Relaxed);
        let _ = link.conn.peer.set(link.peer);
        // A pending link pushed out here fails when it tries to open.
        inner.pending.insert(link.peer, link);
        Ok(generation)
    }

    /// Makes a pending connection the peer's open link, once its handshake has
    /// finished, and enters its reader, which signals `reader_done` when it has
    /// finished. Returns the link it replaced and the signals of the earlier readers.
    pub(crate) fn open(
        &self,
        conn: &ConnShared,
        reader_done: Receiver<Never>,
    ) -> Result<Opened, Refusal> {
        let opened = {
            let mut inner = self.inner.write();
            let peer = *conn.peer.get().ok_or(Refusal::Closing)?;
            if inner.shut {
                return Err(Refusal::Shutdown);
            }
            if conn.is_closing() {
                return Err(Refusal::Closing);
            }
            let link = match inner.pending.get(&peer) {
                Some(link) if link.conn.id == conn.id => inner.pending.remove(&peer),
                _ => None,
            };
            let Some(link) = link else {
                // A newer connection of the same peer took the pending slot.
                return Err(Refusal::Duplicate);
            };
            let readers = inner.readers.entry(peer).or_default();
            // Forget readers that have finished; wait for all the others.
            readers.retain(|(_, done)| !matches!(done.try_recv(), Err(TryRecvError::Disconnected)));
            let after = readers.iter().map(|(_, done)| done.clone()).collect();
            readers.push((conn.id, reader_done));
            let generation = link.generation.load(Relaxed);
            if inner.seen.len() >= SEEN_MAX {
                inner.seen.clear();
            }
            let seen = inner.seen.entry(peer).or_insert((link.incarnation, 0));
            if seen.0 != link.incarnation {
                *seen = (link.incarnation, 0);
            }
            seen.1 = seen.1.max(generation);
            Opened {
                replaced: inner.peers.insert(peer, link),
                after,
            }
        };
        *self.generation.lock() += 1;
        self.registered.notify_all();
        Ok(opened)
    }

    /// Forgets a connection's reader once it has finished.
    pub(crate) fn reader_finished(&self, peer: PeerId, conn: ConnId) {
        let mut inner = self.inner.write();
        if let Some(readers) = inner.readers.get_mut(&peer) {
            readers.retain(|(id, _)| *id != conn);
            if readers.is_empty() {
                inner.readers.remove(&peer);
            }
        }
    }

    /// Removes the connection's entry, open or pending, if it is still the
    /// registered one, so that the teardown of an old connection never removes its
    /// replacement.
    pub(crate) fn remove_conn(&self, conn: &ConnShared) -> Option<Arc<Link>> {
        let mut inner = self.inner.write();
        let peer = *conn.peer.get()?;
        if matches!(inner.pending.get(&peer), Some(link) if link.conn.id == conn.id) {
            return inner.pending.remove(&peer);
        }
        match inner.peers.get(&peer) {
            Some(link) if link.conn.id == conn.id => inner.peers.remove(&peer),
            _ => None,
        }
    }

    /// Refuses all later registrations and hands back every link, open or pending;
    /// wakes every [`PeerTable::wait_for`].
    pub(crate) fn shut(&self) -> Vec<Arc<Link>> {
        let links = {
            let mut inner = self.inner.write();
            inner.shut = true;
            let pending: Vec<Arc<Link>> = inner.pending.drain().map(|(_, link)| link).collect();
            inner
                .peers
                .drain()
                .map(|(_, link)| link)
                .chain(pending)
                .collect()
        };
        *self.generation.lock() += 1;
        self.registered.notify_all();
        links
    }

    /// Waits until `peer` is registered, the deadline passes or the node shuts down.
    pub(crate) fn wait_for(&self, peer: PeerId, deadline: Instant) -> Wait {
        let mut generation = self.generation.lock();
        loop {
            {
                let inner = self.inner.read();
                if inner.peers.contains_key(&peer) {
                    return Wait::Registered;
                }
                if inner.shut {
                    return Wait::Shutdown;
                }
            }
            // A condition-variable wait releases `generation` while it sleeps; the
            // registrar bumps it under that mutex after inserting, so the insertion
            // cannot slip between our check and our sleep.
            if self
                .registered
                .wait_until(&mut generation, deadline)
                .timed_out()
            {
                return if self.contains(peer) {
                    Wait::Registered
                } else {
                    Wait::TimedOut
                };
            }
        }
    }
}

impl Unregister for PeerTable {
    fn unregister(&self, conn: &ConnShared) -> Option<Arc<Link>> {
        self.remove_conn(conn)
    }
}
