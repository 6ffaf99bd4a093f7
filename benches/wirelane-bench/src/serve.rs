//! `serve`: the far end of `load`, for measuring wirelane between two processes or
//! two hosts. One node, any number of `load` peers, one thread answering each
//! message as the [`remote`] protocol says. One thread is enough because every
//! answer is a private send to a peer that is waiting for it, so a reply never waits
//! for room unless a peer misbehaves, and then only for [`REPLY_TIMEOUT`].

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use wirelane::crossbeam_channel::select;
use wirelane::{Config, Event, Message, Node, PeerId};

use anyhow::Context;

use crate::remote::{self, Op};
use crate::report::{Output, Record};

/// Longest a reply may wait for room on its peer's private lane. Only a peer that
/// stops reading fills it; giving up then keeps the other peers served.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the loop waits for a message or an event before checking its deadline.
const TICK: Duration = Duration::from_millis(200);

/// What `serve` has done for one peer id while it has been connected.
#[derive(Debug, Clone, Copy, Default)]
struct Served {
    /// Data messages received (what a count request reports).
    data: u64,
    echoes: u64,
    /// Replies that could not be sent: the peer's lane stayed full, or it left.
    failed_replies: u64,
    /// Payloads with no opcode or an unknown one.
    unknown: u64,
}

impl Served {
    fn plus(self, o: Served) -> Served {
        Served {
            data: self.data + o.data,
            echoes: self.echoes + o.echoes,
            failed_replies: self.failed_replies + o.failed_replies,
            unknown: self.unknown + o.unknown,
        }
    }
}

/// A node that answers the `load` workloads from another process or host, until
/// killed or for T seconds; logs each peer's arrival and departure.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    node: crate::cli::Listen,
    /// Seconds to run, then print what was served (default: until killed).
    #[arg(long, value_parser = crate::cli::seconds)]
    secs: Option<Duration>,
    #[command(flatten)]
    tls: crate::tls::Files,
}

pub fn run(args: &Args, out: Output) -> anyhow::Result<ExitCode> {
    let (listen, id, run_for) = (&args.node.listen, PeerId(args.node.id), args.secs);
    let config = args.tls.security(&[id])?.config(Config::default(), id)?;
    let tls = if args.tls.given() {
        " (mutual TLS)"
    } else {
        ""
    };
    let node = Node::bind(id, listen.as_str(), config)
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("serve: {id} listening on {}{tls}", node.local_addr());

    let began = Instant::now();
    let until = run_for.map(|d| began + d);
    let mut state = State::default();
    while until.is_none_or(|u| Instant::now() < u) {
        let wait = until.map_or(TICK, |u| u.saturating_duration_since(Instant::now()));
        select! {
            recv(node.incoming()) -> msg => match msg {
                Ok(msg) => answer(&node, state.peers.entry(msg.from).or_default(), msg),
                Err(_) => break,
            },
            recv(node.events()) -> event => match event {
                Ok(event) => state.on_event(&node, event),
                Err(_) => break,
            },
            default(wait.min(TICK)) => {}
        }
    }
    let elapsed = began.elapsed();
    node.shutdown();
    let total = state.peers.into_values().fold(state.departed, Served::plus);
    let record = Record::new("serve", "wirelane-remote")
        .set("listen", node.local_addr().to_string())
        .set("secs", elapsed.as_secs_f64())
        .set("connections", state.connections)
        .set("count", total.data)
        .set("echoes", total.echoes)
        .set("failed_replies", total.failed_replies)
        .set("unknown", total.unknown);
    out.records(&format!("serve: {id} on {}", node.local_addr()), &[record]);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Default)]
struct State {
    /// Per peer id, while connected.
    peers: HashMap<PeerId, Served>,
    /// The sum over peers that have left.
    departed: Served,
    /// Connections that completed their handshake.
    connections: u64,
}

impl State {
    /// Logs a connection event; when a connection ends, forgets every peer that is
    /// no longer connected, so that a long-running `serve` keeps nothing per
    /// departed peer. (A message of a departed peer still queued behind the event
    /// starts a new entry, which the next sweep removes.)
    fn on_event(&mut self, node: &Node, event: Event) {
        match event {
            Event::Connected {
                peer, conn, addr, ..
            } => {
                self.connections += 1;
                eprintln!("serve: {peer} connected from {addr} ({conn})");
            }
            Event::Disconnected { peer, conn, reason } => {
                let s = self.peers.get(&peer).copied().unwrap_or_default();
                eprintln!(
                    "serve: {peer} disconnected ({conn}, {reason}): {} data, {} echoes, {} failed replies, {} unknown",
                    s.data, s.echoes, s.failed_replies, s.unknown
                );
                let departed = &mut self.departed;
                self.peers.retain(|&p, s| {
                    let keep = node.is_connected(p);
                    if !keep {
                        *departed = departed.plus(*s);
                    }
                    keep
                });
            }
            Event::Undelivered { peer, messages, .. } => eprintln!(
                "serve: {} replies to {peer} were not delivered before its connection ended",
                messages.len()
            ),
            Event::Refused { addr, error } => {
                eprintln!("serve: refused a connection from {addr}: {error}");
            }
            _ => {}
        }
    }
}

fn answer(node: &Node, served: &mut Served, msg: Message) {
    let reply = match Op::of(&msg.payload) {
        Some(Op::Data) => {
            served.data += 1;
            return;
        }
        Some(Op::Echo) => {
            served.echoes += 1;
            msg.payload
        }
        Some(Op::CountRequest) => remote::count(served.data).into(),
        Some(Op::Count) | None => {
            served.unknown += 1;
            return;
        }
    };
    if node.send_timeout(msg.from, reply, REPLY_TIMEOUT).is_err() {
        served.failed_replies += 1;
    }
}
