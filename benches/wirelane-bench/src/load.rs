//! `load`: the `throughput` and `latency` workloads against a `serve` process, on
//! this host or another, over the [`remote`] protocol. Throughput is timed up to the
//! answer to a count request showing that `serve` has received every message, so it
//! measures delivery, not just queueing. Both print the records of their in-process
//! counterparts, with `impl` set to `wirelane-remote` and the peer's address added.

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wirelane::crossbeam_channel::select;
use wirelane::{Bytes, Config, Event, Message, Node, PeerId};

use anyhow::{anyhow, bail, Context};
use clap::ValueEnum;

use crate::latency::{self, WARMUP};
use crate::oneway::{self, default_count};
use crate::remote::{self, Op};
use crate::report::{progress, Output, Record};

/// Round trips measured when `--count` is not given, as `latency` does.
const LATENCY_COUNT: u64 = 50_000;
/// Longest one send may wait for room, and longest an answer may take: past either,
/// the run is stuck and says so.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `serve` may take, once everything is sent, to count it all.
const COUNT_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two count requests while `serve` is still behind.
const COUNT_POLL: Duration = Duration::from_millis(10);

/// Runs a workload against a `serve` process.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `serve` process's address.
    #[arg(long)]
    connect: String,
    /// This node's peer id (default: from the process id and the clock; with
    /// --cert, the id its certificate names must be given).
    #[arg(long)]
    id: Option<u64>,
    #[arg(long, value_enum, default_value_t = Workload::Throughput)]
    workload: Workload,
    /// Bytes per message.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    size: u64,
    /// Messages, or round trips (default: as `throughput` and `latency`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    #[command(flatten)]
    tls: crate::tls::Files,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    Throughput,
    Latency,
}

pub fn run(args: &Args, quiet: bool, out: Output) -> anyhow::Result<ExitCode> {
    let connect = &args.connect;
    if args.tls.given() && args.id.is_none() {
        bail!("--cert needs --id: the id its certificate names");
    }
    let id = PeerId(args.id.unwrap_or_else(default_id));
    let (size, count) = (args.size as usize, args.count);
    let config = args.tls.security(&[id])?.config(Config::default(), id)?;
    // `load` only dials out, so its own listener is never used and stays on loopback.
    let node = Node::bind(id, "127.0.0.1:0", config)?;
    let peer = node
        .connect(connect.as_str())
        .with_context(|| format!("cannot connect to {connect}"))?;
    let addr = node
        .peer_stats(peer)
        .map_or_else(|| connect.clone(), |s| s.peer_addr.to_string());
    let link = Link { node: &node, peer };
    let (title, record) = if args.workload == Workload::Latency {
        let count = count.unwrap_or(LATENCY_COUNT);
        let title = format!("load: {size}-byte ping-pong with {addr}, {count} round trips");
        (title, latency(&link, size, count, quiet)?)
    } else {
        let count = count.unwrap_or_else(|| default_count(size));
        let title = format!("load: {count} {size}-byte private messages to {addr}");
        let record = throughput(&link, size, count, quiet)?;
        let dropped = node.stats().private.dropped;
        let record = record.set("lane", "private").set("conns", 1);
        (title, record.set("dropped", dropped))
    };
    node.disconnect(peer);
    node.shutdown();
    out.records(&title, &[record.set("peer", addr)]);
    Ok(ExitCode::SUCCESS)
}

/// An id unlikely to be in use by another `load` of the same `serve`: the process
/// id, and the clock's nanoseconds.
fn default_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (u64::from(std::process::id()) << 32) | u64::from(nanos)
}

struct Link<'a> {
    node: &'a Node,
    peer: PeerId,
}

impl Link<'_> {
    /// Sends on the private lane, waiting at most [`TIMEOUT`] for room.
    fn send(&self, payload: impl Into<Bytes>) -> anyhow::Result<()> {
        self.node
            .send_timeout(self.peer, payload, TIMEOUT)
            .with_context(|| format!("sending to {}", self.peer))
    }

    /// The next message from the peer, waiting at most [`TIMEOUT`]; fails at once if
    /// the connection ends.
    fn recv(&self) -> anyhow::Result<Message> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no answer from {} within {TIMEOUT:?}", self.peer);
            }
            select! {
                recv(self.node.incoming()) -> msg => match msg {
                    Ok(msg) if msg.from == self.peer => return Ok(msg),
                    Ok(_) => {}
                    Err(_) => bail!("the node shut down"),
                },
                recv(self.node.events()) -> event => match event {
                    Ok(Event::Disconnected { peer, reason, .. }) if peer == self.peer => {
                        // An answer may have arrived just before the close.
                        let mut rest = self.node.incoming().try_iter();
                        if let Some(msg) = rest.find(|m| m.from == peer) {
                            return Ok(msg);
                        }
                        bail!("{peer} closed the connection: {reason}");
                    }
                    Ok(_) => {}
                    Err(_) => bail!("the node shut down"),
                },
                default(left) => {}
            }
        }
    }

    /// Asks `serve` how many data messages it has received from us.
    fn count(&self) -> anyhow::Result<u64> {
        self.send(remote::count_request())?;
        let msg = self.recv()?;
        remote::parse_count(&msg.payload).ok_or_else(|| {
            let op = Op::of(&msg.payload).map_or("unknown".to_owned(), |op| op.to_string());
            anyhow!("expected a count from {}, got a {op} message", self.peer)
        })
    }
}

/// Sends `count` data messages and waits until `serve` has counted them all.
fn throughput(link: &Link, size: usize, count: u64, quiet: bool) -> anyhow::Result<Record> {
    let before = link.count()?;
    let target = before + count;
    let bar = progress("load", Some(count), quiet);
    let started = Instant::now();
    for i in 0..count {
        link.send(remote::data(size))?;
        if i % 1024 == 0 {
            bar.set_position(i);
        }
    }
    // The lane is ordered, so the first answer normally shows every message; asking
    // again covers a `serve` that counts on more than one thread.
    let deadline = Instant::now() + COUNT_DEADLINE;
    let finished = loop {
        let counted = link.count()?;
        let now = Instant::now();
        if counted == target {
            break now;
        }
        if counted > target {
            bail!(
                "{} counted {} messages from us, more than the {count} sent: is another `load` using --id {}?",
                link.peer,
                counted - before,
                link.node.id().0
            );
        }
        if now >= deadline {
            bail!(
                "{} counted only {} of {count} messages within {COUNT_DEADLINE:?}",
                link.peer,
                counted.saturating_sub(before)
            );
        }
        thread::sleep(COUNT_POLL);
    };
    bar.finish_and_clear();
    Ok(oneway::record(
        "wirelane-remote",
        size,
        count,
        finished - started,
    ))
}

/// Ping-pong: sends an echo request, waits for it to come back unchanged.
fn latency(link: &Link, size: usize, count: u64, quiet: bool) -> anyhow::Result<Record> {
    let bar = progress("load", Some(WARMUP + count), quiet);
    let samples = latency::round_trips(count, |i| {
        let ping = remote::echo(size, i);
        link.send(ping.clone())?;
        let pong = link.recv()?;
        bar.inc(1);
        anyhow::ensure!(
            pong.payload == ping,
            "echo {i} from {} came back altered",
            link.peer
        );
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(latency::record("wirelane-remote", size, &samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_carry_the_process_id() {
        assert_eq!(default_id() >> 32, u64::from(std::process::id()));
    }
}
