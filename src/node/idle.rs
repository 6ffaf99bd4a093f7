//! The resting room: one thread per node that watches the sockets of idle
//! connections, so that their readers can sleep.
//!
//! A reader wakes for every read timeout and every frame, and on a quiet
//! connection almost every frame is a ping or a pong. With thousands of idle
//! peers those wake-ups are most of a node's work. So a reader whose read timed
//! out with nothing buffered hands its socket's reading to this thread and sleeps
//! on a channel. This thread polls all the rested sockets at once (`mio`), reads
//! the pings and pongs itself, answers the pings, and wakes the reader for
//! anything else: a data frame, part of a frame, the end of the stream, an error,
//! a peer silent for the silence timeout, or a private lane to the peer that has
//! filled (the reader watches for a slow peer).
//! A close wakes the reader too, through the connection's close signal.
//!
//! It writes the rested connections' pings and pongs through the writer's lent
//! turn, as a sender writes its frame, so that their writers sleep too. Each rest
//! is looked at when its next ping or the end of its peer's silence timeout is
//! due (on a grid of due times, many rests to a step), not on a tick: an idle
//! connection costs this thread a ping written, a pong read and one look per ping
//! interval, and its reader and writer nothing.
//!
//! Who reads is decided by one atomic per rest, never a lock: only the thread that
//! moved it to [`BUSY`] or holds it as [`READER`] touches the socket. The reader
//! taking its socket back waits at most for this thread's reads of what is
//! already in one socket, and the hand-back that follows them. This thread reads a
//! few frames' worth at once; if that is anything but whole pings and pongs, the
//! bytes go to the reader with the socket, to be parsed before anything it reads.
//!
//! Only plaintext connections rest: over TLS a ping cannot be told from data
//! without the session's keys, which the reader owns.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU64, AtomicU8};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Select, Sender, TryRecvError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use crate::conn::reader::{RestRoom, Woken};
use crate::conn::shared::ConnShared;
use crate::id::PeerId;
use crate::node::acceptor::stop_poll_thread;
use crate::wire::frame::{decode_header, FrameKind, HEADER_LEN};

const WAKE: Token = Token(usize::MAX);

/// This thread may read the socket.
const IDLER: u8 = 0;
/// This thread is reading the socket.
const BUSY: u8 = 1;
/// The reader has the socket (back).
const READER: u8 = 2;

/// Bytes read at once: a few pings' and pongs' worth. More is not idle.
const AT_ONCE: usize = 8 * HEADER_LEN;

/// The grid rests' due times are rounded up to (or a quarter of the shortest
/// ping interval, if that is less).
const GRID: Duration = Duration::from_millis(250);

/// The node's handle on its resting room.
pub(crate) struct Idle {
    shared: Arc<IdleShared>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

struct IdleShared {
    /// Rests handed over or taken back and not yet seen by the thread; `None` once
    /// it has stopped.
    lists: Mutex<Option<Lists>>,
    waker: Waker,
    /// Connections resting now.
    resting: AtomicU64,
}

#[derive(Default)]
struct Lists {
    arriving: Vec<Arc<Rest>>,
    /// Taken back by their readers: no longer to be polled.
    leaving: Vec<Arc<Rest>>,
}

/// The loop's part, moved to its thread.
pub(crate) struct IdleLoop {
    poll: Poll,
}

/// One reader's rest: its connection's socket, watched until it is handed back.
pub(crate) struct Rest {
    state: AtomicU8,
    conn: Arc<ConnShared>,
    peer: PeerId,
    /// Asks the writer for a pong.
    pong: Sender<()>,
    /// Wakes the reader: the socket is its again.
    back: Sender<()>,
    /// When the peer was last heard from, in nanoseconds after `since`.
    heard: AtomicU64,
    since: Instant,
    silence_timeout: Duration,
    ping_interval: Duration,
    /// Whether the private lane to the peer is full.
    lane_full: Box<dyn Fn() -> bool + Send + Sync>,
    /// Bytes read from the socket that were not this thread's to consume: the
    /// reader's, with the socket.
    unread: Mutex<Vec<u8>>,
}

/// What a resting reader holds: its rest, and the channel it sleeps on.
struct Resting {
    rest: Arc<Rest>,
    back: Receiver<()>,
    idle: Arc<IdleShared>,
}

pub(crate) fn new() -> io::Result<(Idle, IdleLoop)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKE)?;
    Ok((
        Idle {
            shared: Arc::new(IdleShared {
                lists: Mutex::new(Some(Lists::default())),
                waker,
                resting: AtomicU64::new(0),
            }),
            handle: Mutex::new(None),
        },
        IdleLoop { poll },
    ))
}

