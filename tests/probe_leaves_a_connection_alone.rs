//! Probing a peer this node is connected to leaves the connection alone, whichever
//! side probes (and so whichever side would arbitrate): messages flow both ways on
//! it afterwards, and neither node ever reports another connection, a refusal, or
//! the end of this one before it is shut down.

mod util;

use util::wire::Wire;
use util::{config, connect, events_after_shutdown, recv, GUARD};
use wirelane::{DisconnectReason, Event, Node, PeerId};

fn round_trip(a: &Node, b: &Node, what: &'static [u8]) {
    a.send(b.id(), what).expect("send a to b");
    let m = recv(b.incoming());
    assert_eq!((m.from, &m.payload[..]), (a.id(), what));
    b.send(a.id(), what).expect("send b to a");
    let m = recv(a.incoming());
    assert_eq!((m.from, &m.payload[..]), (b.id(), what));
}

fn probes_leave_the_connection_alone(wire: Wire) {
    let a = wire.node(1, config());
    let b = wire.node(2, config());
    connect(&a, &b);
    round_trip(&a, &b, b"before");
    let conns = |n: &Node, p| n.peer_stats(PeerId(p)).expect("connected").conn;
    let (at_a, at_b) = (conns(&a, 2), conns(&b, 1));

    for _ in 0..3 {
        // From the arbiter (the lower id), and from the other side.
        let (peer, fingerprint) = a.probe(b.local_addr(), GUARD).expect("a probes b");
        assert_eq!((peer, fingerprint.is_some()), (PeerId(2), wire.is_tls()));
        let (peer, fingerprint) = b.probe(a.local_addr(), GUARD).expect("b probes a");
        assert_eq!((peer, fingerprint.is_some()), (PeerId(1), wire.is_tls()));
    }
    round_trip(&a, &b, b"after");
    assert_eq!(
        (conns(&a, 2), conns(&b, 1)),
        (at_a, at_b),
        "the same connection"
    );

    // Everything either node reported, the connection's end (at shutdown) included.
    let events_a = events_after_shutdown(&a);
    let events_b = events_after_shutdown(&b);
    for (events, conn, reason) in [
        (&events_a, at_a, "shutdown"),
        (&events_b, at_b, "closed by the peer"),
    ] {
        let [Event::Connected { conn: opened, .. }, Event::Disconnected {
            conn: ended,
            reason: why,
            ..
        }] = &events[..]
        else {
            panic!("{events:#?}");
        };
        assert_eq!((*opened, *ended), (conn, conn), "{events:#?}");
        assert!(
            matches!(
                (reason, why),
                ("shutdown", DisconnectReason::Shutdown)
                    | ("closed by the peer", DisconnectReason::ClosedByPeer)
            ),
            "ended by the shutdown, not before: {events:#?}"
        );
    }
}

#[test]
fn probing_a_connected_peer_leaves_the_connection_alone() {
    probes_leave_the_connection_alone(Wire::Plain);
}

#[cfg(feature = "tls")]
#[test]
fn probing_a_connected_peer_over_tls_leaves_the_connection_alone() {
    probes_leave_the_connection_alone(Wire::tls());
}
