//! `scale`: what one idle connection costs a node, and whether many of them slow
//! down the one that is busy.
//!
//! wirelane spends two threads per connection, so a node's cost grows with its
//! peers even when they say nothing. This job opens `--conns` idle connections into
//! one hub node and reads, from `/proc/self`, the threads and resident memory they
//! added; then it measures the throughput of one real client among them, against
//! the same client alone (each the best of `--repeat` runs, default 3).
//!
//! The idle clients are raw TCP sockets in this process that complete wirelane's
//! handshake by hand (see `docs/wire-format.md`) and then never read or write
//! again. Real client nodes would add their own two threads per connection and
//! drown the hub's figure; raw sockets cost this process a file descriptor each and
//! nothing else. They take ids above the hub's, so the hub arbitrates: the client
//! sends its Hello, reads the hub's Hello and Accept, and answers Accept.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use wirelane::crossbeam_channel::RecvTimeoutError;
use wirelane::{Config, Lane, Node, PeerId};

use crate::baseline::{default_count, throughput_record, FILL};
use crate::cli::{positive, Args};
use crate::procfs;
use crate::progress::Progress;
use crate::report::{Output, Record};
use crate::threads;

/// The hub's id: the lowest, so that it arbitrates every handshake.
const HUB: PeerId = PeerId(1);
/// The active client, a real wirelane node.
const CLIENT: PeerId = PeerId(2);
/// Idle clients take ids from here up.
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
/// Longest the receiver waits for the next message before the run is stuck.
const STALL: Duration = Duration::from_secs(30);
/// Longest wait for the sender thread once the receiver has everything (or gave up).
const JOIN_DEADLINE: Duration = Duration::from_secs(10);
/// How often a settle wait checks its condition.
const POLL: Duration = Duration::from_millis(5);

/// `scale`.
pub fn run(args: &Args, out: Output) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let conns = positive("conns", args.get("conns", 1000)?)? as usize;
    let size: usize = args.get("size", 64)?;
    let count = positive("count", args.get("count", default_count(size))?)?;
    let repeat = positive("repeat", args.get("repeat", 3)?)?;
    args.finish(0)?;
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
    let before = Snapshot::take()?;

    // Read now: once descriptors run out, even `/proc/self/limits` cannot be opened.
    let fd_limit = procfs::open_files_limit();
    let progress = Progress::start("scale", Some(conns as u64), args.flag("quiet"));
    let opened = open_idle(hub.local_addr(), conns, &config, fd_limit, &progress);
    progress.finish();
    let idle = opened?;
    settle(&hub, conns)?;
    let after = Snapshot::take()?;
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
    let rate = |r: &Record| r.number("msgs_per_s").unwrap_or(0.0);
    let records = [
        Record::new("scale", "wirelane")
            .int("conns", 0)
            .int("threads", before.threads as u64)
            .int("rss_kib", before.rss_kib)
            .int("size", size as u64)
            .int("count", count)
            .float("msgs_per_s", rate(&alone)),
        Record::new("scale", "wirelane")
            .int("conns", conns as u64)
            .int("threads", after.threads as u64)
            .float("threads_per_conn", threads_per_conn)
            .int("rss_kib", after.rss_kib)
            .float("rss_kib_per_conn", rss_per_conn)
            .int("size", size as u64)
            .int("count", count)
            .float("msgs_per_s", rate(&crowded)),
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
        100.0 * rate(&crowded) / rate(&alone).max(f64::MIN_POSITIVE)
    ));
    out.note(&format!(
        "Config::thread_stack_size = {} KiB per connection thread (reserved address space; only touched pages count in rss_kib)",
        config.thread_stack_size / 1024
    ));
    if let Some(fds) = fds {
        let limit = procfs::open_files_limit().map_or("unlimited".to_owned(), |l| l.to_string());
        out.note(&format!(
            "open file descriptors with every connection up: {fds} (limit {limit})"
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Threads and resident memory of the whole process at one moment.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    threads: usize,
    rss_kib: u64,
}

impl Snapshot {
    fn take() -> io::Result<Snapshot> {
        Ok(Snapshot {
            threads: procfs::threads()?,
            rss_kib: procfs::rss_kib()?,
        })
    }
}

/// Waits until the hub has exactly `peers` connections registered and every one of
/// them has its reader and writer thread running, and no other connection thread is
/// left: only then do the process's threads and memory show what those
/// connections cost.
///
/// A connection is registered during its handshake, before its writer starts, so
/// the peer count alone would be read too early; the threads are counted by name.
fn settle(hub: &Node, peers: usize) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    let (readers, writers) = (format!("wl{}-r", HUB.0), format!("wl{}-w", HUB.0));
    loop {
        let registered = hub.stats().peers;
        let names = procfs::thread_names()?;
        let r = procfs::count_prefixed(&names, &readers);
        let w = procfs::count_prefixed(&names, &writers);
        if registered == peers && r == peers && w == peers {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the hub did not settle at {peers} connections within {SETTLE_DEADLINE:?}: \
                 {registered} registered, {r} reader and {w} writer threads"
            )
            .into());
        }
        thread::sleep(POLL);
    }
}

