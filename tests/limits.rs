//! Limits, each with a clear refusal: connections per node, handshakes in flight (a
//! slow-handshake flood must not keep real peers out), and bytes per lane.

mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use util::raw::{self, RawPeer};
use util::{
    config, connect, event, finishes, node, node_with, recv, silent_receiver, tagged, unbufferable,
};
use wirelane::{Error, Event, HandshakeError, Limit, PeerId, TrySendError};

fn limit_refusals(node: &wirelane::Node) -> usize {
    let mut n = 0;
    while let Ok(e) = node.events().try_recv() {
        if matches!(
            e,
            Event::Refused {
                error: HandshakeError::Limit(_),
                ..
            }
        ) {
            n += 1;
        }
    }
    n
}

#[test]
fn a_slow_handshake_flood_does_not_keep_a_real_peer_out() {
    // Slow clients would hold their slots for the whole handshake timeout.
    let a = node_with(
        1,
        config()
            .max_handshakes(8)
            .handshake_timeout(Duration::from_secs(30)),
    );
    let mut flood = Vec::new();
    for i in 0..40 {
        let mut slow = RawPeer::connect(a.local_addr());
        slow.send(&raw::hello(100 + i)[..9]);
        flood.push(slow);
    }
    // A real peer still gets in, long before any slow handshake would time out.
    let b = node(2);
    let started = Instant::now();
    let peer = finishes(
        "a real peer connects during the flood",
        Duration::from_secs(20),
        {
            let (b, addr) = (Arc::new(b), a.local_addr());
            let b2 = b.clone();
            move || (b2.connect(addr).expect("connect past the flood"), b)
        },
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let (to_a, b) = peer;
    assert_eq!(to_a, PeerId(1));
    b.send(to_a, b"through".to_vec()).unwrap();
    assert_eq!(&recv(a.incoming()).payload[..], b"through");
    // The oldest slow handshakes were dropped to make room, each with a typed refusal.
    util::wait_until("the flood is refused", || a.stats().handshakes_failed >= 32);
    assert!(limit_refusals(&a) >= 1);
    for slow in &mut flood[..32] {
        slow.expect_closed();
    }
}

#[test]
fn connections_beyond_the_limit_are_refused_until_one_goes() {
    let hub = node_with(1, config().max_connections(2));
    let b = node(2);
    let c = node(3);
    connect(&b, &hub);
    connect(&c, &hub);

    // Inbound: closed at once, the dialler sees the connection end.
    let d = node(4);
    match d.connect(hub.local_addr()) {
        Err(Error::Handshake(HandshakeError::Closed | HandshakeError::Io(_))) => {}
        other => panic!("expected the hub to refuse, got {other:?}"),
    }
    let refused = event(&hub, "refused", |e| matches!(e, Event::Refused { .. }));
    assert!(matches!(
        refused,
        Event::Refused {
            error: HandshakeError::Limit(_),
            ..
        }
    ));
    // Outbound: refused before dialling.
    let e = node(5);
    assert!(matches!(
        hub.connect(e.local_addr()),
        Err(Error::Limit(Limit::Connections))
    ));

    // Room again once a connection goes.
    assert!(hub.disconnect(PeerId(2)));
    util::wait_until("the hub has room", || hub.peers().len() == 1);
    event(&hub, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    });
    util::wait_until("the old connection is retired", || {
        d.connect(hub.local_addr()).is_ok()
    });
    assert!(hub.is_connected(PeerId(4)));
}

