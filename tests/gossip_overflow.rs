//! Guarantee 2: gossip never blocks. Against a peer that never reads, every
//! `try_send` returns at once — queued or dropped — and the counters account for
//! every attempt exactly, on the sending and on the receiving side.

mod util;

use std::time::{Duration, Instant};

use util::{config, connect, event, node_with, wait_until};
use wirelane::{Event, PeerId, TrySendError};

const ATTEMPTS: u64 = 200_000;

#[test]
fn try_send_never_blocks_and_every_attempt_is_counted() {
    let a = node_with(1, config().gossip_capacity(64));
    // B never reads. Two private messages stop its reader for good (the first fills
    // its inbound queue, the second waits for room), so once the socket buffers are
    // full A's writer blocks and A's gossip lane fills.
    let b = node_with(2, config().inbound_capacity(1));
    let to_b = connect(&a, &b);
    a.send(to_b, b"fills the inbound queue".to_vec()).unwrap();
    a.send(to_b, b"blocks the reader".to_vec()).unwrap();

    let (mut queued, mut full) = (0u64, 0u64);
    let mut slowest = Duration::ZERO;
    for i in 0..ATTEMPTS {
        let started = Instant::now();
        match a.try_send(to_b, vec![i as u8; 1024]) {
            Ok(()) => queued += 1,
            Err(TrySendError::Full(payload)) => {
                assert_eq!(payload.len(), 1024, "the dropped message is handed back");
                full += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
        slowest = slowest.max(started.elapsed());
    }
    assert_eq!(queued + full, ATTEMPTS);
    assert!(full > 0, "the lane must have filled");
    // Generous on a busy machine; a blocking send would wait forever.
    assert!(
        slowest < Duration::from_secs(5),
        "a try_send took {slowest:?}"
    );

    // Once the writer is stuck nothing moves, and the figures add up exactly.
    wait_until("the gossip figures account for every attempt", || {
        let s = a.peer_stats(to_b).unwrap().gossip;
        s.sent + s.queued + s.dropped == ATTEMPTS
    });
    let s = a.peer_stats(to_b).unwrap().gossip;
    assert_eq!(s.dropped, full, "every refusal is counted");
    // A snapshot taken while the writer still moves messages from the lane to the
    // socket can be off by those in motion; once it is stuck the sum is exact.
    wait_until("every accepted message is written or waiting", || {
        let s = a.peer_stats(to_b).unwrap().gossip;
        s.sent + s.queued == queued
    });

    // Once the connection ends, what was still queued is dropped and counted too:
    // sent + dropped equals attempted, exactly.
    a.disconnect(to_b);
    event(&a, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    });
    let total = a.stats().gossip;
    assert_eq!(total.queued, 0);
    assert_eq!(total.sent + total.dropped, ATTEMPTS);
    assert!(a.peer_stats(PeerId(2)).is_none());
}

#[test]
fn gossip_that_finds_the_inbound_queue_full_is_dropped_and_counted() {
    let a = node_with(1, config());
    // B's application never reads; its reader keeps reading and drops the gossip
    // that does not fit.
    let b = node_with(2, config().inbound_capacity(8));
    let to_b = connect(&a, &b);
    let mut offered = 0u64;
    while offered < 10_000 {
        if a.try_send(to_b, vec![1u8; 64]).is_ok() {
            offered += 1;
        }
    }
    // A graceful close: B reads everything A wrote before it goes.
    a.disconnect(to_b);
    event(&b, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    });
    let sent = a.stats().gossip.sent;
    let got = b.stats().gossip;
    assert_eq!(got.received, 8, "the inbound queue's capacity");
    assert_eq!(
        got.received + got.recv_dropped,
        sent,
        "every frame that arrived is counted"
    );
    assert!(got.recv_dropped > 0);
    assert_eq!(b.incoming().len(), 8);
}
