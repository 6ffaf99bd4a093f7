//! The life of one connection, run on its reader thread: handshake, registration,
//! the read loop, and a teardown that hands back whatever was not sent.

use std::cell::Cell;
use std::io;
use std::net::TcpStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender};

use super::redial;
use super::state::NodeShared;
use super::table::{Policy, Refusal};
use crate::conn::deliver::Delivery;
use crate::conn::handshake;
use crate::conn::lane::{self, LaneRx, Link};
use crate::conn::reader::Reader;
use crate::conn::shared::ConnShared;
use crate::conn::sink::{EventSink, Outlets};
use crate::conn::writer::Writer;
use crate::error::{HandshakeError, Limit};
use crate::event::{DisconnectReason, Event};
use crate::id::PeerId;
use crate::sync::until;
use crate::sync::Never;
use crate::wire::frame::{CloseCode, FrameKind};
use crate::wire::hello::{self, Hello};
use crate::wire::readbuf::ReadBuf;
use crate::wire::reader::FrameReader;

/// How `connect` learns the outcome of the handshake it started.
pub(crate) type Report = Sender<Result<PeerId, HandshakeError>>;

/// Who started a connection.
pub(crate) enum Origin {
    /// The peer dialled us.
    Inbound,
    /// `Node::connect`, waiting for the outcome.
    Connect(Report),
    /// The redial thread, dialling a lost peer again.
    Redial,
}

