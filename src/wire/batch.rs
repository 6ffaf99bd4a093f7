//! The writer's batch: every frame that is ready, written with as few system calls
//! as possible.
//!
//! Headers and small payloads are copied into one buffer; payloads above
//! [`INLINE_MAX`] are not copied at all but written straight from the application's
//! buffer with a vectored write. Payloads stay in the batch until the write
//! succeeds, so a failed write can tell exactly which private messages never
//! reached the socket and hand them back.

use std::io::{self, IoSlice, Write};

use bytes::Bytes;

use super::frame::{self, FrameKind};
use crate::event::Lane;

/// Payloads up to this size are copied into the batch buffer; larger ones are written
/// from where they are. Copying a small payload costs less than the kernel's work for
/// one more `iovec`; from about 1 KiB, not copying wins (`throughput --size 1024`:
/// median 1.88 M msgs/s with this at 512, 1.63 M at 2048).
pub(crate) const INLINE_MAX: usize = 512;

/// Most `iovec`s in one vectored write (Linux accepts 1024).
const MAX_SLICES: usize = 512;

/// Slices that cover most batches: copied frames merge into one piece, so a batch
/// has two pieces for each referenced payload and about one more.
const FEW_SLICES: usize = 16;

/// How many times `max_batch_bytes` a batch may reference without copying: such
/// bytes cost no copy, and fewer, larger writes cost fewer system calls.
const REFERENCED_FACTOR: usize = 16;

/// One piece of the batch's byte stream.
#[derive(Debug, Clone, Copy)]
enum Piece {
    /// `buf[start..end]`.
    Copied { start: usize, end: usize },
    /// The payload of `frames[index]`.
    Referenced { index: usize },
    /// What is left of the payload of a frame another thread began to write.
    Rest,
}

/// Frames gathered for one write.
#[derive(Default)]
pub struct Batch {
    buf: Vec<u8>,
    pieces: Vec<Piece>,
    /// For each data frame: where it ends in the batch's stream, its kind, its
    /// payload (the body, for a request or a reply).
    frames: Vec<(usize, FrameKind, Bytes)>,
    /// Bytes in the batch's stream.
    total: usize,
    /// The unwritten end of a payload another thread began to write (see
    /// [`Batch::push_rest`]), when it is too large to copy.
    rest: Bytes,
    /// Whether the batch begins with such a rest.
    mid_frame: bool,
}

impl Batch {
    /// Whether the batch begins with the rest of a frame another thread began to
    /// write ([`Batch::push_rest`]): the stream is in the middle of a frame until
    /// it is written.
    pub(crate) fn begins_mid_frame(&self) -> bool {
        self.mid_frame
    }

    /// Whether nothing is gathered.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// How many data frames the batch holds.
    pub fn frames(&self) -> usize {
        self.frames.len()
    }

