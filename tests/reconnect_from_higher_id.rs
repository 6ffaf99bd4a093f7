//! A node may reconnect at once after `disconnect`, whichever side arbitrates. Here
//! the dialler has the higher id, so the peer it dials decides between connections:
//! the new dial must be taken even if the peer has not yet noticed that the old
//! connection is closing. Regression test: about one time in four the peer still
//! held the old connection, refused the new one as a duplicate, and `connect` waited
//! the whole handshake timeout before failing with `Duplicate`.

mod util;

use std::time::Duration;

use util::{config, node_with, wait_until};
use wirelane::PeerId;

const ROUNDS: u32 = 20;

#[test]
fn connect_right_after_disconnect_from_the_higher_id_succeeds_every_time() {
    // A short handshake timeout only makes a failure quick; a pass never waits on it.
    let cfg = config().handshake_timeout(Duration::from_secs(2));
    let a = node_with(2, cfg.clone());
    let b = node_with(1, cfg);
    assert_eq!(a.connect(b.local_addr()).expect("first connect"), PeerId(1));
    for round in 0..ROUNDS {
        assert!(a.disconnect(PeerId(1)), "round {round}: nothing to close");
        match a.connect(b.local_addr()) {
            Ok(peer) => assert_eq!(peer, PeerId(1), "round {round}"),
            Err(e) => panic!("round {round}: connect right after disconnect failed: {e:?}"),
        }
        assert!(
            a.is_connected(PeerId(1)),
            "round {round}: A is not connected"
        );
        wait_until("B has A's new connection", || b.is_connected(PeerId(2)));
    }
}
