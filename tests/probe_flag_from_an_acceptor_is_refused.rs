//! Only a dialler probes: a node that dials a peer whose hello says it is probing
//! refuses the connection as a protocol violation, registers nothing, and dials
//! good peers as before.

mod util;

use std::sync::Arc;
use std::thread;

use util::raw::{self, RawListener};
use util::{config, connect, node, node_with};
use wirelane::{Error, HandshakeError, Violation};

#[test]
fn a_dialler_refuses_an_acceptor_that_says_it_probes() {
    let a = Arc::new(node_with(1, config()));
    let listener = RawListener::bind();
    let dial = {
        let (a, addr) = (a.clone(), listener.addr());
        thread::spawn(move || a.connect(addr))
    };
    let mut peer = listener.accept();
    let (kind, _) = peer.read_frame().expect("the node's hello");
    assert_eq!(kind, raw::HELLO);
    // Peer 2's hello, with the probe flag (bit 1).
    peer.send(&raw::hello_full(
        b"WRLN",
        raw::VERSION,
        2,
        2,
        0x5EED,
        1 << 20,
        [7; 32],
    ));
    let result = dial.join().expect("the connect thread");
    assert!(
        matches!(
            &result,
            Err(Error::Handshake(HandshakeError::Protocol(e))) if e.violation() == Violation::Unexpected
        ),
        "{result:?}"
    );
    assert_eq!(a.peers(), vec![]);
    assert!(
        a.events().try_recv().is_err(),
        "no event for a refused dial"
    );

    let b = node(3);
    connect(&a, &b);
}
