//! `mesh` and the main job: a mixed run over a full mesh of nodes on loopback.
//!
//! The smallest run that exercises what wirelane promises under load: every pair
//! carries both lanes both ways at once; gossip is offered faster than the machine
//! can carry it, so it is shed, while private messages must all arrive once each
//! and in order, or come back in an `Event::Undelivered`. With its defaults it is
//! short enough to run on every change. It is [`crate::soak`] without the chaos, on
//! the same engine ([`crate::traffic`]).

use std::process::ExitCode;
use std::time::Duration;

use wirelane::LaneStats;

use crate::report::{progress, Output, Record};
use crate::stamp::Stamp;
use crate::tls::Security;
use crate::traffic::verdict::{self, Streams, Totals};
use crate::traffic::{self, workers, Outcome, Plan, DRAIN_DEADLINE};

/// All-to-all gossip and private traffic among N nodes: aggregate msgs/s, drops,
/// lost private messages (must be 0). The defaults are the main job.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nodes in the mesh: every pair costs four threads and two sockets, so 64
    /// nodes already run over 8,000 connection threads.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(2..=64))]
    nodes: u64,
    /// Bytes in every payload, both lanes (private ones carry a 32-byte stamp).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(Stamp::LEN as u64..))]
    size: u64,
    /// Seconds of load.
    #[arg(long, default_value = "5", value_parser = crate::cli::seconds)]
    secs: Duration,
    /// Nodes are 1 to N: --cert and --key need {id}.
    #[command(flatten)]
    tls: crate::tls::Files,
}

/// The main job, and the defaults of `mesh`. One sender of each kind per node
/// keeps a 2-core machine responsive: 4 nodes already run 24 connection threads of
/// their own. Gossip is offered per node rather than per peer, as a gossip
/// protocol with a fixed fan-out sends, so that meshes of different sizes offer
/// the same load per node and their aggregate figures compare.
const DEFAULT: Plan = Plan {
    nodes: 4,
    size: 64,
    load: Duration::from_secs(5),
    gossip_rate: 60_000,
    chaos: None,
    slow_consumer: None,
};

pub fn main_job(quiet: bool, out: Output) -> anyhow::Result<ExitCode> {
    report(&DEFAULT, &Security::Plain, quiet, out)
}

pub fn run(args: &Args, quiet: bool, out: Output) -> anyhow::Result<ExitCode> {
    let plan = Plan {
        nodes: args.nodes as usize,
        size: args.size as usize,
        load: args.secs,
        ..DEFAULT
    };
    let security = args.tls.security(&traffic::ids(&plan))?;
    report(&plan, &security, quiet, out)
}

/// Runs the plan, prints the records and the verdict, and returns the exit status:
/// success only if every private message was accounted for, once and in order.
fn report(plan: &Plan, security: &Security, quiet: bool, out: Output) -> anyhow::Result<ExitCode> {
    let bar = progress("mesh", None, quiet);
    let outcome = traffic::execute(plan, security, &bar);
    bar.finish_and_clear();
    let o = outcome?;
    let title = format!(
        "wirelane-bench: {}-node full mesh on loopback{}, {}-byte payloads, {:.1} s",
        plan.nodes,
        if security.is_tls() {
            " over mutual TLS"
        } else {
            ""
        },
        plan.size,
        o.load.as_secs_f64()
    );
    Ok(present(plan, &o, &title, &[], out))
}

/// Judges a run's outcome, prints its records, `notes` and the verdict, and
/// returns the exit status. Also for a mesh run elsewhere (`netmesh`).
pub fn present(plan: &Plan, o: &Outcome, title: &str, notes: &[String], out: Output) -> ExitCode {
    let streams = verdict::judge(o);
    out.table(title, &records(plan, o, &streams), &COLUMNS);
    for line in self::notes(o, &streams).iter().chain(notes) {
        out.note(line);
    }
    out.verdict(&problems(o, &streams))
}

/// The columns of the human-readable table: record key, header. The records have
/// more keys than a readable table has room for; `--json` prints them all.
const COLUMNS: [(&str, &str); 7] = [
    ("lane", "lane"),
    ("sent", "sent"),
    ("received", "received"),
    ("msgs_per_s", "msgs/s"),
    ("mb_per_s", "MB/s"),
    ("dropped_send", "dropped(send)"),
    ("dropped_recv", "dropped(recv)"),
];

