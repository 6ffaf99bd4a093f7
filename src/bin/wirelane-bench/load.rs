//! `load --connect ADDR [--id N] [--workload throughput|latency] [--size S]
//! [--count M]`: the `throughput` and `latency` workloads against a `serve` process,
//! on this host or another, over the [`remote`] protocol.
//!
//! Throughput is timed from the first data message sent to the answer to a count
//! request showing that `serve` has received them all, so it includes one round trip
//! and measures delivery, not just queueing. Latency is the same ping-pong as
//! `latency`, with `serve` echoing. Both print the records of their in-process
//! counterparts, with `impl` set to `wirelane-remote` and the peer's address added.

use std::error::Error;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::select;
use wirelane::{Bytes, Config, Event, Message, Node, PeerId};

use crate::baseline::{default_count, throughput_record};
use crate::cli::{positive, Args};
use crate::latency::latency_record;
use crate::progress::Progress;
use crate::remote::{self, Op};
use crate::report::{Output, Record};

/// Round trips before measuring latency, as `latency` does.
const WARMUP: u64 = 2_000;
/// Round trips measured when `--count` is not given, as `latency` does.
const LATENCY_COUNT: u64 = 50_000;
/// Longest one send may wait for room, and longest an answer may take: past either,
/// the run is stuck and says so.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `serve` may take, once everything is sent, to count it all.
const COUNT_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two count requests while `serve` is still behind.
const COUNT_POLL: Duration = Duration::from_millis(10);

/// `load`.
pub fn run(args: &Args, out: Output) -> Result<ExitCode, Box<dyn Error>> {
    let connect: String = args.require("connect")?;
    let id = PeerId(args.get_opt("id")?.unwrap_or_else(default_id));
    let workload = args.choice("workload", &["throughput", "latency"], "throughput")?;
    let size = positive("size", args.get("size", 64)?)? as usize;
    let count: Option<u64> = args.get_opt("count")?;
    args.finish(0)?;

    // `load` only dials out, so its own listener is never used and stays on loopback.
    let node = Node::bind(id, "127.0.0.1:0", Config::default())?;
    let peer = node
        .connect(connect.as_str())
        .map_err(|e| format!("cannot connect to {connect}: {e}"))?;
    let addr = node
        .peer_stats(peer)
        .map_or_else(|| connect.clone(), |s| s.peer_addr.to_string());
    let link = Link { node: &node, peer };
    let quiet = args.flag("quiet");
    let (title, record) = if workload == "latency" {
        let count = positive("count", count.unwrap_or(LATENCY_COUNT))?;
        let record = latency(&link, size, count, quiet)?;
        let title = format!("load: {size}-byte ping-pong with {addr}, {count} round trips");
        (title, record)
    } else {
        let count = positive("count", count.unwrap_or_else(|| default_count(size)))?;
        let record = throughput(&link, size, count, quiet)?
            .text("lane", "private")
            .int("conns", 1)
            .int("dropped", node.stats().private.dropped);
        let title = format!("load: {count} {size}-byte private messages to {addr}");
        (title, record)
    };
    node.disconnect(peer);
    node.shutdown();
    out.records(&title, &[record.text("peer", addr)]);
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

/// Our node and the `serve` peer it talks to.
struct Link<'a> {
    node: &'a Node,
    peer: PeerId,
}

impl Link<'_> {
    /// Sends on the private lane, waiting at most [`TIMEOUT`] for room.
    fn send(&self, payload: impl Into<Bytes>) -> Result<(), String> {
        self.node
            .send_timeout(self.peer, payload, TIMEOUT)
            .map_err(|e| format!("sending to {}: {e}", self.peer))
    }

    /// The next message from the peer, waiting at most [`TIMEOUT`]; fails at once if
    /// the connection ends.
    fn recv(&self) -> Result<Message, String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no answer from {} within {TIMEOUT:?}", self.peer));
            }
            select! {
                recv(self.node.incoming()) -> msg => match msg {
                    Ok(msg) if msg.from == self.peer => return Ok(msg),
                    Ok(_) => {}
                    Err(_) => return Err("the node shut down".to_owned()),
                },
                recv(self.node.events()) -> event => match event {
                    Ok(Event::Disconnected { peer, reason, .. }) if peer == self.peer => {
                        // An answer may have arrived just before the close.
                        let mut rest = self.node.incoming().try_iter();
                        if let Some(msg) = rest.find(|m| m.from == peer) {
                            return Ok(msg);
                        }
                        return Err(format!("{peer} closed the connection: {reason}"));
                    }
                    Ok(_) => {}
                    Err(_) => return Err("the node shut down".to_owned()),
                },
                default(left) => {}
            }
        }
    }

    /// Asks `serve` how many data messages it has received from us.
    fn count(&self) -> Result<u64, String> {
        self.send(remote::count_request())?;
        let msg = self.recv()?;
        remote::parse_count(&msg.payload).ok_or_else(|| {
            let op = Op::of(&msg.payload).map_or("unknown".to_owned(), |op| op.to_string());
            format!("expected a count from {}, got a {op} message", self.peer)
        })
    }
}

/// Sends `count` data messages and waits until `serve` has counted them all.
fn throughput(link: &Link, size: usize, count: u64, quiet: bool) -> Result<Record, String> {
    let before = link.count()?;
    let target = before + count;
    let progress = Progress::start("load", Some(count), quiet);
    let done = progress.counter();
    let started = Instant::now();
    for i in 0..count {
        link.send(remote::data(size))?;
        if i % 1024 == 0 {
            done.store(i, Relaxed);
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
            return Err(format!(
                "{} counted {} messages from us, more than the {count} sent: is another `load` using --id {}?",
                link.peer,
                counted - before,
                link.node.id().0
            ));
        }
        if now >= deadline {
            return Err(format!(
                "{} counted only {} of {count} messages within {COUNT_DEADLINE:?}",
                link.peer,
                counted.saturating_sub(before)
            ));
        }
        thread::sleep(COUNT_POLL);
    };
    progress.finish();
    Ok(throughput_record(
        "throughput",
        "wirelane-remote",
        size,
        count,
        finished - started,
    ))
}

/// Ping-pong: sends an echo request, waits for it to come back unchanged.
fn latency(link: &Link, size: usize, count: u64, quiet: bool) -> Result<Record, String> {
    let progress = Progress::start("load", Some(WARMUP + count), quiet);
    let done = progress.counter();
    let mut samples = Vec::with_capacity(count as usize);
    for i in 0..WARMUP + count {
        let ping = remote::echo(size, i);
        let started = Instant::now();
        link.send(ping.clone())?;
        let pong = link.recv()?;
        let rtt = started.elapsed();
        if pong.payload != ping {
            return Err(format!("echo {i} from {} came back altered", link.peer));
        }
        if i >= WARMUP {
            samples.push(rtt);
        }
        done.store(i + 1, Relaxed);
    }
    progress.finish();
    Ok(latency_record("wirelane-remote", size, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_carry_the_process_id() {
        assert_eq!(default_id() >> 32, u64::from(std::process::id()));
    }
}
