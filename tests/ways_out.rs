//! Guarantee 5: a blocked sender always has a way out — room, the connection
//! closing, the node shutting down, or its own deadline — and guarantee 3: whatever
//! was queued and never written comes back in `Event::Undelivered`. Each in
//! plaintext and over TLS.

mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use util::wire::Wire;
use util::{
    config, connect, event, finishes, silent_receiver, stuck_sender, tagged, untag, StuckSender,
};
use wirelane::crossbeam_channel::RecvTimeoutError;
use wirelane::{DisconnectReason, Event, Node, PeerId, SendError, SendTimeoutError};

const PROMPT: Duration = Duration::from_secs(20);

/// A connected to B, where B never reads, with a sender stuck on A's private lane
/// (capacity 4) behind a write that cannot finish.
fn blocked_sender(wire: &Wire) -> (Arc<Node>, Node, StuckSender) {
    let a = Arc::new(wire.node(1, config().private_capacity(4)));
    let b = wire.node(2, silent_receiver());
    connect(&a, &b);
    let stuck = stuck_sender(&a, PeerId(2), 4);
    assert_eq!(stuck.blocked_on, 7);
    (a, b, stuck)
}

/// Checks the accounting once the connection has ended: every message the sender
/// offered was written to the socket, handed back in `Undelivered`, or returned to
/// the sender — exactly once, in order.
fn check_accounting(a: &Node, returned: u32, undelivered: &[wirelane::Bytes]) {
    let written = a.stats().private.sent as u32;
    assert_eq!(written, 2, "the two small messages before the huge one");
    let seqs: Vec<u32> = undelivered.iter().map(|m| untag(m).1).collect();
    // The huge message never reached the socket (the writer held it for the peer's
    // window), so it comes back too, followed by the four that were in the lane —
    // and the blocked sender's message 7 if, woken as the writer drained the lane
    // after the close, it took a freed slot before it saw the close (its next send
    // is then the one refused).
    assert_eq!(
        seqs,
        (written..returned).collect::<Vec<_>>(),
        "oldest first, none skipped"
    );
    assert!(undelivered.len() == 5 || undelivered.len() == 6, "{seqs:?}");
}

#[test]
fn disconnect_wakes_the_blocked_sender_and_hands_back_the_queue() {
    disconnect_wakes_the_blocked_sender_and_hands_back_the_queue_on(Wire::Plain);
}

#[cfg(feature = "tls")]
#[test]
fn disconnect_wakes_the_blocked_sender_and_hands_back_the_queue_over_tls() {
    disconnect_wakes_the_blocked_sender_and_hands_back_the_queue_on(Wire::tls());
}

fn disconnect_wakes_the_blocked_sender_and_hands_back_the_queue_on(wire: Wire) {
    let (a, _b, sender) = blocked_sender(&wire);
    assert!(a.disconnect(PeerId(2)));
    let (returned, err) = finishes("sender wakes on disconnect", PROMPT, move || {
        sender.thread.join().unwrap()
    });
    // 7 refused as the connection closes, or, if it took a slot the writer's final
    // drain freed (see `check_accounting`), 8 refused with no connection left.
    assert!(
        matches!(
            (returned, &err),
            (7, SendError::Disconnected(_)) | (8, SendError::NotConnected(_))
        ),
        "{returned}: {err:?}"
    );
    assert_eq!(untag(&err.into_inner()).1, returned);

    let Event::Undelivered { peer, messages, .. } = event(&a, "undelivered", |e| {
        matches!(e, Event::Undelivered { .. })
    }) else {
        unreachable!()
    };
    assert_eq!(peer, PeerId(2));
    let ended = event(&a, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    });
    assert!(matches!(
        ended,
        Event::Disconnected {
            reason: DisconnectReason::ClosedByUs,
            ..
        }
    ));
    check_accounting(&a, returned, &messages);
    assert!(a.peer_stats(PeerId(2)).is_none());
    assert!(matches!(
        a.send(PeerId(2), vec![1]),
        Err(SendError::NotConnected(_))
    ));
}

