//! One connection: its lanes, its handshake's I/O, its reader and writer loops, and
//! its close and linger.
//!
//! A connection talks to the node that owns it only through what it is handed: the
//! senders of the node's queues and its event sink ([`sink::Outlets`]), the node's
//! byte budget for large payloads and its buffer pool, and, for closing, a
//! [`shared::Unregister`] hook that takes it out of the peer table. Nothing here
//! names the node.

pub(crate) mod deliver;
pub(crate) mod handshake;
pub(crate) mod lane;
pub(crate) mod reader;
pub(crate) mod request;
pub(crate) mod shared;
pub(crate) mod sink;
pub(crate) mod stream;
pub(crate) mod timers;
pub(crate) mod turn;
pub(crate) mod window;
pub(crate) mod writer;
