//! `peer --listen ADDR --id N [options]`: a scriptable wirelane node in its own
//! process, for the fault tests in `tests/fault_*.rs`, which kill it, cut its network
//! or starve it. Not a benchmark.
//!
//! It listens, and reports on stdout, one line each (flushed at once):
//!
//! - `listening ADDR` once bound;
//! - `connected PEER CONN`, `undelivered PEER N`, `disconnected PEER REASON` (the
//!   reason in its `Debug` form, e.g. `Dead`), `refused ADDR ERROR` as events come;
//! - `sent N` when a `send` command has queued all its messages, or
//!   `send-failed SEQ ERROR` when one is refused (the rest of that command is
//!   skipped);
//! - `report PEER ranges=A-B,C-D backwards=N` in answer to `report PEER`.
//!
//! It reads commands from stdin, one a line:
//!
//! - `send COUNT SIZE`: queues COUNT private messages of SIZE bytes to the connected
//!   peer, on a sender thread (commands run in order). Each payload starts with the
//!   low byte of this node's id and a big-endian `u32` sequence number, counted
//!   across commands from 0 (the tests' `util::tagged` layout).
//! - `report PEER`: the sequence numbers of the private messages received from PEER,
//!   as ranges (`0-100` is 0 to 99; a gap starts a new range), and how many arrived
//!   again or after a higher one (duplicated or reordered), as [`Track`] counts them.
//!
//! The payload layout is the tests' own, so that they need nothing but wirelane's
//! public API to talk to this peer. With `--read none` it never takes a message from
//! its inbound queue: its window closes and its peer's private sends back up, and
//! with a small `--inbound-bytes` its reader stops at the first large gossip
//! payload that does not fit, so its peer's writes back up in the socket. It exits when stdin closes, so a test that dies takes its peer
//! with it.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use clap::ValueEnum;

use wirelane::crossbeam_channel::{never, select, unbounded, Receiver};
use wirelane::{Config, Event, Lane, Message, Node, PeerId};

use crate::cli;
use crate::stamp::Track;
use crate::threads;

