//! The life of one connection, run on its reader thread: handshake, registration,
//! the read loop, and a teardown that hands back whatever was not sent.

use std::io;
use std::net::TcpStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender};

use crate::connection::{ConnShared, Never};
use crate::error::HandshakeError;
use crate::event::{DisconnectReason, Event, Message};
use crate::frame::CloseCode;
use crate::handshake::{self, Hello};
use crate::id::PeerId;
use crate::lane::{self, LaneRx, Link};
use crate::readbuf::ReadBuf;
use crate::reader::Reader;
use crate::redial;
use crate::shared::NodeShared;
use crate::table::{Policy, Refusal};
use crate::writer::{HandBack, Writer};

/// Where a connection delivers: its own clones of the node's queues, so that the
/// queues disconnect once the node has shut down and every connection has ended.
pub(crate) struct Outlets {
    pub(crate) inbound: Sender<Message>,
    pub(crate) events: Sender<Event>,
}

/// How `connect` learns the outcome of the handshake it started.
pub(crate) type Report = Sender<Result<PeerId, HandshakeError>>;

/// Runs a connection from its first byte to its last. Never panics on peer input.
pub(crate) fn run(
    node: Arc<NodeShared>,
    conn: Arc<ConnShared>,
    stream: Arc<TcpStream>,
    outlets: Outlets,
    report: Option<Report>,
) {
    let mut rb = ReadBuf::new(node.pool.clone(), node.config.read_buffer);
    // Disconnects when the reader has finished: tells the writer, and the reader of
    // a connection that replaces this one, that nothing more will be delivered.
    let (done_tx, done_rx) = bounded::<Never>(0);
    let shaken = contain(&node, &conn, "handshake", || {
        shake_hands(&node, &conn, &stream, &mut rb, &outlets, &done_rx)
    })
    .unwrap_or(Err(HandshakeError::Io(io::ErrorKind::Other)));
    node.handshake_done(&conn);
    let (peer, lanes, after) = match shaken {
        Ok(ok) => ok,
        Err(_) if conn.was_evicted() => {
            refused(&node, &conn, &outlets, report, HandshakeError::LimitReached);
            node.retire(&conn);
            return;
        }
        Err(error) => {
            refused(&node, &conn, &outlets, report, error);
            node.retire(&conn);
            return;
        }
    };
    // The writer blocks in writes for as long as the peer makes it; only closing the
    // connection (which cuts the socket when needed) ends such a write.
    let _ = stream.set_write_timeout(None);
    conn.establish();
    if let Some(report) = report {
        let _ = report.send(Ok(peer));
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
    node.emit(
        &outlets.events,
        Event::Connected {
            peer,
            conn: conn.id,
            addr: conn.peer_addr,
            inbound: conn.inbound,
        },
    );

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
        handback: HandBack {
            node: node.clone(),
            events: outlets.events.clone(),
            peer,
        },
    };
    let writer = match spawn_writer(&node, &conn, writer, writer_done_tx) {
        Ok(handle) => Some(handle),
        Err((e, lanes)) => {
            log::error!("{}: cannot start a writer thread: {e}", node.id);
            conn.close(DisconnectReason::Io(Arc::new(e)));
            let left = lanes.drain(&conn.counters);
            if !left.is_empty() {
                undelivered(&node, &conn, &outlets.events, peer, left);
            }
            None
        }
    };
    if writer.is_some() {
        let reader = Reader {
            stream: &stream,
            conn: &conn,
            peer,
            inbound: &outlets.inbound,
            pool: &node.pool,
            pong: &pong_tx,
            config: &node.config,
            after,
            private: &private_watch,
            budgets: &budgets,
            node: &node,
            events: &outlets.events,
        };
        let reason =
            contain(&node, &conn, "reader", || reader.run(&mut rb)).unwrap_or_else(internal_error);
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
        if writer.join().is_err() {
            log::error!("{}: the writer thread of {} panicked", node.id, conn.id);
        }
    }
    let reason = conn.reason().unwrap_or(DisconnectReason::ClosedByUs);
    log::info!(
        "{}: disconnected from {peer} ({}): {reason}",
        node.id,
        conn.id
    );
    if let Some(redial) = node.redial.as_ref().filter(|_| !conn.inbound) {
        if redial::is_lost(&reason) {
            redial.lost(node.id, peer, conn.peer_addr);
        }
    }
    node.emit(
        &outlets.events,
        Event::Disconnected {
            peer,
            conn: conn.id,
            reason,
        },
    );
    conn.cut();
    drop(pong_tx);
    node.retire(&conn);
}

