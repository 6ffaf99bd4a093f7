//! `soak`: a long mixed run with connections cut at random, checking that private
//! data survives it exactly and that the process does not grow.
//!
//! The main job (`mesh`) checks the lanes on a mesh that stays up; real networks
//! drop connections. Here `--nodes` nodes in a full mesh carry gossip and private
//! traffic between every pair while a chaos thread disconnects a random pair every
//! 100–500 ms (its schedule replays from `--seed`) and the lower id of each pair
//! redials. Every payload is numbered per (lane, sender, destination), so at the end
//! each private number a send accepted can be accounted for: received once, in
//! order, or handed back in an `Event::Undelivered` — never both, never neither (see
//! [`crate::streams`]). Threads and resident memory are sampled every second and
//! must stay within stated bounds after a warm-up (see [`verdict`]).
//!
//! The run, in order: bind the nodes; start a receiver and an event watcher per
//! node; connect every pair; start a private and a gossip sender per node and the
//! chaos thread; sample for `--secs`; stop the chaos, then the senders; reconnect
//! every pair; wait (bounded) until every accepted private message has been
//! received or handed back; shut the nodes down, join everything, and judge.

use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use wirelane::crossbeam_channel::bounded;
use wirelane::{Config, Lane, Node, NodeStats, PeerId};

use self::chaos::ChaosLog;
use self::lifecycle::{connect_all, join_all, shut_down, start, wait_until, SHUTDOWN_DEADLINE};
use self::workers::{EventLog, Inbox, Live, Oddities, Sent};
use crate::cli::{positive, Args, CliError};
use crate::procfs;
use crate::progress::Progress;
use crate::report::Output;
use crate::threads::Named;

mod chaos;
mod lifecycle;
mod verdict;
mod workers;

/// Longest wait for the first full mesh, and for its connection threads to start.
const SETUP_DEADLINE: Duration = Duration::from_secs(10);
/// Longest wait for the chaos thread and the senders to notice they should stop.
/// A private sender may be in a send that waits [`workers::SEND_POLL`].
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Longest wait, after the load, for every pair to be connected again.
const REMESH_DEADLINE: Duration = Duration::from_secs(20);
/// Longest wait for every accepted private message to be received or handed back.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

/// What a run does.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub nodes: usize,
    pub load: Duration,
    pub seed: u64,
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
    pub threads: usize,
    pub rss_kib: u64,
}

/// Everything a run produced, for [`verdict::judge`].
#[derive(Debug)]
pub struct Outcome {
    pub load: Duration,
    /// Threads with the mesh up and every thread of the run started (the chaos
    /// thread included).
    pub steady_threads: usize,
    pub samples: Vec<Sample>,
    /// Readings of `/proc` that failed.
    pub sample_errors: Oddities,
    pub chaos: ChaosLog,
    pub sent: Vec<Sent>,
    /// Whether every pair was connected again after the load, and why not.
    pub remeshed: Result<(), String>,
    /// How long after the mesh was restored (the senders having stopped) every
    /// accepted private message had been received or handed back; `None` if that
    /// did not happen by the deadline.
    pub drained: Option<Duration>,
    pub inboxes: Vec<Inbox>,
    pub events: Vec<EventLog>,
    /// Each node's counters, read after its shutdown.
    pub stats: Vec<NodeStats>,
}

/// `soak`.
pub fn run(args: &Args, out: Output) -> Result<ExitCode, Box<dyn Error>> {
    let secs = positive("secs", args.get("secs", 30)?)?;
    let nodes: usize = args.get("nodes", 4)?;
    let seed: u64 = args.get("seed", 1)?;
    args.finish(0)?;
    if nodes < 2 {
        return Err(CliError::BadValue {
            option: "nodes".to_owned(),
            value: nodes.to_string(),
            why: "a mesh needs at least 2 nodes".to_owned(),
        }
        .into());
    }
    // The run is judged on these figures: find out now, not at the end, if they
    // cannot be read.
    procfs::threads()?;
    procfs::rss_kib()?;
    let plan = Plan {
        nodes,
        load: Duration::from_secs(secs),
        seed,
    };
    let progress = Progress::start("soak", Some(secs), args.flag("quiet"));
    let outcome = execute(&plan, &progress);
    progress.finish();
    let judged = verdict::judge(&plan, &outcome?);
    out.records(
        &format!("soak: {nodes}-node full mesh, {secs} s of mixed load with random disconnects (seed {seed})"),
        &judged.records,
    );
    for note in &judged.notes {
        out.note(note);
    }
    if judged.violations.is_empty() {
        out.note("result: PASS");
        return Ok(ExitCode::SUCCESS);
    }
    out.note("result: FAIL");
    for violation in &judged.violations {
        eprintln!("wirelane-bench: FAIL: {violation}");
    }
    Ok(ExitCode::FAILURE)
}

