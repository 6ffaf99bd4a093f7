//! `scale`: what one idle connection costs a node, and whether many of them slow
//! down the one that is busy.
//!
//! wirelane spends two threads per connection, so a node's cost grows with its
//! peers even when they say nothing. This job opens `--conns` idle connections into
//! one hub node and reads the threads and resident memory they added; then it
//! measures the throughput of one real client among them, against the same client
//! alone.
//!
//! The idle clients are raw sockets that complete wirelane's handshake by hand
//! (with the library's frames, `wirelane::__bench`) and then never read or write
//! again: a real client node would add two threads per connection to the measured
//! process (or, in a child process, thousands of threads to a 2-core machine),
//! drowning the figure. Their ids are above the hub's, so the hub arbitrates.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::ProgressBar;
use wirelane::__bench::{decode_header, encode, encode_header, hello_frame, FrameKind, HEADER_LEN};
use wirelane::{Config, Lane, Node, PeerId};

use crate::oneway::{self, default_count};
use crate::procfs;
use crate::report::{progress, Output, Record};
use crate::threads::wait_until;

/// The hub's id: the lowest, so that it arbitrates every handshake.
const HUB: PeerId = PeerId(1);
const CLIENT: PeerId = PeerId(2);
const FIRST_IDLE: u64 = 1_000;
/// The hub's silence timeout: longer than any run, so that idle clients, which
/// never send a byte (not even a pong), are not declared dead meanwhile.
const IDLE_SILENCE: Duration = Duration::from_secs(3_600);
/// The hub's ping interval, which must be below the silence timeout. Long, so that
/// the hub does not fill the idle clients' receive buffers with pings either.
const IDLE_PING: Duration = Duration::from_secs(600);
/// Longest wait for the hub to register every idle connection and start its
/// threads, or to retire a closed connection's threads.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);

/// N idle connections into one node: threads and resident memory per connection,
/// and the throughput of one active connection alone and among them.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Idle connections.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    conns: u64,
    /// Bytes per message of the active connection.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Private messages of the active connection (default: about a second's worth).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Runs of each throughput measurement; the best is kept.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    repeat: u64,
}

