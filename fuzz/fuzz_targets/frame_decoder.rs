//! Bytes from a peer through the frame decoder and the reader's buffer.
//!
//! Input layout: the first byte `n` (mod 9) says how many read sizes follow; the next
//! `n` bytes are the sizes of successive reads (cycled; 0 reads 1 byte, `n == 0`
//! reads 255 bytes at a time), and the rest is the byte stream a peer sent.
//!
//! Nothing may panic, and whatever comes out must be exactly a prefix of the stream,
//! re-encoded.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wirelane::__bench::{decode_header, encode, HEADER_LEN};
use wirelane::__fuzz::read_frames;

/// `(max_payload, block)`: a tight limit, a limit above the block's in-buffer size
/// (so frames over `block / 4` take the large-frame path), and the defaults
/// (`Config::max_frame_len` 16 MiB, `Config::read_buffer` 64 KiB).
const LIMITS: [(u32, usize); 3] = [(64, 4096), (70_000, 4096), (16 << 20, 64 << 10)];

fuzz_target!(|data: &[u8]| {
    let (chunks, stream) = match data.split_first() {
        Some((&n, rest)) => rest.split_at((usize::from(n) % 9).min(rest.len())),
        None => (&[][..], data),
    };

    for (max_payload, block) in LIMITS {
        // The header decoder on every prefix: "need more" below a header, and above
        // it the same answer whatever follows, as it depends on six bytes only.
        let full_header = decode_header(&stream[..stream.len().min(HEADER_LEN)], max_payload);
        for end in 0..=stream.len() {
            let got = decode_header(&stream[..end], max_payload);
            if end < HEADER_LEN {
                assert_eq!(got, Ok(None), "a header from {end} bytes");
            } else {
                assert_eq!(got, full_header, "the header changed with {end} bytes");
            }
        }

        let frames = read_frames(stream, chunks, max_payload, block);

        // No more bytes out than came in...
        let payload_bytes: usize = frames.iter().map(|(_, payload)| payload.len()).sum();
        assert!(payload_bytes <= stream.len());
        // ...and exactly the frames the stream starts with, each within the limit.
        let mut reencoded = Vec::with_capacity(payload_bytes + frames.len() * HEADER_LEN);
        for (kind, payload) in &frames {
            let start = reencoded.len();
            encode(&mut reencoded, *kind, payload);
            assert!(
                matches!(decode_header(&reencoded[start..], max_payload), Ok(Some(_))),
                "a {kind} frame of {} bytes came out past the limit of {max_payload}",
                payload.len()
            );
        }
        assert!(reencoded.len() <= stream.len());
        assert!(
            stream.starts_with(&reencoded),
            "the frames read are not the start of the stream"
        );
    }
});