impl Idle {
    /// Starts the thread, named after `node`.
    pub(crate) fn start(&self, node: PeerId, stack: usize, state: IdleLoop) -> io::Result<()> {
        let shared = self.shared.clone();
        let handle = thread::Builder::new()
            .name(format!("wl{}-idle", node.0))
            .stack_size(stack)
            .spawn(move || run(state.poll, &shared))?;
        *self.handle.lock() = Some(handle);
        Ok(())
    }

    /// Stops the thread and joins it; every reader still resting gets its socket
    /// back. Idempotent.
    pub(crate) fn stop(&self) {
        let lists = self.shared.lists.lock().take();
        for rest in lists.into_iter().flat_map(|l| l.arriving) {
            hand_back(&rest);
        }
        stop_poll_thread(&self.shared.waker, &self.handle, "idle");
    }

    /// Connections whose readers rest now.
    pub(crate) fn resting(&self) -> u64 {
        self.shared.resting.load(Relaxed)
    }

    /// Hands the reading of `conn`'s socket over; the peer was last heard from at
    /// `heard`. `None` if the thread has stopped (the reader goes on reading).
    fn hand_over(
        &self,
        conn: &Arc<ConnShared>,
        (peer, heard): (PeerId, Instant),
        pong: &Sender<()>,
        (ping_interval, silence_timeout): (Duration, Duration),
        lane_full: Box<dyn Fn() -> bool + Send + Sync>,
    ) -> Option<Resting> {
        let (back_tx, back) = bounded(1);
        let since = heard;
        let rest = Arc::new(Rest {
            state: AtomicU8::new(IDLER),
            conn: conn.clone(),
            peer,
            pong: pong.clone(),
            back: back_tx,
            heard: AtomicU64::new(0),
            since,
            silence_timeout,
            ping_interval,
            lane_full,
            unread: Mutex::new(Vec::new()),
        });
        {
            let mut lists = self.shared.lists.lock();
            lists.as_mut()?.arriving.push(rest.clone());
        }
        if self.shared.waker.wake().is_err() {
            // The thread may never see it: take it back at once.
            rest.reclaim();
            return None;
        }
        Some(Resting {
            rest,
            back,
            idle: self.shared.clone(),
        })
    }
}

impl RestRoom for Idle {
    fn rest(
        &self,
        conn: &Arc<ConnShared>,
        heard: (PeerId, Instant),
        pong: &Sender<()>,
        timers: (Duration, Duration),
        lane_full: Box<dyn Fn() -> bool + Send + Sync>,
    ) -> Option<Woken> {
        let resting = self.hand_over(conn, heard, pong, timers, lane_full)?;
        Some(resting.sleep(&conn.closed_rx))
    }
}

impl Resting {
    /// Sleeps until the socket is handed back or the connection closes, then takes
    /// the socket back, with whatever this thread read and left for the reader.
    fn sleep(self, closed: &Receiver<crate::sync::Never>) -> Woken {
        loop {
            let mut sel = Select::new();
            sel.recv(&self.back);
            sel.recv(closed);
            let _ = sel.ready();
            // `ready` may return when nothing is: sleep again unless something is.
            let handed_back = self.back.try_recv().is_ok();
            let closing = matches!(closed.try_recv(), Err(TryRecvError::Disconnected));
            if handed_back || closing || self.rest.state.load(Acquire) == READER {
                break;
            }
        }
        if self.rest.reclaim() {
            // Taken back before the thread handed it: it stops polling the socket.
            if let Some(lists) = self.idle.lists.lock().as_mut() {
                lists.leaving.push(self.rest.clone());
            }
            let _ = self.idle.waker.wake();
        }
        Woken {
            heard: self.rest.heard_at(),
            unread: std::mem::take(&mut *self.rest.unread.lock()),
        }
    }
}

