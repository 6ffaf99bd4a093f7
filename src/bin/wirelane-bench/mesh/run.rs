//! One mesh run, start to finish: build the mesh, run the traffic, drain, shut
//! down, and gather the figures. Printing and judging them is left to the caller.

use std::error::Error;
use std::fmt;
use std::ops::Add;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use wirelane::{Config, Event, LaneStats, Node, PeerId};

use super::stamp::{Anomalies, Checker};
use super::traffic::{self, GossipReport, PrivateReport, Received, Refusals, Tally};
use super::Plan;
use crate::threads::{self, Named};

/// Longest wait for the mesh to be fully connected once every dial has returned.
const SETUP_DEADLINE: Duration = Duration::from_secs(5);
/// Longest wait for the senders to notice the stop flag and finish.
const STOP_DEADLINE: Duration = Duration::from_secs(2);
/// Longest wait, after the load, for every accepted private message to arrive.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);
/// Longest wait for the nodes to shut down and their receiver threads to finish.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// How often the main thread checks a condition it waits for.
const WAIT_POLL: Duration = Duration::from_millis(1);

/// One lane's figures over the whole run.
#[derive(Debug, Clone, Copy, Default)]
pub struct LaneFigures {
    /// Messages the sends accepted.
    pub sent: u64,
    /// Messages the receivers took, during the load and after.
    pub received: u64,
    /// Messages the receivers took during the load period; the rates use these.
    pub received_in_load: u64,
    /// The nodes' own counters, summed, read after shutdown.
    pub stats: LaneStats,
}

impl Add for LaneFigures {
    type Output = LaneFigures;
    fn add(self, o: LaneFigures) -> LaneFigures {
        LaneFigures {
            sent: self.sent + o.sent,
            received: self.received + o.received,
            received_in_load: self.received_in_load + o.received_in_load,
            stats: self.stats + o.stats,
        }
    }
}

/// Everything a run measured.
#[derive(Debug)]
pub struct Outcome {
    pub load: Duration,
    /// From the end of the load until every accepted private message had arrived.
    pub drain: Duration,
    pub shutdown: Duration,
    pub total: Duration,
    /// Whether every accepted private message arrived before the drain deadline.
    pub drained: bool,
    pub gossip: LaneFigures,
    pub private: LaneFigures,
    /// Gossip that `try_send` dropped because the lane was full.
    pub gossip_full: u64,
    /// Private sends that waited for room and were offered again.
    pub private_waits: u64,
    /// Private messages handed back in `Undelivered` events.
    pub undelivered: u64,
    pub anomalies: Anomalies,
    pub refusals: Refusals,
}

impl Outcome {
    /// Private messages accepted by a send but neither received nor handed back.
    pub fn lost(&self) -> u64 {
        self.private
            .sent
            .saturating_sub(self.private.received + self.undelivered)
    }

    /// Gossip accepted by `try_send` but neither received nor counted as dropped
    /// anywhere: gossip may be shed, but never silently.
    pub fn gossip_lost(&self) -> u64 {
        let g = &self.gossip;
        // The nodes' send-side drops include the refusals `try_send` returned, which
        // were never accepted; what remains was discarded at close.
        let discarded = g.stats.dropped.saturating_sub(self.gossip_full);
        g.sent
            .saturating_sub(g.received + g.stats.recv_dropped + discarded)
    }

    /// Private messages received or handed back beyond those sent (duplicates,
    /// which the anomaly counts would also show).
    fn surplus(&self) -> u64 {
        (self.private.received + self.undelivered).saturating_sub(self.private.sent)
    }

    /// Why the run failed; empty if it passed.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.drained {
            problems.push(format!(
                "only {} of {} accepted private messages arrived within {DRAIN_DEADLINE:?} of the end of the load",
                self.private.received, self.private.sent
            ));
        }
        let (lost, surplus) = (self.lost(), self.surplus());
        if lost != 0 || surplus != 0 {
            problems.push(format!(
                "private messages unaccounted for ({lost} missing, {surplus} extra): {} accepted by send, {} received, {} handed back undelivered",
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
}

/// Does the run and gathers its figures.
///
/// The run, in order: bind and connect the mesh; start one receiver per node; run
/// the senders for the load period; stop them and wait (bounded) until every private
/// message a send accepted has been received; shut every node down, which ends the
/// receivers; count what came back in `Undelivered` events and read the counters.
pub fn execute(plan: &Plan) -> Result<Outcome, Box<dyn Error>> {
    let began = Instant::now();
    let nodes = start_mesh(plan)?;
    let ids: Vec<PeerId> = nodes.iter().map(|n| n.id()).collect();
    let tallies: Vec<Arc<Tally>> = nodes.iter().map(|_| Arc::default()).collect();

    let receivers: Vec<Named<Checker>> = nodes
        .iter()
        .zip(&tallies)
        .map(|(node, tally)| {
            let (node, tally) = (node.clone(), tally.clone());
            start(&format!("bench-recv-{}", node.id().0), move || {
                traffic::receive(&node, &tally)
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
        let (node2, peers2, stop2, plan2) = (node.clone(), peers.clone(), stop.clone(), *plan);
        gossip_senders.push(start(&format!("bench-gossip-{}", id.0), move || {
            traffic::send_gossip(&node2, &peers2, &plan2, &stop2)
        }));
        let (node, stop, plan) = (node.clone(), stop.clone(), *plan);
        private_senders.push(start(&format!("bench-private-{}", id.0), move || {
            traffic::send_private(&node, &peers, &plan, &stop)
        }));
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

    Ok(Outcome {
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
        anomalies: checkers.iter().map(Checker::anomalies).sum(),
        refusals: gossip
            .into_iter()
            .map(|r| r.refusals)
            .chain(private.into_iter().map(|r| r.refusals))
            .sum(),
    })
}

/// Binds the nodes and connects every pair once: node *i* dials every node *j > i*.
///
/// Returns once every node sees all the others as peers, so no sender starts on a
/// half-built mesh.
fn start_mesh(plan: &Plan) -> Result<Vec<Arc<Node>>, Box<dyn Error>> {
    let mut nodes = Vec::with_capacity(plan.nodes);
    for i in 1..=plan.nodes as u64 {
        let id = PeerId(i);
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
