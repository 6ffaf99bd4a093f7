//! The writer thread's loop: take ready messages — window updates and replies
//! first, then the private lane (private messages and requests, in their order, as
//! far as the peer's window allows), then gossip — and write them in as few system
//! calls as possible (see [`crate::wire::batch`]).

use std::io::Write;

use crate::conn::stream::Stream;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, LazyLock};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{never, Receiver, Select};

use crate::conn::lane::LaneRx;
use crate::conn::request::{Outbound, Replies, ReplyOut};
use crate::conn::shared::ConnShared;
use crate::conn::window::{self, Inbox, Spender};
use crate::event::{DisconnectReason, Lane};
use crate::wire::batch::{Batch, Written};
use crate::wire::frame::{self, CloseCode, FrameKind};

/// A batch of fewer data frames than this is "small": written at once, its system
/// call is shared by few messages.
const SMALL_BATCH: usize = 16;

/// A writer lends its turn to write only after a batch of fewer data frames than
/// this: when traffic is sparse, a sender writing its own frame saves a wake-up; in a
/// flood, one system call per message would cost more than the batching saves.
const LEND_BELOW: usize = 4;

/// Parks without lending the turn after a lent park found a stream: a sender that
/// found the turn free queued its message anyway, because the connection had
/// written within [`crate::conn::turn`]'s quiet gap. A stream is batched best by
/// the writer taking messages as they come; a ping-pong, whose senders find the
/// connection quiet, seldom shows this and lends again after these many parks.
const STREAM_PARKS: u32 = 1024;

/// How long a parked writer sleeps while the idle thread pings for it: until
/// something wakes it (a message, a close, the rest's end).
const PINGED_ELSEWHERE: Duration = Duration::from_secs(3600);

/// What happened while the writer was parked with its turn lent.
#[derive(Default)]
struct Parked {
    /// A sender wrote a frame of its own.
    wrote: bool,
    /// A sender queued a message although the turn was free.
    stream: bool,
}

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

/// The writer's part in flow control: the grants it announces for this side, and
/// the peer's window it spends, with the one frame it may hold for want of room.
pub(crate) struct Flow {
    inbox: Arc<Inbox>,
    /// Whether the initial window has been announced.
    announced: bool,
    spender: Spender,
    held: Option<Outbound>,
    /// Room granted by the peer.
    wake: Receiver<()>,
    /// A grant due for the peer.
    nudged: Receiver<()>,
}

impl Flow {
    pub(crate) fn new(conn: &ConnShared) -> Flow {
        Flow {
            inbox: conn.inbox().clone(),
            announced: false,
            spender: Spender::new(conn.outbox.clone()),
            held: None,
            wake: conn.flow_rx.clone(),
            nudged: conn.inbox().nudged().clone(),
        }
    }
}

/// Everything the writer thread owns.
pub(crate) struct Writer {
    pub(crate) stream: Arc<Stream>,
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) lanes: LaneRx,
    /// Replies to the peer's requests, queued by `respond`.
    pub(crate) replies: Receiver<ReplyOut>,
    pub(crate) owed: Arc<Replies>,
    /// Requests for a pong, from the reader.
    pub(crate) pong: Receiver<()>,
    pub(crate) flow: Flow,
    pub(crate) ping_interval: Duration,
    pub(crate) max_batch: usize,
}

impl Writer {
    /// Runs until the connection closes, then returns the private messages that were
    /// never written, oldest first, for the connection thread to hand back.
    pub(crate) fn run(mut self) -> Vec<Bytes> {
        let mut batch = Batch::default();
        let mut last_write = Instant::now();
        // Data frames in the last batch written: few means sparse traffic, where a
        // sender writing its own frame saves a wake-up (see `crate::conn::turn`).
        let mut last_frames = 0;
        // Parks left without lending, after a stream was seen.
        let mut streaming = 0u32;
        let busy = Busy::start();
        // Whether the bytes written so far end on a frame boundary, so that a goodbye
        // can follow them.
        let mut aligned = true;
        let unsent = loop {
            if self.conn.is_closing() {
                // A batch is discarded unwritten at a close, except one that begins
                // with the rest of a frame a sender began: the peer has the start of
                // it, and a goodbye in the middle of a payload would break the stream.
                if !batch.begins_mid_frame() {
                    break self.settle(batch.discard());
                }
                let (written, result) = batch.write(&*self.stream, &mut || self.conn.progress());
                aligned = result.is_ok();
                break self.settle(written);
            }
            self.gather(&mut batch);
            if should_yield(&batch) {
                thread::yield_now();
                self.gather(&mut batch);
            }
            if self.pong.try_recv().is_ok() {
                batch.control(FrameKind::Pong);
            }
            if batch.is_empty() {
                let idle = last_write.elapsed();
                if idle < self.ping_interval {
                    let timeout = self.ping_interval - idle;
                    if last_frames >= LEND_BELOW || streaming > 0 || self.flow.held.is_some() {
                        streaming = streaming.saturating_sub(1);
                        busy.parked(|| self.wait_taking(&mut batch, timeout));
                        continue;
                    }
                    // While the connection rests, the idle thread pings through the
                    // lent turn.
                    let timeout = match self.conn.turn.pinged_elsewhere() {
                        true => PINGED_ELSEWHERE,
                        false => timeout,
                    };
                    let parked = busy.parked(|| self.wait_lent(&mut batch, timeout, last_write));
                    if parked.wrote {
                        last_write = Instant::now();
                    }
                    if parked.stream {
                        streaming = STREAM_PARKS;
                    }
                    continue;
                }
                batch.control(FrameKind::Ping);
            }
            last_frames = batch.frames();
            let (written, result) = batch.write(&*self.stream, &mut || self.conn.progress());
            let unsent = self.settle(written);
            match result {
                Ok(()) => last_write = Instant::now(),
                Err(e) => {
                    self.conn.close(DisconnectReason::Io(Arc::new(e)));
                    break unsent;
                }
            }
        };
        drop(busy);
        self.finish(unsent, aligned)
    }

