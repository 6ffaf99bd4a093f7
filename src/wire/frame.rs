//! The wire format: length-prefixed frames, as a pure codec over byte slices.
//!
//! Nothing here touches a socket, so every function can be driven by a test or a
//! fuzzer with arbitrary bytes. The layout is described in `docs/wire-format.md`.
//!
//! ```text
//! offset  size  field
//! 0       4     payload length, u32 big-endian (the header is not counted)
//! 4       1     kind
//! 5       1     flags, reserved: must be zero
//! 6       len   payload
//! ```

use std::fmt;

use byteorder::{BigEndian, ByteOrder};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 6;

/// Bytes in a hello payload.
pub(crate) const HELLO_LEN: usize = 60;

/// The largest proof a handshake carries: the limit on an `Auth` frame's payload,
/// checked from its header before anything is read.
pub const MAX_PROOF_LEN: usize = 1024;

/// A request frame's bytes before its body: the request id.
pub(crate) const REQUEST_PREFIX: usize = 8;
/// A reply frame's bytes before its body: the request id and a status byte.
pub(crate) const REPLY_PREFIX: usize = 9;
/// Requests one side may have sent on a connection and not yet had answered. A
/// protocol constant, so that the responder can reserve room for every reply it may
/// owe before it hands a request to its application: answering never waits.
pub(crate) const REQUESTS_IN_FLIGHT: usize = 128;

/// A reply's status byte: answered, with a body.
pub(crate) const REPLY_ANSWERED: u8 = 0;
/// A reply's status byte: the responder's application dropped the request unanswered.
pub(crate) const REPLY_UNANSWERED: u8 = 1;

/// What a frame is.
///
/// Exposed because errors name it; applications never build frames themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// Opens the handshake: magic, protocol version, peer id.
    Hello,
    /// Ends the handshake: the connection is registered on the sender's side.
    Accept,
    /// The sender is closing the connection; carries a one-byte close code.
    Close,
    /// Keep-alive probe, sent after an idle interval.
    Ping,
    /// Answer to a ping.
    Pong,
    /// A gossip-lane message.
    Gossip,
    /// A private-lane message.
    Private,
    /// A proof of identity during the handshake (when authentication is on).
    Auth,
    /// Handshake, from the side that does not arbitrate: the generation of the
    /// arbiter's connection it holds now, and the latest it has ever opened (two
    /// big-endian `u64`s, 0 for none).
    Holds,
    /// Handshake, from the arbiter: the connection is registered, with its
    /// generation (eight bytes, big-endian), which orders the arbiter's verdicts.
    Verdict,
    /// A request: its id (eight bytes, big-endian), then the body. Travels in the
    /// private lane's order.
    Request,
    /// The answer to a request: its id (eight bytes, big-endian), a status byte
    /// (0 answered, 1 dropped unanswered), then the body.
    Reply,
    /// Flow control: how many private-lane frames, and how many of their payload
    /// bytes, the sender of this frame has room for in all, counted from the start
    /// of the connection (two big-endian `u64`s). Only ever grows.
    Window,
}

impl FrameKind {
    /// Whether the frame carries the application's data (a message, a request or
    /// a reply), rather than keeping the connection itself going.
    pub(crate) fn is_data(self) -> bool {
        matches!(
            self,
            FrameKind::Gossip | FrameKind::Private | FrameKind::Request | FrameKind::Reply
        )
    }

    fn to_u8(self) -> u8 {
        match self {
            FrameKind::Hello => 1,
            FrameKind::Accept => 2,
            FrameKind::Close => 3,
            FrameKind::Ping => 4,
            FrameKind::Pong => 5,
            FrameKind::Gossip => 6,
            FrameKind::Private => 7,
            FrameKind::Auth => 8,
            FrameKind::Holds => 9,
            FrameKind::Verdict => 10,
            FrameKind::Request => 11,
            FrameKind::Reply => 12,
            FrameKind::Window => 13,
        }
    }

    /// The payload length this kind must have, or `None` for data frames, whose
    /// length is bounded by the configured maximum instead.
    fn fixed_len(self) -> Option<u32> {
        match self {
            FrameKind::Hello => Some(HELLO_LEN as u32),
            FrameKind::Accept | FrameKind::Ping | FrameKind::Pong => Some(0),
            FrameKind::Close => Some(1),
            FrameKind::Holds | FrameKind::Window => Some(16),
            FrameKind::Verdict => Some(8),
            FrameKind::Gossip
            | FrameKind::Private
            | FrameKind::Auth
            | FrameKind::Request
            | FrameKind::Reply => None,
        }
    }

