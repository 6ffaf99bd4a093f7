//! The traffic engine behind `mesh` and `soak`: a full mesh of nodes on loopback
//! carrying stamped gossip and private messages between every pair, with the chaos
//! of `soak` (connections cut at random, a slow consumer) switched on or off, and
//! the exact accounting of every private message ([`verdict`]).
//!
//! Receivers and event watchers start before the first connection, so that they see
//! every message and event; after the load every pair is connected again so that
//! every accepted private message can be accounted for.

pub mod chaos;
pub mod export;
pub mod verdict;
pub mod workers;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use indicatif::ProgressBar;
use wirelane::crossbeam_channel::bounded;
use wirelane::{Config, Lane, LaneStats, Node, NodeStats, PeerId};

use self::chaos::ChaosLog;
use self::workers::{EventLog, Inbox, Live, Oddities, Sent};
use crate::procfs;
use crate::threads::{join_all, start, wait_until, Named};
use crate::tls::Security;

/// Longest wait for the first full mesh, and for its connection threads to start.
const SETUP_DEADLINE: Duration = Duration::from_secs(10);
/// Longest wait for the chaos thread and the senders to notice they should stop.
/// A private sender may be in a send that waits [`workers::SEND_POLL`].
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Longest wait, after the load, for every pair to be connected again.
const REMESH_DEADLINE: Duration = Duration::from_secs(20);
/// Longest wait for every accepted private message to be accounted for.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(20);
/// Longest wait for the nodes to shut down, and for the threads that end with them.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);
/// Pause between two dials of the same pair when one failed.
const REDIAL_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub nodes: usize,
    /// Bytes in every payload, both lanes (at least a stamp).
    pub size: usize,
    pub load: Duration,
    /// Gossip messages each node offers per second, spread evenly over its peers.
    ///
    /// Paced at all so that gossip, which costs the same CPU per message as private
    /// traffic, does not starve the private senders on a small machine: a sender
    /// offering gossip flat out would spin on `try_send` and take a whole core.
    pub gossip_rate: u64,
    /// The chaos schedule's seed; `None` for a mesh that stays up.
    pub chaos: Option<u64>,
    /// Messages a second that node 1's application takes during the load; `None`
    /// for every node draining at full speed.
    pub slow_consumer: Option<u64>,
}

impl Plan {
    /// The start of the load, during which queues, buffers and the allocator fill
    /// up; memory is measured over it and judged after it.
    pub fn warmup(&self) -> Duration {
        (self.load / 5).clamp(Duration::from_secs(1), Duration::from_secs(5))
    }
}

/// One reading of the whole process, `at` after the load began.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Duration,
    pub usage: procfs::Usage,
}

#[derive(Debug)]
pub struct Outcome {
    pub load: Duration,
    /// Messages the receivers had taken by the end of the load, per lane (gossip,
    /// private): the rates use these.
    pub in_load: [u64; 2],
    /// Threads with the mesh up and every thread of the run started.
    pub steady_threads: usize,
    pub samples: Vec<Sample>,
    /// Readings of `/proc` that failed.
    pub sample_errors: Oddities,
    pub chaos: ChaosLog,
    pub sent: Vec<Sent>,
    /// Whether every pair was connected again after the load, and why not.
    pub remeshed: Result<(), String>,
    /// How long after the mesh was restored every accepted private message had been
    /// accounted for; `None` if that did not happen by the deadline.
    pub drained: Option<Duration>,
    pub shutdown: Duration,
    pub total: Duration,
    pub inboxes: Vec<Inbox>,
    pub events: Vec<EventLog>,
    /// Each node's counters, read after its shutdown, in node order.
    pub stats: Vec<NodeStats>,
}

impl Outcome {
    /// The nodes' counters of each lane (gossip, private), summed.
    pub fn lane_stats(&self) -> [LaneStats; 2] {
        let sum = |f: fn(&NodeStats) -> LaneStats| {
            self.stats
                .iter()
                .map(f)
                .fold(LaneStats::default(), |a, b| a + b)
        };
        [sum(|s| s.gossip), sum(|s| s.private)]
    }
}

/// The ids of a plan's nodes.
pub fn ids(plan: &Plan) -> Vec<PeerId> {
    (1..=plan.nodes as u64).map(PeerId).collect()
}

