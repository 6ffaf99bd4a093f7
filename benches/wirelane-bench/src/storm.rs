//! `deadlock --scenario storm`: the delivery-path storm. Two wirelane nodes with the
//! default queue sizes; on each, [`FLOODERS`] threads flood the other node while one
//! thread reads `incoming()` and answers every message it gets, in two variants:
//!
//! - `send`: the flood is private messages and the answers are private messages too,
//!   sent with the blocking [`Node::send`] from the receive loop. Once both inbound
//!   queues, both sockets and both private lanes are full, each answering thread
//!   waits for room that only the other's answering thread can make: a cycle through
//!   the application, which any bounded system can fill. It is expected to deadlock;
//!   the watchdog sees no progress, the nodes are shut down (which wakes every
//!   blocked sender), every thread is joined, and the run does not fail for it.
//! - `respond`: the flood is requests ([`Node::request`]), answered with
//!   [`Node::respond`], which never waits (room for every reply owed is reserved
//!   before a request is delivered), so the cycle cannot form. It must complete with
//!   every reply matching its request; a stall or an error fails the run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wirelane::{Bytes, Config, Lane, Node, PeerId};

use crate::deadlock::{outcome_record, seconds, watch};
use crate::report::{progress, Output, Record};
use crate::stamp::{Stamp, Track};
use crate::threads::{join_all, start};

/// Flooding threads per node.
pub const FLOODERS: u32 = 4;
/// Bytes per message, request and reply: a stamp, a kind byte, filler.
const SIZE: usize = 64;
/// The kind byte of the `send` variant's payloads, after the stamp.
const ASK: u8 = b'a';
const ANSWER: u8 = b'r';
/// Longer than any watchdog, so that a stall is the watchdog's to report.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long the threads have to finish once the verdict is in.
const JOIN_GRACE: Duration = Duration::from_secs(20);
const NAMES: [&str; 2] = ["p", "q"];
/// Problems kept per run; the rest are only counted.
const MAX_PROBLEMS: usize = 10;

/// The storm's sizes; the watchdog is `deadlock`'s own.
#[derive(Debug, clap::Args)]
pub struct Sizes {
    /// Storm, `send` variant: private messages per flooding thread (it is expected
    /// to deadlock long before they are all sent).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    storm_messages: u64,
    /// Storm, `respond` variant: requests per flooding thread.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    storm_requests: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Answers with a blocking `send` on the receive loop.
    Send,
    /// Requests answered with `respond`.
    Respond,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Send => "storm-send",
            Variant::Respond => "storm-respond",
        }
    }
}

/// Runs the variants in turn and reports them; returns whether the run failed.
pub fn run(
    variants: &[Variant],
    sizes: &Sizes,
    stall: Duration,
    quiet: bool,
    out: Output,
) -> anyhow::Result<bool> {
    let mut outcomes = Vec::new();
    for &variant in variants {
        let per_thread = match variant {
            Variant::Send => sizes.storm_messages,
            Variant::Respond => sizes.storm_requests,
        };
        outcomes.push(storm(variant, per_thread, stall, quiet)?);
    }
    let records: Vec<Record> = outcomes.iter().map(Outcome::record).collect();
    out.records(
        &format!(
            "deadlock storm: 2 nodes (default sizes) x {FLOODERS} flooding threads, one answering \
             thread each reading incoming(), {SIZE}-byte payloads, watchdog {}",
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
            out.note(&format!("  {}: {problem}", outcome.variant.name()));
        }
    }
    Ok(failed)
}

/// One variant's result.
struct Outcome {
    variant: Variant,
    /// All the work was done (the watchdog did not fire).
    completed: bool,
    /// Messages (or requests) sent by the flooders, over both nodes.
    sent: u64,
    /// Flood messages answered, over both nodes.
    answered: u64,
    /// Answers (or replies) back at the flooders' nodes.
    answers: u64,
    /// Flood messages (or requests) each way, had it completed.
    per_node: u64,
    /// From the start to the last progress.
    active: Duration,
    problems: Vec<String>,
}

