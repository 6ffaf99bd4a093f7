//! Counters and their snapshots.
//!
//! Each connection owns its counters; a node's figures are those of its live
//! connections plus the totals that ended connections left behind. Counters are
//! grouped by the thread that writes them (writer, reader, application senders) and
//! padded apart, so the hot paths never share a cache line, and the writer and
//! reader add once per batch rather than once per message.

use std::fmt;
use std::net::SocketAddr;
use std::ops::{Add, AddAssign, Deref};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::event::Lane;
use crate::id::{ConnId, PeerId};
use crate::timing::Histogram;

/// Keeps a group of counters on its own cache lines.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(T);

impl<T> Padded<T> {
    pub(crate) fn new(value: T) -> Padded<T> {
        Padded(value)
    }
}

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Counters of one lane, as written by one thread.
#[derive(Default)]
pub(crate) struct LaneCounters {
    pub(crate) messages: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// Private, outbound: messages handed back in `Event::Undelivered`.
    pub(crate) undelivered: AtomicU64,
    /// Writer only: messages taken from the lane into the batch being written. They
    /// still count as queued.
    pub(crate) in_batch: AtomicU64,
}

impl LaneCounters {
    pub(crate) fn add(&self, messages: u64, bytes: u64) {
        if messages > 0 {
            self.messages.fetch_add(messages, Relaxed);
            self.bytes.fetch_add(bytes, Relaxed);
        }
    }

    pub(crate) fn drop_n(&self, n: u64) {
        if n > 0 {
            self.dropped.fetch_add(n, Relaxed);
        }
    }

    fn absorb(&self, other: &LaneCounters) {
        self.messages
            .fetch_add(other.messages.load(Relaxed), Relaxed);
        self.bytes.fetch_add(other.bytes.load(Relaxed), Relaxed);
        self.dropped.fetch_add(other.dropped.load(Relaxed), Relaxed);
        self.undelivered
            .fetch_add(other.undelivered.load(Relaxed), Relaxed);
    }
}

/// Counters of requests and replies on one connection, written by whoever sees each
/// outcome: the writer (requests written), the reader (replies received, requests
/// delivered), the requester's thread (timeouts, failures), the responder's
/// (replies queued).
#[derive(Default)]
pub(crate) struct RequestCounters {
    pub(crate) sent: AtomicU64,
    pub(crate) answered: AtomicU64,
    pub(crate) unanswered: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) late: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) served: AtomicU64,
    pub(crate) responded: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

impl RequestCounters {
    fn all(&self) -> [&AtomicU64; 10] {
        [
            &self.sent,
            &self.answered,
            &self.unanswered,
            &self.timed_out,
            &self.failed,
            &self.late,
            &self.abandoned,
            &self.served,
            &self.responded,
            &self.dropped,
        ]
    }

