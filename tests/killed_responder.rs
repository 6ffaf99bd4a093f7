//! A responder process killed (SIGKILL) with 100 requests pending: every one of them
//! fails with `Disconnected` promptly, long before its deadline.
//!
//! A peer that dies without a word (no close frame, no unanswered replies, its
//! application gone) is the case the requester cannot be told about by the peer;
//! the requester's node must notice the socket end and fail every waiting request
//! at once.
//!
//! The responder runs in a child process: this same test executable, run with
//! `RESPONDER_ENV` set and `--exact child_responder`, so that the `#[test]` of that
//! name acts as the child.

mod util;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use util::{node, wait_until, GUARD};
use wirelane::{Message, PeerId, RequestError};

const RESPONDER_ENV: &str = "WIRELANE_KILLED_RESPONDER_CHILD";
const ADDR_MARK: &str = "WIRELANE_CHILD_ADDR=";
const HELD_MARK: &str = "WIRELANE_CHILD_HELD=";
const PENDING: usize = 100;
const DEADLINE: Duration = Duration::from_secs(60);
const PROMPT: Duration = Duration::from_secs(15);

/// The child's side: binds, says where, holds every request it reads, never
/// answers. Ends by itself after a while in case the parent died without killing
/// it. Run as a plain test (without the variable) it does nothing.
#[test]
fn child_responder() {
    if std::env::var_os(RESPONDER_ENV).is_none() {
        return;
    }
    let node = node(2);
    println!("\n{ADDR_MARK}{}", node.local_addr());
    let mut held: Vec<Message> = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(300);
    while Instant::now() < give_up {
        if let Ok(m) = node.incoming().recv_timeout(Duration::from_secs(1)) {
            held.push(m);
            println!("\n{HELD_MARK}{}", held.len());
        }
    }
}

/// Kills and reaps the child however the test ends.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a line of the child's carrying `mark`; returns what follows it.
fn wait_for(lines: &mpsc::Receiver<String>, mark: &str) -> String {
    let deadline = Instant::now() + GUARD;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(at) = line.find(mark) {
                    return line[at + mark.len()..].trim().to_string();
                }
            }
            Err(e) => panic!("the child never printed {mark}: {e}"),
        }
    }
}

#[test]
fn requests_to_a_killed_responder_fail_disconnected_promptly() {
    if std::env::var_os(RESPONDER_ENV).is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("current test executable");
    let mut child = Reaper(
        Command::new(exe)
            .args([
                "--exact",
                "child_responder",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(RESPONDER_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child responder"),
    );
    let (tx, lines) = mpsc::channel();
    let stdout = child.0.stdout.take().expect("child stdout");
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let addr: SocketAddr = wait_for(&lines, ADDR_MARK).parse().expect("child address");
    let a = Arc::new(node(1));
    let peer = a.connect(addr).expect("connect to the child");
    assert_eq!(peer, PeerId(2));

    let requesters: Vec<_> = (0..PENDING)
        .map(|i| {
            let a = a.clone();
            thread::spawn(move || {
                let result = a.request(peer, format!("request {i}").into_bytes(), DEADLINE);
                (i, result, Instant::now())
            })
        })
        .collect();
    // All 100 written, and all 100 held by the child's application.
    wait_until("every request is written", || {
        a.peer_stats(peer)
            .is_some_and(|s| s.requests.sent == PENDING as u64)
    });
    loop {
        if wait_for(&lines, HELD_MARK) == PENDING.to_string() {
            break;
        }
    }

    let killed = Instant::now();
    child.0.kill().expect("SIGKILL the child");
    for t in requesters {
        let (i, result, at) = t.join().expect("requester");
        let waited = at.saturating_duration_since(killed);
        assert!(
            waited < PROMPT,
            "request {i} failed {waited:?} after the kill"
        );
        match result {
            Err(RequestError::Disconnected(payload)) => {
                assert_eq!(payload, format!("request {i}").into_bytes())
            }
            other => panic!("request {i}: expected Disconnected, got {other:?}"),
        }
    }
    // Every request counted once, as failed. The connection's counts move to the
    // node's totals when it ends; a count added after that would be lost.
    let deadline = Instant::now() + PROMPT;
    while a.stats().requests.failed != PENDING as u64 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(2));
    }
    let r = a.stats().requests;
    assert_eq!(
        (r.sent, r.failed, r.answered, r.unanswered, r.timed_out),
        (PENDING as u64, PENDING as u64, 0, 0, 0),
        "{r:?}"
    );
    drop(child);
    reader.join().expect("stdout reader");
}
