//! The scenario both implementations run, and the machinery that keeps it from
//! hanging: sending and draining threads, the order check, the watchdog, and joins
//! with deadlines.
//!
//! The scenario drives an implementation through [`Peers`], so that the deadlocking
//! reference and wirelane are loaded, watched and judged by the very same code.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};

use crate::threads::{self, JoinError, Named};

/// Sending threads per peer.
pub const THREADS: u32 = 4;
/// How often the watchdog reads the delivery counter, and how long a drainer that
/// polls waits for a message before it checks whether the run has ended.
pub const TICK: Duration = Duration::from_millis(10);
/// How long the threads have to finish once the verdict is in.
const JOIN_GRACE: Duration = Duration::from_secs(10);
/// The peers' names, by index.
pub const NAMES: [&str; 2] = ["p", "q"];
/// Problems kept per peer; the rest are only counted.
const MAX_PROBLEMS: usize = 5;

/// What one run does.
pub struct Plan {
    /// Messages per sending thread.
    pub messages: u64,
    /// Time without a delivery after which the watchdog declares a deadlock.
    pub stall: Duration,
}

/// How a run ended.
pub struct Outcome {
    /// `locked` or `wirelane`.
    pub implementation: &'static str,
    /// Every message was delivered (the watchdog did not fire).
    pub completed: bool,
    pub delivered: u64,
    pub expected: u64,
    /// From the start to the last delivery.
    pub active: Duration,
    /// Lost, duplicated or reordered messages, wrong senders, failed sends.
    pub problems: Vec<String>,
}

/// Both peers of one implementation, as the scenario drives them: peer 0 is p, 1 is q.
pub trait Peers: Send + Sync + 'static {
    /// What a drainer receives: the payload as it was sent.
    type Payload: AsRef<[u8]>;
    /// Sends a private message from peer `from` to the other, waiting for room.
    fn send(&self, from: usize, payload: Vec<u8>) -> Result<(), String>;
    /// Waits for the next message delivered to peer `at`.
    fn recv(&self, at: usize) -> Got<Self::Payload>;
    /// Whether the run is being torn down, so that failing sends are expected.
    fn stopped(&self) -> bool;
    /// Ends the run through the implementation's way out, waking every wait.
    fn teardown(&self);
    /// Joins the threads the implementation started itself, if any.
    fn join_by(&self, deadline: Instant) -> Result<(), JoinError>;
}

/// What a drainer's wait returned.
pub enum Got<P> {
    /// A payload from the other peer.
    Message(P),
    /// Something arrived that this scenario never sends.
    Wrong(String),
    /// The run is over.
    Closed,
}

