//! The one piece of wirelane's wire format the bench writes by hand: the Hello an
//! idle client of `scale` opens its handshake with.
//!
//! Why by hand: `scale` measures what idle connections cost a node, and a real
//! client node would add two threads per connection to the measured process (or, in
//! a child process, thousands of threads to a 2-core machine), drowning the figure.
//! A raw socket costs a file descriptor and nothing else. The frame around it, and
//! the check of the hub's Hello, come from the library (`wirelane::__bench`,
//! `wirelane::__fuzz`); only the Hello payload, which the library does not export,
//! is spelled out here, as `docs/wire-format.md` lays it out.

use wirelane::__bench::{encode, FrameKind};
use wirelane::PeerId;

/// The protocol's magic and version.
const MAGIC: &[u8; 4] = b"WRLN";
const VERSION: u16 = 1;

/// A whole Hello frame from peer `id`: magic, version, no capability flags, peer
/// id, incarnation, frame limit, nonce. All big-endian.
pub fn frame(id: PeerId, max_frame_len: u32) -> Vec<u8> {
    let mut payload = Vec::with_capacity(60);
    payload.extend_from_slice(MAGIC);
    payload.extend_from_slice(&VERSION.to_be_bytes());
    payload.extend_from_slice(&0u16.to_be_bytes());
    payload.extend_from_slice(&id.0.to_be_bytes());
    // Any incarnation will do: each idle client is a distinct peer and never returns.
    payload.extend_from_slice(&(id.0 ^ 0x5CA1_E000_0000_0000).to_be_bytes());
    payload.extend_from_slice(&max_frame_len.to_be_bytes());
    // The nonce only matters with authentication, which the hub does not use here.
    payload.extend_from_slice(&[0x5C; 32]);
    let mut frame = Vec::with_capacity(payload.len() + 6);
    encode(&mut frame, FrameKind::Hello, &payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use wirelane::__bench::{decode_header, HEADER_LEN};

    #[test]
    fn the_library_reads_this_hello() {
        let frame = frame(PeerId(0x0102), 1 << 20);
        let header = decode_header(&frame, 1 << 20)
            .expect("a valid header")
            .expect("a whole header");
        assert_eq!(
            (header.kind, header.frame_len()),
            (FrameKind::Hello, frame.len())
        );
        assert!(wirelane::__fuzz::hello(&frame[HEADER_LEN..]));
    }
}
