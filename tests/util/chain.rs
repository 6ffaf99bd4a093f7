//! A chain of reconnections under backlog, for the order and no-loss tests.
//!
//! B reads slowly (one message every 20 ms, room for one in its inbound queue), so
//! the first connection's messages take about two seconds to deliver. Meanwhile A
//! closes and reopens its connection twice, writing a few messages on each: three
//! connections from A are alive on B at once, each waiting for its turn.

use std::thread;
use std::time::Duration;

use wirelane::crossbeam_channel::RecvTimeoutError;
use wirelane::{Bytes, Event, Node, PeerId};

use super::{config, node_with, tagged, untag, wait_until, GUARD};

/// What each side saw, once both have shut down.
pub struct Chain {
    /// Every message A's `send` accepted, in the order it was sent.
    pub accepted: Vec<u32>,
    /// Every message A's `send` refused (the message came back in the error).
    pub refused: Vec<u32>,
    /// What B's application received from A, in the order it received it.
    pub delivered: Vec<u32>,
    /// What came back to A in `Event::Undelivered`.
    pub undelivered: Vec<u32>,
    /// Private messages B counted as dropped (`recv_dropped`).
    pub recv_dropped: u64,
}

const A: PeerId = PeerId(1);
const B: PeerId = PeerId(2);

/// Sends `seqs` to B on A's current connection and waits until A has written them
/// all (so that they are on the wire, not in A's lane, when the connection closes).
fn send_round(a: &Node, seqs: std::ops::RangeInclusive<u32>, chain: &mut Chain) {
    let before = a.peer_stats(B).map_or(0, |s| s.private.sent);
    let mut accepted = 0;
    for seq in seqs {
        match a.send(B, tagged(b'a', seq, 64)) {
            Ok(()) => {
                chain.accepted.push(seq);
                accepted += 1;
            }
            Err(e) => chain.refused.push(untag(&e.into_inner()).1),
        }
    }
    wait_until("A has written the round's messages", || {
        a.peer_stats(B)
            .is_none_or(|s| s.private.sent >= before + accepted)
    });
}

/// A closes its connection to B and dials B again.
fn reconnect(a: &Node, b: &Node) {
    let old = a.peer_stats(B).expect("connected").conn;
    assert!(a.disconnect(B), "there was a connection to close");
    wait_until("A has a new connection to B", || {
        a.connect(b.local_addr()).is_ok() && a.peer_stats(B).is_some_and(|s| s.conn != old)
    });
}

/// Runs the chain: A sends 1..=100, reconnects, sends 101..=110, reconnects, sends
/// 111..=120, disconnects; then both nodes shut down and everything is tallied.
pub fn run() -> Chain {
    let linger = Duration::from_millis(500);
    let a = node_with(1, config().linger(linger));
    let b = node_with(2, config().linger(linger).inbound_capacity(1));
    let consumer = {
        let incoming = b.incoming().clone();
        thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                match incoming.recv_timeout(GUARD) {
                    Ok(m) => {
                        if m.from == A {
                            got.push(untag(&m.payload).1);
                        }
                        // Paces a slow application; decides nothing.
                        thread::sleep(Duration::from_millis(20));
                    }
                    // B has shut down and its queue is empty.
                    Err(RecvTimeoutError::Disconnected) => return got,
                    Err(RecvTimeoutError::Timeout) => {
                        panic!("B's queue neither delivered nor closed within {GUARD:?}")
                    }
                }
            }
        })
    };
    let mut chain = Chain {
        accepted: Vec::new(),
        refused: Vec::new(),
        delivered: Vec::new(),
        undelivered: Vec::new(),
        recv_dropped: 0,
    };
    assert_eq!(a.connect(b.local_addr()).expect("connect"), B);
    send_round(&a, 1..=100, &mut chain);
    reconnect(&a, &b);
    send_round(&a, 101..=110, &mut chain);
    reconnect(&a, &b);
    send_round(&a, 111..=120, &mut chain);
    assert!(a.disconnect(B));

    // Quiescence: once both have shut down every thread is joined, so nothing more
    // can be delivered, handed back or dropped.
    a.shutdown();
    b.shutdown();
    chain.delivered = consumer.join().expect("B's application");
    while let Ok(event) = a.events().try_recv() {
        if let Event::Undelivered { messages, .. } = event {
            chain
                .undelivered
                .extend(messages.iter().map(|m: &Bytes| untag(m).1));
        }
    }
    chain.recv_dropped = b.stats().private.recv_dropped;
    chain
}