    /// Takes ready messages until the batch is full: replies first (each frees a
    /// request slot of the peer's), then the private lane, so private data never
    /// waits behind gossip.
    fn gather(&mut self, batch: &mut Batch) {
        let (mut gossip, mut private) = (0, 0);
        let mut replies = 0;
        if let Some(room) = self.flow.inbox.grant(!self.flow.announced) {
            self.flow.announced = true;
            batch.control_with(FrameKind::Window, &window::encode(room));
        }
        while !batch.is_full(self.max_batch) {
            let Ok(reply) = self.replies.try_recv() else {
                break;
            };
            replies += 1;
            batch.push_reply(reply.id, reply.status, reply.body);
        }
        self.owed.taken(replies);
        while !batch.is_full(self.max_batch) {
            let item = match self.flow.held.take() {
                Some(item) => item,
                None => match self.lanes.private.try_recv() {
                    Ok(item) => {
                        private += item.len();
                        item
                    }
                    Err(_) => break,
                },
            };
            if !self.offer(batch, item) {
                break;
            }
        }
        while !batch.is_full(self.max_batch) {
            let Ok(msg) = self.lanes.gossip.try_recv() else {
                break;
            };
            gossip += msg.len();
            batch.push(Lane::Gossip, msg);
        }
        // What left the lanes frees their budgets, the frame now held included; and
        // their slots, so that no lane looks fuller than it is while this writes.
        if gossip + private > 0 {
            self.lanes.budgets.release(gossip, private);
        }
        self.lanes.private.give_back();
        self.lanes.gossip.give_back();
        self.publish(batch);
    }

    /// Adds an item of the private lane if the peer's window has room for it, or
    /// holds it until it has (returning `false`). A request is written only if its
    /// requester has not given up on it.
    fn offer(&mut self, batch: &mut Batch, item: Outbound) -> bool {
        if !self.flow.spender.has_room() {
            self.flow.held = Some(item);
            return false;
        }
        match item {
            Outbound::Private(msg) => {
                self.flow.spender.spend(msg.len() as u64);
                batch.push(Lane::Private, msg);
            }
            Outbound::Request(request) if request.take() => {
                // Counted as it is taken: its reply can come back before the write
                // call that sent it has returned here.
                self.conn.count_request(|c| &c.sent, 1);
                self.flow.spender.spend(request.body.len() as u64);
                batch.push_request(request.id, request.body.clone());
            }
            Outbound::Request(request) => self.conn.requests.unregister(request.id),
        }
        true
    }

    /// Makes the messages held in the batch, and the one held for the peer's window,
    /// visible in the lanes' `queued` figures.
    fn publish(&self, batch: &Batch) {
        let (private, gossip) = batch.counts();
        let out = &self.conn.counters.out;
        out.private
            .in_batch
            .store(private as u64 + self.held(), Relaxed);
        out.gossip.in_batch.store(gossip as u64, Relaxed);
    }

    /// Counts what a write (or a discard) of the batch achieved; returns the private
    /// messages that did not reach the socket.
    fn settle(&self, written: Written) -> Vec<Bytes> {
        let out = &self.conn.counters.out;
        out.wire_bytes.fetch_add(written.bytes as u64, Relaxed);
        out.gossip.add(written.gossip.0, written.gossip.1);
        out.private.add(written.private.0, written.private.1);
        out.gossip.drop_n(written.gossip_lost);
        out.private.in_batch.store(self.held(), Relaxed);
        out.gossip.in_batch.store(0, Relaxed);
        written.unsent
    }

    /// 1 if the writer holds a private message for the peer's window, else 0.
    fn held(&self) -> u64 {
        u64::from(matches!(self.flow.held, Some(Outbound::Private(_))))
    }

