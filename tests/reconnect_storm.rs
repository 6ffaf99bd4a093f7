//! A randomized reconnection storm, through the public API only, in which every
//! private message is accounted for.
//!
//! Node A runs three application threads that send to peer B at random: blocking
//! `send`, `send_timeout` with short deadlines, bursts of gossip (`try_send`),
//! `connect`, `disconnect`, and a disconnect followed at once by a connect. A
//! redials lost connections (`reconnect_interval`). B has an inbound queue of 4 and
//! one application thread that reads it at a limited pace, so B's reader keeps
//! waiting for room, TCP pushes back, and A's lanes fill; and B restarts on the same
//! address now and then (shut down, bind again). Each private payload carries its
//! sender thread and a per-thread sequence number, incremented for every attempted
//! private send.
//!
//! After the storm, a quiet phase (one thread, nothing else running) replays the
//! two situations the storm only meets by chance: a chain of quick reconnections
//! while B is still reading the first connection slowly, and a `disconnect` right
//! after A lost B, which must cancel the redial.
//!
//! All of it runs twice: once with the sender holding the lower id (A arbitrates
//! every handshake), once with the receiver holding it (B arbitrates, and so decides
//! about a new connection while it may still be reading the old one).
//!
//! # What is asserted, and why it is guaranteed
//!
//! - **Order and uniqueness.** Per sender thread, the private messages B's
//!   application received are strictly increasing in sequence, within one B
//!   incarnation and across all of them taken in incarnation order. Within one
//!   incarnation this is FIFO per peer and lane across reconnections
//!   (`docs/guarantees.md` §4: what the peer wrote on the old connection is delivered
//!   before anything from the new one, even when the new one is closed meanwhile).
//!   Across incarnations it follows from the restarts being sequential: incarnation
//!   k+1 is bound only after k's `shutdown` returned, so everything k delivered was
//!   written by A before k+1 existed; a sender thread's calls are sequential, so
//!   whatever it addressed to k+1 it offered after everything k could deliver.
//!   Gossip is checked the same way (FIFO per lane), except that it may be dropped.
//! - **Each private message is accounted for exactly once** (§3). Every private send
//!   returns `Ok` (accepted) or an error that hands back that very payload. An
//!   accepted message is delivered to B's application, or handed back in
//!   `Event::Undelivered`, or counted: received by a B that could not hand it to its
//!   application before the close gave up (`private.recv_dropped`), or lost because
//!   A's event queue stayed full at shutdown (A's `private.dropped`). These two are
//!   only counts, so the check is `accepted = delivered + handed back + recv_dropped
//!   + dropped`, together with: nothing delivered twice, nothing both delivered and
//!   handed back, nothing handed back twice, and nothing delivered or handed back in
//!   `Undelivered` whose send returned an error.
//! - Each B incarnation's `private.received`, taken after its shutdown, equals what
//!   its application read (the consumer drains every incarnation until its
//!   `incoming()` reports disconnection).
//! - `connect` is never refused as `Duplicate` when nothing could have raced it: no
//!   `disconnect` and no B restart in flight or started during the call (nor a
//!   restart in the half second before, for a handshake with the old incarnation
//!   that was slow to finish). In the quiet phase: `disconnect` then `connect` at
//!   once, while B is still reading the old connection, connects.
//! - `disconnect` stops redialling: B restarts while A has a backlog for it, A's
//!   application calls `disconnect` as soon as `is_connected` turns false, and then
//!   no connection from A may reach the new B. (The only check decided by a window:
//!   a correct library never connects, so it cannot fail it; a broken one is caught
//!   if it redials within the window, which is several redial intervals.)
//! - Every node's `shutdown` returns, and every thread of the test ends, within
//!   `util::GUARD`.
//!
//! # Staying inside the contract
//!
//! What the kernel holds when a close gives up is lost uncounted, and the contract
//! allows that ("What the crate cannot promise"): a close forced by silence
//! detection; a graceful close after ten lingers, or after a linger in which nothing
//! moved. The test is built so that none of these can happen to a correct library:
//!
//! - `silence_timeout` and `ping_interval` are far longer than the test. No silence
//!   detection, and no pings: a ping reaching a socket whose node has already given
//!   up on it makes the kernel reset the connection, destroying what the peer had not
//!   read yet.
//! - During the storm B's consumer, though slower than A's senders, drains what the
//!   kernel buffers of a connection hold (a few MiB) in about a tenth of a linger, so
//!   no close, and no chain of replacements waiting for each other, comes near a
//!   linger without progress. Its pauses are 1 ms.
//! - In the quiet phase the consumer reads one message per millisecond, so that the
//!   first connection of the chain needs about two lingers to drain, while it keeps
//!   moving (each delivery is progress) and everything stays far below ten lingers.
//!   The reconnections follow each other within milliseconds, so each close frame B
//!   sends on a replaced connection reaches A while A is still reading it; A's side
//!   may give up writing (and hands back what it did not finish writing), but
//!   nothing resets a connection. That a replacement waits for its predecessor as
//!   long as the predecessor is still delivering is the "data keeps moving" of the
//!   contract.
//! - For the redial check B's application pauses for a few milliseconds around the
//!   restart (at most 100 ms once B's shutdown has begun, far below a linger), with
//!   A's writer inside a message larger than the kernel can buffer
//!   (`util::unbufferable`, some 50 MiB here), so that A's teardown of the lost
//!   connection is still under way when the application's `disconnect` comes. The
//!   pause starts only once B has read everything A wrote, so no closing connection
//!   waits through it.
//!
//! No sleep decides an outcome: sleeps pace the consumer, space out restarts and
//! disconnects, and bound the redial window above; every blocking wait has a
//! deadline that only turns a hang into a failure.
//!
//! `WIRELANE_STORM_SECS` sets the storm time of both rounds together (default 7; the
//! quiet phases and shutdowns add about 2 s a round), `WIRELANE_STORM_SEED` the seed
//! (decimal or 0x-hex). The seed fixes every random choice of the test; thread
//! scheduling still varies from run to run, so a failure prints what it saw.

