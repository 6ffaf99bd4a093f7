//! `disconnect` stops a node from dialling the peer again (`Config::reconnect_interval`)
//! even when the connection it lost is still being torn down: a redial that the
//! teardown asks for after the application's `disconnect` must not happen.
//! Regression test: the cancel only removed a redial already queued, so one asked
//! for a moment later went ahead and reconnected to the peer the application had
//! given up on.
//!
//! The peer is a hand-written one on a listener that stays up, so any redial shows as
//! a connection made to it.

mod util;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use util::raw::{RawListener, RawPeer};
use util::{config, event, node_with, stuck_sender, unbufferable, wait_until};
use wirelane::{Event, Node, PeerId};

const PEER: PeerId = PeerId(2);
const INTERVAL: Duration = Duration::from_millis(50);
const CAPACITY: usize = 4;

/// Proving that no dial happens needs a window: 20 reconnect intervals, and at
/// least a second. The only place in this file where time decides anything; a
/// correct node passes however slow the machine, a broken one dials after one
/// interval.
fn no_dial_within_window(listener: &RawListener) {
    let window = (INTERVAL * 20).max(Duration::from_secs(1));
    assert!(
        listener.accept_within(window).is_none(),
        "the node dialled the peer again after the application disconnected it"
    );
}

/// A redialling node, connected to a hand-written peer that never reads.
fn connected(config: wirelane::Config) -> (Arc<Node>, RawListener, RawPeer) {
    let node = Arc::new(node_with(1, config.reconnect_interval(Some(INTERVAL))));
    let listener = RawListener::bind();
    let dial = {
        let (node, addr) = (node.clone(), listener.addr());
        thread::spawn(move || node.connect(addr))
    };
    let mut peer = listener.accept();
    peer.answer_handshake(PEER.0, 1, unbufferable() as u32);
    assert_eq!(dial.join().unwrap().expect("connect"), PEER);
    (node, listener, peer)
}

#[test]
fn disconnect_during_the_teardown_of_a_lost_connection_stops_the_redial() {
    // An event queue of one, which `Connected` fills and the test does not read
    // yet, and private messages stuck in the lane: the teardown waits to hand them
    // back before it asks for a redial. That holds it, deterministically, between
    // "the connection is gone" and "dial it again".
    let (node, listener, peer) = connected(config().event_capacity(1).private_capacity(CAPACITY));
    let stuck = stuck_sender(&node, PEER, CAPACITY);

    // The peer goes away.
    drop(peer);
    let _ = stuck.thread.join().expect("the sender thread");
    wait_until("the connection is gone from the peer table", || {
        !node.is_connected(PEER)
    });
    // The application gives up on the peer while the teardown still waits.
    assert!(!node.disconnect(PEER), "there was no connection to close");

    // Let the teardown finish: it hands the messages back and ends the connection.
    // (Its `Disconnected` may find the one-event queue full and be dropped, as
    // informational events are; the window below does not depend on it.)
    event(&node, "the undelivered messages", |e| {
        matches!(e, Event::Undelivered { .. })
    });

    no_dial_within_window(&listener);
    assert!(!node.is_connected(PEER));
    assert_eq!(node.stats().redials_pending, 0);
}