impl Outcome {
    fn record(&self) -> Record {
        let outcome = match (self.completed, self.problems.is_empty()) {
            (false, true) => "deadlocked",
            (false, false) => "stalled",
            (true, true) => "completed",
            (true, false) => "failed",
        };
        let record = Record::new("deadlock", self.variant.name())
            .set("outcome", outcome)
            .set("sent", self.sent)
            .set("answered", self.answered);
        outcome_record(
            record,
            (self.answers, 2 * self.per_node),
            self.active,
            self.completed,
        )
    }

    /// A line saying what happened, and whether it fails the run: the `send`
    /// variant's deadlock is expected; anything short of a clean completion of the
    /// `respond` variant fails.
    fn judge(&self, stall: Duration) -> (String, bool) {
        let (n, of, clean) = (self.answers, 2 * self.per_node, self.problems.is_empty());
        let stall = seconds(stall);
        let when = format!(
            "after {} flood messages sent, {} answered and {n} of {of} answers back ({} in)",
            self.sent,
            self.answered,
            seconds(self.active)
        );
        match (self.variant, self.completed, clean) {
            (Variant::Send, false, true) => (
                format!(
                    "storm-send: deadlocked, as expected: answering with send() on the receive \
                     loop forms a cycle through the application; {when}, then nothing moved \
                     for {stall}, so the nodes were shut down and every thread joined"
                ),
                false,
            ),
            (Variant::Send, true, true) => (
                format!(
                    "storm-send: completed all {of} answers: the queues and sockets absorbed \
                     the flood this time (the cycle is still there; not a wirelane failure)"
                ),
                false,
            ),
            (Variant::Send, _, false) => (format!("FAIL: storm-send went wrong ({when}):"), true),
            (Variant::Respond, true, true) => (
                format!(
                    "storm-respond: completed; all {of} requests answered with respond(), every \
                     reply matching its request, in {}",
                    seconds(self.active)
                ),
                false,
            ),
            (Variant::Respond, true, false) => (
                "FAIL: storm-respond completed, but not cleanly:".to_owned(),
                true,
            ),
            (Variant::Respond, false, _) => (
                format!("FAIL: storm-respond stalled {when}: nothing moved for {stall}"),
                true,
            ),
        }
    }
}

/// The two nodes and what every thread of a storm shares.
struct Storm {
    nodes: [Node; 2],
    /// `ids[i]` is node `i`'s id, so node `i`'s peer is `ids[1 - i]`.
    ids: [PeerId; 2],
    stopped: AtomicBool,
    /// Flood messages sent, over both nodes.
    sent: AtomicU64,
    /// Flood messages answered, over both nodes.
    answered: AtomicU64,
    /// Answers back at the flooders' nodes.
    answers: AtomicU64,
    /// When any of the counters last moved, in microseconds since `started`.
    last: AtomicU64,
    started: Instant,
}

