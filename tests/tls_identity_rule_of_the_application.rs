//! The application's own identity rule (`TlsConfig::identify`) replaces the one
//! that reads the id from the certificate's URI: here a node knows its peers'
//! certificates by their bytes. A certificate the rule maps to the id its holder
//! claims is accepted, whatever its URI says, and the node reports that
//! certificate's fingerprint; a certificate from the trusted CA that the rule does
//! not know is refused with a typed error, and the node goes on serving.
#![cfg(feature = "tls")]

mod util;

use std::sync::Arc;

use util::certs::Ca;
use util::refusal::{refusal, still_serves};
use util::{config, node_with, recv};
use wirelane::tls::TlsConfig;
use wirelane::{Event, HandshakeError, PeerId, TlsError};

#[test]
fn the_applications_rule_names_the_peer_and_refuses_a_certificate_it_does_not_know() {
    let ca = Ca::new("network ca");
    // Node 2's certificate says it is node 7; node 1 knows it as node 2's, and
    // knows node 4's as node 4's.
    let (cert_2, key_2) = ca.node(7, false);
    let (cert_4, key_4) = ca.node(4, false);
    let known: Arc<Vec<(Vec<u8>, PeerId)>> = Arc::new(vec![
        (cert_2.to_vec(), PeerId(2)),
        (cert_4.to_vec(), PeerId(4)),
    ]);
    let rule = {
        let known = known.clone();
        move |der: &[u8]| {
            known
                .iter()
                .find(|(cert, _)| cert.as_slice() == der)
                .map(|(_, id)| *id)
        }
    };
    let node = node_with(1, config().tls(ca.tls(1).identify(rule)));

    let tls = |cert, key| TlsConfig::new(vec![cert], key, vec![ca.der.clone()]).expect("tls");
    let two = node_with(2, config().tls(tls(cert_2.clone(), key_2)));
    assert_eq!(two.connect(node.local_addr()).expect("known"), PeerId(1));
    match recv(node.events()) {
        Event::Connected {
            peer, fingerprint, ..
        } => {
            assert_eq!(peer, PeerId(2));
            let fingerprint = fingerprint.expect("a fingerprint over TLS");
            let other = match recv(two.events()) {
                Event::Connected { fingerprint, .. } => fingerprint,
                other => panic!("{other:?}"),
            };
            assert_ne!(Some(fingerprint), other, "each side reports the other's");
        }
        other => panic!("{other:?}"),
    }
    two.send(PeerId(1), &b"known by my certificate"[..])
        .unwrap();
    let m = recv(node.incoming());
    assert_eq!(
        (m.from, &m.payload[..]),
        (PeerId(2), &b"known by my certificate"[..])
    );

    drop(two);
    match recv(node.events()) {
        Event::Disconnected { peer, .. } => assert_eq!(peer, PeerId(2)),
        other => panic!("{other:?}"),
    }

    // Valid, from the trusted CA, and naming its holder's id in its URI: but not
    // one the rule knows.
    let stranger = node_with(3, config().tls(ca.tls(3)));
    let seen = refusal(&stranger, &node);
    assert_eq!(seen.acceptor, HandshakeError::Tls(TlsError::NoIdentity));
    assert_eq!(seen.dialler, HandshakeError::PeerRejectedAuth);

    // The rule decides the id: node 4's own certificate under id 4 still connects.
    still_serves(&node, &node_with(4, config().tls(tls(cert_4, key_4))));
}
