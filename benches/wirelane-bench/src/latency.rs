//! `latency`: ping-pong round trips over one connection, wirelane against the naive
//! baseline in the same run, and with `--tls` over mutual TLS against plaintext. Round trips go into an HDR histogram, which keeps
//! three significant digits from a microsecond to a minute in a few KiB whatever
//! the count.

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;
use hdrhistogram::Histogram;
use wirelane::{Config, Node, PeerId};

use crate::naive;
use crate::oneway::FILL;
use crate::report::{progress, Output, Record};
use crate::tls::{Compare, Security};

/// Round trips before measuring, to warm caches, allocators and the scheduler.
pub const WARMUP: u64 = 2_000;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Ping-pong round trips over one connection: p50, p99, p99.9. The client is node
/// 1, the echoing server node 2 (for --cert with {id}).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bytes per payload.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Round trips measured (after a warm-up of 2,000).
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    #[arg(long = "impl", value_enum, default_value_t = Which::Both)]
    which: Which,
    #[command(flatten)]
    security: Compare,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Wirelane,
    Naive,
    Both,
}

pub fn run(args: &Args, quiet: bool, out: Output) -> anyhow::Result<ExitCode> {
    let (size, count) = (args.size, args.count);
    let securities = args.security.securities(&[PeerId(1), PeerId(2)])?;
    let bar = progress("latency", None, quiet);
    let mut records = Vec::new();
    if args.which != Which::Wirelane {
        let (client, server) = naive::pair()?;
        let echo = server.clone();
        let echo = crate::threads::start("naive-echo", move || {
            while let Ok(payload) = echo.incoming.recv_timeout(TIMEOUT) {
                if echo.send(&payload).is_err() {
                    break;
                }
            }
        });
        let samples = round_trips(count, |_| {
            client.send(&vec![FILL; size])?;
            client.incoming.recv_timeout(TIMEOUT)?;
            Ok(())
        });
        drop((client, server));
        echo.join_by(Instant::now() + TIMEOUT)?;
        records.push(record("naive", size, &samples?));
    }
    if args.which != Which::Naive {
        for security in &securities {
            records.push(wirelane_latency(size, count, security)?);
        }
    }
    bar.finish_and_clear();
    let p50 = |r: &Record| r.number("p50_us").unwrap_or(f64::NAN);
    let mut notes = Vec::new();
    if let (Some(naive), Some(ours)) = (
        records
            .iter()
            .find(|r| r.get("impl").is_some_and(|i| i == "naive")),
        records
            .iter()
            .find(|r| r.get("impl").is_some_and(|i| i == "wirelane")),
    ) {
        let ratio = p50(ours) / p50(naive);
        notes.push(format!("wirelane p50 is {ratio:.2}x the naive baseline's"));
    }
    if let ([.., plain, tls], true, 2) = (
        &mut records[..],
        args.which != Which::Naive,
        securities.len(),
    ) {
        let at = |r: &Record, key| r.number(key).unwrap_or(f64::NAN);
        let (p50_ratio, p999_ratio) = (
            at(tls, "p50_us") / at(plain, "p50_us"),
            at(tls, "p999_us") / at(plain, "p999_us"),
        );
        *tls = tls
            .clone()
            .set("p50_vs_plain", p50_ratio)
            .set("p999_vs_plain", p999_ratio);
        notes.push(format!(
            "over TLS the p50 is {p50_ratio:.2}x plaintext's, the p99.9 {p999_ratio:.2}x"
        ));
    }
    out.records(
        &format!("latency: {size}-byte ping-pong, {count} round trips"),
        &records,
    );
    for note in notes {
        out.note(&note);
    }
    Ok(ExitCode::SUCCESS)
}

/// Times `WARMUP + count` calls of `trip` (given the trip's number) and keeps the
/// last `count`, in microseconds.
///
/// # Errors
///
/// The first trip that failed.
pub fn round_trips(
    count: u64,
    mut trip: impl FnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<Histogram<u64>> {
    let mut samples = histogram()?;
    for i in 0..WARMUP + count {
        let started = Instant::now();
        trip(i)?;
        if i >= WARMUP {
            samples.saturating_record(started.elapsed().as_nanos() as u64);
        }
    }
    Ok(samples)
}

/// A histogram of round trips in nanoseconds, from one to a minute, three
/// significant digits. Nanoseconds, because a loopback round trip takes about ten
/// microseconds: counted in whole microseconds, two figures 10% apart could print
/// the same.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000_000, 3)?)
}

/// The `q` quantile of a histogram of nanoseconds, in microseconds.
pub fn quantile_us(samples: &Histogram<u64>, q: f64) -> f64 {
    samples.value_at_quantile(q) as f64 / 1e3
}

/// Percentiles of round-trip times (recorded in nanoseconds), in microseconds.
pub fn record(implementation: &str, size: usize, samples: &Histogram<u64>) -> Record {
    let at = |q: f64| quantile_us(samples, q);
    Record::new("latency", implementation)
        .set("size", size as u64)
        .set("count", samples.len())
        .set("secs", samples.mean() * samples.len() as f64 / 1e9)
        .set("p50_us", at(0.5))
        .set("p99_us", at(0.99))
        .set("p999_us", at(0.999))
        .set("max_us", samples.max() as f64 / 1e3)
}

/// Round trips through two wirelane nodes: the client sends on the private lane and
/// waits for the echo; the server's thread echoes every message back.
fn wirelane_latency(size: usize, count: u64, security: &Security) -> anyhow::Result<Record> {
    let (client, server) = (PeerId(1), PeerId(2));
    let client = Node::bind(
        client,
        "127.0.0.1:0",
        security.config(Config::default(), client)?,
    )?;
    let server = Node::bind(
        server,
        "127.0.0.1:0",
        security.config(Config::default(), server)?,
    )?;
    let peer = client.connect(server.local_addr())?;
    let samples = thread::scope(|s| -> anyhow::Result<Histogram<u64>> {
        let echo = thread::Builder::new()
            .name("echo".into())
            .spawn_scoped(s, || {
                while let Ok(m) = server.incoming().recv_timeout(TIMEOUT) {
                    if server.send(m.from, m.payload).is_err() {
                        break;
                    }
                }
            })?;
        let samples = round_trips(count, |_| {
            client.send(peer, vec![FILL; size])?;
            client.incoming().recv_timeout(TIMEOUT)?;
            Ok(())
        });
        client.disconnect(peer);
        server.shutdown();
        echo.join().ok().context("the echo thread panicked")?;
        samples
    })?;
    Ok(record(security.name(), size, &samples))
}
