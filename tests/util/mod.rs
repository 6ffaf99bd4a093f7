//! Helpers shared by the behaviour tests.
//!
//! Every blocking wait here has a deadline that only turns a hang into a failure; no
//! test uses a sleep to decide what happened.
#![allow(dead_code)]

#[cfg(feature = "tls")]
pub mod certs;
pub mod chain;
pub mod idle;
// Only the TLS refusal tests count log lines; the bench crate, which shares these
// helpers, has no `log` dependency and never enables the feature.
#[cfg(feature = "tls")]
pub mod logs;
pub mod raw;
pub mod refusal;
pub mod relay;
pub mod wire;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use wirelane::crossbeam_channel::Receiver;
use wirelane::{Bytes, Config, Event, Node, PeerId, SendError};

/// How long any single wait may take before the test fails. Generous: CI machines are
/// busy, and the deadline only exists so a hang fails instead of stalling.
pub const GUARD: Duration = Duration::from_secs(60);

/// Defaults for tests: a short linger so shutdowns against silent peers stay quick.
pub fn config() -> Config {
    Config::default().linger(Duration::from_millis(500))
}

pub fn node(id: u64) -> Node {
    node_with(id, config())
}

pub fn node_with(id: u64, config: Config) -> Node {
    Node::bind(PeerId(id), "127.0.0.1:0", config).expect("bind 127.0.0.1:0")
}

/// Connects `a` to `b` and checks the ids.
pub fn connect(a: &Node, b: &Node) -> PeerId {
    let peer = a.connect(b.local_addr()).expect("connect");
    assert_eq!(peer, b.id());
    peer
}

/// Receives with the guard deadline.
#[track_caller]
pub fn recv<T>(rx: &Receiver<T>) -> T {
    match rx.recv_timeout(GUARD) {
        Ok(v) => v,
        Err(e) => panic!("nothing received within {GUARD:?}: {e}"),
    }
}

/// Skips events until one matches.
#[track_caller]
pub fn event(node: &Node, what: &str, mut matches: impl FnMut(&Event) -> bool) -> Event {
    let deadline = Instant::now() + GUARD;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match node.events().recv_timeout(left) {
            Ok(e) if matches(&e) => return e,
            Ok(_) => {}
            Err(e) => panic!("{}: no {what} event within {GUARD:?}: {e}", node.id()),
        }
    }
}

/// Polls a condition until it holds. For state that has no event to wait on (a
/// counter reaching a value); the deadline is only a failure guard.
#[track_caller]
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + GUARD;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `f` on its own thread and fails the test if it does not finish within
/// `limit` — so that a deadlock fails the test instead of hanging CI.
#[track_caller]
pub fn finishes<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name(format!("test: {what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn test thread");
    match rx.recv_timeout(limit) {
        Ok(v) => {
            handle.join().expect("test thread");
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} did not finish within {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The closure panicked: surface its panic.
            match handle.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the closure sends before returning"),
            }
        }
    }
}

/// Threads of this process right now.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// Resident memory of this process, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// `len` deterministic pseudo-random bytes from `seed` (xorshift): cheap at any
/// length, and different for every seed.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A payload that says who sent it and its sequence number.
pub fn tagged(sender: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(5)];
    p[0] = sender;
    p[1..5].copy_from_slice(&seq.to_be_bytes());
    p
}

/// Reads back what [`tagged`] wrote.
pub fn untag(payload: &[u8]) -> (u8, u32) {
    (
        payload[0],
        u32::from_be_bytes(payload[1..5].try_into().unwrap()),
    )
}

/// A payload larger than everything the kernel can buffer on a loopback connection
/// (both socket buffers at their maximum), so that writing it blocks for good when
/// the peer stops reading.
pub fn unbufferable() -> usize {
    let max = |path: &str| -> usize {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().last().and_then(|v| v.parse().ok()))
            .unwrap_or(8 << 20)
    };
    max("/proc/sys/net/ipv4/tcp_rmem") + max("/proc/sys/net/ipv4/tcp_wmem") + (16 << 20)
}

/// For a node that will never read its inbound queue: room for one gossip message,
/// a window of two private messages (the third a peer sends stays with the peer's
/// writer), and a frame limit that admits an [`unbufferable`] payload.
pub fn silent_receiver() -> Config {
    config()
        .inbound_capacity(1)
        .private_window(2)
        .max_frame_len(unbufferable() as u32)
}

/// A sender thread blocked for good on a full private lane.
pub struct StuckSender {
    /// Ends with the sequence number of the message that came back, and the error.
    pub thread: thread::JoinHandle<(u32, SendError<Bytes>)>,
    /// The sequence number of the message it is blocked on.
    pub blocked_on: u32,
}

/// Sends private messages from `from` to `to` on a new thread until the sender
/// blocks for good; `to` must run with [`silent_receiver`] and never read, and
/// `capacity` must be `from`'s private lane capacity.
///
/// Messages 0 and 1 are small: the peer delivers the first into its inbound queue
/// and then waits, reading nothing more, to deliver the second. Message 2 is
/// [`unbufferable`], so the writer blocks inside its write for good. Then small
/// messages fill the lane. When the thread is waiting on message `3 + capacity`, the
/// lane holds messages 3 to `2 + capacity`, so message 2 has left it: nothing can
/// move any more.
pub fn stuck_sender(from: &Arc<Node>, to: PeerId, capacity: usize) -> StuckSender {
    let huge = unbufferable();
    let attempting = Arc::new(AtomicU32::new(0));
    let thread = {
        let (from, attempting) = (from.clone(), attempting.clone());
        thread::spawn(move || {
            for seq in 0.. {
                attempting.store(seq, Ordering::SeqCst);
                let len = if seq == 2 { huge } else { 16 };
                if let Err(e) = from.send(to, tagged(1, seq, len)) {
                    return (seq, e);
                }
            }
            unreachable!()
        })
    };
    let blocked_on = 3 + capacity as u32;
    wait_until("the sender is blocked for good on a full lane", || {
        attempting.load(Ordering::SeqCst) == blocked_on
            && from.peer_stats(to).is_some_and(|s| s.blocked_senders == 1)
    });
    StuckSender { thread, blocked_on }
}

/// Counts panics on the node's own threads (named `wl…`) from now on, so a test can
/// check that hostile input never panics one — a panic there would otherwise only
/// end the connection, which looks like a refusal.
pub fn count_node_panics() -> Arc<AtomicU32> {
    let count = Arc::new(AtomicU32::new(0));
    let seen = count.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if thread::current()
            .name()
            .is_some_and(|n| n.starts_with("wl"))
        {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
    count
}

/// Shuts `node` down, so that every event it will ever report is queued, and
/// returns them all, oldest first.
pub fn events_after_shutdown(node: &Node) -> Vec<Event> {
    node.shutdown();
    node.events().try_iter().collect()
}
