//! `deadlock`: the Fabric FAB-10469 scenario, run against a reproduction of the bug
//! and against wirelane.
//!
//! Two peers on loopback; on each, [`THREADS`] threads send `--messages` stamped
//! private messages apiece to the other through buffers of one message, while one
//! thread drains and checks each sending thread's stream ([`crate::stamp`]).
//! `locked` ([`crate::locked`]) waits for room holding the lock its own reader and
//! writer need, and both peers freeze; wirelane waits holding no lock. A watchdog
//! declares a deadlock after `--watchdog` seconds without a delivery, and either way
//! ends the run through the implementation's way out so that every thread can be
//! joined; a thread that cannot be joined in time ends the process with status 1.
//!
//! `--scenario storm` runs the delivery-path storm instead ([`crate::storm`]):
//! answering on the receive loop with `send`, which is expected to deadlock, and
//! with `respond`, which must not.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use wirelane::{Bytes, Config, Lane, Node, PeerId};

use crate::locked;
use crate::report::{progress, Output, Record};
use crate::stamp::{Stamp, Track};
use crate::storm::{self, Variant};
use crate::threads::{abandon, join_all, start, JoinError};

/// The capacity of every buffer, in both implementations.
const CAPACITY: usize = 1;

/// Two peers flooding each other with private messages through full buffers, a
/// reproduction of FAB-10469 beside wirelane. Exits 1 unless wirelane completes
/// with nothing lost or reordered. `--scenario storm` answers the flood on the
/// receive loop instead: with `send` (expected to deadlock, not a failure) and
/// with `respond` (must complete).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which scenarios run.
    #[arg(long, value_enum, default_value_t = Scenario::Fab10469)]
    scenario: Scenario,
    /// FAB-10469 only; without it, both run side by side.
    #[arg(long = "impl", value_enum, default_value_t = Which::Both)]
    which: Which,
    /// FAB-10469: messages per sending thread.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    messages: u64,
    /// Seconds without a delivery that count as a deadlock.
    #[arg(long, default_value = "3", value_parser = crate::cli::seconds)]
    watchdog: Duration,
    #[command(flatten)]
    storm: storm::Sizes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// The locked reproduction beside wirelane, buffers of one.
    Fab10469,
    /// Both storm variants.
    Storm,
    /// The storm, answering with a blocking `send`: expected to deadlock.
    StormSend,
    /// The storm, requests answered with `respond`: must complete.
    StormRespond,
    /// FAB-10469, then both storm variants.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Both,
    Locked,
    Wirelane,
}

pub fn run(args: &Args, quiet: bool, out: Output) -> anyhow::Result<ExitCode> {
    let variants: &[Variant] = match args.scenario {
        Scenario::Fab10469 => &[],
        Scenario::StormSend => &[Variant::Send],
        Scenario::StormRespond => &[Variant::Respond],
        Scenario::Storm | Scenario::All => &[Variant::Send, Variant::Respond],
    };
    let mut failed = false;
    if matches!(args.scenario, Scenario::Fab10469 | Scenario::All) {
        failed |= fab10469(args, quiet, out)?;
    }
    if !variants.is_empty() {
        failed |= storm::run(variants, &args.storm, args.watchdog, quiet, out)?;
    }
    Ok(ExitCode::from(u8::from(failed)))
}

/// The FAB-10469 scenario on both implementations; returns whether it failed.
fn fab10469(args: &Args, quiet: bool, out: Output) -> anyhow::Result<bool> {
    let (messages, stall) = (args.messages, args.watchdog);
    let mut outcomes = Vec::new();
    if args.which != Which::Wirelane {
        let pair = locked::Pair::start(CAPACITY)?;
        outcomes.push(scenario("locked", Arc::new(pair), args, quiet));
    }
    if args.which != Which::Locked {
        let pair = Wirelane::start()?;
        outcomes.push(scenario("wirelane", Arc::new(pair), args, quiet));
    }
    let records: Vec<Record> = outcomes.iter().map(Outcome::record).collect();
    out.records(
        &format!(
            "deadlock: 2 peers x {THREADS} threads x {messages} private messages each way, \
             buffers of {CAPACITY}, watchdog {}",
            seconds(stall)
        ),
        &records,
    );
    let mut failed = false;
    for outcome in &outcomes {
        let (line, fails) = outcome.judge(stall);
        out.note(&line);
        failed |= fails;
        for problem in &outcome.problems {
            out.note(&format!("  {}: {problem}", outcome.implementation));
        }
    }
    out.note(
        "why: `locked` waits for room in a full buffer holding its connection lock, which its \
         own writer and reader take for every frame, so each peer stops the other (Fabric \
         FAB-10469); wirelane's send waits holding no lock.",
    );
    Ok(failed)
}

