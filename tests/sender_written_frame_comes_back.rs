//! Guarantee 3 with a frame the sending thread began itself: if the connection ends
//! before the writer has finished it, it comes back in `Event::Undelivered`, ahead
//! of what was queued after it.

mod util;

use std::time::Duration;

use bytes::Bytes;
use util::idle::until_written_by_sender;
use util::raw::RawPeer;
use util::{config, event, node_with, tagged, unbufferable, untag, wait_until};
use wirelane::{Event, Node, PeerId};

/// A node connected to a peer that reads nothing, with a huge private message begun
/// by the sending thread and three small ones queued behind it: none of them can
/// ever be written whole. Returns the node, the peer (keep it) and the huge size.
fn four_stuck(config: wirelane::Config) -> (Node, RawPeer, usize) {
    let a = node_with(
        1,
        config
            .silence_timeout(Duration::from_secs(120))
            .ping_interval(Duration::from_secs(60)),
    );
    let huge = unbufferable();
    // Reads nothing, ever: the huge frame can never be finished.
    let peer = RawPeer::handshake_with_limit(a.local_addr(), 2, 1, huge as u32 + 1);

    until_written_by_sender(&a, PeerId(2));
    let before = a.peer_stats(PeerId(2)).unwrap().written_by_senders;
    a.send(PeerId(2), tagged(b'p', 0, huge)).unwrap();
    assert_eq!(
        a.peer_stats(PeerId(2)).unwrap().written_by_senders,
        before + 1,
        "the huge message was begun by the sending thread"
    );
    wait_until("the writer holds the rest of the huge message", || {
        let s = a.peer_stats(PeerId(2)).unwrap().private;
        s.sent == 0 && s.queued == 1
    });
    for seq in 1..4 {
        a.send(PeerId(2), tagged(b'p', seq, 8)).unwrap();
    }
    (a, peer, huge)
}

/// The messages of an `Undelivered` event, in order.
fn handed_back(a: &Node) -> Vec<Bytes> {
    match event(a, "undelivered", |e| matches!(e, Event::Undelivered { .. })) {
        Event::Undelivered { peer, messages, .. } => {
            assert_eq!(peer, PeerId(2));
            messages
        }
        _ => unreachable!(),
    }
}

#[test]
fn a_frame_a_sender_began_comes_back_when_the_connection_ends() {
    let (a, _peer, huge) = four_stuck(config());
    assert!(a.disconnect(PeerId(2)));

    let back = handed_back(&a);
    let seqs: Vec<(u8, u32)> = back.iter().map(|m| untag(m)).collect();
    assert_eq!(seqs, vec![(b'p', 0), (b'p', 1), (b'p', 2), (b'p', 3)]);
    assert_eq!(back[0].len(), huge, "the begun message comes back whole");
    let stats = a.stats().private;
    assert_eq!((stats.sent, stats.undelivered), (0, 4));
}

/// The counters are raised before the event can be read: here the event queue is
/// full, so the hand-back waits for room, and the messages are already counted.
#[test]
fn handed_back_messages_are_counted_before_the_event_is_seen() {
    // One event fits: `Connected`, never read until the end.
    let (a, _peer, _) = four_stuck(config().event_capacity(1));
    assert!(a.disconnect(PeerId(2)));
    wait_until("the four messages are counted as handed back", || {
        a.stats().private.undelivered == 4
    });
    let seqs: Vec<(u8, u32)> = handed_back(&a).iter().map(|m| untag(m)).collect();
    assert_eq!(seqs, vec![(b'p', 0), (b'p', 1), (b'p', 2), (b'p', 3)]);
    assert_eq!(a.stats().private.undelivered, 4);
}
