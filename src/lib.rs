//! Synchronous peer-to-peer messaging over TCP, one reader and one writer thread per
//! connection, with two lanes per peer: **gossip**, which is dropped (and counted) when
//! the peer falls behind, and **private** data, which waits for room and is never lost
//! silently.
//!
//! wirelane is for applications without an async runtime: thread-pool servers,
//! blocking daemons, test rigs. Its one rule is that **no lock is held across a
//! wait** — the mistake that froze two Hyperledger Fabric peers sending private data
//! to each other (FAB-10469): a sender parked on a full buffer while holding the
//! connection's lock, which the connection's own reader and writer needed.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use wirelane::{Config, Event, Lane, Node, PeerId};
//!
//! let a = Node::bind(PeerId(1), "127.0.0.1:0", Config::default())?;
//! let b = Node::bind(PeerId(2), "127.0.0.1:0", Config::default())?;
//! let peer = a.connect(b.local_addr())?; // dial and handshake: returns PeerId(2)
//!
//! a.try_send(peer, b"digest".to_vec())?; // gossip: never blocks
//! a.send(peer, b"private".to_vec())?; // private: waits for room, holding no lock
//! a.send_timeout(peer, b"more".to_vec(), Duration::from_secs(1))?;
//!
//! for _ in 0..3 {
//!     let m = b.incoming().recv_timeout(Duration::from_secs(10))?;
//!     assert_eq!(m.from, PeerId(1));
//!     if m.lane == Lane::Gossip {
//!         assert_eq!(&m.payload[..], b"digest");
//!     }
//! }
//! assert!(matches!(b.events().recv()?, Event::Connected { peer: PeerId(1), .. }));
//!
//! println!("{}", a.stats());
//! a.disconnect(peer);
//! a.shutdown(); // idempotent; joins every thread the node started
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The two lanes
//!
//! Each connection has two bounded queues, drained by its writer thread, which always
//! serves the private lane first:
//!
//! - [`Node::try_send`] puts a message on the **gossip** lane. When the lane is full
//!   the message is dropped at once: the call returns [`TrySendError::Full`] with the
//!   message, the drop is counted in [`PeerStats`] and logged at most once a second
//!   per peer.
//! - [`Node::send`] and [`Node::send_timeout`] put a message on the **private**
//!   lane. When the lane is full they wait — for room, for their deadline, for the
//!   connection to close or the node to shut down. Whatever ends the wait, an error
//!   hands the message back.
//!
//! Messages are delivered in order per peer and lane. On the receiving side the reader
//! never waits for the application to take a private message: each connection is
//! granted a flow-control window ([`Config::private_window`]) that reopens as the
//! application drops the messages it took from [`Node::incoming`], and the peer's
//! writer sends private data only within it; what does not fit waits in the peer's
//! lane, where its `send` waits as for a full lane. Gossip that finds the inbound
//! queue's `inbound_capacity` gossip places taken is dropped and counted. So a slow
//! application never stalls a connection's pings, replies or gossip.
//!
//! # Requests and replies
//!
//! [`Node::request`] sends a request and waits for its reply; the peer reads it from
//! [`Node::incoming`] with [`Lane::Request`] and answers with [`Node::respond`],
//! which never waits for the requester — room for every reply a node owes is
//! reserved before the request is handed over — so the loop that reads `incoming()`
//! may answer on the spot without risking the cycle in which two peers each wait to
//! send to the other while nobody reads. [`Node::request_many`] asks several peers
//! and returns once enough have replied, like Fabric's `SendWithAck`. Each request
//! ends in exactly one outcome: a reply, or a [`RequestError`].
//!
//! # Nothing lost silently
//!
//! When a connection ends, private messages still queued for it come back in an
//! [`Event::Undelivered`], oldest first, before its [`Event::Disconnected`]:
//!
//! ```
//! use std::time::Duration;
//! use wirelane::{Config, Event, Node, PeerId};
//!
//! let a = Node::bind(PeerId(1), "127.0.0.1:0", Config::default())?;
//! let b = Node::bind(PeerId(2), "127.0.0.1:0", Config::default())?;
//! let peer = a.connect(b.local_addr())?;
//! a.send(peer, b"hello".to_vec())?;
//! a.disconnect(peer);
//!
//! // Each private message was either written to the socket or comes back here.
//! loop {
//!     match a.events().recv_timeout(Duration::from_secs(10))? {
//!         Event::Undelivered { messages, .. } => println!("{} came back", messages.len()),
//!         Event::Disconnected { reason, .. } => break println!("closed: {reason}"),
//!         _ => {}
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Threads
//!
//! A node runs one accept thread (a mio poll loop, woken by a `mio::Waker` to stop),
//! one redial thread if [`Config::reconnect_interval`] is set,
//! and, per connection, a reader thread — which also runs the handshake — and a
//! writer thread. All are named and all are joined by [`Node::shutdown`], which also
//! runs when a node is dropped. The reader checks for a silent peer; the writer sends
//! a ping after an idle interval. See `docs/architecture.md` for the whole picture
//! and `docs/guarantees.md` for the contract and the tests that hold it.
//!
//! # Embedding
//!
//! [`Dispatcher`] spreads [`Node::incoming`] over a pool of worker threads, each
//! peer's messages in order on one worker; `docs/embedding.md` shows how a
//! thread-pool server embeds a node. With the `prometheus` feature, `metrics`
//! exports a node's counters and histograms to a `prometheus_client` registry.

// One exception, `sync/futex_room.rs`: a `prctl` with integer arguments.
#![deny(unsafe_code)]
#![deny(missing_docs)]

// The public vocabulary.
mod auth;
mod config;
mod dispatch;
mod error;
mod event;
mod id;
#[cfg(feature = "prometheus")]
pub mod metrics;
mod stats;
mod timing;
#[cfg(feature = "tls")]
pub mod tls;

// The layers, each naming only those below it: `wire` (the codec), `conn` (one
// connection), `node` (the node and its connections); `sync` is a leaf they share.
mod conn;
mod node;
mod sync;
mod wire;

pub use bytes::Bytes;
pub use crossbeam_channel;

pub use crate::auth::{Authenticator, SharedSecret, MIN_SECRET_LEN};
pub use crate::config::Config;
pub use crate::dispatch::{DispatchStats, Dispatcher, DispatcherBuilder};
pub use crate::error::{
    ConfigError, Error, HandshakeError, Limit, ProtocolError, RequestError, RespondError, Result,
    SendError, SendTimeoutError, TlsError, TrySendError, Violation,
};
pub use crate::event::{DisconnectReason, Event, Lane, Message};
pub use crate::id::{ConnId, Fingerprint, PeerId};
pub use crate::node::requests::{Outcome, Replies};
pub use crate::node::Node;
pub use crate::stats::{LaneStats, NodeStats, PeerStats, RequestStats};
pub use crate::timing::Histogram;
pub use crate::wire::MAX_PROOF_LEN;

#[cfg(feature = "internals")]
mod internals;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub use internals::{__bench, __fuzz};

/// Compiles and runs the README's example as a doctest, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
