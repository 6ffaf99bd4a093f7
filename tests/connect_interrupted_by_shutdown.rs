//! `connect` ends with `Error::Shutdown` when its own node shuts down while the
//! handshake is still under way — whether it is waiting for the peer's hello or, after
//! a `Duplicate` verdict, for the surviving connection to be registered. Regression
//! test: the first came back as a handshake error (the peer "closed" the connection),
//! and the second was not woken at all and waited out the handshake timeout.

mod util;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use util::raw::{self, RawListener};
use util::{config, finishes, node_with, GUARD};
use wirelane::{Error, Node, PeerId};

/// Long enough that a `connect` which ends only at its handshake deadline fails the
/// test by its result, not by the guard; a pass never waits for it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts `node.connect(addr)` on its own thread.
fn connecting(
    node: &Arc<Node>,
    addr: std::net::SocketAddr,
) -> thread::JoinHandle<wirelane::Result<PeerId>> {
    let node = node.clone();
    thread::spawn(move || node.connect(addr))
}

/// Shuts `node` down and returns what the `connect` under way returned.
fn shut_down_and_join(
    node: Arc<Node>,
    dial: thread::JoinHandle<wirelane::Result<PeerId>>,
) -> wirelane::Result<PeerId> {
    finishes("the shutdown", GUARD, move || node.shutdown());
    finishes("the interrupted connect", GUARD, move || {
        dial.join().expect("the connect thread")
    })
}

#[test]
fn a_connect_waiting_for_the_peers_hello_ends_with_shutdown() {
    let node = Arc::new(node_with(2, config().handshake_timeout(HANDSHAKE_TIMEOUT)));
    let peer = RawListener::bind();
    let dial = connecting(&node, peer.addr());
    // The peer takes the node's hello and never answers.
    let mut socket = peer.accept();
    let (kind, _) = socket.read_frame().expect("the node's hello");
    assert_eq!(kind, raw::HELLO);

    let result = shut_down_and_join(node, dial);
    assert!(matches!(result, Err(Error::Shutdown)), "{result:?}");
}

#[test]
fn a_connect_waiting_after_a_duplicate_verdict_ends_with_shutdown() {
    let node = Arc::new(node_with(2, config().handshake_timeout(HANDSHAKE_TIMEOUT)));
    // The peer (the lower id, so it arbitrates) says it already has a connection to
    // the node. None ever appears: `connect` waits for it.
    let peer = RawListener::bind();
    let dial = connecting(&node, peer.addr());
    let mut socket = peer.accept();
    socket.answer_hello(1, 1 << 20);
    socket.send(&raw::close(2));
    // The node closes the refused socket once it has read the verdict.
    socket.expect_closed();
    assert!(!node.is_connected(PeerId(1)));

    let result = shut_down_and_join(node, dial);
    assert!(matches!(result, Err(Error::Shutdown)), "{result:?}");
}