    /// Sleeps until there is something to write, the connection closes, or a ping is
    /// due, taking what woke it in the same step, as a channel receive does. While
    /// it holds a frame the peer's window has no room for, the private lane is left
    /// alone: the writer waits for the window instead.
    fn wait_taking(&mut self, batch: &mut Batch, timeout: Duration) {
        enum Got {
            Reply(ReplyOut),
            Private(Outbound),
            Gossip(Bytes),
            Pong,
            Nothing,
        }
        let got = {
            let no_private = never();
            let private = match self.flow.held {
                Some(_) => &no_private,
                None => self.lanes.private.channel(),
            };
            let gossip = self.lanes.gossip.channel();
            // A disconnected lane or pong channel means the connection is closing;
            // the loop sees that at its top. A grant to announce, or room from the
            // peer, is seen by the next gather.
            let mut sel = Select::new();
            let replies = sel.recv(&self.replies);
            let privates = sel.recv(private);
            let gossips = sel.recv(gossip);
            let pong = sel.recv(&self.pong);
            let wake = sel.recv(&self.flow.wake);
            let nudged = sel.recv(&self.flow.nudged);
            sel.recv(&self.conn.closed_rx);
            let got = match sel.select_timeout(timeout) {
                Err(_) => Got::Nothing,
                Ok(op) => match op.index() {
                    i if i == replies => op.recv(&self.replies).map_or(Got::Nothing, Got::Reply),
                    i if i == privates => op.recv(private).map_or(Got::Nothing, Got::Private),
                    i if i == gossips => op.recv(gossip).map_or(Got::Nothing, Got::Gossip),
                    i if i == pong => op.recv(&self.pong).map_or(Got::Nothing, |()| Got::Pong),
                    i if i == wake => {
                        let _ = op.recv(&self.flow.wake);
                        Got::Nothing
                    }
                    i if i == nudged => {
                        let _ = op.recv(&self.flow.nudged);
                        Got::Nothing
                    }
                    _ => {
                        let _ = op.recv(&self.conn.closed_rx);
                        Got::Nothing
                    }
                },
            };
            got
        };
        match got {
            Got::Reply(reply) => {
                self.owed.taken(1);
                batch.push_reply(reply.id, reply.status, reply.body);
            }
            Got::Private(item) => {
                self.lanes.private.took();
                let len = item.len();
                self.offer(batch, item);
                self.lanes.budgets.release(0, len);
                self.publish(batch);
            }
            Got::Gossip(msg) => {
                self.lanes.gossip.took();
                let len = msg.len();
                batch.push(Lane::Gossip, msg);
                self.lanes.budgets.release(len, 0);
                self.publish(batch);
            }
            Got::Pong => batch.control(FrameKind::Pong),
            Got::Nothing => {}
        }
    }

    /// Sleeps as [`Writer::wait_taking`] does, nothing held, but lends its turn to
    /// write meanwhile, so that a sender may write its frame itself. It only watches
    /// for readiness, and takes the turn back before it looks at a lane; the rest of
    /// a frame a sender could not finish goes first in the batch.
    fn wait_lent(&mut self, batch: &mut Batch, timeout: Duration, last_write: Instant) -> Parked {
        self.conn.turn.lend(self.flow.spender.sent(), last_write);
        let mut sel = Select::new();
        sel.recv(&self.replies);
        sel.recv(self.lanes.private.channel());
        sel.recv(self.lanes.gossip.channel());
        sel.recv(&self.pong);
        sel.recv(&self.flow.wake);
        sel.recv(&self.flow.nudged);
        sel.recv(&self.conn.closed_rx);
        sel.recv(&self.conn.turn.handed);
        let _ = sel.ready_timeout(timeout);
        // Wake-ups with nothing to take: what they signal, the next gather sees.
        let _ = self.flow.wake.try_recv();
        let _ = self.flow.nudged.try_recv();
        let Some(back) = self.conn.turn.reclaim() else {
            return Parked::default();
        };
        self.flow.spender.resume(back.sent);
        if let Some(rest) = back.rest {
            batch.push_rest(rest.kind, &rest.head, rest.body, rest.payload);
            self.publish(batch);
        }
        Parked {
            wrote: back.wrote,
            // A message queued while the turn was free: its sender found the
            // connection busy, which is a stream.
            stream: !self.lanes.private.channel().is_empty()
                || !self.lanes.gossip.channel().is_empty(),
        }
    }

    /// Collects what was never written, then says goodbye (on a graceful close).
    /// It does not wait for the peer's end: the reader lingers for that. Handing the
    /// messages back is left to the connection thread, so that the writer never
    /// waits for room in the event queue: its thread ends with the connection.
    fn finish(mut self, mut unsent: Vec<Bytes>, aligned: bool) -> Vec<Bytes> {
        // The frame held for the window is older than anything still in the lane.
        if let Some(Outbound::Private(msg)) = self.flow.held.take() {
            unsent.push(msg);
        }
        unsent.extend(self.lanes.drain(&self.conn.counters));
        // Replies never written: their requesters are told by the close.
        self.owed.taken(self.replies.try_iter().count());
        let reason = self.conn.reason();
        if aligned && reason.as_ref().is_some_and(DisconnectReason::is_graceful) {
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
            self.stream.finish_writing();
        }
        unsent
    }
}
