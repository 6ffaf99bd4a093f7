//! Prometheus metrics, behind the `prometheus` feature: a collector that reads a
//! node's counters and histograms when it is scraped. Nothing is added to the paths
//! messages take; a scrape costs one [`Node::stats`] and a [`Node::peer_stats`] per
//! peer.
//!
//! Every name starts with `wirelane_`. Per-peer series are kept to the first
//! [`MAX_PEER_SERIES`] peers in id order, so that a node with thousands of peers
//! does not make thousands of series; the node-wide series count everyone.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::node::Node;
use crate::timing::Histogram;

/// Most peers that get series of their own.
pub const MAX_PEER_SERIES: usize = 64;

/// Reads a node's counters at each scrape; register it with
/// [`register`] or [`Registry::register_collector`].
///
/// ```
/// use std::sync::Arc;
/// use wirelane::{Config, Node, PeerId};
///
/// let node = Arc::new(Node::bind(PeerId(1), "127.0.0.1:0", Config::default())?);
/// let mut registry = prometheus_client::registry::Registry::default();
/// wirelane::metrics::register(&mut registry, node.clone());
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry)?;
/// assert!(text.contains("wirelane_peers 0"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct NodeCollector {
    node: Arc<Node>,
}

impl NodeCollector {
    /// A collector reading `node`.
    pub fn new(node: Arc<Node>) -> NodeCollector {
        NodeCollector { node }
    }
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCollector")
            .field("node", &self.node.id())
            .finish()
    }
}

/// Registers a [`NodeCollector`] for `node` with `registry`.
pub fn register(registry: &mut Registry, node: Arc<Node>) {
    registry.register_collector(Box::new(NodeCollector::new(node)));
}

type Labels = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// One metric family: a descriptor, then a value per label set.
fn family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(Labels, u64)],
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (set, value) in rows {
        let mut row = metric.encode_family(set)?;
        match kind {
            MetricType::Counter => row.encode_counter::<NoLabelSet, _, u64>(value, None)?,
            _ => row.encode_gauge(value)?,
        }
    }
    Ok(())
}

/// One value with no labels.
fn single(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    value: u64,
) -> fmt::Result {
    family(encoder, name, help, kind, &[(Vec::new(), value)])
}