/// Runs a connection from its first byte to its last. Never panics on peer input.
pub(crate) fn run(
    node: Arc<NodeShared>,
    conn: Arc<ConnShared>,
    stream: Arc<TcpStream>,
    outlets: Outlets,
    origin: Origin,
) {
    let mut frames = FrameReader::new(
        node.pool.clone(),
        node.config.read_buffer,
        node.config.max_frame_len,
    );
    // Disconnects when the reader has finished: tells the writer, and the readers of
    // connections that replace this one, that nothing more will be delivered.
    let (done_tx, done_rx) = bounded::<Never>(0);
    let redialled = matches!(origin, Origin::Redial);
    let report = match origin {
        Origin::Connect(report) => Some(report),
        Origin::Inbound | Origin::Redial => None,
    };
    // Set once the peer has opened the connection on its side, and may be sending.
    let peer_opened = Cell::new(false);
    let shaken = contain(&conn, "handshake", || {
        let buffer = frames.buffer();
        shake_hands(
            &node,
            &conn,
            &stream,
            buffer,
            done_rx,
            redialled,
            &peer_opened,
        )
    })
    .unwrap_or(Err(HandshakeError::Io(io::ErrorKind::Other)));
    node.handshake_done(&conn);
    let Shaken {
        peer,
        lanes,
        after,
        ready,
    } = match shaken {
        Ok(shaken) => shaken,
        Err(error) => {
            let error = if conn.was_evicted() {
                HandshakeError::Limit(Limit::Handshakes)
            } else if node.is_shut() {
                // Whatever the socket said, it said it because this node is
                // shutting down (which cuts handshakes short).
                HandshakeError::Shutdown
            } else {
                error
            };
            if peer_opened.get() {
                count_what_was_sent(&conn, &stream, &mut frames, node.config.linger);
            }
            refused(&node, &conn, &outlets, report, error);
            node.retire(&conn);
            return;
        }
    };
    // The writer blocks in writes for as long as the peer makes it; only closing the
    // connection (which cuts the socket when needed) ends such a write.
    let _ = stream.set_write_timeout(None);
    let mut report = report;
    if ready.is_none() {
        if let Some(report) = report.take() {
            let _ = report.send(Ok(peer));
        }
    }
    node.opened.fetch_add(1, Relaxed);
    log::info!(
        "{}: connected to {peer} at {} ({}, {})",
        node.id,
        conn.peer_addr,
        if conn.inbound { "inbound" } else { "outbound" },
        conn.id
    );
    if let Some(redial) = &node.redial {
        redial.connected(node.id, peer);
    }
    outlets.events.emit(Event::Connected {
        peer,
        conn: conn.id,
        addr: conn.peer_addr,
        inbound: conn.inbound,
    });
    if redialled && node.redial.as_ref().is_some_and(|r| r.is_stopped(peer)) {
        // `disconnect` ran while this redial shook hands, and looked for the link
        // just before it opened (the check in `shake_hands` came just before that).
        conn.close(DisconnectReason::ClosedByUs);
    }

    let (pong_tx, pong_rx) = bounded(1);
    // The reader watches the private lane for a peer that stops draining it.
    let (private_watch, budgets) = (lanes.private.clone(), lanes.budgets.clone());
    let (writer_done_tx, writer_done) = bounded::<Never>(0);
    let writer = Writer {
        stream: stream.clone(),
        conn: conn.clone(),
        lanes,
        pong: pong_rx,
        ping_interval: node.config.ping_interval,
        max_batch: node.config.max_batch_bytes,
    };
    let (writer, mut unsent) = match spawn_writer(&node, &conn, writer, writer_done_tx) {
        Ok(handle) => (Some(handle), Vec::new()),
        Err((e, lanes)) => {
            log::error!("{}: cannot start a writer thread: {e}", node.id);
            conn.close(DisconnectReason::Io(Arc::new(e)));
            (None, lanes.drain(&conn.counters))
        }
    };
    let mut confirmed = true;
    if let (Some(deadline), true) = (ready, writer.is_some()) {
        // The follower's last handshake step, taken with the writer already running
        // (the link is open): the arbiter's word that it has opened too.
        let verdict = handshake::read_accept(&stream, frames.buffer(), peer, deadline);
        if let Err(error) = &verdict {
            confirmed = false;
            conn.close(DisconnectReason::Io(Arc::new(io::Error::other(
                error.to_string(),
            ))));
        }
        if let Some(report) = report.take() {
            let _ = report.send(verdict.map(|()| peer));
        }
    }
    drop(report);
    if writer.is_some() && confirmed {
        let reader = Reader {
            stream: &stream,
            conn: &conn,
            peer,
            pong: &pong_tx,
            config: &node.config,
            after,
            private: &private_watch,
            budgets: &budgets,
            events: &outlets.events,
            delivery: Delivery::new(
                &conn,
                peer,
                &outlets.inbound,
                &node.inbound_bytes,
                &node.inbound_log,
            ),
        };
        let reason =
            contain(&conn, "reader", || reader.run(&mut frames)).unwrap_or_else(internal_error);
        conn.close(reason);
    }
    drop(done_tx);
    node.table.reader_finished(peer, conn.id);
    // The writer may be stuck in a write the peer will never read. The reader has
    // stopped, so the linger is enforced here: once nothing has moved for a
    // linger, the socket is cut.
    if conn.wait_lingering(&writer_done).is_none() {
        conn.cut();
    }
    if let Some(writer) = writer {
        match writer.join() {
            Ok(left) => unsent.extend(left),
            Err(_) => log::error!("{}: the writer thread of {} panicked", node.id, conn.id),
        }
    }
    let reason = conn.reason().unwrap_or(DisconnectReason::ClosedByUs);
    log::info!(
        "{}: disconnected from {peer} ({}): {reason}",
        node.id,
        conn.id
    );
    // Asked for before the hand-back, which may wait for room in the event queue:
    // an application that does not read its events still gets its peer back.
    if let Some(redial) = node.redial.as_ref().filter(|_| !conn.inbound) {
        if redial::is_lost(&reason) {
            redial.lost(node.id, peer, conn.peer_addr);
        }
    }
    conn.cut();
    drop(pong_tx);
    if !unsent.is_empty() {
        undelivered(&node, &conn, &outlets.events, peer, unsent);
    }
    outlets.events.emit(Event::Disconnected {
        peer,
        conn: conn.id,
        reason,
    });
    node.retire(&conn);
}