impl Outcome {
    fn record(&self) -> Record {
        let outcome = match (self.completed, self.problems.is_empty()) {
            (false, _) => "deadlocked",
            (true, true) => "completed",
            (true, false) => "failed",
        };
        outcome_record(
            Record::new("deadlock", self.implementation).set("outcome", outcome),
            (self.delivered, self.expected),
            self.active,
            self.completed,
        )
    }

    /// A line saying what happened, and whether it fails the run: only wirelane's
    /// outcome can; the reference implementation is expected to freeze.
    fn judge(&self, stall: Duration) -> (String, bool) {
        let (name, n, of) = (self.implementation, self.delivered, self.expected);
        let (wirelane, clean, stall) =
            (name == "wirelane", self.problems.is_empty(), seconds(stall));
        let when = match n {
            0 => format!("before the first of {of} messages arrived"),
            _ => format!("after {n} of {of} messages ({} in)", seconds(self.active)),
        };
        let line = match (wirelane, self.completed) {
            (true, true) if clean => {
                format!("wirelane: completed; all {of} messages arrived exactly once and in order")
            }
            (true, true) => {
                format!("FAIL: wirelane delivered {n} messages, but not each once and in order:")
            }
            (true, false) => format!("FAIL: wirelane stalled {when}: nothing arrived for {stall}"),
            (false, false) => format!(
                "{name}: deadlocked {when}; nothing arrived for {stall}, so the watchdog aborted it"
            ),
            (false, true) => format!(
                "{name}: unexpectedly completed all {of} messages; its deadlock depends on \
                 thread timing and did not happen this time (not a wirelane failure)"
            ),
        };
        (line, wirelane && !(self.completed && clean))
    }
}

/// A duration for a note: milliseconds below a second, else seconds.
/// A scenario's record: `record` (workload, implementation, outcome and what else
/// the caller set) with the count against what was expected, the time, and the rate
/// when it completed.
pub fn outcome_record(
    record: Record,
    (count, expected): (u64, u64),
    active: Duration,
    completed: bool,
) -> Record {
    let secs = active.as_secs_f64();
    let record = record
        .set("count", count)
        .set("expected", expected)
        .set("secs", secs);
    if completed {
        record.set("msgs_per_s", count as f64 / secs.max(1e-9))
    } else {
        record
    }
}

pub fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// wirelane's side of the comparison: two nodes whose private lanes and inbound
/// queues hold one message, so sends wait as the locked ones do, but hold no lock.
struct Wirelane {
    nodes: [Node; 2],
    ids: [PeerId; 2],
    stopped: AtomicBool,
}

impl Wirelane {
    fn start() -> Result<Wirelane, wirelane::Error> {
        let config = Config::default()
            .private_capacity(CAPACITY)
            .inbound_capacity(CAPACITY);
        let p = Node::bind(PeerId(1), "127.0.0.1:0", config.clone())?;
        let q = Node::bind(PeerId(2), "127.0.0.1:0", config)?;
        // Returns once the connection is registered on both sides.
        let q_id = p.connect(q.local_addr())?;
        Ok(Wirelane {
            ids: [p.id(), q_id],
            nodes: [p, q],
            stopped: AtomicBool::new(false),
        })
    }
}

impl Peers for Wirelane {
    fn send(&self, from: usize, payload: Bytes) -> Result<(), String> {
        let to = self.ids[1 - from];
        self.nodes[from]
            .send(to, payload)
            .map_err(|e| e.to_string())
    }

    /// The inbound queue reports disconnection once the node has shut down.
    fn recv(&self, at: usize) -> Got {
        match self.nodes[at].incoming().recv() {
            Ok(m) if m.lane == Lane::Private && m.from == self.ids[1 - at] => {
                Got::Message(m.payload)
            }
            Ok(m) => Got::Wrong(format!("a {} message from {}", m.lane, m.from)),
            Err(_) => Got::Closed,
        }
    }

    fn stopped(&self) -> bool {
        self.stopped.load(SeqCst)
    }

    /// Shutting a node down releases its blocked senders and joins its threads.
    fn teardown(&self) {
        self.stopped.store(true, SeqCst);
        for node in &self.nodes {
            node.shutdown();
        }
    }
}

/// Sending threads per peer.
const THREADS: u32 = 4;
/// How often the watchdog reads the delivery counter.
const TICK: Duration = Duration::from_millis(10);
/// How long the threads have to finish once the verdict is in.
const JOIN_GRACE: Duration = Duration::from_secs(10);
const NAMES: [&str; 2] = ["p", "q"];
/// Problems kept per peer; the rest are only counted.
const MAX_PROBLEMS: usize = 5;

