//! A TLS node that dials a plaintext node is refused: the TLS node says the peer
//! does not speak TLS (a plaintext hello where its server's should be), the
//! plaintext node that the peer does (a TLS record where a hello should be); each
//! logs the refusal once, and the plaintext node goes on serving plaintext peers.
#![cfg(feature = "tls")]

mod util;

use util::certs::Ca;
use util::logs;
use util::refusal::{refusal, still_serves};
use util::{config, node, node_with};
use wirelane::{HandshakeError, PeerId};

#[test]
fn a_tls_dialler_is_refused_by_a_plaintext_node_which_serves_on() {
    let logs = logs::capture();
    let ca = Ca::new("network ca");
    let plain = node(1);
    let tls = node_with(3, config().tls(ca.tls(3)));

    let seen = refusal(&tls, &plain);
    assert_eq!(seen.dialler, HandshakeError::TlsMismatch { ours: true });
    assert_eq!(seen.acceptor, HandshakeError::TlsMismatch { ours: false });
    logs.assert_one_refusal(PeerId(1));
    logs.assert_one_refusal(PeerId(3));

    still_serves(&plain, &node(2));
}
