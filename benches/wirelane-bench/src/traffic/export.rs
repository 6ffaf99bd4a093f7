//! What a node in another process reports of its run, as JSON: its senders'
//! [`Sent`], its receiver's [`Inbox`], its watcher's [`EventLog`] and its counters,
//! so that the process that runs the whole mesh judges every stream with the same
//! [`verdict`](super::verdict) as a mesh in one process.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};
use wirelane::{Lane, LaneStats, NodeStats, PeerId};

use super::workers::{EventLog, Inbox, Oddities, Sent};
use crate::stamp::Track;

/// One node's report.
#[derive(Debug)]
pub struct NodeReport {
    pub sent: Vec<Sent>,
    pub inbox: Inbox,
    pub events: EventLog,
    pub stats: NodeStats,
}

/// The report as one JSON object.
pub fn to_json(sent: &[Sent], inbox: &Inbox, events: &EventLog, stats: &NodeStats) -> Value {
    json!({
        "sent": sent.iter().map(sent_json).collect::<Vec<_>>(),
        "inbox": {
            "me": inbox.me.0,
            "streams": inbox.streams.iter().map(|((lane, src), t)| json!({
                "lane": lane_name(*lane),
                "src": src.0,
                "track": t.to_json(),
            })).collect::<Vec<_>>(),
            "malformed": odd_json(&inbox.malformed),
        },
        "events": {
            "me": events.me.0,
            "returned": events.returned.iter().map(|(dst, t)| json!({
                "dst": dst.0,
                "track": t.to_json(),
            })).collect::<Vec<_>>(),
            "malformed": odd_json(&events.malformed),
            "reasons": events.reasons.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>(),
            "unclean": odd_json(&events.unclean),
            "refused": odd_json(&events.refused),
            "redials": events.redials,
            "redial_failures": odd_json(&events.redial_failures),
        },
        "stats": {
            "gossip": lane_stats_json(&stats.gossip),
            "private": lane_stats_json(&stats.private),
        },
    })
}

/// Reads back what [`to_json`] wrote.
///
/// # Errors
///
/// Names the first part that does not parse.
pub fn from_json(v: &Value) -> Result<NodeReport, String> {
    let field = |v: &Value, key: &str| v.get(key).cloned().ok_or(format!("no `{key}`"));
    let sent = field(v, "sent")?
        .as_array()
        .ok_or("`sent` is not a list")?
        .iter()
        .map(sent_from)
        .collect::<Result<Vec<_>, _>>()?;
    let inbox_v = field(v, "inbox")?;
    let mut streams = HashMap::new();
    for s in field(&inbox_v, "streams")?
        .as_array()
        .ok_or("bad `streams`")?
    {
        let lane = lane_from(s.get("lane").and_then(Value::as_str).unwrap_or(""))?;
        let src = PeerId(number(s, "src")?);
        let track = Track::from_json(&field(s, "track")?).ok_or("a bad track")?;
        streams.insert((lane, src), track);
    }
    let inbox = Inbox {
        me: PeerId(number(&inbox_v, "me")?),
        streams,
        malformed: odd_from(&field(&inbox_v, "malformed")?),
    };
    let ev = field(v, "events")?;
    let mut returned = HashMap::new();
    for r in field(&ev, "returned")?.as_array().ok_or("bad `returned`")? {
        let track = Track::from_json(&field(r, "track")?).ok_or("a bad track")?;
        returned.insert(PeerId(number(r, "dst")?), track);
    }
    let mut reasons = BTreeMap::new();
    for (name, n) in field(&ev, "reasons")?.as_object().ok_or("bad `reasons`")? {
        reasons.insert(super::workers::reason_static(name), n.as_u64().unwrap_or(0));
    }
    let events = EventLog {
        me: PeerId(number(&ev, "me")?),
        returned,
        malformed: odd_from(&field(&ev, "malformed")?),
        reasons,
        unclean: odd_from(&field(&ev, "unclean")?),
        refused: odd_from(&field(&ev, "refused")?),
        redials: number(&ev, "redials")?,
        redial_failures: odd_from(&field(&ev, "redial_failures")?),
    };
    let st = field(v, "stats")?;
    let mut stats = NodeStats::default();
    stats.gossip = lane_stats_from(&field(&st, "gossip")?)?;
    stats.private = lane_stats_from(&field(&st, "private")?)?;
    Ok(NodeReport {
        sent,
        inbox,
        events,
        stats,
    })
}

fn number(v: &Value, key: &str) -> Result<u64, String> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or(format!("no number `{key}`"))
}

