//! The hello: what each side says about itself when a connection opens (see
//! `docs/wire-format.md`). Pure: bytes in, a value or a typed error out.

use byteorder::{BigEndian, ByteOrder};

use super::frame::{FrameError, FrameKind, HELLO_LEN};
use crate::error::HandshakeError;
use crate::id::PeerId;

/// The first bytes of every hello.
pub(crate) const MAGIC: [u8; 4] = *b"WRLN";
/// The protocol version this crate speaks.
/// Version 3 added requests and replies; version 4, flow control of the private
/// lane (window frames); version 5, the probe (a flag that changes what follows
/// the hello, which a version 4 peer could not ignore).
pub(crate) const VERSION: u16 = 5;
/// Capability flag: the sender authenticates its peers, and will send a proof.
const FLAG_AUTH: u16 = 1;
/// Flag: the sender (always the dialler) only probes: once the peer has checked it,
/// the peer answers `Accept` and both hang up, with nothing registered.
const FLAG_PROBE: u16 = 2;

/// What a node says about itself when a connection opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) peer: PeerId,
    /// Random per node instance: tells a restarted peer from a duplicate connection.
    pub(crate) incarnation: u64,
    /// The largest payload the sender accepts.
    pub(crate) max_frame_len: u32,
    /// Whether the sender authenticates its peers.
    pub(crate) authenticates: bool,
    /// Whether the sender only probes: it wants to learn who the receiver is, and
    /// nothing is to be registered.
    pub(crate) probe: bool,
    /// Random per connection: makes every handshake's transcript unique.
    pub(crate) nonce: [u8; 32],
}

/// A hello as sent: the payload bytes, which authentication proofs cover.
pub(crate) type HelloBytes = [u8; HELLO_LEN];

/// Encodes a hello payload.
pub(crate) fn encode_hello(hello: &Hello) -> HelloBytes {
    let mut payload = [0u8; HELLO_LEN];
    payload[0..4].copy_from_slice(&MAGIC);
    BigEndian::write_u16(&mut payload[4..6], VERSION);
    // Capability flags: version 1 ignores the bits it does not know, so a later
    // version can offer an optional feature without breaking this one.
    let mut flags = 0;
    if hello.authenticates {
        flags |= FLAG_AUTH;
    }
    if hello.probe {
        flags |= FLAG_PROBE;
    }
    BigEndian::write_u16(&mut payload[6..8], flags);
    BigEndian::write_u64(&mut payload[8..16], hello.peer.0);
    BigEndian::write_u64(&mut payload[16..24], hello.incarnation);
    BigEndian::write_u32(&mut payload[24..28], hello.max_frame_len);
    payload[28..60].copy_from_slice(&hello.nonce);
    payload
}

/// Parses a hello payload.
///
/// # Errors
///
/// Fails on a payload of the wrong size, wrong magic bytes, another protocol version,
/// or a zero frame limit.
pub(crate) fn decode_hello(payload: &[u8]) -> Result<Hello, HandshakeError> {
    let Ok(payload) = <&HelloBytes>::try_from(payload) else {
        return Err(HandshakeError::from(FrameError::BadLength {
            kind: FrameKind::Hello,
            len: payload.len() as u32,
        }));
    };
    if payload[0..4] != MAGIC {
        return Err(HandshakeError::BadMagic);
    }
    let version = BigEndian::read_u16(&payload[4..6]);
    if version != VERSION {
        return Err(HandshakeError::Version {
            ours: VERSION,
            theirs: version,
        });
    }
    let max_frame_len = BigEndian::read_u32(&payload[24..28]);
    if max_frame_len == 0 {
        return Err(HandshakeError::PeerRefused);
    }
    let mut nonce = [0u8; 32];
    nonce.copy_from_slice(&payload[28..60]);
    let flags = BigEndian::read_u16(&payload[6..8]);
    Ok(Hello {
        peer: PeerId(BigEndian::read_u64(&payload[8..16])),
        incarnation: BigEndian::read_u64(&payload[16..24]),
        max_frame_len,
        authenticates: flags & FLAG_AUTH != 0,
        probe: flags & FLAG_PROBE != 0,
        nonce,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{self, HEADER_LEN};

    fn hello() -> Hello {
        Hello {
            peer: PeerId(42),
            incarnation: 0xDEAD_BEEF,
            max_frame_len: 1 << 20,
            authenticates: true,
            probe: false,
            nonce: [5; 32],
        }
    }

    #[test]
    fn hello_round_trips() {
        let h = hello();
        assert_eq!(decode_hello(&encode_hello(&h)), Ok(h));
        let plain = Hello {
            authenticates: false,
            ..hello()
        };
        assert_eq!(decode_hello(&encode_hello(&plain)), Ok(plain));
        let probe = Hello {
            probe: true,
            ..hello()
        };
        assert_eq!(decode_hello(&encode_hello(&probe)), Ok(probe));
    }

    #[test]
    fn hello_frame_has_the_documented_layout() {
        let mut out = Vec::new();
        frame::encode(&mut out, FrameKind::Hello, &encode_hello(&hello()));
        assert_eq!(out.len(), HEADER_LEN + HELLO_LEN);
        assert_eq!(&out[..6], &[0, 0, 0, HELLO_LEN as u8, 1, 0]);
        assert_eq!(&out[6..10], b"WRLN");
        assert_eq!(&out[10..12], &[0, 5], "the protocol version");
        assert_eq!(&out[12..14], &[0, 1], "the authentication flag");
        assert_eq!(&out[14..22], &42u64.to_be_bytes());
        assert_eq!(&out[34..66], &[5; 32], "the nonce");

        let mut out = Vec::new();
        let probe = Hello {
            authenticates: false,
            probe: true,
            ..hello()
        };
        frame::encode(&mut out, FrameKind::Hello, &encode_hello(&probe));
        assert_eq!(&out[12..14], &[0, 2], "the probe flag");
    }

    #[test]
    fn bad_magic_version_and_length_are_typed_errors() {
        let mut p = encode_hello(&hello());
        p[0] = b'X';
        assert_eq!(decode_hello(&p), Err(HandshakeError::BadMagic));

        let mut p = encode_hello(&hello());
        p[5] = 9;
        assert_eq!(
            decode_hello(&p),
            Err(HandshakeError::Version {
                ours: VERSION,
                theirs: 9
            })
        );

        assert!(matches!(
            decode_hello(&encode_hello(&hello())[..10]),
            Err(HandshakeError::Protocol(e)) if e.violation() == crate::error::Violation::BadLength
        ));
    }

    #[test]
    fn unknown_capability_flags_are_ignored() {
        let mut p = encode_hello(&hello());
        p[6] = 0xFF;
        p[7] = 0xFE;
        let decoded = decode_hello(&p).unwrap();
        assert!(!decoded.authenticates);
        assert!(decoded.probe, "bit 1 is the probe flag");
        assert_eq!(decoded.peer, PeerId(42));
    }
}
