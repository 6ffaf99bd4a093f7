//! The threads that carry and watch a run's traffic, each with what it reports when
//! it is joined: a private and a gossip sender, a receiver and an event watcher per
//! node. The thread that cuts connections is in [`super::chaos`].
//!
//! Every payload carries a [`Stamp`]; the receivers and watchers only record what
//! they see (see [`crate::stamp`]), and the run is judged at the end.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use wirelane::crossbeam_channel::RecvTimeoutError;
use wirelane::{
    Bytes, DisconnectReason, Event, Lane, Message, Node, PeerId, SendTimeoutError, TrySendError,
};

use super::Plan;
use crate::stamp::{Stamp, Track};

/// How long one private send may wait for room before the sender moves on, so that
/// it notices the stop flag; the number is offered again on its next turn.
pub const SEND_POLL: Duration = Duration::from_millis(100);
/// A sender whose every peer refused in one round (all disconnected) waits this long
/// before the next round rather than spin while they reconnect.
const IDLE_PAUSE: Duration = Duration::from_millis(1);
/// Gossip messages per peer between two looks at the clock: enough to keep sleeps
/// well above timer granularity at the planned rate.
const GOSSIP_BURST: u64 = 32;
/// A paced loop this far behind its schedule starts a new one.
const MAX_LAG: Duration = Duration::from_millis(50);
/// How long a watcher waits for an event before it looks for redials that are due.
const POLL: Duration = Duration::from_millis(50);
/// A failed redial is tried again after this long.
const REDIAL_BACKOFF: Duration = Duration::from_millis(200);
/// A slow consumer sleeps only once it is this far ahead of its pace, so that its
/// sleeps stay well above timer granularity.
const SLOW_MIN_SLEEP: Duration = Duration::from_millis(2);

/// What the main thread watches while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    pub gossip_received: AtomicU64,
    /// Private messages taken by the receivers, duplicates included.
    pub private_received: AtomicU64,
    /// Private messages handed back in `Undelivered` events.
    pub private_returned: AtomicU64,
    /// While set, watchers redial peers whose connection ended.
    pub redial: AtomicBool,
    /// While set, the slow consumer (if the plan has one) paces its reads.
    pub slow: AtomicBool,
}

/// Things that should not happen, counted, with the first one described.
#[derive(Debug, Default)]
pub struct Oddities {
    pub count: u64,
    pub first: Option<String>,
}

impl Oddities {
    pub fn note(&mut self, what: impl fmt::Display) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(what.to_string());
        }
    }

    /// A violation naming `whose` oddities these are, if there were any.
    pub fn violation(&self, whose: &str) -> Option<String> {
        let first = self.first.as_ref()?;
        Some(format!(
            "{whose}: {} anomalies (first: {first})",
            self.count
        ))
    }
}

#[derive(Debug)]
pub struct Sent {
    pub lane: Lane,
    pub src: PeerId,
    /// Per destination, the numbers a send accepted: `0..n`.
    pub accepted: Vec<(PeerId, u64)>,
    /// Sends that found the lane full: private ones waited [`SEND_POLL`], gossip
    /// was dropped. Either way the number is offered again.
    pub busy: u64,
    /// Sends refused because the peer was not connected or its connection closed.
    pub refused: u64,
    /// Refusals that should not happen here, and messages handed back altered.
    pub odd: Oddities,
}

impl Sent {
    fn new(lane: Lane, src: PeerId, peers: &[PeerId]) -> Sent {
        Sent {
            lane,
            src,
            accepted: peers.iter().map(|&p| (p, 0)).collect(),
            busy: 0,
            refused: 0,
            odd: Oddities::default(),
        }
    }

    fn stamp(&self, k: usize) -> Stamp {
        let (dst, seq) = self.accepted[k];
        Stamp {
            lane: self.lane,
            src: self.src,
            dst,
            seq,
        }
    }

    /// Counts a refused send: `busy` if the lane was full, `gone` if the peer was
    /// not connected; `back` is what the error handed back, which must be the
    /// message offered.
    fn refusal(&mut self, stamp: Stamp, busy: bool, gone: bool, why: String, back: &Bytes) {
        match (busy, gone) {
            (true, _) => self.busy += 1,
            (_, true) => self.refused += 1,
            _ => self.odd.note(format_args!(
                "{} send from {} to {} refused: {why}",
                stamp.lane, stamp.src, stamp.dst
            )),
        }
        if Stamp::decode(back) != Some(stamp) {
            self.odd.note(format_args!(
                "a refused {} send handed back another message than {stamp:?}",
                stamp.lane
            ));
        }
    }
}

