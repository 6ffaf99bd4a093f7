//! The handler variant of the seed deadlock: each node's receiving thread answers
//! every private request with a private reply, a blocking send made on the delivery
//! path, while flood threads on both sides keep the capacity-1 private lanes full.
//!
//! The private lanes hold one message, so senders and the handler contend for them on
//! every send; a lock held while waiting there (the Fabric bug) stops the writer and
//! freezes both nodes at once. The window each node grants its peer
//! (`Config::private_window`) is sized to hold what the peer can send: a handler
//! that blocks in a plain `send` while it is the only consumer of its own inbound
//! queue makes a cycle through the application, which any bounded system can fill
//! (see docs/guarantees.md); that cycle is the application's, not the crate's, and
//! `respond` is the way out of it (tests/answering_on_the_receive_loop.rs).

mod util;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use util::{config, connect, finishes, node_with, tagged, untag};
use wirelane::{Lane, Node, PeerId};

const FLOODERS: u8 = 4;
const PER_FLOODER: u32 = 2_500;
const REQUEST: u8 = 0;
const REPLY: u8 = 1;

/// Payload: [kind][flooder][seq].
fn payload(kind: u8, flooder: u8, seq: u32) -> Vec<u8> {
    let mut p = vec![kind];
    p.extend(tagged(flooder, seq, 8));
    p
}

fn run_side(node: Arc<Node>, peer: PeerId) -> thread::JoinHandle<(Vec<Vec<u32>>, u32)> {
    thread::spawn(move || {
        thread::scope(|s| {
            for flooder in 0..FLOODERS {
                let node = &node;
                s.spawn(move || {
                    for seq in 0..PER_FLOODER {
                        node.send(peer, payload(REQUEST, flooder, seq))
                            .expect("request");
                    }
                });
            }
            // The handler: every request gets a reply, sent from this receiving thread.
            let handler = s.spawn(|| {
                let total = u32::from(FLOODERS) * PER_FLOODER;
                let mut replies = vec![Vec::new(); FLOODERS as usize];
                let (mut got_replies, mut answered) = (0, 0);
                while got_replies < total || answered < total {
                    let m = node.incoming().recv().expect("inbound");
                    assert_eq!((m.from, m.lane), (peer, Lane::Private));
                    let (flooder, seq) = untag(&m.payload[1..]);
                    if m.payload[0] == REQUEST {
                        node.send(peer, payload(REPLY, flooder, seq))
                            .expect("reply");
                        answered += 1;
                    } else {
                        replies[flooder as usize].push(seq);
                        got_replies += 1;
                    }
                }
                (replies, answered)
            });
            handler.join().expect("handler")
        })
    })
}

#[test]
fn handlers_replying_on_the_delivery_path_while_both_sides_flood_finish() {
    let in_flight = 2 * usize::from(FLOODERS) * PER_FLOODER as usize;
    let cfg = config().private_capacity(1).private_window(in_flight + 16);
    let a = Arc::new(node_with(1, cfg.clone()));
    let b = Arc::new(node_with(2, cfg));
    connect(&a, &b);

    let (at_a, at_b) = finishes("flood with replying handlers", Duration::from_secs(300), {
        let (a, b) = (a.clone(), b.clone());
        move || {
            let at_a = run_side(a, PeerId(2));
            let at_b = run_side(b, PeerId(1));
            (at_a.join().expect("node a"), at_b.join().expect("node b"))
        }
    });

    // Every request was answered once, and every reply came back once, in order.
    let expected: Vec<u32> = (0..PER_FLOODER).collect();
    for (name, (replies, answered)) in [("a", at_a), ("b", at_b)] {
        assert_eq!(
            answered,
            u32::from(FLOODERS) * PER_FLOODER,
            "requests answered by {name}"
        );
        for (flooder, seqs) in replies.iter().enumerate() {
            assert_eq!(seqs, &expected, "replies at {name} for flooder {flooder}");
        }
    }
    // Counters trail delivery by a moment (they are added once per batch).
    let all = 2 * u64::from(FLOODERS) * u64::from(PER_FLOODER);
    for (node, peer) in [(&a, PeerId(2)), (&b, PeerId(1))] {
        util::wait_until("the counters show every message", || {
            let s = node.peer_stats(peer).unwrap().private;
            s.sent == all && s.received == all
        });
        let s = node.peer_stats(peer).unwrap().private;
        assert_eq!(s.dropped + s.recv_dropped, 0);
    }
}