    /// How many of the data frames held are private, and how many gossip.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let private = self
            .frames
            .iter()
            .filter(|f| f.1 == FrameKind::Private)
            .count();
        let gossip = self
            .frames
            .iter()
            .filter(|f| f.1 == FrameKind::Gossip)
            .count();
        (private, gossip)
    }

    /// Whether the batch should take no more frames.
    pub(crate) fn is_full(&self, max: usize) -> bool {
        self.buf.len() >= max
            || self.total >= max.saturating_mul(REFERENCED_FACTOR)
            // Room for one more data frame (two pieces) and a control frame.
            || self.pieces.len() >= MAX_SLICES - 3
    }

    /// Adds a gossip or private data frame.
    pub fn push(&mut self, lane: Lane, payload: Bytes) {
        let kind = match lane {
            Lane::Gossip => FrameKind::Gossip,
            Lane::Private | Lane::Request => FrameKind::Private,
        };
        self.push_frame(kind, &[], payload);
    }

    /// Adds a request frame: its id, then its body.
    pub(crate) fn push_request(&mut self, id: u64, body: Bytes) {
        self.push_frame(FrameKind::Request, &id.to_be_bytes(), body);
    }

    /// Adds a reply frame: the request's id, the status, then the body.
    pub(crate) fn push_reply(&mut self, id: u64, status: u8, body: Bytes) {
        let mut prefix = [0u8; frame::REPLY_PREFIX];
        prefix[..8].copy_from_slice(&id.to_be_bytes());
        prefix[8] = status;
        self.push_frame(FrameKind::Reply, &prefix, body);
    }

    /// Adds a data frame of `kind`: `prefix` (copied) and `payload`.
    fn push_frame(&mut self, kind: FrameKind, prefix: &[u8], payload: Bytes) {
        let len = u32::try_from(prefix.len() + payload.len())
            .expect("payload length checked against the frame limit");
        let start = self.buf.len();
        frame::encode_header(&mut self.buf, kind, len);
        self.buf.extend_from_slice(prefix);
        if payload.len() <= INLINE_MAX {
            self.buf.extend_from_slice(&payload);
            self.copied(start);
        } else {
            self.copied(start);
            self.pieces.push(Piece::Referenced {
                index: self.frames.len(),
            });
            self.total += payload.len();
        }
        self.frames.push((self.total, kind, payload));
    }

    /// Adds the end of a data frame whose first bytes another thread has written:
    /// `head` is what is left of its header and prefix, `body` what is left of its
    /// payload, `payload` the whole payload (what comes back if the frame never
    /// reaches the socket). It must be the batch's first frame: the bytes before it
    /// are already on the wire.
    pub(crate) fn push_rest(&mut self, kind: FrameKind, head: &[u8], body: Bytes, payload: Bytes) {
        debug_assert!(self.is_empty(), "the rest of a frame goes first");
        self.mid_frame = true;
        let start = self.buf.len();
        self.buf.extend_from_slice(head);
        if body.len() <= INLINE_MAX {
            self.buf.extend_from_slice(&body);
            self.copied(start);
        } else {
            if !head.is_empty() {
                self.copied(start);
            }
            self.pieces.push(Piece::Rest);
            self.total += body.len();
            self.rest = body;
        }
        self.frames.push((self.total, kind, payload));
    }

    /// Adds a control frame (no payload).
    pub fn control(&mut self, kind: FrameKind) {
        let start = self.buf.len();
        frame::encode_header(&mut self.buf, kind, 0);
        self.copied(start);
    }

    /// Adds a control frame with a payload, copied.
    pub(crate) fn control_with(&mut self, kind: FrameKind, payload: &[u8]) {
        let start = self.buf.len();
        frame::encode(&mut self.buf, kind, payload);
        self.copied(start);
    }

    /// Records `buf[start..]` as the next piece, merging it with the previous copied
    /// piece when they are adjacent.
    fn copied(&mut self, start: usize) {
        let end = self.buf.len();
        self.total += end - start;
        match self.pieces.last_mut() {
            Some(Piece::Copied { end: last, .. }) if *last == start => *last = end,
            _ => self.pieces.push(Piece::Copied { start, end }),
        }
    }

    /// Writes the whole batch and empties it. Returns what went out, and why the
    /// write stopped if not all of it did. `progress` is called after every system
    /// call that wrote something.
    pub fn write(
        &mut self,
        stream: impl Write,
        progress: &mut dyn FnMut(),
    ) -> (Written, io::Result<()>) {
        let (bytes, result) = self.write_all(stream, progress);
        (self.settle(bytes), result)
    }

    /// Writes the pieces in order; returns how many bytes went out, and why it
    /// stopped if not all did.
    fn write_all(&self, stream: impl Write, progress: &mut dyn FnMut()) -> (usize, io::Result<()>) {
        // The slices live on the stack, so that the writer's steady state allocates
        // nothing; most batches have a few pieces, so the small array is the usual one.
        if self.pieces.len() <= FEW_SLICES {
            self.write_slices::<FEW_SLICES>(stream, progress)
        } else {
            self.write_slices::<MAX_SLICES>(stream, progress)
        }
    }

    /// [`Batch::write_all`] with room for `N` slices, at least as many as pieces.
    ///
    /// Never inlined, so that each size has a frame of its own: inlined into
    /// `write_all`, both arrays shared one 8 KiB frame, and the stack probes of a
    /// frame that large touch every page of it on entry, so every write, a ping's
    /// included, made 8 KiB of the writer's stack resident (`wirelane-bench scale`:
    /// 16 KiB per idle writer thread, 8 KiB with this).
    #[inline(never)]
    fn write_slices<const N: usize>(
        &self,
        mut stream: impl Write,
        progress: &mut dyn FnMut(),
    ) -> (usize, io::Result<()>) {
        assert!(
            self.pieces.len() <= N,
            "`is_full` keeps a batch within MAX_SLICES pieces"
        );
        let mut array = [IoSlice::new(&[]); N];
        for (slice, piece) in array.iter_mut().zip(&self.pieces) {
            *slice = match *piece {
                Piece::Copied { start, end } => IoSlice::new(&self.buf[start..end]),
                Piece::Referenced { index } => IoSlice::new(&self.frames[index].2),
                Piece::Rest => IoSlice::new(&self.rest),
            };
        }
        let mut slices = &mut array[..self.pieces.len()];
        let mut written = 0;
        while written < self.total {
            let result = match slices {
                [one] => stream.write(&one[..]),
                _ => stream.write_vectored(slices),
            };
            match result {
                Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    written += n;
                    IoSlice::advance_slices(&mut slices, n);
                    progress();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (written, Err(e)),
            }
        }
        (written, Ok(()))
    }

    /// Sorts the frames by whether they fully reached the socket, and empties the
    /// batch.
    fn settle(&mut self, bytes: usize) -> Written {
        let mut out = Written {
            bytes,
            ..Written::default()
        };
        for (end, kind, payload) in self.frames.drain(..) {
            let slot = match kind {
                FrameKind::Gossip => &mut out.gossip,
                FrameKind::Private => &mut out.private,
                FrameKind::Request => &mut out.requests,
                _ => &mut out.replies,
            };
            if end <= bytes {
                slot.0 += 1;
                slot.1 += payload.len() as u64;
            } else if kind == FrameKind::Private {
                out.unsent.push(payload);
            } else if kind == FrameKind::Gossip {
                out.gossip_lost += 1;
            }
        }
        self.buf.clear();
        self.pieces.clear();
        self.total = 0;
        self.rest = Bytes::new();
        self.mid_frame = false;
        out
    }

    /// Empties a batch that will never be written.
    pub(crate) fn discard(&mut self) -> Written {
        self.settle(0)
    }
}