#[test]
fn lanes_are_bounded_in_bytes_as_well_as_in_messages() {
    const MESSAGE: usize = 100 * 1024;
    let a = Arc::new(node_with(
        1,
        config()
            .private_lane_bytes(1 << 20)
            .gossip_lane_bytes(256 * 1024)
            .private_capacity(1000)
            .gossip_capacity(1000),
    ));
    // Stop A's writer for good: a hand-written peer that grants all the room it
    // could want and reads nothing, so the third message cannot fit in the socket
    // buffers.
    let _b = RawPeer::handshake_with_limit(a.local_addr(), 2, 1, unbufferable() as u32 + 1);
    let to_b = PeerId(2);
    for seq in 0..2 {
        a.send(to_b, tagged(1, seq, 16)).unwrap();
    }
    a.send(to_b, tagged(1, 2, unbufferable())).unwrap();
    // The writer has taken all three out of the lane (it may hold them in one batch
    // or have written the first ones already) and is stuck inside the huge write.
    util::wait_until("the writer holds the huge message", || {
        a.peer_stats(to_b)
            .is_some_and(|s| s.private.queued_bytes == 0 && s.private.sent + s.private.queued == 3)
    });

    // Private: about 1 MiB fits, then sends wait (and time out).
    let mut accepted = 0;
    loop {
        match a.send_timeout(to_b, vec![7u8; MESSAGE], Duration::from_millis(100)) {
            Ok(()) => accepted += 1,
            Err(e) if e.is_timeout() => break,
            Err(e) => panic!("{e}"),
        }
        assert!(accepted <= 11, "the byte limit did not hold");
    }
    assert_eq!(accepted, (1 << 20) / MESSAGE);
    let s = a.peer_stats(to_b).unwrap();
    assert_eq!(s.private.queued_bytes, (accepted * MESSAGE) as u64);

    // Gossip: about 256 KiB fits, then messages are dropped and counted.
    let (mut queued, mut dropped) = (0, 0);
    for _ in 0..10 {
        match a.try_send(to_b, vec![9u8; MESSAGE]) {
            Ok(()) => queued += 1,
            Err(TrySendError::Full(_)) => dropped += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((queued, dropped), (2, 8));
    assert_eq!(a.peer_stats(to_b).unwrap().gossip.dropped, 8);
}

#[test]
fn a_peer_that_stops_draining_is_reported_and_optionally_disconnected() {
    for disconnect in [false, true] {
        let a = Arc::new(node_with(
            1,
            config()
                .private_capacity(4)
                .slow_peer_after(Duration::from_millis(300))
                .disconnect_slow_peers(disconnect),
        ));
        let b = node_with(2, silent_receiver());
        let to_b = connect(&a, &b);
        let stuck = util::stuck_sender(&a, to_b, 4);
        let reported = Instant::now();
        let e = event(&a, "slow peer", |e| matches!(e, Event::SlowPeer { .. }));
        let Event::SlowPeer { peer, full_for, .. } = e else {
            unreachable!()
        };
        assert_eq!(peer, to_b);
        assert!(full_for >= Duration::from_millis(300));
        if disconnect {
            // The connection closes; its queue comes back; the sender gets out.
            let Event::Undelivered { messages, .. } = event(&a, "undelivered", |e| {
                matches!(e, Event::Undelivered { .. })
            }) else {
                unreachable!()
            };
            // The huge message and the four queued — and the blocked sender's message
            // 7 if, woken as the writer drained the lane after the close, it took a
            // freed slot before it saw the close (`fault_sigkill.rs` explains).
            let returned: Vec<u32> = messages.iter().map(|m| util::untag(m).1).collect();
            assert!(
                returned == [2, 3, 4, 5, 6] || returned == [2, 3, 4, 5, 6, 7],
                "{returned:?}"
            );
            let ended = event(&a, "disconnected", |e| {
                matches!(e, Event::Disconnected { .. })
            });
            assert!(matches!(
                ended,
                Event::Disconnected {
                    reason: wirelane::DisconnectReason::SlowPeer,
                    ..
                }
            ));
            let (refused, err) = finishes(
                "the blocked sender returns",
                Duration::from_secs(20),
                move || stuck.thread.join().unwrap(),
            );
            match (refused, &err) {
                (7, wirelane::SendError::Disconnected(_)) if returned.len() == 5 => {}
                (8, wirelane::SendError::NotConnected(_)) if returned.len() == 6 => {}
                _ => panic!("message {refused} refused with {err:?} after {returned:?}"),
            }
        } else {
            // Reported only: still connected, the sender still waits.
            assert!(a.is_connected(to_b));
            assert!(!stuck.thread.is_finished());
            assert!(reported.elapsed() < Duration::from_secs(20));
            a.disconnect(to_b);
            finishes(
                "the blocked sender returns",
                Duration::from_secs(20),
                move || stuck.thread.join().unwrap(),
            );
        }
    }
}
