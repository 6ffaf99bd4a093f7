//! The frame reader: bytes from any `Read` in, whole frames out.
//!
//! One implementation for the connection's reader thread, the fuzz targets and the
//! property tests, so that what they check is what runs. It never blocks on its own:
//! [`FrameReader::next`] cuts frames out of what is buffered, and
//! [`FrameReader::read`] makes one read from the source, so the caller decides what
//! a timeout, an end of stream or a wait for room means.
//!
//! Frames up to a quarter of the read buffer are cut out of it in place (the
//! payload is a slice of the buffer's block). A larger frame is read into an
//! allocation of its own, of the length its header declared — after the header was
//! checked against the limit, and after the caller's `credit` has granted the bytes —
//! so the buffer never grows to the frame limit.

use std::io::{self, IoSliceMut, Read};
use std::sync::Arc;

use bytes::{Buf, Bytes};

use super::frame::{decode_header, FrameError, FrameKind, HEADER_LEN};
use super::pool::BufPool;
use super::readbuf::ReadBuf;
use crate::sync::Credit;

/// Why [`FrameReader::next`] could not go on.
#[derive(Debug)]
pub(crate) enum NextError<E> {
    /// The stream is not valid framing: nothing after this can be read.
    Frame(FrameError),
    /// The caller's credit refused a large frame's bytes.
    Refused(E),
}

/// Reads frames from a byte stream; see the module docs.
pub(crate) struct FrameReader {
    rb: ReadBuf,
    pool: Arc<BufPool>,
    max: u32,
    /// A large frame being read into its own allocation.
    large: Option<Large>,
}

struct Large {
    kind: FrameKind,
    len: usize,
    buf: Vec<u8>,
    filled: usize,
    credit: Option<Credit>,
}

impl FrameReader {
    /// A reader whose buffer grows to `block` bytes, refusing payloads over `max`.
    pub(crate) fn new(pool: Arc<BufPool>, block: usize, max: u32) -> FrameReader {
        FrameReader {
            rb: ReadBuf::new(pool.clone(), block),
            pool,
            max,
            large: None,
        }
    }

    /// The buffer, for the handshake, which reads its few fixed frames itself.
    pub(crate) fn buffer(&mut self) -> &mut ReadBuf {
        &mut self.rb
    }

    /// The next whole frame, if one is buffered. `Ok(None)`: read more.
    ///
    /// On the header of a large frame whose payload is not all buffered yet,
    /// `credit` is called with its kind and the bytes its allocation will take, before anything
    /// is allocated; it may grant them (returning what holds them until the payload
    /// is dropped, or `None` if nothing needs to), or refuse.
    ///
    /// # Errors
    ///
    /// A bad header ends the stream; a refusal from `credit` is handed back.
    pub(crate) fn next<E>(
        &mut self,
        credit: impl FnOnce(FrameKind, usize) -> Result<Option<Credit>, E>,
    ) -> Result<Option<(FrameKind, Bytes)>, NextError<E>> {
        if let Some(large) = &self.large {
            if large.filled < large.len {
                return Ok(None);
            }
            let large = self.large.take().expect("checked just above");
            let payload = self.pool.freeze_with(large.buf, large.len, large.credit);
            return Ok(Some((large.kind, payload)));
        }
        let header = match decode_header(self.rb.data(), self.max) {
            Ok(Some(header)) => header,
            Ok(None) => return Ok(None),
            Err(e) => return Err(NextError::Frame(e)),
        };
        if self.rb.len() >= header.frame_len() {
            let mut payload = self.rb.take(header.frame_len());
            payload.advance(HEADER_LEN);
            return Ok(Some((header.kind, payload)));
        }
        if header.frame_len() <= self.rb.max() / 4 {
            return Ok(None);
        }
        // A large frame: the rest of it goes straight into its own allocation.
        let len = header.len as usize;
        let credit = credit(header.kind, self.pool.size_for(len)).map_err(NextError::Refused)?;
        let mut buf = self.pool.get(len);
        self.rb.consume(HEADER_LEN);
        let filled = self.rb.len();
        buf[..filled].copy_from_slice(self.rb.data());
        self.rb.consume(filled);
        // From now on the buffer reads little more than the next header, so that a
        // stream of large frames is read with one system call per frame and no copy.
        self.rb.expect_large();
        self.large = Some(Large {
            kind: header.kind,
            len,
            buf,
            filled,
            credit,
        });
        Ok(None)
    }

    /// Makes one read from `src`: into a large frame's payload and, in the same
    /// vectored read, the buffer for what follows it; or into the buffer, asking
    /// for at least the rest of the frame it holds the start of. Returns the bytes
    /// read; 0 is the end of the stream.
    ///
    /// # Errors
    ///
    /// The source's error, as it gave it (a timeout included); the reader's state
    /// is unchanged, so the caller may read again.
    pub(crate) fn read(&mut self, mut src: impl Read) -> io::Result<usize> {
        if let Some(large) = &mut self.large {
            let rest = &mut large.buf[large.filled..large.len];
            let want = rest.len();
            let mut slices = [IoSliceMut::new(rest), IoSliceMut::new(self.rb.spare())];
            let n = src.read_vectored(&mut slices)?;
            let into_payload = n.min(want);
            large.filled += into_payload;
            self.rb.commit(n - into_payload);
            return Ok(n);
        }
        let want = match decode_header(self.rb.data(), self.max) {
            Ok(Some(header)) => header.frame_len(),
            _ => HEADER_LEN,
        };
        self.rb.fill(src, want)
    }

    /// Takes the whole frames still buffered, for a caller that will not deliver
    /// them; stops at a bad header or a partial frame.
    pub(crate) fn leftovers(&mut self) -> impl Iterator<Item = FrameKind> + '_ {
        std::iter::from_fn(move || match self.next(|_, _| Err(())) {
            Ok(Some((kind, _))) => Some(kind),
            _ => None,
        })
    }

    /// Whether part of a frame has been read: an end of stream now cuts a frame.
    pub(crate) fn in_frame(&self) -> bool {
        self.large.is_some() || !self.rb.is_empty()
    }

    /// The kind of the large frame being read, if one is.
    pub(crate) fn reading_large(&self) -> Option<FrameKind> {
        self.large.as_ref().map(|large| large.kind)
    }

    /// Hands an idle read block back to the pool.
    pub(crate) fn release(&mut self) {
        if self.large.is_none() {
            self.rb.release();
        }
    }
}