/// What one write of a batch achieved.
#[derive(Debug, Default)]
pub struct Written {
    /// Bytes that reached the socket.
    pub bytes: usize,
    /// Gossip frames, and their payload bytes, that fully reached the socket.
    pub gossip: (u64, u64),
    /// Private frames, and their payload bytes, that fully reached the socket.
    pub private: (u64, u64),
    /// Request frames, and their body bytes, that fully reached the socket.
    pub requests: (u64, u64),
    /// Reply frames, and their body bytes, that fully reached the socket.
    pub replies: (u64, u64),
    /// Gossip frames that did not.
    pub gossip_lost: u64,
    /// Private messages whose frames did not, oldest first.
    pub unsent: Vec<Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `limit` bytes per call, and fails after `fail_at`.
    struct Trickle {
        out: Vec<u8>,
        limit: usize,
        fail_at: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.out.len() >= self.fail_at {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.limit).min(self.fail_at - self.out.len());
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            self.write(first)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn sample() -> (Batch, Vec<u8>) {
        let mut batch = Batch::default();
        let mut expected = Vec::new();
        let payloads: Vec<(Lane, Vec<u8>)> = vec![
            (Lane::Private, vec![1; 10]),
            (Lane::Gossip, vec![2; INLINE_MAX + 1]),
            (Lane::Private, vec![3; 5000]),
            (Lane::Private, vec![4; 0]),
            (Lane::Gossip, vec![5; 100]),
        ];
        for (lane, payload) in payloads {
            let kind = if lane == Lane::Private {
                FrameKind::Private
            } else {
                FrameKind::Gossip
            };
            frame::encode(&mut expected, kind, &payload);
            batch.push(lane, Bytes::from(payload));
        }
        batch.control(FrameKind::Ping);
        frame::encode_header(&mut expected, FrameKind::Ping, 0);
        (batch, expected)
    }

