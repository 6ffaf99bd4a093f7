//! A redialling node says what it is doing: an `Event::Redialing` when it loses a
//! peer (attempt 1) and after every failed attempt, with the wait before the next —
//! the doubling backoff, shortened by some jitter, never longer — until the peer is
//! back on the same port and the redial connects.

mod util;

use std::time::Duration;

use util::{config, connect, event, node_with};
use wirelane::{Event, Node, PeerId};

const INTERVAL: Duration = Duration::from_millis(40);
const MAX: Duration = Duration::from_millis(160);

#[test]
fn each_redial_is_announced_with_its_attempt_and_wait() {
    let a = node_with(
        1,
        config()
            .reconnect_interval(Some(INTERVAL))
            .reconnect_max(MAX),
    );
    let b = node_with(2, config());
    let addr = b.local_addr();
    connect(&a, &b);
    b.shutdown();
    drop(b);

    let mut base = INTERVAL;
    for attempt in 1..=4 {
        let e = event(&a, "redialing", |e| matches!(e, Event::Redialing { .. }));
        let Event::Redialing {
            peer,
            attempt: n,
            next_in,
        } = e
        else {
            unreachable!()
        };
        assert_eq!((peer, n), (PeerId(2), attempt));
        assert!(
            next_in <= base && next_in >= base * 3 / 4,
            "attempt {attempt}: {next_in:?} for a backoff of {base:?}"
        );
        // The first wait is the interval; after each failure it doubles, up to MAX.
        if attempt > 1 {
            base = (base * 2).min(MAX);
        }
    }

    // The peer comes back on the same port: the next redial connects.
    let b = Node::bind(PeerId(2), addr, config()).expect("rebind the same port");
    event(&a, "connected again", |e| {
        matches!(
            e,
            Event::Connected {
                peer: PeerId(2),
                ..
            }
        )
    });
    assert!(a.is_connected(PeerId(2)));
    drop(b);
}
