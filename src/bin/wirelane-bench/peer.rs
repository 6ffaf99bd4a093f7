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
//!   as ranges in arrival order (`0-100` is 0 to 99; a gap starts a new range), and
//!   how many arrived at or below one already seen (duplicated or reordered).
//!
//! With `--read none` it never takes a message from its inbound queue, so its reader
//! stops once the queue is full and its peer's writes back up. It exits when stdin
//! closes, so a test that dies takes its peer with it.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::BufRead;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{never, select, unbounded, Receiver};
use wirelane::{Config, Event, Lane, Message, Node, PeerId};

use crate::cli::Args;

/// `peer`.
pub fn run(args: &Args, _out: crate::report::Output) -> Result<ExitCode, Box<dyn Error>> {
    let listen: String = args.require("listen")?;
    let id = PeerId(args.require("id")?);
    let read = args.choice("read", &["all", "none"], "all")? == "all";
    let mut config = Config::default();
    if let Some(n) = args.get_opt("inbound")? {
        config = config.inbound_capacity(n);
    }
    if let Some(n) = args.get_opt("private-capacity")? {
        config = config.private_capacity(n);
    }
    if let Some(n) = args.get_opt("max-frame")? {
        config = config.max_frame_len(n);
    }
    let ms = |name: &str| -> Result<Option<Duration>, Box<dyn Error>> {
        Ok(args.get_opt::<u64>(name)?.map(Duration::from_millis))
    };
    if let Some(d) = ms("ping-ms")? {
        config = config.ping_interval(d);
    }
    if let Some(d) = ms("silence-ms")? {
        config = config.silence_timeout(d);
    }
    if let Some(d) = ms("linger-ms")? {
        config = config.linger(d);
    }
    args.finish(0)?;

    let node = Node::bind(id, listen.as_str(), config)?;
    println!("listening {}", node.local_addr());
    let commands = stdin_lines();
    let (jobs, job_rx) = unbounded::<(u64, usize)>();
    thread::scope(|s| {
        s.spawn(|| sender(&node, &job_rx));
        let mut seen: BTreeMap<PeerId, Seen> = BTreeMap::new();
        let none = never::<Message>();
        let incoming = if read { node.incoming() } else { &none };
        loop {
            select! {
                recv(incoming) -> msg => {
                    let Ok(msg) = msg else { break };
                    if msg.lane == Lane::Private && msg.payload.len() >= 5 {
                        let seq = u32::from_be_bytes([
                            msg.payload[1], msg.payload[2], msg.payload[3], msg.payload[4],
                        ]);
                        seen.entry(msg.from).or_default().note(seq);
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
                                let s = seen.get(&PeerId(peer)).cloned().unwrap_or_default();
                                println!("report {peer} ranges={} backwards={}", s.ranges(), s.backwards);
                            }
                            Err(_) => eprintln!("peer: bad command `{line}`"),
                        },
                        _ => eprintln!("peer: unknown command `{line}`"),
                    }
                }
            }
        }
        drop(jobs);
    });
    Ok(ExitCode::SUCCESS)
}

/// Lines of stdin; the channel disconnects at end of input.
fn stdin_lines() -> Receiver<String> {
    let (tx, rx) = unbounded();
    thread::spawn(move || {
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

/// The sequence numbers received from one peer.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// Runs of consecutive numbers, `[start, end)`, in arrival order.
    runs: Vec<(u32, u32)>,
    /// Numbers at or below the highest seen so far: duplicates or reorderings.
    backwards: u64,
}

impl Seen {
    fn note(&mut self, seq: u32) {
        match self.runs.last_mut() {
            Some((_, end)) if seq == *end => *end += 1,
            Some((_, end)) if seq < *end => self.backwards += 1,
            _ => self.runs.push((seq, seq + 1)),
        }
    }

    fn ranges(&self) -> String {
        let runs: Vec<String> = self.runs.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        runs.join(",")
    }
}
