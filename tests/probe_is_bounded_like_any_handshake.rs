//! A probe is bounded like any handshake of its node's: its hello says it is a
//! probe (protocol version 5, flag bit 1); while a silent peer keeps it waiting it
//! takes one of the node's `max_handshakes` slots — a `connect` beyond them is
//! refused — but holds no lock, so the rest of the node works on; it gives up at
//! its own timeout, and at once when its node shuts down.

mod util;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use util::raw::{self, RawListener, RawPeer};
use util::{config, connect, finishes, node, node_with, recv, GUARD};
use wirelane::{Error, Fingerprint, HandshakeError, Limit, Node, PeerId};

const PROMPT: Duration = Duration::from_secs(20);

/// A probe running on a thread of its own.
type Probing = thread::JoinHandle<wirelane::Result<(PeerId, Option<Fingerprint>)>>;

/// Starts `node` probing a silent peer; returns the probe's thread once the peer
/// has read its hello (the handshake is under way, and counted), and the peer.
fn probe_a_silent_peer(node: &Arc<Node>, timeout: Duration) -> (Probing, RawPeer) {
    let silent = RawListener::bind();
    let probe = {
        let (node, addr) = (node.clone(), silent.addr());
        thread::spawn(move || node.probe(addr, timeout))
    };
    let mut peer = silent.accept();
    let (kind, hello) = peer.read_frame().expect("the probe's hello");
    assert_eq!(kind, raw::HELLO);
    assert_eq!(&hello[..4], b"WRLN");
    assert_eq!(u16::from_be_bytes([hello[4], hello[5]]), 5, "version 5");
    let flags = u16::from_be_bytes([hello[6], hello[7]]);
    assert_eq!(flags, 2, "the probe flag, and no other");
    (probe, peer)
}

#[test]
fn a_waiting_probe_holds_one_handshake_slot_and_no_lock() {
    let a = Arc::new(node_with(1, config().max_handshakes(1)));
    let c = node(3);
    let (probe, peer) = probe_a_silent_peer(&a, GUARD);

    let (a2, c_addr) = (a.clone(), c.local_addr());
    finishes("the node beside a waiting probe", PROMPT, move || {
        let refused = a2.connect(c_addr);
        assert!(
            matches!(refused, Err(Error::Limit(Limit::Handshakes))),
            "{refused:?}"
        );
        assert_eq!(a2.stats().peers, 0);
        assert_eq!(a2.peers(), vec![]);
    });

    drop(peer);
    let result = probe.join().expect("the probe thread");
    assert!(
        matches!(result, Err(Error::Handshake(HandshakeError::Closed))),
        "{result:?}"
    );
    // The slot is free again.
    connect(&a, &c);
    a.send(PeerId(3), &b"after the probe"[..]).expect("send");
    assert_eq!(&recv(c.incoming()).payload[..], b"after the probe");
}

#[test]
fn a_probe_gives_up_at_its_timeout() {
    let timeout = Duration::from_millis(300);
    let a = Arc::new(node(11));
    let started = Instant::now();
    let (probe, _peer) = probe_a_silent_peer(&a, timeout);
    let result = finishes("the probe", PROMPT, move || probe.join().unwrap());
    let took = started.elapsed();
    assert!(
        matches!(result, Err(Error::Handshake(HandshakeError::Timeout))),
        "{result:?}"
    );
    assert!(took >= timeout, "gave up after {took:?}");
    assert_eq!(a.stats().handshakes_failed, 1);
}

#[test]
fn a_probe_ends_when_its_node_shuts_down() {
    let a = Arc::new(node(21));
    let (probe, _peer) = probe_a_silent_peer(&a, GUARD);
    let a2 = a.clone();
    finishes("shutdown beside a waiting probe", PROMPT, move || {
        a2.shutdown()
    });
    let result = finishes("the probe", PROMPT, move || probe.join().unwrap());
    assert!(matches!(result, Err(Error::Shutdown)), "{result:?}");
    assert!(matches!(
        a.probe(a.local_addr(), GUARD),
        Err(Error::Shutdown)
    ));
}
