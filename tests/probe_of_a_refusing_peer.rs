//! A probe the peer refuses fails with the same typed error a `connect` would,
//! and the peer reports the refusal as it would any other (one `Event::Refused`,
//! one log line over TLS). That includes a refusal the peer decides only after
//! its own checks of the prober (another id's certificate, a proof it rejects):
//! the probe waits for the peer's last word. The peer goes on answering good
//! probes.

mod util;

use util::{config, node_with, recv, GUARD};
use wirelane::{Error, Event, HandshakeError, Node, SharedSecret};

/// `prober` probes `probed`, which must refuse: returns the prober's typed error
/// and the one in the probed node's `Event::Refused`.
#[track_caller]
fn refused_probe(prober: &Node, probed: &Node) -> (HandshakeError, HandshakeError) {
    let error = match prober.probe(probed.local_addr(), GUARD) {
        Err(Error::Handshake(error)) => error,
        other => panic!("the probe was not refused: {other:?}"),
    };
    let theirs = match recv(probed.events()) {
        Event::Refused { error, .. } => error,
        other => panic!("{}: not a refusal: {other:?}", probed.id()),
    };
    assert_eq!(prober.peers(), vec![]);
    assert_eq!(probed.peers(), vec![]);
    (error, theirs)
}

fn secret(s: &str) -> SharedSecret {
    SharedSecret::new(format!("{s}-padding-to-sixteen-bytes")).unwrap()
}

#[test]
fn a_probe_without_the_secret_is_refused_with_the_typed_error() {
    let probed = node_with(1, config().authenticator(secret("ours")));
    let stranger = node_with(3, config().authenticator(secret("theirs")));
    assert_eq!(
        refused_probe(&stranger, &probed),
        (HandshakeError::AuthFailed, HandshakeError::AuthFailed)
    );
    let plain = node_with(4, config());
    assert_eq!(
        refused_probe(&plain, &probed),
        (
            HandshakeError::AuthMismatch {
                ours: false,
                theirs: true
            },
            HandshakeError::AuthMismatch {
                ours: true,
                theirs: false
            }
        )
    );

    let good = node_with(2, config().authenticator(secret("ours")));
    let (peer, _) = good.probe(probed.local_addr(), GUARD).expect("answered");
    assert_eq!(peer, probed.id());
}

#[cfg(feature = "tls")]
#[test]
fn a_tls_probe_the_peer_refuses_fails_with_the_typed_error() {
    use util::certs::Ca;
    use wirelane::{PeerId, TlsError};

    let logs = util::logs::capture();
    let ca = Ca::new("network ca");
    let probed = node_with(11, config().tls(ca.tls(11)));

    // The peer refuses the certificate at once: the alert is the prober's answer.
    let foreign = node_with(
        13,
        config().tls(Ca::new("foreign").tls_trusting(13, false, &ca)),
    );
    assert_eq!(
        refused_probe(&foreign, &probed),
        (
            HandshakeError::Tls(TlsError::Alert("UnknownCA".into())),
            HandshakeError::Tls(TlsError::UnknownIssuer)
        )
    );
    // Every check on the prober's side passes; the peer's, after the hellos, does
    // not, and its refusal is the probe's last word.
    let impostor = node_with(14, config().tls(ca.tls(12)));
    assert_eq!(
        refused_probe(&impostor, &probed),
        (
            HandshakeError::PeerRejectedAuth,
            HandshakeError::Tls(TlsError::WrongIdentity {
                claimed: PeerId(14),
                certified: PeerId(12),
            })
        )
    );
    let plain = node_with(15, config());
    assert_eq!(
        refused_probe(&plain, &probed),
        (
            HandshakeError::TlsMismatch { ours: false },
            HandshakeError::TlsMismatch { ours: true }
        )
    );
    for prober in [13, 14, 15] {
        logs.assert_one_refusal(PeerId(prober));
    }
    assert_eq!(logs.refusals(PeerId(11)).len(), 3, "one line per refusal");

    let good = node_with(12, config().tls(ca.tls(12)));
    let (peer, fingerprint) = good.probe(probed.local_addr(), GUARD).expect("answered");
    assert_eq!(peer, probed.id());
    assert!(fingerprint.is_some());
}
