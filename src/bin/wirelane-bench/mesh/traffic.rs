//! The threads that make a mesh run's traffic: one receiver per node, and per node
//! one gossip sender and one private sender, each looping over the node's peers.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use wirelane::crossbeam_channel::RecvTimeoutError;
use wirelane::{Bytes, Lane, Node, PeerId, SendTimeoutError, TrySendError};

use super::stamp::{Checker, Stamp};
use super::Plan;

/// How long one private send may wait for room before the sender checks whether it
/// should stop (and, if not, offers the same message again).
pub const SEND_POLL: Duration = Duration::from_millis(100);
/// How long a receiver waits for a message before checking whether its node's
/// inbound queue has closed.
const RECV_POLL: Duration = Duration::from_millis(50);
/// Gossip messages a sender offers each peer between two looks at the clock: enough
/// to keep sleeps well above timer granularity at the planned rate.
const GOSSIP_BURST: u64 = 32;
/// A gossip sender this far behind its schedule (the machine was busy) starts a new
/// schedule instead of catching up in one long burst.
const GOSSIP_MAX_LAG: Duration = Duration::from_millis(50);
/// The byte every gossip payload is filled with; gossip content is not checked.
const GOSSIP_FILL: u8 = 0x67;

/// Messages one node's receiver has taken so far, by lane. Written by the receiver
/// only; read by the main thread while it waits for the private lane to drain.
#[derive(Debug, Default)]
pub struct Tally {
    gossip: AtomicU64,
    private: AtomicU64,
}

/// A snapshot of received counts, summed over nodes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Received {
    pub gossip: u64,
    pub private: u64,
}

impl Received {
    pub fn sum(tallies: &[Arc<Tally>]) -> Received {
        tallies.iter().fold(Received::default(), |acc, t| Received {
            gossip: acc.gossip + t.gossip.load(Relaxed),
            private: acc.private + t.private.load(Relaxed),
        })
    }
}

/// A receiver thread: takes every message the node delivers until the node has shut
/// down and its inbound queue is empty, counting each and checking private ones.
///
/// It runs until shutdown rather than until the load stops, so that it also takes
/// the messages that arrive after the load, which the drain wait is counting on.
pub fn receive(node: &Node, tally: &Tally) -> Checker {
    let mut checker = Checker::new(node.id());
    loop {
        match node.incoming().recv_timeout(RECV_POLL) {
            Ok(msg) => {
                match msg.lane {
                    Lane::Gossip => tally.gossip.fetch_add(1, Relaxed),
                    Lane::Private => tally.private.fetch_add(1, Relaxed),
                };
                checker.observe(&msg);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return checker,
        }
    }
}

/// Sends refused for a reason other than a full lane or a timeout: the peer was not
/// connected, or its connection closed. Neither should happen during the load.
#[derive(Debug, Default)]
pub struct Refusals {
    pub count: u64,
    pub first: Option<String>,
}

impl Refusals {
    fn note(&mut self, from: PeerId, to: PeerId, lane: Lane, why: impl fmt::Display) {
        self.count += 1;
        self.first
            .get_or_insert_with(|| format!("{lane} from {from} to {to}: {why}"));
    }
}

impl std::iter::Sum for Refusals {
    fn sum<I: Iterator<Item = Refusals>>(iter: I) -> Refusals {
        iter.fold(Refusals::default(), |a, b| Refusals {
            count: a.count + b.count,
            first: a.first.or(b.first),
        })
    }
}

/// What one gossip sender did.
#[derive(Debug, Default)]
pub struct GossipReport {
    /// Messages `try_send` queued.
    pub accepted: u64,
    /// Messages `try_send` dropped because the lane was full.
    pub full: u64,
    pub refusals: Refusals,
}

/// A gossip sender thread: offers the node's peers `plan.gossip_rate` messages a
/// second between them, in bursts, until told to stop. Drops on a full lane are
/// expected and only counted.
pub fn send_gossip(node: &Node, peers: &[PeerId], plan: &Plan, stop: &AtomicBool) -> GossipReport {
    // Gossip content is not checked, so every message shares one buffer.
    let payload = Bytes::from(vec![GOSSIP_FILL; plan.size]);
    // One burst offers GOSSIP_BURST messages to every peer.
    let burst_every = Duration::from_secs_f64(
        (GOSSIP_BURST * peers.len() as u64) as f64 / plan.gossip_rate.max(1) as f64,
    );
    let mut report = GossipReport::default();
    let mut due = Instant::now();
    while !stop.load(Relaxed) {
        for _ in 0..GOSSIP_BURST {
            for &peer in peers {
                match node.try_send(peer, payload.clone()) {
                    Ok(()) => report.accepted += 1,
                    Err(TrySendError::Full(_)) => report.full += 1,
                    Err(e) => report.refusals.note(node.id(), peer, Lane::Gossip, e),
                }
            }
        }
        due += burst_every;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        } else if now - due > GOSSIP_MAX_LAG {
            due = now;
        }
    }
    report
}

/// What one private sender did.
#[derive(Debug, Default)]
pub struct PrivateReport {
    /// Messages a send accepted (queued on a lane).
    pub accepted: u64,
    /// Times a send waited [`SEND_POLL`] for room without getting it (the message
    /// was then offered again).
    pub timeouts: u64,
    pub refusals: Refusals,
}

/// A private sender thread: sends stamped messages to each peer in turn, as fast as
/// the lanes take them, until told to stop.
///
/// Each send waits at most [`SEND_POLL`] so that the thread notices the stop flag; a
/// send that times out hands its message back and the same message is offered again,
/// so every stream stays gapless. A peer that refuses a send for any other reason is
/// dropped from the rotation (and the refusal reported): its connection is gone.
pub fn send_private(
    node: &Node,
    peers: &[PeerId],
    plan: &Plan,
    stop: &AtomicBool,
) -> PrivateReport {
    let mut report = PrivateReport::default();
    // The next sequence number per peer, which is also the count accepted so far.
    let mut next = vec![0u64; peers.len()];
    let mut gone = vec![false; peers.len()];
    'run: while !stop.load(Relaxed) && gone.contains(&false) {
        for (k, &peer) in peers.iter().enumerate() {
            if gone[k] {
                continue;
            }
            let stamp = Stamp {
                src: node.id(),
                dst: peer,
                seq: next[k],
            };
            let mut payload = stamp.encode(plan.size);
            loop {
                match node.send_timeout(peer, payload, SEND_POLL) {
                    Ok(()) => {
                        next[k] += 1;
                        report.accepted += 1;
                        break;
                    }
                    Err(SendTimeoutError::Timeout(back)) => {
                        report.timeouts += 1;
                        if stop.load(Relaxed) {
                            break 'run;
                        }
                        payload = back;
                    }
                    Err(e) => {
                        report.refusals.note(node.id(), peer, Lane::Private, e);
                        gone[k] = true;
                        break;
                    }
                }
            }
        }
    }
    report
}
