//! Private messages across quick reconnections and a peer restarting on the same
//! port: one node's senders stream to the peer while the connection is closed and
//! made again every few milliseconds, and every fifth time the peer's node is shut
//! down and a new one bound in its place. Every message a `send` accepted is
//! delivered once, in order, or handed back in `Undelivered` (or counted by the
//! receiving node as dropped at a close, `docs/guarantees.md`). Run in plaintext
//! and over TLS.
//!
//! Over TLS this lost a message now and then (counted as sent, never received): a
//! node stopped reading at the peer's goodbye and closed its socket with the
//! peer's `close_notify` unread, which resets the connection and throws away what
//! its kernel had not sent yet.

mod util;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use util::wire::Wire;
use util::{config, tagged, untag, GUARD};
use wirelane::{Config, Event, Lane, Node, PeerId};

const SENDERS: u8 = 3;
/// Closes and reconnections; the peer restarts every `RESTART_EVERY`. The last
/// rounds are reconnections to the same node, whose connections share the peer's
/// window.
const ROUNDS: u32 = 402;
const RESTART_EVERY: u32 = 5;

type PerSender = Arc<Mutex<Vec<Vec<u32>>>>;

fn record(into: &Mutex<Vec<Vec<u32>>>, payload: &[u8]) {
    let (sender, seq) = untag(payload);
    into.lock().unwrap()[sender as usize].push(seq);
}

fn b_config() -> Config {
    config()
        .max_frame_len(1 << 20)
        .private_window(8)
        .inbound_capacity(4)
        .linger(Duration::from_millis(200))
}

/// Takes what `b` delivered, and what it counted as dropped, before it goes.
fn retire(b: &Node, delivered: &Mutex<Vec<Vec<u32>>>, dropped: &AtomicU64) {
    b.shutdown();
    for m in b.incoming().try_iter() {
        if m.lane == Lane::Private {
            record(delivered, &m.payload);
        }
    }
    dropped.fetch_add(b.stats().private.recv_dropped, SeqCst);
}

