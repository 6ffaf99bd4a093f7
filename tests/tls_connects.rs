//! Two TLS nodes connect, name each other by the ids their certificates carry, and
//! carry private messages and requests both ways; a renewed certificate for the
//! same id is accepted.
#![cfg(feature = "tls")]

mod util;

use std::time::Duration;

use util::certs::Ca;
use util::{config, node_with, recv, GUARD};
use wirelane::{Event, Fingerprint, Node, PeerId};

fn connected(node: &Node, peer: PeerId) -> Option<Fingerprint> {
    match util::event(
        node,
        "connected",
        |e| matches!(e, Event::Connected { peer: p, .. } if *p == peer),
    ) {
        Event::Connected { fingerprint, .. } => fingerprint,
        _ => unreachable!(),
    }
}

#[test]
fn tls_nodes_talk_and_accept_a_renewed_certificate() {
    let ca = Ca::new("test ca");
    let a = node_with(1, config().tls(ca.tls(1)));
    let b = node_with(2, config().tls(ca.tls(2)));
    assert_eq!(
        a.connect(b.local_addr()).expect("connect over tls"),
        PeerId(2)
    );
    let seen_by_a = connected(&a, PeerId(2)).expect("a fingerprint");
    let seen_by_b = connected(&b, PeerId(1)).expect("a fingerprint");
    assert_ne!(
        seen_by_a, seen_by_b,
        "each side reports the other's certificate"
    );

    // Sent from another thread: 70 MB is more than b's window holds unread.
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..2_000u32 {
                let body = vec![(i % 251) as u8; 1 + (i as usize * 37) % 70_000];
                a.send(PeerId(2), body).unwrap();
            }
        });
        for i in 0..2_000u32 {
            let m = recv(b.incoming());
            assert_eq!(m.from, PeerId(1));
            assert_eq!(
                m.payload.len(),
                1 + (i as usize * 37) % 70_000,
                "message {i}"
            );
            assert!(m.payload.iter().all(|&x| x == (i % 251) as u8));
        }
    });
    // A request from b, answered on a's receive loop.
    std::thread::scope(|s| {
        s.spawn(|| {
            let m = a.incoming().recv_timeout(GUARD).expect("a request");
            a.respond(&m, m.payload.clone()).expect("respond");
        });
        let reply = b
            .request(PeerId(1), &b"ping over tls"[..], Duration::from_secs(30))
            .expect("reply");
        assert_eq!(&reply[..], b"ping over tls");
    });

    // Node 2 comes back with a renewed certificate (a new key) for the same id.
    b.shutdown();
    let b2 = node_with(2, config().tls(ca.tls(2)));
    assert_eq!(a.connect(b2.local_addr()).expect("renewed"), PeerId(2));
    let renewed = connected(&a, PeerId(2)).expect("a fingerprint");
    assert_ne!(renewed, seen_by_a, "the renewed certificate is a new one");
    a.send(PeerId(2), &b"after renewal"[..]).unwrap();
    assert_eq!(&recv(b2.incoming()).payload[..], b"after renewal");
}
