//! `mesh-node` (hidden): one node of `netmesh`, in a process (and a network
//! namespace) of its own, carrying the same traffic as a node of `mesh` with the
//! same workers ([`crate::traffic::workers`]), driven by `netmesh` through stdin
//! and stdout, one line each:
//!
//! - out `listening ADDR` once bound;
//! - in `peer ID ADDR` for every other node, then `connect`: the node dials every
//!   node with a higher id and waits until every node is connected; out `meshed`;
//! - in `start`: the senders start (private as fast as the lanes take, gossip at
//!   the planned rate); in `stop`: they stop and are joined; out
//!   `stopped GOSSIP PRIVATE`, what the receiver had taken by then;
//! - in `remesh`: as `connect`, for pairs a lost connection left apart; out
//!   `remeshed`;
//! - in `status`: out `status accepted=A received=R returned=U dropped=D`, the
//!   private messages its senders had accepted, its receiver took, its node handed
//!   back, and its node dropped on receipt;
//! - in `finish`: the node shuts down, its threads are joined; out `report JSON`
//!   ([`crate::traffic::export`]), then it exits.
//!
//! Failures: `error WHY` on stdout and exit status 1. End of input before `finish`
//! ends it at once: `netmesh` is gone.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use wirelane::crossbeam_channel::{unbounded, Receiver};
use wirelane::{Config, Lane, Node, PeerId};

use crate::threads::{self, join_all, start, Named};
use crate::traffic::workers::{self, EventLog, Inbox, Live, Sent};
use crate::traffic::{export, Plan};

/// Longest a node waits for every other node to be connected.
const MESH_DEADLINE: Duration = Duration::from_secs(60);
/// Longest wait for the senders to stop, and for the threads that end with the
/// node's shutdown.
const JOIN_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two dials of the same node when one failed.
const REDIAL_PAUSE: Duration = Duration::from_millis(100);

