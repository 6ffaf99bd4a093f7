//! The scenario that froze Fabric (FAB-10469): two peers, each flooding the other with
//! private messages through a full buffer. With capacity-1 queues everywhere, every
//! send waits; because no lock is held while waiting, the writers keep draining and
//! the run finishes with every message delivered exactly once, in order — in
//! plaintext and over TLS, whose session state the reader and writer share.

mod util;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use util::wire::Wire;
use util::{config, connect, finishes, tagged, untag};
use wirelane::{Lane, Node, PeerId};

const SENDERS: u8 = 4;
const PER_SENDER: u32 = 10_000;

/// Sends from `SENDERS` threads while one thread drains `node`'s inbound queue;
/// returns, per sending thread of the other node, the sequence numbers received.
fn flood_and_drain(node: Arc<Node>, to: PeerId) -> thread::JoinHandle<Vec<Vec<u32>>> {
    thread::spawn(move || {
        thread::scope(|s| {
            for sender in 0..SENDERS {
                let node = &node;
                s.spawn(move || {
                    for seq in 0..PER_SENDER {
                        node.send(to, tagged(sender, seq, 16))
                            .expect("private send");
                    }
                });
            }
            let drain = s.spawn(|| {
                let mut seen = vec![Vec::new(); SENDERS as usize];
                for _ in 0..u32::from(SENDERS) * PER_SENDER {
                    let m = node.incoming().recv().expect("inbound");
                    assert_eq!(m.lane, Lane::Private);
                    let (sender, seq) = untag(&m.payload);
                    seen[sender as usize].push(seq);
                }
                seen
            });
            drain.join().expect("drain thread")
        })
    })
}

#[test]
fn mutual_private_floods_through_capacity_one_queues_finish() {
    mutual_private_floods(Wire::Plain);
}

#[cfg(feature = "tls")]
#[test]
fn mutual_private_floods_through_capacity_one_queues_finish_over_tls() {
    mutual_private_floods(Wire::tls());
}

fn mutual_private_floods(wire: Wire) {
    let cfg = config().private_capacity(1).inbound_capacity(1);
    let a = Arc::new(wire.node(1, cfg.clone()));
    let b = Arc::new(wire.node(2, cfg));
    connect(&a, &b);

    let (seen_at_a, seen_at_b) = finishes("mutual private floods", Duration::from_secs(300), {
        let (a, b) = (a.clone(), b.clone());
        move || {
            let at_a = flood_and_drain(a, PeerId(2));
            let at_b = flood_and_drain(b, PeerId(1));
            (at_a.join().expect("node a"), at_b.join().expect("node b"))
        }
    });

    // Exactly once and in per-thread order: each sender's sequence arrives as 0..N.
    let expected: Vec<u32> = (0..PER_SENDER).collect();
    for (at, seen) in [("a", seen_at_a), ("b", seen_at_b)] {
        for (sender, seqs) in seen.iter().enumerate() {
            assert_eq!(seqs, &expected, "at {at}, from sender thread {sender}");
        }
    }
    // Counters trail delivery by a moment (they are added once per batch).
    let all = u64::from(SENDERS) * u64::from(PER_SENDER);
    for (node, peer) in [(&a, PeerId(2)), (&b, PeerId(1))] {
        util::wait_until("the counters show every message", || {
            let s = node.peer_stats(peer).unwrap().private;
            s.sent == all && s.received == all
        });
        let s = node.peer_stats(peer).unwrap().private;
        assert_eq!(s.dropped + s.recv_dropped, 0);
    }
}