/// Gossip accepted by `try_send` but neither received nor counted as dropped
/// anywhere: gossip may be shed, but never silently. The nodes' send-side drops
/// include the refusals `try_send` returned, which were never accepted; what
/// remains was discarded at close.
fn gossip_lost(gossip: &Totals, stats: &LaneStats) -> u64 {
    let discarded = stats.dropped.saturating_sub(gossip.busy);
    gossip
        .sent
        .saturating_sub(gossip.received + stats.recv_dropped + discarded)
}

/// Private messages accepted but neither delivered, handed back, nor counted as
/// dropped on receipt.
fn private_lost(s: &Streams) -> u64 {
    s.private
        .sent
        .saturating_sub(s.private.received + s.private.returned + s.recv_dropped)
}

/// One record per lane and one for both together. Rates use what arrived during the
/// load period (`count` in `secs`); `sent` and `received` cover the whole run.
fn records(plan: &Plan, o: &Outcome, s: &Streams) -> Vec<Record> {
    let secs = o.load.as_secs_f64().max(1e-9);
    let row = |lane: &str, t: &Totals, in_load: u64, st: LaneStats, lost: u64| {
        let per_sec = in_load as f64 / secs;
        Record::new("mesh", "wirelane")
            .set("lane", lane)
            .set("nodes", plan.nodes as u64)
            .set("size", plan.size as u64)
            .set("secs", secs)
            .set("sent", t.sent)
            .set("received", t.received)
            .set("count", in_load)
            .set("msgs_per_s", per_sec)
            .set("mb_per_s", per_sec * plan.size as f64 / 1e6)
            .set("dropped", st.dropped + st.recv_dropped)
            .set("dropped_send", st.dropped)
            .set("dropped_recv", st.recv_dropped)
            .set("lost", lost)
    };
    let [gossip_stats, private_stats] = o.lane_stats();
    let (g, p) = (&s.gossip, &s.private);
    let (g_lost, p_lost) = (gossip_lost(g, &gossip_stats), private_lost(s));
    let all = Totals {
        sent: g.sent + p.sent,
        received: g.received + p.received,
        ..Totals::default()
    };
    let (all_in, all_stats) = (o.in_load[0] + o.in_load[1], gossip_stats + private_stats);
    vec![
        row("gossip", g, o.in_load[0], gossip_stats, g_lost),
        row("private", p, o.in_load[1], private_stats, p_lost),
        row("all", &all, all_in, all_stats, g_lost + p_lost),
    ]
}

/// The lines under the table: the verdict's figures first, then detail.
fn notes(o: &Outcome, s: &Streams) -> Vec<String> {
    let mut notes = vec![
        format!(
            "lost private messages: {}   reordered/duplicated: {}",
            private_lost(s),
            s.private.reordered + s.private.duplicates
        ),
        s.reconciliation(),
        format!(
            "private: {} handed back undelivered, {} sends waited over {} ms for room; gossip: {} refused as full",
            s.private.returned,
            s.private.busy,
            workers::SEND_POLL.as_millis(),
            s.gossip.busy
        ),
    ];
    // Not a failure (gossip may be shed), but every drop should have been counted.
    let lost = gossip_lost(&s.gossip, &o.lane_stats()[0]);
    if lost != 0 {
        notes.push(format!(
            "note: {lost} gossip messages were accepted but neither received nor counted as dropped"
        ));
    }
    notes.push(format!(
        "times: load {:.2} s, private drain {:.0} ms, shutdown {:.0} ms, total {:.2} s",
        o.load.as_secs_f64(),
        o.drained.unwrap_or(DRAIN_DEADLINE).as_secs_f64() * 1e3,
        o.shutdown.as_secs_f64() * 1e3,
        o.total.as_secs_f64()
    ));
    notes
}

/// Why the run failed; empty if it passed. The mesh stays up, so unlike in a soak
/// a send refused because a peer was not connected is a failure too.
fn problems(o: &Outcome, s: &Streams) -> Vec<String> {
    let mut problems = s.violations.clone();
    if o.drained.is_none() {
        problems.push(format!(
            "not every accepted private message arrived within {DRAIN_DEADLINE:?} of the end of the load"
        ));
    }
    if let Err(why) = &o.remeshed {
        problems.push(format!("after the load, the mesh was not whole: {why}"));
    }
    let refused = s.private.refused + s.gossip.refused;
    if refused != 0 {
        problems.push(format!(
            "{refused} send(s) refused because a peer was not connected"
        ));
    }
    problems
}
