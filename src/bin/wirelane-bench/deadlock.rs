//! `deadlock`: the Fabric FAB-10469 scenario, run against a reproduction of the bug
//! and against wirelane.
//!
//! Two peers, p and q, on loopback. On each, [`THREADS`] threads send `--messages`
//! private messages apiece to the other peer while one thread drains what arrives.
//! Every buffer holds one message, so nearly every send has to wait for room.
//!
//! - `locked` ([`crate::locked`]) waits for room while holding its connection lock,
//!   which its own reader and writer need for every frame: both peers freeze.
//! - `wirelane` waits holding no lock, so the same load runs to the end; each peer
//!   checks that every message arrived exactly once and in order per sending thread.
//!
//! A watchdog thread tells the two apart: when nothing has been delivered for
//! `--watchdog` seconds it declares a deadlock, and either way it ends the run through
//! the implementation's way out (the abort of `locked`, [`Node::shutdown`] for
//! wirelane), so that every thread the run started can be joined. Every other wait
//! has a deadline too: a thread that cannot be joined in time ends the process with
//! status 1 rather than hanging it.
//!
//! A record's `secs` is how long the run made progress: up to its last delivery, so
//! for a deadlocked run the moment it froze. `msgs_per_s` is given for completed runs.

mod scenario;

use std::error::Error;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use wirelane::{Bytes, Config, Lane, Node, PeerId};

use self::scenario::{scenario, Got, Outcome, Peers, Plan, THREADS, TICK};
use crate::cli::{positive, Args, CliError};
use crate::locked;
use crate::progress::Progress;
use crate::report::{Output, Record};
use crate::threads::JoinError;

/// The capacity of every buffer, in both implementations.
const CAPACITY: usize = 1;
const DEFAULT_MESSAGES: u64 = 20_000;
const DEFAULT_WATCHDOG_SECS: f64 = 3.0;

/// `deadlock`.
pub fn run(args: &Args, out: Output) -> Result<ExitCode, Box<dyn Error>> {
    let which = args.choice("impl", &["both", "locked", "wirelane"], "both")?;
    let messages = positive("messages", args.get("messages", DEFAULT_MESSAGES)?)?;
    let stall = watchdog_option(args)?;
    args.finish(0)?;
    let plan = Plan { messages, stall };
    let quiet = args.flag("quiet");

    let mut outcomes = Vec::new();
    if which != "wirelane" {
        outcomes.push(measure("locked", &plan, quiet, |delivered| {
            let pair = locked::Pair::start(CAPACITY)?;
            Ok(scenario("locked", Arc::new(pair), &plan, delivered))
        })?);
    }
    if which != "locked" {
        outcomes.push(measure("wirelane", &plan, quiet, |delivered| {
            let pair = Wirelane::start()?;
            Ok(scenario("wirelane", Arc::new(pair), &plan, delivered))
        })?);
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
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `--watchdog SECS`: seconds without a delivery that count as a deadlock.
fn watchdog_option(args: &Args) -> Result<Duration, CliError> {
    let secs: f64 = args.get("watchdog", DEFAULT_WATCHDOG_SECS)?;
    if secs.is_finite() && secs > 0.0 && secs <= 3600.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(CliError::BadValue {
            option: "watchdog".to_owned(),
            value: secs.to_string(),
            why: "must be above 0 and at most 3600 seconds".to_owned(),
        })
    }
}

/// Runs one implementation with a progress line counting deliveries.
fn measure(
    implementation: &'static str,
    plan: &Plan,
    quiet: bool,
    run: impl FnOnce(Arc<AtomicU64>) -> Result<Outcome, Box<dyn Error>>,
) -> Result<Outcome, Box<dyn Error>> {
    let expected = 2 * u64::from(THREADS) * plan.messages;
    let progress = Progress::start(&format!("deadlock {implementation}"), Some(expected), quiet);
    let outcome = run(progress.counter());
    progress.finish();
    outcome
}

impl Outcome {
    fn record(&self) -> Record {
        let outcome = match (self.completed, self.problems.is_empty()) {
            (false, _) => "deadlocked",
            (true, true) => "completed",
            (true, false) => "failed",
        };
        let secs = self.active.as_secs_f64();
        let record = Record::new("deadlock", self.implementation)
            .text("outcome", outcome)
            .int("count", self.delivered)
            .int("expected", self.expected)
            .float("secs", secs);
        if self.completed {
            record.float("msgs_per_s", self.delivered as f64 / secs.max(1e-9))
        } else {
            record
        }
    }

    /// A line saying what happened, and whether it fails the run: only wirelane's
    /// outcome can; the reference implementation is expected to freeze.
    fn judge(&self, stall: Duration) -> (String, bool) {
        let (name, n, of) = (self.implementation, self.delivered, self.expected);
        let (active, stall) = (seconds(self.active), seconds(stall));
        let clean = self.problems.is_empty();
        let when = if n == 0 {
            format!("before the first of {of} messages arrived")
        } else {
            format!("after {n} of {of} messages ({active} in)")
        };
        match (name, self.completed) {
            ("wirelane", true) if clean => (
                format!("wirelane: completed; all {of} messages arrived exactly once and in order"),
                false,
            ),
            ("wirelane", true) => (
                format!("FAIL: wirelane delivered {n} messages, but not each once and in order:"),
                true,
            ),
            ("wirelane", false) => (
                format!("FAIL: wirelane stalled {when}: nothing arrived for {stall}"),
                true,
            ),
            (_, false) => (
                format!(
                    "{name}: deadlocked {when}; nothing arrived for {stall}, so the \
                     watchdog aborted it"
                ),
                false,
            ),
            (_, true) => (
                format!(
                    "{name}: unexpectedly completed all {of} messages; its deadlock depends on \
                     thread timing and did not happen this time (not a wirelane failure)"
                ),
                false,
            ),
        }
    }
}

/// A duration for a note: milliseconds below a second, else seconds.
fn seconds(d: Duration) -> String {
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
    type Payload = Bytes;

    fn send(&self, from: usize, payload: Vec<u8>) -> Result<(), String> {
        let to = self.ids[1 - from];
        self.nodes[from]
            .send(to, payload)
            .map_err(|e| e.to_string())
    }

    fn recv(&self, at: usize) -> Got<Bytes> {
        let from = self.ids[1 - at];
        loop {
            match self.nodes[at].incoming().recv_timeout(TICK) {
                Ok(m) if m.lane == Lane::Private && m.from == from => {
                    return Got::Message(m.payload)
                }
                Ok(m) => return Got::Wrong(format!("a {} message from {}", m.lane, m.from)),
                Err(RecvTimeoutError::Timeout) if !self.stopped() => {}
                Err(_) => return Got::Closed,
            }
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

    fn join_by(&self, _deadline: Instant) -> Result<(), JoinError> {
        Ok(())
    }
}

impl Peers for locked::Pair {
    type Payload = Vec<u8>;

    fn send(&self, from: usize, payload: Vec<u8>) -> Result<(), String> {
        locked::Pair::send(self, from, &payload).map_err(|e| e.to_string())
    }

    fn recv(&self, at: usize) -> Got<Vec<u8>> {
        locked::Pair::recv(self, at).map_or(Got::Closed, Got::Message)
    }

    fn stopped(&self) -> bool {
        self.is_aborted()
    }

    fn teardown(&self) {
        self.abort();
    }

    fn join_by(&self, deadline: Instant) -> Result<(), JoinError> {
        locked::Pair::join_by(self, deadline)
    }
}