/// Exchanges hellos, arbitrates, registers, and opens the connection once both sides
/// have accepted it. On success the connection is the peer's open link on this side,
/// and its lanes are returned for the writer, with the signals of the peer's earlier
/// readers.
fn shake_hands(
    node: &NodeShared,
    conn: &Arc<ConnShared>,
    stream: &TcpStream,
    rb: &mut ReadBuf,
    reader_done: Receiver<Never>,
    redialled: bool,
    peer_opened: &Cell<bool>,
) -> Result<Shaken, HandshakeError> {
    let config = &node.config;
    let deadline = Instant::now() + config.handshake_timeout;
    let ours = Hello {
        peer: node.id,
        incarnation: node.incarnation,
        max_frame_len: config.max_frame_len,
        authenticates: config.authenticator.is_some(),
        nonce: handshake::nonce()?,
    };
    let our_bytes = hello::encode_hello(&ours);
    let (theirs, their_bytes) = handshake::exchange_hello(stream, rb, &ours, deadline)?;
    handshake::authenticate(
        stream,
        rb,
        config.authenticator.as_deref(),
        (&ours, &our_bytes),
        (&theirs, &their_bytes),
        deadline,
    )?;
    // The lower id arbitrates; the other side waits for its verdict before it
    // registers anything.
    let arbiter = node.id < theirs.peer;
    let policy = if arbiter {
        // What the follower holds of our connections decides a tie with one we hold:
        // kept if the follower holds it or has not seen it yet, replaced if it has
        // closed it.
        let peer = handshake::read_holds(stream, rb, theirs.peer, deadline)?;
        Policy::Arbitrate { peer }
    } else {
        let holds = node.table.holds(theirs.peer, theirs.incarnation);
        handshake::send_holds(stream, holds, deadline)?;
        let generation = handshake::read_verdict(stream, rb, theirs.peer, deadline)?;
        Policy::Follow { generation }
    };
    if redialled
        && node
            .redial
            .as_ref()
            .is_some_and(|r| r.is_stopped(theirs.peer))
    {
        // The application disconnected this peer after the redial was under way.
        handshake::send_refusal(stream, CloseCode::Normal, deadline);
        return Err(HandshakeError::Closed);
    }

    let (tx, lanes) = lane::lanes(config);
    let link = Arc::new(Link::new(
        conn.clone(),
        theirs.peer,
        theirs.incarnation,
        theirs.max_frame_len,
        tx,
    ));
    // Tells the peer why the table refused the connection; the error for this side.
    let refuse = |why| {
        let (code, error) = match why {
            Refusal::Duplicate => (CloseCode::Duplicate, HandshakeError::Duplicate(theirs.peer)),
            Refusal::Shutdown => (CloseCode::Shutdown, HandshakeError::Shutdown),
            Refusal::Closing => (CloseCode::Normal, HandshakeError::Closed),
        };
        handshake::send_refusal(stream, code, deadline);
        error
    };
    let generation = node.table.register(link, policy).map_err(refuse)?;
    if arbiter {
        // Registered, but invisible to senders until the follower confirms: a
        // failure before it opens has nothing to hand back, and leaves the peer's
        // open link (if any) alone.
        handshake::send_verdict(stream, generation, deadline)?;
        handshake::read_accept(stream, rb, theirs.peer, deadline)?;
        // The follower has opened its side: its application may be sending.
        peer_opened.set(true);
    }
    // Before it opens: a close that comes later is a graceful one that lets the
    // reader and writer finish their work rather than cutting the socket.
    conn.establish();
    let opened = node.table.open(conn, reader_done).map_err(refuse)?;
    if let Some(old) = opened.replaced {
        old.conn.close(DisconnectReason::Replaced);
    }
    // Open on this side: the follower confirms the arbiter's verdict, and the
    // arbiter tells the follower it has opened too (the follower's `connect` returns
    // on that, so that when either side's `connect` returns both have the link).
    // From here the connection is an open one: a failure is reported as its
    // disconnection, after `Connected`, like any other.
    if let Err(error) = handshake::send_accept(stream, deadline) {
        conn.close(DisconnectReason::Io(Arc::new(io::Error::other(
            error.to_string(),
        ))));
    }
    Ok(Shaken {
        peer: theirs.peer,
        lanes,
        after: opened.after,
        ready: (!arbiter).then_some(deadline),
    })
}

/// Reads, for at most a linger, what the peer sent on a connection it had opened and
/// this side then refused (its last handshake step failed: shutdown, or a newer
/// connection of the peer took its place), counting the data frames as received and
/// not delivered: the peer's node counted them as sent. The refusal makes the peer
/// close its side, so this ends at its end of stream.
fn count_what_was_sent(
    conn: &ConnShared,
    stream: &TcpStream,
    frames: &mut FrameReader,
    linger: std::time::Duration,
) {
    let deadline = Instant::now() + linger;
    let inb = &conn.counters.inb;
    loop {
        for kind in frames.leftovers() {
            match kind {
                FrameKind::Private => inb.private.drop_n(1),
                FrameKind::Gossip => inb.gossip.drop_n(1),
                _ => {}
            }
        }
        let Some(left) = until(deadline) else { return };
        if stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match frames.read(stream) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                inb.wire_bytes.fetch_add(n as u64, Relaxed);
            }
        }
    }
}

/// A connection that finished its handshake on this side.
struct Shaken {
    peer: PeerId,
    lanes: LaneRx,
    /// The signals of the peer's earlier readers.
    after: Vec<Receiver<Never>>,
    /// For the follower: until when to wait for the arbiter's word that it has
    /// opened the connection too.
    ready: Option<Instant>,
}

