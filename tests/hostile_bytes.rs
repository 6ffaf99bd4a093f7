//! Hostile bytes on the listening port — garbage, a 4 GiB length prefix, a hello that
//! never finishes — are refused with a typed error, nothing panics, memory stays
//! flat, and a well-behaved peer connects and exchanges messages meanwhile.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use util::raw::{self, RawPeer};
use util::{
    config, connect, count_node_panics, event, node, node_with, pseudo_random, recv, rss_kib,
};
use wirelane::{DisconnectReason, Event, HandshakeError, Node, PeerId, Violation};

const EACH: usize = 20;

/// Collects `n` `Refused` events and returns their errors.
fn refusals(node: &Node, n: usize) -> Vec<HandshakeError> {
    (0..n)
        .map(
            |_| match event(node, "refused", |e| matches!(e, Event::Refused { .. })) {
                Event::Refused { error, .. } => error,
                _ => unreachable!(),
            },
        )
        .collect()
}

#[test]
fn hostile_clients_are_refused_while_a_good_peer_is_served() {
    let panics = count_node_panics();
    let a = node_with(1, config().handshake_timeout(Duration::from_secs(2)));
    let addr = a.local_addr();
    let rss_before = rss_kib();

    let mut hostile = Vec::new();
    for i in 0..EACH {
        // Half a hello, then silence.
        let mut slow = RawPeer::connect(addr);
        slow.send(&raw::hello(100 + i as u64)[..10]);
        hostile.push(slow);
        // Garbage.
        let mut junk = RawPeer::connect(addr);
        junk.send(&pseudo_random(i as u64 + 1, 64 * 1024));
        hostile.push(junk);
        // A frame header announcing 4 GiB, as a hello and as a data frame.
        let mut giant = RawPeer::connect(addr);
        let kind = if i % 2 == 0 { raw::HELLO } else { raw::PRIVATE };
        giant.send(&[0xFF, 0xFF, 0xFF, 0xFF, kind, 0]);
        hostile.push(giant);
    }

    // Meanwhile, a real peer connects and talks both ways.
    let b = node(2);
    let peer = connect(&b, &a);
    for i in 0..100u32 {
        b.send(peer, i.to_be_bytes().to_vec()).unwrap();
        a.send(PeerId(2), i.to_be_bytes().to_vec()).unwrap();
    }
    for i in 0..100u32 {
        assert_eq!(&recv(a.incoming()).payload[..], &i.to_be_bytes());
        assert_eq!(&recv(b.incoming()).payload[..], &i.to_be_bytes());
    }

    // Every hostile connection is closed by the node.
    for peer in &mut hostile {
        peer.expect_closed();
    }
    let errors = refusals(&a, 3 * EACH);
    let timeouts = errors
        .iter()
        .filter(|e| **e == HandshakeError::Timeout)
        .count();
    let giants = errors
        .iter()
        .filter(|e| {
            matches!(
                e,
                HandshakeError::Protocol(p)
                    if matches!(p.violation(), Violation::BadLength | Violation::Unexpected)
            )
        })
        .count();
    assert_eq!(timeouts, EACH, "{errors:?}");
    assert!(giants >= EACH, "{errors:?}");
    assert!(
        errors.iter().all(|e| matches!(
            e,
            HandshakeError::Timeout | HandshakeError::Protocol(_) | HandshakeError::BadMagic
        )),
        "{errors:?}"
    );
    assert_eq!(a.stats().handshakes_failed, 3 * EACH as u64);
    assert_eq!(a.peers(), vec![PeerId(2)]);

    // Nothing was allocated for the announced 4 GiB frames.
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "resident memory grew by {grown} KiB");
    assert_eq!(
        panics.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a node thread panicked"
    );
}

#[test]
fn each_refusal_is_a_typed_error() {
    let a = node(1);
    let addr = a.local_addr();
    // Ok: this exact error; Err: a protocol error breaking this rule.
    let cases: Vec<(Vec<u8>, Result<HandshakeError, Violation>)> = vec![
        (
            raw::hello_with(b"HTTP", raw::VERSION, 9, 1, 1024),
            Ok(HandshakeError::BadMagic),
        ),
        (
            raw::hello_with(b"WRLN", raw::VERSION + 1, 9, 1, 1024),
            Ok(HandshakeError::Version {
                ours: raw::VERSION,
                theirs: raw::VERSION + 1,
            }),
        ),
        // A peer of the version before requests and replies.
        (
            raw::hello_with(b"WRLN", raw::VERSION - 1, 9, 1, 1024),
            Ok(HandshakeError::Version {
                ours: raw::VERSION,
                theirs: raw::VERSION - 1,
            }),
        ),
        (raw::hello(1), Ok(HandshakeError::SelfConnect)),
        (
            raw::frame(raw::PRIVATE, b"no hello first"),
            Err(Violation::Unexpected),
        ),
        (vec![0, 0, 0, 0, 0x42, 0], Err(Violation::UnknownFrame)),
        (vec![0, 0, 0, 0, 4, 0x01], Err(Violation::ReservedFlags)),
        (Vec::new(), Ok(HandshakeError::Closed)),
    ];
    for (bytes, expected) in cases {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(&bytes).unwrap();
        if bytes.is_empty() {
            drop(stream);
        } else {
            RawPeer { stream }.expect_closed();
        }
        let got = refusals(&a, 1).remove(0);
        match (&got, expected) {
            (HandshakeError::Protocol(p), Err(rule)) => {
                assert_eq!(p.violation(), rule, "for {bytes:02x?}")
            }
            (_, Ok(error)) => assert_eq!(got, error, "for {bytes:02x?}"),
            (_, Err(rule)) => panic!("for {bytes:02x?}: {got:?}, not a {rule:?}"),
        }
    }
    assert!(a.peers().is_empty());
}

#[test]
fn a_giant_or_unknown_frame_after_the_handshake_ends_the_connection() {
    let a = node(1);
    let rss_before = rss_kib();
    for (header, expected) in [
        (
            [0xFF, 0xFF, 0xFF, 0xFF, raw::PRIVATE, 0],
            Violation::TooLarge,
        ),
        ([0, 0, 0, 1, 0x99, 0], Violation::UnknownFrame),
        ([0, 0, 0, 0, raw::HELLO, 0], Violation::BadLength),
    ] {
        let mut peer = RawPeer::handshake(a.local_addr(), 7, 1);
        peer.send(&header);
        let reason = match event(&a, "disconnected", |e| {
            matches!(e, Event::Disconnected { .. })
        }) {
            Event::Disconnected { peer, reason, .. } => {
                assert_eq!(peer, PeerId(7));
                reason
            }
            _ => unreachable!(),
        };
        assert!(
            matches!(&reason, DisconnectReason::Protocol(e) if e.violation() == expected),
            "{reason:?}"
        );
        peer.expect_closed();
    }
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "resident memory grew by {grown} KiB");
}
