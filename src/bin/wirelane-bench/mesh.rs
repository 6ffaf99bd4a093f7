//! The main job: a short mixed run over a full mesh of nodes on loopback.
//!
//! Why this job: it is the smallest run that exercises what wirelane promises under
//! load. Every pair of nodes carries both lanes in both directions at once; gossip
//! is offered faster than the machine can carry it, so it is shed, while private
//! messages must all arrive, once each and in order, or come back in an
//! [`Event::Undelivered`]. It also gives rough throughput figures per lane, and it is
//! short enough (about 5 s) to run on every change.
//!
//! The run, in order:
//!
//! 1. bind every node to `127.0.0.1:0` and have node *i* dial every node *j > i*,
//!    so each pair has exactly one connection;
//! 2. start one receiver thread per node, draining [`Node::incoming`] and checking
//!    every private message's stamp as it arrives;
//! 3. for the load period, one gossip sender and one private sender per node, each
//!    looping over the node's peers;
//! 4. stop the senders and wait (bounded) until every private message that a send
//!    accepted has been received;
//! 5. shut every node down (which ends its receiver thread), count the private
//!    messages handed back in `Undelivered` events, and read the nodes' counters.
//!
//! The run fails (exit status 1) if a private message is unaccounted for, arrives
//! twice or out of order, or if a send is refused because a connection went away.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use wirelane::crossbeam_channel::RecvTimeoutError;
use wirelane::{
    Bytes, Config, Event, Lane, LaneStats, Message, Node, PeerId, SendTimeoutError, TrySendError,
};

use crate::table::{Align, Table};
use crate::threads::{self, Named};

/// What a run does. A struct rather than loose constants so that later subcommands
/// (scale, soak) can run the same job with other figures.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Nodes in the mesh.
    nodes: usize,
    /// Bytes in every payload, both lanes.
    payload_len: usize,
    /// How long the senders run.
    load: Duration,
    /// Gossip sender threads per node, each sending to every peer.
    gossip_senders: usize,
    /// Private sender threads per node, each sending to every peer.
    private_senders: usize,
    /// Gossip messages each gossip sender offers each peer per second. Paced so that
    /// gossip, which costs the same CPU per message as private traffic, does not
    /// starve the private senders on a small machine: a sender that could offer
    /// gossip flat out would spin on `try_send` and take a whole core.
    gossip_rate_per_peer: u64,
}

impl Plan {
    /// The main job. One sender thread of each kind per node keeps a 2-core machine
    /// responsive: 4 nodes already run 24 connection threads of their own.
    const MAIN: Plan = Plan {
        nodes: 4,
        payload_len: 64,
        load: Duration::from_secs(5),
        gossip_senders: 1,
        private_senders: 1,
        gossip_rate_per_peer: 20_000,
    };
}

// Every private payload must have room for its stamp.
const _: () = assert!(Plan::MAIN.payload_len >= Stamp::LEN);

/// Longest wait for the mesh to be fully connected.
const SETUP_DEADLINE: Duration = Duration::from_secs(10);
/// Longest wait, after the load, for every accepted private message to arrive.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// Longest wait for the senders to notice the stop flag and finish.
const STOP_DEADLINE: Duration = Duration::from_secs(5);
/// Longest wait for the nodes to shut down and their receiver threads to finish.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// How long one private send may wait for room before the sender checks whether it
/// should stop (and, if not, offers the same message again).
const SEND_POLL: Duration = Duration::from_millis(100);
/// How long a receiver waits for a message before checking whether its node's
/// inbound queue has closed.
const RECV_POLL: Duration = Duration::from_millis(50);
/// How often the main thread checks a condition it waits for.
const WAIT_POLL: Duration = Duration::from_millis(1);
/// Gossip messages a sender offers each peer between two looks at the clock: enough
/// to keep sleeps well above timer granularity at the planned rate.
const GOSSIP_BURST: u64 = 32;
/// A gossip sender this far behind its schedule (the machine was busy) starts a new
/// schedule instead of catching up in one long burst.
const GOSSIP_MAX_LAG: Duration = Duration::from_millis(50);
/// The byte every gossip payload is filled with; gossip content is not checked.
const GOSSIP_FILL: u8 = 0x67;

