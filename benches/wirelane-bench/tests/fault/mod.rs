//! Helpers for the fault tests: a wirelane peer in a child process (the bench's
//! `peer` subcommand), driven through its stdin and stdout.
//!
//! Every wait has the guard deadline of `util::GUARD`; a child is killed and reaped
//! when its handle is dropped, also when a test fails.
#![allow(dead_code)]

pub mod netns;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use crate::util::GUARD;

/// The bench binary, which has the `peer` subcommand.
pub const BENCH: &str = env!("CARGO_BIN_EXE_wirelane-bench");

/// A `wirelane-bench peer` child process. Dropping it kills and reaps it.
pub struct PeerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every stdout line so far, and whether a wait has taken it.
    history: Vec<(String, bool)>,
    /// The address it listens on.
    pub addr: SocketAddr,
    name: String,
}

impl PeerProcess {
    /// Starts `peer` with `args` (after the subcommand), optionally inside a network
    /// namespace (`ip netns exec NS`), and waits for it to listen.
    pub fn start(name: &str, netns: Option<&str>, args: &[String]) -> PeerProcess {
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BENCH]);
                c
            }
            None => Command::new(BENCH),
        };
        command
            .arg("peer")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BENCH} peer: {e}"));
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Its log lines go through the test's own stderr, so that the harness shows
        // them with a failing test only.
        let stderr = child.stderr.take().expect("piped stderr");
        let tag = name.to_owned();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{tag}] {line}");
            }
        });
        let mut peer = PeerProcess {
            child,
            stdin,
            lines,
            history: Vec::new(),
            addr: "0.0.0.0:0".parse().unwrap(),
            name: name.to_owned(),
        };
        let line = peer.wait_line("its listening address", |l| l.starts_with("listening "));
        peer.addr = line["listening ".len()..]
            .parse()
            .unwrap_or_else(|e| panic!("{name}: bad address in `{line}`: {e}"));
        peer
    }

    /// Sends one command line.
    pub fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: cannot send `{line}`: {e}", self.name));
    }

    /// Waits for a stdout line that matches and that no earlier wait took, and takes
    /// it. Lines that do not match stay in the history for later waits.
    #[track_caller]
    pub fn wait_line(&mut self, what: &str, mut matches: impl FnMut(&str) -> bool) -> String {
        if let Some(entry) = self
            .history
            .iter_mut()
            .find(|(line, taken)| !*taken && matches(line))
        {
            entry.1 = true;
            return entry.0.clone();
        }
        let deadline = Instant::now() + GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = matches(&line);
                    self.history.push((line.clone(), hit));
                    if hit {
                        return line;
                    }
                }
                Err(e) => {
                    let history = self.history();
                    panic!(
                        "{}: no line for {what} within {GUARD:?} ({e}); its output so far: {history:#?}",
                        self.name
                    )
                }
            }
        }
    }

    /// Every stdout line received so far (without waiting for more).
    pub fn history(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.try_recv() {
            self.history.push((line, false));
        }
        self.history.iter().map(|(l, _)| l.clone()).collect()
    }

    /// Asks for the report on `peer` and parses it: the runs of sequence numbers
    /// received, `[start, end)` in arrival order, and the count that went backwards.
    pub fn report(&mut self, peer: u64) -> (Vec<(u32, u32)>, u64) {
        self.command(&format!("report {peer}"));
        let prefix = format!("report {peer} ");
        let line = self.wait_line("a report", |l| l.starts_with(&prefix));
        let mut runs = Vec::new();
        let mut backwards = None;
        for word in line[prefix.len()..].split_whitespace() {
            if let Some(list) = word.strip_prefix("ranges=") {
                for run in list.split(',').filter(|r| !r.is_empty()) {
                    let (a, b) = run.split_once('-').expect("a-b");
                    runs.push((a.parse().unwrap(), b.parse().unwrap()));
                }
            } else if let Some(n) = word.strip_prefix("backwards=") {
                backwards = Some(n.parse().unwrap());
            }
        }
        (runs, backwards.expect("backwards= in the report"))
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the peer");
        self.child.wait().expect("reap the peer");
    }

    /// The process id (of the peer itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        // Closing stdin alone would make it exit, but a wedged peer must go too.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bytes the kernel holds for a TCP socket that its owner has not read yet (the
/// `rx_queue` column of `/proc/net/tcp`), found by its two addresses; `None` if
/// there is no such IPv4 socket.
pub fn unread_bytes(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    fn hex(addr: SocketAddr) -> String {
        let SocketAddr::V4(v4) = addr else {
            panic!("IPv4 only: {addr}")
        };
        // The kernel prints the address as the u32 it stores (network order) in
        // native order, and the port as a number.
        format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        )
    }
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let (_tx, rx) = fields.get(4)?.split_once(':')?;
        u64::from_str_radix(rx, 16).ok()
    })
}
