//! Admitting a connection: the handshake, arbitration and registration on the
//! connection's own thread, and the refusal when it fails.

use crate::conn::stream::Stream;
use std::cell::Cell;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::session::Waiter;
use super::state::NodeShared;
use super::table::{Policy, Refusal};
use crate::conn::handshake;
use crate::conn::lane::{self, LaneRx, Link};
use crate::conn::shared::ConnShared;
use crate::conn::sink::Outlets;
use crate::error::HandshakeError;
use crate::event::{DisconnectReason, Event};
use crate::id::{Fingerprint, PeerId};
use crate::sync::{until, Never};
use crate::wire::frame::{CloseCode, FrameError, FrameKind};
use crate::wire::hello::{self, Hello};
use crate::wire::readbuf::ReadBuf;
use crate::wire::reader::FrameReader;

/// What this side wants of a connection it shakes hands on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Purpose {
    /// An ordinary connection: accepted, or dialled by `connect`.
    Connect,
    /// A redial of a lost peer.
    Redial,
    /// `Node::probe`: learn who the peer is, register nothing, be done by the
    /// deadline.
    Probe(Instant),
}

/// How a handshake ended well.
pub(super) enum Admitted {
    /// The connection is open: the peer's link on this side.
    Open(Shaken),
    /// This side probed the peer, which checked it and answered.
    Probe {
        peer: PeerId,
        fingerprint: Option<Fingerprint>,
    },
    /// The peer probed this side, and was answered.
    Probed(PeerId),
}

/// Exchanges hellos, arbitrates, registers, and opens the connection once both sides
/// have accepted it. On success the connection is the peer's open link on this side,
/// and its lanes are returned for the writer, with the signals of the peer's earlier
/// readers. A probe, either way, ends after the checks of both sides, with nothing
/// registered.
pub(super) fn shake_hands(
    node: &NodeShared,
    conn: &Arc<ConnShared>,
    stream: &Stream,
    rb: &mut ReadBuf,
    reader_done: Receiver<Never>,
    purpose: Purpose,
    peer_opened: &Cell<bool>,
) -> Result<Admitted, HandshakeError> {
    let config = &node.config;
    let (deadline, probing) = match purpose {
        Purpose::Probe(deadline) => (deadline, true),
        Purpose::Connect | Purpose::Redial => (Instant::now() + config.handshake_timeout, false),
    };
    let redialled = matches!(purpose, Purpose::Redial);
    let ours = Hello {
        peer: node.id,
        incarnation: node.incarnation,
        max_frame_len: config.max_frame_len,
        authenticates: config.authenticator.is_some(),
        probe: probing,
        nonce: handshake::nonce()?,
    };
    let our_bytes = hello::encode_hello(&ours);
    let certified = handshake::secure(stream, deadline)?;
    let (theirs, their_bytes) = handshake::exchange_hello(stream, rb, &ours, deadline)?;
    handshake::check_identity(stream, certified.as_ref(), theirs.peer, deadline)?;
    handshake::authenticate(
        stream,
        rb,
        config.authenticator.as_deref(),
        (&ours, &our_bytes),
        (&theirs, &their_bytes),
        deadline,
    )?;
    if theirs.probe && !conn.inbound {
        // Only a dialler probes; an acceptor that says it does breaks the protocol.
        return Err(FrameError::Unexpected(FrameKind::Hello).into());
    }
    if probing {
        // Each side has checked the other; the peer's last word says whether it
        // accepted us.
        handshake::read_accept(stream, rb, theirs.peer, deadline)?;
        return Ok(Admitted::Probe {
            peer: theirs.peer,
            fingerprint: certified.map(|c| c.fingerprint),
        });
    }
    if theirs.probe {
        // No arbitration and no registration: an existing connection to the
        // prober, or one it is opening, is not touched.
        if node.is_shut() {
            handshake::send_refusal(stream, CloseCode::Shutdown, deadline);
            return Err(HandshakeError::Shutdown);
        }
        handshake::send_accept(stream, deadline)?;
        return Ok(Admitted::Probed(theirs.peer));
    }
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
    Ok(Admitted::Open(Shaken {
        peer: theirs.peer,
        peer_max_frame: theirs.max_frame_len,
        lanes,
        after: opened.after,
        ready: (!arbiter).then_some(deadline),
        fingerprint: certified.map(|c| c.fingerprint),
    }))
}

/// Reads, for at most a linger, what the peer sent on a connection it had opened and
/// this side then refused (its last handshake step failed: shutdown, or a newer
/// connection of the peer took its place), counting the data frames as received and
/// not delivered: the peer's node counted them as sent. The refusal makes the peer
/// close its side, so this ends at its end of stream.
pub(super) fn count_what_was_sent(
    conn: &ConnShared,
    stream: &Stream,
    frames: &mut FrameReader,
    linger: Duration,
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
pub(super) struct Shaken {
    /// The largest payload the peer accepts, for the replies to its requests.
    pub(super) peer_max_frame: u32,
    pub(super) peer: PeerId,
    pub(super) lanes: LaneRx,
    /// The signals of the peer's earlier readers.
    pub(super) after: Vec<Receiver<Never>>,
    /// For the follower: until when to wait for the arbiter's word that it has
    /// opened the connection too.
    pub(super) ready: Option<Instant>,
    /// The peer's certificate, on a TLS connection.
    pub(super) fingerprint: Option<Fingerprint>,
}

/// Reports a refused connection: one log line, a counter, and the error to whoever
/// asked (the `connect` or `probe` caller, or an `Event::Refused` for inbound
/// connections).
pub(super) fn refused(
    node: &NodeShared,
    conn: &ConnShared,
    outlets: &Outlets,
    waiter: Waiter,
    error: HandshakeError,
) {
    // A probe is no dial of the redial's: its failure says nothing of one.
    let probe = matches!(waiter, Waiter::Probe(_));
    if let Some(redial) = node.redial.as_ref().filter(|_| !conn.inbound && !probe) {
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
    match waiter {
        Waiter::Connect(report) => {
            let _ = report.send(Err(error));
        }
        Waiter::Probe(report) => {
            let _ = report.send(Err(error));
        }
        Waiter::Nobody if !routine => outlets.events.emit(Event::Refused {
            addr: conn.peer_addr,
            error,
        }),
        Waiter::Nobody => {}
    }
}