/// A scriptable peer for the fault tests, not a benchmark: reports its events on
/// stdout, takes commands on stdin (`send COUNT SIZE`, `report PEER`), exits when
/// stdin closes.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    node: crate::cli::Listen,
    /// `none`: never take a message from the inbound queue.
    #[arg(long, value_enum, default_value_t = Read::All)]
    read: Read,
    /// Config::inbound_capacity.
    #[arg(long)]
    inbound: Option<usize>,
    /// Config::inbound_bytes.
    #[arg(long)]
    inbound_bytes: Option<usize>,
    /// Config::private_window.
    #[arg(long)]
    window: Option<usize>,
    /// Config::max_frame_len.
    #[arg(long)]
    max_frame: Option<u32>,
    /// Config::private_capacity.
    #[arg(long)]
    private_capacity: Option<usize>,
    /// Config::ping_interval, in milliseconds.
    #[arg(long)]
    ping_ms: Option<u64>,
    /// Config::silence_timeout, in milliseconds.
    #[arg(long)]
    silence_ms: Option<u64>,
    /// Config::linger, in milliseconds.
    #[arg(long)]
    linger_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Read {
    All,
    None,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let ms = |v: Option<u64>| v.map(Duration::from_millis);
    let mut config = Config::default();
    config = cli::set(config, args.inbound, Config::inbound_capacity);
    config = cli::set(config, args.inbound_bytes, Config::inbound_bytes);
    config = cli::set(config, args.window, Config::private_window);
    config = cli::set(config, args.private_capacity, Config::private_capacity);
    config = cli::set(config, args.max_frame, Config::max_frame_len);
    config = cli::set(config, ms(args.ping_ms), Config::ping_interval);
    config = cli::set(config, ms(args.silence_ms), Config::silence_timeout);
    config = cli::set(config, ms(args.linger_ms), Config::linger);
    let (listen, id) = (&args.node.listen, PeerId(args.node.id));
    let node = Node::bind(id, listen.as_str(), config)?;
    println!("listening {}", node.local_addr());
    let commands = stdin_lines();
    let (jobs, job_rx) = unbounded::<(u64, usize)>();
    thread::scope(|s| {
        thread::Builder::new()
            .name("peer-sender".to_owned())
            .spawn_scoped(s, || sender(&node, &job_rx))?;
        let mut seen: BTreeMap<PeerId, Track> = BTreeMap::new();
        let none = never::<Message>();
        let incoming = match args.read {
            Read::All => node.incoming(),
            Read::None => &none,
        };
        loop {
            select! {
                recv(incoming) -> msg => {
                    let Ok(msg) = msg else { break };
                    if msg.lane == Lane::Private && msg.payload.len() >= 5 {
                        let seq = u32::from_be_bytes([
                            msg.payload[1], msg.payload[2], msg.payload[3], msg.payload[4],
                        ]);
                        seen.entry(msg.from).or_default().observe(u64::from(seq));
                    }
                }
                recv(node.events()) -> event => match event {
                    Ok(event) => print_event(&event),
                    Err(_) => break,
                },
                recv(commands) -> line => {
                    // Stdin closed: the test is done, or gone.
                    let Ok(line) = line else { std::process::exit(0) };
                    let words: Vec<&str> = line.split_whitespace().collect();
                    match words[..] {
                        ["send", count, size] => match (count.parse(), size.parse()) {
                            (Ok(count), Ok(size)) => {
                                let _ = jobs.send((count, size));
                            }
                            _ => eprintln!("peer: bad command `{line}`"),
                        },
                        ["report", peer] => match peer.parse() {
                            Ok(peer) => {
                                let t = seen.get(&PeerId(peer)).cloned().unwrap_or_default();
                                let ranges: Vec<String> =
                                    t.ranges().iter().map(|(a, b)| format!("{a}-{b}")).collect();
                                println!(
                                    "report {peer} ranges={} backwards={}",
                                    ranges.join(","),
                                    t.duplicates + t.reordered
                                );
                            }
                            Err(_) => eprintln!("peer: bad command `{line}`"),
                        },
                        _ => eprintln!("peer: unknown command `{line}`"),
                    }
                }
            }
        }
        drop(jobs);
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Lines of stdin; the channel disconnects at end of input. The reading thread is
/// never joined: it waits in a read of stdin, and the process exits when stdin
/// closes.
fn stdin_lines() -> Receiver<String> {
    let (tx, rx) = unbounded();
    threads::start("peer-stdin", move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs `send` commands in order, numbering messages across them.
fn sender(node: &Node, jobs: &Receiver<(u64, usize)>) {
    let mut seq: u32 = 0;
    for (count, size) in jobs {
        let mut failed = false;
        for _ in 0..count {
            let mut payload = vec![0u8; size.max(5)];
            payload[0] = node.id().0 as u8;
            payload[1..5].copy_from_slice(&seq.to_be_bytes());
            let result = match node.peers().first() {
                Some(&peer) => node.send(peer, payload).map_err(|e| e.to_string()),
                None => Err("not connected".to_owned()),
            };
            if let Err(e) = result {
                println!("send-failed {seq} {e}");
                failed = true;
                break;
            }
            seq += 1;
        }
        if !failed {
            println!("sent {count}");
        }
    }
}

fn print_event(event: &Event) {
    match event {
        Event::Connected { peer, conn, .. } => println!("connected {} {conn}", peer.0),
        Event::Undelivered { peer, messages, .. } => {
            println!("undelivered {} {}", peer.0, messages.len());
        }
        Event::Disconnected { peer, reason, .. } => {
            println!("disconnected {} {reason:?}", peer.0);
        }
        Event::Refused { addr, error } => println!("refused {addr} {error}"),
        _ => {}
    }
}
