//! Node configuration: one struct, safe defaults, chainable setters, validation.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Authenticator;
use crate::error::{ConfigError, Error};

/// Everything a [`Node`](crate::Node) can be tuned with.
///
/// Start from [`Config::default()`] and change what you need with the chainable
/// setters; each field's documentation gives its default and the reason for it.
/// [`Node::bind`](crate::Node::bind) validates the whole and refuses nonsense with
/// [`Error::Config`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use wirelane::Config;
///
/// let config = Config::default()
///     .private_capacity(64)
///     .ping_interval(Duration::from_millis(500))
///     .silence_timeout(Duration::from_secs(3));
/// assert_eq!(config.private_capacity, 64);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Most messages the gossip lane of one connection holds before
    /// [`try_send`](crate::Node::try_send) drops. Default 256: enough to absorb a
    /// burst while the writer is busy, small enough that stale gossip is shed early.
    /// A lane's memory is 40 bytes a message, allocated when the connection opens
    /// unless [`lanes_grow`](Config::lanes_grow) is set.
    pub gossip_capacity: usize,
    /// Most messages the private lane of one connection holds before
    /// [`send`](crate::Node::send) waits. Default 384: deep enough that the writer
    /// gathers large batches from a fast sender (at 256, 64-byte throughput drops by a
    /// third; above 384 it hardly grows). Its memory is allocated as for gossip.
    pub private_capacity: usize,
    /// Whether a connection's lanes allocate their memory as messages arrive and
    /// free it once the writer has taken them (`true`), instead of all at once when
    /// the connection opens (`false`, the default).
    ///
    /// Growing lanes cost an idle connection about 25 KiB less with the default
    /// capacities (38 instead of 63 KiB resident, `docs/performance.md`): worth it for
    /// a node that holds thousands of mostly idle peers. They cost a stream of small
    /// messages about a third of its rate on one connection (64-byte messages), for
    /// the allocation of a block every 31 messages by the sending thread and its
    /// release by the writer. The bounds are the same either way.
    pub lanes_grow: bool,
    /// Most bytes of payload the gossip lane holds; beyond, `try_send` drops as when
    /// the lane is full. A count alone does not bound memory: 256 messages of a
    /// megabyte each are not "bounded". An empty lane always takes one message, so a
    /// payload larger than this (but within the peer's frame limit) still goes.
    /// Default 8 MiB.
    pub gossip_lane_bytes: usize,
    /// Most bytes of payload the private lane holds; beyond, `send` waits as when the
    /// lane is full. An empty lane always takes one message. Default 32 MiB.
    pub private_lane_bytes: usize,
    /// Most gossip messages the node's [`incoming`](crate::Node::incoming) queue
    /// holds, from all peers together; gossip that arrives while it holds this many
    /// is dropped and counted. A message holds its place until the application drops
    /// it. Private messages and requests are not counted here: each connection's
    /// [`private_window`](Config::private_window) bounds them. Default 4096.
    pub inbound_capacity: usize,
    /// Most private messages and requests one peer may have sent that this node's
    /// application has not yet dropped: the flow-control window the node grants each
    /// connection. The peer's writer sends nothing more of its private lane until
    /// the application drops messages (a message's room comes back when the message
    /// handed over by [`incoming`](crate::Node::incoming) is dropped, or its payload
    /// taken out of it; a clone holds none). Meanwhile its `send`s fill the lane and
    /// then wait, as for a full lane; nothing is lost, and this node's reader never
    /// waits for the application, so replies, pings and gossip keep flowing.
    ///
    /// Room is granted again once half the window has come back. Default 65,536:
    /// with 16,384, one connection's 64-byte throughput fell by a quarter on a
    /// 2-core machine, where the grant's round trip (the application, the
    /// receiver's writer, the sender's reader and writer) waits for busy cores; at
    /// 65,536 it is as before flow control (`docs/performance.md`). Messages are
    /// small in the queue (about 100 bytes besides the payload), and
    /// [`private_window_bytes`](Config::private_window_bytes) bounds the payloads.
    ///
    /// The window is per connection: a node whose application stalls holds up to
    /// a window from every peer. A node with thousands of peers should size it down.
    pub private_window: usize,
    /// Most bytes of private payloads one peer may have sent that the application has
    /// not yet dropped, as [`private_window`](Config::private_window) is in messages.
    /// A peer may send a message whenever at least one byte of this is left, so a
    /// message larger than the window still goes, alone: a connection holds at most
    /// this plus one [`max_frame_len`](Config::max_frame_len). Default 32 MiB, as
    /// much as the sender's [`private_lane_bytes`](Config::private_lane_bytes).
    pub private_window_bytes: usize,
    /// Most bytes of large inbound payloads the node holds at once: payloads over a
    /// quarter of [`read_buffer`](Config::read_buffer), each read into a buffer of
    /// its own, count from the moment that buffer is allocated until the application
    /// drops the message. When a large gossip payload would not fit, its reader
    /// waits before allocating (pushing back over TCP), and a warning is logged at
    /// most once a second: the one wait for the application a reader has left. With
    /// nothing held, one payload of any size within `max_frame_len` is admitted.
    /// Large private payloads count here too but never wait: the window
    /// ([`private_window_bytes`](Config::private_window_bytes)) bounds them, so the
    /// budget may be overdrawn by them for a while.
    ///
    /// Without it a peer sending `inbound_capacity` gossip frames of
    /// `max_frame_len` each to a busy application would make the node hold 64 GiB.
    /// Default 64 MiB.
    pub inbound_bytes: usize,
    /// Most events the [`events`](crate::Node::events) queue holds. Informational
    /// events that find it full are dropped and counted; `Undelivered` waits for
    /// room. Default 1024.
    pub event_capacity: usize,
    /// Largest payload, in bytes, this node accepts in one frame. It is announced in
    /// the handshake, so peers refuse to send more ([`SendError::TooLarge`]); a peer
    /// that declares more anyway is disconnected before anything is allocated.
    /// Default 16 MiB; at most 2 GiB.
    ///
    /// [`SendError::TooLarge`]: crate::SendError::TooLarge
    pub max_frame_len: u32,
    /// Most connections a node keeps, registered or still shaking hands; beyond,
    /// inbound connections are closed at once and `connect` fails. Each costs two
    /// threads and about 40 KiB resident when idle (`docs/performance.md`).
    /// Default 4096.
    pub max_connections: usize,
    /// Most handshakes in progress at once. When a new inbound connection finds them
    /// all taken, the oldest inbound handshake is dropped to make room: a real peer
    /// finishes its handshake in a round trip, so a flood of clients that connect and
    /// say nothing cannot keep it out. Default 64.
    pub max_handshakes: usize,
    /// Time allowed to dial a peer. Default 5 s; at most a day.
    pub connect_timeout: Duration,
    /// Time allowed for the whole handshake, from either side. A peer that sends
    /// nothing, or half a hello, is refused when it runs out. Default 5 s; at most a
    /// day.
    pub handshake_timeout: Duration,
    /// A connection's writer sends a ping when it has written nothing for this long,
    /// so that a quiet but healthy peer is never taken for dead. Default 2 s.
    pub ping_interval: Duration,
    /// A peer from which nothing at all (not even a ping) arrives for this long is
    /// declared dead and disconnected. Time the reader spends waiting to hand a
    /// private message to the application does not count. Must be well above
    /// `ping_interval`. Default 10 s.
    pub silence_timeout: Duration,
    /// A peer whose private lane stays full this long is reported with
    /// [`Event::SlowPeer`](crate::Event::SlowPeer): senders to it are waiting, and it
    /// is not draining what it gets. Default 10 s.
    pub slow_peer_after: Duration,
    /// Whether a peer reported slow is also disconnected (with
    /// [`DisconnectReason::SlowPeer`](crate::DisconnectReason::SlowPeer); its queued
    /// private messages come back in `Undelivered`), so that its senders can move on.
    /// Default `false`: the application decides, on the event.
    pub disconnect_slow_peers: bool,
    /// When set, a connection this node dialled that is lost — the peer went silent,
    /// the socket failed, or the peer closed it — is dialled again after this long,
    /// then at doubling intervals up to [`reconnect_max`](Config::reconnect_max),
    /// until the peer is connected again (by any dial, from either side), the
    /// application calls [`Node::disconnect`](crate::Node::disconnect) for it, or the
    /// node shuts down. Connections the peer dialled are left to the peer, which
    /// alone knows its address. Each wait is shortened by up to a quarter, at
    /// random, so that nodes that lost each other at once do not dial in step; each
    /// is announced with an [`Event::Redialing`](crate::Event::Redialing). Default
    /// `None`: the application redials.
    pub reconnect_interval: Option<Duration>,
    /// The longest wait between two redials of a peer. Default 30 s.
    pub reconnect_max: Duration,
    /// On a graceful close (disconnect, shutdown, or the peer's close) the
    /// connection stays open until both sides have finished, so that messages already
    /// on the wire in both directions are delivered before the socket goes. It waits
    /// as long as data keeps moving, gives up once nothing has moved for this long,
    /// and in any case after ten times this. Default 1 s; at most a day.
    pub linger: Duration,
    /// The writer gathers ready frames into one buffer of up to about this many
    /// bytes before each write. Default 64 KiB.
    pub max_batch_bytes: usize,
    /// The reader's buffer grows up to this size (it starts small, so idle
    /// connections stay cheap). Larger frames are read straight into their own
    /// allocation. Default 64 KiB.
    pub read_buffer: usize,
    /// How long a reader that has just delivered data keeps trying to read more
    /// without waiting before it sleeps on its socket, giving way to any other
    /// thread that wants its core between tries. A sleeping reader is woken by the
    /// kernel when bytes come, which takes tens of microseconds on a virtual
    /// machine; on a connection that answers back and forth the next message
    /// often comes sooner, and a trying reader takes it at once. Tries that find
    /// nothing back off: after failures in a row, the reader skips the next 1, 3,
    /// 7, … up to 63 chances, so a connection whose messages come far apart tries
    /// on one in 64 of them at most; an idle connection never tries. Zero: never
    /// try. Default 50 µs; at most 10 ms.
    pub read_spin: Duration,
    /// Stack size of every thread the node starts. Default 256 KiB: the reader and
    /// writer loops are shallow, and thousands of connections must fit in memory.
    pub thread_stack_size: usize,
    /// Proves this node's identity to every peer and checks theirs during the
    /// handshake; a peer that fails is refused. Default `None`: any peer that speaks
    /// the protocol may connect under any id. Both ends of a connection must agree:
    /// a node with an authenticator refuses one without, and the other way round.
    /// See [`SharedSecret`](crate::SharedSecret) and [`Authenticator`](crate::Authenticator).
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// Mutual TLS for every connection: this node's certificate and key, and whom it
    /// trusts. Default none: plaintext. Both ends must agree; a TLS node refuses a
    /// plaintext peer and the other way round. See [`crate::tls`].
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<crate::tls::TlsConfig>>,
}

