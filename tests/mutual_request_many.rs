//! A port of Fabric's `TestMutualParallelSendWithAck`: two nodes each fire 1,000
//! concurrent `request_many` calls (min 1 reply) at the other while each answers
//! the other's requests on its receive loop; all 2,000 succeed.
//!
//! With more callers than the 128 request slots of a connection, callers wait for a
//! slot while replies in both directions share the same lanes and threads; nothing
//! may deadlock, and every call must get its own reply.

mod util;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use util::{config, connect, finishes, node_with, tagged, untag};
use wirelane::{Lane, Node, Outcome, PeerId};

/// Concurrent callers per node, and calls each: 1,000 per node, well over the 128
/// requests a connection carries at once.
const CALLERS: u32 = 200;
const CALLS: u32 = 5;
const DEADLINE: Duration = Duration::from_secs(60);

fn reply_to(request: &[u8]) -> Vec<u8> {
    let mut r = b"ack ".to_vec();
    r.extend_from_slice(request);
    r
}

fn run_side(node: Arc<Node>, peer: PeerId) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        thread::scope(|s| {
            let node = &node;
            let callers: Vec<_> = (0..CALLERS)
                .map(|caller| {
                    thread::Builder::new()
                        .stack_size(256 * 1024)
                        .spawn_scoped(s, move || {
                            let mut ok = 0;
                            for call in 0..CALLS {
                                let seq = caller * CALLS + call;
                                let request = tagged(node.id().0 as u8, seq, 32);
                                let replies =
                                    node.request_many(&[peer], request.clone(), 1, DEADLINE);
                                assert_eq!(
                                    replies.get(peer),
                                    Some(&Outcome::Replied(reply_to(&request).into())),
                                    "{}: call {seq}",
                                    node.id()
                                );
                                ok += replies.succeeded();
                            }
                            ok
                        })
                        .expect("spawn caller")
                })
                .collect();
            s.spawn(move || {
                let mut seen = vec![false; (CALLERS * CALLS) as usize];
                for _ in 0..CALLERS * CALLS {
                    let m = node
                        .incoming()
                        .recv_timeout(DEADLINE)
                        .expect("a request within the guard");
                    assert_eq!((m.from, m.lane), (peer, Lane::Request));
                    let (from, seq) = untag(&m.payload);
                    assert_eq!(u64::from(from), peer.0);
                    assert!(!seen[seq as usize], "request {seq} delivered twice");
                    seen[seq as usize] = true;
                    node.respond(&m, reply_to(&m.payload)).expect("respond");
                }
            });
            callers.into_iter().map(|c| c.join().expect("caller")).sum()
        })
    })
}

#[test]
fn mutual_parallel_request_many_all_succeed() {
    let cfg = config().inbound_capacity(1).private_capacity(1);
    let a = Arc::new(node_with(1, cfg.clone()));
    let b = Arc::new(node_with(2, cfg));
    connect(&a, &b);

    let (at_a, at_b) = finishes("mutual parallel request_many", Duration::from_secs(240), {
        let (a, b) = (a.clone(), b.clone());
        move || {
            let at_a = run_side(a, PeerId(2));
            let at_b = run_side(b, PeerId(1));
            (at_a.join().expect("node a"), at_b.join().expect("node b"))
        }
    });
    let all = (CALLERS * CALLS) as usize;
    assert_eq!(
        (at_a, at_b),
        (all, all),
        "calls that succeeded at a and at b"
    );

    for node in [&a, &b] {
        let r = node.stats().requests;
        assert_eq!(
            (r.answered, r.served, r.responded),
            (all as u64, all as u64, all as u64),
            "{}: {r:?}",
            node.id()
        );
        assert_eq!(
            (
                r.timed_out,
                r.failed,
                r.unanswered,
                r.abandoned,
                r.late_replies
            ),
            (0, 0, 0, 0, 0),
            "{}: {r:?}",
            node.id()
        );
    }
}
