//! `probe` returns the peer's id, and over TLS the fingerprint of its certificate,
//! and registers nothing on either side: no event, no peer, no connection counted,
//! no refusal. A real connection made afterwards is the only one either node ever
//! reports, and over TLS it carries the fingerprint the probe returned.

mod util;

use util::wire::Wire;
use util::{config, connect, events_after_shutdown, recv, GUARD};
use wirelane::{Event, Fingerprint, Node};

/// `prober` probes `probed`, then connects to it for real; returns what the probe
/// returned, after checking that the real connection is the only one either node
/// reports.
fn probe_then_connect(prober: &Node, probed: &Node) -> Option<Fingerprint> {
    let (peer, fingerprint) = prober
        .probe(probed.local_addr(), GUARD)
        .expect("the probe is answered");
    assert_eq!(peer, probed.id());
    assert_eq!(prober.peers(), vec![]);
    assert_eq!(probed.peers(), vec![]);

    connect(prober, probed);
    prober.send(probed.id(), &b"hello"[..]).expect("send");
    assert_eq!(&recv(probed.incoming()).payload[..], b"hello");
    for node in [prober, probed] {
        let stats = node.stats();
        assert_eq!(
            (stats.connections_opened, stats.handshakes_failed),
            (1, 0),
            "{}: the probe is neither a connection nor a refusal",
            node.id()
        );
    }

    for (node, other) in [(prober, probed), (probed, prober)] {
        let events = events_after_shutdown(node);
        let [Event::Connected {
            peer,
            conn,
            fingerprint: seen,
            ..
        }, Event::Disconnected { conn: ended, .. }] = &events[..]
        else {
            panic!("{}: {events:#?}", node.id());
        };
        assert_eq!((*peer, conn), (other.id(), ended), "{events:#?}");
        if node.id() == prober.id() {
            assert_eq!(*seen, fingerprint, "the certificate the probe saw");
        }
    }
    fingerprint
}

#[test]
fn a_probe_names_the_peer_and_registers_nothing() {
    let wire = Wire::Plain;
    let (a, b) = (wire.node(1, config()), wire.node(2, config()));
    assert_eq!(
        probe_then_connect(&a, &b),
        None,
        "no certificate, no fingerprint"
    );
    // The other way round: the probe's side does not arbitrate.
    let (c, d) = (wire.node(3, config()), wire.node(4, config()));
    assert_eq!(probe_then_connect(&d, &c), None);
}

#[cfg(feature = "tls")]
#[test]
fn a_probe_over_tls_names_the_peer_and_its_certificate_and_registers_nothing() {
    let logs = util::logs::capture();
    let wire = Wire::tls();
    let (a, b) = (wire.node(11, config()), wire.node(12, config()));
    assert!(probe_then_connect(&a, &b).is_some());
    let (c, d) = (wire.node(13, config()), wire.node(14, config()));
    assert!(probe_then_connect(&d, &c).is_some());
    for id in [11, 12, 13, 14] {
        let loud: Vec<_> = logs
            .of(wirelane::PeerId(id))
            .into_iter()
            .filter(|line| line.level <= log::Level::Warn)
            .collect();
        assert!(loud.is_empty(), "{loud:#?}");
    }
}