    /// Bytes a data frame of this kind carries before its body: the body alone is
    /// held to the frame limit.
    pub(crate) fn prefix_len(self) -> usize {
        match self {
            FrameKind::Request => REQUEST_PREFIX,
            FrameKind::Reply => REPLY_PREFIX,
            _ => 0,
        }
    }
}

impl TryFrom<u8> for FrameKind {
    type Error = FrameError;

    fn try_from(byte: u8) -> Result<Self, FrameError> {
        Ok(match byte {
            1 => FrameKind::Hello,
            2 => FrameKind::Accept,
            3 => FrameKind::Close,
            4 => FrameKind::Ping,
            5 => FrameKind::Pong,
            6 => FrameKind::Gossip,
            7 => FrameKind::Private,
            8 => FrameKind::Auth,
            9 => FrameKind::Holds,
            10 => FrameKind::Verdict,
            11 => FrameKind::Request,
            12 => FrameKind::Reply,
            13 => FrameKind::Window,
            other => return Err(FrameError::UnknownKind(other)),
        })
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            FrameKind::Hello => "hello",
            FrameKind::Accept => "accept",
            FrameKind::Close => "close",
            FrameKind::Ping => "ping",
            FrameKind::Pong => "pong",
            FrameKind::Gossip => "gossip",
            FrameKind::Private => "private",
            FrameKind::Auth => "auth",
            FrameKind::Holds => "holds",
            FrameKind::Verdict => "verdict",
            FrameKind::Request => "request",
            FrameKind::Reply => "reply",
            FrameKind::Window => "window",
        };
        f.write_str(name)
    }
}

/// Why the bytes a peer sent are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The kind byte names no frame kind.
    UnknownKind(u8),
    /// A reserved flag bit is set.
    ReservedFlags(u8),
    /// The declared payload length is above the limit; nothing was allocated for it.
    TooLarge {
        /// The declared payload length.
        len: u32,
        /// The limit it broke.
        max: u32,
    },
    /// A control frame declares a payload length its kind does not have.
    BadLength {
        /// The frame's kind.
        kind: FrameKind,
        /// The declared payload length.
        len: u32,
    },
    /// A frame of this kind is not allowed at this point of the conversation.
    Unexpected(FrameKind),
    /// A reply whose id names no request in flight, or with an unknown status.
    UnknownReply,
    /// A request beyond the number the protocol allows in flight.
    TooManyRequests,
    /// A private-lane frame beyond the room the receiver gave, or a window frame
    /// that takes room back.
    WindowExceeded,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k:#04x}"),
            FrameError::ReservedFlags(b) => write!(f, "reserved frame flags set ({b:#04x})"),
            FrameError::TooLarge { len, max } => {
                write!(f, "frame payload of {len} bytes is over the limit of {max}")
            }
            FrameError::BadLength { kind, len } => {
                write!(f, "{kind} frame with a payload of {len} bytes")
            }
            FrameError::Unexpected(kind) => write!(f, "unexpected {kind} frame"),
            FrameError::UnknownReply => f.write_str("reply to no request in flight"),
            FrameError::TooManyRequests => write!(
                f,
                "more than {REQUESTS_IN_FLIGHT} requests in flight at once"
            ),
            FrameError::WindowExceeded => {
                f.write_str("private data beyond the room the receiver gave")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: FrameKind,
    pub len: u32,
}

impl Header {
    /// Header and payload together.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len as usize
    }
}

/// Decodes the header at the start of `buf`.
///
/// Returns `Ok(None)` when fewer than [`HEADER_LEN`] bytes are available; nothing is
/// consumed, so the caller reads more and calls again. The payload may still be
/// incomplete when a header is returned.
///
/// # Errors
///
/// Fails on an unknown kind, a set reserved flag, a control frame of the wrong length,
/// or a data payload longer than `max_payload` — before anything is allocated for it.
pub fn decode_header(buf: &[u8], max_payload: u32) -> Result<Option<Header>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = BigEndian::read_u32(&buf[0..4]);
    let kind = FrameKind::try_from(buf[4])?;
    let flags = buf[5];
    if flags != 0 {
        return Err(FrameError::ReservedFlags(flags));
    }
    match kind.fixed_len() {
        Some(fixed) if len != fixed => return Err(FrameError::BadLength { kind, len }),
        Some(_) => {}
        None if kind == FrameKind::Auth && (len == 0 || len as usize > MAX_PROOF_LEN) => {
            return Err(FrameError::BadLength { kind, len })
        }
        None if len as usize > max_payload as usize + kind.prefix_len() => {
            return Err(FrameError::TooLarge {
                len,
                max: max_payload,
            })
        }
        None if (len as usize) < kind.prefix_len() => {
            return Err(FrameError::BadLength { kind, len })
        }
        None => {}
    }
    Ok(Some(Header { kind, len }))
}

