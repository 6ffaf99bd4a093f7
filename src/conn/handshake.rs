//! The handshake: hello exchange, optional authentication, then the arbiter's verdict.
//!
//! Both sides send a hello at once (magic, protocol version, capability flags, peer
//! id, incarnation, frame limit, a fresh random nonce) and read the other's. If they
//! authenticate, each then sends a proof of identity over both hellos and checks the
//! other's (see [`crate::auth`]). The side with the lower id arbitrates: it registers
//! the connection and sends `Accept`, or refuses it with a close frame (a live
//! connection to that peer already exists, or it is shutting down). The other side
//! registers on `Accept` and answers with its own `Accept`. So when either side
//! finishes, both have registered the connection, and a connection that loses a
//! simultaneous dial never carries a message. Every step has the same deadline.

use crate::conn::stream::Stream;
use std::io::Write;
use std::time::Instant;

use crate::auth::{self, Authenticator};
use crate::error::HandshakeError;
#[cfg(feature = "tls")]
use crate::error::TlsError;
use crate::id::PeerId;
use crate::sync::until;
use crate::wire::frame::{
    self, CloseCode, FrameError, FrameKind, Header, HEADER_LEN, HELLO_LEN, MAX_PROOF_LEN,
};
use crate::wire::hello::{decode_hello, encode_hello, Hello, HelloBytes};
use crate::wire::readbuf::ReadBuf;

/// A fresh random nonce from the operating system.
pub(crate) fn nonce() -> Result<[u8; 32], HandshakeError> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| {
        log::error!("no system randomness for a handshake nonce: {e}");
        HandshakeError::Io(std::io::ErrorKind::Other)
    })?;
    Ok(nonce)
}

/// Sends our hello and reads the peer's; returns the peer's, as decoded and as sent.
pub(crate) fn exchange_hello(
    stream: &Stream,
    rb: &mut ReadBuf,
    ours: &Hello,
    deadline: Instant,
) -> Result<(Hello, HelloBytes), HandshakeError> {
    let mut out = Vec::with_capacity(HEADER_LEN + HELLO_LEN);
    frame::encode(&mut out, FrameKind::Hello, &encode_hello(ours));
    write_all(stream, &out, deadline)?;
    let header = read_frame(stream, rb, &[FrameKind::Hello], deadline)?;
    let payload = &rb.data()[HEADER_LEN..header.frame_len()];
    let decoded = decode_hello(payload).map(|hello| {
        let mut bytes = [0u8; HELLO_LEN];
        bytes.copy_from_slice(payload);
        (hello, bytes)
    });
    rb.consume(header.frame_len());
    let (theirs, bytes) = decoded?;
    if theirs.peer == ours.peer {
        return Err(HandshakeError::SelfConnect);
    }
    Ok((theirs, bytes))
}

/// Proves our identity and checks the peer's, if this node or the peer
/// authenticates: both must, or the connection is refused.
pub(crate) fn authenticate(
    stream: &Stream,
    rb: &mut ReadBuf,
    authenticator: Option<&dyn Authenticator>,
    (ours, our_bytes): (&Hello, &HelloBytes),
    (theirs, their_bytes): (&Hello, &HelloBytes),
    deadline: Instant,
) -> Result<(), HandshakeError> {
    let authenticator = match (authenticator, theirs.authenticates) {
        (None, false) => return Ok(()),
        (Some(authenticator), true) => authenticator,
        (ours, theirs) => {
            send_refusal(stream, CloseCode::AuthFailed, deadline);
            return Err(HandshakeError::AuthMismatch {
                ours: ours.is_some(),
                theirs,
            });
        }
    };
    let proof = authenticator.prove(
        ours.peer,
        theirs.peer,
        &auth::transcript(our_bytes, their_bytes),
    );
    if proof.is_empty() || proof.len() > MAX_PROOF_LEN {
        log::error!(
            "{}: the authenticator made a proof of {} bytes; it must be 1 to {MAX_PROOF_LEN}",
            ours.peer,
            proof.len()
        );
        send_refusal(stream, CloseCode::AuthFailed, deadline);
        return Err(HandshakeError::PeerRejectedAuth);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + proof.len());
    frame::encode(&mut out, FrameKind::Auth, &proof);
    write_all(stream, &out, deadline)?;

    let header = read_frame(stream, rb, &[FrameKind::Auth, FrameKind::Close], deadline)?;
    let payload = &rb.data()[HEADER_LEN..header.frame_len()];
    let verdict = match header.kind {
        FrameKind::Auth => {
            let transcript = auth::transcript(their_bytes, our_bytes);
            if authenticator.verify(ours.peer, theirs.peer, &transcript, payload) {
                Ok(())
            } else {
                Err(HandshakeError::AuthFailed)
            }
        }
        _ => Err(close_error(payload.first().copied(), theirs.peer)),
    };
    rb.consume(header.frame_len());
    if verdict == Err(HandshakeError::AuthFailed) {
        send_refusal(stream, CloseCode::AuthFailed, deadline);
    }
    verdict
}

