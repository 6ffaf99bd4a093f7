//! Judging a run's streams: the exact fate of every numbered message.
//!
//! Each number a send accepted must end up in exactly one place: received by the
//! destination's application, once and in order; handed back in an
//! `Event::Undelivered`; or discarded by the destination's node because its
//! connection was torn down before the application made room. The last is known
//! only as a count per receiving node (`NodeStats::private.recv_dropped`), so the
//! private lane is reconciled per receiver. Gossip may be dropped anywhere, so its
//! losses are counted, not judged; but it too must never arrive twice, out of
//! order, or without a send having accepted it.

use wirelane::{Lane, PeerId};

use super::Outcome;
use crate::stamp::{verify, Track};

/// One lane's figures, summed over its streams.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub sent: u64,
    /// Accepted and received by the destination's application (each counted once).
    pub received: u64,
    /// Accepted and handed back in `Undelivered`.
    pub returned: u64,
    /// Accepted and neither received nor handed back.
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Sends that found the lane full (private: waited, then offered again).
    pub busy: u64,
    /// Sends refused while the peer was disconnected (their message handed back by
    /// the error and offered again).
    pub refused: u64,
}

#[derive(Debug, Default)]
pub struct Streams {
    pub gossip: Totals,
    pub private: Totals,
    /// Private messages the receiving nodes counted as received but not delivered.
    pub recv_dropped: u64,
    /// Every broken promise, one line each.
    pub violations: Vec<String>,
}

impl Streams {
    pub fn reconciliation(&self) -> String {
        let p = &self.private;
        let sum = p.received + p.returned + self.recv_dropped;
        format!(
            "private reconciliation: {} accepted by send = {} delivered once in order + {} handed back + {} dropped on receipt ({sum}): {}",
            p.sent,
            p.received,
            p.returned,
            self.recv_dropped,
            if sum == p.sent { "OK" } else { "MISMATCH" }
        )
    }
}

/// Accounts for every stream, adds up the lanes, and lists what broke a promise.
pub fn judge(o: &Outcome) -> Streams {
    let mut j = Streams::default();
    let empty = Track::default();
    // Per receiving node: private messages neither received nor handed back.
    // Not a violation by itself: the receiver may have counted them as dropped on
    // receipt, which the reconciliation below decides. The first is kept to name.
    let mut unexplained: Vec<(PeerId, u64, Option<String>)> =
        o.inboxes.iter().map(|i| (i.me, 0, None)).collect();
    for s in &o.sent {
        let t = if s.lane == Lane::Private {
            &mut j.private
        } else {
            &mut j.gossip
        };
        t.busy += s.busy;
        t.refused += s.refused;
        let whose = format!("{} sender {}", s.lane, s.src);
        j.violations.extend(s.odd.violation(&whose));
        for &(dst, accepted) in &s.accepted {
            let received = o
                .inboxes
                .iter()
                .find(|i| i.me == dst)
                .and_then(|i| i.streams.get(&(s.lane, s.src)))
                .unwrap_or(&empty);
            let returned = o
                .events
                .iter()
                .find(|e| e.me == s.src && s.lane == Lane::Private)
                .and_then(|e| e.returned.get(&dst))
                .unwrap_or(&empty);
            let v = verify(accepted, received, returned);
            t.sent += accepted;
            t.received += v.received;
            t.returned += v.returned;
            t.lost += v.lost;
            t.duplicates += received.duplicates + returned.duplicates;
            t.reordered += received.reordered;
            let stream = format!("{} {} -> {}", s.lane, s.src, dst);
            if s.lane == Lane::Private {
                if let Some(slot) = unexplained.iter_mut().find(|u| u.0 == dst) {
                    slot.1 += v.lost;
                    if let (None, Some(seq)) = (&slot.2, v.first_lost) {
                        slot.2 = Some(format!("{stream} seq {seq}"));
                    }
                }
            }
            let mut broken = |what: String| j.violations.push(format!("{stream}: {what}"));
            if v.both > 0 {
                broken(format!("{} messages both received and handed back", v.both));
            }
            if v.phantom > 0 {
                broken(format!(
                    "{} messages received or handed back with a number no send accepted (accepted 0..{accepted})",
                    v.phantom
                ));
            }
            if let Some(seq) = received.first_duplicate {
                let n = received.duplicates;
                broken(format!("{n} messages received twice (first: seq {seq})"));
            }
            if let Some(seq) = returned.first_duplicate {
                let n = returned.duplicates;
                broken(format!("{n} messages handed back twice (first: seq {seq})"));
            }
            if let Some((seq, after)) = received.first_reordered {
                let n = received.reordered;
                broken(format!(
                    "{n} messages received after a later one (first: seq {seq} after seq {after})"
                ));
            }
        }
    }
    for (i, (me, lost, first)) in unexplained.iter().enumerate() {
        let dropped = o.stats.get(i).map_or(0, |s| s.private.recv_dropped);
        j.recv_dropped += dropped;
        if *lost != dropped {
            j.violations.push(format!(
                "receiver {me}: {lost} private messages accepted for it were neither delivered nor handed back \
                 (first: {}), but it counted {dropped} as received and dropped before delivery",
                first.as_deref().unwrap_or("none")
            ));
        }
    }
    let p = &j.private;
    if p.received + p.returned + j.recv_dropped != p.sent {
        j.violations.push(j.reconciliation());
    }
    for inbox in &o.inboxes {
        let whose = format!("receiver of {}", inbox.me);
        j.violations.extend(inbox.malformed.violation(&whose));
    }
    for events in &o.events {
        let whose = format!("messages handed back to {}", events.me);
        j.violations.extend(events.malformed.violation(&whose));
    }
    j
}
