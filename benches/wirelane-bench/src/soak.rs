//! `soak`: a long mixed run with connections cut at random under a slow consumer,
//! checking that private data survives it exactly and that the process does not
//! grow.
//!
//! `mesh` checks the lanes on a mesh that stays up; real networks drop connections,
//! and real applications fall behind. Here a chaos thread disconnects a random pair
//! every 100–500 ms (replayable from `--seed`) while the lower id of each pair
//! redials, and node 1's application takes only `--slow-consumer` messages a
//! second, so that connections are cut while messages are in flight towards it.
//! Every accepted private message is then reconciled ([`verdict`]), and threads and
//! resident memory, sampled every second, must stay within bounds after a warm-up.
//!
//! **Threads.** The bound adds to the steady state (every pair connected, every
//! thread of the run started) four threads per pair of nodes — after a redial the
//! new connection's reader and writer run on both sides while the old one's finish
//! — and two per node, for a dial that loses a race and holds a handshake thread on
//! each side until it is refused. That allows every pair to be in transition at
//! once, which is generous, yet a leak of one thread per disconnect crosses it
//! within a few seconds of chaos.
//!
//! **Memory.** Resident memory may not exceed the warm-up's highest reading by
//! [`RSS_HEADROOM_KIB`]: queues and buffers are bounded, and what the run itself
//! keeps (a bit per message number) stays in the low MiB.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use crate::procfs;
use crate::report::{progress, Output, Record};
use crate::traffic::verdict::{self, Totals};
use crate::traffic::{self, workers::SEND_POLL, Outcome, Plan, Sample, DRAIN_DEADLINE};

/// How far resident memory may grow past the warm-up's highest reading.
const RSS_HEADROOM_KIB: u64 = 64 * 1024;
const PAYLOAD_LEN: usize = 64;
/// Gossip offered to each peer per second.
const GOSSIP_PER_PEER: u64 = 10_000;

/// Mixed load with random disconnects and a slow consumer; exits 1 on any message
/// lost, duplicated or reordered, or on threads or memory growing.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds of load.
    #[arg(long, default_value = "30", value_parser = crate::cli::seconds)]
    secs: Duration,
    /// Nodes in the mesh.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(2..=64))]
    nodes: u64,
    /// Seed of the chaos schedule: the same seed cuts the same pairs at the same
    /// pauses.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Messages a second that node 1's application takes during the load (0: it
    /// keeps up like the others). It drains at full speed once the load ends.
    #[arg(long, default_value_t = 5_000)]
    slow_consumer: u64,
}

pub fn run(args: &Args, quiet: bool, out: Output) -> anyhow::Result<ExitCode> {
    // The run is judged on these figures: find out now, not at the end, if they
    // cannot be read.
    procfs::usage()?;
    let nodes = args.nodes as usize;
    let plan = Plan {
        nodes,
        size: PAYLOAD_LEN,
        load: args.secs,
        gossip_rate: GOSSIP_PER_PEER * (nodes as u64 - 1),
        chaos: Some(args.seed),
        slow_consumer: Some(args.slow_consumer).filter(|&r| r > 0),
    };
    let bar = progress("soak", Some(args.secs.as_secs().max(1)), quiet);
    let outcome = traffic::execute(&plan, &crate::tls::Security::Plain, &bar);
    bar.finish_and_clear();
    let judged = judge(&plan, &outcome?);
    let slow = match plan.slow_consumer {
        Some(rate) => format!("node 1 reading {rate} msgs/s"),
        None => "no slow consumer".to_owned(),
    };
    out.records(
        &format!(
            "soak: {nodes}-node full mesh, {:.0} s of mixed load with random disconnects (seed {}), {slow}",
            args.secs.as_secs_f64(),
            args.seed
        ),
        &judged.records,
    );
    for line in &judged.notes {
        out.note(line);
    }
    Ok(out.verdict(&judged.violations))
}

/// A run's verdict: records for the table, notes under it, and every violation.
#[derive(Debug, Default)]
struct Judged {
    records: Vec<Record>,
    notes: Vec<String>,
    violations: Vec<String>,
}

