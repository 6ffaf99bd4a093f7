//! Two nodes dial each other at the same moment, 100 times: each time exactly one
//! connection per pair survives, the same one on both sides, both `connect` calls
//! return the peer, and private messages sent right away all arrive.

mod util;

use std::sync::{Arc, Barrier};
use std::thread;

use util::{event, node, recv, tagged, untag};
use wirelane::{Event, Lane, Node, PeerId};

const ROUNDS: u32 = 100;
const MESSAGES: u32 = 20;

/// Dials the peer behind the barrier, then sends `MESSAGES` private messages.
fn dial_and_send(
    me: Arc<Node>,
    peer: Arc<Node>,
    barrier: Arc<Barrier>,
    round: u32,
) -> thread::JoinHandle<PeerId> {
    thread::spawn(move || {
        let addr = peer.local_addr();
        barrier.wait();
        let got = me.connect(addr).expect("simultaneous connect");
        for i in 0..MESSAGES {
            me.send(got, tagged(me.id().0 as u8, round * MESSAGES + i, 8))
                .expect("private send right after connect");
        }
        got
    })
}

#[test]
fn one_connection_survives_every_simultaneous_dial() {
    let a = Arc::new(node(1));
    let b = Arc::new(node(2));
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(2));
        let at_a = dial_and_send(a.clone(), b.clone(), barrier.clone(), round);
        let at_b = dial_and_send(b.clone(), a.clone(), barrier, round);
        assert_eq!(at_a.join().unwrap(), PeerId(2), "round {round}");
        assert_eq!(at_b.join().unwrap(), PeerId(1), "round {round}");

        // One connection per pair, and it is the same socket pair on both sides.
        assert_eq!(a.peers(), vec![PeerId(2)], "round {round}");
        assert_eq!(b.peers(), vec![PeerId(1)], "round {round}");
        let sa = a.peer_stats(PeerId(2)).unwrap();
        let sb = b.peer_stats(PeerId(1)).unwrap();
        assert_eq!(
            (sa.local_addr, sa.peer_addr),
            (sb.peer_addr, sb.local_addr),
            "round {round}"
        );

        // Nothing sent over the surviving connection was lost, in order.
        for (at, from) in [(&a, 2u8), (&b, 1u8)] {
            for i in 0..MESSAGES {
                let m = recv(at.incoming());
                assert_eq!(m.lane, Lane::Private);
                assert_eq!(
                    untag(&m.payload),
                    (from, round * MESSAGES + i),
                    "round {round}"
                );
            }
        }
        // Exactly one connection per side was ever announced this round.
        for n in [&a, &b] {
            let e = event(n, "connected", |e| !matches!(e, Event::Refused { .. }));
            assert!(matches!(e, Event::Connected { .. }), "round {round}: {e:?}");
        }

        a.disconnect(PeerId(2));
        for n in [&a, &b] {
            let e = event(n, "disconnected", |_| true);
            assert!(
                matches!(e, Event::Disconnected { .. }),
                "round {round}: {e:?}"
            );
        }
        assert!(
            a.peers().is_empty() && b.peers().is_empty(),
            "round {round}"
        );
    }
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.private.received, u64::from(ROUNDS * MESSAGES));
    assert_eq!(sb.private.received, u64::from(ROUNDS * MESSAGES));
    assert_eq!(
        sa.private.dropped + sb.private.dropped + sa.private.recv_dropped + sb.private.recv_dropped,
        0
    );
    assert_eq!(sa.connections_opened, u64::from(ROUNDS));
    assert_eq!(sb.connections_opened, u64::from(ROUNDS));
}
