//! The life of one connection, run on its reader thread: admission (see
//! [`super::admission`]), the read loop, and a teardown that hands back whatever was
//! not sent.

use crate::conn::stream::Stream;
use std::cell::Cell;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{bounded, Sender};

use super::admission::{count_what_was_sent, refused, shake_hands, Admitted, Purpose, Shaken};
use super::redial;
use super::state::NodeShared;
use crate::conn::deliver::Delivery;
use crate::conn::handshake;
use crate::conn::lane::LaneRx;
use crate::conn::reader::Reader;
#[cfg(unix)]
use crate::conn::reader::RestRoom;
use crate::conn::request::reply_lane;
use crate::conn::shared::ConnShared;
use crate::conn::sink::{EventSink, Outlets};
use crate::conn::window::Inbox;
use crate::conn::writer::{Flow, Writer};
use crate::error::{HandshakeError, Limit};
use crate::event::{DisconnectReason, Event};
use crate::id::{Fingerprint, PeerId};
use crate::sync::{FutexRoom, Never};
use crate::wire::reader::FrameReader;

/// How `connect` learns the outcome of the handshake it started.
pub(crate) type Report = Sender<Result<PeerId, HandshakeError>>;

/// How `probe` learns who answered its probe, or why it was refused.
pub(crate) type ProbeReport = Sender<Result<(PeerId, Option<Fingerprint>), HandshakeError>>;

/// Who started a connection.
pub(crate) enum Origin {
    /// The peer dialled us.
    Inbound,
    /// `Node::connect`, waiting for the outcome.
    Connect(Report),
    /// The redial thread, dialling a lost peer again.
    Redial,
    /// `Node::probe`, waiting for the outcome until the deadline.
    Probe(ProbeReport, Instant),
}

/// Who waits for the outcome of a handshake.
pub(crate) enum Waiter {
    /// Nobody: a refusal is reported in an `Event::Refused`.
    Nobody,
    Connect(Report),
    Probe(ProbeReport),
}

/// Runs a connection from its first byte to its last. Never panics on peer input.
pub(crate) fn run(
    node: Arc<NodeShared>,
    conn: Arc<ConnShared>,
    stream: Arc<Stream>,
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
    let (purpose, waiter) = match origin {
        Origin::Inbound => (Purpose::Connect, Waiter::Nobody),
        Origin::Connect(report) => (Purpose::Connect, Waiter::Connect(report)),
        Origin::Redial => (Purpose::Redial, Waiter::Nobody),
        Origin::Probe(report, deadline) => (Purpose::Probe(deadline), Waiter::Probe(report)),
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
            purpose,
            &peer_opened,
        )
    })
    .unwrap_or(Err(HandshakeError::Io(io::ErrorKind::Other)));
    node.handshake_done(&conn);
    let Shaken {
        peer,
        peer_max_frame,
        lanes,
        after,
        ready,
        fingerprint,
    } = match shaken {
        Ok(Admitted::Open(shaken)) => shaken,
        Ok(Admitted::Probe { peer, fingerprint }) => {
            log::debug!("{}: probed {peer} at {}", node.id, conn.peer_addr);
            hang_up(&conn, &stream);
            if let Waiter::Probe(report) = waiter {
                let _ = report.send(Ok((peer, fingerprint)));
            }
            node.retire(&conn);
            return;
        }
        Ok(Admitted::Probed(peer)) => {
            log::debug!(
                "{}: answered a probe from {peer} at {}",
                node.id,
                conn.peer_addr
            );
            hang_up(&conn, &stream);
            node.retire(&conn);
            return;
        }
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
            refused(&node, &conn, &outlets, waiter, error);
            node.retire(&conn);
            return;
        }
    };
    let report = match waiter {
        Waiter::Connect(report) => Some(report),
        Waiter::Nobody | Waiter::Probe(_) => None,
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
        fingerprint,
    });
    if redialled && node.redial.as_ref().is_some_and(|r| r.is_stopped(peer)) {
        // `disconnect` ran while this redial shook hands, and looked for the link
        // just before it opened (the check in `shake_hands` came just before that).
        conn.close(DisconnectReason::ClosedByUs);
    }

    let (pong_tx, pong_rx) = bounded(1);
    conn.set_inbox(Inbox::new(node.peer_flow(peer)));
    // The reader watches the private lane for a peer that stops draining it.
    let (private_watch, budgets) = (lanes.private.watch(), lanes.budgets.clone());
    let (writer_done_tx, writer_done) = bounded::<Never>(0);
    let (replies, reply_rx) = reply_lane();
    let writer = Writer {
        stream: stream.clone(),
        conn: conn.clone(),
        lanes,
        replies: reply_rx,
        owed: replies.clone(),
        pong: pong_rx,
        flow: Flow::new(&conn),
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
            #[cfg(unix)]
            idle: node.idle.as_ref().map(|idle| idle as &dyn RestRoom),
            events: &outlets.events,
            replies,
            peer_max_frame,
            delivery: Delivery::new(
                &conn,
                peer,
                &outlets.inbound,
                &node.inbound_bytes,
                &node.inbound_log,
                &node.gossip_places,
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
    // Nothing reads the socket any more: what the peer sent after its goodbye is
    // taken out, so that closing it does not reset the connection.
    conn.stream().discard_unread();
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

/// Ends a probe's connection, either side, once its last frame is written: a TLS
/// `close_notify` and a FIN after that frame, so that the peer reads it before the
/// end of the stream, then the socket cut.
fn hang_up(conn: &ConnShared, stream: &Stream) {
    stream.finish_writing();
    // Cuts the socket: the connection never got past its handshake.
    conn.close(DisconnectReason::ClosedByUs);
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
    // Counted before the event can be seen: an application that reads the node's
    // counters once it has the messages back finds them counted.
    let handed_back = &conn.counters.out.private.undelivered;
    handed_back.fetch_add(n as u64, Relaxed);
    if !events.emit_or_wait(event) {
        handed_back.fetch_sub(n as u64, Relaxed);
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
    let room = FutexRoom::for_one_more();
    let spawned = thread::Builder::new()
        .name(format!("wl{}-w{}", node.id.0, conn.id.get()))
        .stack_size(node.config.thread_stack_size)
        .spawn(move || {
            let _done = done;
            let _room = room;
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