/// Sends `Accept`: the connection is registered on our side.
pub(crate) fn send_accept(stream: &Stream, deadline: Instant) -> Result<(), HandshakeError> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    frame::encode_header(&mut out, FrameKind::Accept, 0);
    write_all(stream, &out, deadline)
}

/// Sends a close frame to refuse the connection. Best effort: the refusal stands
/// whether or not the peer hears why.
pub(crate) fn send_refusal(stream: &Stream, code: CloseCode, deadline: Instant) {
    let mut out = Vec::with_capacity(HEADER_LEN + 1);
    frame::encode_close(&mut out, code);
    let _ = write_all(stream, &out, deadline);
}

/// What the side that does not arbitrate holds of the arbiter's connections: the
/// generation of the one it holds now and of the latest it ever opened (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Holds {
    pub(crate) current: u64,
    pub(crate) latest: u64,
}

/// Sends `Holds`.
pub(crate) fn send_holds(
    stream: &Stream,
    holds: Holds,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    let mut payload = [0u8; 16];
    payload[..8].copy_from_slice(&holds.current.to_be_bytes());
    payload[8..].copy_from_slice(&holds.latest.to_be_bytes());
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    frame::encode(&mut out, FrameKind::Holds, &payload);
    write_all(stream, &out, deadline)
}

/// Reads the other side's `Holds`, or its refusal.
pub(crate) fn read_holds(
    stream: &Stream,
    rb: &mut ReadBuf,
    peer: PeerId,
    deadline: Instant,
) -> Result<Holds, HandshakeError> {
    let header = read_frame(stream, rb, &[FrameKind::Holds, FrameKind::Close], deadline)?;
    let payload = &rb.data()[HEADER_LEN..header.frame_len()];
    let holds = match header.kind {
        FrameKind::Holds => {
            let word = |at: usize| {
                let bytes: [u8; 8] = payload[at..at + 8]
                    .try_into()
                    .expect("the decoder checked the length");
                u64::from_be_bytes(bytes)
            };
            Ok(Holds {
                current: word(0),
                latest: word(8),
            })
        }
        _ => Err(close_error(payload.first().copied(), peer)),
    };
    rb.consume(header.frame_len());
    holds
}

/// Sends the arbiter's `Verdict`: registered, as generation `generation`.
pub(crate) fn send_verdict(
    stream: &Stream,
    generation: u64,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    let mut out = Vec::with_capacity(HEADER_LEN + 8);
    frame::encode(&mut out, FrameKind::Verdict, &generation.to_be_bytes());
    write_all(stream, &out, deadline)
}

/// Reads the arbiter's `Verdict` (its generation), or its refusal.
pub(crate) fn read_verdict(
    stream: &Stream,
    rb: &mut ReadBuf,
    peer: PeerId,
    deadline: Instant,
) -> Result<u64, HandshakeError> {
    let header = read_frame(
        stream,
        rb,
        &[FrameKind::Verdict, FrameKind::Close],
        deadline,
    )?;
    let payload = &rb.data()[HEADER_LEN..header.frame_len()];
    let verdict = match header.kind {
        FrameKind::Verdict => {
            let bytes: [u8; 8] = payload.try_into().expect("the decoder checked the length");
            Ok(u64::from_be_bytes(bytes))
        }
        _ => Err(close_error(payload.first().copied(), peer)),
    };
    rb.consume(header.frame_len());
    verdict
}

