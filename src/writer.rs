//! The writer thread's loop: take ready messages, private first, and write them in
//! as few system calls as possible.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{select, Receiver, RecvTimeoutError};

use crate::connection::{ConnShared, LaneRx, Never};
use crate::event::{DisconnectReason, Lane};
use crate::frame::{self, CloseCode, FrameKind};
use crate::stats::Counters;

/// Everything the writer thread owns.
pub(crate) struct Writer {
    pub(crate) stream: Arc<TcpStream>,
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) lanes: LaneRx,
    /// Requests for a pong, from the reader.
    pub(crate) pong: Receiver<()>,
    /// Disconnects when the reader has finished.
    pub(crate) reader_done: Receiver<Never>,
    pub(crate) ping_interval: Duration,
    pub(crate) max_batch: usize,
}

impl Writer {
    /// Runs until the connection closes, then returns the private messages that were
    /// never handed to the socket, oldest first.
    pub(crate) fn run(self) -> Vec<Bytes> {
        let mut batch = Batch::default();
        let mut last_write = Instant::now();
        let unsent = loop {
            if self.conn.is_closing() {
                break batch.unwritten(&self.conn.counters);
            }
            batch.gather(&self.lanes, self.max_batch, &self.conn.counters);
            if self.pong.try_recv().is_ok() {
                batch.control(FrameKind::Pong);
            }
            if batch.is_empty() {
                let idle = last_write.elapsed();
                if idle < self.ping_interval {
                    self.wait(&mut batch, self.ping_interval - idle);
                    continue;
                }
                batch.control(FrameKind::Ping);
            }
            match batch.write(&self.stream, &self.conn.counters) {
                Ok(()) => last_write = Instant::now(),
                Err((e, unsent)) => {
                    self.conn.close(DisconnectReason::Io(Arc::new(e)));
                    break unsent;
                }
            }
        };
        self.finish(unsent)
    }

    /// Sleeps until there is something to write, the connection closes, or a ping is
    /// due.
    fn wait(&self, batch: &mut Batch, timeout: Duration) {
        // A disconnected lane or pong channel means the connection is closing; the
        // loop sees that at its top.
        select! {
            recv(self.lanes.private) -> msg => if let Ok(msg) = msg {
                batch.push(Lane::Private, msg);
                batch.publish(&self.conn.counters);
            },
            recv(self.lanes.gossip) -> msg => if let Ok(msg) = msg {
                batch.push(Lane::Gossip, msg);
                batch.publish(&self.conn.counters);
            },
            recv(self.pong) -> req => if req.is_ok() { batch.control(FrameKind::Pong) },
            recv(self.conn.closed_rx) -> _ => {},
            default(timeout) => {},
        }
    }

    /// Says goodbye (on a graceful close), hands back what was never written, and
    /// gives the reader until the linger deadline to see the peer's end.
    fn finish(self, mut unsent: Vec<Bytes>) -> Vec<Bytes> {
        let reason = self.conn.reason();
        let graceful = reason.as_ref().is_some_and(DisconnectReason::is_graceful);
        if graceful {
            let code = match reason {
                Some(DisconnectReason::Shutdown) => CloseCode::Shutdown,
                _ => CloseCode::Normal,
            };
            let mut out = Vec::with_capacity(frame::HEADER_LEN + 1);
            frame::encode_close(&mut out, code);
            // If the peer has stopped reading this can block; the reader cuts the
            // socket when the linger runs out, which ends the write.
            if (&*self.stream).write_all(&out).is_ok() {
                let bytes = &self.conn.counters.out.wire_bytes;
                bytes.fetch_add(out.len() as u64, Relaxed);
            }
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        unsent.extend(self.lanes.drain(&self.conn.counters));
        if graceful {
            if let Some(deadline) = self.conn.linger_deadline() {
                if let Err(RecvTimeoutError::Timeout) = self.reader_done.recv_deadline(deadline) {
                    self.conn.cut();
                }
            }
        }
        unsent
    }
}

/// Frames gathered for one write.
///
/// Payloads stay here until the write succeeds, so a failed write can tell exactly
/// which private messages never reached the socket and hand them back.
#[derive(Default)]
pub(crate) struct Batch {
    buf: Vec<u8>,
    /// For each data frame: where it ends in `buf`, its lane, its payload.
    frames: Vec<(usize, Lane, Bytes)>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn push(&mut self, lane: Lane, payload: Bytes) {
        let kind = match lane {
            Lane::Gossip => FrameKind::Gossip,
            Lane::Private => FrameKind::Private,
        };
        frame::encode(&mut self.buf, kind, &payload);
        self.frames.push((self.buf.len(), lane, payload));
    }

