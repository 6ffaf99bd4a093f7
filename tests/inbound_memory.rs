//! Large inbound gossip payloads are bounded in bytes (`Config::inbound_bytes`), not
//! only in messages: once the payloads the application has not yet dropped fill the
//! budget, the reader waits before allocating for the next one — pushing back over
//! TCP — and resumes as the application drops them, losing and reordering nothing.
//! A peer that floods a node with gossip frames at the frame limit cannot make it
//! hold more. (Private payloads are bounded by the window each connection is
//! granted instead, and never make the reader wait: tests/window_overrun_is_refused.rs.)

mod util;

use std::io::Write;
use std::sync::Arc;
use std::thread;

use util::raw::{self, RawPeer};
use util::{config, connect, finishes, node_with, recv, rss_kib, tagged, untag, wait_until, GUARD};
use wirelane::{Lane, PeerId};

#[test]
fn large_payloads_wait_for_the_application_to_drop_earlier_ones() {
    const SIZE: usize = 256 * 1024;
    const COUNT: u32 = 40;
    const BUDGET: usize = 1 << 20;
    // A's gossip lane holds the whole run, so nothing is shed before it is sent.
    let a = Arc::new(node_with(1, config().gossip_lane_bytes(64 << 20)));
    // The inbound queue could take every message: only the byte budget holds them.
    let b = node_with(2, config().inbound_bytes(BUDGET).inbound_capacity(1000));
    let to_b = connect(&a, &b);
    let sender = {
        let a = a.clone();
        thread::spawn(move || {
            for seq in 0..COUNT {
                a.try_send(to_b, tagged(1, seq, SIZE))
                    .expect("the gossip lane holds the whole run");
            }
        })
    };

    // Four payloads fill the budget; the fifth waits, so the reader stops.
    wait_until("b's reader waits for room", || {
        b.stats().readers_waiting == 1
    });
    let stats = b.stats();
    assert_eq!(stats.inbound_bytes, BUDGET as u64);
    let peer = b.peer_stats(PeerId(1)).unwrap();
    assert!(peer.reader_waiting);
    assert_eq!(peer.gossip.received, (BUDGET / SIZE) as u64);
    assert_eq!(b.incoming().len(), BUDGET / SIZE);

    // Holding a received message keeps its bytes held; dropping it makes room.
    let first = recv(b.incoming());
    assert_eq!(untag(&first.payload), (1, 0));
    assert!(b.stats().readers_waiting == 1 && b.incoming().len() == BUDGET / SIZE - 1);
    drop(first);
    wait_until("one more payload is admitted", || {
        b.peer_stats(PeerId(1)).unwrap().gossip.received == (BUDGET / SIZE) as u64 + 1
    });

    // The rest, each dropped at once: everything arrives in order and the budget
    // never overflows.
    for seq in 1..COUNT {
        let m = recv(b.incoming());
        assert_eq!((m.from, m.lane), (PeerId(1), Lane::Gossip));
        assert_eq!(untag(&m.payload), (1, seq), "lost or reordered");
        assert_eq!(m.payload.len(), SIZE);
        assert!(b.stats().inbound_bytes <= BUDGET as u64);
    }
    finishes("the sender", GUARD, move || sender.join().unwrap());
    // The reader adds to its counters just after delivering, so they may trail.
    wait_until("the counters catch up", || {
        b.stats().gossip.received == u64::from(COUNT)
    });
    let stats = b.stats();
    assert_eq!((stats.inbound_bytes, stats.readers_waiting), (0, 0));
    assert_eq!(stats.gossip.recv_dropped, 0);
}

#[test]
fn a_flood_of_frames_at_the_limit_leaves_memory_bounded() {
    const FRAME: usize = 16 << 20;
    const FRAMES: usize = 24;
    // Defaults (64 MiB of large payloads, 16 MiB frames) and an application that
    // reads nothing.
    let node = node_with(1, config());
    assert_eq!(node.config().inbound_bytes, 64 << 20);
    assert_eq!(node.config().max_frame_len as usize, FRAME);
    // The frame is built before the baseline is taken, so it does not count.
    let frame = raw::frame(raw::GOSSIP, &vec![0xAB; FRAME]);
    let before = rss_kib();

    let mut peer = RawPeer::handshake(node.local_addr(), 9, 1);
    // Writes block once the node stops reading and the socket buffers fill; the
    // node's shutdown below ends them.
    let flood = thread::spawn(move || {
        for _ in 0..FRAMES {
            if peer.stream.write_all(&frame).is_err() {
                break;
            }
        }
    });
    wait_until("the node's reader waits for room", || {
        node.stats().readers_waiting == 1
    });
    let stats = node.stats();
    assert_eq!(stats.inbound_bytes, 4 * FRAME as u64);
    assert_eq!(stats.gossip.received, 4);
    // Without the budget the node would read the whole flood (384 MiB). Allow the
    // four payloads, a partly filled read buffer, and room for what the other test
    // in this file holds meanwhile.
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < (64 + 64) * 1024,
        "resident memory grew by {grown} KiB"
    );

    finishes("the node shuts down", GUARD, move || node.shutdown());
    finishes("the flood ends", GUARD, move || flood.join().unwrap());
}