mod util;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use util::GUARD;
use wirelane::crossbeam_channel::{self, Receiver, RecvTimeoutError, Sender};
use wirelane::{
    Bytes, Config, Error, Event, HandshakeError, Lane, Node, NodeStats, PeerId, SendError,
    SendTimeoutError, TrySendError,
};

/// Application threads sending on A during the storm; the quiet phase sends as
/// thread number `SENDERS`.
const SENDERS: u32 = 3;
const DEFAULT_SECS: f64 = 7.0;
const DEFAULT_SEED: u64 = 0x5702_11D0_C0FF_EE42;

/// A restart finished less than this before a `connect` started may still explain a
/// `Duplicate` refusal (a handshake with the old incarnation finishing late).
const RESTART_MARGIN: Duration = Duration::from_millis(500);
/// How long the quiet phase watches for a redial that `disconnect` should have
/// cancelled: many redial intervals.
const REDIAL_WINDOW: Duration = Duration::from_millis(500);
/// How many failures of one kind are listed.
const SHOW: usize = 8;

// ---------------------------------------------------------------------------------
// Randomness, payloads, configuration

/// SplitMix64: small, fast, and good enough to pick operations.
struct Rng(u64);

impl Rng {
    /// A generator for one part of the test, independent of the others.
    fn derive(seed: u64, a: u64, b: u64) -> Rng {
        let mut r = Rng(seed ^ a.wrapping_mul(0xA24B_AED4_963E_E407) ^ b.rotate_left(32));
        let _ = r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

const PRIVATE: u8 = b'P';
const GOSSIP: u8 = b'G';
const HEADER: usize = 1 + 4 + 8;
const TRAILER: usize = 8;
const TRAILER_MIX: u64 = 0x7A11_5EED_0DD5_0DD5;

/// `[tag][thread: u32][seq: u64] zeros… [seq ^ TRAILER_MIX: u64]`: the trailer
/// catches a truncated or mixed-up payload without checking every byte.
fn payload(tag: u8, thread: u32, seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(HEADER + TRAILER);
    let mut p = vec![0u8; len];
    p[0] = tag;
    p[1..5].copy_from_slice(&thread.to_be_bytes());
    p[5..13].copy_from_slice(&seq.to_be_bytes());
    p[len - TRAILER..].copy_from_slice(&(seq ^ TRAILER_MIX).to_be_bytes());
    p
}

/// Reads back what [`payload`] wrote: (tag, thread, seq).
fn decode(p: &[u8]) -> Result<(u8, u32, u64), String> {
    if p.len() < HEADER + TRAILER {
        return Err(format!("payload of {} bytes is too short", p.len()));
    }
    let tag = p[0];
    let thread = u32::from_be_bytes(p[1..5].try_into().unwrap());
    let seq = u64::from_be_bytes(p[5..13].try_into().unwrap());
    let trailer = u64::from_be_bytes(p[p.len() - TRAILER..].try_into().unwrap());
    if !matches!(tag, PRIVATE | GOSSIP) || thread > SENDERS || trailer != seq ^ TRAILER_MIX {
        return Err(format!(
            "corrupt payload of {} bytes: tag {tag:#x}, thread {thread}, seq {seq}, trailer {trailer:#x}",
            p.len()
        ));
    }
    Ok((tag, thread, seq))
}

fn base_config() -> Config {
    util::config() // linger 500 ms
        .ping_interval(Duration::from_secs(600))
        .silence_timeout(Duration::from_secs(1200))
        .connect_timeout(Duration::from_secs(1))
        .handshake_timeout(Duration::from_secs(1))
}

fn sender_config() -> Config {
    base_config()
        .private_capacity(16)
        .gossip_capacity(32)
        .reconnect_interval(Some(Duration::from_millis(20)))
        .reconnect_max(Duration::from_millis(100))
}

fn receiver_config() -> Config {
    // Room for the quiet phase's one message larger than the kernel's buffers.
    base_config()
        .inbound_capacity(4)
        .max_frame_len(util::unbufferable() as u32)
}

fn env_secs() -> f64 {
    match std::env::var("WIRELANE_STORM_SECS") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("WIRELANE_STORM_SECS={s:?} is not a number of seconds")),
        Err(_) => DEFAULT_SECS,
    }
}

fn env_seed() -> u64 {
    match std::env::var("WIRELANE_STORM_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
                None => s.replace('_', "").parse(),
            };
            parsed.unwrap_or_else(|_| panic!("WIRELANE_STORM_SEED={s:?} is not a u64"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

// ---------------------------------------------------------------------------------
// Threads with a guard

/// A thread whose result is awaited with a deadline, so that a hang fails the test.
struct Worker<T> {
    what: String,
    result: Receiver<T>,
    handle: thread::JoinHandle<()>,
}

impl<T: Send + 'static> Worker<T> {
    fn spawn(what: impl Into<String>, f: impl FnOnce() -> T + Send + 'static) -> Worker<T> {
        let what = what.into();
        let (tx, result) = crossbeam_channel::bounded(1);
        let handle = thread::Builder::new()
            .name(format!("storm: {what}"))
            .spawn(move || {
                let _ = tx.send(f());
            })
            .expect("spawn a test thread");
        Worker {
            what,
            result,
            handle,
        }
    }

    #[track_caller]
    fn join(self) -> T {
        match self.result.recv_timeout(GUARD) {
            Ok(v) => {
                self.handle
                    .join()
                    .expect("the test thread has sent its result");
                v
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("{} did not finish within {GUARD:?}", self.what)
            }
            Err(RecvTimeoutError::Disconnected) => match self.handle.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the thread sends before it returns"),
            },
        }
    }
}

// ---------------------------------------------------------------------------------
// Shared state of one round

/// Counts calls started and finished, so that a `connect` can tell whether anything
/// that closes connections overlapped it.
#[derive(Default)]
struct Epoch {
    started: AtomicU64,
    finished: AtomicU64,
}

impl Epoch {
    fn snapshot(&self) -> (u64, u64) {
        (self.started.load(SeqCst), self.finished.load(SeqCst))
    }
}

struct Round {
    a: Arc<Node>,
    b_id: PeerId,
    b_addr: SocketAddr,
    deadline: Instant,
    disconnects: Epoch,
    restarts: Epoch,
    last_restart_done: Mutex<Option<Instant>>,
    /// Private messages the consumer has taken from the current B incarnation, and
    /// from all of them.
    taken_now: AtomicU64,
    taken_total: AtomicU64,
    /// Set by the quiet phase: the consumer reads one message per millisecond.
    slow: AtomicBool,
    /// Set by the quiet phase for a few milliseconds: the consumer reads nothing.
    stalled: AtomicBool,
}

impl Round {
    fn quiet_snapshot(&self) -> [u64; 4] {
        let (ds, df) = self.disconnects.snapshot();
        let (rs, rf) = self.restarts.snapshot();
        [ds, df, rs, rf]
    }
}

/// What one sender thread did. `outcomes[seq]` is the fate of private attempt `seq`.
#[derive(Default)]
struct SenderLog {
    outcomes: Vec<Outcome>,
    gossip_attempts: u64,
    gossip_queued: u64,
    /// Private and gossip send errors by kind.
    errors: BTreeMap<&'static str, u64>,
    connects: BTreeMap<String, u64>,
    disconnects: u64,
    failures: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// `send` / `send_timeout` returned `Ok`.
    Accepted,
    /// It returned an error carrying this payload back.
    Returned,
}

fn send_error_kind(e: &SendError<Bytes>) -> &'static str {
    match e {
        SendError::NotConnected(_) => "NotConnected",
        SendError::Disconnected(_) => "Disconnected",
        SendError::Shutdown(_) => "Shutdown",
        SendError::TooLarge(_) => "TooLarge",
        _ => "other",
    }
}

