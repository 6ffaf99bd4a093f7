//! The reader thread's loop: read bytes, cut frames ([`FrameReader`]), hand data to
//! the application ([`Delivery`]), answer pings.
//!
//! Many frames are parsed out of each read. The reader is also the connection's
//! clock: its reads time out every tick so that it can notice a silent peer, a peer
//! whose private lane stays full, and a graceful close that outlives its linger.

use crate::conn::stream::Stream;
use std::io::{self, Read};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes};
use crossbeam_channel::{Receiver, Select, Sender};

use super::deliver::Delivery;
use super::lane::Budgets;
use super::shared::ConnShared;
use super::sink::EventSink;
use super::timers::{ReadSpin, Silence, SlowWatch};
use super::window;
use crate::config::Config;
use crate::conn::request::{Answer, Inquiry, Outbound, Replies, UnknownReply};
use crate::event::{DisconnectReason, Event, Lane};
use crate::id::PeerId;
use crate::stats::RequestCounters;
use crate::sync::{Never, QueueWatch};
use crate::wire::frame::{FrameError, FrameKind, REPLY_PREFIX, REQUEST_PREFIX};
use crate::wire::reader::{FrameReader, NextError};

/// Where an idle reader's socket is watched while the reader sleeps: the node's
/// idle thread, named here as a trait so that this layer does
/// not name the node's.
#[cfg(unix)]
pub(crate) trait RestRoom: Sync {
    /// Hands the reading of `conn`'s socket over (the peer last heard from at the
    /// instant given) and sleeps until it comes back or the connection closes.
    /// `None` if the socket could not be handed over (the reader goes on reading).
    fn rest(
        &self,
        conn: &Arc<ConnShared>,
        heard: (PeerId, Instant),
        pong: &Sender<()>,
        timers: (std::time::Duration, std::time::Duration),
        lane_full: Box<dyn Fn() -> bool + Send + Sync>,
    ) -> Option<Woken>;
}

/// What a reader gets back with its socket after a rest.
#[cfg(unix)]
pub(crate) struct Woken {
    /// When the peer was last heard from.
    pub(crate) heard: Instant,
    /// Bytes read from the socket during the rest and not consumed there (the
    /// start of a data frame, say): they come before anything still in the socket.
    pub(crate) unread: Vec<u8>,
}

/// Everything the read loop needs, borrowed from the connection thread.
pub(crate) struct Reader<'a> {
    pub(crate) stream: &'a Stream,
    pub(crate) conn: &'a Arc<ConnShared>,
    pub(crate) peer: PeerId,
    /// Asks the writer for a pong.
    pub(crate) pong: &'a Sender<()>,
    pub(crate) config: &'a Config,
    /// Disconnect when the earlier readers of this peer have finished; nothing is
    /// delivered before, so the peer's messages keep their order.
    pub(crate) after: Vec<Receiver<Never>>,
    /// The private lane, watched for a peer that stops draining it.
    pub(crate) private: &'a QueueWatch<Outbound>,
    pub(crate) budgets: &'a Arc<Budgets>,
    /// Where the reader rests while the connection is idle (plaintext only).
    #[cfg(unix)]
    pub(crate) idle: Option<&'a dyn RestRoom>,
    /// For reporting a slow peer.
    pub(crate) events: &'a EventSink,
    pub(crate) delivery: Delivery<'a>,
    /// The reply lane, for the requests this reader delivers.
    pub(crate) replies: Arc<Replies>,
    /// The largest payload the peer accepts: a reply's limit.
    pub(crate) peer_max_frame: u32,
}

