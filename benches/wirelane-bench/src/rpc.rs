//! `rpc`: request-reply round trips over one connection with [`Node::request`] and
//! [`Node::respond`]. One node's responder thread echoes every request; the other's
//! `--threads` requesting threads share `--count` blocking requests, one after
//! another each, and every reply is checked against its request. Round trips go into
//! HDR histograms (one per thread, added up), as in [`crate::latency`].

use std::process::ExitCode;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use hdrhistogram::Histogram;
use wirelane::{Bytes, Config, Lane, Node, PeerId};

use crate::latency::{self, WARMUP};
use crate::report::{progress, Output, Record};
use crate::threads::abandon;

/// Covers one whole request: room on the lane, a request slot, and the reply.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Request-reply round trips over one connection: requests/s, p50, p99, p99.9.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bytes per request, and per reply.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Requests measured, shared among the threads (after a warm-up of 2,000).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Requesting threads, each making blocking requests one after another (a
    /// connection has at most 128 requests in flight).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=128))]
    threads: u64,
}

pub fn run(args: &Args, quiet: bool, out: Output) -> anyhow::Result<ExitCode> {
    let (size, count, threads) = (args.size, args.count, args.threads);
    let bar = progress("rpc", None, quiet);
    let record = wirelane_rpc(size, count, threads)?;
    bar.finish_and_clear();
    out.records(
        &format!(
            "rpc: {size}-byte requests and replies, {count} requests from {threads} thread{}",
            if threads == 1 { "" } else { "s" }
        ),
        &[record],
    );
    out.note("every reply matched its request");
    Ok(ExitCode::SUCCESS)
}

/// The payload of request `seq` of thread `thread`: its tag, repeated over `size`
/// bytes, so that a reply to any other request (or a damaged one) does not match.
fn payload(thread: u64, seq: u64, size: usize) -> Vec<u8> {
    let tag = ((thread << 48) | seq).to_le_bytes();
    tag.iter().copied().cycle().take(size).collect()
}

/// One request, and the check of its reply.
fn call(client: &Node, peer: PeerId, thread: u64, seq: u64, size: usize) -> anyhow::Result<()> {
    let request = Bytes::from(payload(thread, seq, size));
    let reply = client
        .request(peer, request.clone(), TIMEOUT)
        .with_context(|| format!("thread {thread}: request #{seq} failed"))?;
    ensure!(
        reply == request,
        "thread {thread}: the reply to request #{seq} is not its echo ({} bytes, {} expected)",
        reply.len(),
        request.len()
    );
    Ok(())
}

/// The share of `count` requests that thread `thread` of `threads` makes.
fn share(count: u64, threads: u64, thread: u64) -> u64 {
    count / threads + u64::from(thread < count % threads)
}

/// Two wirelane nodes: the server's responder echoes every request; the client
/// warms up with [`WARMUP`] requests from one thread, then its threads start
/// together and each times its share.
fn wirelane_rpc(size: usize, count: u64, threads: u64) -> anyhow::Result<Record> {
    let client = Node::bind(PeerId(1), "127.0.0.1:0", Config::default())?;
    let server = Node::bind(PeerId(2), "127.0.0.1:0", Config::default())?;
    let peer = client.connect(server.local_addr())?;
    let start = Barrier::new(threads as usize + 1);
    let (samples, secs) = thread::scope(|s| -> anyhow::Result<(Histogram<u64>, f64)> {
        let responder = thread::Builder::new()
            .name("rpc-respond".into())
            .spawn_scoped(s, || respond_all(&server))?;
        let measured = measure(s, &start, &client, peer, size, count, threads);
        client.disconnect(peer);
        server.shutdown();
        let answered = responder
            .join()
            .ok()
            .context("the responder thread panicked")?;
        let measured = measured?;
        let answered = answered?;
        ensure!(
            answered == WARMUP + count,
            "the responder answered {answered} requests, {} expected",
            WARMUP + count
        );
        Ok(measured)
    })?;
    let at = |q: f64| latency::quantile_us(&samples, q);
    Ok(Record::new("rpc", "wirelane")
        .set("size", size as u64)
        .set("threads", threads)
        .set("count", samples.len())
        .set("secs", secs)
        .set("requests_per_s", samples.len() as f64 / secs.max(1e-9))
        .set("p50_us", at(0.5))
        .set("p99_us", at(0.99))
        .set("p999_us", at(0.999))
        .set("max_us", samples.max() as f64 / 1e3))
}

/// The warm-up, then the timed requests: the round trips of every thread, and the
/// wall-clock seconds from their common start to the last reply.
fn measure<'s>(
    s: &'s thread::Scope<'s, '_>,
    start: &'s Barrier,
    client: &'s Node,
    peer: PeerId,
    size: usize,
    count: u64,
    threads: u64,
) -> anyhow::Result<(Histogram<u64>, f64)> {
    for seq in 0..WARMUP {
        call(client, peer, threads, seq, size).context("warm-up")?;
    }
    let workers = (0..threads)
        .map(|thread| {
            thread::Builder::new()
                .name(format!("rpc-request-{thread}"))
                .spawn_scoped(s, move || -> anyhow::Result<Histogram<u64>> {
                    // One microsecond to a minute, three significant digits.
                    let mut samples = latency::histogram()?;
                    start.wait();
                    for seq in 0..share(count, threads, thread) {
                        let started = Instant::now();
                        call(client, peer, thread, seq, size)?;
                        samples.saturating_record(started.elapsed().as_nanos() as u64);
                    }
                    Ok(samples)
                })
                // The others would wait at the barrier for it forever.
                .unwrap_or_else(|e| abandon(format_args!("could not start a thread: {e}")))
        })
        .collect::<Vec<_>>();
    start.wait();
    let started = Instant::now();
    let mut all = latency::histogram()?;
    let mut first_error = None;
    for worker in workers {
        match worker.join().ok().context("a requesting thread panicked")? {
            Ok(samples) => all.add(&samples)?,
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    match first_error {
        Some(e) => Err(e),
        None => Ok((all, secs)),
    }
}

/// The responder: echoes every request until the node shuts down (or nothing has
/// come for [`TIMEOUT`]); returns how many it answered.
fn respond_all(server: &Node) -> anyhow::Result<u64> {
    let mut answered = 0;
    while let Ok(m) = server.incoming().recv_timeout(TIMEOUT) {
        if m.lane != Lane::Request {
            bail!("the responder got a {} message from {}", m.lane, m.from);
        }
        let reply = m.payload.clone();
        if server.respond(&m, reply).is_err() {
            break;
        }
        answered += 1;
    }
    Ok(answered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_payloads_differ() {
        for (count, threads) in [(20_000, 1), (10, 3), (2, 4)] {
            let total: u64 = (0..threads).map(|t| share(count, threads, t)).sum();
            assert_eq!(total, count);
        }
        assert_eq!(payload(0, 1, 64).len(), 64);
        assert_ne!(payload(0, 1, 64), payload(1, 1, 64));
        assert_ne!(payload(0, 1, 3), payload(0, 2, 3));
        assert!(payload(0, 1, 0).is_empty());
    }
}
