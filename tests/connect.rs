//! Dial, handshake and registration: what a user sees when two nodes connect.

mod util;

use std::time::Duration;

use util::{connect, event, node, recv};
use wirelane::{Error, Event, HandshakeError, Lane, PeerId};

#[test]
fn both_sides_are_registered_when_connect_returns() {
    // Both directions: the lower id dials, and the higher id dials.
    for (dialer, listener) in [(1, 2), (4, 3)] {
        let a = node(dialer);
        let b = node(listener);
        let peer = connect(&a, &b);
        assert_eq!(peer, PeerId(listener));
        let ours = a.peer_stats(peer).expect("registered on the dialling side");
        let theirs = b
            .peer_stats(PeerId(dialer))
            .expect("registered on the accepting side");
        assert!(!ours.inbound && theirs.inbound);
        // The same TCP connection, seen from both ends.
        assert_eq!(ours.local_addr, theirs.peer_addr);
        assert_eq!(ours.peer_addr, theirs.local_addr);
        assert_eq!(a.peers(), vec![peer]);
        assert_eq!(b.peers(), vec![PeerId(dialer)]);

        let connected = event(&b, "connected", |e| matches!(e, Event::Connected { .. }));
        assert!(
            matches!(connected, Event::Connected { peer, inbound: true, .. } if peer == PeerId(dialer))
        );
        let connected = event(&a, "connected", |e| matches!(e, Event::Connected { .. }));
        assert!(
            matches!(connected, Event::Connected { peer, inbound: false, .. } if peer == PeerId(listener))
        );
    }
}

#[test]
fn messages_flow_both_ways_on_both_lanes() {
    let a = node(10);
    let b = node(20);
    let to_b = connect(&a, &b);
    let to_a = PeerId(10);
    a.send(to_b, b"private from a".to_vec()).unwrap();
    a.try_send(to_b, b"gossip from a".to_vec()).unwrap();
    b.send(to_a, b"private from b".to_vec()).unwrap();
    b.send_timeout(to_a, b"timed from b".to_vec(), Duration::from_secs(5))
        .unwrap();

    let mut at_b: Vec<(Lane, Vec<u8>)> = (0..2)
        .map(|_| recv(b.incoming()))
        .inspect(|m| assert_eq!(m.from, to_a))
        .map(|m| (m.lane, m.payload.to_vec()))
        .collect();
    at_b.sort();
    assert_eq!(
        at_b,
        vec![
            (Lane::Gossip, b"gossip from a".to_vec()),
            (Lane::Private, b"private from a".to_vec())
        ]
    );
    let first = recv(a.incoming());
    let second = recv(a.incoming());
    assert_eq!(
        (first.from, first.lane, &first.payload[..]),
        (to_b, Lane::Private, &b"private from b"[..])
    );
    assert_eq!(&second.payload[..], b"timed from b");

    // The writer counts a batch after its write returns, so the peer may read a
    // message a moment before the sender's counters show it.
    util::wait_until("A's counters show the traffic", || {
        let s = a.peer_stats(to_b).unwrap();
        (s.private.sent, s.gossip.sent, s.private.received) == (1, 1, 2)
    });
    let stats = a.peer_stats(to_b).unwrap();
    assert_eq!(
        stats.private.received_bytes,
        (b"private from b".len() + b"timed from b".len()) as u64
    );
    assert!(stats.bytes_in > 0 && stats.bytes_out > 0);
    let total = a.stats();
    assert_eq!(
        (total.peers, total.private.sent, total.private.received),
        (1, 1, 2)
    );
}

#[test]
fn connecting_again_keeps_the_existing_connection() {
    let a = node(1);
    let b = node(2);
    connect(&a, &b);
    let before = a.peer_stats(PeerId(2)).unwrap().conn;
    // From either side, a second dial returns the peer and changes nothing.
    assert_eq!(a.connect(b.local_addr()).unwrap(), PeerId(2));
    assert_eq!(b.connect(a.local_addr()).unwrap(), PeerId(1));
    assert_eq!(a.peer_stats(PeerId(2)).unwrap().conn, before);
    assert_eq!(a.peers(), vec![PeerId(2)]);
    assert_eq!(b.peers(), vec![PeerId(1)]);
}

#[test]
fn dialling_yourself_is_refused() {
    let a = node(5);
    match a.connect(a.local_addr()) {
        Err(Error::Handshake(HandshakeError::SelfConnect)) => {}
        other => panic!("expected a self-connect refusal, got {other:?}"),
    }
    assert!(a.peers().is_empty());
}

#[test]
fn sending_to_an_unknown_peer_hands_the_message_back() {
    let a = node(1);
    let err = a.send(PeerId(99), b"x".to_vec()).unwrap_err();
    assert!(matches!(err, wirelane::SendError::NotConnected(_)));
    assert_eq!(&err.into_inner()[..], b"x");
    let err = a.try_send(PeerId(99), b"y".to_vec()).unwrap_err();
    assert!(matches!(err, wirelane::TrySendError::NotConnected(_)));
    assert!(a.peer_stats(PeerId(99)).is_none());
}

#[test]
fn payloads_over_the_peers_limit_are_refused_at_send() {
    let a = node(1);
    let b = util::node_with(2, util::config().max_frame_len(1024));
    let peer = connect(&a, &b);
    let err = a.send(peer, vec![0u8; 1025]).unwrap_err();
    assert!(matches!(err, wirelane::SendError::TooLarge(_)));
    assert!(
        a.try_send(peer, vec![0u8; 1025])
            .unwrap_err()
            .into_inner()
            .len()
            == 1025
    );
    a.send(peer, vec![0u8; 1024]).unwrap();
    assert_eq!(recv(b.incoming()).payload.len(), 1024);
}

#[test]
fn dialling_a_closed_port_fails_with_an_io_error() {
    let a = node(1);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    assert!(matches!(a.connect(port), Err(Error::Io(_))));
}
