//! A node may reconnect at once after `disconnect` even when the peer, which
//! arbitrates, cannot read the close yet: its reader is waiting for its application
//! to make room for a large gossip payload (`Config::inbound_bytes`, the one wait for
//! the application a reader has left), so it has not reached our `Close`. The peer must take
//! the new connection — we say in the handshake that we opened the old one and no
//! longer hold it — and deliver what the old one carried first. Regression test: the
//! peer kept the old connection, refused every new dial as a duplicate until its
//! reader caught up, and `connect` failed with `Duplicate` after its handshake timeout.

mod util;

use std::time::{Duration, Instant};

use util::{config, node_with, recv, tagged, untag, wait_until};
use wirelane::PeerId;

/// A gossip payload read into a buffer of its own (over a quarter of the read
/// buffer), which is what counts against `inbound_bytes`.
const LARGE: usize = 64 * 1024;

#[test]
fn connect_right_after_disconnect_succeeds_while_the_peer_is_still_delivering() {
    let cfg = config().handshake_timeout(Duration::from_secs(5));
    // A has the higher id, so B arbitrates. B holds one large payload at a time,
    // and its application does not read until the end.
    let a = node_with(2, cfg.clone());
    let b = node_with(1, cfg.inbound_bytes(LARGE));
    assert_eq!(a.connect(b.local_addr()).expect("first connect"), PeerId(1));
    for seq in 0..3 {
        a.try_send(PeerId(1), tagged(2, seq, LARGE)).unwrap();
    }
    // The first payload fills B's budget; B's reader now waits with the second.
    wait_until("B's reader waits for its application", || {
        b.peer_stats(PeerId(2)).is_some_and(|s| s.reader_waiting)
    });
    // All three written (the kernel holds what B has not read): gossip still in
    // A's lane when it disconnects would be dropped, as gossip is at a close.
    wait_until("A has written the three payloads", || {
        a.peer_stats(PeerId(1)).is_some_and(|s| s.gossip.sent == 3)
    });

    assert!(a.disconnect(PeerId(1)));
    let started = Instant::now();
    let again = a.connect(b.local_addr());
    assert_eq!(
        again.as_ref().ok(),
        Some(&PeerId(1)),
        "connect right after disconnect: {again:?} after {:?}",
        started.elapsed()
    );
    for seq in 3..6 {
        a.send(PeerId(1), tagged(2, seq, 16)).unwrap();
    }
    // B's application catches up: the old connection's messages first, then the
    // new one's, none lost.
    for seq in 0..6 {
        assert_eq!(untag(&recv(b.incoming()).payload), (2, seq));
    }
}