impl Storm {
    fn start() -> Result<Storm, wirelane::Error> {
        let p = Node::bind(PeerId(1), "127.0.0.1:0", Config::default())?;
        let q = Node::bind(PeerId(2), "127.0.0.1:0", Config::default())?;
        // Returns once the connection is registered on both sides.
        let q_id = p.connect(q.local_addr())?;
        Ok(Storm {
            ids: [p.id(), q_id],
            nodes: [p, q],
            stopped: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            last: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    fn stopped(&self) -> bool {
        self.stopped.load(SeqCst)
    }

    fn moved(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
        self.last
            .fetch_max(self.started.elapsed().as_micros() as u64, Relaxed);
    }

    /// All progress, for the watchdog.
    fn progress(&self) -> u64 {
        self.sent.load(Relaxed) + self.answered.load(Relaxed) + self.answers.load(Relaxed)
    }
}

/// A flood payload from flooding thread `thread` of node `from`.
fn flood(thread: u32, from: usize, seq: u64) -> Bytes {
    let stamp = Stamp {
        lane: Lane::Private,
        src: PeerId(u64::from(thread)),
        dst: PeerId(1 - from as u64),
        seq,
    };
    let mut p = stamp.encode(SIZE).to_vec();
    p[Stamp::LEN] = ASK;
    Bytes::from(p)
}

/// Runs one variant and joins every thread it started.
fn storm(
    variant: Variant,
    per_thread: u64,
    stall: Duration,
    quiet: bool,
) -> anyhow::Result<Outcome> {
    let per_node = u64::from(FLOODERS) * per_thread;
    let storm = Arc::new(Storm::start()?);
    let bar = progress(&format!("deadlock {}", variant.name()), None, quiet);
    let mut threads = Vec::new();
    for (at, name) in NAMES.iter().enumerate() {
        let s = storm.clone();
        threads.push(start(
            format!("storm-answer-{name}"),
            move || match variant {
                Variant::Send => answer_by_send(&s, at, per_node),
                Variant::Respond => answer_by_respond(&s, at, per_node),
            },
        ));
        for thread in 0..FLOODERS {
            let s = storm.clone();
            threads.push(start(
                format!("storm-flood-{name}{thread}"),
                move || match variant {
                    Variant::Send => flood_by_send(&s, at, thread, per_thread),
                    Variant::Respond => flood_by_request(&s, at, thread, per_thread),
                },
            ));
        }
    }
    // Every flood message sent, answered and its answer back, on both nodes.
    let completed = watch(|| storm.progress(), 2 * 3 * per_node, stall);
    // As of the verdict: once the nodes shut down, the answering threads still take
    // what was already in their inbound queues.
    let [sent, answered, answers, last] =
        [&storm.sent, &storm.answered, &storm.answers, &storm.last].map(|c| c.load(SeqCst));
    // Finished or frozen, the run ends here: shutting the nodes down wakes every
    // blocked sender, requester and reader. On a thread of its own, so that a
    // teardown that is stuck too meets the deadline.
    let teardown = {
        let s = storm.clone();
        start("storm-teardown", move || {
            s.stopped.store(true, SeqCst);
            for node in &s.nodes {
                node.shutdown();
            }
        })
    };
    let deadline = Instant::now() + JOIN_GRACE;
    join_all(vec![teardown], deadline);
    let results = join_all(threads, deadline);
    bar.finish_and_clear();
    let mut problems = Vec::new();
    let mut unlisted = 0;
    for problem in results.into_iter().flatten() {
        if problems.len() < MAX_PROBLEMS {
            problems.push(problem);
        } else {
            unlisted += 1;
        }
    }
    if unlisted > 0 {
        problems.push(format!("and {unlisted} more"));
    }
    Ok(Outcome {
        variant,
        completed,
        sent,
        answered,
        answers,
        per_node,
        active: Duration::from_micros(last),
        problems,
    })
}

/// A flooding thread of the `send` variant: private messages, each to be answered.
fn flood_by_send(s: &Storm, from: usize, thread: u32, messages: u64) -> Vec<String> {
    let (node, to) = (&s.nodes[from], s.ids[1 - from]);
    for seq in 0..messages {
        if let Err(e) = node.send(to, flood(thread, from, seq)) {
            if s.stopped() {
                return Vec::new();
            }
            return vec![format!(
                "{} flooder {thread}: send #{seq} failed: {e}",
                NAMES[from]
            )];
        }
        s.moved(&s.sent);
    }
    Vec::new()
}

/// A flooding thread of the `respond` variant: requests one after another, each
/// reply checked against its request.
fn flood_by_request(s: &Storm, from: usize, thread: u32, requests: u64) -> Vec<String> {
    let (node, to) = (&s.nodes[from], s.ids[1 - from]);
    for seq in 0..requests {
        let request = flood(thread, from, seq);
        s.moved(&s.sent);
        match node.request(to, request.clone(), REQUEST_TIMEOUT) {
            Ok(reply) if reply == request => s.moved(&s.answers),
            Ok(reply) => {
                return vec![format!(
                    "{} flooder {thread}: the reply to request #{seq} is not its echo: {:?}",
                    NAMES[from],
                    Stamp::decode(&reply)
                )]
            }
            Err(_) if s.stopped() => return Vec::new(),
            Err(e) => {
                return vec![format!(
                    "{} flooder {thread}: request #{seq} failed: {e}",
                    NAMES[from]
                )]
            }
        }
    }
    Vec::new()
}

/// What an answering thread checks of the flood it gets: each flooder's stream once
/// each and in order, and the answers to its own node's flood likewise.
struct Check {
    at: usize,
    asks: Vec<Track>,
    answers: Vec<Track>,
    problems: Vec<String>,
}

impl Check {
    fn new(at: usize) -> Check {
        Check {
            at,
            asks: vec![Track::default(); FLOODERS as usize],
            answers: vec![Track::default(); FLOODERS as usize],
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, why: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(format!("at {}: {why}", NAMES[self.at]));
        }
    }

    /// Tracks a flood message (`answer` false: its destination is this node) or an
    /// answer to this node's flood (its destination was the other).
    fn observe(&mut self, payload: &[u8], answer: bool) {
        let dst = if answer { 1 - self.at } else { self.at };
        let stamp = Stamp::decode(payload).filter(|st| st.dst == PeerId(dst as u64));
        let tracks = if answer {
            &mut self.answers
        } else {
            &mut self.asks
        };
        match stamp.and_then(|st| Some((tracks.get_mut(st.src.0 as usize)?, st.seq))) {
            Some((track, seq)) => track.observe(seq),
            None => self.problem(format!("a payload that is no stamp of ours: {stamp:?}")),
        }
    }

    /// Everything wrong; for a completed run, also any stream not whole (of the
    /// answers too, `with_answers`: the `respond` variant's replies go to their
    /// requesters, never to the answering thread).
    fn finish(mut self, whole: Option<u64>, with_answers: bool) -> Vec<String> {
        let answers = if with_answers { &self.answers[..] } else { &[] };
        for (kind, tracks) in [("flooder", &self.asks[..]), ("answers to flooder", answers)] {
            for (thread, t) in tracks.iter().enumerate() {
                if let Some(seq) = t.first_duplicate {
                    self.problems
                        .push(format!("{kind} {thread}: #{seq} came again"));
                }
                if let Some((seq, after)) = t.first_reordered {
                    self.problems
                        .push(format!("{kind} {thread}: #{seq} came after #{after}"));
                }
                if let Some(n) = whole.filter(|&n| !t.is_whole(n)) {
                    self.problems.push(format!(
                        "{kind} {thread}: got {} distinct of {n}",
                        t.distinct
                    ));
                }
            }
        }
        self.problems
    }
}

/// The `send` variant's answering thread: answers every flood message with a
/// blocking `send` from the receive loop, and takes the answers to its own node's
/// flood, until all are in or the node shuts down.
fn answer_by_send(s: &Storm, at: usize, per_node: u64) -> Vec<String> {
    let (node, peer) = (&s.nodes[at], s.ids[1 - at]);
    let mut check = Check::new(at);
    let (mut answered, mut answers) = (0, 0);
    while answered < per_node || answers < per_node {
        let Ok(m) = node.incoming().recv() else { break };
        if (m.from, m.lane) != (peer, Lane::Private) || m.payload.len() != SIZE {
            check.problem(format!(
                "a {} message of {} bytes from {}",
                m.lane,
                m.payload.len(),
                m.from
            ));
            continue;
        }
        if m.payload[Stamp::LEN] == ANSWER {
            check.observe(&m.payload, true);
            answers += 1;
            s.moved(&s.answers);
            continue;
        }
        check.observe(&m.payload, false);
        let mut reply = m.payload.to_vec();
        reply[Stamp::LEN] = ANSWER;
        if let Err(e) = node.send(peer, reply) {
            if !s.stopped() {
                check.problem(format!("answering failed: {e}"));
            }
            break;
        }
        answered += 1;
        s.moved(&s.answered);
    }
    let completed = answered == per_node && answers == per_node;
    check.finish(completed.then_some(per_node / u64::from(FLOODERS)), true)
}

/// The `respond` variant's answering thread: echoes every request with `respond`,
/// which never waits, until all are answered or the node shuts down.
fn answer_by_respond(s: &Storm, at: usize, per_node: u64) -> Vec<String> {
    let (node, peer) = (&s.nodes[at], s.ids[1 - at]);
    let mut check = Check::new(at);
    let mut answered = 0;
    while answered < per_node {
        let Ok(m) = node.incoming().recv() else { break };
        if (m.from, m.lane) != (peer, Lane::Request) {
            check.problem(format!("a {} message from {}", m.lane, m.from));
            continue;
        }
        check.observe(&m.payload, false);
        if let Err(e) = node.respond(&m, m.payload.clone()) {
            if !s.stopped() {
                check.problem(format!("respond failed: {e}"));
            }
            break;
        }
        answered += 1;
        s.moved(&s.answered);
    }
    check.finish(
        (answered == per_node).then_some(per_node / u64::from(FLOODERS)),
        false,
    )
}