#[test]
fn shutdown_wakes_the_blocked_sender_and_hands_back_the_queue() {
    shutdown_wakes_the_blocked_sender_and_hands_back_the_queue_on(Wire::Plain);
}

#[cfg(feature = "tls")]
#[test]
fn shutdown_wakes_the_blocked_sender_and_hands_back_the_queue_over_tls() {
    shutdown_wakes_the_blocked_sender_and_hands_back_the_queue_on(Wire::tls());
}

fn shutdown_wakes_the_blocked_sender_and_hands_back_the_queue_on(wire: Wire) {
    let (a, _b, sender) = blocked_sender(&wire);
    let a2 = a.clone();
    finishes("shutdown with a blocked sender", PROMPT, move || {
        a2.shutdown()
    });
    let (returned, err) = finishes("sender wakes on shutdown", PROMPT, move || {
        sender.thread.join().unwrap()
    });
    assert!(matches!(err, SendError::Shutdown(_)), "{err:?}");
    assert_eq!(untag(&err.into_inner()).1, returned);

    // The events are still there to read after shutdown, then the queue disconnects.
    let Event::Undelivered { messages, .. } = event(&a, "undelivered", |e| {
        matches!(e, Event::Undelivered { .. })
    }) else {
        unreachable!()
    };
    check_accounting(&a, returned, &messages);
    let ended = event(&a, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    });
    assert!(matches!(
        ended,
        Event::Disconnected {
            reason: DisconnectReason::Shutdown,
            ..
        }
    ));
    assert!(
        matches!(
            a.events().recv_timeout(util::GUARD),
            Err(RecvTimeoutError::Disconnected)
        ),
        "events disconnect after shutdown"
    );
    assert!(matches!(
        a.send(PeerId(2), vec![1]),
        Err(SendError::Shutdown(_))
    ));
}

#[test]
fn send_timeout_gives_the_message_back_when_the_lane_stays_full() {
    send_timeout_gives_the_message_back_when_the_lane_stays_full_on(Wire::Plain);
}

#[cfg(feature = "tls")]
#[test]
fn send_timeout_gives_the_message_back_when_the_lane_stays_full_over_tls() {
    send_timeout_gives_the_message_back_when_the_lane_stays_full_on(Wire::tls());
}

fn send_timeout_gives_the_message_back_when_the_lane_stays_full_on(wire: Wire) {
    let (a, _b, sender) = blocked_sender(&wire);
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let err = a
        .send_timeout(PeerId(2), tagged(9, 9, 10), timeout)
        .unwrap_err();
    assert!(started.elapsed() >= timeout);
    assert!(err.is_timeout());
    assert_eq!(untag(&err.into_inner()), (9, 9));
    // The connection is untouched by a timeout.
    assert!(a.is_connected(PeerId(2)));
    a.disconnect(PeerId(2));
    finishes("sender wakes", PROMPT, move || {
        sender.thread.join().unwrap()
    });
}

#[test]
fn send_timeout_succeeds_when_room_appears() {
    send_timeout_succeeds_when_room_appears_on(Wire::Plain);
}

#[cfg(feature = "tls")]
#[test]
fn send_timeout_succeeds_when_room_appears_over_tls() {
    send_timeout_succeeds_when_room_appears_on(Wire::tls());
}

fn send_timeout_succeeds_when_room_appears_on(wire: Wire) {
    let a = wire.node(1, config().private_capacity(1));
    let b = wire.node(2, config());
    connect(&a, &b);
    for seq in 0..1000 {
        match a.send_timeout(PeerId(2), tagged(1, seq, 8), PROMPT) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => panic!("the reader drains, so room appears"),
            Err(e) => panic!("{e}"),
        }
    }
    for seq in 0..1000 {
        assert_eq!(untag(&util::recv(b.incoming()).payload).1, seq);
    }
}