/// Runs the main job, prints its report, and returns the exit status: success only
/// if every private message was accounted for, once and in order.
pub fn run() -> ExitCode {
    let plan = Plan::MAIN;
    match execute(&plan) {
        Ok(report) => {
            print!("{report}");
            let problems = report.problems();
            if problems.is_empty() {
                println!("result: PASS");
                ExitCode::SUCCESS
            } else {
                println!("result: FAIL");
                for problem in &problems {
                    eprintln!("wirelane-bench: FAIL: {problem}");
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("wirelane-bench: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Gives up on the run when one of its threads cannot be joined: it is stuck (a
/// hang is what this bench exists to catch) or it panicked. The process exits at
/// once, because anything else would wait on that thread: the nodes it holds, when
/// dropped, would wait for their own shutdown to finish.
fn abandon(what: impl fmt::Display) -> ! {
    eprintln!("wirelane-bench: FAIL: {what}; exiting without waiting for it");
    std::process::exit(1)
}

/// Starts a named thread, or gives up on the run if the system cannot make one: some
/// threads of the run are already going, and a run with a thread missing would
/// measure nothing useful.
fn start<T, F>(name: &str, f: F) -> Named<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match threads::spawn(name.to_owned(), f) {
        Ok(thread) => thread,
        Err(e) => abandon(format_args!("could not start thread `{name}`: {e}")),
    }
}

/// Joins every thread by the deadline, in order, or gives up on the run.
fn join_all<T>(threads: Vec<Named<T>>, deadline: Instant) -> Vec<T> {
    threads
        .into_iter()
        .map(|t| t.join_by(deadline).unwrap_or_else(|e| abandon(e)))
        .collect()
}

/// Polls `condition` until it holds or the deadline passes; returns whether it held.
fn wait_until(deadline: Instant, mut condition: impl FnMut() -> bool) -> bool {
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(WAIT_POLL.min(deadline - now));
    }
}

/// Does the run and gathers its figures; printing and judging are left to the
/// caller.
fn execute(plan: &Plan) -> Result<Report, Box<dyn Error>> {
    let began = Instant::now();
    let nodes = start_mesh(plan)?;
    let ids: Vec<PeerId> = nodes.iter().map(|n| n.id()).collect();
    let tallies: Vec<Arc<Tally>> = nodes.iter().map(|_| Arc::default()).collect();

    // Receivers run until their node shuts down, so that they take every message
    // the node delivers, including any that arrive after the load.
    let receivers: Vec<Named<Checker>> = nodes
        .iter()
        .zip(&tallies)
        .map(|(node, tally)| {
            let (node, tally) = (node.clone(), tally.clone());
            start(&format!("bench-recv-{}", node.id().0), move || {
                receive(&node, &tally)
            })
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let load_began = Instant::now();
    let mut gossip_senders = Vec::new();
    let mut private_senders = Vec::new();
    for node in &nodes {
        let id = node.id();
        let peers: Vec<PeerId> = ids.iter().copied().filter(|&p| p != id).collect();
        for thread in 0..plan.gossip_senders {
            let (node, peers, stop, plan) = (node.clone(), peers.clone(), stop.clone(), *plan);
            gossip_senders.push(start(
                &format!("bench-gossip-{}.{thread}", id.0),
                move || send_gossip(&node, &peers, &plan, &stop),
            ));
        }
        for thread in 0..plan.private_senders {
            let (node, peers, stop, plan) = (node.clone(), peers.clone(), stop.clone(), *plan);
            let thread = u32::try_from(thread).expect("a handful of sender threads fits in u32");
            private_senders.push(start(
                &format!("bench-private-{}.{thread}", id.0),
                move || send_private(&node, thread, &peers, &plan, &stop),
            ));
        }
    }

    thread::sleep((load_began + plan.load).saturating_duration_since(Instant::now()));
    stop.store(true, Relaxed);
    let load = load_began.elapsed();
    let in_load = Received::sum(&tallies);

    let deadline = Instant::now() + STOP_DEADLINE;
    let gossip: Vec<GossipReport> = join_all(gossip_senders, deadline);
    let private: Vec<PrivateReport> = join_all(private_senders, deadline);
    let private_accepted: u64 = private.iter().map(|r| r.accepted).sum();

    // Every private message a send accepted is now on a lane, on the wire or in an
    // inbound queue; the receivers are still draining.
    let drain_began = Instant::now();
    let drained = wait_until(drain_began + DRAIN_DEADLINE, || {
        Received::sum(&tallies).private >= private_accepted
    });
    let drain = drain_began.elapsed();

    let (checkers, shutdown) = shut_down(&nodes, receivers);

    // Shut down, the nodes hold every event they will ever emit.
    let undelivered: u64 = nodes.iter().map(|n| count_undelivered(n)).sum();
    let (mut gossip_stats, mut private_stats) = (LaneStats::default(), LaneStats::default());
    for node in &nodes {
        let stats = node.stats();
        gossip_stats += stats.gossip;
        private_stats += stats.private;
    }
    let received = Received::sum(&tallies);

    Ok(Report {
        plan: *plan,
        load,
        drain,
        shutdown,
        total: began.elapsed(),
        drained,
        gossip: LaneFigures {
            sent: gossip.iter().map(|r| r.accepted).sum(),
            received: received.gossip,
            received_in_load: in_load.gossip,
            stats: gossip_stats,
        },
        private: LaneFigures {
            sent: private_accepted,
            received: received.private,
            received_in_load: in_load.private,
            stats: private_stats,
        },
        gossip_full: gossip.iter().map(|r| r.full).sum(),
        private_waits: private.iter().map(|r| r.timeouts).sum(),
        undelivered,
        anomalies: checkers.iter().map(|c| c.anomalies).sum(),
        refusals: gossip
            .into_iter()
            .map(|r| r.refusals)
            .chain(private.into_iter().map(|r| r.refusals))
            .sum(),
    })
}

/// Shuts every node down at once (each shutdown lingers for its peers, so one after
/// another would add up) and joins the receivers, which end when their node's
/// inbound queue closes. Returns the receivers' checkers and how long it all took.
fn shut_down(nodes: &[Arc<Node>], receivers: Vec<Named<Checker>>) -> (Vec<Checker>, Duration) {
    let began = Instant::now();
    let shutdowns: Vec<Named<()>> = nodes
        .iter()
        .map(|node| {
            let node = node.clone();
            start(&format!("bench-shutdown-{}", node.id().0), move || {
                node.shutdown();
            })
        })
        .collect();
    let deadline = began + SHUTDOWN_DEADLINE;
    join_all(shutdowns, deadline);
    let checkers = join_all(receivers, deadline);
    (checkers, began.elapsed())
}

/// Binds the nodes and connects every pair once: node *i* dials every node *j > i*.
///
/// Returns once every node sees all the others as peers, so no sender starts on a
/// half-built mesh.
fn start_mesh(plan: &Plan) -> Result<Vec<Arc<Node>>, Box<dyn Error>> {
    let mut nodes = Vec::with_capacity(plan.nodes);
    for i in 1..=plan.nodes {
        let id = PeerId(u64::try_from(i).expect("a node count fits in u64"));
        let node = Node::bind(id, "127.0.0.1:0", Config::default())
            .map_err(|e| format!("{id} could not bind 127.0.0.1:0: {e}"))?;
        nodes.push(Arc::new(node));
    }
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            let peer = a
                .connect(b.local_addr())
                .map_err(|e| format!("{} could not connect to {}: {e}", a.id(), b.id()))?;
            if peer != b.id() {
                return Err(format!("{} dialled {} but reached {peer}", a.id(), b.id()).into());
            }
        }
    }
    let complete = wait_until(Instant::now() + SETUP_DEADLINE, || {
        nodes.iter().all(|n| n.peers().len() == plan.nodes - 1)
    });
    if !complete {
        let seen: Vec<String> = nodes
            .iter()
            .map(|n| format!("{} has {}", n.id(), n.peers().len()))
            .collect();
        return Err(format!(
            "the mesh was not complete within {SETUP_DEADLINE:?}: {}",
            seen.join(", ")
        )
        .into());
    }
    Ok(nodes)
}

/// Messages one node's receiver has taken so far, by lane. Written by the receiver
/// only; read by the main thread while it waits for the private lane to drain.
#[derive(Debug, Default)]
struct Tally {
    gossip: AtomicU64,
    private: AtomicU64,
}

/// A snapshot of received counts, summed over nodes.
#[derive(Debug, Clone, Copy, Default)]
struct Received {
    gossip: u64,
    private: u64,
}

impl Received {
    fn sum(tallies: &[Arc<Tally>]) -> Received {
        tallies.iter().fold(Received::default(), |acc, t| Received {
            gossip: acc.gossip + t.gossip.load(Relaxed),
            private: acc.private + t.private.load(Relaxed),
        })
    }
}

/// A receiver thread: takes every message the node delivers until the node has shut
/// down and its inbound queue is empty, counting each and checking private ones.
fn receive(node: &Node, tally: &Tally) -> Checker {
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

/// The header of every private payload: who sent it, from which sender thread, to
/// whom, and its place in that stream. The rest of the payload is filler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    src: PeerId,
    thread: u32,
    dst: PeerId,
    /// Counts from 0 per (`src`, `thread`, `dst`), so that each receiver sees every
    /// stream addressed to it as 0, 1, 2, … with no gap.
    seq: u64,
}

impl Stamp {
    /// Marks a payload as one of this bench's stamps.
    const MAGIC: [u8; 4] = *b"wlb1";
    /// Bytes a stamp takes at the start of a payload.
    const LEN: usize = 32;

    /// A payload of `len` bytes (at least [`Stamp::LEN`]) that starts with this stamp.
    fn encode(&self, len: usize) -> Bytes {
        let mut p = vec![0u8; len.max(Stamp::LEN)];
        p[0..4].copy_from_slice(&Stamp::MAGIC);
        p[4..8].copy_from_slice(&self.thread.to_le_bytes());
        p[8..16].copy_from_slice(&self.src.0.to_le_bytes());
        p[16..24].copy_from_slice(&self.dst.0.to_le_bytes());
        p[24..32].copy_from_slice(&self.seq.to_le_bytes());
        Bytes::from(p)
    }

    /// Reads the stamp back, or `None` if the payload does not start with one.
    fn decode(p: &[u8]) -> Option<Stamp> {
        if p.len() < Stamp::LEN || p[0..4] != Stamp::MAGIC {
            return None;
        }
        let u64_at =
            |at: usize| u64::from_le_bytes(p[at..at + 8].try_into().expect("an 8-byte slice"));
        Some(Stamp {
            thread: u32::from_le_bytes(p[4..8].try_into().expect("a 4-byte slice")),
            src: PeerId(u64_at(8)),
            dst: PeerId(u64_at(16)),
            seq: u64_at(24),
        })
    }
}

/// Private messages that broke the lane's promise, as seen by the receivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Anomalies {
    /// A sequence number lower than expected: a duplicate, or a message that a later
    /// one overtook.
    behind: u64,
    /// A sequence number higher than expected: messages before it are missing (lost,
    /// or overtaken).
    ahead: u64,
    /// No stamp, or a stamp naming another sender or another receiver.
    malformed: u64,
}

impl Anomalies {
    fn total(&self) -> u64 {
        self.behind + self.ahead + self.malformed
    }
}

impl std::iter::Sum for Anomalies {
    fn sum<I: Iterator<Item = Anomalies>>(iter: I) -> Anomalies {
        iter.fold(Anomalies::default(), |a, b| Anomalies {
            behind: a.behind + b.behind,
            ahead: a.ahead + b.ahead,
            malformed: a.malformed + b.malformed,
        })
    }
}

/// Checks the private messages one node receives: each stream (sending node, sender
/// thread) addressed to it must count 0, 1, 2, … — in order, exactly once.
#[derive(Debug)]
struct Checker {
    me: PeerId,
    /// The sequence number each stream should deliver next.
    next: HashMap<(PeerId, u32), u64>,
    anomalies: Anomalies,
}

impl Checker {
    fn new(me: PeerId) -> Checker {
        Checker {
            me,
            next: HashMap::new(),
            anomalies: Anomalies::default(),
        }
    }

    /// Checks one received message; gossip is not checked.
    fn observe(&mut self, msg: &Message) {
        if msg.lane != Lane::Private {
            return;
        }
        let stamp = match Stamp::decode(&msg.payload) {
            Some(s) if s.src == msg.from && s.dst == self.me => s,
            _ => {
                self.anomalies.malformed += 1;
                return;
            }
        };
        let next = self.next.entry((stamp.src, stamp.thread)).or_insert(0);
        match stamp.seq.cmp(next) {
            std::cmp::Ordering::Equal => *next += 1,
            std::cmp::Ordering::Less => self.anomalies.behind += 1,
            std::cmp::Ordering::Greater => {
                self.anomalies.ahead += 1;
                *next = stamp.seq + 1;
            }
        }
    }
}

/// Sends refused for a reason other than a full lane or a timeout: the peer was not
/// connected, or its connection closed. Neither should happen during the load.
#[derive(Debug, Default)]
struct Refusals {
    count: u64,
    first: Option<String>,
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
struct GossipReport {
    /// Messages `try_send` queued.
    accepted: u64,
    /// Messages `try_send` dropped because the lane was full.
    full: u64,
    refusals: Refusals,
}

/// A gossip sender thread: offers every peer `gossip_rate_per_peer` messages a second,
/// in bursts, until told to stop. Drops on a full lane are expected and only counted.
fn send_gossip(node: &Node, peers: &[PeerId], plan: &Plan, stop: &AtomicBool) -> GossipReport {
    // Gossip content is not checked, so every message shares one buffer.
    let payload = Bytes::from(vec![GOSSIP_FILL; plan.payload_len]);
    let burst_every =
        Duration::from_secs_f64(GOSSIP_BURST as f64 / plan.gossip_rate_per_peer as f64);
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
struct PrivateReport {
    /// Messages a send accepted (queued on a lane).
    accepted: u64,
    /// Times a send waited [`SEND_POLL`] for room without getting it (the message
    /// was then offered again).
    timeouts: u64,
    refusals: Refusals,
}

/// A private sender thread: sends stamped messages to each peer in turn, as fast as
/// the lanes take them, until told to stop.
///
/// Each send waits at most [`SEND_POLL`] so that the thread notices the stop flag; a
/// send that times out hands its message back and the same message is offered again,
/// so every stream stays gapless. A peer that refuses a send for any other reason is
/// dropped from the rotation (and the refusal reported): its connection is gone.
fn send_private(
    node: &Node,
    thread: u32,
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
                thread,
                dst: peer,
                seq: next[k],
            };
            let mut payload = stamp.encode(plan.payload_len);
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

/// Counts the private messages a shut-down node handed back in `Undelivered` events.
/// The other events are not needed by this job.
fn count_undelivered(node: &Node) -> u64 {
    node.events()
        .try_iter()
        .map(|event| match event {
            Event::Undelivered { messages, .. } => messages.len() as u64,
            _ => 0,
        })
        .sum()
}

/// One lane's figures over the whole run.
#[derive(Debug, Clone, Copy)]
struct LaneFigures {
    /// Messages the sends accepted.
    sent: u64,
    /// Messages the receivers took, during the load and after.
    received: u64,
    /// Messages the receivers took during the load period; the rates use these.
    received_in_load: u64,
    /// The nodes' own counters, summed, read after shutdown.
    stats: LaneStats,
}

/// Everything a run measured.
#[derive(Debug)]
struct Report {
    plan: Plan,
    load: Duration,
    /// From the end of the load until every accepted private message had arrived.
    drain: Duration,
    shutdown: Duration,
    total: Duration,
    /// Whether every accepted private message arrived before the drain deadline.
    drained: bool,
    gossip: LaneFigures,
    private: LaneFigures,
    /// Gossip that `try_send` dropped because the lane was full.
    gossip_full: u64,
    /// Private sends that waited [`SEND_POLL`] for room and were offered again.
    private_waits: u64,
    /// Private messages handed back in `Undelivered` events.
    undelivered: u64,
    anomalies: Anomalies,
    refusals: Refusals,
}

impl Report {
    /// Private messages neither received nor handed back; negative if more arrived
    /// than were sent (which the anomaly counts would then explain).
    fn lost(&self) -> i128 {
        i128::from(self.private.sent)
            - i128::from(self.private.received)
            - i128::from(self.undelivered)
    }

    /// Why the run failed; empty if it passed.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.drained {
            problems.push(format!(
                "only {} of {} accepted private messages arrived within {DRAIN_DEADLINE:?} of the end of the load",
                self.private.received, self.private.sent
            ));
        }
        let lost = self.lost();
        if lost != 0 {
            problems.push(format!(
                "{lost} private message(s) unaccounted for: {} accepted by send, {} received, {} handed back undelivered",
                self.private.sent, self.private.received, self.undelivered
            ));
        }
        let a = &self.anomalies;
        if a.total() != 0 {
            problems.push(format!(
                "{} private message(s) out of order or duplicated ({} behind their stream, {} ahead of it, {} malformed)",
                a.total(),
                a.behind,
                a.ahead,
                a.malformed
            ));
        }
        if self.refusals.count != 0 {
            problems.push(format!(
                "{} send(s) refused because a peer was not connected (first: {})",
                self.refusals.count,
                self.refusals.first.as_deref().unwrap_or("?")
            ));
        }
        problems
    }

    /// A row of the lane table. Rates use what arrived during the load period.
    fn lane_row(&self, name: &str, lane: &LaneFigures) -> Vec<String> {
        let secs = self.load.as_secs_f64();
        let per_sec = lane.received_in_load as f64 / secs;
        let mb_per_sec = per_sec * self.plan.payload_len as f64 / 1e6;
        vec![
            name.to_owned(),
            lane.sent.to_string(),
            lane.received.to_string(),
            format!("{per_sec:.0}"),
            format!("{mb_per_sec:.2}"),
            lane.stats.dropped.to_string(),
            lane.stats.recv_dropped.to_string(),
        ]
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wirelane-bench: {}-node full mesh on loopback, {}-byte payloads, {:.1} s",
            self.plan.nodes,
            self.plan.payload_len,
            self.load.as_secs_f64()
        )?;
        let mut table = Table::new(&[
            ("lane", Align::Left),
            ("sent", Align::Right),
            ("received", Align::Right),
            ("msgs/s", Align::Right),
            ("MB/s", Align::Right),
            ("dropped(send)", Align::Right),
            ("dropped(recv)", Align::Right),
        ]);
        table.row(self.lane_row("gossip", &self.gossip));
        table.row(self.lane_row("private", &self.private));
        write!(f, "{table}")?;
        writeln!(
            f,
            "lost private messages: {}   reordered/duplicated: {}",
            self.lost(),
            self.anomalies.total()
        )?;
        writeln!(
            f,
            "private: {} handed back undelivered, {} sends waited over {} ms for room; gossip: {} refused as full",
            self.undelivered,
            self.private_waits,
            SEND_POLL.as_millis(),
            self.gossip_full
        )?;
        // The nodes' own counters should agree with what the receivers took.
        for (name, lane) in [("gossip", &self.gossip), ("private", &self.private)] {
            if lane.stats.received != lane.received {
                writeln!(
                    f,
                    "note: the nodes counted {} {name} messages received, the receivers took {}",
                    lane.stats.received, lane.received
                )?;
            }
        }
        writeln!(
            f,
            "times: load {:.2} s, private drain {:.0} ms, shutdown {:.0} ms, total {:.2} s",
            self.load.as_secs_f64(),
            self.drain.as_secs_f64() * 1e3,
            self.shutdown.as_secs_f64() * 1e3,
            self.total.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private(from: u64, to: u64, thread: u32, seq: u64) -> Message {
        let stamp = Stamp {
            src: PeerId(from),
            thread,
            dst: PeerId(to),
            seq,
        };
        Message {
            from: PeerId(from),
            lane: Lane::Private,
            payload: stamp.encode(64),
        }
    }

    #[test]
    fn a_stamp_reads_back_as_written() {
        let stamp = Stamp {
            src: PeerId(3),
            thread: 7,
            dst: PeerId(u64::MAX),
            seq: 1 << 40,
        };
        let payload = stamp.encode(64);
        assert_eq!(payload.len(), 64);
        assert_eq!(Stamp::decode(&payload), Some(stamp));
        assert_eq!(Stamp::decode(&payload[..Stamp::LEN - 1]), None);
        assert_eq!(Stamp::decode(&[0u8; 64]), None);
    }

    #[test]
    fn the_checker_accepts_interleaved_streams_in_order() {
        let mut checker = Checker::new(PeerId(1));
        for seq in 0..3 {
            checker.observe(&private(2, 1, 0, seq));
            checker.observe(&private(3, 1, 0, seq));
            checker.observe(&private(2, 1, 1, seq));
        }
        assert_eq!(checker.anomalies, Anomalies::default());
    }

    #[test]
    fn the_checker_flags_duplicates_gaps_and_strangers() {
        let mut checker = Checker::new(PeerId(1));
        for seq in [0, 1, 1, 3, 2] {
            checker.observe(&private(2, 1, 0, seq));
        }
        // A message for another node, and one whose stamp names another sender.
        checker.observe(&private(2, 4, 0, 0));
        let mut forged = private(3, 1, 0, 0);
        forged.from = PeerId(2);
        checker.observe(&forged);
        let a = checker.anomalies;
        assert_eq!((a.behind, a.ahead, a.malformed), (2, 1, 2));
        assert_eq!(a.total(), 5);
    }

    #[test]
    fn gossip_is_not_checked() {
        let mut checker = Checker::new(PeerId(1));
        checker.observe(&Message {
            from: PeerId(2),
            lane: Lane::Gossip,
            payload: Bytes::from_static(b"anything"),
        });
        assert_eq!(checker.anomalies, Anomalies::default());
    }
}
