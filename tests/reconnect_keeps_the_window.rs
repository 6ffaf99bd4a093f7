//! A reconnection does not bring a fresh window while the messages of the
//! connection it replaces still wait in the inbound queue: the window is the peer's,
//! across its connections. Otherwise a slow application and frequent reconnections
//! grow the queue by a window each time — `wirelane-bench soak` (a slow consumer
//! and a disconnect every few hundred milliseconds) saw the receiver's memory climb
//! past 500 MiB when each connection had a window of its own.

mod util;

use util::{config, connect, event, node_with, tagged, untag, wait_until};
use wirelane::{Event, PeerId};

const WINDOW: usize = 16;
const ROUNDS: u32 = 5;

#[test]
fn reconnecting_while_the_queue_is_full_brings_no_new_room() {
    let a = node_with(1, config());
    let b = node_with(2, config().private_window(WINDOW));
    let mut next = 0;
    for round in 0..ROUNDS {
        connect(&a, &b);
        for _ in 0..2 * WINDOW {
            a.send(PeerId(2), tagged(1, next, 32)).expect("send");
            next += 1;
        }
        wait_until("A's writer waits for B's window", || {
            a.peer_stats(PeerId(2)).is_some_and(|s| s.window_closed)
        });
        assert_eq!(
            b.incoming().len(),
            WINDOW,
            "round {round}: B's queue holds one window, however many connections"
        );
        assert!(a.disconnect(PeerId(2)));
        event(&a, "the rest handed back", |e| {
            matches!(e, Event::Undelivered { .. })
        });
        event(&a, "disconnected", |e| {
            matches!(e, Event::Disconnected { .. })
        });
    }
    // B's application catches up: the first window, in order.
    for seq in 0..WINDOW as u32 {
        assert_eq!(untag(&util::recv(b.incoming()).payload), (1, seq));
    }
    assert!(b.incoming().is_empty());
}
