//! When a connection is cut while its application takes nothing, every whole
//! private frame the peer sent within its window has been delivered: the reader
//! never waits for the application, so nothing it read is left to count as lost.
//! (It once waited, with a full inbound queue, and the frames behind the one it
//! waited with were counted as `recv_dropped` when the connection was cut.)

mod util;

use std::time::Duration;

use util::raw::{self, RawPeer};
use util::{config, event, node_with, recv, tagged, untag, wait_until};
use wirelane::{Event, PeerId};

const BURST: u32 = 5;

#[test]
fn every_frame_read_before_a_forced_close_is_delivered_or_counted() {
    // A gossip place of one; private data is bounded by the window instead.
    let b = node_with(
        1,
        config()
            .inbound_capacity(1)
            .ping_interval(Duration::from_millis(20))
            .silence_timeout(Duration::from_secs(30)),
    );
    let mut peer = RawPeer::handshake(b.local_addr(), 2, 1);
    // One write: the reader takes the whole burst in one read.
    let mut burst = Vec::new();
    for seq in 0..BURST {
        burst.extend(raw::frame(raw::PRIVATE, &tagged(2, seq, 16)));
    }
    peer.send(&burst);
    wait_until("B's reader has delivered the burst", || {
        b.peer_stats(PeerId(2))
            .is_some_and(|s| s.private.received == u64::from(BURST))
    });
    assert!(!b.peer_stats(PeerId(2)).unwrap().reader_waiting);
    // Gone without a close: B finds out when a ping fails.
    drop(peer);
    event(&b, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    });

    for seq in 0..BURST {
        assert_eq!(untag(&recv(b.incoming()).payload), (2, seq));
    }
    let private = b.stats().private;
    assert_eq!(
        (private.received, private.recv_dropped),
        (u64::from(BURST), 0),
        "all delivered, none lost"
    );
}
