//! When a connection is cut while its reader waits for the application, every
//! whole frame the reader had already read is counted as received and not delivered
//! (`recv_dropped`), not only the one it was waiting with: the accounting that
//! `docs/guarantees.md` promises for what reached the receiving node.

mod util;

use std::time::Duration;

use util::raw::{self, RawPeer};
use util::{config, event, node_with, recv, tagged, untag, wait_until};
use wirelane::{Event, PeerId};

const BURST: u32 = 5;

#[test]
fn every_frame_read_before_a_forced_close_is_delivered_or_counted() {
    // One message fills the queue; frequent pings find the dead socket quickly.
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
    wait_until("B's reader waits for its application", || {
        b.peer_stats(PeerId(2)).is_some_and(|s| s.reader_waiting)
    });
    // Gone without a close: B finds out when a ping fails.
    drop(peer);
    event(&b, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    });

    assert_eq!(untag(&recv(b.incoming()).payload), (2, 0));
    let private = b.stats().private;
    assert_eq!(
        (private.received, private.recv_dropped),
        (1, u64::from(BURST) - 1),
        "one delivered, the rest counted"
    );
}