/// Binds the nodes, runs the load, and always shuts everything down and joins it,
/// whether or not the run got through.
fn execute(plan: &Plan, progress: &Progress) -> Result<Outcome, Box<dyn Error>> {
    let mut nodes = Vec::with_capacity(plan.nodes);
    for i in 1..=plan.nodes {
        let id = PeerId(i as u64);
        let node = Node::bind(id, "127.0.0.1:0", Config::default())
            .map_err(|e| format!("{id} could not bind 127.0.0.1:0: {e}"))?;
        nodes.push(Arc::new(node));
    }
    let directory: Arc<[(PeerId, SocketAddr)]> =
        nodes.iter().map(|n| (n.id(), n.local_addr())).collect();
    let live = Arc::new(Live::default());
    live.redial.store(true, Relaxed);

    // Started before the first connection, so that they see every message and event.
    let receivers: Vec<Named<Inbox>> = nodes
        .iter()
        .map(|node| {
            let (node, live) = (node.clone(), live.clone());
            start(&format!("soak-recv-{}", node.id().0), move || {
                workers::receive(&node, &live)
            })
        })
        .collect();
    let watchers: Vec<Named<EventLog>> = nodes
        .iter()
        .map(|node| {
            let (node, live, dir) = (node.clone(), live.clone(), directory.clone());
            start(&format!("soak-events-{}", node.id().0), move || {
                workers::watch(&node, &dir, &live)
            })
        })
        .collect();

    let driven = drive(plan, &nodes, &directory, &live, progress);

    live.redial.store(false, Relaxed);
    shut_down(&nodes);
    let deadline = Instant::now() + SHUTDOWN_DEADLINE;
    let inboxes = join_all(receivers, deadline);
    let events = join_all(watchers, deadline);
    let stats = nodes.iter().map(|n| n.stats()).collect();
    let d = driven?;
    Ok(Outcome {
        load: d.load,
        steady_threads: d.steady_threads,
        samples: d.sampler.samples,
        sample_errors: d.sampler.errors,
        chaos: d.chaos,
        sent: d.sent,
        remeshed: d.remeshed,
        drained: d.drained,
        inboxes,
        events,
        stats,
    })
}

/// What [`drive`] measured.
struct Driven {
    load: Duration,
    steady_threads: usize,
    sampler: Sampler,
    chaos: ChaosLog,
    sent: Vec<Sent>,
    remeshed: Result<(), String>,
    drained: Option<Duration>,
}

/// Connects the mesh, runs the load and the chaos, and settles what was sent.
/// Every thread it starts is joined before it returns.
fn drive(
    plan: &Plan,
    nodes: &[Arc<Node>],
    directory: &[(PeerId, SocketAddr)],
    live: &Live,
    progress: &Progress,
) -> Result<Driven, Box<dyn Error>> {
    connect_all(nodes, directory, Instant::now() + SETUP_DEADLINE)?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::with_capacity(2 * nodes.len());
    for node in nodes {
        let id = node.id();
        let peers: Vec<PeerId> = directory.iter().map(|d| d.0).filter(|&p| p != id).collect();
        let (n, p, s) = (node.clone(), peers.clone(), stop.clone());
        senders.push(start(&format!("soak-private-{}", id.0), move || {
            workers::send_private(&n, &p, &s)
        }));
        let (n, p, s) = (node.clone(), peers, stop.clone());
        senders.push(start(&format!("soak-gossip-{}", id.0), move || {
            workers::send_gossip(&n, &p, &s)
        }));
    }
    let mut sampler = Sampler::default();
    sampler.take(Duration::ZERO);
    // Counted before the chaos thread starts, so that no connection is in transition
    // yet; that thread is added by hand.
    let steady_threads = sampler.samples.last().map_or(0, |s| s.threads) + 1;
    let (stop_chaos, chaos_stopped) = bounded::<()>(0);
    let chaos = {
        let (nodes, seed) = (nodes.to_vec(), plan.seed);
        start("soak-chaos", move || {
            chaos::chaos(&nodes, seed, &chaos_stopped)
        })
    };

    let began = Instant::now();
    let done = progress.counter();
    for second in 1..=plan.load.as_secs() {
        let at = began + Duration::from_secs(second);
        thread::sleep(at.saturating_duration_since(Instant::now()));
        sampler.take(began.elapsed());
        done.store(second, Relaxed);
    }
    let load = began.elapsed();
    drop(stop_chaos);
    let deadline = Instant::now() + STOP_DEADLINE;
    let chaos = join_all(vec![chaos], deadline).pop().unwrap_or_default();
    stop.store(true, Relaxed);
    let sent = join_all(senders, deadline);

    let remeshed = connect_all(nodes, directory, Instant::now() + REMESH_DEADLINE);
    let accepted: u64 = sent
        .iter()
        .filter(|s| s.lane == Lane::Private)
        .flat_map(|s| s.accepted.iter().map(|a| a.1))
        .sum();
    let drain_began = Instant::now();
    let drained = wait_until(drain_began + DRAIN_DEADLINE, || {
        live.private_received.load(Relaxed) + live.private_returned.load(Relaxed) >= accepted
    })
    .then(|| drain_began.elapsed());
    sampler.take(began.elapsed());
    Ok(Driven {
        load,
        steady_threads,
        sampler,
        chaos,
        sent,
        remeshed,
        drained,
    })
}

/// Readings of the process taken so far.
#[derive(Debug, Default)]
struct Sampler {
    samples: Vec<Sample>,
    errors: Oddities,
}

impl Sampler {
    fn take(&mut self, at: Duration) {
        match (procfs::threads(), procfs::rss_kib()) {
            (Ok(threads), Ok(rss_kib)) => self.samples.push(Sample {
                at,
                threads,
                rss_kib,
            }),
            (Err(e), _) | (_, Err(e)) => self.errors.note(format_args!(
                "reading /proc at {:.1} s: {e}",
                at.as_secs_f64()
            )),
        }
    }
}