/// Appends a header for a payload of `len` bytes.
pub fn encode_header(out: &mut Vec<u8>, kind: FrameKind, len: u32) {
    out.extend_from_slice(&header(kind, len));
}

/// The header of a frame of `kind` with a payload of `len` bytes.
pub(crate) fn header(kind: FrameKind, len: u32) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    BigEndian::write_u32(&mut header[0..4], len);
    header[4] = kind.to_u8();
    header
}

/// Appends a whole frame.
///
/// # Panics
///
/// Panics if the payload is longer than `u32::MAX`; callers check payloads against the
/// peer's limit, which is never above it.
pub fn encode(out: &mut Vec<u8>, kind: FrameKind, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payload length checked against the frame limit");
    encode_header(out, kind, len);
    out.extend_from_slice(payload);
}

/// Why a connection is being closed, carried by a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseCode {
    /// The application closed the connection.
    Normal,
    /// The node is shutting down.
    Shutdown,
    /// The peer already has a connection to us; this one is refused.
    Duplicate,
    /// We received bytes that break the protocol.
    Protocol,
    /// A limit of ours refused the connection.
    Refused,
    /// Authentication failed: the proof did not verify, or only one side authenticates.
    AuthFailed,
    /// A code this version does not know; treated as a normal close.
    Other(u8),
}

impl CloseCode {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            CloseCode::Normal => 0,
            CloseCode::Shutdown => 1,
            CloseCode::Duplicate => 2,
            CloseCode::Protocol => 3,
            CloseCode::Refused => 4,
            CloseCode::AuthFailed => 5,
            CloseCode::Other(code) => code,
        }
    }

    pub(crate) fn from_u8(code: u8) -> Self {
        match code {
            0 => CloseCode::Normal,
            1 => CloseCode::Shutdown,
            2 => CloseCode::Duplicate,
            3 => CloseCode::Protocol,
            4 => CloseCode::Refused,
            5 => CloseCode::AuthFailed,
            other => CloseCode::Other(other),
        }
    }
}