/// Reads the peer's `Accept`, or its refusal.
pub(crate) fn read_accept(
    stream: &Stream,
    rb: &mut ReadBuf,
    peer: PeerId,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    let header = read_frame(stream, rb, &[FrameKind::Accept, FrameKind::Close], deadline)?;
    let code = rb.data()[HEADER_LEN..header.frame_len()].first().copied();
    rb.consume(header.frame_len());
    match header.kind {
        FrameKind::Accept => Ok(()),
        _ => Err(close_error(code, peer)),
    }
}

/// What a close frame received during the handshake means.
fn close_error(code: Option<u8>, peer: PeerId) -> HandshakeError {
    match code.map(CloseCode::from_u8) {
        Some(CloseCode::Duplicate) => HandshakeError::Duplicate(peer),
        Some(CloseCode::Shutdown) => HandshakeError::PeerShuttingDown,
        Some(CloseCode::AuthFailed) => HandshakeError::PeerRejectedAuth,
        _ => HandshakeError::PeerRefused,
    }
}

/// What a TLS handshake learnt of the peer's certificate.
#[cfg(feature = "tls")]
pub(crate) type Certified = crate::tls::session::Certified;

/// Without the `tls` feature there is never a certificate.
#[cfg(not(feature = "tls"))]
pub(crate) struct Certified {
    pub(crate) fingerprint: crate::id::Fingerprint,
}

/// Runs the TLS handshake on a TLS stream (a plaintext one has nothing to do).
pub(crate) fn secure(
    stream: &Stream,
    deadline: Instant,
) -> Result<Option<Certified>, HandshakeError> {
    #[cfg(feature = "tls")]
    if let Some(tls) = stream.tls() {
        return tls.handshake(stream.tcp(), deadline).map(Some);
    }
    let _ = (stream, deadline);
    Ok(None)
}

/// Refuses a TLS peer whose certificate does not name the id its hello announced.
pub(crate) fn check_identity(
    stream: &Stream,
    certified: Option<&Certified>,
    claimed: PeerId,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    #[cfg(feature = "tls")]
    if let Some(certified) = certified {
        let error = match certified.peer {
            Some(peer) if peer == claimed => return Ok(()),
            Some(certified) => TlsError::WrongIdentity { claimed, certified },
            None => TlsError::NoIdentity,
        };
        send_refusal(stream, CloseCode::AuthFailed, deadline);
        return Err(HandshakeError::Tls(error));
    }
    let _ = (stream, certified, claimed, deadline);
    Ok(())
}

/// Reads one whole frame of one of the `expected` kinds into `rb`, and returns its
/// header; the payload is at `rb.data()[HEADER_LEN..header.frame_len()]`.
///
/// A frame of another kind is refused from its header, before its payload is read.
fn read_frame(
    stream: &Stream,
    rb: &mut ReadBuf,
    expected: &[FrameKind],
    deadline: Instant,
) -> Result<Header, HandshakeError> {
    loop {
        if !stream.is_tls() && matches!(rb.data(), [0x15 | 0x16, 0x03, ..]) {
            // A TLS record (a client hello, or the alert a TLS node answers
            // plaintext with) where a frame should be.
            return Err(HandshakeError::TlsMismatch { ours: false });
        }
        // Only fixed-size control frames are expected here; any other kind is refused
        // from its header, so the data-frame limit passed to the decoder never
        // lets a payload be read.
        let want = match frame::decode_header(rb.data(), u32::MAX)? {
            Some(h) if !expected.contains(&h.kind) => {
                return Err(FrameError::Unexpected(h.kind).into())
            }
            Some(h) if rb.len() >= h.frame_len() => return Ok(h),
            Some(h) => h.frame_len(),
            None => HEADER_LEN,
        };
        let wait = until(deadline).ok_or(HandshakeError::Timeout)?;
        stream.set_read_timeout(Some(wait))?;
        match rb.fill(stream, want) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn write_all(mut stream: &Stream, bytes: &[u8], deadline: Instant) -> Result<(), HandshakeError> {
    let wait = until(deadline).ok_or(HandshakeError::Timeout)?;
    stream.set_write_timeout(Some(wait))?;
    stream.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(nonce().unwrap(), nonce().unwrap());
    }
}
