//! `netmesh`: the mixed traffic of `mesh` between nodes that are hosts of their
//! own: each node a process in a network namespace of its own, with one link (a
//! veth pair) to a bridge in another namespace, and every link delaying and losing
//! packets. Every pair carries gossip and private messages both ways for the whole
//! load; at the end every private message a send accepted must have been delivered
//! once and in order or handed back in `Event::Undelivered` — judged by the same
//! verdict as `mesh` ([`crate::traffic::verdict`]), from what each node reports
//! ([`crate::traffic::export`]).
//!
//! The links: `tc netem` on both ends of every veth (each link delays every packet
//! by `--delay-ms` and loses `--loss-pct` of them, each way; two nodes are two links
//! apart). On a kernel without netem, every packet crossing the bridge goes through
//! an NFQUEUE to a `link-queue` process that holds it for two links' delay and drops
//! it with two links' loss ([`crate::linkq`]). The run says which.
//!
//! It needs root and iproute2 (and iptables where there is no netem). Where it
//! cannot make its namespaces or links it says so and exits 0 without checking
//! anything, except under CI (the `CI` variable set), where that is a failure.
//! Everything it creates is removed when it ends, also when it fails.

use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::child::Driven;
use crate::mesh;
use crate::netns::{self, Emulation, Mesh};
use crate::report::{progress, Output};
use crate::stamp::Stamp;
use crate::traffic::chaos::ChaosLog;
use crate::traffic::export::{self, NodeReport};
use crate::traffic::workers::Oddities;
use crate::traffic::{Outcome, Plan};

/// The port every node listens on, in its own namespace.
const PORT: u16 = 7000;
/// The NFQUEUE of the bridge's namespace.
const QUEUE: u16 = 0;
/// Longest wait for a child to start and say it is ready.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Longest wait for every node to be connected to every other.
const MESH_DEADLINE: Duration = Duration::from_secs(90);
/// Longest wait for the senders to stop, and for every node to report.
const STEP_DEADLINE: Duration = Duration::from_secs(60);
/// Longest wait, after the load, for every accepted private message to be
/// accounted for.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
/// How often the nodes are asked how far the drain has come.
const DRAIN_POLL: Duration = Duration::from_millis(200);

/// A full mesh of nodes in network namespaces, links with delay and loss, mixed
/// traffic: aggregate msgs/s, and every private message accounted for (needs root).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nodes, each in its own network namespace.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(2..=64))]
    nodes: u64,
    /// Seconds of load.
    #[arg(long, default_value = "30", value_parser = crate::cli::seconds)]
    secs: Duration,
    /// Bytes in every payload, both lanes (private ones carry a 32-byte stamp).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(Stamp::LEN as u64..))]
    size: u64,
    /// Gossip messages each node offers per second, spread over its peers.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    gossip_rate: u64,
    /// Delay each link adds to every packet, each way, in milliseconds.
    #[arg(long, default_value_t = 1.0, value_parser = milliseconds)]
    delay_ms: f64,
    /// Packets each link loses, each way, in percent.
    #[arg(long, default_value_t = 1.0, value_parser = percent)]
    loss_pct: f64,
}

fn milliseconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(ms) if (0.0..=1000.0).contains(&ms) => Ok(ms),
        _ => Err("must be between 0 and 1000 milliseconds".to_owned()),
    }
}

fn percent(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(p) if (0.0..=50.0).contains(&p) => Ok(p),
        _ => Err("must be between 0 and 50 percent".to_owned()),
    }
}

