//! The reader's buffer: bytes read from the socket, out of which frames are cut
//! without copying.
//!
//! Reads land in a block of memory; each complete frame's payload is handed to the
//! application as a [`Bytes`] slice of that block, and the block is freed when the
//! last of its messages is dropped. One allocation per block instead of one per
//! message matters more than it looks: a reader that allocates every payload and an
//! application thread that frees it make the system allocator shuffle memory between
//! threads, and at 1 KiB payloads that alone halves throughput.
//!
//! The crate forbids `unsafe`, so memory must be initialised before a read may fill
//! it. A block is zeroed when it is put in service, and its unused tail stays part of
//! the buffer (already initialised) until reads fill it. Blocks whose messages have
//! all been dropped are taken back into service instead of going to the allocator,
//! which would otherwise trim and re-fault their pages.

use std::collections::VecDeque;
use std::io::{self, Read};

use bytes::{Buf, Bytes, BytesMut};

use crate::frame::HEADER_LEN;

/// Smallest read window, and the size of the first block: idle connections stay
/// cheap, and a burst grows the window quickly.
const MIN_WINDOW: usize = 4096;

/// Blocks kept for reuse while messages cut from them are still alive.
const RETIRED: usize = 4;

/// Bytes read from a socket and not yet consumed.
pub(crate) struct ReadBuf {
    /// `[..end]` holds unread bytes; `[end..]` is zeroed room for the next reads.
    buf: BytesMut,
    end: usize,
    /// The largest block this buffer allocates; frames up to this size are cut out
    /// of blocks, larger ones are read into allocations of their own.
    max_block: usize,
    /// How much one read asks for. Doubles when a read fills it, halves when reads
    /// come back small, so bulk streams make few system calls and a stream of large
    /// frames pulls little more than each header into the buffer.
    window: usize,
    /// Blocks replaced while messages still referred to them, oldest first.
    retired: VecDeque<Bytes>,
}

impl ReadBuf {
    pub(crate) fn new(max_block: usize) -> ReadBuf {
        ReadBuf {
            buf: BytesMut::new(),
            end: 0,
            max_block: max_block.max(MIN_WINDOW),
            window: MIN_WINDOW.min(max_block),
            retired: VecDeque::new(),
        }
    }

