//! A hand-written peer that speaks the wire format byte by byte (as documented in
//! `docs/wire-format.md`), for tests that need a peer to misbehave.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::GUARD;

pub const HELLO: u8 = 1;
pub const ACCEPT: u8 = 2;
/// The protocol version the crate speaks.
pub const VERSION: u16 = 5;
pub const CLOSE: u8 = 3;
pub const PING: u8 = 4;
pub const PONG: u8 = 5;
pub const GOSSIP: u8 = 6;
pub const PRIVATE: u8 = 7;
pub const AUTH: u8 = 8;
pub const HOLDS: u8 = 9;
pub const VERDICT: u8 = 10;
pub const WINDOW: u8 = 13;

/// A window frame granting `frames` private-lane frames and `bytes` bytes in all.
pub fn window(frames: u64, bytes: u64) -> Vec<u8> {
    let mut p = frames.to_be_bytes().to_vec();
    p.extend_from_slice(&bytes.to_be_bytes());
    frame(WINDOW, &p)
}

/// A frame: u32 big-endian payload length, kind, zero flags, payload.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.push(kind);
    out.push(0);
    out.extend_from_slice(payload);
    out
}

/// A hello frame: magic, version, capability flags, id, incarnation, frame limit,
/// nonce.
pub fn hello_with(
    magic: &[u8; 4],
    version: u16,
    id: u64,
    incarnation: u64,
    max_frame: u32,
) -> Vec<u8> {
    hello_full(magic, version, 0, id, incarnation, max_frame, [0x17; 32])
}

/// A hello frame with every field chosen.
pub fn hello_full(
    magic: &[u8; 4],
    version: u16,
    flags: u16,
    id: u64,
    incarnation: u64,
    max_frame: u32,
    nonce: [u8; 32],
) -> Vec<u8> {
    let mut p = magic.to_vec();
    p.extend_from_slice(&version.to_be_bytes());
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&incarnation.to_be_bytes());
    p.extend_from_slice(&max_frame.to_be_bytes());
    p.extend_from_slice(&nonce);
    frame(HELLO, &p)
}

pub fn hello(id: u64) -> Vec<u8> {
    hello_with(b"WRLN", VERSION, id, 0x5EED, 1 << 20)
}

/// A raw TCP connection to a node.
pub struct RawPeer {
    pub stream: TcpStream,
}

impl RawPeer {
    pub fn connect(addr: SocketAddr) -> RawPeer {
        let stream = TcpStream::connect(addr).expect("raw connect");
        stream.set_read_timeout(Some(GUARD)).unwrap();
        RawPeer { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("raw write");
    }

    /// Reads one whole frame: (kind, payload).
    pub fn read_frame(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        let mut header = [0u8; 6];
        self.stream.read_exact(&mut header)?;
        let len = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload)?;
        Ok((header[4], payload))
    }

    /// Reads frames until one of `kind` arrives, answering nothing.
    pub fn read_until(&mut self, kind: u8) -> Vec<u8> {
        loop {
            let (k, payload) = self.read_frame().expect("frame");
            if k == kind {
                return payload;
            }
        }
    }

    /// Completes a handshake as peer `id` with a node whose id is `node_id`, then
    /// returns; the connection is registered on the node when this returns.
    pub fn handshake(addr: SocketAddr, id: u64, node_id: u64) -> RawPeer {
        RawPeer::handshake_with_limit(addr, id, node_id, 1 << 20)
    }

    /// As [`RawPeer::handshake`], announcing `max_frame` as our frame limit.
    pub fn handshake_with_limit(
        addr: SocketAddr,
        id: u64,
        node_id: u64,
        max_frame: u32,
    ) -> RawPeer {
        let mut peer = RawPeer::connect(addr);
        peer.send(&hello_with(b"WRLN", VERSION, id, 0x5EED, max_frame));
        let (kind, _) = peer.read_frame().expect("node's hello");
        assert_eq!(kind, HELLO);
        peer.finish_handshake(id, node_id);
        peer
    }