/// Appends a close frame.
pub(crate) fn encode_close(out: &mut Vec<u8>, code: CloseCode) {
    encode(out, FrameKind::Close, &[code.to_u8()]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 1 << 20;

    fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, kind, payload);
        out
    }

    /// Decodes every frame in `buf`, as the reader does.
    fn decode_all(mut buf: &[u8]) -> Result<Vec<(FrameKind, Vec<u8>)>, FrameError> {
        let mut frames = Vec::new();
        while let Some(header) = decode_header(buf, MAX)? {
            if buf.len() < header.frame_len() {
                break;
            }
            frames.push((header.kind, buf[HEADER_LEN..header.frame_len()].to_vec()));
            buf = &buf[header.frame_len()..];
        }
        Ok(frames)
    }

    #[test]
    fn round_trip_every_kind() {
        let cases: Vec<(FrameKind, Vec<u8>)> = vec![
            (FrameKind::Gossip, b"digest".to_vec()),
            (FrameKind::Private, vec![0xAB; 1000]),
            (FrameKind::Gossip, Vec::new()),
            (FrameKind::Ping, Vec::new()),
            (FrameKind::Pong, Vec::new()),
            (FrameKind::Accept, Vec::new()),
            (FrameKind::Close, vec![CloseCode::Shutdown.to_u8()]),
            (FrameKind::Hello, vec![7; HELLO_LEN]),
            (FrameKind::Auth, vec![9; 32]),
            (FrameKind::Holds, vec![1; 16]),
            (FrameKind::Verdict, 42u64.to_be_bytes().to_vec()),
            (
                FrameKind::Request,
                [&7u64.to_be_bytes()[..], b"get"].concat(),
            ),
            (
                FrameKind::Reply,
                [&7u64.to_be_bytes()[..], &[0], b"x"].concat(),
            ),
        ];
        let mut wire = Vec::new();
        for (kind, payload) in &cases {
            encode(&mut wire, *kind, payload);
        }
        assert_eq!(decode_all(&wire).unwrap(), cases);
    }

    #[test]
    fn header_layout_is_big_endian_length_then_kind_then_flags() {
        let wire = frame(FrameKind::Private, b"abc");
        assert_eq!(wire, [0, 0, 0, 3, 7, 0, b'a', b'b', b'c']);
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let mut wire = frame(FrameKind::Private, b"first message");
        wire.extend(frame(FrameKind::Gossip, b"second"));
        wire.extend(frame(FrameKind::Ping, b""));
        let whole = decode_all(&wire).unwrap();
        assert_eq!(whole.len(), 3);

        for split in 0..=wire.len() {
            // Feed the first part, take what is complete, then append the rest: the
            // frames must come out the same, and a partial header or payload must
            // consume nothing.
            let (head, tail) = wire.split_at(split);
            let mut pending = head.to_vec();
            let mut got = Vec::new();
            for chunk in [&[][..], tail] {
                pending.extend_from_slice(chunk);
                loop {
                    match decode_header(&pending, MAX).unwrap() {
                        Some(h) if pending.len() >= h.frame_len() => {
                            got.push((h.kind, pending[HEADER_LEN..h.frame_len()].to_vec()));
                            pending.drain(..h.frame_len());
                        }
                        _ => break,
                    }
                }
            }
            assert_eq!(got, whole, "split at byte {split}");
            assert!(pending.is_empty());
        }
    }

    #[test]
    fn partial_header_needs_more_bytes() {
        let wire = frame(FrameKind::Gossip, b"x");
        for n in 0..HEADER_LEN {
            assert_eq!(decode_header(&wire[..n], MAX), Ok(None));
        }
        assert!(decode_header(&wire[..HEADER_LEN], MAX).unwrap().is_some());
    }

    #[test]
    fn oversized_length_is_refused_before_the_payload_arrives() {
        // A 4 GiB length prefix on a data frame: refused from the header alone.
        let wire = [0xFF, 0xFF, 0xFF, 0xFF, 7, 0];
        assert_eq!(
            decode_header(&wire, MAX),
            Err(FrameError::TooLarge {
                len: u32::MAX,
                max: MAX
            })
        );
        // Exactly at the limit is fine.
        let mut at_limit = Vec::new();
        encode_header(&mut at_limit, FrameKind::Gossip, MAX);
        assert!(decode_header(&at_limit, MAX).unwrap().is_some());
        let mut over = Vec::new();
        encode_header(&mut over, FrameKind::Gossip, MAX + 1);
        assert!(matches!(
            decode_header(&over, MAX),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn unknown_kind_and_reserved_flags_are_errors() {
        for kind in [0u8, 14, 0x7F, 0xFF] {
            assert_eq!(
                decode_header(&[0, 0, 0, 0, kind, 0], MAX),
                Err(FrameError::UnknownKind(kind))
            );
        }
        assert_eq!(
            decode_header(&[0, 0, 0, 0, 4, 0x80], MAX),
            Err(FrameError::ReservedFlags(0x80))
        );
    }

    #[test]
    fn control_frames_have_fixed_lengths() {
        // A ping claiming a payload, or a hello claiming 4 GiB, never gets to allocate.
        assert_eq!(
            decode_header(&[0, 0, 0, 1, 4, 0], MAX),
            Err(FrameError::BadLength {
                kind: FrameKind::Ping,
                len: 1
            })
        );
        assert!(matches!(
            decode_header(&[0xFF, 0xFF, 0xFF, 0xFF, 1, 0], MAX),
            Err(FrameError::BadLength {
                kind: FrameKind::Hello,
                ..
            })
        ));
        assert!(decode_header(&[0, 0, 0, 2, 3, 0], MAX).is_err());
        // An auth frame is bounded by the proof limit, whatever the data limit.
        assert!(decode_header(&[0, 0, 0, 32, 8, 0], MAX).unwrap().is_some());
        assert!(decode_header(&[0, 0, 0, 0, 8, 0], MAX).is_err());
        assert!(decode_header(&[0, 0, 0x04, 0x01, 8, 0], MAX).is_err());
    }

    #[test]
    fn hostile_bytes_never_panic() {
        // A cheap deterministic stream of pseudo-random bytes: every prefix either
        // decodes, asks for more, or is refused.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut bytes = Vec::with_capacity(4096);
        for _ in 0..4096 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.push(state as u8);
        }
        for start in 0..bytes.len() {
            let _ = decode_header(&bytes[start..], MAX);
            let _ = decode_all(&bytes[start..]);
        }
    }

    #[test]
    fn close_codes_round_trip() {
        for code in 0..=u8::MAX {
            assert_eq!(CloseCode::from_u8(code).to_u8(), code);
        }
    }
}
