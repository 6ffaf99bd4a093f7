//! One byte changed on the path, inside a TLS record after the handshake, ends the
//! connection: the receiver cannot decrypt the record and closes, and nothing of
//! it is delivered. The private messages the sender still held come back in its
//! `Event::Undelivered`: every message `send` accepted was received once, in
//! order, or handed back — none lost, none twice.
//!
//! The receiver grants a window of two messages and its application reads nothing
//! until the end, so the sender holds all but the first two when the byte is
//! flipped, and the record it lands in carries no private message.
#![cfg(feature = "tls")]

mod util;

use util::certs::Ca;
use util::relay::{Direction, Relay};
use util::{config, event, node_with, tagged, untag, wait_until};
use wirelane::{DisconnectReason, Event, PeerId};

const MESSAGES: u32 = 20;

#[test]
fn a_flipped_byte_ends_the_connection_and_the_held_messages_come_back() {
    let ca = Ca::new("network ca");
    let a = node_with(1, config().tls(ca.tls(1)).private_capacity(32));
    let b = node_with(2, config().tls(ca.tls(2)).private_window(2));
    let relay = Relay::start(b.local_addr());
    assert_eq!(a.connect(relay.addr).expect("connect"), PeerId(2));

    for seq in 0..MESSAGES {
        a.send(PeerId(2), tagged(1, seq, 64)).expect("queued");
    }
    // The first two are in b's inbound queue (so their records have crossed the
    // relay), and a waits for room in b's window with the others.
    wait_until("b holds the two messages its window allows", || {
        b.incoming().len() == 2
            && a.peer_stats(PeerId(2))
                .is_some_and(|s| s.window_closed && s.private.sent == 2)
    });

    // The first byte after the header of the next record from a: its ciphertext.
    relay.flip(Direction::ToTarget, 5);
    a.try_send(PeerId(2), &b"gossip that carries the flip"[..])
        .expect("gossip");

    let Event::Disconnected { reason, .. } = event(&b, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    }) else {
        unreachable!()
    };
    assert!(relay.flipped());
    assert!(
        matches!(&reason, DisconnectReason::Io(e) if e.to_string().contains("tls")),
        "b cannot decrypt the record: {reason:?}"
    );
    let Event::Undelivered { messages, .. } = event(&a, "undelivered", |e| {
        matches!(e, Event::Undelivered { .. })
    }) else {
        unreachable!()
    };
    event(&a, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    });

    let received: Vec<u32> = b
        .incoming()
        .try_iter()
        .map(|m| {
            let (sender, seq) = untag(&m.payload);
            assert_eq!(
                sender, 1,
                "only a's private messages: the gossip was dropped"
            );
            seq
        })
        .collect();
    let handed_back: Vec<u32> = messages.iter().map(|m| untag(m).1).collect();
    assert_eq!(received, [0, 1], "received once, in order");
    assert_eq!(
        handed_back,
        (2..MESSAGES).collect::<Vec<_>>(),
        "the rest handed back, in order"
    );
    let stats = a.stats().private;
    assert_eq!(
        (stats.sent, stats.undelivered),
        (2, u64::from(MESSAGES) - 2)
    );
}
