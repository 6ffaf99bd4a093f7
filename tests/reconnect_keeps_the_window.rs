//! A reconnection does not bring a fresh window while the messages of the
//! connection it replaces still wait in the inbound queue: the window is the peer's,
//! across its connections. Otherwise a slow application and frequent reconnections
//! grow the queue by a window each time — `wirelane-bench soak` (a slow consumer
//! and a disconnect every few hundred milliseconds) saw the receiver's memory climb
//! past 500 MiB when each connection had a window of its own.

mod util;

use util::{config, connect, event, node_with, tagged, untag, wait_until};
use wirelane::{Event, Lane, PeerId};

const WINDOW: usize = 16;
const ROUNDS: u32 = 5;

#[test]
fn reconnecting_while_the_queue_is_full_brings_no_new_room() {
    let a = node_with(1, config());
    let b = node_with(2, config().private_window(WINDOW));
    let mut next = 0;
    for round in 0..ROUNDS {
        connect(&a, &b);
        // B's writer announces its window before anything else it writes: once A's
        // application has B's gossip, A's reader has the window.
        b.try_send(PeerId(1), tagged(2, round, 8)).expect("gossip");
        let m = util::recv(a.incoming());
        assert_eq!((m.lane, untag(&m.payload)), (Lane::Gossip, (2, round)));
        for _ in 0..2 * WINDOW {
            a.send(PeerId(2), tagged(1, next, 32)).expect("send");
            next += 1;
        }
        wait_until("A's writer waits for B's window", || {
            a.peer_stats(PeerId(2)).is_some_and(|s| s.window_closed)
        });
        // A's writer sends private data before gossip: once B has this, it has all
        // the private messages A could send.
        a.try_send(PeerId(2), tagged(1, round, 8)).expect("gossip");
        wait_until("B has A's gossip", || {
            b.stats().gossip.received == u64::from(round) + 1
        });
        assert_eq!(
            (b.stats().private.received, b.incoming().len()),
            (WINDOW as u64, WINDOW + round as usize + 1),
            "round {round}: B holds one window of private messages, however many connections"
        );
        assert!(a.disconnect(PeerId(2)));
        event(&a, "the rest handed back", |e| {
            matches!(e, Event::Undelivered { .. })
        });
        event(&a, "disconnected", |e| {
            matches!(e, Event::Disconnected { .. })
        });
    }
    // B's application catches up: the first window, in order, and A's gossip.
    let private: Vec<(u8, u32)> = b
        .incoming()
        .try_iter()
        .filter(|m| m.lane == Lane::Private)
        .map(|m| untag(&m.payload))
        .collect();
    assert_eq!(
        private,
        (0..WINDOW as u32).map(|seq| (1, seq)).collect::<Vec<_>>()
    );
}