    #[test]
    fn copied_and_referenced_pieces_write_the_frames_in_order() {
        for limit in [1, 3, 100, 4096, usize::MAX] {
            let (mut batch, expected) = sample();
            let mut out = Trickle {
                out: Vec::new(),
                limit,
                fail_at: usize::MAX,
            };
            let (written, result) = batch.write(&mut out, &mut || {});
            result.unwrap();
            assert_eq!(out.out, expected, "limit {limit}");
            assert_eq!(written.private.0, 3);
            assert_eq!(written.gossip.0, 2);
            assert!(batch.is_empty());
        }
    }

    #[test]
    fn a_failed_write_hands_back_exactly_the_private_messages_not_written() {
        let (_, expected) = sample();
        for fail_at in 0..expected.len() {
            let (mut batch, _) = sample();
            let mut out = Trickle {
                out: Vec::new(),
                limit: 1000,
                fail_at,
            };
            let (written, result) = batch.write(&mut out, &mut || {});
            assert!(result.is_err());
            let (sent, unsent) = (written.private.0, written.unsent);
            assert_eq!(sent as usize + unsent.len(), 3, "at byte {fail_at}");
            // What comes back is the tail of the private messages, in order.
            let lens: Vec<usize> = unsent.iter().map(Bytes::len).collect();
            let all = [10, 5000, 0];
            assert_eq!(lens, all[all.len() - unsent.len()..], "at byte {fail_at}");
        }
    }

    #[test]
    fn the_rest_of_a_begun_frame_goes_first_and_comes_back_whole() {
        const HEADER: usize = frame::HEADER_LEN;
        for (len, cut) in [(100, 0), (100, 3), (100, 50), (5000, 2), (5000, 4000)] {
            let payload = Bytes::from(vec![9u8; len]);
            let mut frame_bytes = Vec::new();
            frame::encode(&mut frame_bytes, FrameKind::Private, &payload);
            let rest = |batch: &mut Batch| {
                let head = &frame_bytes[cut.min(HEADER)..HEADER];
                let body = payload.slice(cut.saturating_sub(HEADER)..);
                batch.push_rest(FrameKind::Private, head, body, payload.clone());
                batch.push(Lane::Private, Bytes::from_static(b"next"));
            };
            let mut expected = frame_bytes[cut..].to_vec();
            frame::encode(&mut expected, FrameKind::Private, b"next");

            let mut batch = Batch::default();
            rest(&mut batch);
            let mut out = Trickle {
                out: Vec::new(),
                limit: 7,
                fail_at: usize::MAX,
            };
            let (written, result) = batch.write(&mut out, &mut || {});
            result.unwrap();
            assert_eq!(out.out, expected, "{len} bytes cut at {cut}");
            assert_eq!(written.private.0, 2);

            // Failing before its last byte: the whole payload comes back, first.
            let mut batch = Batch::default();
            rest(&mut batch);
            let mut out = Trickle {
                out: Vec::new(),
                limit: 7,
                fail_at: expected.len() - 12,
            };
            let (written, result) = batch.write(&mut out, &mut || {});
            assert!(result.is_err());
            assert_eq!(written.private.0, 0);
            assert_eq!(
                written.unsent,
                vec![payload.clone(), Bytes::from_static(b"next")]
            );
        }
    }
}
