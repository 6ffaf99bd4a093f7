//! `mesh` and the main job: a mixed run over a full mesh of nodes on loopback.
//!
//! Why this job: it is the smallest run that exercises what wirelane promises under
//! load. Every pair of nodes carries both lanes in both directions at once; gossip
//! is offered faster than the machine can carry it, so it is shed, while private
//! messages must all arrive, once each and in order, or come back in an
//! `Event::Undelivered`. It also gives throughput figures per lane and for the
//! whole mesh, and with its defaults (4 nodes, 64-byte payloads, 5 s) it is short
//! enough to run on every change: that is the main job.
//!
//! Each node dials every node after it, so each pair has exactly one connection;
//! each node runs one receiver, which checks every private message's stamp, one
//! gossip sender and one private sender, each looping over the node's peers.
//!
//! The run fails (exit status 1) if a private message is unaccounted for, arrives
//! twice or out of order, or if a send is refused because a connection went away.
//!
//! `mesh/run.rs` does the run, `mesh/stamp.rs` checks the private streams, and
//! `mesh/traffic.rs` holds the sender and receiver threads; this file reads the
//! options and reports.

mod run;
mod stamp;
mod traffic;

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{Args, CliError};
use crate::progress::Progress;
use crate::report::{Output, Record, Value};
use crate::table::{Align, Table};

use self::run::{LaneFigures, Outcome};
use self::stamp::Stamp;

/// What a run does.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Nodes in the mesh.
    pub nodes: usize,
    /// Bytes in every payload, both lanes.
    pub size: usize,
    /// How long the senders run.
    pub load: Duration,
    /// Gossip messages each node offers per second, spread evenly over its peers.
    ///
    /// Per node rather than per peer, as a gossip protocol with a fixed fan-out
    /// sends, so that meshes of different sizes offer the same load per node and
    /// their aggregate figures compare. Paced at all so that gossip, which costs the
    /// same CPU per message as private traffic, does not starve the private senders
    /// on a small machine: a sender offering gossip flat out would spin on
    /// `try_send` and take a whole core.
    pub gossip_rate: u64,
}

impl Plan {
    /// The main job, and the defaults of `mesh`. One sender of each kind per node
    /// keeps a 2-core machine responsive: 4 nodes already run 24 connection threads
    /// of their own.
    pub const DEFAULT: Plan = Plan {
        nodes: 4,
        size: 64,
        load: Duration::from_secs(5),
        gossip_rate: 60_000,
    };
}

/// Most nodes `mesh` accepts: every pair costs four threads and two sockets, so 64
/// nodes already run over 8,000 connection threads.
const MAX_NODES: usize = 64;

/// The main job: `mesh` with its defaults.
pub fn main_job(args: &Args, out: Output) -> Result<ExitCode, Box<dyn Error>> {
    args.finish(0)?;
    Ok(report(&Plan::DEFAULT, args.flag("quiet"), out))
}

/// `mesh [--nodes N] [--size S] [--secs T]`.
pub fn run(args: &Args, out: Output) -> Result<ExitCode, Box<dyn Error>> {
    let default = Plan::DEFAULT;
    let nodes: usize = args.get("nodes", default.nodes)?;
    let size: usize = args.get("size", default.size)?;
    let secs: f64 = args.get("secs", default.load.as_secs_f64())?;
    args.finish(0)?;
    let bad = |option: &str, value: String, why: String| CliError::BadValue {
        option: option.to_owned(),
        value,
        why,
    };
    if !(2..=MAX_NODES).contains(&nodes) {
        let why = format!("a mesh has 2 to {MAX_NODES} nodes");
        return Err(bad("nodes", nodes.to_string(), why).into());
    }
    if size < Stamp::LEN {
        let why = format!("private payloads carry a {}-byte stamp", Stamp::LEN);
        return Err(bad("size", size.to_string(), why).into());
    }
    let load = match Duration::try_from_secs_f64(secs) {
        Ok(load) if !load.is_zero() => load,
        _ => return Err(bad("secs", secs.to_string(), "must be above 0".into()).into()),
    };
    let plan = Plan {
        nodes,
        size,
        load,
        ..default
    };
    Ok(report(&plan, args.flag("quiet"), out))
}

/// Runs the plan, prints the records and the verdict, and returns the exit status:
/// success only if every private message was accounted for, once and in order.
fn report(plan: &Plan, quiet: bool, out: Output) -> ExitCode {
    let progress = Progress::start("mesh", None, quiet);
    let outcome = run::execute(plan);
    progress.finish();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("wirelane-bench: FAIL: {e}");
            return ExitCode::FAILURE;
        }
    };
    let title = format!(
        "wirelane-bench: {}-node full mesh on loopback, {}-byte payloads, {:.1} s",
        plan.nodes,
        plan.size,
        outcome.load.as_secs_f64()
    );
    let records = records(plan, &outcome);
    if out.json {
        out.records(&title, &records);
    } else {
        print!("{title}\n{}", table(&records));
    }
    for line in notes(&outcome) {
        out.note(&line);
    }
    let problems = outcome.problems();
    if problems.is_empty() {
        out.note("result: PASS");
        ExitCode::SUCCESS
    } else {
        out.note("result: FAIL");
        for problem in &problems {
            eprintln!("wirelane-bench: FAIL: {problem}");
        }
        ExitCode::FAILURE
    }
}