/// Opens `conns` idle connections into the hub, one after another, and returns
/// their sockets, which must stay open for as long as the connections should.
fn open_idle(
    hub: SocketAddr,
    conns: usize,
    config: &Config,
    fd_limit: Option<u64>,
    progress: &Progress,
) -> Result<Vec<TcpStream>, Box<dyn std::error::Error>> {
    let done = progress.counter();
    let mut idle = Vec::with_capacity(conns);
    for i in 0..conns {
        let id = PeerId(FIRST_IDLE + i as u64);
        let deadline = Instant::now() + config.handshake_timeout;
        match handshake(hub, id, config, deadline) {
            Ok(stream) => idle.push(stream),
            Err(e) => return Err(explain(i, conns, fd_limit, &e).into()),
        }
        done.fetch_add(1, Relaxed);
    }
    Ok(idle)
}

/// Says why opening idle connection `i` failed, naming file descriptors when they
/// ran out: `connect` then fails with "too many open files" here, or the hub's
/// `accept` does, which this side sees as a hub that never answers.
fn explain(i: usize, conns: usize, fd_limit: Option<u64>, e: &io::Error) -> String {
    let what = format!("idle connection {} of {conns}: {e}", i + 1);
    if procfs::is_out_of_fds(e) || procfs::fds_nearly_exhausted(fd_limit) {
        let limit = fd_limit.map_or("unlimited".to_owned(), |l| l.to_string());
        format!(
            "{what}: too many open files. Each idle connection takes two descriptors in this \
             process (the client's socket and the hub's), so {conns} connections need about {} \
             against a limit of {limit}; raise it with `ulimit -n` or use fewer --conns",
            2 * conns + 32
        )
    } else {
        what
    }
}

/// Connects to the hub as peer `id` and completes wirelane's handshake by hand:
/// Hello out, the hub's Hello and Accept in, Accept out.
fn handshake(
    hub: SocketAddr,
    id: PeerId,
    config: &Config,
    deadline: Instant,
) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&hub, config.connect_timeout)?;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "handshake deadline passed"))
    };
    stream.set_write_timeout(Some(left()?))?;
    stream.write_all(&hello(id, config.max_frame_len))?;

    let mut theirs = [0u8; HEADER + HELLO];
    stream.set_read_timeout(Some(left()?))?;
    stream.read_exact(&mut theirs).map_err(timed_out)?;
    let header_ok = theirs[..HEADER] == [0, 0, 0, HELLO as u8, KIND_HELLO, 0];
    let body_ok = theirs[HEADER..HEADER + 4] == *b"WRLN"
        && theirs[HEADER + 4..HEADER + 6] == [0, 1]
        && theirs[HEADER + 8..HEADER + 16] == HUB.0.to_be_bytes();
    if !header_ok || !body_ok {
        return Err(io::Error::other(format!(
            "unexpected hello from the hub: {theirs:02x?}"
        )));
    }

    let mut verdict = [0u8; HEADER];
    stream.set_read_timeout(Some(left()?))?;
    stream.read_exact(&mut verdict).map_err(timed_out)?;
    if verdict != [0, 0, 0, 0, KIND_ACCEPT, 0] {
        // A close frame carries one more byte: the reason code.
        let mut code = [0u8; 1];
        let code = stream.read_exact(&mut code).map(|()| code[0]).ok();
        return Err(io::Error::other(format!(
            "the hub refused the handshake: frame {verdict:02x?}, close code {code:?}"
        )));
    }
    stream.set_write_timeout(Some(left()?))?;
    stream.write_all(&[0, 0, 0, 0, KIND_ACCEPT, 0])?;
    Ok(stream)
}

/// Names a read that ran into the handshake deadline as such; the socket reports it
/// as "would block".
fn timed_out(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            "the hub did not answer the handshake in time",
        ),
        _ => e,
    }
}