/// Reports a refused connection: one log line, a counter, and the error to whoever
/// asked (the `connect` caller, or an `Event::Refused` for inbound connections).
fn refused(
    node: &NodeShared,
    conn: &ConnShared,
    outlets: &Outlets,
    report: Option<Report>,
    error: HandshakeError,
) {
    if let Some(redial) = node.redial.as_ref().filter(|_| !conn.inbound) {
        redial.refused(node.id, conn.peer_addr);
    }
    let direction = if conn.inbound { "from" } else { "to" };
    // Losing an arbitration is routine: the pair is connected over the other socket.
    let routine = matches!(
        error,
        HandshakeError::Duplicate(_) | HandshakeError::Shutdown
    );
    if routine {
        log::debug!(
            "{}: connection {direction} {} refused: {error}",
            node.id,
            conn.peer_addr
        );
    } else {
        node.handshakes_failed.fetch_add(1, Relaxed);
        // One line per refusal; under a flood only the first each second is a
        // warning, the others go to the debug level with the count in the warning.
        if let Some(n) = node.refusal_log.hit(conn.now_ms()) {
            log::warn!(
                "{}: connection {direction} {} refused: {error} ({n} refused since the last warning)",
                node.id,
                conn.peer_addr
            );
        } else {
            log::debug!(
                "{}: connection {direction} {} refused: {error}",
                node.id,
                conn.peer_addr
            );
        }
    }
    conn.close(match error {
        HandshakeError::Shutdown => DisconnectReason::Shutdown,
        _ => DisconnectReason::ClosedByUs,
    });
    // A connection that failed after it was established closed gracefully, which
    // leaves the socket open; nothing more will be said on it.
    conn.cut();
    match report {
        Some(report) => {
            let _ = report.send(Err(error));
        }
        None if !routine => outlets.events.emit(Event::Refused {
            addr: conn.peer_addr,
            error,
        }),
        None => {}
    }
}

/// Hands private messages that never reached the socket back to the application,
/// waiting for room in the event queue until the node shuts down.
fn undelivered(
    node: &NodeShared,
    conn: &ConnShared,
    events: &EventSink,
    peer: PeerId,
    messages: Vec<Bytes>,
) {
    let n = messages.len();
    log::info!(
        "{}: handing back {n} private message(s) for {peer} that were never sent",
        node.id
    );
    let event = Event::Undelivered {
        peer,
        conn: conn.id,
        messages,
    };
    if events.emit_or_wait(event) {
        let handed_back = &conn.counters.out.private.undelivered;
        handed_back.fetch_add(n as u64, Relaxed);
    } else {
        conn.counters.out.private.drop_n(n as u64);
        log::error!(
            "{}: lost {n} private message(s) for {peer}: the event queue stayed full until shutdown",
            node.id
        );
    }
}

/// Runs `f`, turning a panic into `None` with one error log line, so that a bug in a
/// connection's thread ends that connection and not the node's bookkeeping: the
/// caller still closes it, joins its threads and retires it.
fn contain<T>(conn: &ConnShared, part: &str, f: impl FnOnce() -> T) -> Option<T> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => Some(value),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log::error!(
                "{}: the {part} of {} panicked ({what}); closing the connection",
                conn.node,
                conn.id
            );
            None
        }
    }
}

/// The reason a connection ends when one of its threads panicked.
fn internal_error() -> DisconnectReason {
    DisconnectReason::Io(Arc::new(io::Error::other("internal error")))
}

/// Starts the writer thread; `done` disconnects when it ends. If the thread cannot
/// start, the lanes come back so that their messages can be handed back.
fn spawn_writer(
    node: &NodeShared,
    conn: &ConnShared,
    writer: Writer,
    done: Sender<Never>,
) -> Result<JoinHandle<Vec<Bytes>>, (io::Error, LaneRx)> {
    // The writer travels through a channel rather than the closure, so that a failed
    // spawn (which drops the closure) leaves it here.
    let (hand_over, parts) = bounded(1);
    if hand_over.send(writer).is_err() {
        unreachable!("a fresh channel with a live receiver has room");
    }
    let theirs = parts.clone();
    let spawned = thread::Builder::new()
        .name(format!("wl{}-w{}", node.id.0, conn.id.get()))
        .stack_size(node.config.thread_stack_size)
        .spawn(move || {
            let _done = done;
            if let Ok(writer) = theirs.recv() {
                let conn = writer.conn.clone();
                match contain(&conn, "writer", || writer.run()) {
                    Some(unsent) => return unsent,
                    None => {
                        conn.close(internal_error());
                    }
                }
            }
            Vec::new()
        });
    spawned.map_err(|e| {
        let writer = parts
            .try_recv()
            .expect("the writer is still in the channel when its thread never started");
        (e, writer.lanes)
    })
}
