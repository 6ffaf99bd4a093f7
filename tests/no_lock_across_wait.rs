//! Guarantee 1: while a thread is blocked in `send` on a full private lane, the rest
//! of the node keeps working — on the same peer and on others. If a send held the
//! peer table's lock or the connection's lock while it waited, one of these calls
//! would hang and the guard would fail the test. In plaintext and over TLS, whose
//! session lock must not be held across the blocked write either.

mod util;

use std::sync::Arc;
use std::time::Duration;

use util::wire::Wire;
use util::{config, connect, finishes, silent_receiver, stuck_sender};
use wirelane::{PeerId, SendError};

const PROMPT: Duration = Duration::from_secs(20);

#[test]
fn a_blocked_sender_stops_nothing_else() {
    a_blocked_sender_beside(Wire::Plain);
}

#[cfg(feature = "tls")]
#[test]
fn a_blocked_sender_stops_nothing_else_over_tls() {
    a_blocked_sender_beside(Wire::tls());
}

fn a_blocked_sender_beside(wire: Wire) {
    let a = Arc::new(wire.node(1, config().private_capacity(1)));
    // B never reads: A's writer blocks in a write that cannot finish, and a sender
    // blocks on the full private lane behind it.
    let b = wire.node(2, silent_receiver());
    let c = wire.node(3, config());
    let d = wire.node(4, config());
    let to_b = connect(&a, &b);
    connect(&a, &d);
    let sender = stuck_sender(&a, to_b, 1);

    let a2 = a.clone();
    let c_addr = c.local_addr();
    finishes("operations beside a blocked sender", PROMPT, move || {
        // Gossip to the same peer: queued or dropped, at once.
        let _ = a2.try_send(to_b, b"gossip".to_vec());
        let stats = a2.stats();
        assert_eq!(stats.peers, 2);
        let peer = a2.peer_stats(to_b).expect("B is connected");
        assert_eq!(peer.blocked_senders, 1);
        // A new connection needs the peer table's write lock.
        assert_eq!(a2.connect(c_addr).expect("connect to C"), PeerId(3));
        // So does closing another peer's connection.
        assert!(a2.disconnect(PeerId(4)));
        // And a send to another peer goes through.
        a2.send(PeerId(3), b"to c".to_vec()).expect("send to C");
    });
    assert_eq!(&util::recv(c.incoming()).payload[..], b"to c");

    // Still blocked after all that; closing B's connection is its way out.
    assert!(!sender.thread.is_finished());
    assert_eq!(a.peer_stats(to_b).unwrap().blocked_senders, 1);
    assert!(a.disconnect(to_b));
    let blocked_on = sender.blocked_on;
    let (seq, err) = finishes("the blocked sender returns", PROMPT, move || {
        sender.thread.join().unwrap()
    });
    // Refused as the connection closes; or, if it took a slot the writer's final
    // drain freed before it saw the close (the race `ways_out.rs` names), its next
    // message is refused with the connection gone.
    assert!(
        matches!(
            (seq.checked_sub(blocked_on), &err),
            (Some(0), SendError::Disconnected(_)) | (Some(1), SendError::NotConnected(_))
        ),
        "{seq} (blocked on {blocked_on}): {err:?}"
    );
    assert_eq!(
        util::untag(&err.into_inner()),
        (1, seq),
        "the message comes back"
    );
}
