//! Flow control of the private lane: windows the receiver grants and the sender's
//! writer spends.
//!
//! Each side of a connection gives the other room for a number of private-lane
//! frames (private messages and requests) and of their payload bytes. The room
//! is granted again as the application takes messages: a [`Hold`] travels inside
//! each delivered [`Message`](crate::Message), and dropping the message gives its
//! room back ([`PeerFlow`]). Each time half a window has come back, the writers of
//! all the peer's connections are nudged; each sends a window frame with new totals,
//! counted from the start of its connection, if they give the peer half a window
//! more than it was told. Totals, not increments: frames may be lost to nothing,
//! reordered by nothing, and repeated harmlessly.
//!
//! The sender's writer ([`Outbox`]) writes a private-lane frame only while both
//! totals leave room (one byte of room is enough for a frame of any size, so a
//! message larger than the window still goes, alone). A frame that does not fit
//! stays with the writer, which keeps writing replies, gossip and pings meanwhile.
//!
//! What this buys: a reader never waits for the application to take a private
//! message, because there is always room for what the peer may send. The inbound
//! queue holds at most each peer's window of private data (counted across the
//! peer's connections, so that reconnecting does not bring a fresh window) plus
//! `inbound_capacity` gossip messages; gossip over that is dropped and counted.

use std::fmt;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;

use crate::stats::Padded;
use crate::sync::Budget;

/// What a delivered message holds until the application drops it: room in its
/// peer's window, or a place among the gossip in the inbound queue.
///
/// A clone holds nothing: the room comes back when the message the node handed
/// over is dropped (or taken apart, its payload kept).
pub(crate) enum Hold {
    Nothing,
    /// One of the inbound queue's places for gossip.
    Gossip(Arc<Budget>),
    /// A private-lane frame of this many bytes, from this peer.
    Window(Arc<PeerFlow>, u64),
}

impl Clone for Hold {
    fn clone(&self) -> Hold {
        Hold::Nothing
    }
}

impl PartialEq for Hold {
    /// What a message holds is not part of what it is.
    fn eq(&self, _: &Hold) -> bool {
        true
    }
}

impl Eq for Hold {}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hold")
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        match self {
            Hold::Nothing => {}
            Hold::Gossip(places) => places.release(1),
            Hold::Window(flow, len) => flow.taken(1, *len),
        }
    }
}

/// A window's size: frames and payload bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Room {
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
}

impl Room {
    /// Whether, having sent `self`, one more frame fits the totals `granted`: some
    /// room is left in both (one byte takes a frame of any size).
    fn leaves_room(self, granted: Room) -> bool {
        self.frames < granted.frames && self.bytes < granted.bytes
    }
}

/// Two running totals: frames and their payload bytes.
#[derive(Default)]
struct Totals {
    frames: AtomicU64,
    bytes: AtomicU64,
}

impl Totals {
    fn new(room: Room) -> Totals {
        Totals {
            frames: AtomicU64::new(room.frames),
            bytes: AtomicU64::new(room.bytes),
        }
    }

    fn load(&self) -> Room {
        Room {
            frames: self.frames.load(SeqCst),
            bytes: self.bytes.load(SeqCst),
        }
    }

    fn add(&self, frames: u64, bytes: u64) -> Room {
        Room {
            frames: self.frames.fetch_add(frames, SeqCst) + frames,
            bytes: self.bytes.fetch_add(bytes, SeqCst) + bytes,
        }
    }

    fn store(&self, room: Room) {
        self.frames.store(room.frames, SeqCst);
        self.bytes.store(room.bytes, SeqCst);
    }

    /// Raises the totals to `room`; returns what they were.
    fn raise(&self, room: Room) -> Room {
        Room {
            frames: self.frames.fetch_max(room.frames, SeqCst),
            bytes: self.bytes.fetch_max(room.bytes, SeqCst),
        }
    }
}

/// The receiving side of one peer's private data, across its connections: what
/// its connections have delivered and the application has taken, and the nudges
/// that wake the writers of the peer's connections to grant room again.
///
/// It is per peer, not per connection, because a connection that replaces another
/// must not get a fresh window while the old one's messages still sit in the
/// inbound queue: with a slow application and frequent reconnections, the queue
/// would grow by a window every time. The node keeps one per peer for as long as a
/// connection or a message refers to it.
///
/// Every connection's writer is nudged, not just one: while a connection ends and
/// its successor starts, both have writers, and a nudge spent by the ending one
/// would leave the live one's peer waiting for room that had come back.
pub(crate) struct PeerFlow {
    size: Room,
    delivered: Padded<Totals>,
    taken: Padded<Totals>,
    /// `taken` as it was at the last nudge: half a window more is worth another.
    taken_at_nudge: Padded<Totals>,
    /// The nudges of the peer's connections' writers, by inbox.
    writers: Mutex<Vec<(u64, Sender<()>)>>,
    next_inbox: AtomicU64,
}

