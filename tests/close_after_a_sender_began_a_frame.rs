//! A graceful close right after a sending thread began a frame itself (the writer
//! idle) and the kernel took only part of it: the writer finishes that frame before
//! its goodbye, so the peer reads whole frames and then the close — never a close
//! frame inside a payload — and the message is delivered exactly once or handed back.

mod util;

use util::idle::until_written_by_sender;
use util::{config, connect, event, node_with, tagged, untag};
use wirelane::{DisconnectReason, Event, Lane, PeerId};

/// More than a loopback socket takes in one non-blocking send, so the sender
/// leaves a rest for the writer.
const HUGE: usize = 8 << 20;

#[test]
fn a_close_right_after_a_begun_frame_finishes_it_first() {
    for round in 0..20 {
        let a = node_with(1, config());
        let b = node_with(2, config().max_frame_len(HUGE as u32 + 1024));
        connect(&a, &b);
        until_written_by_sender(&a, PeerId(2));
        a.send(PeerId(2), tagged(b'p', round, HUGE)).expect("send");
        // At once: before the writer, woken to write the rest, looks at the close.
        assert!(a.disconnect(PeerId(2)));

        let reason = match event(&b, "disconnected", |e| {
            matches!(e, Event::Disconnected { .. })
        }) {
            Event::Disconnected { reason, .. } => reason,
            _ => unreachable!(),
        };
        assert!(
            matches!(reason, DisconnectReason::ClosedByPeer),
            "round {round}: the peer read a broken stream: {reason:?}"
        );
        // Delivered once, or handed back: never both, never neither.
        let mut delivered = 0;
        while let Ok(m) = b.incoming().try_recv() {
            if m.lane == Lane::Private {
                assert_eq!(untag(&m.payload), (b'p', round));
                assert_eq!(m.payload.len(), HUGE);
                delivered += 1;
            }
        }
        let back = match event(&a, "disconnected", |e| {
            matches!(e, Event::Undelivered { .. } | Event::Disconnected { .. })
        }) {
            Event::Undelivered { messages, .. } => messages.len(),
            _ => 0,
        };
        assert_eq!(
            delivered + back,
            1,
            "round {round}: delivered {delivered}, handed back {back}"
        );
    }
}
