//! Recycled buffers for inbound data: the reader's blocks, and large payloads.
//!
//! Reads land in a buffer from here, and the application receives slices of it (or,
//! for a large frame, the whole of it) as [`Bytes`]. When the application drops the
//! last handle, the buffer comes back here instead of going to the allocator. Freeing in the
//! application's thread what the reader's thread allocated makes the system allocator
//! trim and re-fault memory on every message; recycling keeps the pages warm, and a
//! recycled buffer is already initialised, so it is never zeroed again.
//!
//! Buffers are kept by size class (powers of two). Each class keeps at most about
//! [`CLASS_BYTES`] idle, so the pool's memory is bounded whatever the traffic; a
//! buffer that finds its class full is simply freed.

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender};

use crate::sync::Credit;

/// Smallest class: the smallest read block.
const MIN_CLASS_SHIFT: u32 = 12; // 4 KiB
/// Largest class; larger payloads get unpooled allocations.
const MAX_CLASS_SHIFT: u32 = 22; // 4 MiB
/// Idle bytes kept per class, at most (and at least two buffers).
const CLASS_BYTES: usize = 2 << 20;

/// The idle buffers of one size class: returned through the sender, taken from the
/// receiver.
type Class = (Sender<Vec<u8>>, Receiver<Vec<u8>>);

/// Idle buffers, by size class.
pub(crate) struct BufPool {
    classes: Vec<Class>,
}

impl Default for BufPool {
    fn default() -> Self {
        BufPool {
            classes: (MIN_CLASS_SHIFT..=MAX_CLASS_SHIFT)
                .map(|shift| bounded((CLASS_BYTES >> shift).max(2)))
                .collect(),
        }
    }
}

impl BufPool {
    /// A buffer of at least `len` initialised bytes, recycled when possible.
    pub(crate) fn get(&self, len: usize) -> Vec<u8> {
        match self.class(len) {
            Some(class) => self.classes[class]
                .1
                .try_recv()
                .unwrap_or_else(|_| vec![0; self.size_for(len)]),
            None => vec![0; len],
        }
    }

    /// The size of the buffer [`BufPool::get`] returns for `len` bytes.
    pub(crate) fn size_for(&self, len: usize) -> usize {
        match self.class(len) {
            Some(class) => 1usize << (MIN_CLASS_SHIFT as usize + class),
            None => len,
        }
    }

    /// Hands `buf[..len]` to the application; the buffer returns to its class when
    /// the last handle is dropped.
    pub(crate) fn freeze(&self, buf: Vec<u8>, len: usize) -> Bytes {
        self.freeze_with(buf, len, None)
    }

    /// Like [`BufPool::freeze`], and `credit` is given back when the last handle is
    /// dropped.
    pub(crate) fn freeze_with(&self, buf: Vec<u8>, len: usize, credit: Option<Credit>) -> Bytes {
        let home = self
            .class(buf.len())
            .filter(|&class| buf.len() == 1 << (MIN_CLASS_SHIFT as usize + class))
            .map(|class| self.classes[class].0.clone());
        Bytes::from_owner(Recycled {
            buf,
            len,
            home,
            _credit: credit,
        })
    }

    fn class(&self, len: usize) -> Option<usize> {
        let shift = len
            .max(1)
            .next_power_of_two()
            .trailing_zeros()
            .max(MIN_CLASS_SHIFT);
        (shift <= MAX_CLASS_SHIFT).then(|| (shift - MIN_CLASS_SHIFT) as usize)
    }
}

/// The owner behind a pooled payload's `Bytes`.
struct Recycled {
    buf: Vec<u8>,
    len: usize,
    home: Option<Sender<Vec<u8>>>,
    /// The bytes this buffer holds against a budget, if any; given back when the
    /// buffer goes.
    _credit: Option<Credit>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        if let Some(home) = &self.home {
            // Never waits: a full class means enough idle buffers; this one is freed.
            let _ = home.try_send(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_the_last_handle_drops() {
        let pool = BufPool::default();
        let mut buf = pool.get(20_000);
        assert_eq!(buf.len(), 32 * 1024);
        let class = 3;
        buf[..5].copy_from_slice(b"hello");
        let ptr = buf.as_ptr();
        let bytes = pool.freeze(buf, 5);
        let clone = bytes.slice(1..3);
        assert_eq!(&bytes[..], b"hello");
        drop(bytes);
        assert!(pool.classes[class].1.is_empty(), "a clone still holds it");
        assert_eq!(&clone[..], b"el");
        drop(clone);
        let again = pool.get(17_000);
        assert_eq!(again.as_ptr(), ptr, "the same buffer, recycled");
        assert_eq!(&again[..5], b"hello", "not zeroed again");
    }

    #[test]
    fn classes_are_bounded_and_huge_buffers_are_not_pooled() {
        let pool = BufPool::default();
        let top = MAX_CLASS_SHIFT - MIN_CLASS_SHIFT;
        let held: Vec<Bytes> = (0..10).map(|_| pool.freeze(pool.get(4 << 20), 1)).collect();
        drop(held);
        assert_eq!(pool.classes[top as usize].1.len(), 2);
        let huge = pool.get(5 << 20);
        assert_eq!(huge.len(), 5 << 20);
        drop(pool.freeze(huge, 1));
        assert!(pool.class(5 << 20).is_none());
    }
}