struct Outcome {
    implementation: &'static str,
    /// Every message was delivered (the watchdog did not fire).
    completed: bool,
    delivered: u64,
    expected: u64,
    /// From the start to the last delivery.
    active: Duration,
    /// Lost, duplicated or reordered messages, wrong senders, failed sends.
    problems: Vec<String>,
}

/// Both peers of one implementation, as the scenario drives them: peer 0 is p, 1 is
/// q. The deadlocking reference and wirelane are loaded, watched and judged by the
/// very same code through it.
pub trait Peers: Send + Sync + 'static {
    /// Sends a private message from peer `from` to the other, waiting for room.
    fn send(&self, from: usize, payload: Bytes) -> Result<(), String>;
    /// Waits for the next message delivered to peer `at`.
    fn recv(&self, at: usize) -> Got;
    /// Whether the run is being torn down, so that failing sends are expected.
    fn stopped(&self) -> bool;
    /// Ends the run through the implementation's way out, waking every wait.
    fn teardown(&self);
    /// Joins the threads the implementation started itself, if any.
    fn join_by(&self, _deadline: Instant) -> Result<(), JoinError> {
        Ok(())
    }
}

/// What a drainer's wait returned.
pub enum Got {
    /// A payload from the other peer.
    Message(Bytes),
    /// Something arrived that this scenario never sends.
    Wrong(String),
    /// The run is over.
    Closed,
}

/// Runs the scenario on `peers` and joins every thread it started.
fn scenario<P: Peers>(
    implementation: &'static str,
    peers: Arc<P>,
    args: &Args,
    quiet: bool,
) -> Outcome {
    let messages = args.messages;
    let per_peer = u64::from(THREADS) * messages;
    let bar = progress(
        &format!("deadlock {implementation}"),
        Some(2 * per_peer),
        quiet,
    );
    let started = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let drainers: Vec<_> = NAMES
        .iter()
        .enumerate()
        .map(|(at, name)| {
            let (peers, delivered, bar) = (peers.clone(), delivered.clone(), bar.clone());
            start(format!("deadlock-drain-{name}"), move || {
                drain(&*peers, at, per_peer, started, &delivered, &bar)
            })
        })
        .collect();
    let mut senders = Vec::new();
    for (from, name) in NAMES.iter().enumerate() {
        for thread in 0..THREADS {
            let peers = peers.clone();
            senders.push(start(format!("deadlock-send-{name}{thread}"), move || {
                send_all(&*peers, from, thread, messages)
            }));
        }
    }
    let completed = watch(|| delivered.load(Relaxed), 2 * per_peer, args.watchdog);
    // Finished or frozen, the run ends here: this wakes whatever still waits. On a
    // thread of its own, so that a teardown that is stuck too meets the deadline.
    let teardown = {
        let peers = peers.clone();
        start("deadlock-teardown", move || peers.teardown())
    };
    let deadline = Instant::now() + JOIN_GRACE;
    join_all(vec![teardown], deadline);
    let sent = join_all(senders, deadline);
    let drained = join_all(drainers, deadline);
    if let Err(e) = peers.join_by(deadline) {
        abandon(e);
    }
    bar.finish_and_clear();
    let mut problems: Vec<String> = sent.into_iter().filter_map(Result::err).collect();
    for (at, d) in drained.iter().enumerate() {
        problems.extend(d.problems(at, completed, messages));
    }
    let last = drained.iter().map(|d| d.last).max().unwrap_or(started);
    Outcome {
        implementation,
        completed,
        delivered: delivered.load(Relaxed),
        expected: 2 * per_peer,
        active: last - started,
        problems,
    }
}

/// The watchdog: `true` once `progress` reaches `expected`, `false` once `stall`
/// has passed without it moving.
pub fn watch(progress: impl Fn() -> u64, expected: u64, stall: Duration) -> bool {
    let (mut seen, mut moved) = (progress(), Instant::now());
    loop {
        thread::sleep(TICK);
        let now = progress();
        if now >= expected {
            return true;
        }
        if now != seen {
            (seen, moved) = (now, Instant::now());
        } else if moved.elapsed() >= stall {
            return false;
        }
    }
}

/// The stamp of message `seq` of sending thread `thread` to peer `to`: the thread
/// stands in the sender's place, so that each thread's stream is tracked apart.
fn stamp(thread: u32, to: usize, seq: u64) -> Stamp {
    Stamp {
        lane: Lane::Private,
        src: PeerId(u64::from(thread)),
        dst: PeerId(to as u64),
        seq,
    }
}