/// The longest `connect_timeout`, `handshake_timeout` and `linger` accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest `read_spin` accepted: looking for bytes longer than this costs
/// more than the sleep it saves.
const MAX_READ_SPIN: Duration = Duration::from_millis(10);

/// The largest `max_frame_len` accepted: a frame's length plus its header must fit the
/// 32-bit length field and the address space of any target.
const MAX_FRAME_LEN: u32 = 1 << 31;

impl Default for Config {
    fn default() -> Self {
        Config {
            gossip_capacity: 256,
            private_capacity: 384,
            lanes_grow: false,
            gossip_lane_bytes: 8 << 20,
            private_lane_bytes: 32 << 20,
            inbound_capacity: 4096,
            private_window: 64 * 1024,
            private_window_bytes: 32 << 20,
            inbound_bytes: 64 << 20,
            event_capacity: 1024,
            max_frame_len: 16 * 1024 * 1024,
            max_connections: 4096,
            max_handshakes: 64,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(2),
            silence_timeout: Duration::from_secs(10),
            slow_peer_after: Duration::from_secs(10),
            disconnect_slow_peers: false,
            reconnect_interval: None,
            reconnect_max: Duration::from_secs(30),
            linger: Duration::from_secs(1),
            max_batch_bytes: 64 * 1024,
            read_buffer: 64 * 1024,
            read_spin: Duration::from_micros(50),
            thread_stack_size: 256 * 1024,
            authenticator: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty;)+) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $field(mut self, value: $ty) -> Self {
                self.$field = value;
                self
            }
        )+
    };
}