fn judge(plan: &Plan, o: &Outcome) -> Judged {
    let streams = verdict::judge(o);
    let mut j = Judged {
        violations: streams.violations.clone(),
        ..Judged::default()
    };
    let (gossip, private, dropped) = (streams.gossip, streams.private, streams.recv_dropped);
    let lane = |name: &str, t: Totals, dropped: u64| {
        Record::new("soak", "wirelane")
            .set("lane", name)
            .set("sent", t.sent)
            .set("received", t.received)
            .set("returned", t.returned)
            .set("lost", t.lost.saturating_sub(dropped))
            .set("duplicates", t.duplicates)
            .set("reordered", t.reordered)
    };
    j.records.push(lane("gossip", gossip, 0));
    j.records
        .push(lane("private", private, dropped).set("recv_dropped", dropped));
    j.notes.push(streams.reconciliation());

    let (max_threads, thread_bound) = judge_threads(plan, o, &mut j);
    let (max_rss, rss_bound) = judge_memory(plan, o, &mut j);
    judge_run(o, private.sent, &mut j);
    j.records.push(
        Record::new("soak", "wirelane")
            .set("lane", "all")
            .set("disconnects", o.chaos.disconnects)
            .set("max_threads", max_threads)
            .set("thread_bound", thread_bound)
            .set("max_rss_kib", max_rss)
            .set("rss_bound_kib", rss_bound)
            .set("violations", j.violations.len() as u64)
            .set("nodes", plan.nodes as u64)
            .set("secs", o.load.as_secs_f64())
            .set("seed", plan.chaos.unwrap_or_default()),
    );

    let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
    for (r, n) in o.events.iter().flat_map(|e| e.reasons.iter()) {
        *reasons.entry(r).or_default() += n;
    }
    let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
    let redials: u64 = o.events.iter().map(|e| e.redials).sum();
    j.notes.push(format!(
        "chaos (seed {}): {} disconnects, one every 100-500 ms ({} picks found the pair apart); \
         connection ends seen by the nodes: {}; redials: {redials}",
        plan.chaos.unwrap_or_default(),
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
    let [g, p] = o.lane_stats();
    let events: u64 = o.stats.iter().map(|s| s.events_dropped).sum();
    j.notes.push(format!(
        "node counters: private dropped {} / recv_dropped {}; gossip dropped {} / recv_dropped {}; events dropped {events}",
        p.dropped, p.recv_dropped, g.dropped, g.recv_dropped
    ));
    j
}

/// Checks the thread samples after the warm-up; returns the highest and the bound.
fn judge_threads(plan: &Plan, o: &Outcome, j: &mut Judged) -> (u64, u64) {
    // Allowed above the steady state for connections in transition.
    let slack = 4 * (plan.nodes * (plan.nodes - 1) / 2) + 2 * plan.nodes;
    let bound = (o.steady_threads + slack) as u64;
    let max = judge_samples(plan, o, j, ("threads", ""), bound, |s| {
        s.usage.threads as u64
    });
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
        .map(|s| s.usage.rss_kib);
    let warm = warm.max().unwrap_or(0);
    let bound = warm + RSS_HEADROOM_KIB;
    let what = ("resident memory", " KiB");
    let max = judge_samples(plan, o, j, what, bound, |s| s.usage.rss_kib);
    j.notes.push(format!(
        "memory: {warm} KiB at most during the warm-up; bound {bound} KiB (+{} MiB)",
        RSS_HEADROOM_KIB / 1024
    ));
    (max, bound)
}

/// Flags the readings of one figure above `bound` after the warm-up; returns the
/// highest reading of the whole run. `what` names the figure and its unit.
fn judge_samples(
    plan: &Plan,
    o: &Outcome,
    j: &mut Judged,
    (what, unit): (&str, &str),
    bound: u64,
    value: impl Fn(&Sample) -> u64,
) -> u64 {
    let judged: Vec<&Sample> = o.samples.iter().filter(|s| s.at > plan.warmup()).collect();
    let over: Vec<&&Sample> = judged.iter().filter(|s| value(s) > bound).collect();
    if let Some(worst) = over.iter().max_by_key(|s| value(s)) {
        j.violations.push(format!(
            "{what} above the bound of {bound}{unit} in {} of {} readings after the warm-up (highest {}{unit} at {:.0} s)",
            over.len(),
            judged.len(),
            value(worst),
            worst.at.as_secs_f64()
        ));
    }
    o.samples.iter().map(value).max().unwrap_or(0)
}

/// The run's own milestones: readings, the mesh after the load, the drain.
fn judge_run(o: &Outcome, private_sent: u64, j: &mut Judged) {
    j.violations.extend(o.sample_errors.violation("sampling"));
    if let Err(why) = &o.remeshed {
        j.violations
            .push(format!("after the load, the mesh was not restored: {why}"));
    }
    match o.drained {
        Some(took) => j.notes.push(format!(
            "drain: all {private_sent} accepted private messages accounted for {} ms after the mesh was restored",
            took.as_millis()
        )),
        None => j.violations.push(format!(
            "not every accepted private message was received, handed back or counted as dropped within {DRAIN_DEADLINE:?} of the mesh being restored"
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
        let (me, failed) = (events.me, &events.redial_failures);
        for (what, odd) in [
            ("connections ended uncleanly", &events.unclean),
            ("inbound handshakes refused", &events.refused),
            ("redials failed and were tried again", failed),
        ] {
            if let Some(first) = &odd.first {
                j.notes
                    .push(format!("{me}: {} {what} (first: {first})", odd.count));
            }
        }
    }
}
