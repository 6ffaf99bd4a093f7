//! A plaintext node that dials a TLS node is refused: the TLS node says the peer
//! does not speak TLS, the plaintext node that the peer does (it reads the TLS
//! node's alert where a hello should be); each logs the refusal once, and the TLS
//! node goes on serving TLS peers.
#![cfg(feature = "tls")]

mod util;

use util::certs::Ca;
use util::logs;
use util::refusal::{refusal, still_serves};
use util::{config, node_with};
use wirelane::{HandshakeError, PeerId};

#[test]
fn a_plaintext_dialler_is_refused_by_a_tls_node_which_serves_on() {
    let logs = logs::capture();
    let ca = Ca::new("network ca");
    let node = node_with(1, config().tls(ca.tls(1)));
    let plain = node_with(3, config());

    let seen = refusal(&plain, &node);
    assert_eq!(seen.acceptor, HandshakeError::TlsMismatch { ours: true });
    assert_eq!(seen.dialler, HandshakeError::TlsMismatch { ours: false });
    logs.assert_one_refusal(PeerId(1));
    logs.assert_one_refusal(PeerId(3));

    still_serves(&node, &node_with(2, config().tls(ca.tls(2))));
}