/// A histogram of durations, in seconds.
fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    h: &Histogram,
) -> fmt::Result {
    let mut previous = 0;
    let buckets: Vec<(f64, u64)> = h
        .buckets
        .iter()
        .map(|(bound, cumulative)| {
            let upper = if *bound == std::time::Duration::MAX {
                f64::INFINITY
            } else {
                bound.as_secs_f64()
            };
            let n = cumulative - previous;
            previous = *cumulative;
            (upper, n)
        })
        .collect();
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<NoLabelSet>(h.sum.as_secs_f64(), h.count, &buckets, None)
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        use MetricType::{Counter, Gauge};
        let s = self.node.stats();
        let lanes = [("gossip", &s.gossip), ("private", &s.private)];
        let by_lane = |f: fn(&crate::LaneStats) -> u64| -> Vec<(Labels, u64)> {
            lanes
                .iter()
                .map(|(lane, l)| (labels(&[("lane", lane)]), f(l)))
                .collect()
        };
        single(
            &mut e,
            "wirelane_peers",
            "Peers connected now.",
            Gauge,
            s.peers as u64,
        )?;
        family(
            &mut e,
            "wirelane_messages_sent",
            "Messages written to sockets.",
            Counter,
            &by_lane(|l| l.sent),
        )?;
        family(
            &mut e,
            "wirelane_messages_received",
            "Messages handed to the application.",
            Counter,
            &by_lane(|l| l.received),
        )?;
        family(
            &mut e,
            "wirelane_messages_queued",
            "Messages queued for peers now.",
            Gauge,
            &by_lane(|l| l.queued),
        )?;
        family(
            &mut e,
            "wirelane_messages_dropped",
            "Messages dropped and counted: on sending (a full gossip lane; a private message that could not be handed back) or on receipt.",
            Counter,
            &lanes
                .iter()
                .flat_map(|(lane, l)| {
                    [
                        (labels(&[("lane", lane), ("side", "send")]), l.dropped),
                        (labels(&[("lane", lane), ("side", "receive")]), l.recv_dropped),
                    ]
                })
                .collect::<Vec<_>>(),
        )?;
        single(
            &mut e,
            "wirelane_messages_handed_back",
            "Private messages handed back in Undelivered events.",
            Counter,
            s.private.undelivered,
        )?;
        family(
            &mut e,
            "wirelane_bytes",
            "Bytes read from and written to sockets.",
            Counter,
            &[
                (labels(&[("direction", "in")]), s.bytes_in),
                (labels(&[("direction", "out")]), s.bytes_out),
            ],
        )?;
        single(
            &mut e,
            "wirelane_connections_opened",
            "Connections that completed their handshake.",
            Counter,
            s.connections_opened,
        )?;
        single(
            &mut e,
            "wirelane_handshakes_failed",
            "Connections refused during their handshake.",
            Counter,
            s.handshakes_failed,
        )?;
        single(
            &mut e,
            "wirelane_events_dropped",
            "Informational events dropped for a full event queue.",
            Counter,
            s.events_dropped,
        )?;
        single(
            &mut e,
            "wirelane_readers_waiting",
            "Readers waiting for the application now.",
            Gauge,
            s.readers_waiting,
        )?;
        single(
            &mut e,
            "wirelane_inbound_bytes",
            "Bytes of large inbound payloads held now.",
            Gauge,
            s.inbound_bytes,
        )?;
        single(
            &mut e,
            "wirelane_redials_pending",
            "Peers waiting to be dialled again.",
            Gauge,
            s.redials_pending,
        )?;
        let r = &s.requests;
        family(
            &mut e,
            "wirelane_requests",
            "Requests this node made, by outcome (sent counts those written).",
            Counter,
            &[
                ("sent", r.sent),
                ("answered", r.answered),
                ("unanswered", r.unanswered),
                ("timed_out", r.timed_out),
                ("failed", r.failed),
                ("abandoned", r.abandoned),
                ("late_reply", r.late_replies),
            ]
            .iter()
            .map(|(o, n)| (labels(&[("outcome", o)]), *n))
            .collect::<Vec<_>>(),
        )?;
        family(
            &mut e,
            "wirelane_requests_served",
            "Requests from peers handed to the application, and how they ended.",
            Counter,
            &[
                ("delivered", r.served),
                ("responded", r.responded),
                ("dropped_unanswered", r.dropped_unanswered),
            ]
            .iter()
            .map(|(o, n)| (labels(&[("outcome", o)]), *n))
            .collect::<Vec<_>>(),
        )?;
        histogram(
            &mut e,
            "wirelane_send_wait_seconds",
            "How long private sends and requests waited for lane room, those that waited.",
            &s.send_wait,
        )?;
        histogram(
            &mut e,
            "wirelane_request_duration_seconds",
            "How long requests took, from the call to the reply.",
            &s.request_time,
        )?;

        let mut peers = self.node.peers();
        peers.sort();
        peers.truncate(MAX_PEER_SERIES);
        let stats: Vec<_> = peers
            .iter()
            .filter_map(|p| self.node.peer_stats(*p))
            .collect();
        let per_lane = |f: fn(&crate::LaneStats) -> u64| -> Vec<(Labels, u64)> {
            stats
                .iter()
                .flat_map(|p| {
                    let peer = p.peer.to_string();
                    [("gossip", &p.gossip), ("private", &p.private)]
                        .map(|(lane, l)| (labels(&[("peer", &peer), ("lane", lane)]), f(l)))
                })
                .collect()
        };
        family(
            &mut e,
            "wirelane_peer_messages_sent",
            "Messages written to this peer's connection.",
            Counter,
            &per_lane(|l| l.sent),
        )?;
        family(
            &mut e,
            "wirelane_peer_messages_received",
            "Messages from this peer handed to the application.",
            Counter,
            &per_lane(|l| l.received),
        )?;
        family(
            &mut e,
            "wirelane_peer_messages_queued",
            "Messages queued for this peer now.",
            Gauge,
            &per_lane(|l| l.queued),
        )?;
        let per_peer = |f: &dyn Fn(&crate::PeerStats) -> u64| -> Vec<(Labels, u64)> {
            stats
                .iter()
                .map(|p| (labels(&[("peer", &p.peer.to_string())]), f(p)))
                .collect()
        };
        family(
            &mut e,
            "wirelane_peer_blocked_senders",
            "Threads waiting in send for this peer now.",
            Gauge,
            &per_peer(&|p| p.blocked_senders),
        )?;
        family(
            &mut e,
            "wirelane_peer_window_wait_microseconds",
            "Time the writer held a message for want of room in this peer's window.",
            Counter,
            &per_peer(&|p| p.window_wait.as_micros() as u64),
        )?;
        family(
            &mut e,
            "wirelane_peer_frames_written_by_senders",
            "Frames to this peer that the sending thread wrote itself, the writer being idle.",
            Counter,
            &per_peer(&|p| p.written_by_senders),
        )?;
        Ok(())
    }
}

/// Labels are encoded as given; asserted here so that a change of the crate's
/// label traits shows at compile time.
const _: fn() = || {
    fn is_label_set<T: EncodeLabelSet>() {}
    is_label_set::<Labels>();
};