/// Bytes in a frame header: length (u32), kind, flags.
const HEADER: usize = 6;
/// Bytes in a Hello payload.
const HELLO: usize = 60;
const KIND_HELLO: u8 = 1;
const KIND_ACCEPT: u8 = 2;

/// A whole Hello frame: magic, version 1, no capability flags, peer id, incarnation,
/// frame limit, nonce. All big-endian.
fn hello(id: PeerId, max_frame_len: u32) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER + HELLO);
    frame.extend_from_slice(&(HELLO as u32).to_be_bytes());
    frame.extend_from_slice(&[KIND_HELLO, 0]);
    frame.extend_from_slice(b"WRLN");
    frame.extend_from_slice(&1u16.to_be_bytes());
    frame.extend_from_slice(&0u16.to_be_bytes());
    frame.extend_from_slice(&id.0.to_be_bytes());
    // Any incarnation will do: each idle client is a distinct peer and never returns.
    frame.extend_from_slice(&(id.0 ^ 0x5CA1_E000_0000_0000).to_be_bytes());
    frame.extend_from_slice(&max_frame_len.to_be_bytes());
    // The nonce only matters with authentication, which the hub does not use here.
    frame.extend_from_slice(&[0x5C; 32]);
    frame
}

/// Runs a throughput measurement `repeat` times and keeps the fastest run: the
/// machine is shared, and the fastest run is the one least disturbed.
fn best_of(
    repeat: u64,
    mut measure: impl FnMut() -> Result<Record, Box<dyn std::error::Error>>,
) -> Result<Record, Box<dyn std::error::Error>> {
    let mut best = measure()?;
    for _ in 1..repeat {
        let run = measure()?;
        if run.number("msgs_per_s") > best.number("msgs_per_s") {
            best = run;
        }
    }
    Ok(best)
}

/// One real client node sends `count` private `size`-byte messages to the hub from
/// one thread while this thread drains them; times the first send to the last
/// receipt, as `throughput` does. The client is shut down before this returns.
fn one_way(hub: &Node, size: usize, count: u64) -> Result<Record, Box<dyn std::error::Error>> {
    let client = Arc::new(Node::bind(CLIENT, "127.0.0.1:0", Config::default())?);
    let peer = client.connect(hub.local_addr())?;
    if peer != HUB {
        return Err(format!("dialled the hub but reached {peer}").into());
    }
    let started = Instant::now();
    let sender = {
        let client = client.clone();
        threads::spawn("scale-sender".to_owned(), move || -> Result<(), String> {
            for _ in 0..count {
                // `send` waits for room; if the hub stalls, the receiver below gives
                // up and shuts the client down, which ends this wait with an error.
                client
                    .send(HUB, vec![FILL; size])
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        })?
    };
    let drained = drain(hub, count);
    let finished = Instant::now();
    if drained.is_err() {
        client.shutdown();
    }
    let sent = sender.join_by(Instant::now() + JOIN_DEADLINE);
    client.shutdown();
    drained?;
    sent?.map_err(|e| format!("the client's send failed: {e}"))?;
    Ok(throughput_record(
        "scale",
        "wirelane",
        size,
        count,
        finished - started,
    ))
}

/// Takes `count` private messages from the client off the hub's inbound queue.
fn drain(hub: &Node, count: u64) -> Result<(), String> {
    let mut received = 0u64;
    while received < count {
        // Take what is there without looking at the clock; only an empty queue waits.
        let msg = match hub.incoming().try_recv() {
            Ok(msg) => msg,
            Err(_) => match hub.incoming().recv_timeout(STALL) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "stalled after {received} of {count} messages: nothing for {STALL:?}"
                    ))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("the hub's inbound queue closed".to_owned())
                }
            },
        };
        if msg.from == CLIENT && msg.lane == Lane::Private {
            received += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_has_the_documented_layout() {
        let frame = hello(PeerId(0x0102), 1 << 20);
        assert_eq!(frame.len(), HEADER + HELLO);
        assert_eq!(&frame[..HEADER], &[0, 0, 0, 60, KIND_HELLO, 0]);
        assert_eq!(&frame[6..10], b"WRLN");
        assert_eq!(&frame[10..14], &[0, 1, 0, 0]);
        assert_eq!(&frame[14..22], &0x0102u64.to_be_bytes());
        assert_eq!(&frame[30..34], &(1u32 << 20).to_be_bytes());
    }
}