pub fn run(args: &Args, quiet: bool, out: Output) -> anyhow::Result<ExitCode> {
    let (conns, size, repeat) = (args.conns as usize, args.size, args.repeat);
    let count = args.count.unwrap_or_else(|| default_count(size));
    let config = Config::default()
        .ping_interval(IDLE_PING)
        .silence_timeout(IDLE_SILENCE);
    let hub = Node::bind(HUB, "127.0.0.1:0", config.clone())?;

    // The client alone first, so that the figure with idle peers has its reference
    // from the same hub in the same run.
    let alone = best_of(repeat, || one_way(&hub, size, count))?;
    settle(&hub, 0)?;
    // The first run's freed buffers stay in the allocator and may be reused by the
    // idle connections, so the memory figure can err low by a few KiB per connection
    // at small counts; it cannot err high.
    let before = procfs::usage()?;

    // Read now: once descriptors run out, even `/proc/self/limits` cannot be opened.
    let fd_limit = procfs::open_files_limit();
    let bar = progress("scale", Some(conns as u64), quiet);
    let opened = open_idle(hub.local_addr(), conns, &config, fd_limit, &bar);
    bar.finish_and_clear();
    let idle = opened?;
    settle(&hub, conns)?;
    let after = procfs::usage()?;
    let crowded = best_of(repeat, || one_way(&hub, size, count))?;
    let fds = procfs::open_fds().ok();

    // Closing the clients first lets the hub see each peer's end at once, instead of
    // lingering for peers that will never answer its close.
    drop(idle);
    settle(&hub, 0)?;
    hub.shutdown();

    let n = conns as f64;
    let threads_per_conn = after.threads.saturating_sub(before.threads) as f64 / n;
    let rss_per_conn = (after.rss_kib as f64 - before.rss_kib as f64) / n;
    let records = [
        Record::new("scale", "wirelane")
            .set("conns", 0)
            .set("threads", before.threads as u64)
            .set("rss_kib", before.rss_kib)
            .set("size", size as u64)
            .set("count", count)
            .set("msgs_per_s", alone.rate()),
        Record::new("scale", "wirelane")
            .set("conns", conns as u64)
            .set("threads", after.threads as u64)
            .set("threads_per_conn", threads_per_conn)
            .set("rss_kib", after.rss_kib)
            .set("rss_kib_per_conn", rss_per_conn)
            .set("size", size as u64)
            .set("count", count)
            .set("msgs_per_s", crowded.rate()),
    ];
    out.records(
        &format!(
            "scale: {conns} idle connections into one node, then {count} {size}-byte private messages over one more (best of {repeat})"
        ),
        &records,
    );
    out.note(&format!(
        "threads and rss_kib are the whole process's, before and after opening the idle connections; \
         msgs_per_s is one client's throughput with no idle peers, then with {conns}"
    ));
    out.note(&format!(
        "with {conns} idle peers the client reaches {:.0}% of its throughput alone",
        100.0 * crowded.rate() / alone.rate().max(f64::MIN_POSITIVE)
    ));
    out.note(&format!(
        "Config::thread_stack_size = {} KiB per connection thread (reserved address space; only touched pages count in rss_kib)",
        config.thread_stack_size / 1024
    ));
    if let Some(fds) = fds {
        let limit = limit_text(fd_limit);
        out.note(&format!(
            "open file descriptors with every connection up: {fds} (limit {limit})"
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits until the hub has exactly `peers` connections registered and every one of
/// them has its reader and writer thread running, and no other connection thread is
/// left: only then do the process's threads and memory show what those
/// connections cost.
///
/// A connection is registered during its handshake, before its writer starts, so
/// the peer count alone would be read too early; the threads are counted by name.
fn settle(hub: &Node, peers: usize) -> anyhow::Result<()> {
    let counts = || {
        let names = procfs::thread_names().unwrap_or_default();
        (hub.stats().peers, procfs::conn_threads(&names, HUB))
    };
    if wait_until(Instant::now() + SETTLE_DEADLINE, || {
        counts() == (peers, (peers, peers))
    }) {
        return Ok(());
    }
    let (registered, (r, w)) = counts();
    bail!(
        "the hub did not settle at {peers} connections within {SETTLE_DEADLINE:?}: \
         {registered} registered, {r} reader and {w} writer threads"
    )
}

/// Opens `conns` idle connections into the hub, one after another, and returns
/// their sockets, which must stay open for as long as the connections should.
fn open_idle(
    hub: SocketAddr,
    conns: usize,
    config: &Config,
    fd_limit: Option<u64>,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<TcpStream>> {
    let mut idle = Vec::with_capacity(conns);
    for i in 0..conns {
        match handshake(hub, PeerId(FIRST_IDLE + i as u64), config) {
            Ok(stream) => idle.push(stream),
            Err(e) => bail!(explain(i, conns, fd_limit, &e)),
        }
        bar.inc(1);
    }
    Ok(idle)
}

fn limit_text(limit: Option<u64>) -> String {
    limit.map_or("unlimited".to_owned(), |l| l.to_string())
}

/// Says why opening idle connection `i` failed, naming file descriptors when they
/// ran out: `connect` then fails with "too many open files" here, or the hub's
/// `accept` does, which this side sees as a hub that never answers.
fn explain(i: usize, conns: usize, fd_limit: Option<u64>, e: &io::Error) -> String {
    let what = format!("idle connection {} of {conns}: {e}", i + 1);
    // Listing the open descriptors takes one too, so failing to is a sign as well;
    // `accept`, `connect` and a few library calls may need some 8 at once.
    let near_limit = |limit| procfs::open_fds().map_or(true, |open| open as u64 + 8 >= limit);
    if !procfs::is_out_of_fds(e) && !fd_limit.is_some_and(near_limit) {
        return what;
    }
    format!(
        "{what}: too many open files. Each idle connection takes two descriptors in this \
         process (the client's socket and the hub's), so {conns} connections need about {} \
         against a limit of {}; raise it with `ulimit -n` or use fewer --conns",
        2 * conns + 32,
        limit_text(fd_limit)
    )
}

/// Connects to the hub as peer `id` and completes wirelane's handshake by hand:
/// Hello out, the hub's Hello in, Holds out, the hub's Verdict in, Accept out, the
/// hub's last Accept in.
/// Each step may take the handshake timeout.
fn handshake(hub: SocketAddr, id: PeerId, config: &Config) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&hub, config.connect_timeout)?;
    stream.set_write_timeout(Some(config.handshake_timeout))?;
    stream.set_read_timeout(Some(config.handshake_timeout))?;
    // Any incarnation will do: each idle client is a distinct peer and never returns.
    stream.write_all(&hello_frame(id, id.0 ^ 0x5CA1_E000, config.max_frame_len))?;
    let (kind, theirs) = read_frame(&mut stream)?;
    if kind != FrameKind::Hello || !wirelane::__fuzz::hello(&theirs) {
        return Err(io::Error::other(format!(
            "unexpected {kind:?} from the hub: {theirs:02x?}"
        )));
    }
    let expect = |stream: &mut TcpStream, want: FrameKind| match read_frame(stream)? {
        (kind, _) if kind == want => Ok(()),
        (kind, payload) => Err(io::Error::other(format!(
            "the hub refused the handshake: {kind:?} {payload:02x?}"
        ))),
    };
    let mut holds = Vec::with_capacity(HEADER_LEN + 16);
    encode(&mut holds, FrameKind::Holds, &[0; 16]); // no other connection to the hub
    stream.write_all(&holds)?;
    expect(&mut stream, FrameKind::Verdict)?;
    let mut accept = Vec::with_capacity(HEADER_LEN);
    encode_header(&mut accept, FrameKind::Accept, 0);
    stream.write_all(&accept)?;
    expect(&mut stream, FrameKind::Accept)?;
    Ok(stream)
}

/// Reads one frame of the handshake, naming a read that ran into the timeout as
/// such (the socket reports it as "would block").
fn read_frame(stream: &mut TcpStream) -> io::Result<(FrameKind, Vec<u8>)> {
    let timed_out = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            "the hub did not answer the handshake in time",
        ),
        _ => e,
    };
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).map_err(timed_out)?;
    // A handshake frame is small; anything larger is not one.
    let header = decode_header(&header, 1024)
        .map_err(|e| io::Error::other(format!("a bad frame header from the hub: {e}")))?
        .ok_or_else(|| io::Error::other("a short frame header"))?;
    let mut payload = vec![0u8; header.len as usize];
    stream.read_exact(&mut payload).map_err(timed_out)?;
    Ok((header.kind, payload))
}

/// Runs a throughput measurement `repeat` times and keeps the fastest run.
fn best_of(
    repeat: u64,
    mut measure: impl FnMut() -> anyhow::Result<Record>,
) -> anyhow::Result<Record> {
    let mut best = None;
    for _ in 0..repeat {
        oneway::keep_faster(&mut best, measure()?);
    }
    best.context("--repeat is at least 1")
}

/// One real client node sends `count` private `size`-byte messages to the hub from
/// one thread while this thread drains them, as `throughput` does. The client is
/// shut down before this returns.
fn one_way(hub: &Node, size: usize, count: u64) -> anyhow::Result<Record> {
    let client = Arc::new(Node::bind(CLIENT, "127.0.0.1:0", Config::default())?);
    let peer = client.connect(hub.local_addr())?;
    if peer != HUB {
        bail!("dialled the hub but reached {peer}");
    }
    let run = oneway::wirelane(
        hub,
        std::slice::from_ref(&client),
        size,
        count,
        Lane::Private,
    );
    client.shutdown();
    let (received, elapsed) = run?;
    Ok(oneway::record("wirelane", size, received, elapsed))
}