impl Rest {
    /// Takes the socket back for the reader; waits while the resting room reads it
    /// (reads of what is already there). Returns whether the reader took it, rather
    /// than the thread handing it back.
    fn reclaim(&self) -> bool {
        let took = loop {
            match self.state.compare_exchange(IDLER, READER, AcqRel, Acquire) {
                Ok(_) => break true,
                Err(READER) => break false,
                Err(_) => thread::yield_now(),
            }
        };
        self.conn.turn.ping_elsewhere(false);
        took
    }

    /// Pings the peer through the writer's lent turn, if a ping is due (or
    /// `anyway`: a rest's first look) and the writer is parked (if it is not, it
    /// pings itself).
    fn ping_if_due(&self, anyway: bool) {
        let turn = &self.conn.turn;
        if !anyway && turn.quiet_for() < self.ping_interval {
            return;
        }
        if let Some(held) = turn.take() {
            held.write(&self.conn, FrameKind::Ping, &[], bytes::Bytes::new());
        }
    }

    /// When this rest needs looking at next: its next ping, or the end of the
    /// peer's silence timeout; never sooner than an eighth of a ping interval (a
    /// writer that is not parked pings itself meanwhile). [`Rests::schedule`]
    /// rounds it up to the grid.
    fn next_due(&self, now: Instant) -> Instant {
        let ping = self.conn.turn.last_write() + self.ping_interval;
        let silence = self.heard_at() + self.silence_timeout;
        ping.min(silence).max(now + self.ping_interval / 8)
    }

    /// The step of the grid rests are looked at on.
    fn grid(&self) -> Duration {
        GRID.min(self.ping_interval / 4)
    }

    fn heard_at(&self) -> Instant {
        self.since + Duration::from_nanos(self.heard.load(Relaxed))
    }

    fn heard(&self) {
        let ns = self.since.elapsed().as_nanos() as u64;
        self.heard.store(ns, Relaxed);
    }

    fn fd(&self) -> RawFd {
        self.conn.stream().tcp().as_raw_fd()
    }

    /// Reads what arrived and answers its pings if it is only whole pings and
    /// pongs; otherwise leaves the bytes for the reader. Returns whether the reader
    /// must have the socket back.
    ///
    /// The read never waits (readiness may be stale). Fewer bytes than asked for
    /// is all there was: bytes arriving later are a new readiness event.
    fn read_controls(&self) -> bool {
        let mut buf = [0u8; AT_ONCE];
        let n = loop {
            match self.conn.stream().no_wait().read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return false
                }
                Err(_) => return true,
            }
        };
        // The end of the stream: the reader's to read again.
        if n == 0 {
            return true;
        }
        self.heard();
        let wire = &self.conn.counters.inb.wire_bytes;
        wire.fetch_add(n as u64, Relaxed);
        let mut pings = 0;
        // More than a few frames is not idle; data, part of a frame or nonsense is
        // the reader's to read or refuse.
        let controls = n < AT_ONCE
            && buf[..n]
                .chunks(HEADER_LEN)
                .all(|frame| match decode_header(frame, 0) {
                    Ok(Some(h)) if h.len == 0 && h.kind == FrameKind::Ping => {
                        pings += 1;
                        true
                    }
                    Ok(Some(h)) => h.len == 0 && h.kind == FrameKind::Pong,
                    _ => false,
                });
        if !controls {
            *self.unread.lock() = buf[..n].to_vec();
            return true;
        }
        if pings > 0 {
            // One pong answers them all.
            self.pong();
        }
        false
    }

    /// Answers the peer's pings: through the writer's lent turn if it is parked,
    /// as a ping is written, sparing it a wake-up; else by asking it.
    fn pong(&self) {
        match self.conn.turn.take() {
            Some(held) => {
                held.write(&self.conn, FrameKind::Pong, &[], bytes::Bytes::new());
            }
            None => {
                let _ = self.pong.try_send(());
            }
        }
    }
}

/// A rest being polled.
struct Polled {
    rest: Arc<Rest>,
    /// Tells this rest's looks from those of an earlier rest of the same socket.
    serial: u64,
    /// Whether the rest's first look, which pings whatever the interval says, is
    /// still to come.
    first: bool,
}