impl Config {
    setters! {
        /// Sets [`gossip_capacity`](Config::gossip_capacity).
        gossip_capacity: usize;
        /// Sets [`private_capacity`](Config::private_capacity).
        private_capacity: usize;
        /// Sets [`lanes_grow`](Config::lanes_grow).
        lanes_grow: bool;
        /// Sets [`gossip_lane_bytes`](Config::gossip_lane_bytes).
        gossip_lane_bytes: usize;
        /// Sets [`private_lane_bytes`](Config::private_lane_bytes).
        private_lane_bytes: usize;
        /// Sets [`inbound_capacity`](Config::inbound_capacity).
        inbound_capacity: usize;
        /// Sets [`private_window`](Config::private_window).
        private_window: usize;
        /// Sets [`private_window_bytes`](Config::private_window_bytes).
        private_window_bytes: usize;
        /// Sets [`inbound_bytes`](Config::inbound_bytes).
        inbound_bytes: usize;
        /// Sets [`event_capacity`](Config::event_capacity).
        event_capacity: usize;
        /// Sets [`max_frame_len`](Config::max_frame_len).
        max_frame_len: u32;
        /// Sets [`max_connections`](Config::max_connections).
        max_connections: usize;
        /// Sets [`max_handshakes`](Config::max_handshakes).
        max_handshakes: usize;
        /// Sets [`connect_timeout`](Config::connect_timeout).
        connect_timeout: Duration;
        /// Sets [`handshake_timeout`](Config::handshake_timeout).
        handshake_timeout: Duration;
        /// Sets [`ping_interval`](Config::ping_interval).
        ping_interval: Duration;
        /// Sets [`silence_timeout`](Config::silence_timeout).
        silence_timeout: Duration;
        /// Sets [`slow_peer_after`](Config::slow_peer_after).
        slow_peer_after: Duration;
        /// Sets [`disconnect_slow_peers`](Config::disconnect_slow_peers).
        disconnect_slow_peers: bool;
        /// Sets [`reconnect_interval`](Config::reconnect_interval).
        reconnect_interval: Option<Duration>;
        /// Sets [`reconnect_max`](Config::reconnect_max).
        reconnect_max: Duration;
        /// Sets [`linger`](Config::linger).
        linger: Duration;
        /// Sets [`max_batch_bytes`](Config::max_batch_bytes).
        max_batch_bytes: usize;
        /// Sets [`read_buffer`](Config::read_buffer).
        read_buffer: usize;
        /// Sets [`read_spin`](Config::read_spin).
        read_spin: Duration;
        /// Sets [`thread_stack_size`](Config::thread_stack_size).
        thread_stack_size: usize;
    }

