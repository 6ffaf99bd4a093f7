//! `scale`: what idle connections cost a node, and whether many of them slow down
//! the one that is busy.
//!
//! wirelane spends two threads per connection, so a node's cost grows with its
//! peers even when they say nothing. This job opens `--conns` idle connections into
//! one node (the hub) and reads, from the hub's process alone, the threads and
//! resident memory they added, the CPU the hub spends keeping them alive, and how
//! long opening them all took; then it measures the throughput of one real client
//! among them, against the same client alone.
//!
//! The idle peers live in a child process (`idle-peers`, see [`crate::idle`]): one
//! process holding both ends of 10,000 connections needs 20,000 descriptors, and
//! its figures would mix the two ends. They answer every ping, so the hub runs with
//! the default ping interval and silence timeout, as a real node would. The child is
//! killed and reaped on any error, and every wait has a deadline.

use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use indicatif::ProgressBar;
use wirelane::{Config, Event, Lane, Node, PeerId};

use crate::child::Driven;
use crate::limits;
use crate::oneway::{self, default_count};
use crate::procfs::{self, MemorySplit, Usage};
use crate::report::{progress, Output, Record};

/// The hub's id: the lowest, so that it arbitrates every handshake.
const HUB: PeerId = PeerId(1);
const CLIENT: PeerId = PeerId(2);
const FIRST_IDLE: u64 = 1_000;
/// Descriptors and threads the run needs besides one per connection: the hub's
/// listener and acceptor, the client node of the throughput runs, the child's
/// pipes, the standard streams.
const FD_SLACK: u64 = 128;
const THREAD_SLACK: u64 = 64;
/// Longest wait for the child to start, and for it to answer `stats`.
const CHILD_STEP: Duration = Duration::from_secs(30);
/// Longest the connect storm may take, per thousand connections (the child gives up
/// after five minutes in all).
const OPEN_PER_THOUSAND: Duration = Duration::from_secs(30);
/// Longest wait for the hub to register every connection and start its threads, or
/// to retire them all, once the child has finished its side.
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);
/// How often the hub's peer count is read while it settles.
const SETTLE_POLL: Duration = Duration::from_millis(50);
/// Pause between the storm and the idle window, so that the window sees the steady
/// state and not the end of the storm.
const CALM: Duration = Duration::from_secs(3);

/// N idle connections into one node, from another process: threads, resident
/// memory and idle CPU per connection, the time to open them, and the throughput
/// of one active connection alone and among them.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Idle connections.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
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
    /// Seconds over which the hub's CPU is measured with every connection idle:
    /// longer than the silence timeout (10 s), so that a peer that did not answer
    /// pings would be declared dead within it.
    #[arg(long, default_value = "12", value_parser = crate::cli::seconds)]
    idle_secs: Duration,
    /// The hub's ping interval, instead of the default `Config`'s 2 s; its silence
    /// timeout is five times it, as in the default. An idle connection costs the
    /// node a ping written and a pong read per interval.
    #[arg(long, value_parser = crate::cli::seconds)]
    ping: Option<Duration>,
    /// Handshakes the child runs at once during the connect storm; at most the
    /// node's `max_handshakes` (64), which drops the oldest handshake beyond it.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=64))]
    dialers: u64,
    /// The hub's lanes allocated when each connection opens (the default `Config`),
    /// instead of growing with what they hold (`Config::lanes_grow`, the setting
    /// for a node with many idle peers).
    #[arg(long)]
    fixed_lanes: bool,
}

/// The figures of the node's process, taken with and without the idle peers.
struct Figures {
    before: Usage,
    after: Usage,
    split_before: MemorySplit,
    split_after: MemorySplit,
    /// From the first dial to the hub running every connection's threads.
    connect: Duration,
    /// The child's own figure: from its first dial to its last handshake.
    handshakes: Duration,
    idle: Idle,
    fds: Option<usize>,
}

/// What the idle window measured.
struct Idle {
    window: Duration,
    /// The hub's process, user and system.
    cpu: Duration,
    /// The child's, answering pings.
    child_cpu: Option<Duration>,
    pongs: u64,
    /// Connections that ended meanwhile, as the hub saw them.
    disconnected: u64,
}