/// Exchanges hellos, arbitrates, registers. On success the connection is in the peer
/// table on both sides, and its lanes are returned for the writer.
fn shake_hands(
    node: &NodeShared,
    conn: &Arc<ConnShared>,
    stream: &TcpStream,
    rb: &mut ReadBuf,
    outlets: &Outlets,
    reader_done: &Receiver<Never>,
) -> Result<(PeerId, LaneRx, Option<Receiver<Never>>), HandshakeError> {
    let config = &node.config;
    let deadline = Instant::now() + config.handshake_timeout;
    let ours = Hello {
        peer: node.id,
        incarnation: node.incarnation,
        max_frame_len: config.max_frame_len,
        authenticates: config.authenticator.is_some(),
        nonce: handshake::nonce()?,
    };
    let our_bytes = handshake::encode_hello(&ours);
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
    if !arbiter {
        handshake::read_accept(stream, rb, theirs.peer, deadline)?;
    }

    let (tx, lanes) = lane::lanes(config);
    let link = Arc::new(Link::new(
        conn.clone(),
        theirs.peer,
        theirs.incarnation,
        theirs.max_frame_len,
        tx,
    ));
    let policy = if arbiter {
        Policy::Arbitrate
    } else {
        Policy::Follow
    };
    let after = match node.table.register(link, policy, reader_done.clone()) {
        Ok(registered) => {
            if let Some(old) = registered.replaced {
                old.conn.close(DisconnectReason::Replaced);
            }
            registered.after
        }
        Err(refusal) => {
            let (code, error) = match refusal {
                Refusal::Duplicate => {
                    (CloseCode::Duplicate, HandshakeError::Duplicate(theirs.peer))
                }
                Refusal::Shutdown | Refusal::Closing => {
                    (CloseCode::Shutdown, HandshakeError::Shutdown)
                }
            };
            handshake::send_refusal(stream, code, deadline);
            return Err(error);
        }
    };

    // Registered: from here a failure must hand back whatever was queued meanwhile.
    let finished = handshake::send_accept(stream, deadline).and_then(|()| {
        if arbiter {
            handshake::read_accept(stream, rb, theirs.peer, deadline)
        } else {
            Ok(())
        }
    });
    if let Err(error) = finished {
        let reason = match error {
            HandshakeError::Shutdown => DisconnectReason::Shutdown,
            ref other => DisconnectReason::Io(Arc::new(io::Error::other(other.to_string()))),
        };
        conn.close(reason);
        node.table.reader_finished(theirs.peer, conn.id);
        let left = lanes.drain(&conn.counters);
        if !left.is_empty() {
            undelivered(node, conn, &outlets.events, theirs.peer, left);
        }
        return Err(error);
    }
    Ok((theirs.peer, lanes, after))
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
    match report {
        Some(report) => {
            let _ = report.send(Err(error));
        }
        None if !routine => node.emit(
            &outlets.events,
            Event::Refused {
                addr: conn.peer_addr,
                error,
            },
        ),
        None => {}
    }
}

/// Hands private messages that never reached the socket back to the application.
pub(crate) fn undelivered(
    node: &NodeShared,
    conn: &ConnShared,
    events: &Sender<Event>,
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
    if !node.emit_or_wait(events, event) {
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
fn contain<T>(
    node: &NodeShared,
    conn: &ConnShared,
    part: &str,
    f: impl FnOnce() -> T,
) -> Option<T> {
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
                node.id,
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
) -> Result<JoinHandle<()>, (io::Error, LaneRx)> {
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
                let (node, conn) = (writer.handback.node.clone(), writer.conn.clone());
                if contain(&node, &conn, "writer", || writer.run()).is_none() {
                    conn.close(internal_error());
                }
            }
        });
    spawned.map_err(|e| {
        let writer = parts
            .try_recv()
            .expect("the writer is still in the channel when its thread never started");
        (e, writer.lanes)
    })
}
