//! `latency`: ping-pong round trips over one connection, wirelane against the naive
//! baseline in the same run.

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use wirelane::{Config, Node, PeerId};

use crate::baseline::FILL;
use crate::cli::{positive, Args};
use crate::naive;
use crate::progress::Progress;
use crate::report::{Output, Record};

/// Round trips before measuring, to warm caches, allocators and the scheduler.
const WARMUP: u64 = 2_000;
const TIMEOUT: Duration = Duration::from_secs(10);

/// `latency`.
pub fn run(args: &Args, out: Output) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let size: usize = args.get("size", 64)?;
    let count = positive("count", args.get("count", 50_000)?)?;
    let which = args.choice("impl", &["wirelane", "naive", "both"], "both")?;
    args.finish(0)?;
    let progress = Progress::start("latency", None, args.flag("quiet"));
    let mut records = Vec::new();
    if which != "wirelane" {
        records.push(naive_latency(size, count)?);
    }
    if which != "naive" {
        records.push(wirelane_latency(size, count)?);
    }
    progress.finish();
    out.records(
        &format!("latency: {size}-byte ping-pong, {count} round trips"),
        &records,
    );
    if let [naive, ours] = &records[..] {
        let ratio = ours.number("p50_us").unwrap_or(0.0) / naive.number("p50_us").unwrap_or(1.0);
        out.note(&format!("wirelane p50 is {ratio:.2}x the naive baseline's"));
    }
    Ok(ExitCode::SUCCESS)
}

/// Percentiles of round-trip times, in microseconds.
pub fn latency_record(implementation: &str, size: usize, mut samples: Vec<Duration>) -> Record {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    let total: Duration = samples.iter().sum();
    Record::new("latency", implementation)
        .int("size", size as u64)
        .int("count", samples.len() as u64)
        .float("secs", total.as_secs_f64())
        .float("p50_us", at(0.5))
        .float("p99_us", at(0.99))
        .float("p999_us", at(0.999))
        .float("max_us", at(1.0))
}

/// Round trips through two wirelane nodes: the client sends on the private lane and
/// waits for the echo; the server's thread echoes every message back.
pub fn wirelane_latency(size: usize, count: u64) -> Result<Record, Box<dyn std::error::Error>> {
    let client = Node::bind(PeerId(1), "127.0.0.1:0", Config::default())?;
    let server = Node::bind(PeerId(2), "127.0.0.1:0", Config::default())?;
    let peer = client.connect(server.local_addr())?;
    let samples = thread::scope(
        |s| -> Result<Vec<Duration>, Box<dyn std::error::Error + Send + Sync>> {
            let echo = thread::Builder::new()
                .name("echo".into())
                .spawn_scoped(s, || {
                    while let Ok(m) = server.incoming().recv_timeout(TIMEOUT) {
                        if server.send(m.from, m.payload).is_err() {
                            break;
                        }
                    }
                })?;
            let mut samples = Vec::with_capacity(count as usize);
            for i in 0..WARMUP + count {
                let started = Instant::now();
                client.send(peer, vec![FILL; size])?;
                client.incoming().recv_timeout(TIMEOUT)?;
                if i >= WARMUP {
                    samples.push(started.elapsed());
                }
            }
            client.disconnect(peer);
            server.shutdown();
            echo.join().map_err(|_| "echo thread panicked")?;
            Ok(samples)
        },
    );
    Ok(latency_record(
        "wirelane",
        size,
        samples.map_err(|e| e.to_string())?,
    ))
}

/// The same round trips through the naive baseline.
pub fn naive_latency(size: usize, count: u64) -> Result<Record, Box<dyn std::error::Error>> {
    let (client, server) = naive::pair()?;
    let echo = {
        let server = server.clone();
        thread::Builder::new()
            .name("naive-echo".into())
            .spawn(move || {
                while let Ok(payload) = server.incoming.recv_timeout(TIMEOUT) {
                    if server.send(&payload).is_err() {
                        break;
                    }
                }
            })?
    };
    let mut samples = Vec::with_capacity(count as usize);
    for i in 0..WARMUP + count {
        let started = Instant::now();
        client.send(&vec![FILL; size])?;
        client.incoming.recv_timeout(TIMEOUT)?;
        if i >= WARMUP {
            samples.push(started.elapsed());
        }
    }
    drop(client);
    echo.join().map_err(|_| "naive echo panicked")?;
    Ok(latency_record("naive", size, samples))
}
