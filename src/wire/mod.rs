//! The wire format: frames, the hello, the frame reader, batching frames into
//! vectored writes, and the buffers inbound payloads live in.
//!
//! Pure codec and buffers: nothing here starts a thread or names a connection or a
//! node, and the only I/O is through the `Read` and `Write` values its callers pass
//! in. That is what lets the fuzz targets and property tests drive the same code the
//! reader and writer threads run.

pub(crate) mod batch;
pub(crate) mod frame;
pub(crate) mod hello;
pub(crate) mod pool;
pub(crate) mod readbuf;
pub(crate) mod reader;

pub(crate) use frame::FrameError;
pub use frame::MAX_PROOF_LEN;