/// One node of `netmesh`, driven through stdin and stdout.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub node: crate::cli::Listen,
    /// Nodes in the whole mesh.
    #[arg(long)]
    pub nodes: usize,
    /// Bytes in every payload.
    #[arg(long)]
    pub size: usize,
    /// Gossip messages this node offers per second, spread over its peers.
    #[arg(long)]
    pub gossip_rate: u64,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match drive(args) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            say(&format!("error {e:#}"));
            Ok(ExitCode::FAILURE)
        }
    }
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn drive(args: &Args) -> anyhow::Result<()> {
    let me = PeerId(args.node.id);
    let node = Arc::new(
        Node::bind(me, args.node.listen.as_str(), Config::default())
            .with_context(|| format!("cannot listen on {}", args.node.listen))?,
    );
    let live = Arc::new(Live::default());
    // The receiver starts before any connection, so that it sees every message.
    let receiver = {
        let (node, live) = (node.clone(), live.clone());
        start("mesh-recv", move || workers::receive(&node, &live, None))
    };
    say(&format!("listening {}", node.local_addr()));
    let plan = Plan {
        nodes: args.nodes,
        size: args.size,
        load: Duration::ZERO,
        gossip_rate: args.gossip_rate,
        chaos: None,
        slow_consumer: None,
    };
    let finished = Arc::new(AtomicBool::new(false));
    let commands = stdin_lines(finished.clone());
    let mut directory: Vec<(PeerId, SocketAddr)> = Vec::new();
    let mut watcher: Option<Named<EventLog>> = None;
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders: Vec<Named<Sent>> = Vec::new();
    let mut sent: Vec<Sent> = Vec::new();
    loop {
        let Ok(line) = commands.recv() else {
            bail!("stdin closed before `finish`");
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["peer", id, addr] => {
                let id = PeerId(id.parse().context("a peer id")?);
                directory.push((id, addr.parse().context("a peer address")?));
            }
            ["connect"] | ["remesh"] => {
                if watcher.is_none() {
                    let (node, live) = (node.clone(), live.clone());
                    let directory: Arc<[(PeerId, SocketAddr)]> = directory.clone().into();
                    watcher = Some(start("mesh-events", move || {
                        workers::watch(&node, &directory, &live)
                    }));
                }
                connect_all(&node, &directory)?;
                say(if words[0] == "connect" {
                    "meshed"
                } else {
                    "remeshed"
                });
            }
            ["start"] => {
                live.redial.store(true, Relaxed);
                let peers: Vec<PeerId> = directory.iter().map(|d| d.0).collect();
                for lane in [Lane::Private, Lane::Gossip] {
                    let (node, peers, stop) = (node.clone(), peers.clone(), stop.clone());
                    senders.push(start(format!("mesh-{lane}"), move || {
                        workers::send(&node, &peers, &plan, lane, &stop)
                    }));
                }
            }
            ["stop"] => {
                stop.store(true, Relaxed);
                let in_load = (
                    live.gossip_received.load(Relaxed),
                    live.private_received.load(Relaxed),
                );
                sent.extend(join_all(
                    std::mem::take(&mut senders),
                    Instant::now() + JOIN_DEADLINE,
                ));
                say(&format!("stopped {} {}", in_load.0, in_load.1));
            }
            ["status"] => {
                let accepted: u64 = sent
                    .iter()
                    .filter(|s| s.lane == Lane::Private)
                    .flat_map(|s| s.accepted.iter().map(|a| a.1))
                    .sum();
                say(&format!(
                    "status accepted={accepted} received={} returned={} dropped={}",
                    live.private_received.load(Relaxed),
                    live.private_returned.load(Relaxed),
                    node.stats().private.recv_dropped
                ));
            }
            ["finish"] => {
                live.redial.store(false, Relaxed);
                node.shutdown();
                let deadline = Instant::now() + JOIN_DEADLINE;
                let inbox: Inbox = join_all(vec![receiver], deadline)
                    .pop()
                    .ok_or_else(|| anyhow!("no receiver"))?;
                let events = match watcher.take() {
                    Some(w) => join_all(vec![w], deadline).pop(),
                    None => None,
                }
                .ok_or_else(|| anyhow!("the node was never connected"))?;
                let report = export::to_json(&sent, &inbox, &events, &node.stats());
                finished.store(true, Relaxed);
                say(&format!("report {report}"));
                return Ok(());
            }
            _ => bail!("unknown command `{line}`"),
        }
    }
}

/// Dials every node with a higher id (the lower id of a pair dials; a pair already
/// connected answers at once), then waits until every node is connected.
fn connect_all(node: &Node, directory: &[(PeerId, SocketAddr)]) -> anyhow::Result<()> {
    let deadline = Instant::now() + MESH_DEADLINE;
    for &(peer, addr) in directory.iter().filter(|d| d.0 > node.id()) {
        loop {
            match node.connect(addr) {
                Ok(p) if p == peer => break,
                Ok(p) => bail!("dialled {peer} at {addr} but reached {p}"),
                Err(e) if Instant::now() >= deadline => {
                    bail!("could not connect to {peer} at {addr}: {e}")
                }
                // The watcher's redial may be racing this one, or the link lost the
                // SYN: try again.
                Err(_) => thread::sleep(REDIAL_PAUSE),
            }
        }
    }
    let all = || directory.iter().all(|d| node.is_connected(d.0));
    if threads::wait_until(deadline, all) {
        return Ok(());
    }
    let missing: Vec<String> = directory
        .iter()
        .filter(|d| !node.is_connected(d.0))
        .map(|d| d.0.to_string())
        .collect();
    bail!("not connected to {} by the deadline", missing.join(", "))
}

/// Lines of stdin. End of input before `finished` is set ends the process at once,
/// whatever it is doing (a dial, a wait for the mesh): `netmesh` is gone, and no
/// one will read what this node would say. The reading thread is never joined: it
/// waits in a read of stdin.
fn stdin_lines(finished: Arc<AtomicBool>) -> Receiver<String> {
    let (tx, rx) = unbounded();
    threads::start("mesh-stdin", move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                return;
            }
        }
        if !finished.load(Relaxed) {
            std::process::exit(1);
        }
    });
    rx
}
