//! Whose turn it is to write to a connection's socket: the writer thread's, or,
//! while the writer is parked with nothing to write, one sending thread's.
//!
//! A message queued for the writer crosses a thread wake-up before it reaches the
//! socket: a ping-pong pays six wake-ups per round trip (sender → writer → peer's
//! reader → peer's application, and back), where a server that writes from the
//! sending thread pays four. So when the writer is parked — its batch empty, no
//! frame held for the peer's window, no rest of a frame to finish — it lends the
//! turn: the first sender to take it writes its one frame itself, with a send that
//! never waits (`MSG_DONTWAIT`). What the kernel does not take at once is handed to
//! the writer as the rest of the frame, with the turn, and the writer writes it
//! before anything else.
//!
//! Order holds because the writer takes nothing out of a lane without the turn: a
//! sender that holds it and finds its lane empty knows that no earlier message of
//! that lane is waiting anywhere, and one that finds the lane non-empty gives the
//! turn back and queues behind it. Private data still goes before gossip (a gossip
//! frame is written directly only when both lanes are empty), and private-lane
//! frames still spend the peer's window (`crate::conn::window`).
//!
//! The turn is an atomic, not a lock: a sender only ever *tries* to take it, and
//! the one that holds it does nothing that waits — it looks at its lane, writes
//! what the kernel takes without waiting, and counts. The writer taking the turn
//! back is the only thread that waits for it, for at most that non-blocking send.

use std::io::IoSlice;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;

use crate::conn::shared::ConnShared;
use crate::conn::window::{Outbox, Room};
use crate::wire::frame::{self, FrameKind, HEADER_LEN, REPLY_PREFIX};

/// The writer thread has the turn: it is running.
const WRITER: u8 = 0;
/// The writer is parked with nothing to write; a sender may take the turn.
const FREE: u8 = 1;
/// A sender has the turn.
const SENDER: u8 = 2;

/// A sender writes its own frame only if nothing was written on the connection for
/// this long. Messages closer together are a stream, which the writer batches into
/// one system call for many messages; writing each from its sender would cost one
/// call per message. A round trip crosses at least two thread wake-ups, so a
/// ping-pong's frames are further apart than this, even on a fast machine.
const GAP: Duration = Duration::from_micros(5);

/// Bytes before a data frame's payload: its header and its prefix (a request's id,
/// a reply's id and status).
const MAX_HEAD: usize = HEADER_LEN + REPLY_PREFIX;

/// The turn to write, and what its holder needs.
pub(crate) struct Turn {
    state: AtomicU8,
    /// Whether the writer ever lends the turn: only where a frame can be written in
    /// part and finished by another thread (on Unix; over TLS the session keeps the
    /// records a sender made and the socket did not take).
    lends: bool,
    /// The private-lane frames and payload bytes sent to the peer so far, published
    /// by the writer when it lends the turn and read back when it takes it again.
    sent_frames: AtomicU64,
    sent_bytes: AtomicU64,
    /// Whether a sender wrote while the writer was parked (so no ping is due).
    wrote: AtomicBool,
    /// Whether the node's idle thread pings while the writer is parked, the
    /// connection resting: the writer then sleeps without a
    /// ping timer.
    pinged_elsewhere: AtomicBool,
    /// When a frame was last written, in nanoseconds from `base`.
    last_write: AtomicU64,
    base: Instant,
    /// The end of a frame a sender could not write whole; handed over with the turn.
    rest: Mutex<Option<Rest>>,
    handed_tx: Sender<()>,
    /// Wakes the writer when a sender hands it the turn with the rest of a frame.
    pub(crate) handed: Receiver<()>,
}

/// The unwritten end of a data frame.
pub(crate) struct Rest {
    pub(crate) kind: FrameKind,
    /// What is left of the header and prefix.
    pub(crate) head: Vec<u8>,
    /// What is left of the payload.
    pub(crate) body: Bytes,
    /// The whole payload: it comes back to the application if the frame never
    /// reaches the socket.
    pub(crate) payload: Bytes,
}

/// What the writer gets back with the turn.
pub(crate) struct Reclaimed {
    /// The private-lane totals sent, its own and those of senders that wrote.
    pub(crate) sent: Room,
    /// Whether a sender wrote while the writer was parked.
    pub(crate) wrote: bool,
    /// The rest of a frame to write before anything else.
    pub(crate) rest: Option<Rest>,
}

