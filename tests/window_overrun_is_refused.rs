//! The flow-control window is announced in the node's first frame after the
//! handshake, and a peer that sends past it, or sends a window update that takes
//! room back, is disconnected with `Violation::WindowExceeded`: the window is what
//! bounds the node's inbound queue, so a peer that ignores it must not be able to
//! fill the node's memory. What the peer sent within the window is delivered.

mod util;

use util::raw::{self, RawPeer};
use util::{config, event, node_with, recv, tagged, untag};
use wirelane::{DisconnectReason, Event, Node, PeerId, Violation};

const WINDOW: usize = 4;
const WINDOW_BYTES: usize = 1000;

fn node() -> Node {
    node_with(
        1,
        config()
            .private_window(WINDOW)
            .private_window_bytes(WINDOW_BYTES),
    )
}

#[track_caller]
fn disconnected_for_overrun(node: &Node) {
    let reason = match event(node, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    }) {
        Event::Disconnected { peer, reason, .. } => {
            assert_eq!(peer, PeerId(2));
            reason
        }
        _ => unreachable!(),
    };
    assert!(
        matches!(&reason, DisconnectReason::Protocol(e) if e.violation() == Violation::WindowExceeded),
        "{reason:?}"
    );
}

#[test]
fn the_window_is_announced_and_a_frame_past_it_ends_the_connection() {
    let node = node();
    let mut peer = RawPeer::handshake(node.local_addr(), 2, 1);
    let window = peer.read_until(raw::WINDOW);
    let mut expected = (WINDOW as u64).to_be_bytes().to_vec();
    expected.extend_from_slice(&(WINDOW_BYTES as u64).to_be_bytes());
    assert_eq!(window, expected, "the node's initial window");

    // One frame more than the window, in one write.
    let mut burst = Vec::new();
    for seq in 0..=WINDOW as u32 {
        burst.extend(raw::frame(raw::PRIVATE, &tagged(2, seq, 16)));
    }
    peer.send(&burst);
    disconnected_for_overrun(&node);
    for seq in 0..WINDOW as u32 {
        assert_eq!(untag(&recv(node.incoming()).payload), (2, seq));
    }
    assert!(
        node.incoming().try_recv().is_err(),
        "the overrun was dropped"
    );
    peer.expect_closed();
}

#[test]
fn bytes_past_the_window_end_the_connection() {
    let node = node();
    let mut peer = RawPeer::handshake(node.local_addr(), 2, 1);
    // One byte of room takes a frame of any size: the first goes, the second not.
    peer.send(&raw::frame(raw::PRIVATE, &tagged(2, 0, WINDOW_BYTES + 1)));
    peer.send(&raw::frame(raw::PRIVATE, &tagged(2, 1, 1)));
    disconnected_for_overrun(&node);
    let m = recv(node.incoming());
    assert_eq!(untag(&m.payload), (2, 0));
    assert_eq!(m.payload.len(), WINDOW_BYTES + 1);
    peer.expect_closed();
}

#[test]
fn a_window_that_shrinks_ends_the_connection() {
    let node = node();
    // The hand-written peer granted the node all the room it could want; taking it
    // back breaks the rule that the totals only grow.
    let mut peer = RawPeer::handshake(node.local_addr(), 2, 1);
    peer.send(&raw::window(1, 1));
    disconnected_for_overrun(&node);
    peer.expect_closed();
}
