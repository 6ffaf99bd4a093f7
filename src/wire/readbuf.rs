//! The reader's buffer: bytes read from the socket, out of which frames are cut
//! without copying.
//!
//! Reads land in a block taken from the node's [`BufPool`]. The first time a frame
//! is cut out of a block, the block is frozen into shared [`Bytes`], and every
//! payload handed to the application is a slice of it; when the application drops
//! the last of them, the block goes back to the pool. The few bytes of a frame that
//! was still incomplete move to the next block.
//!
//! Two costs are avoided this way. One allocation per message, freed on the
//! application's thread, makes the system allocator shuffle memory between threads
//! and trim and re-fault it, which at 1 KiB payloads halves throughput. And the crate
//! forbids `unsafe`, so memory must be initialised before a read may fill it: pooled
//! blocks already are, so nothing is zeroed twice.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;

use crate::wire::frame::HEADER_LEN;
use crate::wire::pool::BufPool;

/// Smallest read window, and the size of the first block: idle connections stay
/// cheap, and a burst grows the window quickly.
const MIN_WINDOW: usize = 4096;

/// Bytes read from a socket and not yet consumed.
pub(crate) struct ReadBuf {
    pool: Arc<BufPool>,
    /// The block being filled; `None` when frozen or not yet needed.
    block: Option<Vec<u8>>,
    /// The current block once a frame has been cut from it.
    frozen: Option<Bytes>,
    /// Unread bytes are `[start..end]` of the current block (frozen or not).
    start: usize,
    end: usize,
    /// The largest block this buffer uses; frames up to a quarter of it are cut out
    /// of blocks, larger ones are read into allocations of their own.
    max_block: usize,
    /// How much one read asks for. Doubles when a read fills it, halves when reads
    /// come back small, so bulk streams make few system calls and a stream of large
    /// frames pulls little more than each header into the buffer.
    window: usize,
}

impl ReadBuf {
    pub(crate) fn new(pool: Arc<BufPool>, max_block: usize) -> ReadBuf {
        ReadBuf {
            pool,
            block: None,
            frozen: None,
            start: 0,
            end: 0,
            max_block: max_block.max(MIN_WINDOW),
            window: MIN_WINDOW.min(max_block),
        }
    }