    fn absorb(&self, other: &RequestCounters) {
        for (mine, theirs) in self.all().into_iter().zip(other.all()) {
            mine.fetch_add(theirs.load(Relaxed), Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> RequestStats {
        RequestStats {
            sent: self.sent.load(Relaxed),
            answered: self.answered.load(Relaxed),
            unanswered: self.unanswered.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
            failed: self.failed.load(Relaxed),
            late_replies: self.late.load(Relaxed),
            abandoned: self.abandoned.load(Relaxed),
            served: self.served.load(Relaxed),
            responded: self.responded.load(Relaxed),
            dropped_unanswered: self.dropped.load(Relaxed),
        }
    }
}

/// One direction of a connection: both lanes and the bytes on the wire.
#[derive(Default)]
pub(crate) struct DirCounters {
    pub(crate) gossip: LaneCounters,
    pub(crate) private: LaneCounters,
    pub(crate) wire_bytes: AtomicU64,
    /// Outbound: data frames a sending thread began writing itself while the
    /// writer was parked (`crate::conn::turn`).
    pub(crate) by_senders: AtomicU64,
}

impl DirCounters {
    pub(crate) fn lane(&self, lane: Lane) -> &LaneCounters {
        match lane {
            Lane::Gossip => &self.gossip,
            Lane::Private | Lane::Request => &self.private,
        }
    }

    fn absorb(&self, other: &DirCounters) {
        self.gossip.absorb(&other.gossip);
        self.private.absorb(&other.private);
        self.wire_bytes
            .fetch_add(other.wire_bytes.load(Relaxed), Relaxed);
        self.by_senders
            .fetch_add(other.by_senders.load(Relaxed), Relaxed);
    }
}

/// Everything counted about one connection.
#[derive(Default)]
pub(crate) struct Counters {
    /// Written by the writer: frames and bytes handed to the kernel; `dropped` counts
    /// gossip discarded at close and private messages that could not be handed back.
    pub(crate) out: Padded<DirCounters>,
    /// Written by the reader: frames delivered to the inbound queue; `dropped` counts
    /// frames received but not delivered.
    pub(crate) inb: Padded<DirCounters>,
    /// Written by application threads: gossip refused because the lane was full.
    pub(crate) gossip_full: Padded<AtomicU64>,
    /// Application threads waiting in `send` right now.
    pub(crate) waiting: Padded<AtomicU64>,
    /// 1 while the reader waits for the application to make room (see
    /// [`PeerStats::reader_waiting`]).
    pub(crate) reader_waiting: Padded<AtomicU64>,
    /// Requests and replies, both sides.
    pub(crate) requests: Padded<RequestCounters>,
}

impl Counters {
    /// Adds an ended connection's counts into node totals.
    pub(crate) fn absorb(&self, other: &Counters) {
        self.out.absorb(&other.out);
        self.inb.absorb(&other.inb);
        self.gossip_full
            .fetch_add(other.gossip_full.load(Relaxed), Relaxed);
        self.requests.absorb(&other.requests);
    }

    /// A snapshot of one lane; `queued` is the lane's length, which the caller reads
    /// from the queue itself.
    pub(crate) fn lane(&self, lane: Lane, queued: u64) -> LaneStats {
        let out = self.out.lane(lane);
        let inb = self.inb.lane(lane);
        let full = match lane {
            Lane::Gossip => self.gossip_full.load(Relaxed),
            Lane::Private | Lane::Request => 0,
        };
        LaneStats {
            sent: out.messages.load(Relaxed),
            sent_bytes: out.bytes.load(Relaxed),
            queued: queued + out.in_batch.load(Relaxed),
            queued_bytes: 0,
            dropped: out.dropped.load(Relaxed) + full,
            undelivered: out.undelivered.load(Relaxed),
            received: inb.messages.load(Relaxed),
            received_bytes: inb.bytes.load(Relaxed),
            recv_dropped: inb.dropped.load(Relaxed),
        }
    }

    pub(crate) fn bytes_in(&self) -> u64 {
        self.inb.wire_bytes.load(Relaxed)
    }

    pub(crate) fn bytes_out(&self) -> u64 {
        self.out.wire_bytes.load(Relaxed)
    }
}

/// Counters of one lane, in one snapshot.
///
/// On the send side, `sent + queued + undelivered + dropped` equals the number of
/// messages the application offered on that lane and that were not handed straight
/// back by the call itself (gossip refusals count, as `dropped`); on the receive side
/// `received + recv_dropped` equals the frames that arrived. The writer and the
/// reader add to their counters once per batch, just after it is written or delivered,
/// so a counter can trail by a moment what the peer or the application has already
/// seen; and a snapshot taken while messages move can be off by the few in motion.
/// Once a connection has ended its lanes are empty, and `sent + dropped` is exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaneStats {
    /// Messages written to the socket.
    pub sent: u64,
    /// Payload bytes of those messages.
    pub sent_bytes: u64,
    /// Messages accepted and not yet written: in the lane, or in the batch the
    /// writer is writing.
    pub queued: u64,
    /// Payload bytes in the lane now, against its byte limit.
    pub queued_bytes: u64,
    /// Gossip: refused because the lane was full, or discarded when the connection
    /// closed. Private: lost because they could be neither written nor handed back
    /// (only when the event queue is full at shutdown); normally zero.
    pub dropped: u64,
    /// Private: accepted by a send, then handed back in
    /// [`Event::Undelivered`](crate::Event::Undelivered) because the connection
    /// ended before they were written. Always zero for gossip.
    pub undelivered: u64,
    /// Messages received and delivered to the inbound queue.
    pub received: u64,
    /// Payload bytes of those messages.
    pub received_bytes: u64,
    /// Gossip: dropped because the inbound queue was full. Private: received but not
    /// delivered, because the connection was closing and the application let a
    /// whole linger pass without making room (or the close lasted ten lingers);
    /// normally zero. With `undelivered` on the sender's side, this is how every
    /// private message a send accepted is accounted for across reconnections.
    pub recv_dropped: u64,
}

/// Requests and replies on a connection (or, in [`NodeStats`], on all of them).
///
/// On the requester's side every request accepted ends in exactly one of
/// `answered`, `unanswered`, `timed_out`, `failed` and `abandoned`; a reply that
/// arrives after its requester gave up is counted in `late_replies` and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestStats {
    /// Requests the writer took to write (one whose write fails ends its
    /// connection, and fails).
    pub sent: u64,
    /// Requests answered with a reply.
    pub answered: u64,
    /// Requests the peer's application dropped without answering.
    pub unanswered: u64,
    /// Requests whose deadline passed first (waiting for room, or for the reply).
    pub timed_out: u64,
    /// Requests that failed because the connection ended or the node shut down.
    pub failed: u64,
    /// Replies that arrived after their requester had given up.
    pub late_replies: u64,
    /// Requests of a [`Node::request_many`](crate::Node::request_many) still
    /// unanswered when it returned, having had enough replies.
    pub abandoned: u64,
    /// Requests received from the peer and handed to the application.
    pub served: u64,
    /// Replies the application queued with [`Node::respond`](crate::Node::respond).
    pub responded: u64,
    /// Requests the application dropped unanswered (the requester was told).
    pub dropped_unanswered: u64,
}

impl AddAssign for RequestStats {
    fn add_assign(&mut self, o: RequestStats) {
        self.sent += o.sent;
        self.answered += o.answered;
        self.unanswered += o.unanswered;
        self.timed_out += o.timed_out;
        self.failed += o.failed;
        self.late_replies += o.late_replies;
        self.abandoned += o.abandoned;
        self.served += o.served;
        self.responded += o.responded;
        self.dropped_unanswered += o.dropped_unanswered;
    }
}

fn write_requests(f: &mut fmt::Formatter<'_>, r: &RequestStats) -> fmt::Result {
    writeln!(
        f,
        "  request sent {}: answered {}, unanswered {}, timed out {}, failed {}, abandoned {}, late replies {} | served {}, responded {}, dropped unanswered {}",
        r.sent,
        r.answered,
        r.unanswered,
        r.timed_out,
        r.failed,
        r.abandoned,
        r.late_replies,
        r.served,
        r.responded,
        r.dropped_unanswered
    )
}

impl Add for LaneStats {
    type Output = LaneStats;
    fn add(mut self, other: LaneStats) -> LaneStats {
        self += other;
        self
    }
}

impl AddAssign for LaneStats {
    fn add_assign(&mut self, o: LaneStats) {
        self.sent += o.sent;
        self.sent_bytes += o.sent_bytes;
        self.queued += o.queued;
        self.queued_bytes += o.queued_bytes;
        self.dropped += o.dropped;
        self.undelivered += o.undelivered;
        self.received += o.received;
        self.received_bytes += o.received_bytes;
        self.recv_dropped += o.recv_dropped;
    }
}

/// A snapshot of one connection's counters, from [`Node::peer_stats`](crate::Node::peer_stats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// The peer.
    pub peer: PeerId,
    /// The connection these figures belong to.
    pub conn: ConnId,
    /// Our end of the connection.
    pub local_addr: SocketAddr,
    /// The peer's end of the connection.
    pub peer_addr: SocketAddr,
    /// Whether the peer dialled us.
    pub inbound: bool,
    /// The gossip lane.
    pub gossip: LaneStats,
    /// The private lane.
    pub private: LaneStats,
    /// Requests and replies.
    pub requests: RequestStats,
    /// Bytes read from the socket, headers and control frames included.
    pub bytes_in: u64,
    /// Bytes written to the socket, headers and control frames included.
    pub bytes_out: u64,
    /// Application threads waiting in `send` for room on the private lane right now.
    pub blocked_senders: u64,
    /// Whether the connection's reader is waiting right now for the application to
    /// make room: a large gossip payload for
    /// [`Config::inbound_bytes`](crate::Config::inbound_bytes), the one wait for the
    /// application a reader has left. While it waits nothing is read.
    pub reader_waiting: bool,
    /// Whether the peer's flow-control window is closed to us right now: its
    /// application has not taken what we sent ([`Config::private_window`]), and our
    /// writer holds the next private message until it does.
    ///
    /// [`Config::private_window`]: crate::Config::private_window
    pub window_closed: bool,
    /// How long in all our writer has held a private message for want of room in
    /// the peer's window, waits that ended only.
    pub window_wait: std::time::Duration,
    /// Data frames (messages, requests, replies) that the sending thread wrote to
    /// the socket itself, because the connection's writer thread was idle: one
    /// thread wake-up fewer for each. The rest went through the writer.
    pub written_by_senders: u64,
}

