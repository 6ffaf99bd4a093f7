//! Guarantee 4 with a frame the sending thread began itself: when the kernel takes
//! only part of it, the writer finishes it before anything queued after it, so both
//! lanes keep their order.

mod util;

use std::time::Duration;

use util::idle::until_written_by_sender;
use util::raw::{self, RawPeer};
use util::{config, node_with, tagged, unbufferable, untag, wait_until};
use wirelane::PeerId;

#[test]
fn a_frame_a_sender_began_is_finished_before_anything_queued_after_it() {
    // No pings: nothing but the test's own sends wakes A's writer.
    let a = node_with(
        1,
        config()
            .silence_timeout(Duration::from_secs(120))
            .ping_interval(Duration::from_secs(60)),
    );
    let huge = unbufferable();
    // A hand-driven peer that reads nothing until told to.
    let mut peer = RawPeer::handshake_with_limit(a.local_addr(), 2, 1, huge as u32 + 1);

    let gossip_before = until_written_by_sender(&a, PeerId(2));
    let written_by_senders =
        |a: &wirelane::Node| a.peer_stats(PeerId(2)).unwrap().written_by_senders;
    let before = written_by_senders(&a);
    // More than the kernel can take at once: the sender writes what fits and hands
    // the rest, with the turn, to the writer, which blocks in the write.
    a.send(PeerId(2), tagged(b'p', 0, huge)).unwrap();
    assert_eq!(
        written_by_senders(&a),
        before + 1,
        "the huge message was begun by the sending thread"
    );
    wait_until("the writer holds the rest of the huge message", || {
        let s = a.peer_stats(PeerId(2)).unwrap().private;
        s.sent == 0 && s.queued == 1
    });
    // Queued behind it: gossip, then private.
    for seq in 0..10 {
        a.try_send(PeerId(2), tagged(b'h', seq, 8)).unwrap();
    }
    for seq in 1..11 {
        a.send(PeerId(2), tagged(b'p', seq, 8)).unwrap();
    }

    let mut order = Vec::new();
    let mut huge_len = 0;
    while order.len() < gossip_before as usize + 21 {
        let (kind, payload) = peer.read_frame().expect("frame");
        match kind {
            raw::PRIVATE | raw::GOSSIP => {
                let tag = untag(&payload);
                if tag == (b'p', 0) {
                    huge_len = payload.len();
                }
                order.push(tag);
            }
            raw::PING | raw::WINDOW => {}
            other => panic!("unexpected frame kind {other}"),
        }
    }
    assert_eq!(huge_len, huge, "the huge message arrives whole");
    let expected: Vec<(u8, u32)> = (0..gossip_before)
        .map(|seq| (b'g', seq))
        .chain((0..11).map(|seq| (b'p', seq)))
        .chain((0..10).map(|seq| (b'h', seq)))
        .collect();
    assert_eq!(order, expected);
}