pub fn run(args: &Args, quiet: bool, out: Output) -> anyhow::Result<ExitCode> {
    let nodes = args.nodes as usize;
    let mut missing: Vec<String> = netns::not_root().into_iter().collect();
    missing.extend(netns::lacks("ip", &["-V"], "iproute2"));
    if !missing.is_empty() {
        return cannot(&missing);
    }
    // Declared first, dropped last: the processes in the namespaces go first.
    let mesh = match Mesh::create(nodes) {
        Ok(mesh) => mesh,
        Err(e) => return cannot(&[format!("network namespaces and veth links: {e}")]),
    };
    let delay = Duration::from_secs_f64(args.delay_ms / 1000.0);
    let (emulation, mut queue) = match links(&mesh, delay, args.loss_pct) {
        Ok(links) => links,
        Err(why) => return cannot(&why),
    };
    let plan = Plan {
        nodes,
        size: args.size as usize,
        load: args.secs,
        gossip_rate: args.gossip_rate,
        chaos: None,
        slow_consumer: None,
    };
    let began = Instant::now();
    let mut children = start_nodes(&mesh, &plan)?;
    let bar = progress("netmesh", Some(args.secs.as_secs()), quiet);
    let run = drive(&mut children, &plan, &bar);
    bar.finish_and_clear();
    let (mut o, reports) = run?;
    o.total = began.elapsed();
    // The link queue's own count of what it did, once no packet crosses any more.
    let queued = match queue.as_mut() {
        Some(q) => Some(queue_stats(q)?),
        None => None,
    };
    drop(children);
    drop(queue);
    drop(mesh);

    o.sent = Vec::new();
    for report in reports {
        o.sent.extend(report.sent);
        o.inboxes.push(report.inbox);
        o.events.push(report.events);
        o.stats.push(report.stats);
    }
    let title = format!(
        "wirelane-bench: {nodes}-node full mesh in network namespaces, {}-byte payloads, {:.1} s",
        plan.size,
        o.load.as_secs_f64()
    );
    let links = match emulation {
        Emulation::Netem => format!(
            "links: a veth per node to one bridge, each namespace its own host; tc netem on both ends \
             of every link: {} ms delay and {}% loss each way, so two nodes are {} ms and about {:.1}% loss apart",
            args.delay_ms,
            args.loss_pct,
            2.0 * args.delay_ms,
            path_loss(args.loss_pct) * 100.0
        ),
        Emulation::Queue => format!(
            "links: a veth per node to one bridge, each namespace its own host; no tc netem in this kernel, \
             so every packet crossing the bridge went through an NFQUEUE that held it {} ms and dropped {:.2}% \
             (two links of {} ms and {}% each){}",
            2.0 * args.delay_ms,
            path_loss(args.loss_pct) * 100.0,
            args.delay_ms,
            args.loss_pct,
            queued
                .map(|(passed, dropped)| format!(": {passed} packets passed, {dropped} dropped"))
                .unwrap_or_default()
        ),
    };
    let notes = [
        links,
        format!(
            "every node: Config::default(), one private and one gossip sender (gossip at {} msgs/s per node), \
             a receiver and an event watcher, in a process of its own",
            plan.gossip_rate
        ),
    ];
    Ok(mesh::present(&plan, &o, &title, &notes, out))
}

/// The loss of a path across two links that each lose `pct` percent, as a fraction.
fn path_loss(pct: f64) -> f64 {
    1.0 - (1.0 - pct / 100.0).powi(2)
}

/// Says the run could not be set up, and why; a failure under CI, a skip elsewhere.
fn cannot(missing: &[String]) -> anyhow::Result<ExitCode> {
    let list = missing.join("; ");
    if netns::under_ci() {
        bail!(
            "netmesh cannot run: CI is set, and this machine cannot give it network namespaces \
             and links with delay and loss. Missing: {list}"
        );
    }
    let rule = "=".repeat(78);
    eprintln!("{rule}\n  SKIPPED: netmesh did NOT run.\n  This machine cannot give it network namespaces and links with delay and loss. Missing:");
    for m in missing {
        eprintln!("    - {m}");
    }
    eprintln!(
        "  It needs root and iproute2, and tc netem or iptables. Nothing was checked.\n{rule}"
    );
    Ok(ExitCode::SUCCESS)
}

/// Makes every link delay and lose packets: with netem, or else with the link
/// queue (returned, to be stopped at the end).
fn links(
    mesh: &Mesh,
    delay: Duration,
    loss_pct: f64,
) -> Result<(Emulation, Option<Driven>), Vec<String>> {
    let no_netem = match mesh.netem(delay, loss_pct) {
        Ok(()) => return Ok((Emulation::Netem, None)),
        Err(e) => format!("tc netem: {e}"),
    };
    let queued = mesh
        .queue_rules(QUEUE)
        .map_err(|e| format!("an NFQUEUE on the bridge: {e}"));
    let queued = queued.and_then(|()| {
        let exe = std::env::current_exe().map_err(|e| format!("the bench's own path: {e}"))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &mesh.bridge])
            .arg(exe)
            .arg("link-queue")
            .arg(format!("--queue={QUEUE}"))
            .arg(format!("--delay-us={}", 2 * delay.as_micros()))
            .arg(format!("--loss={}", path_loss(loss_pct)));
        let mut q = Driven::spawn("the link queue", command).map_err(|e| format!("{e:#}"))?;
        q.wait_line(Instant::now() + START_DEADLINE, "it to bind", |l| {
            l == "ready"
        })
        .map_err(|e| format!("{e:#}"))?;
        Ok(q)
    });
    match queued {
        Ok(q) => Ok((Emulation::Queue, Some(q))),
        Err(e) => Err(vec![no_netem, e]),
    }
}

/// Stops the link queue and reads what it did: packets passed, dropped.
fn queue_stats(q: &mut Driven) -> anyhow::Result<(u64, u64)> {
    q.finish(Instant::now() + START_DEADLINE)?;
    let line = q.wait_line(Instant::now() + START_DEADLINE, "its stats", |l| {
        l.starts_with("stats ")
    })?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse::<u64>().ok())
    };
    field("passed=")
        .zip(field("dropped="))
        .ok_or_else(|| anyhow!("a bad line from the link queue: `{line}`"))
}

/// A node's process, and the address it listens on.
struct NodeProc {
    child: Driven,
    addr: SocketAddr,
}

