//! A certificate signed by a CA the node does not trust is refused, whichever end
//! presents it: the side that checked it says `UnknownIssuer`, the other hears the
//! alert; each logs the refusal once, and the node goes on serving good peers.
#![cfg(feature = "tls")]

mod util;

use util::certs::Ca;
use util::logs;
use util::refusal::{refusal, still_serves};
use util::{config, node_with};
use wirelane::{HandshakeError, PeerId, TlsError};

#[test]
fn a_dialler_with_a_foreign_certificate_is_refused_and_the_node_serves_on() {
    let logs = logs::capture();
    let ca = Ca::new("network ca");
    let foreign = Ca::new("foreign ca");
    let node = node_with(1, config().tls(ca.tls(1)));
    // It trusts the network's CA, so that the refusal is the node's to make.
    let stranger = node_with(3, config().tls(foreign.tls_trusting(3, false, &ca)));

    let seen = refusal(&stranger, &node);
    assert_eq!(seen.acceptor, HandshakeError::Tls(TlsError::UnknownIssuer));
    assert_eq!(
        seen.dialler,
        HandshakeError::Tls(TlsError::Alert("UnknownCA".into()))
    );
    logs.assert_one_refusal(PeerId(1));
    logs.assert_one_refusal(PeerId(3));

    still_serves(&node, &node_with(2, config().tls(ca.tls(2))));
}

#[test]
fn an_acceptor_with_a_foreign_certificate_is_refused_and_the_dialler_serves_on() {
    let logs = logs::capture();
    let ca = Ca::new("network ca");
    let foreign = Ca::new("foreign ca");
    let node = node_with(11, config().tls(ca.tls(11)));
    let stranger = node_with(13, config().tls(foreign.tls_trusting(13, false, &ca)));

    let seen = refusal(&node, &stranger);
    assert_eq!(seen.dialler, HandshakeError::Tls(TlsError::UnknownIssuer));
    assert_eq!(
        seen.acceptor,
        HandshakeError::Tls(TlsError::Alert("UnknownCA".into()))
    );
    logs.assert_one_refusal(PeerId(11));
    logs.assert_one_refusal(PeerId(13));

    let good = node_with(12, config().tls(ca.tls(12)));
    still_serves(&good, &node);
}
