//! A handshake that fails after the connection was registered keeps the event
//! contract: events of a connection come as `Connected`, at most one `Undelivered`,
//! then one `Disconnected` — never an `Undelivered` or a `Disconnected` for a
//! connection the application was never told about, and never a `Connected` without
//! its `Disconnected`. And a private message `send` accepted for it comes back.
//!
//! The arbiter (the lower id) registers the connection, sends its verdict and waits
//! for the peer's confirmation; the application can already send to the peer then.
//! Here the peer is a hand-written one that hangs up instead of confirming.
//! Regression test: the application got an `Undelivered` for a connection that had no
//! `Connected` and never got a `Disconnected`.

mod util;

use std::collections::HashMap;
use std::sync::Arc;
use std::thread;

use util::raw::{self, RawListener, RawPeer};
use util::{config, node_with, tagged, wait_until};
use wirelane::{Bytes, Event, Node, PeerId, SendError};

const PEER: PeerId = PeerId(2);
const MESSAGES: u32 = 3;

/// Sends a few private messages to the peer, whose connection the node may already
/// have registered; returns those `send` accepted.
fn send_some(node: &Node) -> Vec<Bytes> {
    let mut accepted = Vec::new();
    for seq in 0..MESSAGES {
        let msg: Bytes = tagged(9, seq, 16).into();
        match node.send(PEER, msg.clone()) {
            Ok(()) => accepted.push(msg),
            // Handed back at once: fine.
            Err(SendError::NotConnected(_) | SendError::Disconnected(_)) => {}
            Err(e) => panic!("unexpected send error: {e:?}"),
        }
    }
    accepted
}

/// Shuts the node down, so that every event it will ever emit is queued, and checks
/// them against the contract and against the messages `send` accepted.
fn check_events(node: &Node, accepted: &[Bytes]) {
    node.shutdown();
    let events: Vec<Event> = node.events().try_iter().collect();
    let mut connected = HashMap::new();
    let mut ended = HashMap::new();
    let mut handed_back = Vec::new();
    for event in &events {
        match event {
            Event::Connected { conn, .. } => {
                assert!(
                    connected.insert(*conn, ()).is_none(),
                    "two Connected for {conn:?}: {events:#?}"
                );
            }
            Event::Undelivered { conn, messages, .. } => {
                assert!(
                    connected.contains_key(conn) && !ended.contains_key(conn),
                    "Undelivered for {conn:?} outside Connected..Disconnected: {events:#?}"
                );
                handed_back.extend(messages.iter().cloned());
            }
            Event::Disconnected { conn, .. } => {
                assert!(
                    connected.contains_key(conn),
                    "Disconnected for {conn:?}, which was never Connected: {events:#?}"
                );
                assert!(
                    ended.insert(*conn, ()).is_none(),
                    "two Disconnected for {conn:?}: {events:#?}"
                );
            }
            _ => {}
        }
    }
    for conn in connected.keys() {
        assert!(
            ended.contains_key(conn),
            "{conn:?} was Connected and never Disconnected: {events:#?}"
        );
    }
    assert_eq!(
        handed_back, accepted,
        "what send accepted must come back, once, in order: {events:#?}"
    );
}

#[test]
fn a_peer_that_hangs_up_before_confirming_an_inbound_connection_leaves_no_stray_events() {
    let node = node_with(1, config());
    let mut peer = RawPeer::connect(node.local_addr());
    peer.send(&raw::hello(PEER.0));
    let (kind, _) = peer.read_frame().expect("the node's hello");
    assert_eq!(kind, raw::HELLO);
    // The node's verdict: it has registered the connection.
    peer.expect_verdict();

    let accepted = send_some(&node);
    drop(peer);
    wait_until("the node has dropped the connection", || {
        !node.is_connected(PEER)
    });
    check_events(&node, &accepted);
}

#[test]
fn a_peer_that_hangs_up_before_confirming_a_dialled_connection_leaves_no_stray_events() {
    let node = Arc::new(node_with(1, config()));
    let listener = RawListener::bind();
    let dial = {
        let (node, addr) = (node.clone(), listener.addr());
        thread::spawn(move || node.connect(addr))
    };
    let mut peer = listener.accept();
    peer.answer_hello(PEER.0, 1 << 20);
    // The node's verdict: it has registered the connection.
    peer.expect_verdict();

    let accepted = send_some(&node);
    drop(peer);
    let result = dial.join().expect("the connect thread");
    assert!(result.is_err(), "connect succeeded: {result:?}");
    wait_until("the node has dropped the connection", || {
        !node.is_connected(PEER)
    });
    check_events(&node, &accepted);
}