pub fn run(args: &Args, quiet: bool, out: Output) -> anyhow::Result<ExitCode> {
    let (conns, size, repeat) = (args.conns as usize, args.size, args.repeat);
    let count = args.count.unwrap_or_else(|| default_count(size));
    let checked = limits::check(args.conns + FD_SLACK, 2 * args.conns + THREAD_SLACK)?;
    // The default Config but for the connection limit, which would refuse peers
    // beyond 4,096, and lanes that grow with what they hold: the two settings a
    // node with many idle peers should change.
    let mut config = Config::default()
        .max_connections(conns + 16)
        .lanes_grow(!args.fixed_lanes);
    if let Some(ping) = args.ping {
        config = config.ping_interval(ping).silence_timeout(ping * 5);
    }
    let hub = Node::bind(HUB, "127.0.0.1:0", config.clone())?;

    // The client alone first, so that the figure with idle peers has its reference
    // from the same hub in the same run.
    let alone = best_of(repeat, || one_way(&hub, size, count)).context("the client alone")?;
    settle(&hub, 0, Instant::now() + SETTLE_DEADLINE)?;
    let mut child = IdlePeers::spawn(hub.local_addr(), args)?;
    let bar = progress("scale", Some(conns as u64), quiet);
    let measured = measure(&hub, &mut child, args, &config, &bar);
    bar.finish_and_clear();
    let figures = match measured {
        Ok(figures) => figures,
        Err(e) => {
            drop(child);
            hub.shutdown();
            return Err(e);
        }
    };
    let crowded = best_of(repeat, || one_way(&hub, size, count))
        .with_context(|| format!("the client among {conns} idle peers"));
    // Closing the peers first lets the hub see each one's end at once, instead of
    // lingering for peers that will never answer its close.
    let finished = child.finish();
    let settled = settle(&hub, 0, Instant::now() + SETTLE_DEADLINE);
    hub.shutdown();
    drop(checked.raised);
    let crowded = crowded?;
    finished?;
    settled?;

    let records = records(args, count, &alone, &crowded, &figures);
    out.table(
        &format!(
            "scale: {conns} idle connections into one node (from another process), then {count} {size}-byte private messages over one more (best of {repeat})"
        ),
        &records,
        &COLUMNS,
    );
    for note in checked
        .notes
        .iter()
        .cloned()
        .chain(notes(args, &config, &figures, &alone, &crowded))
    {
        out.note(&note);
    }
    let problems = problems(args, &figures);
    Ok(out.verdict(&problems))
}

/// Opens the idle connections and takes every figure but the crowded throughput.
fn measure(
    hub: &Node,
    child: &mut IdlePeers,
    args: &Args,
    config: &Config,
    bar: &ProgressBar,
) -> anyhow::Result<Figures> {
    let conns = args.conns as usize;
    child.wait_line(
        Instant::now() + CHILD_STEP,
        "the idle peers to start",
        |l| l == "waiting",
    )?;
    let before = procfs::usage()?;
    let split_before = procfs::stack_split(config.thread_stack_size)?;

    let began = Instant::now();
    child.command("go")?;
    let open_deadline = began + OPEN_PER_THOUSAND * (args.conns.div_ceil(1000) as u32);
    let ready = child.wait_line(open_deadline, "the connect storm", |line| {
        if let Some(n) = line.strip_prefix("progress ").and_then(|n| n.parse().ok()) {
            bar.set_position(n);
        }
        line.starts_with("ready ")
    })?;
    let handshakes = ready
        .split_whitespace()
        .nth(2)
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis)
        .ok_or_else(|| anyhow!("a bad line from the idle peers: `{ready}`"))?;
    bar.set_position(conns as u64);
    if let Err(e) = settle(hub, conns, Instant::now() + SETTLE_DEADLINE) {
        // Connections the hub closed meanwhile are the likely reason.
        let closed = child.stats().map_or(0, |(_, closed)| closed);
        bail!("{e:#}; the hub closed {closed} of the connections the peers had opened");
    }
    let connect = began.elapsed();
    let after = procfs::usage()?;
    let split_after = procfs::stack_split(config.thread_stack_size)?;
    let fds = procfs::open_fds().ok();

    // The idle window: every connection up, nothing but pings and pongs.
    thread::sleep(CALM);
    let _ = hub.events().try_iter().count();
    let (pongs_before, _) = child.stats()?;
    let (cpu_before, child_before) = (procfs::cpu_time(None)?, child.cpu());
    let window_began = Instant::now();
    thread::sleep(args.idle_secs);
    let (cpu_after, child_after) = (procfs::cpu_time(None)?, child.cpu());
    let window = window_began.elapsed();
    let (pongs_after, _) = child.stats()?;
    let disconnected = hub
        .events()
        .try_iter()
        .filter(|e| matches!(e, Event::Disconnected { .. }))
        .count() as u64;
    let idle = Idle {
        window,
        cpu: cpu_after.saturating_sub(cpu_before),
        child_cpu: child_before
            .zip(child_after)
            .map(|(b, a)| a.saturating_sub(b)),
        pongs: pongs_after.saturating_sub(pongs_before),
        disconnected: disconnected + (conns - hub.stats().peers.min(conns)) as u64,
    };
    Ok(Figures {
        before,
        after,
        split_before,
        split_after,
        connect,
        handshakes,
        idle,
        fds,
    })
}