fn timeout_error_kind(e: &SendTimeoutError<Bytes>) -> &'static str {
    match e {
        SendTimeoutError::Timeout(_) => "Timeout",
        SendTimeoutError::NotConnected(_) => "NotConnected",
        SendTimeoutError::Disconnected(_) => "Disconnected",
        SendTimeoutError::Shutdown(_) => "Shutdown",
        SendTimeoutError::TooLarge(_) => "TooLarge",
        _ => "other",
    }
}

/// One application thread of A (or the quiet phase, as thread `SENDERS`).
struct AppThread {
    round: Arc<Round>,
    me: u32,
    rng: Rng,
    log: SenderLog,
    gossip_seq: u64,
}

impl AppThread {
    fn new(round: Arc<Round>, me: u32, rng: Rng) -> AppThread {
        AppThread {
            round,
            me,
            rng,
            log: SenderLog::default(),
            gossip_seq: 0,
        }
    }

    /// One private attempt; returns the error kind if it was handed back.
    fn private(&mut self, timeout: Option<Duration>) -> Option<&'static str> {
        let seq = self.log.outcomes.len() as u64;
        let len = self.rng.range(2048, 12 * 1024) as usize;
        let msg = payload(PRIVATE, self.me, seq, len);
        let (a, b) = (&self.round.a, self.round.b_id);
        let result = match timeout {
            None => a
                .send(b, msg)
                .map_err(|e| (send_error_kind(&e), e.into_inner())),
            Some(t) => a
                .send_timeout(b, msg, t)
                .map_err(|e| (timeout_error_kind(&e), e.into_inner())),
        };
        match result {
            Ok(()) => {
                self.log.outcomes.push(Outcome::Accepted);
                None
            }
            Err((kind, back)) => {
                self.log.outcomes.push(Outcome::Returned);
                *self.log.errors.entry(kind).or_default() += 1;
                match decode(&back) {
                    Ok((PRIVATE, t, s)) if t == self.me && s == seq => {}
                    other => self.log.failures.push(format!(
                        "thread {} seq {seq}: the {kind} error handed back another payload: {other:?}",
                        self.me
                    )),
                }
                if matches!(kind, "Shutdown" | "TooLarge" | "other") {
                    self.log.failures.push(format!(
                        "thread {} seq {seq}: private send failed with {kind} while A runs and the payload is within limits",
                        self.me
                    ));
                }
                Some(kind)
            }
        }
    }

    fn gossip(&mut self) {
        let seq = self.gossip_seq;
        self.gossip_seq += 1;
        self.log.gossip_attempts += 1;
        let len = self.rng.range(32, 512) as usize;
        match self
            .round
            .a
            .try_send(self.round.b_id, payload(GOSSIP, self.me, seq, len))
        {
            Ok(()) => self.log.gossip_queued += 1,
            Err(e) => {
                let kind = match e {
                    TrySendError::Full(_) => "gossip Full",
                    TrySendError::NotConnected(_) => "gossip NotConnected",
                    TrySendError::Disconnected(_) => "gossip Disconnected",
                    TrySendError::Shutdown(_) => "gossip Shutdown",
                    TrySendError::TooLarge(_) => "gossip TooLarge",
                    _ => "gossip other",
                };
                *self.log.errors.entry(kind).or_default() += 1;
                if matches!(kind, "gossip Shutdown" | "gossip TooLarge" | "gossip other") {
                    self.log.failures.push(format!(
                        "thread {} gossip {seq}: try_send failed with {kind} while A runs",
                        self.me
                    ));
                }
            }
        }
    }

    fn disconnect(&mut self) -> bool {
        let round = &self.round;
        round.disconnects.started.fetch_add(1, SeqCst);
        let had = round.a.disconnect(round.b_id);
        round.disconnects.finished.fetch_add(1, SeqCst);
        self.log.disconnects += 1;
        had
    }

    /// Connects to B and counts the outcome.
    fn connect(&mut self) -> Connect {
        let round = &self.round;
        let before = round.quiet_snapshot();
        let start = Instant::now();
        let recent_restart = round
            .last_restart_done
            .lock()
            .unwrap()
            .is_some_and(|done| start.saturating_duration_since(done) < RESTART_MARGIN);
        let result = round.a.connect(round.b_addr);
        let after = round.quiet_snapshot();
        let (key, outcome) = match &result {
            Ok(peer) => {
                if *peer != round.b_id {
                    self.log.failures.push(format!(
                        "thread {}: connect returned {peer}, not {}",
                        self.me, round.b_id
                    ));
                }
                ("Ok".to_owned(), Connect::Ok)
            }
            Err(Error::Handshake(HandshakeError::Duplicate(_))) => {
                // Could a disconnect or a restart have taken the connection it lost
                // to away meanwhile?
                let raced = before != after
                    || before[0] != before[1]
                    || before[2] != before[3]
                    || recent_restart;
                (
                    "Duplicate".to_owned(),
                    Connect::Duplicate {
                        raced,
                        after: start.elapsed(),
                    },
                )
            }
            Err(Error::Shutdown) => {
                self.log.failures.push(format!(
                    "thread {}: connect failed with Shutdown while A runs",
                    self.me
                ));
                ("Shutdown".to_owned(), Connect::Failed)
            }
            Err(Error::Io(e)) => (format!("Io({:?})", e.kind()), Connect::Failed),
            Err(Error::Handshake(e)) => (format!("Handshake({e:?})"), Connect::Failed),
            Err(e) => (format!("{e:?}"), Connect::Failed),
        };
        *self.log.connects.entry(key).or_default() += 1;
        outcome
    }

    /// A connect during the storm: a `Duplicate` refusal that nothing raced is a
    /// failure.
    fn storm_connect(&mut self) {
        if let Connect::Duplicate {
            raced: false,
            after,
        } = self.connect()
        {
            self.log.failures.push(format!(
                "thread {}: connect refused as Duplicate after {after:?}, with no disconnect or restart in flight",
                self.me
            ));
        }
    }

    /// The storm: random operations until the round's deadline.
    fn storm(mut self) -> SenderLog {
        let mut next_disconnect = Instant::now() + self.rng.millis(300, 1800);
        let mut next_connect = Instant::now() + self.rng.millis(100, 800);
        while Instant::now() < self.round.deadline {
            let now = Instant::now();
            if now >= next_disconnect {
                self.disconnect();
                // Half the time a quick reconnection: connect at once.
                if self.rng.below(2) == 0 {
                    self.storm_connect();
                }
                next_disconnect = now + self.rng.millis(300, 1800);
                continue;
            }
            if now >= next_connect {
                self.storm_connect();
                next_connect = now + self.rng.millis(100, 800);
                continue;
            }
            let burst = self.rng.range(1, 24);
            let op = self.rng.below(100);
            for _ in 0..burst {
                let failed = match op {
                    0..=49 => self.private(None),
                    50..=74 => {
                        let t = self.rng.millis(0, 20);
                        self.private(Some(t))
                    }
                    _ => {
                        self.gossip();
                        None
                    }
                };
                if failed == Some("NotConnected") {
                    // Nobody redials after a disconnect: somebody must connect.
                    if self.rng.below(3) == 0 {
                        self.storm_connect();
                    } else {
                        thread::sleep(Duration::from_millis(1));
                    }
                    break;
                }
            }
        }
        self.log
    }
}

