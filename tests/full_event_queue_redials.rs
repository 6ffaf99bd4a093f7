//! A node whose application does not read its events still dials lost peers again
//! (`Config::reconnect_interval`), after every loss, not just the first. Regression
//! test: once the event queue was full, the writer of a lost connection waited for
//! room to hand back its undelivered messages, the teardown waited for the writer,
//! and the redial was never asked for — the peer stayed disconnected for good.
//!
//! The peer is a hand-written one that never reads, so every connection ends with
//! private messages still queued, each loss producing an `Undelivered`.

mod util;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use util::raw::RawListener;
use util::{config, node_with, stuck_sender, unbufferable, wait_until, GUARD};
use wirelane::PeerId;

const PEER: PeerId = PeerId(2);
const CAPACITY: usize = 4;
const LOSSES: usize = 3;

#[test]
fn a_node_that_never_reads_its_events_reconnects_after_every_loss() {
    let node = Arc::new(node_with(
        1,
        config()
            .event_capacity(2)
            .private_capacity(CAPACITY)
            .reconnect_interval(Some(Duration::from_millis(50)))
            .reconnect_max(Duration::from_millis(200)),
    ));
    let listener = RawListener::bind();
    let mut dial = Some({
        let (node, addr) = (node.clone(), listener.addr());
        thread::spawn(move || node.connect(addr))
    });
    for loss in 0..=LOSSES {
        // Connection `loss` arrives: the first from `connect`, the others from
        // redials after each loss.
        let mut peer = listener.accept_within(GUARD).unwrap_or_else(|| {
            panic!("the node did not dial the peer again after loss {loss} of {LOSSES}")
        });
        peer.answer_handshake(PEER.0, 1, unbufferable() as u32);
        if let Some(dial) = dial.take() {
            assert_eq!(dial.join().unwrap().expect("connect"), PEER);
        }
        wait_until("the node is connected", || node.is_connected(PEER));
        if loss == LOSSES {
            break;
        }
        // Private messages stuck in the lane, then the peer goes away.
        let stuck = stuck_sender(&node, PEER, CAPACITY);
        drop(peer);
        let _ = stuck.thread.join().expect("the sender thread");
    }
}
