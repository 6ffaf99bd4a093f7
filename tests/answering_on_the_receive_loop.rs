//! Answering requests on the loop that reads `incoming`, while both nodes flood
//! each other with requests through capacity-1 queues, finishes: every request gets
//! its own reply exactly once.
//!
//! This is the request/reply form of the seed deadlock. Each node's only reader of
//! its inbound queue is also its only responder; if `respond` could wait for room
//! (on a lane the peer drains only by reading, while the peer's reader waits for
//! our responder to read) the cycle through the two applications would freeze both
//! nodes. `respond` must never wait: room for every reply owed is reserved before a
//! request is delivered. In plaintext and over TLS.

mod util;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use util::wire::Wire;
use util::{config, connect, finishes, tagged, untag};
use wirelane::{Lane, Node, PeerId};

const SENDERS: u8 = 2;
const PER_SENDER: u32 = 10_000;
const LEN: usize = 512;
/// Guard for one request: only turns a hang into a failure.
const REQUEST_GUARD: Duration = Duration::from_secs(30);

/// The reply to a request: the responder's id byte, then the request's payload.
fn reply_to(responder: PeerId, request: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(request.len() + 1);
    r.push(responder.0 as u8);
    r.extend_from_slice(request);
    r
}

/// What one node saw: per sending thread of the peer, how often each sequence
/// number was delivered to the responder.
type Served = Vec<Vec<u32>>;

fn run_side(node: Arc<Node>, peer: PeerId) -> thread::JoinHandle<Served> {
    thread::spawn(move || {
        thread::scope(|s| {
            let me = node.id();
            for sender in 0..SENDERS {
                let node = &node;
                s.spawn(move || {
                    // Sender byte: which node, and which of its threads.
                    let tag = (me.0 as u8) * 16 + sender;
                    for seq in 0..PER_SENDER {
                        let request = tagged(tag, seq, LEN);
                        let reply = node
                            .request(peer, request.clone(), REQUEST_GUARD)
                            .unwrap_or_else(|e| {
                                panic!("{me}: request {seq} of thread {sender}: {e}")
                            });
                        assert_eq!(
                            &reply[..],
                            &reply_to(peer, &request)[..],
                            "{me}: the reply to request {seq} of thread {sender} is its own"
                        );
                    }
                });
            }
            // The responder, on the receive loop: answers everything it reads.
            let node = &node;
            let responder = s.spawn(move || {
                let mut served = vec![vec![0u32; PER_SENDER as usize]; SENDERS as usize];
                for _ in 0..u32::from(SENDERS) * PER_SENDER {
                    let m = node
                        .incoming()
                        .recv_timeout(REQUEST_GUARD)
                        .unwrap_or_else(|e| panic!("{me}: no request within the guard: {e}"));
                    assert_eq!((m.from, m.lane), (peer, Lane::Request));
                    assert_eq!(m.payload.len(), LEN);
                    let (tag, seq) = untag(&m.payload);
                    assert_eq!(tag / 16, peer.0 as u8, "{me}: request from {peer}");
                    served[usize::from(tag % 16)][seq as usize] += 1;
                    node.respond(&m, reply_to(me, &m.payload))
                        .unwrap_or_else(|e| panic!("{me}: respond: {e}"));
                }
                served
            });
            responder.join().expect("responder")
        })
    })
}

#[test]
fn requests_answered_on_the_receive_loop_through_capacity_one_queues_finish() {
    requests_answered_on_the_receive_loop(Wire::Plain);
}

#[cfg(feature = "tls")]
#[test]
fn requests_answered_on_the_receive_loop_through_capacity_one_queues_finish_over_tls() {
    requests_answered_on_the_receive_loop(Wire::tls());
}

fn requests_answered_on_the_receive_loop(wire: Wire) {
    let cfg = config().inbound_capacity(1).private_capacity(1);
    let a = Arc::new(wire.node(1, cfg.clone()));
    let b = Arc::new(wire.node(2, cfg));
    connect(&a, &b);

    let started = Instant::now();
    let (at_a, at_b) = finishes(
        "mutual requests answered on the receive loop",
        Duration::from_secs(240),
        {
            let (a, b) = (a.clone(), b.clone());
            move || {
                let at_a = run_side(a, PeerId(2));
                let at_b = run_side(b, PeerId(1));
                (at_a.join().expect("node a"), at_b.join().expect("node b"))
            }
        },
    );
    eprintln!(
        "{} requests each way answered in {:?}",
        u32::from(SENDERS) * PER_SENDER,
        started.elapsed()
    );

    // Every request was delivered to its responder exactly once.
    for (name, served) in [("a", at_a), ("b", at_b)] {
        for (sender, counts) in served.iter().enumerate() {
            let wrong: Vec<(usize, u32)> = counts
                .iter()
                .enumerate()
                .filter(|(_, &n)| n != 1)
                .map(|(seq, &n)| (seq, n))
                .take(10)
                .collect();
            assert!(
                wrong.is_empty(),
                "at {name}, from sender thread {sender}: (seq, times delivered) {wrong:?}"
            );
        }
    }

    // Each node: 20,000 of its requests answered, 20,000 of the peer's served and
    // responded to, nothing else. The writer counts a request just after writing
    // it, which can trail the reply by a moment: wait for that count first.
    let all = u64::from(SENDERS) * u64::from(PER_SENDER);
    for node in [&a, &b] {
        util::wait_until("the writer has counted every request", || {
            node.stats().requests.sent >= all
        });
        let r = node.stats().requests;
        assert_eq!(
            (r.sent, r.answered, r.served, r.responded),
            (all, all, all, all),
            "{}: {r:?}",
            node.id()
        );
        assert_eq!(
            (
                r.unanswered,
                r.timed_out,
                r.failed,
                r.late_replies,
                r.abandoned,
                r.dropped_unanswered
            ),
            (0, 0, 0, 0, 0, 0),
            "{}: {r:?}",
            node.id()
        );
    }
}
