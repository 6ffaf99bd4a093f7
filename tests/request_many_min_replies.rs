//! `request_many` returns as soon as `min_replies` peers have replied, without
//! waiting for the rest: the silent peer's outcome is `Pending`, its request is
//! counted abandoned, and a reply it sends later is dropped and counted late.
//!
//! Like Fabric's `SendWithAck` with its minimum ack count: one slow or stuck peer
//! must not hold the caller to the whole deadline once enough have answered.

mod util;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use util::{connect, node, wait_until};
use wirelane::{Lane, Node, Outcome};

const DEADLINE: Duration = Duration::from_secs(30);
const PROMPT: Duration = Duration::from_secs(10);

fn reply_from(n: &Node) -> Vec<u8> {
    format!("ack from {}", n.id()).into_bytes()
}

#[test]
fn request_many_returns_at_min_replies_and_abandons_the_silent_peer() {
    let a = node(1);
    let (b, c, d) = (Arc::new(node(2)), Arc::new(node(3)), Arc::new(node(4)));
    let peers = [connect(&a, &b), connect(&a, &c), connect(&a, &d)];

    // B and C answer only once D's request has been delivered to D's inbound queue
    // (which D does not read): so the request D leaves pending is one that was
    // written, whatever the scheduling.
    let d_served = {
        let (d_stats, a_id) = (Arc::clone(&d), a.id());
        move || {
            d_stats
                .peer_stats(a_id)
                .is_some_and(|s| s.requests.served == 1)
        }
    };
    let responders: Vec<_> = [b.clone(), c.clone()]
        .into_iter()
        .map(|n| {
            let d_served = d_served.clone();
            thread::spawn(move || {
                let m = util::recv(n.incoming());
                wait_until("D has its request", d_served);
                assert_eq!((m.lane, &m.payload[..]), (Lane::Request, &b"block 7"[..]));
                n.respond(&m, reply_from(&n)).expect("respond");
            })
        })
        .collect();

    // D never reads its inbound queue while this runs.
    let started = Instant::now();
    let replies = a.request_many(&peers, b"block 7".to_vec(), 2, DEADLINE);
    let took = started.elapsed();
    for r in responders {
        r.join().expect("responder");
    }

    assert!(took < PROMPT, "request_many took {took:?}");
    assert_eq!(
        (replies.succeeded(), replies.failed(), replies.pending()),
        (2, 0, 1),
        "{replies:?}"
    );
    assert_eq!(
        replies.get(b.id()),
        Some(&Outcome::Replied(reply_from(&b).into()))
    );
    assert_eq!(
        replies.get(c.id()),
        Some(&Outcome::Replied(reply_from(&c).into()))
    );
    assert_eq!(replies.get(d.id()), Some(&Outcome::Pending));
    let order: Vec<_> = replies.iter().map(|(p, _)| *p).collect();
    assert_eq!(order, peers, "outcomes in the order the peers were given");

    wait_until("the writer has counted D's request", || {
        a.peer_stats(d.id()).unwrap().requests.sent == 1
    });
    let rd = a.peer_stats(d.id()).unwrap().requests;
    assert_eq!(
        (rd.sent, rd.abandoned, rd.answered, rd.timed_out, rd.failed),
        (1, 1, 0, 0, 0),
        "{rd:?}"
    );
    for n in [&b, &c] {
        wait_until("the writer has counted the request", || {
            a.peer_stats(n.id()).unwrap().requests.sent == 1
        });
        let r = a.peer_stats(n.id()).unwrap().requests;
        assert_eq!((r.sent, r.answered, r.abandoned), (1, 1, 0), "{r:?}");
    }
    assert_eq!(a.stats().requests.abandoned, 1);

    // D answers after all: the reply is dropped, counted late, and the connection
    // stays up.
    let m = util::recv(d.incoming());
    d.respond(&m, reply_from(&d)).expect("respond");
    wait_until("D's reply is counted late", || {
        a.peer_stats(d.id()).unwrap().requests.late_replies == 1
    });
    let rd = a.peer_stats(d.id()).unwrap().requests;
    assert_eq!(
        (rd.abandoned, rd.late_replies, rd.answered),
        (1, 1, 0),
        "{rd:?}"
    );
}
