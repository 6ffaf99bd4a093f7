//! With an authenticator, a peer must prove its identity in the handshake: a peer
//! without the secret is refused, a peer cannot claim an id it may not use, and a
//! recorded handshake cannot be replayed. Every refusal is a typed error.

mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use util::raw::{self, RawPeer};
use util::{config, event, node_with, recv};
use wirelane::{Authenticator, Config, Error, Event, HandshakeError, PeerId, SharedSecret};

fn secret(s: &str) -> Config {
    config().authenticator(SharedSecret::new(format!("{s}-padding-to-sixteen-bytes")).unwrap())
}

/// The refusal the accepting node reports, as a typed error.
fn refusal(node: &wirelane::Node) -> HandshakeError {
    match event(node, "refused", |e| matches!(e, Event::Refused { .. })) {
        Event::Refused { error, .. } => error,
        _ => unreachable!(),
    }
}

fn dial_error(result: Result<PeerId, Error>) -> HandshakeError {
    match result {
        Err(Error::Handshake(e)) => e,
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

#[test]
fn peers_with_the_same_secret_connect_and_talk() {
    let a = node_with(1, secret("alpha"));
    let b = node_with(2, secret("alpha"));
    let peer = a.connect(b.local_addr()).unwrap();
    a.send(peer, b"authenticated".to_vec()).unwrap();
    assert_eq!(&recv(b.incoming()).payload[..], b"authenticated");
    // Either may dial.
    let c = node_with(3, secret("alpha"));
    assert_eq!(c.connect(a.local_addr()).unwrap(), PeerId(1));
}

#[test]
fn a_peer_without_the_secret_is_refused() {
    let server = node_with(1, secret("alpha"));
    // The wrong secret: each side rejects the other's proof.
    let wrong = node_with(2, secret("bravo"));
    let error = dial_error(wrong.connect(server.local_addr()));
    assert!(
        matches!(
            error,
            HandshakeError::AuthFailed | HandshakeError::PeerRejectedAuth
        ),
        "{error:?}"
    );
    assert!(matches!(
        refusal(&server),
        HandshakeError::AuthFailed | HandshakeError::PeerRejectedAuth
    ));
    // No authenticator at all: refused for not authenticating, on both sides.
    let plain = node_with(3, config());
    assert_eq!(
        dial_error(plain.connect(server.local_addr())),
        HandshakeError::AuthMismatch {
            ours: false,
            theirs: true
        }
    );
    assert_eq!(
        refusal(&server),
        HandshakeError::AuthMismatch {
            ours: true,
            theirs: false
        }
    );
    assert!(server.peers().is_empty());
    assert_eq!(server.stats().handshakes_failed, 2);
}

/// A key per peer id: a peer can prove only the id whose key it holds.
#[derive(Debug)]
struct PerPeerKeys {
    own: SharedSecret,
    keys: HashMap<PeerId, SharedSecret>,
}

impl Authenticator for PerPeerKeys {
    fn prove(&self, local: PeerId, remote: PeerId, transcript: &[u8]) -> Vec<u8> {
        self.own.prove(local, remote, transcript)
    }

    fn verify(&self, local: PeerId, remote: PeerId, transcript: &[u8], proof: &[u8]) -> bool {
        self.keys
            .get(&remote)
            .is_some_and(|key| key.verify(local, remote, transcript, proof))
    }
}

fn key(id: u64) -> SharedSecret {
    SharedSecret::new(format!("the key of peer number {id}")).unwrap()
}

fn keys(own: u64) -> PerPeerKeys {
    PerPeerKeys {
        own: key(own),
        keys: (1..=3).map(|id| (PeerId(id), key(id))).collect(),
    }
}

#[test]
fn a_peer_cannot_claim_an_id_it_holds_no_key_for() {
    let server = node_with(1, config().authenticator(keys(1)));
    let honest = node_with(2, config().authenticator(keys(2)));
    assert_eq!(honest.connect(server.local_addr()).unwrap(), PeerId(1));

    // Peer 3 holds only its own key, and claims to be peer 2.
    let thief = node_with(2, config().authenticator(keys(3)));
    honest.shutdown();
    let error = dial_error(thief.connect(server.local_addr()));
    assert!(
        matches!(
            error,
            HandshakeError::PeerRejectedAuth | HandshakeError::AuthFailed
        ),
        "{error:?}"
    );
    assert_eq!(refusal(&server), HandshakeError::AuthFailed);
}

/// Relays one connection to `target`, recording what the client sent.
fn recording_relay(target: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let tape = recorded.clone();
    thread::spawn(move || {
        let (mut client, _) = listener.accept().unwrap();
        let mut server = TcpStream::connect(target).unwrap();
        let (mut client_r, mut server_w) =
            (client.try_clone().unwrap(), server.try_clone().unwrap());
        let upstream = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = client_r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                // Recorded before it is forwarded: once the server has seen bytes
                // (and so once the handshake is over), they are on the tape.
                tape.lock().unwrap().extend_from_slice(&buf[..n]);
                if server_w.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let _ = std::io::copy(&mut server, &mut client);
        let _ = upstream.join();
    });
    (addr, recorded)
}

/// The first `n` whole frames of a byte stream.
fn first_frames(bytes: &[u8], n: usize) -> Vec<u8> {
    let mut end = 0;
    for _ in 0..n {
        let len = u32::from_be_bytes(bytes[end..end + 4].try_into().unwrap()) as usize;
        end += 6 + len;
    }
    bytes[..end].to_vec()
}

#[test]
fn a_recorded_handshake_cannot_be_replayed() {
    let server = node_with(1, secret("alpha"));
    let client = node_with(2, secret("alpha"));
    let (relay, recorded) = recording_relay(server.local_addr());
    assert_eq!(client.connect(relay).unwrap(), PeerId(1));
    let tape = recorded.lock().unwrap().clone();
    let hello_and_proof = first_frames(&tape, 2);
    assert_eq!(hello_and_proof[4], raw::HELLO);
    client.shutdown();

    // An eavesdropper replays the client's hello and proof on a new connection: the
    // server's hello carries a fresh nonce, so the old proof does not verify.
    let mut replay = RawPeer::connect(server.local_addr());
    replay.send(&hello_and_proof);
    let kinds = replay.expect_closed();
    assert_eq!(kinds.first(), Some(&raw::HELLO));
    assert_eq!(refusal(&server), HandshakeError::AuthFailed);
}

#[test]
fn a_forged_proof_is_refused() {
    let server = node_with(1, secret("alpha"));
    let mut peer = RawPeer::connect(server.local_addr());
    peer.send(&raw::hello_full(
        b"WRLN",
        raw::VERSION,
        1,
        9,
        1,
        1 << 20,
        [3; 32],
    ));
    peer.send(&raw::frame(raw::AUTH, &[0u8; 32]));
    peer.expect_closed();
    assert_eq!(refusal(&server), HandshakeError::AuthFailed);
}