/// Binds the nodes (plaintext, or TLS as `security` says), runs the load, and
/// always shuts everything down and joins it, whether or not the run got through.
/// `progress` counts seconds of load.
pub fn execute(
    plan: &Plan,
    security: &Security,
    progress: &ProgressBar,
) -> anyhow::Result<Outcome> {
    let began = Instant::now();
    let mut nodes = Vec::with_capacity(plan.nodes);
    for id in ids(plan) {
        let config = security.config(Config::default(), id)?;
        let node = Node::bind(id, "127.0.0.1:0", config)
            .with_context(|| format!("{id} could not bind 127.0.0.1:0"))?;
        nodes.push(Arc::new(node));
    }
    let directory: Arc<[(PeerId, SocketAddr)]> =
        nodes.iter().map(|n| (n.id(), n.local_addr())).collect();
    let live = Arc::new(Live::default());
    live.redial.store(true, Relaxed);

    let (l, slow) = (live.clone(), plan.slow_consumer);
    let receivers = per_node(&nodes, "recv", move |i, node| {
        workers::receive(node, &l, slow.filter(|_| i == 0))
    });
    let (l, dir) = (live.clone(), directory.clone());
    let watchers = per_node(&nodes, "events", move |_, node| {
        workers::watch(node, &dir, &l)
    });

    let driven = drive(plan, &nodes, &directory, &live, progress);

    live.redial.store(false, Relaxed);
    let shutdown_began = Instant::now();
    shut_down(&nodes);
    let deadline = Instant::now() + SHUTDOWN_DEADLINE;
    let inboxes = join_all(receivers, deadline);
    let events = join_all(watchers, deadline);
    let shutdown = shutdown_began.elapsed();
    let stats = nodes.iter().map(|n| n.stats()).collect();
    Ok(Outcome {
        shutdown,
        total: began.elapsed(),
        inboxes,
        events,
        stats,
        ..driven?
    })
}