    /// Sets [`authenticator`](Config::authenticator).
    #[must_use]
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// Sets [`tls`](Config::tls).
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, tls: crate::tls::TlsConfig) -> Self {
        self.tls = Some(Arc::new(tls));
        self
    }

    /// Checks that the values make sense together.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Config`] naming the first field that is out of range.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |field, rule| Err(Error::Config(ConfigError::new(field, rule)));
        let zero = Duration::ZERO;
        let ms = Duration::from_millis(1);
        // Deadlines are computed by adding these to the clock; a day is more than any
        // of them needs, and keeps the sums far from overflowing.
        let timeout = |t: Duration| t > zero && t <= MAX_TIMEOUT;
        let counts = [
            ("gossip_capacity", self.gossip_capacity),
            ("private_capacity", self.private_capacity),
            ("gossip_lane_bytes", self.gossip_lane_bytes),
            ("private_lane_bytes", self.private_lane_bytes),
            ("inbound_capacity", self.inbound_capacity),
            ("private_window", self.private_window),
            ("private_window_bytes", self.private_window_bytes),
            ("event_capacity", self.event_capacity),
            ("inbound_bytes", self.inbound_bytes),
            ("max_connections", self.max_connections),
            ("max_handshakes", self.max_handshakes),
        ];
        if let Some((field, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return fail(field, "must be at least 1");
        }
        if self.max_frame_len == 0 || self.max_frame_len > MAX_FRAME_LEN {
            return fail("max_frame_len", "must be between 1 and 2 GiB");
        }
        for (field, t) in [
            ("connect_timeout", self.connect_timeout),
            ("handshake_timeout", self.handshake_timeout),
        ] {
            if !timeout(t) {
                return fail(field, "must be above zero and at most a day");
            }
        }
        if self.linger > MAX_TIMEOUT {
            return fail("linger", "must be at most a day");
        }
        if let Some(interval) = self.reconnect_interval {
            if interval < ms || interval > MAX_TIMEOUT {
                return fail("reconnect_interval", "must be between 1 ms and a day");
            }
            if self.reconnect_max > MAX_TIMEOUT {
                return fail("reconnect_max", "must be at most a day");
            }
        }
        if self.ping_interval < ms {
            return fail("ping_interval", "must be at least 1 ms");
        }
        if self.silence_timeout <= self.ping_interval {
            return fail("silence_timeout", "must be longer than ping_interval");
        }
        if self.max_batch_bytes < 1024 {
            return fail("max_batch_bytes", "must be at least 1 KiB");
        }
        if self.read_buffer < 4096 {
            return fail("read_buffer", "must be at least 4 KiB");
        }
        if self.read_spin > MAX_READ_SPIN {
            return fail("read_spin", "must be at most 10 ms");
        }
        if self.thread_stack_size < 64 * 1024 {
            return fail("thread_stack_size", "must be at least 64 KiB");
        }
        Ok(())
    }

    /// How long the reader's socket reads block before it checks for silence and for
    /// a graceful close that has outlived its linger.
    pub(crate) fn read_tick(&self) -> Duration {
        let tick = self
            .ping_interval
            .min(self.silence_timeout / 4)
            .min(self.linger / 2);
        tick.max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn nonsense_is_refused_with_the_field_named() {
        let cases = [
            (Config::default().private_capacity(0), "private_capacity"),
            (Config::default().inbound_capacity(0), "inbound_capacity"),
            (Config::default().inbound_bytes(0), "inbound_bytes"),
            (Config::default().max_frame_len(0), "max_frame_len"),
            (
                Config::default()
                    .ping_interval(Duration::from_secs(5))
                    .silence_timeout(Duration::from_secs(5)),
                "silence_timeout",
            ),
            (
                Config::default().handshake_timeout(Duration::ZERO),
                "handshake_timeout",
            ),
            (Config::default().read_buffer(10), "read_buffer"),
            (
                Config::default().read_spin(Duration::from_millis(11)),
                "read_spin",
            ),
            (Config::default().linger(Duration::MAX), "linger"),
            (
                Config::default().reconnect_interval(Some(Duration::ZERO)),
                "reconnect_interval",
            ),
            (Config::default().max_frame_len(u32::MAX), "max_frame_len"),
        ];
        for (config, field) in cases {
            match config.validate() {
                Err(Error::Config(e)) => assert_eq!(e.field(), field, "{e}"),
                other => panic!("expected a config error about {field}, got {other:?}"),
            }
        }
    }
}
