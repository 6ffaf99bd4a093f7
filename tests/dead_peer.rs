//! A peer whose socket stays open but who never sends a byte after the handshake is
//! declared dead within the configured silence, while a healthy but quiet peer on the
//! same node stays connected: its pings keep it alive.

mod util;

use std::time::{Duration, Instant};

use util::raw::{self, RawPeer};
use util::{config, connect, event, node_with};
use wirelane::{DisconnectReason, Event, PeerId};

#[test]
fn a_silent_peer_is_declared_dead_and_a_quiet_one_is_not() {
    let silence = Duration::from_secs(1);
    let cfg = config()
        .ping_interval(Duration::from_millis(100))
        .silence_timeout(silence);
    let a = node_with(1, cfg.clone());
    // A quiet but healthy peer: it sends nothing but its writer's pings.
    let quiet = node_with(2, cfg);
    connect(&quiet, &a);

    // The silent peer completes the handshake by hand, then never writes again; it
    // keeps its socket open and does read, so nothing else looks wrong.
    // Timed from before the handshake, so that the node's silence clock, which starts
    // when its side of the handshake ends, cannot have started earlier.
    let registered = Instant::now();
    let mut silent = RawPeer::handshake(a.local_addr(), 9, 1);
    silent.set_read_timeout(util::GUARD);

    let e = event(&a, "the silent peer's disconnection", |e| {
        matches!(
            e,
            Event::Disconnected {
                peer: PeerId(9),
                ..
            }
        )
    });
    let took = registered.elapsed();
    assert!(
        matches!(
            e,
            Event::Disconnected {
                reason: DisconnectReason::Dead,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        took >= silence,
        "declared dead after {took:?}, before the silence ran out"
    );
    // The silence plus a read tick, with plenty of room for a busy machine.
    assert!(took < silence * 10, "declared dead only after {took:?}");
    // The node sent pings meanwhile, and cut the connection at the end.
    let kinds = silent.expect_closed();
    assert!(kinds.contains(&raw::PING), "{kinds:?}");

    // The quiet peer, connected longer than the silent one, is still there.
    assert!(a.is_connected(PeerId(2)));
    assert!(quiet.is_connected(PeerId(1)));
    assert!(
        a.peer_stats(PeerId(2)).unwrap().bytes_in > 0,
        "pings arrived"
    );
}