impl Reader<'_> {
    /// Runs until the connection ends, and returns why it ended from the reader's
    /// point of view (the first reason recorded on the connection wins).
    pub(crate) fn run(&self, frames: &mut FrameReader) -> DisconnectReason {
        let reason = self.read_until_the_end(frames);
        if matches!(reason, DisconnectReason::ClosedByPeer) {
            // Closed first, so that our goodbye goes out: a peer may wait for it
            // before it ends its stream.
            self.conn.close(reason.clone());
            self.read_past_the_goodbye();
        }
        // Whole data frames read but never handed on (the connection ended while the
        // reader waited with one) were received: count them, so that every message
        // the peer's kernel handed over is delivered or counted.
        for kind in frames.leftovers() {
            match kind {
                FrameKind::Private => self.delivery.lost(Lane::Private),
                FrameKind::Gossip => self.delivery.lost(Lane::Gossip),
                _ => {}
            }
        }
        reason
    }

    /// After the peer's goodbye, reads to the end of its stream (a TLS peer's
    /// `close_notify`, then the end of TCP), within a linger. Nothing follows a
    /// goodbye but that, and it must not be left unread: a socket closed with unread
    /// bytes resets the connection, and the reset makes the peer's kernel throw away
    /// what it had received from us and not yet handed to its reader — the frames
    /// before our own goodbye, which the peer, lingering, would have read.
    fn read_past_the_goodbye(&self) {
        let until = Instant::now() + self.config.linger;
        let (mut stream, mut rest) = (self.stream, [0u8; 512]);
        while Instant::now() < until {
            match stream.read(&mut rest) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    }

    fn read_until_the_end(&self, frames: &mut FrameReader) -> DisconnectReason {
        if let Err(e) = self.stream.set_read_timeout(Some(self.config.read_tick())) {
            return DisconnectReason::Io(Arc::new(e));
        }
        if !self.wait_for_earlier_readers() {
            // Closed by force meanwhile: nothing of this connection will be
            // delivered. The close already has its reason; this one is never recorded.
            return DisconnectReason::ClosedByUs;
        }
        let mut silence = Silence::new(Instant::now(), self.config.silence_timeout);
        let mut slow = SlowWatch::new(self.config.slow_peer_after);
        let mut spin = ReadSpin::new(self.config.read_spin);
        loop {
            // Deliver every complete frame already buffered.
            let mut brought_data = false;
            let stop = loop {
                let next = frames.next(|kind, len| self.delivery.credit(kind, len, &mut silence));
                let (kind, payload) = match next {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break None,
                    Err(NextError::Frame(e)) => break Some(DisconnectReason::Protocol(e.into())),
                    Err(NextError::Refused(reason)) => break Some(reason),
                };
                brought_data |= kind.is_data();
                if let Err(reason) = self.handle(kind, payload) {
                    break Some(reason);
                }
            };
            self.delivery.flush();
            if let Some(reason) = stop.or_else(|| self.linger_capped(frames)) {
                return reason;
            }
            // Whatever this reads is parsed before the loop looks at the linger again,
            // so that every frame the peer's kernel took is delivered or counted.
            let read = match brought_data {
                true => self.read_soon(frames, &mut spin),
                false => frames.read(self.stream),
            };
            self.watch_slow(&mut slow);
            match read {
                Ok(0) if !frames.in_frame() => return DisconnectReason::ClosedByPeer,
                Ok(0) => {
                    return DisconnectReason::Io(Arc::new(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a frame",
                    )));
                }
                Ok(n) => {
                    silence.heard(Instant::now());
                    let wire = &self.conn.counters.inb.wire_bytes;
                    wire.fetch_add(n as u64, Relaxed);
                    if frames.reading_large().is_some() {
                        // A large payload arriving keeps a graceful close lingering.
                        self.conn.progress();
                    }
                }
                Err(e) => {
                    let idle = matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    );
                    if idle {
                        // Idle for a tick: hand the read block back to the pool.
                        frames.release();
                    }
                    if let Some(reason) = self.on_read_error(e, &silence) {
                        return reason;
                    }
                    #[cfg(unix)]
                    if idle {
                        if let Some(woken) = self.rest(frames, &silence) {
                            silence.heard(woken.heard);
                            let mut unread = &woken.unread[..];
                            while !unread.is_empty() {
                                // A slice's read never fails, and takes a byte at least.
                                if !matches!(frames.read(&mut unread), Ok(1..)) {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reads after a read that brought data: first with reads that never wait,
    /// again and again for a while (see [`Config::read_spin`]), giving way to other
    /// threads between tries, since the next message of a conversation often comes
    /// sooner than the kernel would wake this thread for it; then with the read
    /// that sleeps. A try that finds bytes is the read, so a stream of data costs
    /// no more system calls than without the tries. Holds nothing while it tries.
    fn read_soon(&self, frames: &mut FrameReader, spin: &mut ReadSpin) -> io::Result<usize> {
        let limit = match spin.next() {
            // A session holding data returns it at once: nothing to try for.
            Some(limit) if !self.stream.holds_unread() => limit,
            _ => return frames.read(self.stream),
        };
        let until = Instant::now() + limit;
        loop {
            match frames.read(self.stream.no_wait()) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                read => {
                    spin.found(true);
                    return read;
                }
            }
            if Instant::now() >= until {
                break;
            }
            std::thread::yield_now();
        }
        spin.found(false);
        frames.read(self.stream)
    }

    /// Sleeps while the connection is idle, its socket watched by the node's idle
    /// thread, which reads pings and pongs and hands the
    /// socket back for anything else. `None` if the connection cannot rest: over
    /// TLS, in the middle of a frame, closing, or with the private lane to the peer
    /// full (the reader watches that on every tick).
    #[cfg(unix)]
    fn rest(&self, frames: &FrameReader, silence: &Silence) -> Option<Woken> {
        let idle = self.idle?;
        let full = self.private.is_full() || self.budgets.private.is_full();
        if full || frames.in_frame() || self.stream.is_tls() || self.conn.is_closing() {
            return None;
        }
        let (private, budgets) = (self.private.clone(), self.budgets.clone());
        idle.rest(
            self.conn,
            (self.peer, silence.last()),
            self.pong,
            (self.config.ping_interval, self.config.silence_timeout),
            Box::new(move || private.is_full() || budgets.private.is_full()),
        )
    }

    /// Acts on one frame: data to the application, a ping answered, a close.
    fn handle(&self, kind: FrameKind, payload: Bytes) -> Result<(), DisconnectReason> {
        match kind {
            FrameKind::Gossip => self.delivery.deliver(Lane::Gossip, payload, None),
            FrameKind::Private => self.delivery.deliver(Lane::Private, payload, None),
            FrameKind::Request => {
                let (id, body) = split_id(payload, REQUEST_PREFIX);
                if !self.replies.owe() {
                    return Err(protocol(FrameError::TooManyRequests));
                }
                let inquiry = Inquiry::new(
                    id,
                    self.conn,
                    self.replies.clone(),
                    self.peer_max_frame,
                    self.events.shutdown(),
                );
                self.delivery.deliver(Lane::Request, body, Some(inquiry))
            }
            FrameKind::Reply => {
                let status = payload[REQUEST_PREFIX];
                let (id, body) = split_id(payload, REPLY_PREFIX);
                let completed = match self.conn.requests.complete(id, status, body) {
                    Ok(completed) => completed,
                    Err(UnknownReply) => return Err(protocol(FrameError::UnknownReply)),
                };
                let counter: fn(&RequestCounters) -> &AtomicU64 = match &completed {
                    None => |c| &c.late,
                    Some((_, Answer::Replied(_))) => |c| &c.answered,
                    Some((_, Answer::Unanswered)) => |c| &c.unanswered,
                };
                self.conn.count_request(counter, 1);
                if let Some((requester, answer)) = completed {
                    // Never waits: the channel holds the one answer.
                    let _ = requester.try_send(answer);
                }
                Ok(())
            }
            FrameKind::Ping => {
                // A pong already pending answers this ping too.
                let _ = self.pong.try_send(());
                Ok(())
            }
            FrameKind::Pong => Ok(()),
            FrameKind::Window => {
                if self.conn.outbox.grant(window::decode(&payload)) {
                    Ok(())
                } else {
                    Err(protocol(FrameError::WindowExceeded))
                }
            }
            FrameKind::Close => Err(DisconnectReason::ClosedByPeer),
            FrameKind::Hello
            | FrameKind::Accept
            | FrameKind::Auth
            | FrameKind::Holds
            | FrameKind::Verdict => Err(protocol(FrameError::Unexpected(kind))),
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
    /// data still moves. First it stops waiting for the application and reads what
    /// the peer has already sent — counting what finds no room — so that the kernels'
    /// buffers, which can hold a hundred thousand small messages, are not thrown away
    /// unseen; it cuts the socket once nothing arrives for a linger (a read tick
    /// sees to that), or after another cap at the most.
    fn linger_capped(&self, frames: &FrameReader) -> Option<DisconnectReason> {
        if !self.conn.is_closing() || !self.conn.linger_cap_over() {
            return None;
        }
        if !self.delivery.stopped_waiting() {
            log::warn!(
                "{}: the close of {} to {} outlasted ten lingers; reading what is left without waiting for the application",
                self.conn.node,
                self.conn.id,
                self.peer
            );
            self.delivery.stop_waiting();
        }
        if !self.conn.linger_drained() {
            return None;
        }
        log::warn!(
            "{}: the close of {} to {} still had data after another ten lingers; cutting it",
            self.conn.node,
            self.conn.id,
            self.peer
        );
        self.lose_large(frames);
        self.conn.cut();
        Some(DisconnectReason::ClosedByUs)
    }

    /// Counts the large frame being read, if any, as received and not delivered: at
    /// the cap, the peer has most likely written it all and counted it as sent. (A
    /// frame cut short by the peer's end is not counted: the peer did not send it.)
    fn lose_large(&self, frames: &FrameReader) {
        match frames.reading_large() {
            Some(FrameKind::Private) => self.delivery.lost(Lane::Private),
            Some(_) => self.delivery.lost(Lane::Gossip),
            None => {}
        }
    }

    /// Decides what a failed read means: a tick (check for silence and for an
    /// expired linger), or the end.
    fn on_read_error(&self, e: io::Error, silence: &Silence) -> Option<DisconnectReason> {
        match e.kind() {
            io::ErrorKind::Interrupted => None,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                if let Some(reason) = self.linger_expired() {
                    return Some(reason);
                }
                let silent = silence.dead(Instant::now())?;
                log::warn!(
                    "{}: {} sent nothing for {silent:?}; declaring it dead",
                    self.conn.node,
                    self.peer,
                );
                Some(DisconnectReason::Dead)
            }
            _ => Some(DisconnectReason::Io(Arc::new(e))),
        }
    }

    /// Reports a peer whose private lane stays full (and closes the connection if the
    /// node is set to). Runs on every read and every tick, so at least twice a linger.
    fn watch_slow(&self, slow: &mut SlowWatch) {
        let full = self.private.is_full() || self.budgets.private.is_full();
        let Some(full_for) = slow.observe(full, Instant::now()) else {
            return;
        };
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
        self.events.emit(Event::SlowPeer {
            peer: self.peer,
            conn: self.conn.id,
            full_for,
        });
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
}

/// A request's or reply's id (the first eight bytes), and the body after `prefix`
/// bytes. The frame's header was checked to hold at least `prefix` bytes.
fn split_id(mut payload: Bytes, prefix: usize) -> (u64, Bytes) {
    let id = u64::from_be_bytes(payload[..8].try_into().expect("eight bytes"));
    payload.advance(prefix);
    (id, payload)
}

fn protocol(e: FrameError) -> DisconnectReason {
    DisconnectReason::Protocol(e.into())
}
