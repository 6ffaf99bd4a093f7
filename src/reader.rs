//! The reader thread's loop: read bytes, cut frames; [`crate::deliver`] hands them on.
//!
//! Many frames are parsed out of each read. The reader is also the connection's
//! clock: its reads time out every tick so that it can notice a silent peer, and a
//! graceful close that outlives its linger.

use std::cell::Cell;
use std::io::{self, IoSliceMut, Read};
use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use crossbeam_channel::{Receiver, Select, Sender};

use crate::budget::Credit;
use crate::config::Config;
use crate::connection::{ConnShared, Never};
use crate::deliver::{Next, Tally};
use crate::event::{DisconnectReason, Event, Lane, Message};
use crate::frame::{self, FrameKind, Header, HEADER_LEN};
use crate::id::PeerId;
use crate::lane::Budgets;
use crate::pool::BufPool;
use crate::readbuf::ReadBuf;
use crate::shared::NodeShared;

/// Everything the read loop needs, borrowed from the connection thread.
pub(crate) struct Reader<'a> {
    pub(crate) stream: &'a TcpStream,
    pub(crate) conn: &'a Arc<ConnShared>,
    pub(crate) peer: PeerId,
    pub(crate) inbound: &'a Sender<Message>,
    /// Where large payloads are read into, and return to.
    pub(crate) pool: &'a BufPool,
    /// Asks the writer for a pong.
    pub(crate) pong: &'a Sender<()>,
    pub(crate) config: &'a Config,
    /// Disconnect when the earlier readers of this peer have finished; nothing is
    /// delivered before, so the peer's messages keep their order.
    pub(crate) after: Vec<Receiver<Never>>,
    /// The private lane, watched for a peer that stops draining it.
    pub(crate) private: &'a Receiver<Bytes>,
    pub(crate) budgets: &'a Budgets,
    /// For reporting a slow peer.
    pub(crate) node: &'a NodeShared,
    pub(crate) events: &'a Sender<Event>,
    /// Set when, during a graceful close, the application let a whole linger pass
    /// without making room: from then on frames are delivered only if there is room
    /// at once, and counted as `recv_dropped` otherwise.
    pub(crate) app_stalled: Cell<bool>,
}

/// Since when the peer's private lane has been full, as the reader last looked.
#[derive(Default)]
struct Slow {
    since: Option<Instant>,
    reported: bool,
}