impl PeerFlow {
    pub(crate) fn new(size: Room) -> PeerFlow {
        PeerFlow {
            size,
            delivered: Padded::default(),
            taken: Padded::default(),
            taken_at_nudge: Padded::default(),
            writers: Mutex::new(Vec::new()),
            next_inbox: AtomicU64::new(0),
        }
    }

    /// The application took `frames` frames of `bytes` bytes: their room may be
    /// granted again.
    fn taken(&self, frames: u64, bytes: u64) {
        let taken = self.taken.add(frames, bytes);
        if !self.half_back(taken) {
            return;
        }
        // Two threads dropping at once may both nudge: harmless.
        self.taken_at_nudge.raise(taken);
        // Cloned out so that no nudge is sent under the lock. A nudge already
        // pending covers this one.
        let nudges: Vec<Sender<()>> = self.writers.lock().iter().map(|(_, n)| n.clone()).collect();
        for nudge in nudges {
            let _ = nudge.try_send(());
        }
    }

    /// Whether half a window, in frames or in bytes, has come back since the last
    /// nudge.
    fn half_back(&self, taken: Room) -> bool {
        let at = self.taken_at_nudge.load();
        taken.frames - at.frames.min(taken.frames) >= self.size.frames.div_ceil(2)
            || taken.bytes - at.bytes.min(taken.bytes) >= self.size.bytes.div_ceil(2)
    }

    /// Room the peer may fill now: the window less what the application has not
    /// yet taken, from any of the peer's connections.
    fn free(&self) -> Room {
        let (delivered, taken) = (self.delivered.load(), self.taken.load());
        let held = |d: u64, t: u64| d.saturating_sub(t);
        Room {
            frames: self
                .size
                .frames
                .saturating_sub(held(delivered.frames, taken.frames)),
            bytes: self
                .size
                .bytes
                .saturating_sub(held(delivered.bytes, taken.bytes)),
        }
    }
}

/// The receiving side of one connection's private lane: what this side has granted
/// on it and what the peer has sent on it (the protocol counts per connection), and
/// its peer's [`PeerFlow`]. Each total is written by one thread (the writer, the
/// reader) and kept on cache lines of its own.
pub(crate) struct Inbox {
    flow: Arc<PeerFlow>,
    /// This inbox's place among the peer's writers' nudges.
    id: u64,
    /// Wakes the writer: room has come back.
    nudged: Receiver<()>,
    /// The totals granted, as the writer last announced them (stored before the
    /// window frame is written, so the reader never checks against less than the
    /// peer was told).
    granted: Padded<Totals>,
    /// What the peer has sent, as the reader counted it.
    received: Padded<Totals>,
}

impl Inbox {
    /// A connection's inbox, granted from the start what its peer's window has free
    /// (the writer announces it in its first frame).
    pub(crate) fn new(flow: Arc<PeerFlow>) -> Inbox {
        let (nudge, nudged) = bounded(1);
        let id = flow.next_inbox.fetch_add(1, Relaxed);
        // Nudged from before the free room is counted, so that no room coming back
        // after the count goes unannounced.
        flow.writers.lock().push((id, nudge));
        let free = flow.free();
        Inbox {
            flow,
            id,
            nudged,
            granted: Padded::new(Totals::new(free)),
            received: Padded::default(),
        }
    }

    /// The peer's flow, for the messages delivered.
    pub(crate) fn flow(&self) -> &Arc<PeerFlow> {
        &self.flow
    }

    /// Selected on by this connection's writer: room has come back, a grant may be
    /// due.
    pub(crate) fn nudged(&self) -> &Receiver<()> {
        &self.nudged
    }

    /// The totals to announce, if a window frame is due; called by the writer, the
    /// only one that grants, which records them as granted before writing them.
    /// The first call always announces the initial window; later ones, totals that
    /// give the peer half a window more, in frames or in bytes, than it was told.
    ///
    /// Due or not is decided from this connection's totals alone, never from what
    /// the peer's other connections did: whenever this connection's peer has used
    /// all its room and the application has taken everything, a whole window more
    /// can be granted, so a grant is due, and the nudge for the room coming back
    /// wakes this writer to send it.
    pub(crate) fn grant(&self, first: bool) -> Option<Room> {
        let (free, received, granted) =
            (self.flow.free(), self.received.load(), self.granted.load());
        let room = Room {
            frames: (received.frames + free.frames).max(granted.frames),
            bytes: (received.bytes + free.bytes).max(granted.bytes),
        };
        let half = |size: u64| size.div_ceil(2);
        let due = room.frames - granted.frames >= half(self.flow.size.frames)
            || room.bytes - granted.bytes >= half(self.flow.size.bytes);
        if !first && !due {
            return None;
        }
        self.granted.store(room);
        Some(room)
    }

