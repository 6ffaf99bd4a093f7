//! Judging a `soak` run: the exact fate of every numbered message, and the bounds
//! on threads and memory.
//!
//! Private data is judged exactly (see [`crate::streams`]): for every (sender,
//! destination) stream, the numbers a send accepted must be the disjoint union of
//! those received and those handed back, each received once and in increasing
//! order. Gossip may be dropped anywhere on its way, so its losses are counted and
//! not judged; but it too must never arrive twice, out of order, or without a send
//! having accepted it.
//!
//! **Threads.** The steady state is the count with every pair connected and every
//! thread of the run started. Connections come and go, so the bound adds, for
//! connections in transition, four threads per pair of nodes — for a moment after a
//! redial, the new connection's reader and writer run on both sides while the old
//! one's finish — and two per node, for a dial that loses a race and holds a
//! handshake thread on each side until it is refused. That allows every pair to be
//! in transition at once, which is generous (on loopback a graceful close takes
//! about a millisecond and the chaos strikes at most every 100 ms), yet a leak of
//! one thread per disconnect crosses it within a few seconds of chaos.
//!
//! **Memory.** Resident memory may not exceed the highest reading of the warm-up by
//! more than [`RSS_HEADROOM_KIB`]: queues and buffers are bounded, and what the run
//! itself keeps (a bit per message number) stays in the low MiB.

use wirelane::{Lane, LaneStats};

use super::workers::{Oddities, SEND_POLL};
use super::{Outcome, Plan, DRAIN_DEADLINE};
use crate::report::Record;
use crate::streams::{verify, Track};

/// How far resident memory may grow past the warm-up's highest reading.
pub const RSS_HEADROOM_KIB: u64 = 64 * 1024;

/// Threads above the steady state allowed for connections in transition.
pub fn thread_slack(nodes: usize) -> usize {
    let pairs = nodes * (nodes - 1) / 2;
    4 * pairs + 2 * nodes
}

/// A run's verdict: records for the table, notes under it, and every violation.
#[derive(Debug, Default)]
pub struct Judged {
    pub records: Vec<Record>,
    pub notes: Vec<String>,
    pub violations: Vec<String>,
}

/// One lane's figures, summed over its streams.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    sent: u64,
    received: u64,
    returned: u64,
    lost: u64,
    duplicates: u64,
    reordered: u64,
    busy: u64,
    refused: u64,
}

/// Judges the run.
pub fn judge(plan: &Plan, o: &Outcome) -> Judged {
    let mut j = Judged::default();
    let mut lanes = [Totals::default(); 2];
    judge_streams(o, &mut lanes, &mut j.violations);
    let (gossip, private) = (lanes[0], lanes[1]);
    for (name, t) in [("gossip", gossip), ("private", private)] {
        j.records.push(
            Record::new("soak", "wirelane")
                .text("lane", name)
                .int("sent", t.sent)
                .int("received", t.received)
                .int("returned", t.returned)
                .int("lost", t.lost)
                .int("duplicates", t.duplicates)
                .int("reordered", t.reordered),
        );
    }

    let (max_threads, thread_bound) = judge_threads(plan, o, &mut j);
    let (max_rss, rss_bound) = judge_memory(plan, o, &mut j);
    judge_run(o, private.sent, &mut j);
    j.records.push(
        Record::new("soak", "wirelane")
            .text("lane", "all")
            .int("disconnects", o.chaos.disconnects)
            .int("max_threads", max_threads as u64)
            .int("thread_bound", thread_bound as u64)
            .int("max_rss_kib", max_rss)
            .int("rss_bound_kib", rss_bound)
            .int("violations", j.violations.len() as u64)
            .int("nodes", plan.nodes as u64)
            .float("secs", o.load.as_secs_f64())
            .int("seed", plan.seed),
    );

    let reasons: Vec<String> = o
        .events
        .iter()
        .flat_map(|e| e.reasons.iter())
        .fold(std::collections::BTreeMap::new(), |mut all, (r, n)| {
            *all.entry(*r).or_insert(0) += n;
            all
        })
        .into_iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let redials: u64 = o.events.iter().map(|e| e.redials).sum();
    j.notes.push(format!(
        "chaos (seed {}): {} disconnects, one every 100-500 ms ({} picks found the pair apart); \
         connection ends seen by the nodes: {}; redials: {redials}",
        plan.seed,
        o.chaos.disconnects,
        o.chaos.misses,
        reasons.join(", ")
    ));
    j.notes.push(format!(
        "private: {} sends waited {} ms for room, {} refused while the peer was disconnected; \
         gossip: {} dropped as full, {} refused while disconnected, {} lost on the way (not judged)",
        private.busy,
        SEND_POLL.as_millis(),
        private.refused,
        gossip.busy,
        gossip.refused,
        gossip.lost
    ));
    let stats = o
        .stats
        .iter()
        .fold((LaneStats::default(), LaneStats::default(), 0), |acc, s| {
            (
                acc.0 + s.gossip,
                acc.1 + s.private,
                acc.2 + s.events_dropped,
            )
        });
    j.notes.push(format!(
        "node counters: private dropped {} / recv_dropped {}; gossip dropped {} / recv_dropped {}; events dropped {}",
        stats.1.dropped, stats.1.recv_dropped, stats.0.dropped, stats.0.recv_dropped, stats.2
    ));
    j
}

