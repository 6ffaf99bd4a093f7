//! On an idle connection the sending thread writes its own frame — private
//! messages, requests and replies alike — saving a thread wake-up per message, and
//! round trips keep their order and content whichever thread writes.

mod util;

use std::time::{Duration, Instant};

use util::{connect, node, recv, tagged, untag, GUARD};
use wirelane::{Lane, Node, PeerId};

fn by_senders(node: &Node, peer: PeerId) -> u64 {
    node.peer_stats(peer).expect("connected").written_by_senders
}

/// Round trips until `done` holds (the deadline is only a failure guard); returns
/// how many were made.
fn round_trips_until(mut trip: impl FnMut(u32), mut done: impl FnMut() -> bool) -> u32 {
    let deadline = Instant::now() + GUARD;
    let mut n = 0;
    while !done() {
        assert!(Instant::now() < deadline, "not done after {n} round trips");
        trip(n);
        n += 1;
    }
    n
}

#[test]
fn idle_round_trips_are_written_by_the_threads_that_send_them() {
    let a = node(1);
    let b = node(2);
    connect(&a, &b);
    std::thread::scope(|s| {
        // B echoes private messages and answers requests, from its receive loop.
        s.spawn(|| {
            while let Ok(m) = b.incoming().recv_timeout(GUARD) {
                match m.lane {
                    Lane::Request => b.respond(&m, m.payload.clone()).expect("respond"),
                    Lane::Private => b.send(m.from, m.payload.clone()).expect("echo"),
                    _ => break,
                }
            }
        });

        let (a0, b0) = (by_senders(&a, PeerId(2)), by_senders(&b, PeerId(1)));
        let trips = round_trips_until(
            |n| {
                a.send(PeerId(2), tagged(b'm', n, 64)).expect("send");
                let echo = recv(a.incoming());
                assert_eq!(untag(&echo.payload), (b'm', n), "echoes come back in order");
                assert_eq!(echo.payload.len(), 64);
            },
            || by_senders(&a, PeerId(2)) > a0 && by_senders(&b, PeerId(1)) > b0,
        );
        println!("{trips} message round trips until both sides wrote one themselves");

        let (a1, b1) = (by_senders(&a, PeerId(2)), by_senders(&b, PeerId(1)));
        let trips = round_trips_until(
            |n| {
                let body = tagged(b'r', n, 100);
                let reply = a
                    .request(PeerId(2), body.clone(), Duration::from_secs(30))
                    .expect("reply");
                assert_eq!(&reply[..], &body[..]);
            },
            || by_senders(&a, PeerId(2)) > a1 && by_senders(&b, PeerId(1)) > b1,
        );
        println!("{trips} requests until a request and a reply were written by their threads");
        let stats = a.stats();
        assert_eq!(stats.requests.answered, u64::from(trips));
        a.try_send(PeerId(2), &b"stop"[..]).expect("stop the echo");
    });
}
