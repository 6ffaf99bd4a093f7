//! What crosses the network between two TLS nodes hides every payload: a relay that
//! records every byte both ways never sees a marker that the nodes send in private
//! messages, gossip, a request and its reply. Between plaintext nodes the same relay
//! does see it, each way — which is what makes the TLS run a test.

mod util;

use std::time::Duration;

use util::relay::{Direction, Relay};
use util::wire::Wire;
use util::{config, recv};
use wirelane::{Lane, PeerId};

const MARKER: &[u8] = b"<<wirelane payload marker 7f3a9c>>";

fn payload(what: &str) -> Vec<u8> {
    [what.as_bytes(), MARKER].concat()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends the marker every way two nodes can through a recording relay; returns
/// whether it was seen going to the acceptor, and coming back.
fn marker_seen_on_the_path(wire: Wire) -> (bool, bool) {
    let a = wire.node(1, config());
    let b = wire.node(2, config());
    let relay = Relay::recording(b.local_addr());
    assert_eq!(a.connect(relay.addr).expect("connect"), PeerId(2));

    a.send(PeerId(2), payload("private")).expect("private");
    a.try_send(PeerId(2), payload("gossip")).expect("gossip");
    std::thread::scope(|s| {
        s.spawn(|| {
            // The lanes keep no order between them.
            let mut lanes = Vec::new();
            for _ in 0..3 {
                let m = recv(b.incoming());
                let what = match m.lane {
                    Lane::Private => "private",
                    Lane::Gossip => "gossip",
                    Lane::Request => "request",
                    other => panic!("{other}"),
                };
                assert_eq!(&m.payload[..], &payload(what)[..]);
                if m.lane == Lane::Request {
                    b.respond(&m, payload("reply")).expect("respond");
                }
                lanes.push(m.lane);
            }
            lanes.sort();
            assert_eq!(lanes, [Lane::Gossip, Lane::Private, Lane::Request]);
        });
        let reply = a
            .request(PeerId(2), payload("request"), Duration::from_secs(30))
            .expect("the reply");
        assert_eq!(&reply[..], &payload("reply")[..]);
    });
    b.send(PeerId(1), payload("private back"))
        .expect("private back");
    assert_eq!(
        &recv(a.incoming()).payload[..],
        &payload("private back")[..]
    );

    // Everything above has crossed the relay: it was delivered.
    let there = relay.recorded(Direction::ToTarget);
    let back = relay.recorded(Direction::FromTarget);
    assert!(there.len() > 4 * MARKER.len() && back.len() > 2 * MARKER.len());
    (contains(&there, MARKER), contains(&back, MARKER))
}

#[test]
fn plaintext_payloads_are_seen_on_the_path() {
    assert_eq!(marker_seen_on_the_path(Wire::Plain), (true, true));
}

#[cfg(feature = "tls")]
#[test]
fn tls_hides_every_payload_from_the_path() {
    assert_eq!(marker_seen_on_the_path(Wire::tls()), (false, false));
}