/// One sending thread: `messages` stamped messages from peer `from`, in order.
fn send_all<P: Peers>(peers: &P, from: usize, thread: u32, messages: u64) -> Result<(), String> {
    for seq in 0..messages {
        if let Err(e) = peers.send(from, stamp(thread, 1 - from, seq).encode(Stamp::LEN)) {
            if peers.stopped() {
                return Ok(());
            }
            return Err(format!(
                "{} thread {thread}: send #{seq} failed: {e}",
                NAMES[from]
            ));
        }
    }
    Ok(())
}

/// What a drainer saw: each sending thread's stream, and what was wrong.
struct Drained {
    threads: Vec<Track>,
    received: u64,
    problems: Vec<String>,
    unlisted: u64,
    /// When the last message arrived (the start, if none did).
    last: Instant,
}

impl Drained {
    fn new(started: Instant) -> Drained {
        Drained {
            threads: vec![Track::default(); THREADS as usize],
            received: 0,
            problems: Vec::new(),
            unlisted: 0,
            last: started,
        }
    }

    fn problem(&mut self, why: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(why);
        } else {
            self.unlisted += 1;
        }
    }

    fn observe(&mut self, at: usize, payload: &[u8]) {
        self.received += 1;
        let stamp = Stamp::decode(payload);
        let track = stamp
            .filter(|s| s.dst == PeerId(at as u64))
            .and_then(|s| Some((self.threads.get_mut(s.src.0 as usize)?, s.seq)));
        match track {
            Some((track, seq)) => track.observe(seq),
            None => self.problem(format!("a message that is no stamp of ours: {stamp:?}")),
        }
    }

    /// The problems seen at peer `at`; for a completed run, also any thread whose
    /// messages did not all arrive once each, in order.
    fn problems(&self, at: usize, completed: bool, messages: u64) -> Vec<String> {
        let mut all = self.problems.clone();
        for (thread, t) in self.threads.iter().enumerate() {
            if let Some(seq) = t.first_duplicate {
                all.push(format!("thread {thread}: #{seq} came again"));
            }
            if let Some((seq, after)) = t.first_reordered {
                all.push(format!("thread {thread}: #{seq} came after #{after}"));
            }
            if completed && !t.is_whole(messages) {
                all.push(format!(
                    "thread {thread}: got {} distinct of {messages}",
                    t.distinct
                ));
            }
        }
        if self.unlisted > 0 {
            all.push(format!("and {} more", self.unlisted));
        }
        all.iter()
            .map(|p| format!("at {}: {p}", NAMES[at]))
            .collect()
    }
}

/// One draining thread: takes what arrives at peer `at` until all `expected` messages
/// are in or the run ends, tracking each thread's stream.
fn drain<P: Peers>(
    peers: &P,
    at: usize,
    expected: u64,
    started: Instant,
    delivered: &AtomicU64,
    bar: &indicatif::ProgressBar,
) -> Drained {
    let mut d = Drained::new(started);
    while d.received < expected {
        match peers.recv(at) {
            Got::Message(payload) => {
                d.observe(at, &payload);
                d.last = Instant::now();
                delivered.fetch_add(1, Relaxed);
                bar.inc(1);
            }
            Got::Wrong(why) => d.problem(why),
            Got::Closed => break,
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_accepts_interleaved_threads_in_order() {
        let mut d = Drained::new(Instant::now());
        for seq in 0..3 {
            for thread in 0..THREADS {
                d.observe(0, &stamp(thread, 0, seq).encode(Stamp::LEN));
            }
        }
        assert_eq!(d.received, 3 * u64::from(THREADS));
        assert!(d.problems(0, true, 3).is_empty());
        assert_eq!(d.problems(0, true, 4).len(), THREADS as usize);
    }

    #[test]
    fn the_check_flags_duplicates_gaps_and_strangers() {
        let mut d = Drained::new(Instant::now());
        for (thread, seq) in [(0, 0), (0, 0), (1, 1), (1, 0), (THREADS, 0)] {
            d.observe(1, &stamp(thread, 1, seq).encode(Stamp::LEN));
        }
        d.observe(1, b"junk");
        let problems = d.problems(1, false, 10);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().all(|p| p.starts_with("at q: ")));
        assert!(problems
            .iter()
            .any(|p| p.contains("thread 0: #0 came again")));
        assert!(problems
            .iter()
            .any(|p| p.contains("thread 1: #0 came after #1")));
    }
}
