//! A refused connection seen from both ends, and the check that the node that
//! refused it goes on serving good peers.

use wirelane::{Error, Event, HandshakeError, Node};

use super::{connect, recv};

/// What each end of a refused connection reported.
#[derive(Debug)]
pub struct Seen {
    /// The dialler's `connect` error.
    pub dialler: HandshakeError,
    /// The error in the acceptor's `Event::Refused`.
    pub acceptor: HandshakeError,
}

/// `dialler` dials `acceptor`, and the connection must be refused: returns what
/// each side reported. Neither side registers the peer, and neither reports
/// anything else about the connection: the dialler no event at all, the acceptor
/// only its `Refused`.
#[track_caller]
pub fn refusal(dialler: &Node, acceptor: &Node) -> Seen {
    let dialler_error = match dialler.connect(acceptor.local_addr()) {
        Err(Error::Handshake(error)) => error,
        other => panic!("{}: connect was not refused: {other:?}", dialler.id()),
    };
    let acceptor_error = match recv(acceptor.events()) {
        Event::Refused { error, .. } => error,
        other => panic!("{}: not a refusal: {other:?}", acceptor.id()),
    };
    assert_eq!(dialler.peers(), vec![], "{}", dialler.id());
    assert_eq!(acceptor.peers(), vec![], "{}", acceptor.id());
    let events: Vec<Event> = dialler.events().try_iter().collect();
    assert!(events.is_empty(), "{}: {events:#?}", dialler.id());
    assert_eq!(dialler.stats().handshakes_failed, 1);
    assert_eq!(acceptor.stats().handshakes_failed, 1);
    Seen {
        dialler: dialler_error,
        acceptor: acceptor_error,
    }
}

/// `good` connects to `node`, and a private message goes each way: the refusal
/// before left `node` serving.
#[track_caller]
pub fn still_serves(node: &Node, good: &Node) {
    connect(good, node);
    good.send(node.id(), &b"after the refusal"[..])
        .expect("send to the node");
    let m = recv(node.incoming());
    assert_eq!(
        (m.from, &m.payload[..]),
        (good.id(), &b"after the refusal"[..])
    );
    node.send(good.id(), &b"and back"[..]).expect("send back");
    let m = recv(good.incoming());
    assert_eq!((m.from, &m.payload[..]), (node.id(), &b"and back"[..]));
    match recv(node.events()) {
        Event::Connected {
            peer, fingerprint, ..
        } => {
            assert_eq!(peer, good.id());
            #[cfg(feature = "tls")]
            assert_eq!(
                fingerprint.is_some(),
                node.config().tls.is_some(),
                "a fingerprint exactly on TLS"
            );
            let _ = fingerprint;
        }
        other => panic!("{}: {other:?}", node.id()),
    }
}
