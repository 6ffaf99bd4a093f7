//! An idle plaintext connection's reader rests: the node's idle thread watches its
//! socket, reads the peer's pings and pongs, and hands the socket back for anything
//! else. A resting connection still answers pings, delivers what arrives in order,
//! declares a silent peer dead, and closes at once when asked.

mod util;

use std::time::Duration;

use util::raw::{frame, RawPeer, GOSSIP, PING, PONG};
use util::{config, event, finishes, node_with, recv, wait_until};
use wirelane::{DisconnectReason, Event, Lane, Node, PeerId};

/// A node pinging every `ping`, declaring a peer dead after `silence`; a read
/// timeout of a quarter second.
fn pinging(ping: Duration, silence: Duration) -> Node {
    node_with(1, config().ping_interval(ping).silence_timeout(silence))
}

/// No pings from the node during the test.
fn quiet() -> Node {
    pinging(Duration::from_secs(60), Duration::from_secs(240))
}

fn resting(node: &Node) -> u64 {
    node.stats().resting
}

#[test]
fn a_resting_connection_answers_pings_and_delivers_in_order() {
    let node = quiet();
    let mut peer = RawPeer::handshake(node.local_addr(), 2, 1);
    for round in 0u32..20 {
        wait_until("the connection rests", || resting(&node) == 1);
        if round % 2 == 0 {
            // The idle thread reads the pings and has them answered: the rest lasts.
            let pings = if round == 0 { 200 } else { 1 };
            for i in 0..pings {
                peer.send(&frame(PING, &[]));
                peer.read_until(PONG);
                assert_eq!(resting(&node), 1, "the rest ended at ping {i}");
            }
        }
        // Two frames in one write, then one more: the reader gets them all.
        let mut both = frame(GOSSIP, &round.to_be_bytes());
        both.extend(frame(GOSSIP, &(round + 1000).to_be_bytes()));
        peer.send(&both);
        for expected in [round, round + 1000] {
            let m = recv(node.incoming());
            assert_eq!(m.lane, Lane::Gossip);
            assert_eq!(&m.payload[..], &expected.to_be_bytes());
        }
    }
    node.shutdown();
}

#[test]
fn a_resting_connection_answers_pings_without_waking_its_writer() {
    let node = quiet();
    let mut peer = RawPeer::handshake(node.local_addr(), 2, 1);
    let by_others = || {
        node.peer_stats(PeerId(2))
            .expect("connected")
            .written_by_senders
    };
    for i in 0..3 {
        wait_until("the connection rests", || resting(&node) == 1);
        let before = by_others();
        peer.send(&frame(PING, &[]));
        peer.read_until(PONG);
        // The idle thread wrote the pong through the parked writer's lent turn.
        wait_until(&format!("pong {i} is written by the idle thread"), || {
            by_others() > before
        });
    }
    node.shutdown();
}

#[test]
fn bytes_read_while_resting_reach_the_reader_in_order() {
    let node = quiet();
    let mut peer = RawPeer::handshake(node.local_addr(), 2, 1);
    let gossip = |n: u32, len: usize| {
        let mut payload = n.to_be_bytes().to_vec();
        payload.resize(len, n as u8);
        frame(GOSSIP, &payload)
    };
    let expect = |n: u32, len: usize| {
        let m = recv(node.incoming());
        assert_eq!(m.lane, Lane::Gossip);
        assert_eq!(&m.payload[..4], &n.to_be_bytes(), "message {n} in order");
        assert_eq!(m.payload.len(), len);
    };

    // A ping and data in one write: the ping is answered, the data delivered.
    wait_until("the connection rests", || resting(&node) == 1);
    let mut bytes = frame(PING, &[]);
    bytes.extend(gossip(1, 8));
    bytes.extend(frame(PING, &[]));
    bytes.extend(gossip(2, 4));
    peer.send(&bytes);
    expect(1, 8);
    expect(2, 4);
    peer.read_until(PONG);

    // More than the idle thread reads at once, then more frames behind it.
    wait_until("the connection rests", || resting(&node) == 1);
    let mut bytes = gossip(3, 1000);
    bytes.extend(gossip(4, 4));
    peer.send(&bytes);
    expect(3, 1000);
    expect(4, 4);

    // Part of a header read while resting, the rest of the frame sent once the
    // reader has the socket back.
    wait_until("the connection rests", || resting(&node) == 1);
    let bytes = gossip(5, 100);
    peer.send(&bytes[..3]);
    wait_until("the reader has its socket back", || resting(&node) == 0);
    peer.send(&bytes[3..]);
    expect(5, 100);
    node.shutdown();
}

#[test]
fn a_silent_peer_is_declared_dead_while_its_connection_rests() {
    let node = pinging(Duration::from_millis(200), Duration::from_millis(1500));
    // Reads nothing and answers nothing.
    let _peer = RawPeer::handshake(node.local_addr(), 2, 1);
    wait_until("the connection rests", || resting(&node) == 1);
    let gone = event(&node, "the silent peer is declared dead", |e| {
        matches!(e, Event::Disconnected { .. })
    });
    match gone {
        Event::Disconnected { reason, .. } => assert!(
            matches!(reason, DisconnectReason::Dead),
            "ended for another reason: {reason}"
        ),
        _ => unreachable!(),
    }
    assert_eq!(resting(&node), 0);
    node.shutdown();
}

#[test]
fn a_resting_connection_closes_when_asked() {
    let node = quiet();
    let mut peer = RawPeer::handshake(node.local_addr(), 2, 1);
    wait_until("the connection rests", || resting(&node) == 1);
    node.disconnect(PeerId(2));
    // The peer gets the node's goodbye and the end of the stream; the node hears
    // the peer's end, and the close is over.
    peer.expect_closed();
    drop(peer);
    event(&node, "the connection ends", |e| {
        matches!(e, Event::Disconnected { .. })
    });
    wait_until("nothing rests", || resting(&node) == 0);
    let node = std::sync::Arc::new(node);
    finishes("shutdown", Duration::from_secs(30), {
        let node = node.clone();
        move || node.shutdown()
    });
}

#[test]
fn shutdown_wakes_resting_readers() {
    let node = std::sync::Arc::new(quiet());
    let peers: Vec<_> = (2..6)
        .map(|id| RawPeer::handshake(node.local_addr(), id, 1))
        .collect();
    wait_until("every connection rests", || resting(&node) == 4);
    finishes("shutdown", Duration::from_secs(30), {
        let node = node.clone();
        move || node.shutdown()
    });
    assert_eq!(resting(&node), 0);
    drop(peers);
}

#[test]
fn a_resting_connection_keeps_pinging_its_peer() {
    let node = pinging(Duration::from_millis(100), Duration::from_secs(240));
    let mut peer = RawPeer::handshake(node.local_addr(), 2, 1);
    for _ in 0..5 {
        wait_until("the connection rests", || resting(&node) == 1);
        // The pong is read by the idle thread too; pings keep coming.
        peer.read_until(PING);
        peer.send(&frame(PONG, &[]));
    }
    assert!(node.is_connected(PeerId(2)));
    node.shutdown();
}
