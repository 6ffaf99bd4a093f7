//! What the node hands to the application: messages and events.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::conn::request::Inquiry;
use crate::conn::window::Hold;
use crate::error::{HandshakeError, ProtocolError};
use crate::id::{ConnId, Fingerprint, PeerId};

/// The two kinds of traffic a connection carries, each with its own queue.
///
/// `#[non_exhaustive]` because lanes are a growing set, and a `match` written today
/// should keep compiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Lane {
    /// Cheap to lose: a full lane drops the message and counts it.
    Gossip,
    /// Never lost silently: a full lane makes the sender wait, and messages still
    /// queued when a connection ends come back in [`Event::Undelivered`].
    Private,
    /// A request from [`Node::request`](crate::Node::request) or
    /// [`Node::request_many`](crate::Node::request_many), to answer with
    /// [`Node::respond`](crate::Node::respond). It travels in the private lane's
    /// order and is never dropped; dropping the message unanswered tells the
    /// requester at once.
    Request,
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lane::Gossip => "gossip",
            Lane::Private => "private",
            Lane::Request => "request",
        })
    }
}

/// A message received from a peer, as read from [`Node::incoming`](crate::Node::incoming).
///
/// `#[non_exhaustive]` because only the node builds messages. A message on
/// [`Lane::Request`] also carries what [`Node::respond`](crate::Node::respond) needs;
/// its clones share it, so a request is answered once whichever clone answers, and
/// when the last clone is dropped unanswered the requester is told.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The peer that sent it.
    pub from: PeerId,
    /// The lane it travelled on.
    pub lane: Lane,
    /// The bytes the peer sent. [`Bytes`] dereferences to `[u8]`.
    pub payload: Bytes,
    /// The request this message is, if it is one.
    pub(crate) request: Option<Inquiry>,
    /// Room in the inbound queue, given back when the message is dropped.
    pub(crate) hold: Hold,
}

/// Something that happened to a node's connections, as read from
/// [`Node::events`](crate::Node::events).
///
/// For one connection the events come in order: `Connected`, then at most one
/// `Undelivered`, then `Disconnected` last. Events of an old connection and of its
/// replacement to the same peer can interleave; tell them apart by `conn`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A connection finished its handshake and is registered.
    Connected {
        /// The peer at the other end.
        peer: PeerId,
        /// This connection.
        conn: ConnId,
        /// The peer's socket address.
        addr: SocketAddr,
        /// Whether the peer dialled us (rather than us dialling it).
        inbound: bool,
        /// The SHA-256 of the peer's TLS certificate; `None` on a plaintext
        /// connection.
        fingerprint: Option<Fingerprint>,
    },
    /// A connection ended. It is the last event of that connection.
    Disconnected {
        /// The peer at the other end.
        peer: PeerId,
        /// The connection that ended.
        conn: ConnId,
        /// Why it ended.
        reason: DisconnectReason,
    },
    /// Private messages that were still queued when their connection ended, handed
    /// back in the order they were sent. None of them reached the peer's socket.
    Undelivered {
        /// The peer they were addressed to.
        peer: PeerId,
        /// The connection they were queued on.
        conn: ConnId,
        /// The payloads, oldest first.
        messages: Vec<Bytes>,
    },
    /// The peer's private lane has stayed full for
    /// [`Config::slow_peer_after`](crate::Config::slow_peer_after): senders to it are
    /// waiting and it is not draining. Reported once per episode; if
    /// [`Config::disconnect_slow_peers`](crate::Config::disconnect_slow_peers) is set,
    /// the connection is closed too.
    SlowPeer {
        /// The slow peer.
        peer: PeerId,
        /// Its connection.
        conn: ConnId,
        /// How long the lane has been full.
        full_for: std::time::Duration,
    },
    /// An inbound connection was refused during its handshake.
    Refused {
        /// Where it came from.
        addr: SocketAddr,
        /// Why it was refused.
        error: HandshakeError,
    },
    /// A lost peer will be dialled again
    /// ([`Config::reconnect_interval`](crate::Config::reconnect_interval)): once
    /// when it is lost, then after every failed attempt.
    Redialing {
        /// The peer.
        peer: PeerId,
        /// The attempt about to be made: 1 for the first dial after the loss.
        attempt: u32,
        /// How long until it is made: the backoff, with jitter.
        next_in: std::time::Duration,
    },
}

/// Why a connection ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// This node closed it ([`Node::disconnect`](crate::Node::disconnect)).
    ClosedByUs,
    /// This node shut down.
    Shutdown,
    /// The peer closed it.
    ClosedByPeer,
    /// Nothing arrived from the peer for longer than the silence timeout.
    Dead,
    /// A newer connection to the same peer took its place.
    Replaced,
    /// The peer's private lane stayed full for longer than
    /// [`Config::slow_peer_after`](crate::Config::slow_peer_after), and the node is
    /// set to disconnect slow peers.
    SlowPeer,
    /// The peer broke the protocol.
    Protocol(ProtocolError),
    /// The socket failed.
    Io(Arc<io::Error>),
}

impl DisconnectReason {
    /// Whether the close lets messages already on the wire be delivered first
    /// (a close frame, a half-close, and a bounded linger). A replaced connection
    /// closes gracefully too: what its peer wrote before moving to the new connection
    /// is still delivered, before anything from the new one.
    pub(crate) fn is_graceful(&self) -> bool {
        matches!(
            self,
            DisconnectReason::ClosedByUs
                | DisconnectReason::Shutdown
                | DisconnectReason::ClosedByPeer
                | DisconnectReason::Replaced
        )
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::ClosedByUs => f.write_str("closed by us"),
            DisconnectReason::Shutdown => f.write_str("node shut down"),
            DisconnectReason::ClosedByPeer => f.write_str("closed by the peer"),
            DisconnectReason::Dead => f.write_str("peer went silent"),
            DisconnectReason::Replaced => f.write_str("replaced by a newer connection"),
            DisconnectReason::SlowPeer => {
                f.write_str("peer too slow: its private lane stayed full")
            }
            DisconnectReason::Protocol(e) => write!(f, "protocol error: {e}"),
            DisconnectReason::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}