/// Starts every node in its namespace and waits for each to listen.
fn start_nodes(mesh: &Mesh, plan: &Plan) -> anyhow::Result<Vec<NodeProc>> {
    let exe = std::env::current_exe().context("the bench's own path")?;
    let mut children = Vec::with_capacity(mesh.nodes.len());
    for (i, ns) in mesh.nodes.iter().enumerate() {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .arg(&exe)
            .arg("mesh-node")
            .arg(format!("--listen={}:{PORT}", mesh.node_ip(i)))
            .arg(format!("--id={}", i + 1))
            .arg(format!("--nodes={}", plan.nodes))
            .arg(format!("--size={}", plan.size))
            .arg(format!("--gossip-rate={}", plan.gossip_rate));
        children.push(Driven::spawn(&format!("node {}", i + 1), command)?);
    }
    let deadline = Instant::now() + START_DEADLINE;
    let mut nodes = Vec::with_capacity(children.len());
    for mut child in children {
        let line = child.wait_line(deadline, "it to listen", |l| l.starts_with("listening "))?;
        let addr = line["listening ".len()..]
            .parse()
            .map_err(|e| child.failed(&format!("a bad address in `{line}`: {e}")))?;
        nodes.push(NodeProc { child, addr });
    }
    Ok(nodes)
}

/// Sends `line` to every node, then waits for each one's answer that starts with
/// `answer`; returns the answers in node order.
fn all(
    nodes: &mut [NodeProc],
    line: &str,
    answer: &str,
    deadline: Instant,
) -> anyhow::Result<Vec<String>> {
    for node in nodes.iter_mut() {
        node.child.command(line)?;
    }
    nodes
        .iter_mut()
        .map(|n| {
            n.child
                .wait_line(deadline, answer, |l| l.starts_with(answer))
        })
        .collect()
}

/// Connects the mesh, runs the load, waits for the drain and collects every node's
/// report. The nodes have shut down when it returns.
fn drive(
    nodes: &mut [NodeProc],
    plan: &Plan,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(Outcome, Vec<NodeReport>)> {
    let directory: Vec<(usize, SocketAddr)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (i + 1, n.addr))
        .collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        for &(id, addr) in directory.iter().filter(|d| d.0 != i + 1) {
            node.child.command(&format!("peer {id} {addr}"))?;
        }
    }
    all(nodes, "connect", "meshed", Instant::now() + MESH_DEADLINE)?;

    for node in nodes.iter_mut() {
        node.child.command("start")?;
    }
    let began = Instant::now();
    let end = began + plan.load;
    for second in 1.. {
        let at = (began + Duration::from_secs(second)).min(end);
        thread::sleep(at.saturating_duration_since(Instant::now()));
        bar.set_position(second);
        if at >= end {
            break;
        }
    }
    let stopped = all(nodes, "stop", "stopped ", Instant::now() + STEP_DEADLINE)?;
    let load = began.elapsed();
    let mut in_load = [0u64; 2];
    for line in &stopped {
        let counts: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect();
        match counts[..] {
            [gossip, private] => {
                in_load[0] += gossip;
                in_load[1] += private;
            }
            _ => bail!("a bad line from a node: `{line}`"),
        }
    }
    let remeshed = all(nodes, "remesh", "remeshed", Instant::now() + MESH_DEADLINE).map(|_| ());

    let drain_began = Instant::now();
    let mut drained = None;
    while drain_began.elapsed() < DRAIN_DEADLINE {
        let status = all(nodes, "status", "status ", Instant::now() + STEP_DEADLINE)?;
        let sum = |key: &str| -> u64 {
            status
                .iter()
                .filter_map(|l| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix(key))
                        .and_then(|v| v.parse::<u64>().ok())
                })
                .sum()
        };
        if sum("received=") + sum("returned=") + sum("dropped=") >= sum("accepted=") {
            drained = Some(drain_began.elapsed());
            break;
        }
        thread::sleep(DRAIN_POLL);
    }

    let shutdown_began = Instant::now();
    let reports = all(nodes, "finish", "report ", Instant::now() + STEP_DEADLINE)?
        .iter()
        .map(|line| {
            let json = serde_json::from_str(&line["report ".len()..])
                .map_err(|e| anyhow!("a node's report does not parse: {e}"))?;
            export::from_json(&json).map_err(|e| anyhow!("a node's report: {e}"))
        })
        .collect::<anyhow::Result<Vec<NodeReport>>>()?;
    let shutdown = shutdown_began.elapsed();
    for node in nodes.iter_mut() {
        let status = node.child.finish(Instant::now() + STEP_DEADLINE)?;
        if !status.success() {
            return Err(node.child.failed(&format!("it exited with {status}")));
        }
    }
    let outcome = Outcome {
        load,
        in_load,
        steady_threads: 0,
        samples: Vec::new(),
        sample_errors: Oddities::default(),
        chaos: ChaosLog::default(),
        sent: Vec::new(),
        remeshed: remeshed.map_err(|e| format!("{e:#}")),
        drained,
        shutdown,
        total: Duration::ZERO,
        inboxes: Vec::new(),
        events: Vec::new(),
        stats: Vec::new(),
    };
    Ok((outcome, reports))
}
