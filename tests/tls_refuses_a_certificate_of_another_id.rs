//! A valid certificate presented under another id is refused: node 2's certificate
//! in the hands of a node that says it is node 3. The node that checks it reports
//! `WrongIdentity` (both ids), the impostor that its peer rejected it; each logs
//! the refusal once, and node 2 itself still connects afterwards.
#![cfg(feature = "tls")]

mod util;

use util::certs::Ca;
use util::logs;
use util::refusal::{refusal, still_serves};
use util::{config, node_with};
use wirelane::{HandshakeError, PeerId, TlsError};

#[test]
fn a_certificate_presented_under_another_id_is_refused_and_its_owner_still_connects() {
    let logs = logs::capture();
    let ca = Ca::new("network ca");
    let node = node_with(1, config().tls(ca.tls(1)));
    let impostor = node_with(3, config().tls(ca.tls(2)));

    let seen = refusal(&impostor, &node);
    assert_eq!(
        seen.acceptor,
        HandshakeError::Tls(TlsError::WrongIdentity {
            claimed: PeerId(3),
            certified: PeerId(2),
        })
    );
    assert_eq!(seen.dialler, HandshakeError::PeerRejectedAuth);
    logs.assert_one_refusal(PeerId(1));
    logs.assert_one_refusal(PeerId(3));

    still_serves(&node, &node_with(2, config().tls(ca.tls(2))));
}