    /// Waits until the node closes the connection (EOF or reset), skipping any frames
    /// it sends first. Returns the frames' kinds.
    pub fn expect_closed(&mut self) -> Vec<u8> {
        let mut kinds = Vec::new();
        loop {
            match self.read_frame() {
                Ok((kind, _)) => kinds.push(kind),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    panic!("the node did not close the connection within {GUARD:?}")
                }
                Err(_) => return kinds,
            }
        }
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }
}

/// A close frame carrying `code` (0 normal, 1 shutdown, 2 duplicate, 3 protocol,
/// 4 refused, 5 authentication failed).
pub fn close(code: u8) -> Vec<u8> {
    frame(CLOSE, &[code])
}

/// A listening socket for a node to dial: a hand-written peer on the accepting side.
pub struct RawListener {
    pub listener: std::net::TcpListener,
}

impl RawListener {
    pub fn bind() -> RawListener {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a raw listener");
        listener.set_nonblocking(true).unwrap();
        RawListener { listener }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// The next connection made to the listener, if one arrives within `limit`.
    pub fn accept_within(&self, limit: Duration) -> Option<RawPeer> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream.set_read_timeout(Some(GUARD)).unwrap();
                    return Some(RawPeer { stream });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if std::time::Instant::now() >= deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("raw accept: {e}"),
            }
        }
    }

    /// The next connection; fails the test if none arrives within the guard.
    #[track_caller]
    pub fn accept(&self) -> RawPeer {
        self.accept_within(GUARD)
            .unwrap_or_else(|| panic!("no connection within {GUARD:?}"))
    }
}

impl RawPeer {
    /// Reads the dialling node's hello and answers with ours, as peer `id`.
    pub fn answer_hello(&mut self, id: u64, max_frame: u32) {
        let (kind, _) = self.read_frame().expect("the node's hello");
        assert_eq!(kind, HELLO);
        self.send(&hello_with(b"WRLN", VERSION, id, 0x5EED, max_frame));
    }

    /// Completes, on the accepting side, the handshake of a node (id `node_id`) that
    /// dialled us as peer `id`; the connection is registered on the node when this
    /// returns.
    pub fn answer_handshake(&mut self, id: u64, node_id: u64, max_frame: u32) {
        self.answer_hello(id, max_frame);
        self.finish_handshake(id, node_id);
    }

    /// The verdicts after the hellos, as peer `id` of a node whose id is `node_id`.
    fn finish_handshake(&mut self, id: u64, node_id: u64) {
        if node_id < id {
            // The node arbitrates: we say we hold no connection to it, it sends its
            // verdict, we confirm, it says it has opened the connection.
            self.expect_verdict();
            self.send(&frame(ACCEPT, &[]));
            let (kind, _) = self.read_frame().expect("node's word that it opened");
            assert_eq!(kind, ACCEPT);
        } else {
            // We arbitrate: the node says whether it holds a connection to us; our
            // verdict, its confirmation, our word that we opened it.
            let (kind, _) = self.read_frame().expect("node's holds");
            assert_eq!(kind, HOLDS);
            self.send(&frame(VERDICT, &1u64.to_be_bytes()));
            let (kind, _) = self.read_frame().expect("node's confirmation");
            assert_eq!(kind, ACCEPT);
            self.send(&frame(ACCEPT, &[]));
        }
        // All the room the node could want: these peers read the node's private
        // frames, or mean to leave them unread in the socket.
        self.send(&window(u64::MAX / 2, u64::MAX / 2));
    }

    /// As the side that does not arbitrate, after the hellos: says we hold no
    /// connection to the node, and reads the node's verdict.
    pub fn expect_verdict(&mut self) {
        self.send(&frame(HOLDS, &[0; 16]));
        let (kind, _) = self.read_frame().expect("node's verdict");
        assert_eq!(kind, VERDICT);
    }
}