/// A sender thread: a stamped message to each peer in turn until `stop` is set.
///
/// Private messages go as fast as the lanes take them; each send waits at most
/// [`SEND_POLL`], so that the thread notices `stop`. Gossip goes at
/// `plan.gossip_rate` a second spread over the peers, in bursts, and a full lane
/// drops the message. Either way a refused number is offered again, so a gap in
/// what arrives is a loss on the way, never a refused send.
pub fn send(node: &Node, peers: &[PeerId], plan: &Plan, lane: Lane, stop: &AtomicBool) -> Sent {
    let mut sent = Sent::new(lane, node.id(), peers);
    let burst = if lane == Lane::Gossip {
        GOSSIP_BURST
    } else {
        1
    };
    let burst_every = (burst * peers.len() as u64) as f64 / plan.gossip_rate.max(1) as f64;
    let mut pace = Pace::new(Duration::from_secs_f64(burst_every), Duration::ZERO);
    while !stop.load(Relaxed) {
        let mut took = false;
        for _ in 0..burst {
            for k in 0..peers.len() {
                let stamp = sent.stamp(k);
                let payload = stamp.encode(plan.size);
                // Each refusal is (lane full, peer gone, why, the message handed back).
                let refused = match lane {
                    Lane::Private => {
                        node.send_timeout(stamp.dst, payload, SEND_POLL)
                            .map_err(|e| {
                                use SendTimeoutError::{Disconnected, NotConnected};
                                let gone = matches!(e, NotConnected(_) | Disconnected(_));
                                (e.is_timeout(), gone, e.to_string(), e.into_inner())
                            })
                    }
                    _ => node.try_send(stamp.dst, payload).map_err(|e| {
                        use TrySendError::{Disconnected, NotConnected};
                        let gone = matches!(e, NotConnected(_) | Disconnected(_));
                        (e.is_full(), gone, e.to_string(), e.into_inner())
                    }),
                };
                match refused {
                    Ok(()) => {
                        sent.accepted[k].1 += 1;
                        took = true;
                    }
                    Err((busy, gone, why, back)) => sent.refusal(stamp, busy, gone, why, &back),
                }
            }
        }
        if lane == Lane::Gossip {
            pace.tick();
        } else if !took {
            // Every peer refused (all disconnected): wait for them to reconnect
            // rather than spin.
            thread::sleep(IDLE_PAUSE);
        }
    }
    sent
}

/// Keeps a loop to a schedule of one `step` per [`Pace::tick`]: sleeps once it is
/// more than `min_sleep` ahead (so that sleeps stay above timer granularity), and
/// starts a new schedule when it falls behind by more than [`MAX_LAG`] (the machine
/// was busy) rather than catch up in one long burst.
struct Pace {
    step: Duration,
    min_sleep: Duration,
    due: Instant,
}

impl Pace {
    fn new(step: Duration, min_sleep: Duration) -> Pace {
        Pace {
            step,
            min_sleep,
            due: Instant::now(),
        }
    }

    fn tick(&mut self) {
        self.due += self.step;
        let now = Instant::now();
        if self.due > now + self.min_sleep {
            thread::sleep(self.due - now);
        } else if now > self.due + MAX_LAG {
            self.due = now;
        }
    }
}

/// What one node received, per (lane, sender).
#[derive(Debug)]
pub struct Inbox {
    pub me: PeerId,
    pub streams: HashMap<(Lane, PeerId), Track>,
    /// Messages without a stamp, or whose stamp names another sender, receiver or
    /// lane than the message came by.
    pub malformed: Oddities,
}

/// A receiver thread: takes every message its node delivers until the node has shut
/// down and its inbound queue is empty, and records each stamp.
///
/// It runs until shutdown rather than until the load stops, so that it also takes
/// the messages that arrive after the load, which the drain wait is counting on.
/// With `pace` (messages a second) it is the run's slow consumer while
/// [`Live::slow`] is set: its node's inbound queue fills, its readers stop, and
/// its peers' writes and sends back up while connections are cut under them.
pub fn receive(node: &Node, live: &Live, pace: Option<u64>) -> Inbox {
    let mut inbox = Inbox {
        me: node.id(),
        streams: HashMap::new(),
        malformed: Oddities::default(),
    };
    let step = |rate: u64| Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut pace = pace.map(|rate| Pace::new(step(rate), SLOW_MIN_SLEEP));
    // The queue reports disconnection once the node has shut down and it is empty.
    for msg in node.incoming() {
        match msg.lane {
            Lane::Private => live.private_received.fetch_add(1, Relaxed),
            _ => live.gossip_received.fetch_add(1, Relaxed), // gossip, the only other lane
        };
        inbox.observe(&msg);
        if let Some(pace) = pace.as_mut().filter(|_| live.slow.load(Relaxed)) {
            pace.tick();
        }
    }
    inbox
}

impl Inbox {
    fn observe(&mut self, msg: &Message) {
        match Stamp::decode(&msg.payload) {
            Some(s) if s.src == msg.from && s.dst == self.me && s.lane == msg.lane => self
                .streams
                .entry((s.lane, s.src))
                .or_default()
                .observe(s.seq),
            stamp => self.malformed.note(format_args!(
                "{} message from {} to {} with stamp {stamp:?}",
                msg.lane, msg.from, self.me
            )),
        }
    }
}

