//! The peer table: which connection carries traffic to each peer.
//!
//! Its locks guard map updates only. Nothing here sends, reads, dials or joins while
//! holding one; a `Link` taken out of the map is handed back to the caller to drop or
//! close after the lock is released.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, RwLock};

use crossbeam_channel::Receiver;

use crate::connection::{ConnShared, Never};
use crate::id::{ConnId, PeerId};
use crate::lane::Link;

/// How a new connection is registered when the peer already has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// We arbitrate (ours is the lower id): a live connection to the same incarnation
    /// of the peer wins, and the new one is refused. A connection to an older
    /// incarnation (the peer restarted) is replaced.
    Arbitrate,
    /// The peer arbitrated and chose this connection: it replaces any other.
    Follow,
}

/// Why a connection could not be registered.
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
    peers: HashMap<PeerId, Arc<Link>, IdHashing>,
    /// The newest reader of each peer's messages, with the signal that disconnects
    /// when it has finished: a reader that replaces it waits for that signal before
    /// delivering anything, so a peer's messages are delivered in order across a
    /// reconnection.
    readers: HashMap<PeerId, (ConnId, Receiver<Never>), IdHashing>,
    shut: bool,
}

/// A successful registration.
pub(crate) struct Registered {
    /// The link this one replaced, for the caller to close.
    pub(crate) replaced: Option<Arc<Link>>,
    /// Disconnects when the previous reader of this peer has finished delivering.
    pub(crate) after: Option<Receiver<Never>>,
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

    /// Registers a connection whose reader signals `reader_done` when it has
    /// finished. On success returns the link it replaced, which the caller closes once
    /// this returns, and the previous reader's signal.
    pub(crate) fn register(
        &self,
        link: Arc<Link>,
        policy: Policy,
        reader_done: Receiver<Never>,
    ) -> Result<Registered, Refusal> {
        let registered = {
            let mut inner = self.inner.write();
            if inner.shut {
                return Err(Refusal::Shutdown);
            }
            // Checked under the table's lock: `ConnShared::close` marks the
            // connection closing before it takes this lock to remove it, so either we
            // see the mark here or it sees the entry there.
            if link.conn.is_closing() {
                return Err(Refusal::Closing);
            }
            if policy == Policy::Arbitrate {
                if let Some(existing) = inner.peers.get(&link.peer) {
                    if existing.incarnation == link.incarnation {
                        return Err(Refusal::Duplicate);
                    }
                }
            }
            let _ = link.conn.peer.set(link.peer);
            let after = inner
                .readers
                .insert(link.peer, (link.conn.id, reader_done))
                .map(|(_, done)| done);
            Registered {
                replaced: inner.peers.insert(link.peer, link),
                after,
            }
        };
        *self.generation.lock() += 1;
        self.registered.notify_all();
        Ok(registered)
    }

    /// Forgets a connection's reader once it has finished, unless a newer one has
    /// taken its place.
    pub(crate) fn reader_finished(&self, peer: PeerId, conn: ConnId) {
        let mut inner = self.inner.write();
        if matches!(inner.readers.get(&peer), Some((newest, _)) if *newest == conn) {
            inner.readers.remove(&peer);
        }
    }

    /// Removes the connection's entry if it is still the registered one, so that the
    /// teardown of an old connection never removes its replacement.
    pub(crate) fn remove_conn(&self, conn: &ConnShared) -> Option<Arc<Link>> {
        let mut inner = self.inner.write();
        let peer = *conn.peer.get()?;
        match inner.peers.get(&peer) {
            Some(link) if link.conn.id == conn.id => inner.peers.remove(&peer),
            _ => None,
        }
    }

    /// Refuses all later registrations and hands back every registered link.
    pub(crate) fn shut(&self) -> Vec<Arc<Link>> {
        let mut inner = self.inner.write();
        inner.shut = true;
        inner.peers.drain().map(|(_, link)| link).collect()
    }

    /// Waits until `peer` is registered or the deadline passes; returns whether it is.
    pub(crate) fn wait_for(&self, peer: PeerId, deadline: Instant) -> bool {
        let mut generation = self.generation.lock();
        loop {
            if self.contains(peer) {
                return true;
            }
            // A condition-variable wait releases `generation` while it sleeps; the
            // registrar bumps it under that mutex after inserting, so the insertion
            // cannot slip between our check and our sleep.
            if self
                .registered
                .wait_until(&mut generation, deadline)
                .timed_out()
            {
                return self.contains(peer);
            }
        }
    }
}