fn churn(wire: Wire) {
    let a = Arc::new(
        wire.node(
            1,
            config()
                .private_capacity(16)
                .max_frame_len(1 << 20)
                .linger(Duration::from_millis(200)),
        ),
    );
    let first = wire.node(2, b_config());
    let addr: SocketAddr = first.local_addr();
    let b = Arc::new(Mutex::new(Some(Arc::new(first))));
    a.connect(addr).expect("connect");

    let stop = Arc::new(AtomicBool::new(false));
    let per_sender = || -> PerSender { Arc::new(Mutex::new(vec![Vec::new(); SENDERS as usize])) };
    let (accepted, returned, delivered) = (per_sender(), per_sender(), per_sender());
    let dropped = Arc::new(AtomicU64::new(0));

    // Follows b across restarts.
    let consumer = {
        let (b, delivered, stop) = (b.clone(), delivered.clone(), stop.clone());
        let mut taken = 0u64;
        thread::spawn(move || loop {
            let node = b.lock().unwrap().clone();
            let Some(node) = node else {
                if stop.load(SeqCst) {
                    return;
                }
                thread::yield_now();
                continue;
            };
            if let Ok(m) = node.incoming().recv_timeout(Duration::from_millis(20)) {
                if m.lane == Lane::Private {
                    record(&delivered, &m.payload);
                }
                taken += 1;
                if taken % 500 == 0 {
                    // A slow application now and then: the peer's window fills.
                    thread::sleep(Duration::from_millis(30));
                }
            }
        })
    };
    let events = {
        let (a, returned) = (a.clone(), returned.clone());
        thread::spawn(move || {
            for event in a.events().iter() {
                if let Event::Undelivered { messages, .. } = event {
                    for m in messages {
                        record(&returned, &m);
                    }
                }
            }
        })
    };
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (a, accepted, stop) = (a.clone(), accepted.clone(), stop.clone());
            thread::spawn(move || {
                let mut seq = 0;
                while !stop.load(SeqCst) {
                    // A refused send hands the message back in its error: it was
                    // never accepted.
                    // Mostly small, one in fifty large: a large frame is what a
                    // socket's send buffer still holds whole when it is closed.
                    let len = if seq % 50 == 0 { 512 * 1024 } else { 64 };
                    let sent =
                        a.send_timeout(PeerId(2), tagged(s, seq, len), Duration::from_millis(50));
                    if sent.is_ok() {
                        accepted.lock().unwrap()[s as usize].push(seq);
                    } else {
                        thread::yield_now();
                    }
                    seq += 1;
                }
                seq
            })
        })
        .collect();

    for round in 1..=ROUNDS {
        thread::sleep(Duration::from_millis(10));
        a.disconnect(PeerId(2));
        if round % RESTART_EVERY == 0 {
            let old = b.lock().unwrap().take().expect("b");
            retire(&old, &delivered, &dropped);
            let guard = Instant::now() + GUARD;
            let new = loop {
                match Node::bind(PeerId(2), addr, wire.config(2, b_config())) {
                    Ok(node) => break node,
                    Err(e) => {
                        assert!(Instant::now() < guard, "could not bind {addr} again: {e}");
                        thread::yield_now();
                    }
                }
            };
            *b.lock().unwrap() = Some(Arc::new(new));
        }
        let guard = Instant::now() + GUARD;
        while let Err(e) = a.connect(addr) {
            assert!(
                Instant::now() < guard,
                "no reconnection within {GUARD:?}: {e}"
            );
            thread::yield_now();
        }
    }
    // Private data keeps flowing on the last connection.
    let total = |d: &PerSender| d.lock().unwrap().iter().map(Vec::len).sum::<usize>();
    let (before, guard) = (total(&delivered), Instant::now() + GUARD);
    while total(&delivered) < before + 200 {
        assert!(
            Instant::now() < guard,
            "private messages stopped after the churn: {:?}",
            a.peer_stats(PeerId(2))
        );
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, SeqCst);
    let next: Vec<u32> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    // Private data still flows after the churn: one more message from each sender
    // arrives, behind whatever was queued. (A grant due to the live connection used
    // to be spent on one that was ending, and the sender's window stayed closed.)
    for (s, &seq) in next.iter().enumerate() {
        a.send_timeout(PeerId(2), tagged(s as u8, seq, 64), GUARD)
            .expect("the private lane is still moving");
        accepted.lock().unwrap()[s].push(seq);
    }
    let guard = Instant::now() + GUARD;
    while (0..SENDERS as usize).any(|s| delivered.lock().unwrap()[s].last() != Some(&next[s])) {
        assert!(
            Instant::now() < guard,
            "the last messages were not delivered within {GUARD:?}: {:?}",
            a.peer_stats(PeerId(2))
        );
        thread::sleep(Duration::from_millis(5));
    }
    // What is still queued comes back when a shuts down.
    a.shutdown();
    let last = b.lock().unwrap().take().expect("b");
    consumer.join().unwrap();
    retire(&last, &delivered, &dropped);
    events.join().unwrap();

    let (accepted, returned, delivered) = (
        accepted.lock().unwrap(),
        returned.lock().unwrap(),
        delivered.lock().unwrap(),
    );
    let dropped = dropped.load(SeqCst);
    let mut missing = Vec::new();
    for s in 0..SENDERS as usize {
        let mut seen = vec![0u8; accepted[s].last().map_or(0, |&l| l as usize + 1)];
        // Order holds per incarnation of b; across a restart nothing is ordered.
        for &seq in delivered[s].iter().chain(&returned[s]) {
            seen[seq as usize] += 1;
        }
        for &seq in &accepted[s] {
            match seen[seq as usize] {
                1 => {}
                0 => missing.push((s, seq)),
                n => panic!("sender {s}: message {seq} delivered or handed back {n} times"),
            }
        }
    }
    assert_eq!(
        missing.len() as u64,
        dropped,
        "messages neither delivered nor handed back {missing:?}, against {dropped} \
         counted as dropped on receipt"
    );
}

#[test]
fn quick_reconnections_and_restarts_lose_nothing_in_plaintext() {
    churn(Wire::Plain);
}

#[cfg(feature = "tls")]
#[test]
fn quick_reconnections_and_restarts_lose_nothing_over_tls() {
    churn(Wire::tls());
}