impl Reader<'_> {
    /// Runs until the connection ends, and returns why it ended from the reader's
    /// point of view (the first reason recorded on the connection wins).
    pub(crate) fn run(&self, rb: &mut ReadBuf) -> DisconnectReason {
        if let Err(e) = self.stream.set_read_timeout(Some(self.config.read_tick())) {
            return DisconnectReason::Io(Arc::new(e));
        }
        if !self.wait_for_earlier_readers() {
            // Closed by force meanwhile: nothing of this connection will be
            // delivered. The close already has its reason; this one is never recorded.
            return DisconnectReason::ClosedByUs;
        }
        let mut last_heard = Instant::now();
        let mut slow = Slow::default();
        let max = self.config.max_frame_len;
        loop {
            // Deliver every complete frame already buffered.
            let mut tally = Tally::default();
            let stop = loop {
                let header = match frame::decode_header(rb.data(), max) {
                    Ok(Some(h)) => h,
                    Ok(None) => break None,
                    Err(e) => break Some(DisconnectReason::Protocol(e)),
                };
                if rb.len() < header.frame_len() {
                    if header.frame_len() <= rb.max() / 4 {
                        break None;
                    }
                    // A large frame: read the rest of it straight into its own
                    // allocation rather than through the buffer, once the node's
                    // budget for such payloads has room for it.
                    let size = self.pool.size_for(header.len as usize);
                    let credit = match self.inbound_credit(size, &mut tally, &mut last_heard) {
                        Ok(credit) => credit,
                        Err(reason) => break Some(reason),
                    };
                    let payload = match self.read_large(rb, header, credit, &mut last_heard) {
                        Ok(payload) => payload,
                        Err(reason) => break Some(reason),
                    };
                    match self.handle(header.kind, payload, &mut tally, &mut last_heard) {
                        Next::Continue => continue,
                        Next::Stop(reason) => break Some(reason),
                    }
                }
                let mut payload = rb.take(header.frame_len());
                payload.advance(HEADER_LEN);
                if let Next::Stop(reason) =
                    self.handle(header.kind, payload, &mut tally, &mut last_heard)
                {
                    break Some(reason);
                }
            };
            self.flush(&tally);
            if let Some(reason) = stop {
                return reason;
            }
            if let Some(reason) = self.linger_capped() {
                return reason;
            }

            let want = match frame::decode_header(rb.data(), max) {
                Ok(Some(h)) => h.frame_len(),
                _ => HEADER_LEN,
            };
            // Whatever this reads is parsed before the loop looks at the linger again,
            // so that every frame the peer's kernel took is delivered or counted.
            let filled = rb.fill(self.stream, want);
            self.watch_slow(&mut slow);
            match filled {
                Ok(0) if rb.is_empty() => return DisconnectReason::ClosedByPeer,
                Ok(0) => {
                    return DisconnectReason::Io(Arc::new(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a frame",
                    )))
                }
                Ok(n) => {
                    last_heard = Instant::now();
                    self.conn
                        .counters
                        .inb
                        .wire_bytes
                        .fetch_add(n as u64, Relaxed);
                }
                Err(e) => {
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) {
                        // Idle for a tick: hand the read block back to the pool.
                        rb.release();
                    }
                    if let Some(reason) = self.on_read_error(e, last_heard) {
                        return reason;
                    }
                }
            }
        }
    }

    /// Waits until every earlier reader of this peer has finished delivering, so
    /// that the peer's messages keep their order across reconnections. Returns
    /// `false` if this connection was closed by force meanwhile.
    ///
    /// Bounded: each earlier reader belongs to a connection that is closing, and
    /// ends within its own linger cap once the readers before it have ended.
    fn wait_for_earlier_readers(&self) -> bool {
        if self.after.is_empty() {
            return true;
        }
        for earlier in &self.after {
            let mut sel = Select::new();
            let done = sel.recv(earlier);
            sel.recv(&self.conn.closed_rx);
            let oper = sel.select();
            if oper.index() == done {
                let _ = oper.recv(earlier);
                continue;
            }
            let _ = oper.recv(&self.conn.closed_rx);
            if !self.conn.reason().is_some_and(|r| r.is_graceful()) {
                return false;
            }
            // Closing gracefully: what this connection carries is still delivered,
            // after what the earlier ones carry.
            let _ = earlier.recv();
        }
        // The linger of a close that came while this waited starts now: until now
        // this reader could deliver nothing, however fast the application was.
        self.conn.restart_linger();
        true
    }

    /// Ends a graceful close that has lasted its longest (ten lingers), even though
    /// data still moves.
    fn linger_capped(&self) -> Option<DisconnectReason> {
        if !self.conn.is_closing() || !self.conn.linger_cap_over() {
            return None;
        }
        log::warn!(
            "{}: the close of {} to {} outlasted ten lingers; cutting it",
            self.conn.node,
            self.conn.id,
            self.peer
        );
        self.conn.cut();
        Some(DisconnectReason::ClosedByUs)
    }

    /// Decides what a failed read means: a tick (check for silence and for an
    /// expired linger), or the end.
    fn on_read_error(&self, e: io::Error, last_heard: Instant) -> Option<DisconnectReason> {
        match e.kind() {
            io::ErrorKind::Interrupted => None,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                if let Some(reason) = self.linger_expired() {
                    return Some(reason);
                }
                if last_heard.elapsed() >= self.config.silence_timeout {
                    log::warn!(
                        "{}: {} sent nothing for {:?}; declaring it dead",
                        self.conn.node,
                        self.peer,
                        last_heard.elapsed()
                    );
                    return Some(DisconnectReason::Dead);
                }
                None
            }
            _ => Some(DisconnectReason::Io(Arc::new(e))),
        }
    }

    /// Reports a peer whose private lane stays full (and closes the connection if the
    /// node is set to). Runs on every read and every tick, so at least twice a linger.
    fn watch_slow(&self, slow: &mut Slow) {
        if !(self.private.is_full() || self.budgets.private.is_full()) {
            *slow = Slow::default();
            return;
        }
        let since = *slow.since.get_or_insert_with(Instant::now);
        let full_for = since.elapsed();
        if slow.reported || full_for < self.config.slow_peer_after {
            return;
        }
        slow.reported = true;
        log::warn!(
            "{}: the private lane to {} has been full for {full_for:?}{}",
            self.conn.node,
            self.peer,
            if self.config.disconnect_slow_peers {
                "; disconnecting it"
            } else {
                ""
            }
        );
        self.node.emit(
            self.events,
            Event::SlowPeer {
                peer: self.peer,
                conn: self.conn.id,
                full_for,
            },
        );
        if self.config.disconnect_slow_peers {
            self.conn.close(DisconnectReason::SlowPeer);
        }
    }

    /// Ends a graceful close whose peer did not finish its side in time. Cutting the
    /// socket also frees a writer stuck on a send buffer the peer no longer drains.
    fn linger_expired(&self) -> Option<DisconnectReason> {
        if !self.conn.is_closing() || !self.conn.linger_over() {
            return None;
        }
        self.conn.cut();
        // The close already has its reason; this one is never recorded.
        Some(DisconnectReason::ClosedByUs)
    }

    /// Reads a frame larger than the read buffer into an allocation of its own, so the
    /// buffer never grows to the frame limit. The length was checked against the
    /// limit before this is called.
    fn read_large(
        &self,
        rb: &mut ReadBuf,
        header: Header,
        credit: Credit,
        last_heard: &mut Instant,
    ) -> Result<Bytes, DisconnectReason> {
        let len = header.len as usize;
        let mut payload = self.pool.get(len);
        rb.consume(HEADER_LEN);
        let mut filled = rb.len();
        payload[..filled].copy_from_slice(rb.data());
        rb.consume(filled);
        // From now on the buffer reads little more than the next header, so that a
        // stream of large frames is read with one system call per frame and no copy.
        rb.expect_large();
        while filled < len {
            // The rest of this payload, and whatever follows it, in one read.
            let (result, into_payload) = {
                let rest = &mut payload[filled..len];
                let want = rest.len();
                let mut slices = [IoSliceMut::new(rest), IoSliceMut::new(rb.spare())];
                let result = (&mut &*self.stream).read_vectored(&mut slices);
                let n = *result.as_ref().unwrap_or(&0);
                (result, n.min(want))
            };
            if let Ok(n) = result {
                filled += into_payload;
                rb.commit(n - into_payload);
                if n > 0 {
                    *last_heard = Instant::now();
                    let wire = &self.conn.counters.inb.wire_bytes;
                    wire.fetch_add(n as u64, Relaxed);
                    self.conn.progress();
                }
            }
            if let Some(reason) = self.linger_capped() {
                let lane = if header.kind == FrameKind::Private {
                    Lane::Private
                } else {
                    Lane::Gossip
                };
                self.conn.counters.inb.lane(lane).drop_n(1);
                return Err(reason);
            }
            match result {
                Ok(0) => {
                    return Err(DisconnectReason::Io(Arc::new(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a frame",
                    ))))
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(reason) = self.on_read_error(e, *last_heard) {
                        return Err(reason);
                    }
                }
            }
        }
        Ok(self.pool.freeze_with(payload, len, Some(credit)))
    }
}

/// How long a handshake read may block before the deadline.
pub(crate) fn until(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}