/// How a `connect` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connect {
    Ok,
    /// Refused as `Duplicate`; `raced` if a disconnect or a restart overlapped it.
    Duplicate {
        raced: bool,
        after: Duration,
    },
    Failed,
}

// ---------------------------------------------------------------------------------
// The receiving side

/// The current B incarnation and everything known about the ones before it.
struct Receivers {
    round: Arc<Round>,
    current: Arc<Node>,
    index: usize,
    to_consumer: Sender<(usize, Arc<Node>)>,
    /// Each incarnation's stats, taken after its shutdown.
    stats: Vec<NodeStats>,
    /// Private messages the consumer had taken from each incarnation when its
    /// shutdown began, and how long the shutdown took.
    at_shutdown: Vec<(u64, Duration)>,
}

impl Receivers {
    fn bind(round: &Round) -> Node {
        let deadline = Instant::now() + GUARD;
        loop {
            match Node::bind(round.b_id, round.b_addr, receiver_config()) {
                Ok(node) => return node,
                Err(Error::Io(e))
                    if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
                {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("bind B again at {}: {e}", round.b_addr),
            }
        }
    }

    /// Shuts the current incarnation down, with the consumer still draining it.
    fn shut_current(&mut self) {
        let taken = self.round.taken_now.load(SeqCst);
        let started = Instant::now();
        let node = self.current.clone();
        Worker::spawn(format!("shutdown of B #{}", self.index), move || {
            node.shutdown()
        })
        .join();
        self.at_shutdown.push((taken, started.elapsed()));
        self.stats.push(self.current.stats());
    }

    fn bind_next(&mut self) {
        self.index += 1;
        self.current = Arc::new(Receivers::bind(&self.round));
        *self.round.last_restart_done.lock().unwrap() = Some(Instant::now());
        self.to_consumer
            .send((self.index, self.current.clone()))
            .expect("the consumer runs");
    }

    fn restart(&mut self) {
        self.round.restarts.started.fetch_add(1, SeqCst);
        self.shut_current();
        self.bind_next();
        self.round.restarts.finished.fetch_add(1, SeqCst);
    }
}

/// What B's application read from one incarnation, in order.
#[derive(Default)]
struct Delivered {
    private: Vec<(u32, u64)>,
    gossip: Vec<(u32, u64)>,
}

#[derive(Default)]
struct ConsumerLog {
    incarnations: Vec<Delivered>,
    failures: Vec<String>,
}

/// B's application: reads each incarnation's `incoming()` until it reports
/// disconnection, then the next one's; sleeps 1 ms every `pace` messages (every
/// message while the quiet phase asks it to be slow).
fn consume(
    incarnations: Receiver<(usize, Arc<Node>)>,
    round: Arc<Round>,
    a_id: PeerId,
    mut rng: Rng,
) -> ConsumerLog {
    let mut log = ConsumerLog::default();
    let mut pace = 16;
    let mut taken = 0u64;
    while let Ok((index, b)) = incarnations.recv() {
        assert_eq!(
            index,
            log.incarnations.len(),
            "incarnations arrive in order"
        );
        round.taken_now.store(0, SeqCst);
        let mut got = Delivered::default();
        loop {
            while round.stalled.load(SeqCst) {
                thread::sleep(Duration::from_millis(1));
            }
            let m = match b.incoming().recv_timeout(Duration::from_millis(100)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if m.from != a_id {
                log.failures
                    .push(format!("B #{index} received from {}, not {a_id}", m.from));
            }
            match (decode(&m.payload), m.lane) {
                (Ok((PRIVATE, t, s)), Lane::Private) => {
                    got.private.push((t, s));
                    round.taken_now.fetch_add(1, SeqCst);
                    round.taken_total.fetch_add(1, SeqCst);
                }
                (Ok((GOSSIP, t, s)), Lane::Gossip) => got.gossip.push((t, s)),
                (other, lane) => log.failures.push(format!(
                    "B #{index}: a {lane} message that does not belong there: {other:?}"
                )),
            }
            taken += 1;
            if round.slow.load(SeqCst) {
                thread::sleep(Duration::from_millis(1));
            } else if taken % pace == 0 {
                thread::sleep(Duration::from_millis(1));
                if taken % 512 == 0 {
                    pace = [16, 32, 64][rng.below(3) as usize];
                }
            }
        }
        log.incarnations.push(got);
    }
    log
}

// ---------------------------------------------------------------------------------
// A's events

#[derive(Default)]
struct EventLog {
    /// (thread, seq) of every message handed back in `Undelivered`, event by event.
    undelivered: Vec<(u32, u64)>,
    undelivered_events: u64,
    connected: u64,
    disconnected: BTreeMap<String, u64>,
    other: u64,
    failures: Vec<String>,
}

fn watch_events(a: Arc<Node>) -> EventLog {
    let mut log = EventLog::default();
    loop {
        let event = match a.events().recv_timeout(Duration::from_millis(100)) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match event {
            Event::Undelivered { messages, conn, .. } => {
                log.undelivered_events += 1;
                let mut last: BTreeMap<u32, u64> = BTreeMap::new();
                for m in &messages {
                    match decode(m) {
                        Ok((PRIVATE, t, s)) => {
                            if let Some(&prev) = last.get(&t) {
                                if s <= prev && log.failures.len() < SHOW {
                                    log.failures.push(format!(
                                        "Undelivered on {conn}: thread {t} seq {s} after {prev}: not oldest first"
                                    ));
                                }
                            }
                            last.insert(t, s);
                            log.undelivered.push((t, s));
                        }
                        other => log.failures.push(format!(
                            "Undelivered on {conn} carries a non-private payload: {other:?}"
                        )),
                    }
                }
            }
            Event::Connected { .. } => log.connected += 1,
            Event::Disconnected { reason, .. } => {
                let key = format!("{reason:?}");
                let key = key.split('(').next().unwrap_or_default().to_owned();
                *log.disconnected.entry(key).or_default() += 1;
            }
            _ => log.other += 1,
        }
    }
    log
}

// ---------------------------------------------------------------------------------
// The quiet phase, after the storm threads have stopped

/// Connects, retrying while B is coming back (after a restart). Nothing else runs,
/// so a `Duplicate` refusal is a failure. Returns whether it connected.
fn ensure_connected(s: &mut AppThread, failures: &mut Vec<String>, what: &str) -> bool {
    let deadline = Instant::now() + GUARD;
    while Instant::now() < deadline {
        match s.connect() {
            Connect::Ok => return true,
            Connect::Duplicate { after, .. } => failures.push(format!(
                "quiet phase ({what}): connect refused as Duplicate after {after:?}, with nothing else running"
            )),
            Connect::Failed => {}
        }
        thread::sleep(Duration::from_millis(10));
    }
    failures.push(format!(
        "quiet phase ({what}): could not connect within {GUARD:?}"
    ));
    false
}

/// Private sends (`send_timeout`, 20 ms) until one fails — the pipe to B is full —
/// or `n` were accepted, or `limit` has passed.
fn fill(s: &mut AppThread, n: usize, limit: Duration) {
    let until = Instant::now() + limit;
    for _ in 0..n {
        if s.private(Some(Duration::from_millis(20))).is_some() || Instant::now() >= until {
            break;
        }
    }
}

/// Waits until B's application has read every private message A wrote to a socket
/// (less what B counted as received and dropped), so that no connection is still
/// closing with data to deliver. A library that lost messages never gets there: after
/// two seconds the test goes on, and the reconciliation reports the loss.
fn drained(round: &Round, receivers: &Receivers) {
    let dropped_before: u64 = receivers.stats.iter().map(|s| s.private.recv_dropped).sum();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let accounted = round.taken_total.load(SeqCst)
            + dropped_before
            + receivers.current.stats().private.recv_dropped;
        if accounted >= round.a.stats().private.sent {
            return;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// With B's application paused: a few small private messages, enough for B's
/// reader to wait for room in the inbound queue, then one larger than everything
/// the kernel can buffer (`util::unbufferable`), so that A's writer stays inside
/// that write until B's application reads again.
fn stuck_writer(s: &mut AppThread) {
    for _ in 0..16 {
        s.private(Some(Duration::from_millis(200)));
    }
    let seq = s.log.outcomes.len() as u64;
    let huge = payload(PRIVATE, s.me, seq, util::unbufferable());
    let result = s
        .round
        .a
        .send_timeout(s.round.b_id, huge, Duration::from_secs(5));
    match result {
        Ok(()) => s.log.outcomes.push(Outcome::Accepted),
        Err(e) => {
            let kind = timeout_error_kind(&e);
            s.log.outcomes.push(Outcome::Returned);
            *s.log.errors.entry(kind).or_default() += 1;
            s.log.failures.push(format!(
                "quiet phase: the large message ({seq}) was not accepted: {kind}"
            ));
        }
    }
}

/// `disconnect` of a connected B, then `connect` at once.
fn flap(s: &mut AppThread, failures: &mut Vec<String>, what: &str) -> bool {
    if !s.disconnect() {
        failures.push(format!(
            "quiet phase ({what}): disconnect found no connection right after connect"
        ));
    }
    match s.connect() {
        Connect::Ok => true,
        Connect::Duplicate { after, .. } => {
            failures.push(format!(
                "quiet phase ({what}): connect right after disconnect refused as Duplicate after {after:?} (B still reading the old connection)"
            ));
            ensure_connected(s, failures, what)
        }
        Connect::Failed => ensure_connected(s, failures, what),
    }
}

fn quiet_phase(s: &mut AppThread, receivers: &mut Receivers, failures: &mut Vec<String>) {
    let round = s.round.clone();
    let (a, b_id) = (round.a.clone(), round.b_id);

    // 1. A chain of quick reconnections behind a connection B reads slowly. First a
    //    full pipe on connection 1 (sent while B reads fast, so the kernel buffers
    //    have grown as they do under load), then B slows down.
    if !ensure_connected(s, failures, "chain") {
        return;
    }
    fill(s, 1500, Duration::from_millis(500));
    round.slow.store(true, SeqCst);
    fill(s, 3000, Duration::from_millis(300));
    // Connection 2 replaces 1 while B still has about two lingers of 1 to read;
    // connection 3 replaces 2, which is still waiting for 1.
    if !flap(s, failures, "chain, second connection") {
        round.slow.store(false, SeqCst);
        return;
    }
    fill(s, 40, Duration::from_millis(300));
    if !flap(s, failures, "chain, third connection") {
        round.slow.store(false, SeqCst);
        return;
    }
    fill(s, 40, Duration::from_millis(300));
    // Let the chain wait on connection 1 for a while (beyond a linger), then drain.
    thread::sleep(Duration::from_millis(1000));
    round.slow.store(false, SeqCst);
    // B's application is about to pause: nothing may still be draining then.
    drained(&round, receivers);

    // 2. A loses B (B restarts) with a backlog queued for it, and the application
    //    disconnects B as soon as A says it is gone. B's application pauses, from
    //    before the restart until that disconnect, with A's writer inside a write
    //    that cannot finish until B reads again: the teardown of the lost connection
    //    is still under way when `disconnect` comes. (The pause after the restart
    //    began is capped far below a linger, so the close never gives up.)
    if !ensure_connected(s, failures, "redial") {
        return;
    }
    round.stalled.store(true, SeqCst);
    stuck_writer(s);
    round.restarts.started.fetch_add(1, SeqCst);
    let taken = round.taken_now.load(SeqCst);
    let started = Instant::now();
    let old = receivers.current.clone();
    let shutdown = Worker::spawn("quiet shutdown of B", move || old.shutdown());
    let deadline = started + GUARD;
    while a.is_connected(b_id) {
        assert!(
            Instant::now() < deadline,
            "A did not notice B's shutdown within {GUARD:?}"
        );
        if started.elapsed() > Duration::from_millis(100) {
            round.stalled.store(false, SeqCst);
        }
        thread::yield_now();
    }
    s.disconnect();
    round.stalled.store(false, SeqCst);
    shutdown.join();
    receivers.at_shutdown.push((taken, started.elapsed()));
    receivers.stats.push(receivers.current.stats());
    receivers.bind_next();
    round.restarts.finished.fetch_add(1, SeqCst);
    let fresh = receivers.current.clone();
    let window = Instant::now() + REDIAL_WINDOW;
    let mut redialled = None;
    while let Ok(event) = fresh.events().recv_deadline(window) {
        if let Event::Connected { conn, .. } = event {
            redialled = Some(conn);
            break;
        }
    }
    if redialled.is_some() || a.is_connected(b_id) {
        failures.push(format!(
            "quiet phase: A connected to the restarted B ({}) though its application had called disconnect after losing B and nobody called connect: the redial was not cancelled",
            redialled.map_or("seen by is_connected".to_owned(), |c| c.to_string())
        ));
    }
}

// ---------------------------------------------------------------------------------
// One round and its reconciliation

struct Outcomes {
    senders: Vec<SenderLog>,
    consumer: ConsumerLog,
    events: EventLog,
    a_stats: NodeStats,
    b_stats: Vec<NodeStats>,
    at_shutdown: Vec<(u64, Duration)>,
    quiet_time: Duration,
    failures: Vec<String>,
}

fn run_round(number: u64, receiver_arbitrates: bool, seed: u64, storm: Duration) -> Outcomes {
    let (a_id, b_id) = if receiver_arbitrates {
        (PeerId(2), PeerId(1))
    } else {
        (PeerId(1), PeerId(2))
    };
    let a =
        Arc::new(Node::bind(a_id, "127.0.0.1:0", sender_config()).expect("bind A on 127.0.0.1:0"));
    let b = Arc::new(
        Node::bind(b_id, "127.0.0.1:0", receiver_config()).expect("bind B on 127.0.0.1:0"),
    );
    let round = Arc::new(Round {
        a: a.clone(),
        b_id,
        b_addr: b.local_addr(),
        deadline: Instant::now() + storm,
        disconnects: Epoch::default(),
        restarts: Epoch::default(),
        last_restart_done: Mutex::new(None),
        taken_now: AtomicU64::new(0),
        taken_total: AtomicU64::new(0),
        slow: AtomicBool::new(false),
        stalled: AtomicBool::new(false),
    });
    let (to_consumer, incarnations) = crossbeam_channel::unbounded();
    to_consumer.send((0, b.clone())).unwrap();
    let consumer = {
        let (round, rng) = (round.clone(), Rng::derive(seed, number, 100));
        Worker::spawn("B's consumer", move || {
            consume(incarnations, round, a_id, rng)
        })
    };
    let events = {
        let a = a.clone();
        Worker::spawn("A's event reader", move || watch_events(a))
    };
    assert_eq!(a.connect(round.b_addr).expect("first connect"), b_id);

    let senders: Vec<Worker<SenderLog>> = (0..SENDERS)
        .map(|me| {
            let s = AppThread::new(round.clone(), me, Rng::derive(seed, number, u64::from(me)));
            Worker::spawn(format!("sender {me}"), move || s.storm())
        })
        .collect();
    let mut receivers = Receivers {
        round: round.clone(),
        current: b,
        index: 0,
        to_consumer,
        stats: Vec::new(),
        at_shutdown: Vec::new(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let restarter = {
        let mut rng = Rng::derive(seed, number, 200);
        let deadline = round.deadline;
        let stop = stop.clone();
        Worker::spawn("B's restarter", move || {
            loop {
                let next = Instant::now() + rng.millis(400, 1600);
                while Instant::now() < next && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(5));
                }
                if Instant::now() >= deadline || stop.load(SeqCst) {
                    break;
                }
                receivers.restart();
            }
            receivers
        })
    };

    let mut senders: Vec<SenderLog> = senders.into_iter().map(Worker::join).collect();
    stop.store(true, SeqCst);
    let mut receivers = restarter.join();

    let mut failures = Vec::new();
    let mut quiet = AppThread::new(round.clone(), SENDERS, Rng::derive(seed, number, 300));
    let quiet_started = Instant::now();
    quiet_phase(&mut quiet, &mut receivers, &mut failures);
    let quiet_time = quiet_started.elapsed();
    senders.push(quiet.log);

    // The last B, then A; then everything they had queued has been read.
    receivers.shut_current();
    let Receivers {
        stats: b_stats,
        at_shutdown,
        to_consumer,
        ..
    } = receivers;
    drop(to_consumer);
    let a_shut = a.clone();
    Worker::spawn("shutdown of A", move || a_shut.shutdown()).join();
    let a_stats = a.stats();
    let events = events.join();
    let consumer = consumer.join();
    Outcomes {
        senders,
        consumer,
        events,
        a_stats,
        b_stats,
        at_shutdown,
        quiet_time,
        failures,
    }
}

/// Lists seqs compactly: `3-7, 9, 12-40`.
fn ranges(seqs: &[u64]) -> String {
    let mut out = String::new();
    let mut i = 0;
    let mut shown = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        if shown == SHOW {
            let _ = write!(out, ", …");
            break;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        if i == j {
            let _ = write!(out, "{}", seqs[i]);
        } else {
            let _ = write!(out, "{}-{}", seqs[i], seqs[j]);
        }
        shown += 1;
        i = j + 1;
    }
    out
}

/// Checks everything the module documentation promises; returns the failures and
/// a summary.
fn reconcile(o: &Outcomes) -> (Vec<String>, String) {
    let mut failures = o.failures.clone();
    for log in &o.senders {
        failures.extend(log.failures.iter().cloned());
    }
    failures.extend(o.consumer.failures.iter().cloned());
    failures.extend(o.events.failures.iter().cloned());

    let threads = o.senders.len();
    let mut delivered: Vec<Vec<u32>> = o
        .senders
        .iter()
        .map(|l| vec![0; l.outcomes.len()])
        .collect();
    let mut handed: Vec<Vec<u32>> = delivered.clone();

    // Order: per sender, strictly increasing over all incarnations in order.
    let mut order = Vec::new();
    let mut phantom = Vec::new();
    let mut last: Vec<Option<(usize, u64)>> = vec![None; threads];
    for (inc, got) in o.consumer.incarnations.iter().enumerate() {
        for &(t, s) in &got.private {
            let t = t as usize;
            if t >= threads || s as usize >= delivered[t].len() {
                phantom.push(format!(
                    "B #{inc} got thread {t} seq {s}, which was never sent"
                ));
                continue;
            }
            delivered[t][s as usize] += 1;
            if let Some((prev_inc, prev)) = last[t] {
                if s <= prev {
                    let what = if delivered[t][s as usize] > 1 {
                        "duplicate"
                    } else {
                        "out of order"
                    };
                    order.push(format!(
                        "thread {t}: seq {s} delivered by B #{inc} after seq {prev} (B #{prev_inc}): {what}"
                    ));
                }
            }
            last[t] = Some((inc, s));
        }
    }
    let mut gossip_order = Vec::new();
    let mut last_gossip: Vec<Option<(usize, u64)>> = vec![None; threads];
    let mut gossip_delivered = 0;
    for (inc, got) in o.consumer.incarnations.iter().enumerate() {
        gossip_delivered += got.gossip.len();
        for &(t, s) in &got.gossip {
            let t = t as usize;
            if let Some((prev_inc, prev)) = last_gossip[t.min(threads - 1)] {
                if s <= prev {
                    gossip_order.push(format!(
                        "thread {t}: gossip {s} delivered by B #{inc} after gossip {prev} (B #{prev_inc})"
                    ));
                }
            }
            last_gossip[t.min(threads - 1)] = Some((inc, s));
        }
    }

    let mut bad_handback = Vec::new();
    for &(t, s) in &o.events.undelivered {
        let t = t as usize;
        if t >= threads || s as usize >= handed[t].len() {
            bad_handback.push(format!(
                "Undelivered handed back thread {t} seq {s}, which was never sent"
            ));
            continue;
        }
        handed[t][s as usize] += 1;
    }

    let (mut accepted, mut returned) = (0u64, 0u64);
    let (mut delivered_ok, mut handed_ok, mut missing_total) = (0u64, 0u64, 0u64);
    let mut twice = Vec::new();
    let mut both = Vec::new();
    let mut after_error = Vec::new();
    let mut missing_lines = Vec::new();
    for (t, log) in o.senders.iter().enumerate() {
        let mut missing = Vec::new();
        for (s, &outcome) in log.outcomes.iter().enumerate() {
            let (d, h) = (delivered[t][s], handed[t][s]);
            match outcome {
                Outcome::Returned => {
                    returned += 1;
                    if d > 0 || h > 0 {
                        after_error.push(format!(
                            "thread {t} seq {s}: its send returned an error, yet it was delivered {d}x and handed back {h}x"
                        ));
                    }
                }
                Outcome::Accepted => {
                    accepted += 1;
                    if d > 1 {
                        twice.push(format!("thread {t} seq {s}: delivered {d} times"));
                    }
                    if h > 1 {
                        twice.push(format!("thread {t} seq {s}: handed back {h} times"));
                    }
                    if d > 0 && h > 0 {
                        both.push(format!("thread {t} seq {s}: delivered and handed back"));
                    }
                    if d > 0 {
                        delivered_ok += 1;
                    } else if h > 0 {
                        handed_ok += 1;
                    } else {
                        missing.push(s as u64);
                    }
                }
            }
        }
        if !missing.is_empty() {
            missing_total += missing.len() as u64;
            let last_delivered =
                last[t].map_or("none".to_owned(), |(inc, s)| format!("{s} (B #{inc})"));
            missing_lines.push(format!(
                "thread {t}: {} accepted, neither delivered nor handed back: {} (last delivered {last_delivered})",
                missing.len(),
                ranges(&missing)
            ));
        }
    }

    let delivered_total: usize = o
        .consumer
        .incarnations
        .iter()
        .map(|d| d.private.len())
        .sum();
    let handed_total = o.events.undelivered.len() as u64;
    let recv_dropped: u64 = o.b_stats.iter().map(|s| s.private.recv_dropped).sum();
    let b_received: u64 = o.b_stats.iter().map(|s| s.private.received).sum();
    let a_dropped = o.a_stats.private.dropped;
    let a_sent = o.a_stats.private.sent;

    let mut add = |what: &str, list: Vec<String>| {
        if !list.is_empty() {
            let mut text = format!("{what} ({}):", list.len());
            for line in list.iter().take(SHOW) {
                let _ = write!(text, "\n      {line}");
            }
            failures.push(text);
        }
    };
    add("private messages out of order or duplicated", order);
    add("private messages B got that A never sent", phantom);
    add("messages delivered or handed back twice", twice);
    add("messages both delivered and handed back", both);
    add(
        "messages handed back by a send error and then delivered or handed back",
        after_error,
    );
    add("bad Undelivered entries", bad_handback);
    add("gossip out of order or duplicated", gossip_order);

    if o.b_stats.len() != o.consumer.incarnations.len() {
        failures.push(format!(
            "{} B incarnations shut down, the consumer read {}",
            o.b_stats.len(),
            o.consumer.incarnations.len()
        ));
    }
    for (i, (st, got)) in o.b_stats.iter().zip(&o.consumer.incarnations).enumerate() {
        if st.private.received != got.private.len() as u64 {
            failures.push(format!(
                "B #{i}: private.received is {} but its application read {} private messages",
                st.private.received,
                got.private.len()
            ));
        }
    }

    let balance = delivered_ok + handed_ok + recv_dropped + a_dropped;
    if accepted != balance || missing_total != recv_dropped + a_dropped {
        let mut text = format!(
            "private accounting: accepted {accepted} != delivered {delivered_ok} + handed back {handed_ok} + recv_dropped {recv_dropped} + A dropped {a_dropped} (= {balance}); \
             {missing_total} accepted messages neither delivered nor handed back; \
             A wrote {a_sent} to sockets, B incarnations received {b_received} + recv_dropped {recv_dropped} (so {} written but never read by B)",
            a_sent as i64 - (b_received + recv_dropped) as i64
        );
        for line in missing_lines.iter().take(SHOW) {
            let _ = write!(text, "\n      {line}");
        }
        failures.push(text);
    }

    let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
    let mut connects: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut disconnects, mut gossip_attempts, mut gossip_queued) = (0, 0, 0);
    for log in &o.senders {
        for (k, v) in &log.errors {
            *errors.entry(k).or_default() += v;
        }
        for (k, v) in &log.connects {
            *connects.entry(k.as_str()).or_default() += v;
        }
        disconnects += log.disconnects;
        gossip_attempts += log.gossip_attempts;
        gossip_queued += log.gossip_queued;
    }
    let most_after_shutdown = o
        .at_shutdown
        .iter()
        .zip(&o.consumer.incarnations)
        .map(|((taken, _), got)| got.private.len() as u64 - taken.min(&(got.private.len() as u64)))
        .max()
        .unwrap_or(0);
    let longest_shutdown = o
        .at_shutdown
        .iter()
        .map(|(_, d)| *d)
        .max()
        .unwrap_or_default();
    let summary = format!(
        "{} private attempts: {accepted} accepted = {delivered_ok} delivered + {handed_ok} handed back (of {handed_total} in {} Undelivered events) + {recv_dropped} recv_dropped + {a_dropped} dropped; {returned} returned by send {errors:?}\n  \
         gossip: {gossip_attempts} attempts, {gossip_queued} queued, {gossip_delivered} delivered; \
         {} B incarnations, B's application read {delivered_total} private; A wrote {a_sent}\n  \
         {disconnects} disconnects, connects {connects:?}; A saw {} connections, ended {:?}\n  \
         longest B shutdown {longest_shutdown:?}, most private messages read from a B after its shutdown began: {most_after_shutdown}; quiet phase {:.1?}",
        accepted + returned,
        o.events.undelivered_events,
        o.b_stats.len(),
        o.events.connected,
        o.events.disconnected,
        o.quiet_time,
    );
    (failures, summary)
}

#[test]
fn every_private_message_is_delivered_once_in_order_or_accounted_for() {
    let _ = env_logger::builder()
        .is_test(true)
        .format_timestamp_micros()
        .try_init();
    let secs = env_secs();
    let seed = env_seed();
    let storm = Duration::from_secs_f64(secs / 2.0);
    let started = Instant::now();
    let mut report = String::new();
    let mut failed = false;
    for (number, receiver_arbitrates) in [(0u64, false), (1u64, true)] {
        let who = if receiver_arbitrates {
            "receiver arbitrates"
        } else {
            "sender arbitrates"
        };
        let round_started = Instant::now();
        let outcomes = run_round(number, receiver_arbitrates, seed, storm);
        let (failures, summary) = reconcile(&outcomes);
        let _ = writeln!(
            report,
            "round {number} ({who}, {:.1?}): {summary}",
            round_started.elapsed()
        );
        if !failures.is_empty() {
            failed = true;
            let _ = writeln!(report, "  FAILURES in round {number}:");
            for f in &failures {
                let _ = writeln!(report, "  - {f}");
            }
        }
    }
    let header = format!(
        "reconnect storm, WIRELANE_STORM_SEED={seed:#x} WIRELANE_STORM_SECS={secs}, {:.1?} in all",
        started.elapsed()
    );
    if failed {
        panic!("{header}\n{report}");
    }
    println!("{header}\n{report}");
}