/// The columns of the table; `--json` prints every key.
const COLUMNS: [(&str, &str); 9] = [
    ("conns", "conns"),
    ("threads_per_conn", "threads/conn"),
    ("rss_kib_per_conn", "KiB/conn"),
    ("stack_kib_per_conn", "stack KiB/conn"),
    ("other_kib_per_conn", "other KiB/conn"),
    ("idle_cpu_pct", "idle CPU %"),
    ("connect_s", "connect s"),
    ("msgs_per_s", "msgs/s"),
    ("vs_alone_pct", "% of alone"),
];

fn records(args: &Args, count: u64, alone: &Record, crowded: &Record, f: &Figures) -> Vec<Record> {
    let n = args.conns as f64;
    let per_conn = |after: u64, before: u64| (after as f64 - before as f64) / n;
    let window = f.idle.window.as_secs_f64().max(1e-9);
    let base = |conns: u64| {
        Record::new("scale", "wirelane")
            .set("conns", conns)
            .set("size", args.size as u64)
            .set("count", count)
    };
    vec![
        base(0)
            .set("threads", f.before.threads as u64)
            .set("rss_kib", f.before.rss_kib)
            .set("msgs_per_s", alone.rate()),
        base(args.conns)
            .set("threads", f.after.threads as u64)
            .set(
                "threads_per_conn",
                per_conn(f.after.threads as u64, f.before.threads as u64),
            )
            .set("rss_kib", f.after.rss_kib)
            .set(
                "rss_kib_per_conn",
                per_conn(f.after.rss_kib, f.before.rss_kib),
            )
            .set(
                "stack_kib_per_conn",
                per_conn(f.split_after.stack_kib, f.split_before.stack_kib),
            )
            .set(
                "other_kib_per_conn",
                per_conn(f.split_after.other_kib, f.split_before.other_kib),
            )
            .set("idle_secs", window)
            .set("idle_cpu_pct", 100.0 * f.idle.cpu.as_secs_f64() / window)
            .set("pongs", f.idle.pongs)
            .set("connect_s", f.connect.as_secs_f64())
            .set("conns_per_s", n / f.connect.as_secs_f64().max(1e-9))
            .set("handshakes_s", f.handshakes.as_secs_f64())
            .set("msgs_per_s", crowded.rate())
            .set(
                "vs_alone_pct",
                100.0 * crowded.rate() / alone.rate().max(f64::MIN_POSITIVE),
            ),
    ]
}

fn notes(
    args: &Args,
    config: &Config,
    f: &Figures,
    alone: &Record,
    crowded: &Record,
) -> Vec<String> {
    let n = args.conns as f64;
    let window = f.idle.window.as_secs_f64().max(1e-9);
    let rss_per_conn = (f.after.rss_kib as f64 - f.before.rss_kib as f64) / n;
    let cpu_pct = 100.0 * f.idle.cpu.as_secs_f64() / window;
    let vs_alone = 100.0 * crowded.rate() / alone.rate().max(f64::MIN_POSITIVE);
    let threads = (f.after.threads as f64 - f.before.threads as f64) / n;
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut notes = vec![
        format!(
            "the hub: Config::default() but max_connections = {} (the default, 4096, refuses more peers) and lanes_grow = {}{}; \
             ping_interval {:?}, silence_timeout {:?}, thread_stack_size {} KiB (reserved address space; only touched pages are resident)",
            config.max_connections,
            config.lanes_grow,
            if args.ping.is_some() { " (and the ping interval of --ping)" } else { "" },
            config.ping_interval,
            config.silence_timeout,
            config.thread_stack_size / 1024
        ),
        format!(
            "memory and threads are the hub's process alone, with no connection and then with {} idle ones \
             (the peers are a child process that answers every ping with a pong); \
             stack and other split the resident memory by mapping (`/proc/self/smaps`)",
            args.conns
        ),
        format!(
            "idle: over {window:.1} s the hub's process used {:.2} s of CPU ({cpu_pct:.2}% of one core); \
             the peers answered {} pings{}; {} connections ended",
            f.idle.cpu.as_secs_f64(),
            f.idle.pongs,
            f.idle
                .child_cpu
                .map(|c| format!(" using {:.2} s of CPU", c.as_secs_f64()))
                .unwrap_or_default(),
            f.idle.disconnected
        ),
        format!(
            "connect storm: {} connections in {:.2} s ({:.0}/s) with {} handshakes at a time; \
             the peers' last handshake finished at {:.2} s",
            args.conns,
            f.connect.as_secs_f64(),
            n / f.connect.as_secs_f64().max(1e-9),
            args.dialers,
            f.handshakes.as_secs_f64()
        ),
        format!(
            "throughput of one client: {:.0} msgs/s alone, {:.0} msgs/s with {} idle peers ({vs_alone:.0}%)",
            alone.rate(),
            crowded.rate(),
            args.conns
        ),
    ];
    if let Some(fds) = f.fds {
        let limit = procfs::open_files_limit().map_or("unlimited".to_owned(), |l| l.to_string());
        notes.push(format!(
            "open file descriptors in the hub's process with every connection up: {fds} (limit {limit})"
        ));
    }
    notes.push(format!(
        "targets: <= 48 KiB per idle connection: {rss_per_conn:.1} ({}); 2 threads per connection: {threads:.2} ({}); \
         idle CPU <= 5% of a core: {cpu_pct:.2}% ({}); one active connection >= 80% of alone: {vs_alone:.0}% ({})",
        met(rss_per_conn <= 48.0),
        met((threads - 2.0).abs() < 0.01),
        met(cpu_pct <= 5.0),
        met(vs_alone >= 80.0)
    ));
    notes
}