/// A snapshot of a node's counters, from [`Node::stats`](crate::Node::stats): live
/// connections plus everything ended connections counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Peers connected now.
    pub peers: usize,
    /// The gossip lanes of all connections, ended ones included.
    pub gossip: LaneStats,
    /// The private lanes of all connections, ended ones included.
    pub private: LaneStats,
    /// Requests and replies of all connections, ended ones included.
    pub requests: RequestStats,
    /// Bytes read from all sockets.
    pub bytes_in: u64,
    /// Bytes written to all sockets.
    pub bytes_out: u64,
    /// Connections that completed their handshake.
    pub connections_opened: u64,
    /// Connections refused during their handshake, both directions.
    pub handshakes_failed: u64,
    /// Informational events dropped because the event queue was full.
    pub events_dropped: u64,
    /// Readers waiting right now for the application to make room (see
    /// [`PeerStats::reader_waiting`]).
    pub readers_waiting: u64,
    /// Bytes of large inbound payloads held now, against
    /// [`Config::inbound_bytes`](crate::Config::inbound_bytes): in the inbound
    /// queue, or received by the application and not yet dropped.
    pub inbound_bytes: u64,
    /// Connections whose readers rest now: idle plaintext connections whose
    /// sockets one node-wide thread watches, reading their pings and pongs, until
    /// something else arrives.
    pub resting: u64,
    /// Peers this node is waiting to dial again, or dialling
    /// ([`Config::reconnect_interval`](crate::Config::reconnect_interval)).
    pub redials_pending: u64,
    /// How long private sends and requests waited for room in a lane, those that
    /// had to wait.
    pub send_wait: Histogram,
    /// How long requests took, from the call to the reply, those that got one.
    pub request_time: Histogram,
}