    pub(crate) fn control(&mut self, kind: FrameKind) {
        frame::encode_header(&mut self.buf, kind, 0);
    }

    /// Takes ready messages until about `max` bytes are gathered: the private lane
    /// first, so private data never waits behind gossip.
    pub(crate) fn gather(&mut self, lanes: &LaneRx, max: usize, counters: &Counters) {
        let before = self.frames.len();
        while self.buf.len() < max {
            match lanes.private.try_recv() {
                Ok(msg) => self.push(Lane::Private, msg),
                Err(_) => break,
            }
        }
        while self.buf.len() < max {
            match lanes.gossip.try_recv() {
                Ok(msg) => self.push(Lane::Gossip, msg),
                Err(_) => break,
            }
        }
        if self.frames.len() > before {
            self.publish(counters);
        }
    }

    /// Makes the messages held in the batch visible in the lanes' `queued` figures.
    fn publish(&self, counters: &Counters) {
        let private = self.frames.iter().filter(|f| f.1 == Lane::Private).count();
        let gossip = self.frames.len() - private;
        counters.out.private.in_batch.store(private as u64, Relaxed);
        counters.out.gossip.in_batch.store(gossip as u64, Relaxed);
    }

    /// Writes the whole batch. On failure, returns the error and the private
    /// messages whose frames did not fully reach the socket.
    pub(crate) fn write(
        &mut self,
        mut stream: &TcpStream,
        counters: &Counters,
    ) -> Result<(), (io::Error, Vec<Bytes>)> {
        let mut written = 0;
        let result = loop {
            if written == self.buf.len() {
                break Ok(());
            }
            match stream.write(&self.buf[written..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        counters.out.wire_bytes.fetch_add(written as u64, Relaxed);
        let unsent = self.settle(written, counters);
        result.map_err(|e| (e, unsent))
    }

    /// Counts the frames that fully reached the socket and empties the batch;
    /// returns the private messages that did not.
    fn settle(&mut self, written: usize, counters: &Counters) -> Vec<Bytes> {
        let mut sent = [(0u64, 0u64); 2];
        let mut unsent = Vec::new();
        let mut gossip_lost = 0;
        for (end, lane, payload) in self.frames.drain(..) {
            let slot = match lane {
                Lane::Gossip => 0,
                Lane::Private => 1,
            };
            if end <= written {
                sent[slot].0 += 1;
                sent[slot].1 += payload.len() as u64;
            } else if lane == Lane::Private {
                unsent.push(payload);
            } else {
                gossip_lost += 1;
            }
        }
        counters.out.gossip.add(sent[0].0, sent[0].1);
        counters.out.private.add(sent[1].0, sent[1].1);
        counters.out.gossip.drop_n(gossip_lost);
        counters.out.private.in_batch.store(0, Relaxed);
        counters.out.gossip.in_batch.store(0, Relaxed);
        self.buf.clear();
        unsent
    }

    /// Empties a batch that will never be written.
    pub(crate) fn unwritten(&mut self, counters: &Counters) -> Vec<Bytes> {
        self.settle(0, counters)
    }
}
