//! The life of one connection, run on its reader thread: handshake, registration,
//! the read loop, and a teardown that hands back whatever was not sent.

use std::io;
use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use crate::connection::{self, ConnShared, LaneRx, Link, Never};
use crate::error::HandshakeError;
use crate::event::{DisconnectReason, Event, Message};
use crate::frame::CloseCode;
use crate::handshake::{self, Hello};
use crate::id::PeerId;
use crate::node::NodeShared;
use crate::readbuf::ReadBuf;
use crate::reader::Reader;
use crate::table::{Policy, Refusal};
use crate::writer::Writer;

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
    let mut rb = ReadBuf::new(node.config.read_buffer);
    let (peer, lanes) = match shake_hands(&node, &conn, &stream, &mut rb, &outlets) {
        Ok(ok) => ok,
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
    let (done_tx, done_rx) = bounded::<Never>(0);
    let (writer_done_tx, writer_done) = bounded::<Never>(0);
    let spawned = spawn_writer(
        &node,
        &conn,
        &stream,
        lanes,
        pong_rx,
        done_rx,
        writer_done_tx,
    );
    let (writer, mut leftovers) = match spawned {
        Ok(handle) => (Some(handle), Vec::new()),
        Err((e, lanes)) => {
            log::error!("{}: cannot start a writer thread: {e}", node.id);
            conn.close(DisconnectReason::Io(Arc::new(e)));
            (None, lanes.drain(&conn.counters))
        }
    };
    if writer.is_some() {
        let reason = Reader {
            stream: &stream,
            conn: &conn,
            peer,
            inbound: &outlets.inbound,
            pool: &node.pool,
            pong: &pong_tx,
            config: &node.config,
        }
        .run(&mut rb);
        conn.close(reason);
    }
    drop(done_tx);
    // The writer may be stuck in a write the peer will never read. The reader has
    // stopped, so the linger is enforced here: past it, the socket is cut.
    if let Some(deadline) = conn.linger_deadline() {
        if let Err(RecvTimeoutError::Timeout) = writer_done.recv_deadline(deadline) {
            conn.cut();
        }
    }
    if let Some(writer) = writer {
        leftovers = writer.join().unwrap_or_else(|_| {
            log::error!("{}: the writer thread of {} panicked", node.id, conn.id);
            Vec::new()
        });
    }
    if !leftovers.is_empty() {
        undelivered(&node, &conn, &outlets, peer, leftovers);
    }
    let reason = conn.reason().unwrap_or(DisconnectReason::ClosedByUs);
    log::info!(
        "{}: disconnected from {peer} ({}): {reason}",
        node.id,
        conn.id
    );
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
) -> Result<(PeerId, LaneRx), HandshakeError> {
    let config = &node.config;
    let deadline = Instant::now() + config.handshake_timeout;
    let ours = Hello {
        peer: node.id,
        incarnation: node.incarnation,
        max_frame_len: config.max_frame_len,
    };
    let theirs = handshake::exchange_hello(stream, rb, &ours, deadline)?;
    // The lower id arbitrates; the other side waits for its verdict before it
    // registers anything.
    let arbiter = node.id < theirs.peer;
    if !arbiter {
        handshake::read_accept(stream, rb, theirs.peer, deadline)?;
    }

    let ((gossip, private), lanes) = connection::lanes(config);
    let link = Arc::new(Link {
        conn: conn.clone(),
        peer: theirs.peer,
        incarnation: theirs.incarnation,
        peer_max_frame: theirs.max_frame_len,
        gossip,
        private,
    });
    let policy = if arbiter {
        Policy::Arbitrate
    } else {
        Policy::Follow
    };
    match node.table.register(link, policy) {
        Ok(Some(old)) => {
            old.conn.close(DisconnectReason::Replaced);
        }
        Ok(None) => {}
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
    }

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
        let left = lanes.drain(&conn.counters);
        if !left.is_empty() {
            undelivered(node, conn, outlets, theirs.peer, left);
        }
        return Err(error);
    }
    Ok((theirs.peer, lanes))
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
        log::warn!(
            "{}: connection {direction} {} refused: {error}",
            node.id,
            conn.peer_addr
        );
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
fn undelivered(
    node: &NodeShared,
    conn: &ConnShared,
    outlets: &Outlets,
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
    if !node.emit_or_wait(&outlets.events, event) {
        conn.counters.out.private.drop_n(n as u64);
        log::error!(
            "{}: lost {n} private message(s) for {peer}: the event queue stayed full until shutdown",
            node.id
        );
    }
}

type WriterHandle = JoinHandle<Vec<Bytes>>;

/// Starts the writer thread. If the thread cannot start, the lanes come back so that
/// their messages can be handed back.
fn spawn_writer(
    node: &NodeShared,
    conn: &Arc<ConnShared>,
    stream: &Arc<TcpStream>,
    lanes: LaneRx,
    pong: Receiver<()>,
    reader_done: Receiver<Never>,
    writer_done: Sender<Never>,
) -> Result<WriterHandle, (io::Error, LaneRx)> {
    // The writer travels through a channel rather than the closure, so that a failed
    // spawn (which drops the closure) leaves it here.
    let (hand_over, parts) = bounded(1);
    let writer = Writer {
        stream: stream.clone(),
        conn: conn.clone(),
        lanes,
        pong,
        reader_done,
        ping_interval: node.config.ping_interval,
        max_batch: node.config.max_batch_bytes,
    };
    if hand_over.send(writer).is_err() {
        unreachable!("a fresh channel with a live receiver has room");
    }
    let theirs = parts.clone();
    let spawned = thread::Builder::new()
        .name(format!("wl{}-w{}", node.id.0, conn.id.get()))
        .stack_size(node.config.thread_stack_size)
        .spawn(move || {
            let _done = writer_done;
            match theirs.recv() {
                Ok(writer) => writer.run(),
                Err(_) => Vec::new(),
            }
        });
    spawned.map_err(|e| {
        let writer = parts
            .try_recv()
            .expect("the writer is still in the channel when its thread never started");
        (e, writer.lanes)
    })
}
