//! What the `internals` feature exposes, for the crate's own fuzz targets, property
//! tests, criterion benches and bench binary: never part of the API.

/// Internals exposed, with the `internals` feature, for the crate's own benchmarks
/// and bench binary. Not part of the API: hidden from the documentation and free to
/// change in any release.
pub mod __bench {
    pub use crate::wire::batch::{Batch, Written};
    pub use crate::wire::frame::{decode_header, encode, encode_header, FrameKind, HEADER_LEN};

    /// A whole Hello frame from peer `id`, as a node would send it (no capability
    /// flags, a fixed nonce): for clients that complete the handshake by hand, such
    /// as the bench's idle connections.
    pub fn hello_frame(id: crate::PeerId, incarnation: u64, max_frame_len: u32) -> Vec<u8> {
        let hello = crate::wire::hello::Hello {
            peer: id,
            incarnation,
            max_frame_len,
            authenticates: false,
            probe: false,
            nonce: [0x5C; 32],
        };
        let mut frame = Vec::new();
        encode(
            &mut frame,
            FrameKind::Hello,
            &crate::wire::hello::encode_hello(&hello),
        );
        frame
    }
}

/// Entry points for the fuzz targets in `fuzz/` and the property tests: the decoders
/// that bytes from a peer reach, driven without a socket. Not part of the API: hidden
/// from the documentation and free to change in any release.
pub mod __fuzz {
    use std::io::Read;
    use std::sync::Arc;

    use crate::wire::frame::FrameKind;
    use crate::wire::pool::BufPool;
    use crate::wire::reader::FrameReader;

    /// Decodes a hello payload; refuses or accepts, never panics.
    pub fn hello(payload: &[u8]) -> bool {
        crate::wire::hello::decode_hello(payload).is_ok()
    }

    /// Feeds `stream` to the frame reader the reader thread runs, `chunks` deciding
    /// how many bytes each read returns (large frames included). Returns each
    /// frame's kind and payload, up to the first bad header.
    pub fn read_frames(
        stream: &[u8],
        chunks: &[u8],
        max_payload: u32,
        block: usize,
    ) -> Vec<(FrameKind, Vec<u8>)> {
        struct Chunked<'a> {
            data: &'a [u8],
            sizes: std::iter::Cycle<std::slice::Iter<'a, u8>>,
        }
        impl Read for Chunked<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let size = usize::from(*self.sizes.next().unwrap_or(&255)).max(1);
                let n = size.min(out.len()).min(self.data.len());
                out[..n].copy_from_slice(&self.data[..n]);
                self.data = &self.data[n..];
                Ok(n)
            }
        }
        let sizes: &[u8] = if chunks.is_empty() { &[255] } else { chunks };
        let mut source = Chunked {
            data: stream,
            sizes: sizes.iter().cycle(),
        };
        let pool = Arc::new(BufPool::default());
        let mut reader = FrameReader::new(pool, block.max(4096), max_payload);
        let mut frames = Vec::new();
        loop {
            loop {
                match reader.next(|_, _| Ok::<_, ()>(None)) {
                    Ok(Some((kind, payload))) => frames.push((kind, payload.to_vec())),
                    Ok(None) => break,
                    Err(_) => return frames,
                }
            }
            match reader.read(&mut source) {
                Ok(0) | Err(_) => return frames,
                Ok(_) => {}
            }
        }
    }
}