#[derive(Debug)]
pub struct EventLog {
    pub me: PeerId,
    /// Private messages handed back, per destination.
    pub returned: HashMap<PeerId, Track>,
    /// Handed-back messages that were not this node's private messages to that peer.
    pub malformed: Oddities,
    /// `Disconnected` events by reason.
    pub reasons: BTreeMap<&'static str, u64>,
    /// Connections that ended other than by a close, a replacement or a shutdown:
    /// a silent peer, a protocol error, a failed socket. Not wrong in themselves,
    /// but the first place to look when messages went missing.
    pub unclean: Oddities,
    /// Inbound handshakes refused (other than a lost race, which is not reported).
    pub refused: Oddities,
    /// Successful redials, and failed ones (tried again later).
    pub redials: u64,
    pub redial_failures: Oddities,
}

/// An event thread: records what comes back in `Undelivered`, and while
/// [`Live::redial`] is set, redials each peer with a higher id whose connection
/// ended (the lower id dials; the library resolves the race when both dial).
/// Ends when the node has shut down and its event queue is empty.
pub fn watch(node: &Node, directory: &[(PeerId, SocketAddr)], live: &Live) -> EventLog {
    let me = node.id();
    let mut log = EventLog {
        me,
        returned: HashMap::new(),
        malformed: Oddities::default(),
        reasons: BTreeMap::new(),
        unclean: Oddities::default(),
        refused: Oddities::default(),
        redials: 0,
        redial_failures: Oddities::default(),
    };
    // Peers this node owes a dial, with when to try next.
    let mut owed: BTreeMap<PeerId, Instant> = BTreeMap::new();
    loop {
        match node.events().recv_timeout(POLL) {
            Ok(Event::Undelivered { peer, messages, .. }) => {
                live.private_returned
                    .fetch_add(messages.len() as u64, Relaxed);
                for m in &messages {
                    match Stamp::decode(m) {
                        Some(s) if s.lane == Lane::Private && s.src == me && s.dst == peer => {
                            log.returned.entry(peer).or_default().observe(s.seq)
                        }
                        stamp => log.malformed.note(format_args!(
                            "{me} got back a message for {peer} with stamp {stamp:?}"
                        )),
                    }
                }
            }
            Ok(Event::Disconnected { peer, conn, reason }) => {
                let name = reason_name(&reason);
                *log.reasons.entry(name).or_default() += 1;
                if !CLEAN.contains(&name) {
                    log.unclean
                        .note(format_args!("{me} from {peer} ({conn}): {reason}"));
                }
                if me < peer {
                    owed.insert(peer, Instant::now());
                }
            }
            Ok(Event::Refused { addr, error }) => log
                .refused
                .note(format_args!("{me} refused {addr}: {error}")),
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return log,
        }
        if live.redial.load(Relaxed) {
            redial(node, directory, &mut owed, &mut log);
        }
    }
}

/// Dials every owed peer that is due and not connected meanwhile.
fn redial(
    node: &Node,
    directory: &[(PeerId, SocketAddr)],
    owed: &mut BTreeMap<PeerId, Instant>,
    log: &mut EventLog,
) {
    let now = Instant::now();
    owed.retain(|&peer, at| {
        if *at > now {
            return true;
        }
        let addr = directory.iter().find(|d| d.0 == peer).map(|d| d.1);
        let Some(addr) = addr.filter(|_| !node.is_connected(peer)) else {
            return false;
        };
        match node.connect(addr) {
            Ok(_) => log.redials += 1,
            Err(e) => {
                log.redial_failures
                    .note(format_args!("{} to {peer}: {e}", node.id()));
                *at = Instant::now() + REDIAL_BACKOFF;
            }
        }
        *at > now
    });
}

/// The reasons a connection ends in the normal course of a soak.
const CLEAN: [&str; 4] = ["closed by us", "closed by peer", "replaced", "shutdown"];

/// Every name [`reason_name`] gives.
const REASONS: [&str; 8] = [
    "closed by us",
    "closed by peer",
    "replaced",
    "shutdown",
    "dead",
    "protocol error",
    "i/o error",
    "other",
];

/// The tally's name for `name`, as [`reason_name`] gives it, for a tally read back
/// from another process; "other" for a name it never gives.
pub fn reason_static(name: &str) -> &'static str {
    REASONS
        .iter()
        .find(|r| **r == name)
        .copied()
        .unwrap_or("other")
}

/// A short name for a disconnect reason, for the tally.
fn reason_name(reason: &DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::ClosedByUs => "closed by us",
        DisconnectReason::ClosedByPeer => "closed by peer",
        DisconnectReason::Replaced => "replaced",
        DisconnectReason::Shutdown => "shutdown",
        DisconnectReason::Dead => "dead",
        DisconnectReason::Protocol(_) => "protocol error",
        DisconnectReason::Io(_) => "i/o error",
        _ => "other",
    }
}