/// What makes the run a failure: connections that died while idle (the pongs did
/// not keep them alive), or a window in which no ping was answered.
fn problems(args: &Args, f: &Figures) -> Vec<String> {
    let mut problems = Vec::new();
    if f.idle.disconnected > 0 {
        problems.push(format!(
            "{} of {} idle connections ended during the idle window",
            f.idle.disconnected, args.conns
        ));
    }
    if f.idle.pongs == 0 {
        problems.push("no ping was answered during the idle window".to_owned());
    }
    problems
}

/// Waits until the hub has exactly `peers` connections registered and every one of
/// them has its reader and writer thread running, and no other connection thread is
/// left: only then do the process's threads and memory show what those
/// connections cost.
///
/// A connection is registered during its handshake, before its writer starts, so
/// the peer count alone would be read too early; the threads are counted by name
/// (which reads a file per thread, so only once the count is right).
fn settle(hub: &Node, peers: usize, deadline: Instant) -> anyhow::Result<()> {
    let mut seen = (usize::MAX, (0, 0));
    loop {
        let registered = hub.stats().peers;
        if registered == peers {
            let names = procfs::thread_names().unwrap_or_default();
            let threads = procfs::conn_threads(&names, HUB);
            if threads == (peers, peers) {
                return Ok(());
            }
            seen = (registered, threads);
        } else {
            seen.0 = registered;
        }
        if Instant::now() >= deadline {
            let (registered, (r, w)) = seen;
            bail!(
                "the hub did not settle at {peers} connections by its deadline: \
                 {registered} registered, {r} reader and {w} writer threads"
            );
        }
        thread::sleep(SETTLE_POLL);
    }
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

/// The `idle-peers` child. Dropping it kills and reaps it.
struct IdlePeers(Driven);

impl IdlePeers {
    fn spawn(node: SocketAddr, args: &Args) -> anyhow::Result<IdlePeers> {
        let exe = std::env::current_exe().context("the bench's own path")?;
        let mut command = Command::new(exe);
        command
            .arg("idle-peers")
            .arg(format!("--node={node}"))
            .arg(format!("--conns={}", args.conns))
            .arg(format!("--first-id={FIRST_IDLE}"))
            .arg(format!("--dialers={}", args.dialers));
        Ok(IdlePeers(Driven::spawn("the idle peers", command)?))
    }

    fn command(&mut self, line: &str) -> anyhow::Result<()> {
        self.0.command(line)
    }

    fn wait_line(
        &mut self,
        deadline: Instant,
        what: &str,
        done: impl FnMut(&str) -> bool,
    ) -> anyhow::Result<String> {
        self.0.wait_line(deadline, what, done)
    }

    /// Pongs sent and connections closed so far.
    fn stats(&mut self) -> anyhow::Result<(u64, u64)> {
        self.command("stats")?;
        let line = self.wait_line(Instant::now() + CHILD_STEP, "its stats", |l| {
            l.starts_with("stats ")
        })?;
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.parse::<u64>().ok())
        };
        match (field("pongs="), field("closed=")) {
            (Some(pongs), Some(closed)) => Ok((pongs, closed)),
            _ => Err(anyhow!("a bad line from the idle peers: `{line}`")),
        }
    }

    fn cpu(&self) -> Option<Duration> {
        procfs::cpu_time(Some(self.0.pid())).ok()
    }

    /// Closes its stdin, which closes every connection, and waits for it to exit.
    fn finish(mut self) -> anyhow::Result<()> {
        let status = self.0.finish(Instant::now() + CHILD_STEP)?;
        if status.success() {
            Ok(())
        } else {
            Err(self.0.failed(&format!("it exited with {status}")))
        }
    }
}
