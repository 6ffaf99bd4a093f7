//! Guarantee 7: shutdown joins every thread the node started. After busy nodes —
//! connections, traffic, a blocked sender, a half-open handshake — shut down, the
//! process has exactly as many threads as before they started.
//!
//! One test in this file, so that no other test's threads come and go meanwhile.

mod util;

use std::sync::Arc;
use std::time::Duration;

use util::raw::RawPeer;
use util::{
    config, connect, finishes, node_with, recv, silent_receiver, stuck_sender, thread_count,
};
use wirelane::{Error, PeerId, SendError};

#[test]
fn shutdown_joins_every_thread_it_started() {
    let baseline = thread_count();
    {
        let a = Arc::new(node_with(1, config().private_capacity(2)));
        let b = node_with(2, silent_receiver());
        // C dials A again when A goes: its redial thread must be joined too.
        let c = node_with(
            3,
            config().reconnect_interval(Some(Duration::from_millis(20))),
        );
        connect(&a, &b);
        connect(&c, &a);
        for i in 0..100u32 {
            c.send(PeerId(1), i.to_be_bytes().to_vec()).unwrap();
        }
        for _ in 0..100 {
            recv(a.incoming());
        }
        // A sender blocked for good on B's full lane, and a client stuck mid-handshake.
        let stuck = stuck_sender(&a, PeerId(2), 2);
        let mut half = RawPeer::connect(a.local_addr());
        half.send(&util::raw::hello(50)[..7]);
        assert!(thread_count() > baseline + 8);

        let a2 = a.clone();
        finishes(
            "shutdown of a busy node",
            Duration::from_secs(30),
            move || a2.shutdown(),
        );
        let (_, err) = finishes(
            "blocked sender released",
            Duration::from_secs(30),
            move || stuck.thread.join().unwrap(),
        );
        assert!(matches!(err, SendError::Shutdown(_)));
        half.expect_closed();
        // Idempotent, and later calls are refused cleanly.
        a.shutdown();
        assert!(matches!(a.connect(c.local_addr()), Err(Error::Shutdown)));
        // B and C shut down when dropped.
    }
    // A joined thread can linger in /proc for a moment after `join` returns; a
    // thread that was never joined would keep the count up until the guard fails.
    util::wait_until("the thread count is back to its baseline", || {
        thread_count() == baseline
    });
}
