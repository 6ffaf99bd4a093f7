//! The writer thread's loop: take ready messages, private first, and write them in
//! as few system calls as possible (see [`crate::batch`]).

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, LazyLock};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{select, Receiver};

use crate::batch::Batch;
use crate::connection::ConnShared;
use crate::event::{DisconnectReason, Lane};
use crate::frame::{self, CloseCode, FrameKind};
use crate::lane::LaneRx;

/// A batch of fewer data frames than this is "small": written at once, its system
/// call is shared by few messages.
const SMALL_BATCH: usize = 16;

/// Writers in this process that have work, that is, are not parked waiting for it.
static BUSY_WRITERS: AtomicUsize = AtomicUsize::new(0);

/// The cores this process may run on.
static CORES: LazyLock<usize> =
    LazyLock::new(|| thread::available_parallelism().map_or(1, |n| n.get()));

/// Whether a writer about to write a small batch should first let other threads run.
///
/// When more writers have work than there are cores, the writers' own system calls
/// are what the machine spends its time on: with eight nodes in a full mesh, each
/// writer woke for one or two messages and wrote about 20 frames per call, against
/// 100 or more with two nodes. Yielding once before a small write lets the senders
/// that share the core add to the batch (8-node mesh +60%, 4-node +50%). With no
/// more busy writers than cores, nothing is waiting for the core, so a writer never
/// yields and a lone message is written at once: latency and single-connection
/// throughput are unchanged (`docs/performance.md`).
fn should_yield(batch: &Batch) -> bool {
    let frames = batch.frames();
    frames > 0 && frames < SMALL_BATCH && BUSY_WRITERS.load(Relaxed) > *CORES
}

/// Counts a writer as busy for as long as it lives, except while it is parked.
struct Busy;

impl Busy {
    fn start() -> Busy {
        BUSY_WRITERS.fetch_add(1, Relaxed);
        Busy
    }

    /// Runs `park` with this writer counted as idle.
    fn parked<R>(&self, park: impl FnOnce() -> R) -> R {
        BUSY_WRITERS.fetch_sub(1, Relaxed);
        let result = park();
        BUSY_WRITERS.fetch_add(1, Relaxed);
        result
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY_WRITERS.fetch_sub(1, Relaxed);
    }
}

/// Everything the writer thread owns.
pub(crate) struct Writer {
    pub(crate) stream: Arc<TcpStream>,
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) lanes: LaneRx,
    /// Requests for a pong, from the reader.
    pub(crate) pong: Receiver<()>,
    pub(crate) ping_interval: Duration,
    pub(crate) max_batch: usize,
}

impl Writer {
    /// Runs until the connection closes, then returns the private messages that were
    /// never written, oldest first, for the connection thread to hand back.
    pub(crate) fn run(self) -> Vec<Bytes> {
        let mut batch = Batch::default();
        let mut last_write = Instant::now();
        let busy = Busy::start();
        let unsent = loop {
            if self.conn.is_closing() {
                break batch.unwritten(&self.conn.counters);
            }
            batch.gather(&self.lanes, self.max_batch, &self.conn.counters);
            if should_yield(&batch) {
                thread::yield_now();
                batch.gather(&self.lanes, self.max_batch, &self.conn.counters);
            }
            if self.pong.try_recv().is_ok() {
                batch.control(FrameKind::Pong);
            }
            if batch.is_empty() {
                let idle = last_write.elapsed();
                if idle < self.ping_interval {
                    busy.parked(|| self.wait(&mut batch, self.ping_interval - idle));
                    continue;
                }
                batch.control(FrameKind::Ping);
            }
            match batch.write(&*self.stream, &self.conn.counters, &mut || {
                self.conn.progress()
            }) {
                Ok(()) => last_write = Instant::now(),
                Err((e, unsent)) => {
                    self.conn.close(DisconnectReason::Io(Arc::new(e)));
                    break unsent;
                }
            }
        };
        drop(busy);
        self.finish(unsent)
    }

    /// Sleeps until there is something to write, the connection closes, or a ping is
    /// due.
    fn wait(&self, batch: &mut Batch, timeout: Duration) {
        // A disconnected lane or pong channel means the connection is closing; the
        // loop sees that at its top.
        select! {
            recv(self.lanes.private) -> msg => if let Ok(msg) = msg {
                batch.push_taken(&self.lanes, Lane::Private, msg, &self.conn.counters);
            },
            recv(self.lanes.gossip) -> msg => if let Ok(msg) = msg {
                batch.push_taken(&self.lanes, Lane::Gossip, msg, &self.conn.counters);
            },
            recv(self.pong) -> req => if req.is_ok() { batch.control(FrameKind::Pong) },
            recv(self.conn.closed_rx) -> _ => {},
            default(timeout) => {},
        }
    }

    /// Collects what was never written, then says goodbye (on a graceful close).
    /// It does not wait for the peer's end: the reader lingers for that. Handing the
    /// messages back is left to the connection thread, so that the writer never
    /// waits for room in the event queue: its thread ends with the connection.
    fn finish(self, mut unsent: Vec<Bytes>) -> Vec<Bytes> {
        unsent.extend(self.lanes.drain(&self.conn.counters));
        let reason = self.conn.reason();
        if reason.as_ref().is_some_and(DisconnectReason::is_graceful) {
            let code = match reason {
                Some(DisconnectReason::Shutdown) => CloseCode::Shutdown,
                _ => CloseCode::Normal,
            };
            let mut out = Vec::with_capacity(frame::HEADER_LEN + 1);
            frame::encode_close(&mut out, code);
            // If the peer has stopped reading this can block; the connection cuts
            // the socket when the linger runs out, which ends the write.
            if (&*self.stream).write_all(&out).is_ok() {
                let bytes = &self.conn.counters.out.wire_bytes;
                bytes.fetch_add(out.len() as u64, Relaxed);
                self.conn.progress();
            }
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        unsent
    }
}