fn run(mut poll: Poll, shared: &IdleShared) {
    let mut events = Events::with_capacity(1024);
    let mut rests = Rests::new(Instant::now());
    let mut serial = 0u64;
    loop {
        if let Err(e) = poll.poll(&mut events, rests.until_due(Instant::now())) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("the idle connections' poll failed: {e}");
                break;
            }
        }
        let mut woken = false;
        for event in events.iter() {
            if event.token() == WAKE {
                woken = true;
                continue;
            }
            let fd = event.token().0;
            if rests.get(fd).is_some_and(|p| serve(&p.rest)) {
                rests.forget(&poll, fd, shared);
            }
        }
        if woken {
            // `None`: the node is stopping.
            let Some(lists) = shared.lists.lock().as_mut().map(std::mem::take) else {
                break;
            };
            for rest in lists.leaving {
                if let Some(fd) = rests.fd_of(&rest) {
                    rests.forget(&poll, fd, shared);
                }
            }
            let now = Instant::now();
            for rest in lists.arriving {
                let raw = rest.fd();
                let Ok(fd) = usize::try_from(raw) else {
                    hand_back(&rest);
                    continue;
                };
                // The same socket, rested before: its old rest is over.
                rests.forget(&poll, fd, shared);
                let registered =
                    poll.registry()
                        .register(&mut SourceFd(&raw), Token(fd), Interest::READABLE);
                if let Err(e) = registered {
                    log::warn!("cannot watch an idle connection to {}: {e}", rest.peer);
                    hand_back(&rest);
                    continue;
                }
                shared.resting.fetch_add(1, Relaxed);
                rest.conn.turn.ping_elsewhere(true);
                serial += 1;
                // Rests that begin together (after a connect storm, say) would
                // ping together for ever, in one burst that takes a core from
                // whatever else runs: each first ping goes out early, in one of
                // eight slots of the interval, and the later ones follow it.
                let slot = rest.ping_interval * (1 + (serial % 8) as u32) / 8;
                let at = (now + slot).min(rest.next_due(now));
                rests.schedule(at, rest.grid(), fd, serial);
                let first = true;
                rests.insert(
                    fd,
                    Polled {
                        rest,
                        serial,
                        first,
                    },
                );
            }
        }
        let now = Instant::now();
        while let Some(looks) = rests.take_due(now) {
            for &(fd, serial) in &looks {
                let Some(p) = rests.get_mut(fd).filter(|p| p.serial == serial) else {
                    continue;
                };
                if p.rest.state.load(Acquire) == READER || due_back(&p.rest) {
                    rests.forget(&poll, fd, shared);
                    continue;
                }
                p.rest.ping_if_due(std::mem::take(&mut p.first));
                let (at, grid) = (p.rest.next_due(now), p.rest.grid());
                rests.schedule(at, grid, fd, serial);
            }
            rests.recycle(looks);
        }
    }
    // Whatever rests is handed back: no reader sleeps on a thread that has gone.
    let lists = shared.lists.lock().take();
    for rest in lists.into_iter().flat_map(|l| l.arriving) {
        hand_back(&rest);
    }
    for fd in 0..rests.polled.len() {
        rests.forget(&poll, fd, shared);
    }
}

/// The rests being polled, and when each is looked at next.
///
/// A look touches one rest's memory, cold after a ping interval; with thousands
/// of rests, finding it is part of the cost. So rests are kept by socket
/// descriptor, which is also their poll token (a socket is registered once at a
/// time, and stays open while its rest holds it), and looks are kept by grid
/// step, many to a step.
struct Rests {
    polled: Vec<Option<Polled>>,
    /// Looks due, by their time in nanoseconds after `epoch`, on the grid; looks
    /// of rests gone are skipped by their serial.
    due: BTreeMap<u64, Vec<(usize, u64)>>,
    epoch: Instant,
    /// An emptied list of looks, kept for the next step.
    spare: Vec<(usize, u64)>,
}

impl Rests {
    fn new(epoch: Instant) -> Rests {
        Rests {
            polled: Vec::new(),
            due: BTreeMap::new(),
            epoch,
            spare: Vec::new(),
        }
    }

    fn get(&self, fd: usize) -> Option<&Polled> {
        self.polled.get(fd)?.as_ref()
    }

    fn get_mut(&mut self, fd: usize) -> Option<&mut Polled> {
        self.polled.get_mut(fd)?.as_mut()
    }

