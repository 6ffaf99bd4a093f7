//! Guarantee 4: FIFO per peer and lane, and private data never waits behind gossip.
//! Messages queued while the writer is busy are written private lane first.

mod util;

use std::time::Duration;

use util::raw::{self, RawPeer};
use util::{config, node_with, tagged, unbufferable, untag, wait_until};
use wirelane::PeerId;

#[test]
fn private_messages_overtake_queued_gossip_and_each_lane_keeps_its_order() {
    let a = node_with(
        1,
        config()
            .silence_timeout(Duration::from_secs(120))
            .ping_interval(Duration::from_secs(60)),
    );
    // A hand-driven peer that does not read until told to: A's writer blocks inside
    // the write of one huge private message.
    let huge = unbufferable();
    let mut peer = RawPeer::handshake_with_limit(a.local_addr(), 2, 1, huge as u32 + 1);
    a.send(PeerId(2), tagged(b'p', 0, huge)).unwrap();
    wait_until("the writer is inside the huge write", || {
        let s = a.peer_stats(PeerId(2)).unwrap().private;
        // Out of the lane (no bytes queued there) and not yet written.
        s.sent == 0 && s.queued == 1 && s.queued_bytes == 0
    });

    // Gossip first, then private, all queued behind the blocked write.
    for seq in 0..10 {
        a.try_send(PeerId(2), tagged(b'g', seq, 8)).unwrap();
    }
    for seq in 1..11 {
        a.send(PeerId(2), tagged(b'p', seq, 8)).unwrap();
    }

    let mut order = Vec::new();
    while order.len() < 21 {
        let (kind, payload) = peer.read_frame().expect("frame");
        match kind {
            raw::PRIVATE | raw::GOSSIP => order.push(untag(&payload)),
            raw::PING | raw::WINDOW => {}
            other => panic!("unexpected frame kind {other}"),
        }
    }
    let expected: Vec<(u8, u32)> = (0..11)
        .map(|seq| (b'p', seq))
        .chain((0..10).map(|seq| (b'g', seq)))
        .collect();
    assert_eq!(order, expected);
}