    /// The bytes read and not yet consumed.
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[..self.end]
    }

    pub(crate) fn len(&self) -> usize {
        self.end
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// The largest frame cut out of the buffer; larger frames are read apart.
    pub(crate) fn max(&self) -> usize {
        self.max_block
    }

    /// Drops the first `n` bytes.
    pub(crate) fn consume(&mut self, n: usize) {
        assert!(n <= self.end, "consumed more than was read");
        self.buf.advance(n);
        self.end -= n;
    }

    /// Takes the first `n` bytes out as shared, read-only bytes, without copying.
    pub(crate) fn take(&mut self, n: usize) -> Bytes {
        assert!(n <= self.end, "took more than was read");
        self.end -= n;
        self.buf.split_to(n).freeze()
    }

    /// Asks following reads for no more than a frame header: the next frame is
    /// likely large too, and its payload is better read straight into its own
    /// allocation than into the buffer and copied.
    pub(crate) fn expect_large(&mut self) {
        self.window = HEADER_LEN;
    }

    /// Room for the next read, at most one window, for a vectored read that fills
    /// the rest of a large payload and then this; [`ReadBuf::commit`] the bytes read.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.buf.len() - self.end < self.window {
            self.renew(self.end + self.window);
        }
        let limit = self.end + self.window;
        &mut self.buf[self.end..limit]
    }

    /// Records `n` bytes read into [`ReadBuf::spare`].
    pub(crate) fn commit(&mut self, n: usize) {
        assert!(
            self.end + n <= self.buf.len(),
            "committed more than the spare room"
        );
        self.end += n;
    }

    /// Reads once from `source`, first making room for at least `want` buffered bytes
    /// in all (capped at the block limit). Returns what `read` returned.
    pub(crate) fn fill(&mut self, mut source: impl Read, want: usize) -> io::Result<usize> {
        let want = want.max(self.end + 1).min(self.max_block.max(self.end + 1));
        let room = self.buf.len() - self.end;
        if self.buf.len() < want || room < self.window.min(MIN_WINDOW) {
            self.renew(want);
        }
        let limit = self
            .buf
            .len()
            .min(self.end + self.window.max(want - self.end));
        let asked = limit - self.end;
        let n = source.read(&mut self.buf[self.end..limit])?;
        self.end += n;
        if n == asked {
            self.window = (self.window * 2).clamp(MIN_WINDOW, self.max_block);
        } else if n < self.window / 8 {
            self.window = (self.window / 2).max(MIN_WINDOW).min(self.max_block);
        }
        Ok(n)
    }

    /// Moves the unread bytes into a zeroed block with room for `want` bytes and a
    /// full window. The old block lives on for as long as messages cut from it, and
    /// is retired here so that it can serve again once they are gone.
    fn renew(&mut self, want: usize) {
        let size = want
            .max(self.end + self.window * 2)
            .next_power_of_two()
            .min(self.max_block)
            .max(want);
        let mut block = self
            .reuse(size)
            .unwrap_or_else(|| BytesMut::with_capacity(size));
        block.extend_from_slice(&self.buf[..self.end]);
        block.resize(size, 0);
        let mut old = std::mem::replace(&mut self.buf, block);
        if old.capacity() > 0 {
            old.clear();
            if self.retired.len() == RETIRED {
                self.retired.pop_front();
            }
            self.retired.push_back(old.freeze());
        }
    }

    /// The oldest retired block, if every message cut from it has been dropped and it
    /// can hold `size` bytes.
    fn reuse(&mut self, size: usize) -> Option<BytesMut> {
        let oldest = self.retired.pop_front()?;
        match oldest.try_into_mut() {
            Ok(mut block) => block.try_reclaim(size).then_some(block),
            Err(still_shared) => {
                self.retired.push_front(still_shared);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{self, FrameKind};

    /// A source that hands out its bytes in fixed-size reads.
    struct Chunks<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl Read for Chunks<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.chunk.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn frames_come_out_whole_whatever_the_read_sizes() {
        let mut wire = Vec::new();
        for i in 0..100u32 {
            frame::encode(
                &mut wire,
                FrameKind::Private,
                &vec![i as u8; (i * 97 % 3000) as usize],
            );
        }
        for chunk in [1, 7, 1000, 1 << 16] {
            let mut source = Chunks { data: &wire, chunk };
            let mut rb = ReadBuf::new(8192);
            let mut got: Vec<Bytes> = Vec::new();
            loop {
                while let Ok(Some(h)) = frame::decode_header(rb.data(), 1 << 20) {
                    if rb.len() < h.frame_len() {
                        break;
                    }
                    let mut whole = rb.take(h.frame_len());
                    whole.advance(HEADER_LEN);
                    got.push(whole);
                }
                let want = match frame::decode_header(rb.data(), 1 << 20) {
                    Ok(Some(h)) => h.frame_len(),
                    _ => HEADER_LEN,
                };
                if rb.fill(&mut source, want).unwrap() == 0 {
                    break;
                }
            }
            assert_eq!(got.len(), 100, "chunk {chunk}");
            // Payloads stay valid after the buffer has moved on to other blocks.
            for (i, payload) in got.iter().enumerate() {
                assert_eq!(payload.len(), i * 97 % 3000);
                assert!(payload.iter().all(|&b| b == i as u8));
            }
            assert!(rb.is_empty());
        }
    }

    #[test]
    fn never_grows_past_its_limit_and_starts_small() {
        let data = vec![1u8; 100_000];
        let mut source = Chunks {
            data: &data,
            chunk: usize::MAX,
        };
        let mut rb = ReadBuf::new(8192);
        assert_eq!(rb.buf.len(), 0, "nothing allocated before the first read");
        let first = rb.fill(&mut source, 6).unwrap();
        assert!(first <= MIN_WINDOW);
        for _ in 0..10 {
            let n = rb.fill(&mut source, 50_000).unwrap();
            assert!(n > 0);
            assert!(rb.buf.len() <= 8192);
            rb.consume(rb.len());
        }
    }

    #[test]
    fn expecting_a_large_frame_shrinks_the_next_read() {
        let data = vec![1u8; 1 << 20];
        let mut source = Chunks {
            data: &data,
            chunk: usize::MAX,
        };
        let mut rb = ReadBuf::new(64 * 1024);
        for _ in 0..8 {
            rb.fill(&mut source, 1).unwrap();
            rb.consume(rb.len());
        }
        assert_eq!(
            rb.fill(&mut source, 1).unwrap(),
            64 * 1024,
            "the window grew"
        );
        rb.consume(rb.len());
        rb.expect_large();
        assert_eq!(rb.fill(&mut source, 1).unwrap(), HEADER_LEN);
        rb.consume(rb.len());
        assert_eq!(
            rb.fill(&mut source, 1).unwrap(),
            MIN_WINDOW,
            "and grows back at once"
        );
    }

    #[test]
    fn blocks_are_reused_once_their_messages_are_gone() {
        let data = vec![1u8; 1 << 20];
        let mut source = Chunks {
            data: &data,
            chunk: usize::MAX,
        };
        let mut rb = ReadBuf::new(8192);
        let mut blocks = std::collections::HashSet::new();
        for _ in 0..64 {
            rb.fill(&mut source, 8192).unwrap();
            blocks.insert(rb.buf.as_ptr() as usize & !8191);
            let message = rb.take(rb.len());
            drop(message);
        }
        assert!(
            blocks.len() <= RETIRED + 2,
            "{} blocks for 64 reads",
            blocks.len()
        );
    }
}