    fn insert(&mut self, fd: usize, polled: Polled) {
        if self.polled.len() <= fd {
            self.polled.resize_with(fd + 1, || None);
        }
        self.polled[fd] = Some(polled);
    }

    /// The socket of `rest`, if it is still polled.
    fn fd_of(&self, rest: &Arc<Rest>) -> Option<usize> {
        let fd = usize::try_from(rest.fd()).ok()?;
        let p = self.get(fd)?;
        Arc::ptr_eq(&p.rest, rest).then_some(fd)
    }

    /// Looks at a rest at `at`, rounded up to a step of `grid` from the epoch, so
    /// that many rests come due at once: one wake-up of this thread writes all
    /// their pings, and their pongs come back together. A ping goes out at the
    /// first step at or after it is due: never before the interval, at most a step
    /// after it (the peer's silence timeout is several intervals); rounding down
    /// instead would ping about an eighth more often.
    fn schedule(&mut self, at: Instant, grid: Duration, fd: usize, serial: u64) {
        let grid = grid.as_nanos().max(1);
        let since = at.saturating_duration_since(self.epoch).as_nanos();
        let step = u64::try_from(since.div_ceil(grid) * grid).unwrap_or(u64::MAX);
        let spare = &mut self.spare;
        self.due
            .entry(step)
            .or_insert_with(|| std::mem::take(spare))
            .push((fd, serial));
    }

    /// How long until the next look is due; `None` if none is.
    fn until_due(&self, now: Instant) -> Option<Duration> {
        let (&step, _) = self.due.first_key_value()?;
        Some((self.epoch + Duration::from_nanos(step)).saturating_duration_since(now))
    }

    /// The looks of the earliest step, if it is due by `now`.
    fn take_due(&mut self, now: Instant) -> Option<Vec<(usize, u64)>> {
        let entry = self.due.first_entry()?;
        if self.epoch + Duration::from_nanos(*entry.key()) > now {
            return None;
        }
        Some(entry.remove())
    }

    /// Keeps a list of looks, done with, for a later step.
    fn recycle(&mut self, mut looks: Vec<(usize, u64)>) {
        looks.clear();
        if looks.capacity() > self.spare.capacity() {
            self.spare = looks;
        }
    }

    /// Stops polling the rest of socket `fd`, if there is one, handing the socket
    /// back if the reader does not have it.
    fn forget(&mut self, poll: &Poll, fd: usize, shared: &IdleShared) {
        let Some(p) = self.polled.get_mut(fd).and_then(Option::take) else {
            return;
        };
        let _ = poll.registry().deregister(&mut SourceFd(&p.rest.fd()));
        shared.resting.fetch_sub(1, Relaxed);
        p.rest.conn.turn.ping_elsewhere(false);
        // The reader may be reading it already; a hand-back then changes nothing.
        if p.rest.state.load(Acquire) != READER {
            // BUSY only if `serve` left it so for this: only this thread makes it BUSY.
            hand_back(&p.rest);
        }
    }
}

/// Whether a rest must end for the reader to act: the peer silent too long, or the
/// private lane to it full.
///
/// The lane is looked at only while the writer is at work: a writer lends its turn
/// only when parked with empty lanes, and takes it back as soon as a message is
/// queued, so a lane stays full only while the writer has the turn. That spares
/// most looks the lane's and the budget's memory, cold after a ping interval: with
/// thousands of rests, such misses were most of this thread's time.
fn due_back(rest: &Rest) -> bool {
    rest.heard_at().elapsed() >= rest.silence_timeout
        || (!rest.conn.turn.lent() && (rest.lane_full)())
}

/// Reads what arrived on a rested socket; whether the reader must have it back.
/// If so, the socket stays [`BUSY`] for the caller to hand back once the rest is
/// no longer counted, so that `NodeStats::resting` never counts a rest whose
/// reader is already awake.
fn serve(rest: &Rest) -> bool {
    if rest
        .state
        .compare_exchange(IDLER, BUSY, AcqRel, Acquire)
        .is_err()
    {
        // The reader took it back.
        return true;
    }
    let back = rest.read_controls();
    if !back {
        rest.state.store(IDLER, Release);
    }
    back
}

fn hand_back(rest: &Rest) {
    rest.conn.turn.ping_elsewhere(false);
    rest.state.store(READER, Release);
    let _ = rest.back.try_send(());
}