    /// Counts a private-lane frame of `bytes` payload bytes from the peer, if the
    /// window had room for it; `false` if it had none (the peer broke the rule).
    /// Called by the reader only.
    pub(crate) fn receive(&self, bytes: u64) -> bool {
        let received = self.received.load();
        if !self.admits(received) {
            return false;
        }
        self.received.store(Room {
            frames: received.frames + 1,
            bytes: received.bytes + bytes,
        });
        self.flow.delivered.add(1, bytes);
        true
    }

    fn admits(&self, sent: Room) -> bool {
        sent.leaves_room(self.granted.load())
    }

    /// Whether the peer has used all the room granted to it: our application is
    /// not taking what this peer sends.
    pub(crate) fn is_closed(&self) -> bool {
        !self.admits(self.received.load())
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.flow.writers.lock().retain(|(id, _)| *id != self.id);
    }
}

/// The sending side of one connection's private lane: the room the peer has
/// granted (updated by the reader from window frames) and what the writer spent.
pub(crate) struct Outbox {
    /// The peer's totals, as its last window frame gave them.
    limit: Totals,
    /// Whether the writer holds a frame the window has no room for.
    blocked: AtomicBool,
    /// Nanoseconds the writer has held a frame waiting for room, not counting a
    /// wait still going on.
    waited_ns: AtomicU64,
    /// Wakes the writer when room was granted.
    opened: Sender<()>,
}

impl Outbox {
    /// No room until the peer's first window frame.
    pub(crate) fn new(opened: Sender<()>) -> Outbox {
        Outbox {
            limit: Totals::default(),
            blocked: AtomicBool::new(false),
            waited_ns: AtomicU64::new(0),
            opened,
        }
    }

    /// Whether, having sent `sent`, one more frame fits the window.
    pub(crate) fn fits(&self, sent: Room) -> bool {
        sent.leaves_room(self.limit.load())
    }

    /// The peer granted room up to `room` in all. Returns `false` for totals that
    /// shrink, which no conforming peer sends.
    pub(crate) fn grant(&self, room: Room) -> bool {
        let before = self.limit.raise(room);
        if room.frames < before.frames || room.bytes < before.bytes {
            return false;
        }
        let _ = self.opened.try_send(());
        true
    }

    /// Whether the peer's window is closed to us now.
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked.load(Relaxed)
    }

    /// Time the writer has spent holding a frame for room, finished waits only.
    pub(crate) fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_ns.load(Relaxed))
    }
}

/// The writer's own view of an [`Outbox`]: what it has spent, and since when the
/// frame it holds has been waiting.
pub(crate) struct Spender {
    outbox: Arc<Outbox>,
    sent: Room,
    since: Option<Instant>,
}

impl Spender {
    pub(crate) fn new(outbox: Arc<Outbox>) -> Spender {
        Spender {
            outbox,
            sent: Room::default(),
            since: None,
        }
    }

    /// Whether the window has room for one more frame. When it has not, the wait
    /// starts being timed; when it has again, the time is added up.
    pub(crate) fn has_room(&mut self) -> bool {
        let room = self.sent.leaves_room(self.outbox.limit.load());
        match (room, self.since) {
            (false, None) => {
                self.since = Some(Instant::now());
                self.outbox.blocked.store(true, Relaxed);
            }
            (true, Some(since)) => {
                self.since = None;
                let ns = since.elapsed().as_nanos() as u64;
                self.outbox.waited_ns.fetch_add(ns, Relaxed);
                self.outbox.blocked.store(false, Relaxed);
            }
            _ => {}
        }
        room
    }

    /// Spends room for a frame of `bytes` payload bytes.
    pub(crate) fn spend(&mut self, bytes: u64) {
        self.sent.frames += 1;
        self.sent.bytes += bytes;
    }

    /// What was sent so far: handed to the senders that write while the writer is
    /// parked (`crate::conn::turn`).
    pub(crate) fn sent(&self) -> Room {
        self.sent
    }

    /// Takes back the totals sent, the senders' frames included.
    pub(crate) fn resume(&mut self, sent: Room) {
        self.sent = sent;
    }
}