fn write_lane(f: &mut fmt::Formatter<'_>, name: &str, l: &LaneStats) -> fmt::Result {
    writeln!(
        f,
        "  {name:<7} sent {} ({} B), queued {} ({} B), handed back {}, dropped {} | received {} ({} B), dropped {}",
        l.sent,
        l.sent_bytes,
        l.queued,
        l.queued_bytes,
        l.undelivered,
        l.dropped,
        l.received,
        l.received_bytes,
        l.recv_dropped
    )
}

impl fmt::Display for NodeStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} peers; {} B in, {} B out; {} connections opened, {} refused; {} events dropped; {} readers waiting, {} B of large payloads held",
            self.peers,
            self.bytes_in,
            self.bytes_out,
            self.connections_opened,
            self.handshakes_failed,
            self.events_dropped,
            self.readers_waiting,
            self.inbound_bytes
        )?;
        write_lane(f, "gossip", &self.gossip)?;
        write_lane(f, "private", &self.private)?;
        write_requests(f, &self.requests)?;
        write_timing(f, "sends that waited", &self.send_wait)?;
        write_timing(f, "request round trips", &self.request_time)
    }
}

/// A histogram as one line: how many, and the buckets its median and p99 fall in.
fn write_timing(f: &mut fmt::Formatter<'_>, name: &str, h: &Histogram) -> fmt::Result {
    let (Some(p50), Some(p99)) = (h.quantile(0.5), h.quantile(0.99)) else {
        return Ok(());
    };
    let bound = |d: Duration| {
        if d == Duration::MAX {
            // The last bucket has no upper bound: say where it starts.
            let last = h
                .buckets
                .iter()
                .rev()
                .nth(1)
                .map_or(Duration::ZERO, |b| b.0);
            format!("> {last:?}")
        } else {
            format!("<= {d:?}")
        }
    };
    writeln!(
        f,
        "  {name}: {}, p50 {}, p99 {}",
        h.count,
        bound(p50),
        bound(p99)
    )
}

impl fmt::Display for PeerStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} over {} ({} -> {}, {}); {} B in, {} B out ({} frames written by senders); {} senders waiting; waited {:?} for the peer's window{}{}",
            self.peer,
            self.conn,
            self.local_addr,
            self.peer_addr,
            if self.inbound { "inbound" } else { "outbound" },
            self.bytes_in,
            self.bytes_out,
            self.written_by_senders,
            self.blocked_senders,
            self.window_wait,
            if self.window_closed {
                ", closed now"
            } else {
                ""
            },
            if self.reader_waiting {
                "; reader waiting for the application"
            } else {
                ""
            }
        )?;
        write_lane(f, "gossip", &self.gossip)?;
        write_lane(f, "private", &self.private)?;
        write_requests(f, &self.requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stats_line_of_a_histogram_names_its_buckets() {
        let mut stats = NodeStats::default();
        let top = Duration::from_micros(1 << 24);
        stats.request_time = Histogram {
            buckets: vec![
                (Duration::from_micros(4), 60),
                (top, 98),
                (Duration::MAX, 100),
            ],
            count: 100,
            sum: Duration::from_secs(50),
        };
        let text = stats.to_string();
        assert!(
            text.contains(&format!(
                "request round trips: 100, p50 <= 4µs, p99 > {top:?}"
            )),
            "{text}"
        );
        assert!(
            !text.contains("sends that waited"),
            "nothing recorded, no line"
        );
    }
}