/// Runs the scenario on `peers` and joins every thread it started. `delivered`
/// counts messages as they arrive, for the watchdog and the progress line.
pub fn scenario<P: Peers>(
    implementation: &'static str,
    peers: Arc<P>,
    plan: &Plan,
    delivered: Arc<AtomicU64>,
) -> Outcome {
    let started = Instant::now();
    let per_peer = u64::from(THREADS) * plan.messages;
    let drainers: Vec<Named<Drained>> = NAMES
        .iter()
        .enumerate()
        .map(|(at, name)| {
            let (peers, delivered) = (peers.clone(), delivered.clone());
            start(format!("deadlock-drain-{name}"), move || {
                drain(&*peers, at, per_peer, started, &delivered)
            })
        })
        .collect();
    let mut senders = Vec::new();
    for (from, name) in NAMES.iter().enumerate() {
        for thread in 0..THREADS {
            let (peers, messages) = (peers.clone(), plan.messages);
            senders.push(start(format!("deadlock-send-{name}{thread}"), move || {
                send_all(&*peers, from, thread, messages)
            }));
        }
    }
    let (verdict_tx, verdict_rx) = bounded(1);
    let watchdog = {
        let (peers, delivered, stall) = (peers.clone(), delivered.clone(), plan.stall);
        start("deadlock-watchdog".to_owned(), move || {
            let completed = watch(&delivered, 2 * per_peer, stall);
            // Finished or frozen, the run ends here: this wakes whatever still waits.
            peers.teardown();
            let _ = verdict_tx.send(completed);
        })
    };
    let completed = await_verdict(&verdict_rx, &delivered, plan.stall);

    let deadline = Instant::now() + JOIN_GRACE;
    let sent = join_all(senders, deadline);
    let drained = join_all(drainers, deadline);
    join_all(vec![watchdog], deadline);
    if let Err(e) = peers.join_by(deadline) {
        abandon(e);
    }
    let mut problems: Vec<String> = sent.into_iter().filter_map(Result::err).collect();
    for (at, d) in drained.iter().enumerate() {
        problems.extend(d.order.problems(at, completed, plan.messages));
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

/// The watchdog: `true` once `expected` messages were delivered, `false` once
/// `stall` has passed without one.
fn watch(delivered: &AtomicU64, expected: u64, stall: Duration) -> bool {
    let (mut seen, mut moved) = (delivered.load(Relaxed), Instant::now());
    loop {
        thread::sleep(TICK);
        let now = delivered.load(Relaxed);
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

/// Waits for the watchdog's verdict. The watchdog decides at most `stall` after the
/// last delivery and then tears down; if it has said nothing for longer than that
/// plus the grace period while nothing was delivered, its teardown is stuck and the
/// run is abandoned.
fn await_verdict(verdict: &Receiver<bool>, delivered: &AtomicU64, stall: Duration) -> bool {
    let mut seen = delivered.load(Relaxed);
    loop {
        match verdict.recv_timeout(stall + JOIN_GRACE) {
            Ok(completed) => return completed,
            Err(RecvTimeoutError::Timeout) => {
                let now = delivered.load(Relaxed);
                if now == seen {
                    abandon("the watchdog did not report: tearing the run down is stuck");
                }
                seen = now;
            }
            Err(RecvTimeoutError::Disconnected) => abandon("the watchdog thread panicked"),
        }
    }
}

/// One sending thread: `messages` stamped messages from peer `from`, in order.
fn send_all<P: Peers>(peers: &P, from: usize, thread: u32, messages: u64) -> Result<(), String> {
    for seq in 0..messages {
        if let Err(e) = peers.send(from, stamp(thread, seq)) {
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

/// What a drainer saw.
struct Drained {
    order: Order,
    /// When the last message arrived (the start, if none did).
    last: Instant,
}

/// One draining thread: takes what arrives at peer `at` until all `expected` messages
/// are in or the run ends, checking their order.
fn drain<P: Peers>(
    peers: &P,
    at: usize,
    expected: u64,
    started: Instant,
    delivered: &AtomicU64,
) -> Drained {
    let mut order = Order::new();
    let mut last = started;
    while order.received < expected {
        match peers.recv(at) {
            Got::Message(payload) => {
                order.observe(payload.as_ref());
                last = Instant::now();
                delivered.fetch_add(1, Relaxed);
            }
            Got::Wrong(why) => order.problem(why),
            Got::Closed => break,
        }
    }
    Drained { order, last }
}

/// The payload of message `seq` of sending thread `thread`.
fn stamp(thread: u32, seq: u64) -> Vec<u8> {
    let mut payload = Vec::with_capacity(12);
    payload.extend_from_slice(&thread.to_be_bytes());
    payload.extend_from_slice(&seq.to_be_bytes());
    payload
}

/// The sending thread and sequence number of a payload made by [`stamp`].
fn unstamp(payload: &[u8]) -> Option<(u32, u64)> {
    let (thread, seq) = payload.split_first_chunk::<4>()?;
    let seq: [u8; 8] = seq.try_into().ok()?;
    Some((u32::from_be_bytes(*thread), u64::from_be_bytes(seq)))
}

/// Checks that one peer gets each sending thread's messages once each, in order.
struct Order {
    /// The sequence number due next from each thread.
    next: Vec<u64>,
    received: u64,
    problems: Vec<String>,
    unlisted: u64,
}

impl Order {
    fn new() -> Order {
        Order {
            next: vec![0; THREADS as usize],
            received: 0,
            problems: Vec::new(),
            unlisted: 0,
        }
    }

    fn observe(&mut self, payload: &[u8]) {
        self.received += 1;
        let Some((thread, seq)) = unstamp(payload) else {
            return self.problem(format!("a {}-byte payload that is no stamp", payload.len()));
        };
        let Some(next) = self.next.get_mut(thread as usize) else {
            return self.problem(format!(
                "a message from thread {thread}, which does not exist"
            ));
        };
        let due = *next;
        *next = due.max(seq.saturating_add(1));
        if seq < due {
            self.problem(format!(
                "thread {thread}: #{seq} came again after #{}",
                due - 1
            ));
        } else if seq > due {
            self.problem(format!("thread {thread}: #{seq} came where #{due} was due"));
        }
    }

    fn problem(&mut self, why: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(why);
        } else {
            self.unlisted += 1;
        }
    }

    /// The problems seen at peer `at`; for a completed run, also any thread whose
    /// messages did not all arrive.
    fn problems(&self, at: usize, completed: bool, messages: u64) -> Vec<String> {
        let mut all: Vec<String> = self.problems.clone();
        if completed {
            for (thread, &next) in self.next.iter().enumerate() {
                if next != messages {
                    all.push(format!("thread {thread}: got up to #{next} of {messages}"));
                }
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

/// Gives up on the run when a thread cannot be started or joined: waiting on it is
/// what this subcommand exists to avoid. The process exits at once, because the
/// peers a stuck thread holds would, when dropped, wait for it too.
fn abandon(what: impl std::fmt::Display) -> ! {
    eprintln!("wirelane-bench: deadlock: {what}; exiting without waiting for it");
    std::process::exit(1)
}

/// Starts a named thread, or gives up on the run.
fn start<T: Send + 'static>(name: String, f: impl FnOnce() -> T + Send + 'static) -> Named<T> {
    match threads::spawn(name.clone(), f) {
        Ok(thread) => thread,
        Err(e) => abandon(format_args!("could not start thread `{name}`: {e}")),
    }
}

/// Joins every thread by the deadline, or gives up on the run.
fn join_all<T>(threads: Vec<Named<T>>, deadline: Instant) -> Vec<T> {
    threads
        .into_iter()
        .map(|t| t.join_by(deadline).unwrap_or_else(|e| abandon(e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back() {
        assert_eq!(unstamp(&stamp(3, 1 << 40)), Some((3, 1 << 40)));
        assert_eq!(unstamp(b"short"), None);
    }

    #[test]
    fn the_order_check_accepts_interleaved_threads_in_order() {
        let mut order = Order::new();
        for seq in 0..3 {
            for thread in 0..THREADS {
                order.observe(&stamp(thread, seq));
            }
        }
        assert_eq!(order.received, 3 * u64::from(THREADS));
        assert!(order.problems(0, true, 3).is_empty());
        assert_eq!(order.problems(0, true, 4).len(), THREADS as usize);
    }

    #[test]
    fn the_order_check_flags_duplicates_gaps_and_strangers() {
        let mut order = Order::new();
        order.observe(&stamp(0, 0));
        order.observe(&stamp(0, 0));
        order.observe(&stamp(1, 1));
        order.observe(&stamp(THREADS, 0));
        order.observe(b"junk");
        let problems = order.problems(1, false, 10);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("#0 came again"), "{problems:?}");
        assert!(
            problems[1].contains("#1 came where #0 was due"),
            "{problems:?}"
        );
        assert!(problems.iter().all(|p| p.starts_with("at q: ")));
    }
}