/// The payload of a window frame: the two totals, big-endian.
pub(crate) fn encode(room: Room) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&room.frames.to_be_bytes());
    out[8..].copy_from_slice(&room.bytes.to_be_bytes());
    out
}

/// Reads a window frame's payload (its length was checked by the frame header).
pub(crate) fn decode(payload: &[u8]) -> Room {
    Room {
        frames: u64::from_be_bytes(payload[..8].try_into().expect("eight bytes")),
        bytes: u64::from_be_bytes(payload[8..16].try_into().expect("eight bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(frames: u64, bytes: u64) -> Room {
        Room { frames, bytes }
    }

    #[test]
    fn grants_again_after_half_the_window_comes_back() {
        let flow = Arc::new(PeerFlow::new(room(4, 1000)));
        let inbox = Inbox::new(flow.clone());
        assert_eq!(inbox.grant(true), Some(room(4, 1000)));
        assert!(inbox.receive(999));
        assert!(
            inbox.receive(1),
            "one byte of room takes a frame of any size"
        );
        assert!(inbox.is_closed());
        assert!(!inbox.receive(1), "no room is left in bytes");
        flow.taken(1, 10);
        assert!(
            inbox.nudged().try_recv().is_err(),
            "a quarter back is not worth a frame"
        );
        assert_eq!(inbox.grant(false), None);
        flow.taken(1, 10);
        assert!(
            inbox.nudged().try_recv().is_ok(),
            "half the frames back nudges the writer"
        );
        assert_eq!(inbox.grant(false), Some(room(6, 1020)));
        assert!(!inbox.is_closed());
        assert!(inbox.receive(20));
        assert!(!inbox.receive(0), "the bytes granted are used up again");
    }

    #[test]
    fn a_new_connection_gets_only_what_the_old_ones_left_free() {
        let flow = Arc::new(PeerFlow::new(room(4, 1000)));
        let old = Inbox::new(flow.clone());
        assert!(old.receive(10) && old.receive(10) && old.receive(10));
        // The old connection ends with three messages not yet taken.
        let new = Inbox::new(flow.clone());
        assert_eq!(new.grant(true), Some(room(1, 970)));
        flow.taken(2, 20);
        assert!(
            new.nudged().try_recv().is_ok(),
            "the old messages' room comes back"
        );
        assert_eq!(new.grant(false), Some(room(3, 990)));
    }

    #[test]
    fn a_grant_due_reaches_the_live_connection_while_another_ends() {
        let flow = Arc::new(PeerFlow::new(room(8, 1 << 20)));
        let old = Inbox::new(flow.clone());
        assert_eq!(old.grant(true), Some(room(8, 1 << 20)));
        for _ in 0..5 {
            assert!(old.receive(10));
        }
        // The old connection is ending, its writer still running, and five of its
        // messages wait for the application; the new one gets what is left.
        let new = Inbox::new(flow.clone());
        assert_eq!(new.grant(true), Some(room(3, (1 << 20) - 50)));
        for _ in 0..3 {
            assert!(new.receive(10));
        }
        assert!(new.is_closed());
        // The application takes everything; the ending writer wakes first each time.
        for _ in 0..2 {
            flow.taken(4, 40);
            assert!(old.nudged().try_recv().is_ok());
            let _ = old.grant(false);
        }
        assert!(
            new.nudged().try_recv().is_ok(),
            "the live connection's writer is nudged too"
        );
        assert_eq!(
            new.grant(false),
            Some(room(11, (1 << 20) + 30)),
            "the live connection's peer gets the whole window again"
        );
        assert!(!new.is_closed());
        drop(old);
        assert_eq!(flow.writers.lock().len(), 1, "an inbox gone is not nudged");
    }

    #[test]
    fn a_frame_larger_than_the_window_goes_alone() {
        let (tx, rx) = bounded(1);
        let outbox = Arc::new(Outbox::new(tx));
        let mut spender = Spender::new(outbox.clone());
        assert!(!spender.has_room(), "no room before the first grant");
        assert!(outbox.is_blocked());
        assert!(outbox.grant(room(2, 100)));
        assert!(rx.try_recv().is_ok(), "a grant wakes the writer");
        assert!(spender.has_room());
        assert!(!outbox.is_blocked());
        spender.spend(5000);
        assert!(!spender.has_room(), "the bytes are spent, and more");
        assert!(!outbox.grant(room(1, 100)), "totals never shrink");
        assert!(outbox.grant(room(3, 5101)));
        assert!(spender.has_room());
    }

    #[test]
    fn window_payload_round_trips() {
        let r = room(u64::MAX - 1, 7);
        assert_eq!(decode(&encode(r)), r);
    }
}
