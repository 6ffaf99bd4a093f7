//! With `Config::reconnect_interval` set, a node dials a lost peer again: the
//! connection comes back by itself and messages flow; while the peer stays away the
//! node keeps trying; `disconnect` stops it; shutdown does not wait for a dial.

mod util;

use std::time::Duration;

use util::relay::Relay;
use util::{config, event, finishes, node, node_with, recv, tagged, untag, wait_until, GUARD};
use wirelane::{Config, DisconnectReason, Event, Lane, PeerId};

fn redialling() -> Config {
    config()
        .reconnect_interval(Some(Duration::from_millis(20)))
        .reconnect_max(Duration::from_millis(200))
        .handshake_timeout(Duration::from_secs(2))
}

/// Waits for `node`'s next `Connected` event and returns its connection id.
fn connected(node: &wirelane::Node) -> wirelane::ConnId {
    match event(node, "a connection", |e| {
        matches!(e, Event::Connected { .. })
    }) {
        Event::Connected { peer, conn, .. } => {
            assert_eq!(peer, PeerId(2));
            conn
        }
        _ => unreachable!(),
    }
}

#[test]
fn a_lost_connection_comes_back_by_itself() {
    let b = node(2);
    let relay = Relay::start(b.local_addr());
    let a = node_with(1, redialling());
    assert_eq!(a.connect(relay.addr).unwrap(), PeerId(2));
    let first = connected(&a);

    // The path breaks: both sockets end with no close frame.
    relay.cut();
    let ended = event(&a, "the loss", |e| matches!(e, Event::Disconnected { .. }));
    assert!(
        matches!(
            ended,
            Event::Disconnected {
                conn,
                reason: DisconnectReason::ClosedByPeer | DisconnectReason::Io(_),
                ..
            } if conn == first
        ),
        "{ended:?}"
    );

    // A dials the same address again, and the connection is back on both sides.
    let second = connected(&a);
    assert_ne!(second, first);
    assert_eq!(relay.accepted(), 2);
    wait_until("b has the new connection", || b.is_connected(PeerId(1)));
    wait_until("nothing left to redial", || a.stats().redials_pending == 0);
    for seq in 0..10 {
        a.send(PeerId(2), tagged(1, seq, 32)).unwrap();
    }
    for seq in 0..10 {
        let m = recv(b.incoming());
        assert_eq!(
            (m.from, m.lane, untag(&m.payload)),
            (PeerId(1), Lane::Private, (1, seq))
        );
    }
    // B did not dial: the connection it lost was A's.
    assert_eq!(b.stats().redials_pending, 0);
}

/// A (configured with `config`) connected to B through a relay, which then cuts the
/// connection and refuses new ones: each redial's socket connects and is closed at
/// once. Returns once A has tried `dials` times, with the first connection's id.
fn unreachable_peer(
    config: Config,
    dials: usize,
) -> (wirelane::Node, wirelane::Node, Relay, wirelane::ConnId) {
    let b = node(2);
    let relay = Relay::start(b.local_addr());
    let a = node_with(1, config);
    a.connect(relay.addr).unwrap();
    let first = connected(&a);
    relay.refuse(true);
    relay.cut();
    event(&a, "the loss", |e| matches!(e, Event::Disconnected { .. }));
    wait_until("A dials again and again", || relay.accepted() > dials);
    (a, b, relay, first)
}

#[test]
fn a_peer_that_stays_away_is_tried_again_until_disconnect() {
    let (a, _b, _relay, _) = unreachable_peer(redialling(), 3);
    assert_eq!(a.stats().redials_pending, 1);
    assert!(!a.is_connected(PeerId(2)));

    // The application gives up on it: no more dials are pending.
    assert!(!a.disconnect(PeerId(2)), "there was no connection to close");
    wait_until("the redial is cancelled", || a.stats().redials_pending == 0);
}

#[test]
fn the_peer_coming_back_ends_the_retries() {
    let (a, b, relay, first) = unreachable_peer(redialling(), 2);

    // Back again: the next dial gets through.
    relay.refuse(false);
    let back = connected(&a);
    assert_ne!(back, first);
    wait_until("nothing left to redial", || a.stats().redials_pending == 0);
    a.send(PeerId(2), b"again".to_vec()).unwrap();
    assert_eq!(&recv(b.incoming()).payload[..], b"again");
}

#[test]
fn shutdown_ends_the_redials() {
    // Dials are non-blocking connects in the redial thread's poll, which shutdown
    // wakes: however long a connect may take, shutdown does not wait for it.
    let config = redialling().connect_timeout(Duration::from_secs(600));
    let (a, _b, _relay, _) = unreachable_peer(config, 2);
    finishes("the shutdown", GUARD, move || a.shutdown());
}