impl Turn {
    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// A turn the writer holds; it lends it only if `lends`.
    pub(crate) fn new(lends: bool) -> Turn {
        let (handed_tx, handed) = bounded(1);
        Turn {
            state: AtomicU8::new(WRITER),
            lends,
            sent_frames: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            wrote: AtomicBool::new(false),
            pinged_elsewhere: AtomicBool::new(false),
            last_write: AtomicU64::new(0),
            // A new connection counts as quiet.
            base: Instant::now().checked_sub(GAP).unwrap_or_else(Instant::now),
            rest: Mutex::new(None),
            handed_tx,
            handed,
        }
    }

    /// The writer, about to park with nothing to write and nothing held, lends the
    /// turn; `sent` is what it has sent of the private lane, `last_write` when it
    /// last wrote.
    pub(crate) fn lend(&self, sent: Room, last_write: Instant) {
        if !self.lends {
            return;
        }
        self.last_write.store(self.nanos(last_write), Relaxed);
        self.sent_frames.store(sent.frames, Relaxed);
        self.sent_bytes.store(sent.bytes, Relaxed);
        self.state.store(FREE, Release);
    }

    /// The writer takes the turn back after parking, waiting out a sender's
    /// non-blocking write if one is under way. `None` if it never lent it.
    pub(crate) fn reclaim(&self) -> Option<Reclaimed> {
        if !self.lends {
            return None;
        }
        let mut spins = 0u32;
        loop {
            match self.state.compare_exchange(FREE, WRITER, Acquire, Acquire) {
                // Nobody took it, or a sender handed it back with the rest of a frame.
                Ok(_) | Err(WRITER) => break,
                // A sender is writing; it never waits, so this is short.
                Err(_) if spins < 64 => {
                    spins += 1;
                    std::hint::spin_loop();
                }
                Err(_) => thread::yield_now(),
            }
        }
        // A hand-over's wake-up is spent: the writer is awake.
        let _ = self.handed.try_recv();
        Some(Reclaimed {
            sent: Room {
                frames: self.sent_frames.load(Relaxed),
                bytes: self.sent_bytes.load(Relaxed),
            },
            wrote: self.wrote.swap(false, Relaxed),
            rest: self.rest.lock().take(),
        })
    }

    /// Says whether the idle thread pings for the parked writer; when it stops, the
    /// writer is woken to keep its own ping timer again.
    pub(crate) fn ping_elsewhere(&self, on: bool) {
        self.pinged_elsewhere.store(on, Release);
        if !on {
            let _ = self.handed_tx.try_send(());
        }
    }

    /// Whether the idle thread pings while the writer is parked.
    pub(crate) fn pinged_elsewhere(&self) -> bool {
        self.pinged_elsewhere.load(Acquire)
    }

    /// Whether the parked writer has lent the turn (a sender may hold it now):
    /// its lanes were empty when it parked, and it takes the turn back as soon as
    /// something is queued.
    pub(crate) fn lent(&self) -> bool {
        self.state.load(Relaxed) != WRITER
    }

    /// When a frame was last written, as of the writer's lending or a sender's
    /// write; meaningful while the turn is lent.
    pub(crate) fn last_write(&self) -> Instant {
        self.base + Duration::from_nanos(self.last_write.load(Relaxed))
    }

    /// How long nothing has been written (see [`Turn::last_write`]).
    pub(crate) fn quiet_for(&self) -> Duration {
        self.last_write().elapsed()
    }

    /// Takes the turn if the writer is parked with nothing to write and the
    /// connection has been quiet for a moment (see [`GAP`]).
    pub(crate) fn take(&self) -> Option<Held<'_>> {
        if self.state.load(Relaxed) != FREE {
            return None;
        }
        // Read only when the turn is free: a send about to make a system call.
        let quiet = self
            .nanos(Instant::now())
            .saturating_sub(self.last_write.load(Relaxed));
        if quiet < GAP.as_nanos() as u64 {
            return None;
        }
        self.state
            .compare_exchange(FREE, SENDER, AcqRel, Relaxed)
            .ok()
            .map(|_| Held {
                turn: self,
                handed: false,
            })
    }
}

/// A sender's turn to write: given back when dropped.
pub(crate) struct Held<'a> {
    turn: &'a Turn,
    handed: bool,
}