/// One record per lane and one for both together. Rates use what arrived during the
/// load period (`count` in `secs`); `sent` and `received` cover the whole run.
fn records(plan: &Plan, outcome: &Outcome) -> Vec<Record> {
    let secs = outcome.load.as_secs_f64().max(1e-9);
    let record = |lane: &str, f: &LaneFigures, lost: u64| {
        let per_sec = f.received_in_load as f64 / secs;
        Record::new("mesh", "wirelane")
            .text("lane", lane)
            .int("nodes", plan.nodes as u64)
            .int("size", plan.size as u64)
            .float("secs", secs)
            .int("sent", f.sent)
            .int("received", f.received)
            .int("count", f.received_in_load)
            .float("msgs_per_s", per_sec)
            .float("mb_per_s", per_sec * plan.size as f64 / 1e6)
            .int("dropped", f.stats.dropped + f.stats.recv_dropped)
            .int("dropped_send", f.stats.dropped)
            .int("dropped_recv", f.stats.recv_dropped)
            .int("lost", lost)
    };
    // Gossip may be dropped, but only counted: `lost` for gossip is what was
    // accepted and then neither received nor counted as dropped anywhere.
    let gossip_lost = outcome.gossip_lost();
    vec![
        record("gossip", &outcome.gossip, gossip_lost),
        record("private", &outcome.private, outcome.lost()),
        record(
            "all",
            &(outcome.gossip + outcome.private),
            gossip_lost + outcome.lost(),
        ),
    ]
}

/// The columns of the human-readable table: record key, header, alignment.
const COLUMNS: [(&str, &str, Align); 7] = [
    ("lane", "lane", Align::Left),
    ("sent", "sent", Align::Right),
    ("received", "received", Align::Right),
    ("msgs_per_s", "msgs/s", Align::Right),
    ("mb_per_s", "MB/s", Align::Right),
    ("dropped_send", "dropped(send)", Align::Right),
    ("dropped_recv", "dropped(recv)", Align::Right),
];

/// The table a person reads: the columns that matter, from the same records that
/// `--json` prints (the records' every key would make a table too wide to read).
fn table(records: &[Record]) -> Table {
    let headers: Vec<(&str, Align)> = COLUMNS.iter().map(|&(_, h, a)| (h, a)).collect();
    let mut table = Table::new(&headers);
    for record in records {
        table.row(
            COLUMNS
                .iter()
                .map(|&(key, _, _)| match record.get(key) {
                    Some(Value::Int(v)) => v.to_string(),
                    Some(Value::Float(v)) if key == "mb_per_s" => format!("{v:.2}"),
                    Some(Value::Float(v)) => format!("{v:.0}"),
                    Some(Value::Text(v)) => v.clone(),
                    None => String::new(),
                })
                .collect(),
        );
    }
    table
}

/// The lines under the table: the verdict's figures first, then detail.
fn notes(o: &Outcome) -> Vec<String> {
    let mut notes = vec![
        format!(
            "lost private messages: {}   reordered/duplicated: {}",
            o.lost(),
            o.anomalies.total()
        ),
        format!(
            "private: {} handed back undelivered, {} sends waited over {} ms for room; gossip: {} refused as full",
            o.undelivered,
            o.private_waits,
            traffic::SEND_POLL.as_millis(),
            o.gossip_full
        ),
    ];
    // The nodes' own counters should agree with what the receivers took.
    for (name, lane) in [("gossip", &o.gossip), ("private", &o.private)] {
        if lane.stats.received != lane.received {
            notes.push(format!(
                "note: the nodes counted {} {name} messages received, the receivers took {}",
                lane.stats.received, lane.received
            ));
        }
    }
    // Not a failure (gossip may be shed), but every drop should have been counted.
    if o.gossip_lost() != 0 {
        notes.push(format!(
            "note: {} gossip messages were accepted but neither received nor counted as dropped",
            o.gossip_lost()
        ));
    }
    notes.push(format!(
        "times: load {:.2} s, private drain {:.0} ms, shutdown {:.0} ms, total {:.2} s",
        o.load.as_secs_f64(),
        o.drain.as_secs_f64() * 1e3,
        o.shutdown.as_secs_f64() * 1e3,
        o.total.as_secs_f64()
    ));
    notes
}
