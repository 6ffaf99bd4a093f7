//! The limits and baselines our figures are measured against, in the same process
//! and the same run: raw loopback TCP, a crossbeam channel between two threads, and
//! the naive hand-written server. Each goes through the same one-way driver as
//! wirelane ([`crate::oneway`]).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::ValueEnum;
use wirelane::crossbeam_channel::bounded;

use crate::naive;
use crate::oneway::{self, default_count, FILL};
use crate::report::{Output, Record};

/// Bytes per write of the raw baseline, and per read.
const RAW_CHUNK: usize = 64 * 1024;
/// The channel baseline's capacity: the default private lane's.
const CHANNEL_CAPACITY: usize = 1024;

/// One baseline alone: the limits and the naive server wirelane is measured against.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// raw: pre-framed bytes over loopback TCP in 64 KiB writes (the transport
    /// limit). channel: a fresh payload per message through a crossbeam bounded
    /// channel between two threads (the in-process limit). naive: a thread per
    /// connection and a `Mutex<TcpStream>` with one write per message.
    #[arg(value_enum)]
    which: Which,
    /// Bytes per payload.
    #[arg(long)]
    size: usize,
    /// Messages (default: about a second's worth).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Which {
    Raw,
    Channel,
    Naive,
}

pub fn run(args: &Args, out: Output) -> anyhow::Result<ExitCode> {
    let (size, count) = (
        args.size,
        args.count.unwrap_or_else(|| default_count(args.size)),
    );
    let (name, record) = match args.which {
        Which::Raw => ("raw", raw(size, count)?),
        Which::Channel => ("channel", channel(size, count)?),
        Which::Naive => ("naive", naive_throughput(size, count)?),
    };
    out.records(&format!("baseline {name}: {size}-byte messages"), &[record]);
    Ok(ExitCode::SUCCESS)
}

/// The transport limit: `count` pre-framed `size`-byte messages written over loopback
/// TCP in 64 KiB writes and read in 64 KiB reads.
pub fn raw(size: usize, count: u64) -> anyhow::Result<Record> {
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
    let write = move || -> anyhow::Result<()> {
        let (mut written, mut offset) = (0u64, 0usize);
        while written < total {
            let n = (total - written).min(RAW_CHUNK as u64) as usize;
            let end = (offset + n).min(pattern.len());
            sender.write_all(&pattern[offset..end])?;
            written += (end - offset) as u64;
            offset = end % RAW_CHUNK;
        }
        Ok(())
    };
    let (_, elapsed) = oneway::timed("raw", vec![write], |_| {
        let mut buf = vec![0u8; RAW_CHUNK];
        let mut got = 0u64;
        while got < total {
            match receiver.read(&mut buf).context("raw baseline")? {
                0 => bail!("raw baseline: connection ended early"),
                n => got += n as u64,
            }
        }
        Ok(())
    })?;
    Ok(oneway::record("raw-tcp", size, count, elapsed))
}

/// The in-process limit: a fresh `size`-byte payload per message through a crossbeam
/// bounded channel between two threads.
pub fn channel(size: usize, count: u64) -> anyhow::Result<Record> {
    let (tx, rx) = bounded::<Vec<u8>>(CHANNEL_CAPACITY);
    let send = move || -> anyhow::Result<()> {
        for _ in 0..count {
            tx.send(vec![FILL; size])?;
        }
        Ok(())
    };
    let (bytes, elapsed) = oneway::timed("channel", vec![send], |_| {
        let mut bytes = 0u64;
        for _ in 0..count {
            bytes += rx.recv()?.len() as u64;
        }
        Ok(bytes)
    })?;
    if bytes != count * size as u64 {
        bail!(
            "channel baseline: {bytes} bytes arrived of {}",
            count * size as u64
        );
    }
    Ok(oneway::record("channel", size, count, elapsed))
}

/// The naive server's throughput: one thread sending through a `Mutex<TcpStream>`,
/// one reader thread delivering into a channel, the application draining it.
pub fn naive_throughput(size: usize, count: u64) -> anyhow::Result<Record> {
    let (client, server) = naive::pair()?;
    // Kept open until the drain is done: dropping the last handle closes the socket.
    let _open = client.clone();
    let send = move || -> anyhow::Result<()> {
        for _ in 0..count {
            client.send(&vec![FILL; size])?;
        }
        Ok(())
    };
    let (_, elapsed) = oneway::timed("naive", vec![send], |_| {
        for _ in 0..count {
            server.incoming.recv()?;
        }
        Ok(())
    })?;
    Ok(oneway::record("naive", size, count, elapsed))
}