impl Held<'_> {
    /// Whether the peer's window has room for one more private-lane frame.
    pub(crate) fn has_room(&self, outbox: &Outbox) -> bool {
        outbox.fits(self.sent())
    }

    /// Spends window room for a private-lane frame of `bytes` payload bytes.
    pub(crate) fn spend(&self, bytes: u64) {
        let turn = self.turn;
        turn.sent_frames.fetch_add(1, Relaxed);
        turn.sent_bytes.fetch_add(bytes, Relaxed);
    }

    fn sent(&self) -> Room {
        Room {
            frames: self.turn.sent_frames.load(Relaxed),
            bytes: self.turn.sent_bytes.load(Relaxed),
        }
    }

    /// Writes one data frame — `prefix`, then `payload` — as far as the kernel takes
    /// it without waiting, and hands what is left to the writer with the turn.
    /// Returns whether the whole frame was written (`false`: the writer has the
    /// rest, and counts the frame when it has written it).
    pub(crate) fn write(
        mut self,
        conn: &ConnShared,
        kind: FrameKind,
        prefix: &[u8],
        payload: Bytes,
    ) -> bool {
        let len = u32::try_from(prefix.len() + payload.len())
            .expect("payload length checked against the frame limit");
        let mut head = [0u8; MAX_HEAD];
        head[..HEADER_LEN].copy_from_slice(&frame::header(kind, len));
        head[HEADER_LEN..HEADER_LEN + prefix.len()].copy_from_slice(prefix);
        let head = &head[..HEADER_LEN + prefix.len()];
        // An error is left for the writer to meet on the rest: it closes the
        // connection and hands the message back, as for its own writes.
        let n = conn
            .stream()
            .send_now(&[IoSlice::new(head), IoSlice::new(&payload)])
            .unwrap_or(0);
        let out = &conn.counters.out;
        out.wire_bytes.fetch_add(n as u64, Relaxed);
        let turn = self.turn;
        turn.last_write.store(turn.nanos(Instant::now()), Relaxed);
        if n > 0 {
            out.by_senders.fetch_add(1, Relaxed);
            self.turn.wrote.store(true, Relaxed);
            conn.progress();
        }
        if n == head.len() + payload.len() {
            match kind {
                FrameKind::Private => out.private.add(1, payload.len() as u64),
                FrameKind::Gossip => out.gossip.add(1, payload.len() as u64),
                _ => {}
            }
            return true;
        }
        let rest = Rest {
            kind,
            head: head[n.min(head.len())..].to_vec(),
            body: payload.slice(n.saturating_sub(head.len())..),
            payload,
        };
        *self.turn.rest.lock() = Some(rest);
        self.handed = true;
        self.turn.state.store(WRITER, Release);
        let _ = self.turn.handed_tx.try_send(());
        false
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if !self.handed {
            self.turn.state.store(FREE, Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_sender_takes_a_lent_turn_and_the_writer_gets_it_back() {
        let turn = Turn::new(true);
        assert!(turn.take().is_none(), "the writer holds it at first");
        let long_ago = Instant::now() - GAP * 2;
        turn.lend(
            Room {
                frames: 3,
                bytes: 30,
            },
            long_ago,
        );
        let held = turn.take().expect("lent");
        assert!(turn.take().is_none(), "one holder at a time");
        held.spend(5);
        drop(held);
        let back = turn.reclaim().expect("it lends");
        assert_eq!((back.sent.frames, back.sent.bytes), (4, 35));
        assert!(back.rest.is_none() && !back.wrote);
        assert!(turn.take().is_none(), "the writer has it again");
    }

    #[test]
    fn a_turn_lent_right_after_a_write_is_not_taken() {
        let turn = Turn::new(true);
        turn.lend(Room::default(), Instant::now() + Duration::from_secs(3600));
        assert!(turn.take().is_none(), "frames this close are a stream");
        turn.lend(Room::default(), Instant::now() - GAP * 2);
        assert!(turn.take().is_some(), "after a quiet moment");
    }

    #[test]
    fn a_turn_that_is_never_lent_is_never_taken() {
        let turn = Turn::new(false);
        turn.lend(Room::default(), Instant::now());
        assert!(turn.take().is_none());
        assert!(turn.reclaim().is_none());
    }
}