/// Accounts for every stream, adds up the lanes, and lists what broke a promise.
fn judge_streams(o: &Outcome, lanes: &mut [Totals; 2], violations: &mut Vec<String>) {
    let empty = Track::default();
    for s in &o.sent {
        let t = &mut lanes[usize::from(s.lane == Lane::Private)];
        t.busy += s.busy;
        t.refused += s.refused;
        note(violations, &s.odd, &format!("{} sender {}", s.lane, s.src));
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
            if s.lane == Lane::Private && v.lost > 0 {
                violations.push(format!(
                    "{stream}: {} of {accepted} accepted messages neither received nor handed back (first: seq {})",
                    v.lost,
                    v.first_lost.unwrap_or_default()
                ));
            }
            if v.both > 0 {
                violations.push(format!(
                    "{stream}: {} messages both received and handed back",
                    v.both
                ));
            }
            if v.phantom > 0 {
                violations.push(format!(
                    "{stream}: {} messages received or handed back with a number no send accepted (accepted 0..{accepted})",
                    v.phantom
                ));
            }
            if let Some(seq) = received.first_duplicate {
                violations.push(format!(
                    "{stream}: {} messages received twice (first: seq {seq})",
                    received.duplicates
                ));
            }
            if let Some(seq) = returned.first_duplicate {
                violations.push(format!(
                    "{stream}: {} messages handed back twice (first: seq {seq})",
                    returned.duplicates
                ));
            }
            if let Some((seq, after)) = received.first_reordered {
                violations.push(format!(
                    "{stream}: {} messages received after a later one (first: seq {seq} after seq {after})",
                    received.reordered
                ));
            }
        }
    }
    for inbox in &o.inboxes {
        note(
            violations,
            &inbox.malformed,
            &format!("receiver of {}", inbox.me),
        );
    }
    for events in &o.events {
        note(
            violations,
            &events.malformed,
            &format!("messages handed back to {}", events.me),
        );
    }
}

/// Adds a violation for oddities, if there were any.
fn note(violations: &mut Vec<String>, odd: &Oddities, whose: &str) {
    if let Some(first) = &odd.first {
        violations.push(format!("{whose}: {} anomalies (first: {first})", odd.count));
    }
}

/// Checks the thread samples after the warm-up; returns the highest and the bound.
fn judge_threads(plan: &Plan, o: &Outcome, j: &mut Judged) -> (usize, usize) {
    let slack = thread_slack(plan.nodes);
    let bound = o.steady_threads + slack;
    let max = o.samples.iter().map(|s| s.threads).max().unwrap_or(0);
    let judged = o.samples.iter().filter(|s| s.at > plan.warmup());
    let over: Vec<_> = judged.clone().filter(|s| s.threads > bound).collect();
    if let Some(worst) = over.iter().max_by_key(|s| s.threads) {
        j.violations.push(format!(
            "threads above the bound of {bound} in {} of {} readings after the warm-up (highest {} at {:.0} s)",
            over.len(),
            judged.count(),
            worst.threads,
            worst.at.as_secs_f64()
        ));
    }
    j.notes.push(format!(
        "threads: {} with the mesh up and every thread of the run started; bound {bound} = that + {slack} \
         for connections in transition (4 per pair of nodes, 2 per node), judged after a {} s warm-up",
        o.steady_threads,
        plan.warmup().as_secs()
    ));
    (max, bound)
}

/// Checks the memory samples after the warm-up; returns the highest and the bound.
fn judge_memory(plan: &Plan, o: &Outcome, j: &mut Judged) -> (u64, u64) {
    let warmup = plan.warmup();
    let warm = o
        .samples
        .iter()
        .filter(|s| s.at <= warmup)
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(0);
    let bound = warm + RSS_HEADROOM_KIB;
    let max = o.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let judged = o.samples.iter().filter(|s| s.at > warmup);
    let over: Vec<_> = judged.clone().filter(|s| s.rss_kib > bound).collect();
    if let Some(worst) = over.iter().max_by_key(|s| s.rss_kib) {
        j.violations.push(format!(
            "resident memory above the bound of {bound} KiB in {} of {} readings after the warm-up (highest {} KiB at {:.0} s)",
            over.len(),
            judged.count(),
            worst.rss_kib,
            worst.at.as_secs_f64()
        ));
    }
    j.notes.push(format!(
        "memory: {warm} KiB at most during the warm-up; bound {bound} KiB (+{} MiB)",
        RSS_HEADROOM_KIB / 1024
    ));
    (max, bound)
}

/// The run's own milestones: readings, the mesh after the load, the drain.
fn judge_run(o: &Outcome, private_sent: u64, j: &mut Judged) {
    note(&mut j.violations, &o.sample_errors, "sampling");
    if let Err(why) = &o.remeshed {
        j.violations
            .push(format!("after the load, the mesh was not restored: {why}"));
    }
    match o.drained {
        Some(took) => j.notes.push(format!(
            "drain: all {private_sent} accepted private messages received or handed back {} ms after the mesh was restored",
            took.as_millis()
        )),
        None => j.violations.push(format!(
            "not every accepted private message was received or handed back within {DRAIN_DEADLINE:?} of the mesh being restored"
        )),
    }
    let protocol: u64 = o
        .events
        .iter()
        .filter_map(|e| e.reasons.get("protocol error"))
        .sum();
    if protocol > 0 {
        j.violations.push(format!(
            "{protocol} connections ended with a protocol error"
        ));
    }
    for events in &o.events {
        if let Some(first) = &events.unclean.first {
            j.notes.push(format!(
                "{} connections of {} ended uncleanly (first: {first})",
                events.unclean.count, events.me
            ));
        }
        if let Some(first) = &events.refused.first {
            j.notes.push(format!(
                "{} inbound handshakes refused by {} (first: {first})",
                events.refused.count, events.me
            ));
        }
        if let Some(first) = &events.redial_failures.first {
            j.notes.push(format!(
                "{} redials by {} failed and were tried again (first: {first})",
                events.redial_failures.count, events.me
            ));
        }
    }
}