fn lane_name(lane: Lane) -> &'static str {
    match lane {
        Lane::Private => "private",
        _ => "gossip", // the only other lane the bench sends on
    }
}

fn lane_from(name: &str) -> Result<Lane, String> {
    match name {
        "private" => Ok(Lane::Private),
        "gossip" => Ok(Lane::Gossip),
        other => Err(format!("an unknown lane `{other}`")),
    }
}

fn odd_json(o: &Oddities) -> Value {
    json!({ "count": o.count, "first": o.first })
}

fn odd_from(v: &Value) -> Oddities {
    Oddities {
        count: v.get("count").and_then(Value::as_u64).unwrap_or(0),
        first: v.get("first").and_then(Value::as_str).map(str::to_owned),
    }
}

fn sent_json(s: &Sent) -> Value {
    json!({
        "lane": lane_name(s.lane),
        "src": s.src.0,
        "accepted": s.accepted.iter().map(|(dst, n)| [dst.0, *n]).collect::<Vec<_>>(),
        "busy": s.busy,
        "refused": s.refused,
        "odd": odd_json(&s.odd),
    })
}

fn sent_from(v: &Value) -> Result<Sent, String> {
    let accepted = v
        .get("accepted")
        .and_then(Value::as_array)
        .ok_or("no `accepted`")?
        .iter()
        .map(|pair| {
            let n = |i: usize| pair.get(i).and_then(Value::as_u64);
            Some((PeerId(n(0)?), n(1)?))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or("a bad `accepted` pair")?;
    Ok(Sent {
        lane: lane_from(v.get("lane").and_then(Value::as_str).unwrap_or(""))?,
        src: PeerId(number(v, "src")?),
        accepted,
        busy: number(v, "busy")?,
        refused: number(v, "refused")?,
        odd: odd_from(v.get("odd").unwrap_or(&Value::Null)),
    })
}

fn lane_stats_json(s: &LaneStats) -> Value {
    json!({
        "sent": s.sent,
        "sent_bytes": s.sent_bytes,
        "dropped": s.dropped,
        "undelivered": s.undelivered,
        "received": s.received,
        "received_bytes": s.received_bytes,
        "recv_dropped": s.recv_dropped,
    })
}

fn lane_stats_from(v: &Value) -> Result<LaneStats, String> {
    let mut s = LaneStats::default();
    s.sent = number(v, "sent")?;
    s.sent_bytes = number(v, "sent_bytes")?;
    s.dropped = number(v, "dropped")?;
    s.undelivered = number(v, "undelivered")?;
    s.received = number(v, "received")?;
    s.received_bytes = number(v, "received_bytes")?;
    s.recv_dropped = number(v, "recv_dropped")?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_as_it_was_written() {
        let mut t = Track::default();
        for seq in [0, 1, 2, 5] {
            t.observe(seq);
        }
        let sent = vec![Sent {
            lane: Lane::Private,
            src: PeerId(1),
            accepted: vec![(PeerId(2), 6)],
            busy: 3,
            refused: 0,
            odd: Oddities::default(),
        }];
        let inbox = Inbox {
            me: PeerId(1),
            streams: HashMap::from([((Lane::Gossip, PeerId(2)), t.clone())]),
            malformed: Oddities::default(),
        };
        let events = EventLog {
            me: PeerId(1),
            returned: HashMap::from([(PeerId(2), t)]),
            malformed: Oddities::default(),
            reasons: BTreeMap::from([("shutdown", 1)]),
            unclean: Oddities {
                count: 1,
                first: Some("dead".to_owned()),
            },
            refused: Oddities::default(),
            redials: 2,
            redial_failures: Oddities::default(),
        };
        let mut stats = NodeStats::default();
        stats.private.recv_dropped = 4;
        let text = to_json(&sent, &inbox, &events, &stats).to_string();
        let back = from_json(&serde_json::from_str(&text).unwrap()).expect("parses");
        assert_eq!(back.sent[0].accepted, vec![(PeerId(2), 6)]);
        assert_eq!(back.sent[0].busy, 3);
        let stream = &back.inbox.streams[&(Lane::Gossip, PeerId(2))];
        assert_eq!(stream.ranges(), vec![(0, 3), (5, 6)]);
        assert_eq!(back.events.returned[&PeerId(2)].distinct, 4);
        assert_eq!(back.events.reasons.get("shutdown"), Some(&1));
        assert_eq!(back.events.unclean.first.as_deref(), Some("dead"));
        assert_eq!(back.events.redials, 2);
        assert_eq!(back.stats.private.recv_dropped, 4);
    }
}
