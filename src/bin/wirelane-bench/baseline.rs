//! The limits and baselines our figures are measured against, in the same process
//! and the same run: raw loopback TCP, a crossbeam channel between two threads, and
//! the naive hand-written server.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;

use crate::cli::{positive, Args, CliError};
use crate::naive;
use crate::report::{Output, Record};

/// Bytes per write of the raw baseline, and per read.
const RAW_CHUNK: usize = 64 * 1024;
/// The channel baseline's capacity: the default private lane's.
const CHANNEL_CAPACITY: usize = 1024;
/// Byte every payload is filled with.
pub const FILL: u8 = 0x5A;

/// A message count that keeps a run around a second or two for `size`-byte payloads.
pub fn default_count(size: usize) -> u64 {
    ((512u64 << 20) / (size as u64 + 6)).clamp(20_000, 3_000_000)
}

/// Builds a throughput record from a count of `size`-byte messages in `elapsed`.
pub fn throughput_record(
    workload: &str,
    implementation: &str,
    size: usize,
    count: u64,
    elapsed: Duration,
) -> Record {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let per_sec = count as f64 / secs;
    Record::new(workload, implementation)
        .int("size", size as u64)
        .int("count", count)
        .float("secs", secs)
        .float("msgs_per_s", per_sec)
        .float("mb_per_s", per_sec * size as f64 / 1e6)
}

/// `baseline raw|channel|naive`.
pub fn run(args: &Args, out: Output) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let which = args.word(0).unwrap_or("").to_owned();
    let size: usize = args.require("size")?;
    let count = positive("count", args.get("count", default_count(size))?)?;
    args.finish(1)?;
    let record = match which.as_str() {
        "raw" => raw(size, count)?,
        "channel" => channel(size, count)?,
        "naive" => naive_throughput(size, count)?,
        other => {
            return Err(Box::new(CliError::BadValue {
                option: "baseline".to_owned(),
                value: other.to_owned(),
                why: "expected raw, channel or naive".to_owned(),
            }))
        }
    };
    out.records(
        &format!("baseline {which}: {size}-byte messages"),
        &[record],
    );
    Ok(ExitCode::SUCCESS)
}

/// The transport limit: `count` pre-framed `size`-byte messages written over loopback
/// TCP in 64 KiB writes and read in 64 KiB reads.
pub fn raw(size: usize, count: u64) -> std::io::Result<Record> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut sender = TcpStream::connect(listener.local_addr()?)?;
    let (mut receiver, _) = listener.accept()?;
    sender.set_nodelay(true)?;
    let total = count * (size as u64 + 6);
    // A stream of frames, cut into 64 KiB writes wherever the cut falls.
    let mut pattern = Vec::with_capacity(RAW_CHUNK + size + 6);
    while pattern.len() < RAW_CHUNK {
        pattern.extend_from_slice(&(size as u32).to_be_bytes());
        pattern.extend_from_slice(&[7, 0]);
        pattern.resize(pattern.len() + size, FILL);
    }
    let started = Instant::now();
    let reader = thread::Builder::new()
        .name("raw-reader".into())
        .spawn(move || {
            let mut buf = vec![0u8; RAW_CHUNK];
            let mut got = 0u64;
            while got < total {
                match receiver.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n as u64,
                }
            }
            (got, Instant::now())
        })?;
    let mut written = 0u64;
    let mut offset = 0usize;
    while written < total {
        let n = (total - written).min(RAW_CHUNK as u64) as usize;
        let end = (offset + n).min(pattern.len());
        sender.write_all(&pattern[offset..end])?;
        written += (end - offset) as u64;
        offset = (offset + (end - offset)) % RAW_CHUNK;
    }
    let (got, finished) = reader
        .join()
        .map_err(|_| std::io::Error::other("raw reader panicked"))?;
    if got < total {
        return Err(std::io::Error::other(
            "raw baseline: connection ended early",
        ));
    }
    Ok(throughput_record(
        "throughput",
        "raw-tcp",
        size,
        count,
        finished - started,
    ))
}

/// The in-process limit: a fresh `size`-byte payload per message through a crossbeam
/// bounded channel between two threads.
pub fn channel(size: usize, count: u64) -> std::io::Result<Record> {
    let (tx, rx) = bounded::<Vec<u8>>(CHANNEL_CAPACITY);
    let started = Instant::now();
    let receiver = thread::Builder::new()
        .name("channel-receiver".into())
        .spawn(move || {
            let mut bytes = 0u64;
            for _ in 0..count {
                match rx.recv() {
                    Ok(payload) => bytes += payload.len() as u64,
                    Err(_) => break,
                }
            }
            (bytes, Instant::now())
        })?;
    for _ in 0..count {
        if tx.send(vec![FILL; size]).is_err() {
            break;
        }
    }
    let (bytes, finished) = receiver
        .join()
        .map_err(|_| std::io::Error::other("channel receiver panicked"))?;
    assert_eq!(bytes, count * size as u64, "every message arrives");
    Ok(throughput_record(
        "throughput",
        "channel",
        size,
        count,
        finished - started,
    ))
}

/// The naive server's throughput: one thread sending through a `Mutex<TcpStream>`,
/// one reader thread delivering into a channel, the application draining it.
pub fn naive_throughput(size: usize, count: u64) -> std::io::Result<Record> {
    let (client, server) = naive::pair()?;
    let started = Instant::now();
    let drain = thread::Builder::new()
        .name("naive-drain".into())
        .spawn(move || {
            for _ in 0..count {
                if server.incoming.recv().is_err() {
                    break;
                }
            }
            Instant::now()
        })?;
    for _ in 0..count {
        client.send(&vec![FILL; size])?;
    }
    let finished = drain
        .join()
        .map_err(|_| std::io::Error::other("naive drain panicked"))?;
    Ok(throughput_record(
        "throughput",
        "naive",
        size,
        count,
        finished - started,
    ))
}