    /// The bytes read and not yet consumed.
    pub(crate) fn data(&self) -> &[u8] {
        match (&self.block, &self.frozen) {
            (Some(block), _) => &block[self.start..self.end],
            (None, Some(frozen)) => &frozen[self.start..self.end],
            (None, None) => &[],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The largest frame cut out of the buffer; larger frames are read apart.
    pub(crate) fn max(&self) -> usize {
        self.max_block
    }

    /// Drops the first `n` bytes.
    pub(crate) fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consumed more than was read");
        self.start += n;
    }

    /// Takes the first `n` bytes out as shared, read-only bytes, without copying.
    pub(crate) fn take(&mut self, n: usize) -> Bytes {
        assert!(n <= self.len(), "took more than was read");
        if let Some(block) = self.block.take() {
            self.frozen = Some(self.pool.freeze(block, self.end));
        }
        let frozen = self
            .frozen
            .as_ref()
            .expect("a block holds the unread bytes");
        let taken = frozen.slice(self.start..self.start + n);
        self.start += n;
        taken
    }

    /// Asks following reads for no more than a frame header: the next frame is
    /// likely large too, and its payload is better read straight into its own
    /// allocation than into the buffer and copied.
    pub(crate) fn expect_large(&mut self) {
        self.window = HEADER_LEN;
    }

    /// Gives the block back to the pool if nothing is buffered, so that an idle
    /// connection holds no read memory.
    pub(crate) fn release(&mut self) {
        if self.is_empty() {
            self.block = None;
            self.frozen = None;
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room for the next read, at most one window, for a vectored read that fills
    /// the rest of a large payload and then this; [`ReadBuf::commit`] the bytes read.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        let window = self
            .window
            .min(self.max_block.saturating_sub(self.len()))
            .max(1);
        self.writable(self.len() + window);
        // Read after `writable`, which may have moved the unread bytes.
        let end = self.end;
        let block = self.block.as_mut().expect("writable makes a block");
        let limit = block.len().min(end + window);
        &mut block[end..limit]
    }

    /// Records `n` bytes read into [`ReadBuf::spare`].
    pub(crate) fn commit(&mut self, n: usize) {
        let room = self.block.as_ref().map_or(0, Vec::len);
        assert!(self.end + n <= room, "committed more than the spare room");
        self.end += n;
    }

    /// Reads once from `source`, first making room for at least `want` buffered bytes
    /// in all (capped at the block limit). Returns what `read` returned.
    pub(crate) fn fill(&mut self, mut source: impl Read, want: usize) -> io::Result<usize> {
        let unread = self.len();
        let want = want.max(unread + 1).min(self.max_block.max(unread + 1));
        let asked_for = self
            .window
            .min(self.max_block.saturating_sub(unread))
            .max(want - unread);
        self.writable(unread + asked_for);
        let (start, end) = (self.start, self.end);
        let block = self.block.as_mut().expect("writable makes a block");
        let limit = block.len().min(end + asked_for);
        let asked = limit - end;
        let n = source.read(&mut block[end..limit])?;
        self.end += n;
        debug_assert!(start <= self.end);
        if n == asked {
            self.window = (self.window * 2).clamp(MIN_WINDOW, self.max_block);
        } else if n < self.window / 8 {
            self.window = (self.window / 2).max(MIN_WINDOW).min(self.max_block);
        }
        Ok(n)
    }

    /// Makes the current block writable with room for `want` unread bytes in all:
    /// a frozen block is left to its messages and the unread tail moves to a fresh
    /// block, as does a block too small or too full. Returns the block.
    fn writable(&mut self, want: usize) -> &mut Vec<u8> {
        let unread = self.len();
        let fits = self.block.as_ref().is_some_and(|b| {
            b.len() - self.end >= want.saturating_sub(unread).max(1) && b.len() >= want
        });
        if !fits {
            // One window: a block is usually frozen after one read, and what a
            // frozen block has left over stays pinned with its messages.
            let size = want
                .max(self.window)
                .next_power_of_two()
                .clamp(MIN_WINDOW, self.max_block)
                .max(want);
            let mut fresh = self.pool.get(size);
            fresh[..unread].copy_from_slice(self.data());
            self.block = Some(fresh);
            self.frozen = None;
            self.start = 0;
            self.end = unread;
        }
        self.block.as_mut().expect("made above")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{self, FrameKind};
    use bytes::Buf;

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

    fn buf(max: usize) -> ReadBuf {
        ReadBuf::new(Arc::new(BufPool::default()), max)
    }

    #[test]
    fn frames_come_out_whole_whatever_the_read_sizes() {
        let mut wire = Vec::new();
        for i in 0..100u32 {
            frame::encode(
                &mut wire,
                FrameKind::Private,
                &vec![i as u8; (i * 97 % 2000) as usize],
            );
        }
        for chunk in [1, 7, 1000, 1 << 16] {
            let mut source = Chunks { data: &wire, chunk };
            let mut rb = buf(8192);
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
                assert_eq!(payload.len(), i * 97 % 2000);
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
        let mut rb = buf(8192);
        assert!(
            rb.block.is_none(),
            "nothing allocated before the first read"
        );
        let first = rb.fill(&mut source, 6).unwrap();
        assert!(first <= MIN_WINDOW);
        for _ in 0..10 {
            let n = rb.fill(&mut source, 50_000).unwrap();
            assert!(n > 0);
            assert!(
                rb.block.as_ref().unwrap().len() <= 8192,
                "{}",
                rb.block.as_ref().unwrap().len()
            );
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
        let mut rb = buf(64 * 1024);
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
    fn blocks_return_to_the_pool_once_their_messages_are_gone() {
        let data = vec![1u8; 1 << 20];
        let mut source = Chunks {
            data: &data,
            chunk: usize::MAX,
        };
        let mut rb = buf(8192);
        let mut blocks = std::collections::HashSet::new();
        for _ in 0..64 {
            rb.fill(&mut source, 8192).unwrap();
            let message = rb.take(rb.len());
            blocks.insert(message.as_ptr() as usize);
            drop(message);
        }
        assert!(blocks.len() <= 3, "{} blocks for 64 reads", blocks.len());
    }

    #[test]
    fn spare_room_follows_a_move_to_a_fresh_block() {
        let data = vec![9u8; 64];
        let mut source = Chunks {
            data: &data,
            chunk: usize::MAX,
        };
        let mut rb = buf(8192);
        rb.fill(&mut source, 64).unwrap();
        let taken = rb.take(10);
        rb.expect_large();
        // The block is frozen: the spare room is in a fresh block, after the 54
        // unread bytes that moved there.
        let spare = rb.spare();
        assert_eq!(spare.len(), HEADER_LEN);
        spare.copy_from_slice(b"abcdef");
        rb.commit(HEADER_LEN);
        assert_eq!(rb.len(), 60);
        assert_eq!(&rb.data()[54..], b"abcdef");
        assert_eq!(&taken[..], &[9u8; 10]);
    }

    #[test]
    fn an_idle_buffer_holds_no_block() {
        let mut rb = buf(8192);
        let mut source = Chunks {
            data: &[1, 2, 3],
            chunk: usize::MAX,
        };
        rb.fill(&mut source, 3).unwrap();
        rb.release();
        assert!(rb.block.is_some(), "unread bytes keep it");
        rb.consume(3);
        rb.release();
        assert!(rb.block.is_none() && rb.frozen.is_none());
    }
}