/// Connects the mesh, runs the load and the chaos, and settles what was sent:
/// everything of the [`Outcome`] but what the end of the run fills in. Every
/// thread it starts is joined before it returns.
fn drive(
    plan: &Plan,
    nodes: &[Arc<Node>],
    directory: &[(PeerId, SocketAddr)],
    live: &Live,
    progress: &ProgressBar,
) -> anyhow::Result<Outcome> {
    connect_all(nodes, directory, Instant::now() + SETUP_DEADLINE).map_err(|e| anyhow!(e))?;

    live.slow.store(true, Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let ids: Arc<[PeerId]> = directory.iter().map(|d| d.0).collect();
    let senders = [Lane::Private, Lane::Gossip].map(|lane| {
        let (ids, stop, plan) = (ids.clone(), stop.clone(), *plan);
        per_node(nodes, &lane.to_string(), move |_, node| {
            let peers: Vec<PeerId> = ids.iter().copied().filter(|&p| p != node.id()).collect();
            workers::send(node, &peers, &plan, lane, &stop)
        })
    });
    let mut sampler = Sampler::default();
    sampler.take(Duration::ZERO);
    // Counted before the chaos thread starts, so that no connection is in transition
    // yet; that thread is added by hand.
    let steady_threads =
        sampler.samples.last().map_or(0, |s| s.usage.threads) + usize::from(plan.chaos.is_some());
    let (stop_chaos, chaos_stopped) = bounded::<()>(0);
    let chaos = plan.chaos.map(|seed| {
        let nodes = nodes.to_vec();
        start("bench-chaos", move || {
            chaos::chaos(&nodes, seed, &chaos_stopped)
        })
    });

    let began = Instant::now();
    let end = began + plan.load;
    for second in 1.. {
        let at = (began + Duration::from_secs(second)).min(end);
        thread::sleep(at.saturating_duration_since(Instant::now()));
        sampler.take(began.elapsed());
        progress.set_position(second);
        if at >= end {
            break;
        }
    }
    let load = began.elapsed();
    live.slow.store(false, Relaxed);
    let in_load = [
        live.gossip_received.load(Relaxed),
        live.private_received.load(Relaxed),
    ];
    drop(stop_chaos);
    let deadline = Instant::now() + STOP_DEADLINE;
    let chaos = chaos
        .map(|c| join_all(vec![c], deadline).pop().unwrap_or_default())
        .unwrap_or_default();
    stop.store(true, Relaxed);
    let sent = join_all(senders.into_iter().flatten().collect(), deadline);

    let remeshed = connect_all(nodes, directory, Instant::now() + REMESH_DEADLINE);
    let accepted: u64 = sent
        .iter()
        .filter(|s| s.lane == Lane::Private)
        .flat_map(|s| s.accepted.iter().map(|a| a.1))
        .sum();
    let drain_began = Instant::now();
    let drained = wait_until(drain_began + DRAIN_DEADLINE, || {
        let dropped: u64 = nodes.iter().map(|n| n.stats().private.recv_dropped).sum();
        live.private_received.load(Relaxed) + live.private_returned.load(Relaxed) + dropped
            >= accepted
    })
    .then(|| drain_began.elapsed());
    sampler.take(began.elapsed());
    Ok(Outcome {
        load,
        in_load,
        steady_threads,
        samples: sampler.samples,
        sample_errors: sampler.errors,
        chaos,
        sent,
        remeshed,
        drained,
        shutdown: Duration::ZERO,
        total: Duration::ZERO,
        inboxes: Vec::new(),
        events: Vec::new(),
        stats: Vec::new(),
    })
}

/// Has the lower id of every pair dial the higher (again, after the load: a pair
/// already connected answers at once), then waits until every node has every peer
/// and each of those connections has its reader and writer running and no other
/// connection thread is left over.
fn connect_all(
    nodes: &[Arc<Node>],
    directory: &[(PeerId, SocketAddr)],
    deadline: Instant,
) -> Result<(), String> {
    for (i, node) in nodes.iter().enumerate() {
        for &(peer, addr) in &directory[i + 1..] {
            loop {
                match node.connect(addr) {
                    Ok(p) if p == peer => break,
                    Ok(p) => return Err(format!("{} dialled {peer} but reached {p}", node.id())),
                    Err(e) if Instant::now() >= deadline => {
                        return Err(format!("{} could not connect to {peer}: {e}", node.id()))
                    }
                    // A redial by the node's watcher may be racing this one.
                    Err(_) => thread::sleep(REDIAL_PAUSE),
                }
            }
        }
    }
    let others = nodes.len() - 1;
    let settled = || -> bool {
        let Ok(names) = procfs::thread_names() else {
            return false;
        };
        nodes.iter().all(|n| {
            n.peers().len() == others && procfs::conn_threads(&names, n.id()) == (others, others)
        })
    };
    if wait_until(deadline, settled) {
        return Ok(());
    }
    let seen: Vec<String> = nodes
        .iter()
        .map(|n| format!("{} has {}", n.id(), n.peers().len()))
        .collect();
    Err(format!(
        "the mesh did not settle with every pair connected by its deadline: {}",
        seen.join(", ")
    ))
}

/// Shuts every node down at once (each shutdown lingers for its peers, so one after
/// another would add up).
fn shut_down(nodes: &[Arc<Node>]) {
    let shutdowns = per_node(nodes, "shutdown", |_, node| node.shutdown());
    join_all(shutdowns, Instant::now() + SHUTDOWN_DEADLINE);
}

/// Starts a thread `bench-{what}-{id}` per node that runs `f` with the node's index
/// and the node.
fn per_node<T, F>(nodes: &[Arc<Node>], what: &str, f: F) -> Vec<Named<T>>
where
    T: Send + 'static,
    F: Fn(usize, &Node) -> T + Clone + Send + 'static,
{
    let threads = nodes.iter().enumerate().map(|(i, node)| {
        let (node, f) = (node.clone(), f.clone());
        start(format!("bench-{what}-{}", node.id().0), move || f(i, &node))
    });
    threads.collect()
}

#[derive(Debug, Default)]
struct Sampler {
    samples: Vec<Sample>,
    errors: Oddities,
}

impl Sampler {
    fn take(&mut self, at: Duration) {
        match procfs::usage() {
            Ok(usage) => self.samples.push(Sample { at, usage }),
            Err(e) => self.errors.note(format_args!(
                "reading /proc at {:.1} s: {e}",
                at.as_secs_f64()
            )),
        }
    }
}
