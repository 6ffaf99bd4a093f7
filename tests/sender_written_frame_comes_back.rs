//! Guarantee 3 with a frame the sending thread began itself: if the connection ends
//! before the writer has finished it, it comes back in `Event::Undelivered`, ahead
//! of what was queued after it.

mod util;

use std::time::Duration;

use util::idle::until_written_by_sender;
use util::raw::RawPeer;
use util::{config, event, node_with, tagged, unbufferable, untag, wait_until};
use wirelane::{Event, PeerId};

#[test]
fn a_frame_a_sender_began_comes_back_when_the_connection_ends() {
    let a = node_with(
        1,
        config()
            .silence_timeout(Duration::from_secs(120))
            .ping_interval(Duration::from_secs(60)),
    );
    let huge = unbufferable();
    // Reads nothing, ever: the huge frame can never be finished.
    let _peer = RawPeer::handshake_with_limit(a.local_addr(), 2, 1, huge as u32 + 1);

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
    assert!(a.disconnect(PeerId(2)));

    let back = match event(&a, "undelivered", |e| {
        matches!(e, Event::Undelivered { .. })
    }) {
        Event::Undelivered { peer, messages, .. } => {
            assert_eq!(peer, PeerId(2));
            messages
        }
        _ => unreachable!(),
    };
    let seqs: Vec<(u8, u32)> = back.iter().map(|m| untag(m)).collect();
    assert_eq!(seqs, vec![(b'p', 0), (b'p', 1), (b'p', 2), (b'p', 3)]);
    assert_eq!(back[0].len(), huge, "the begun message comes back whole");
    let stats = a.stats().private;
    assert_eq!((stats.sent, stats.undelivered), (0, 4));
}
