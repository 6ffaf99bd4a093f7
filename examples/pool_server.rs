//! A thread-pool server built on wirelane: one node, a `Dispatcher` spreading what it
//! receives over a pool of workers (each peer's messages in order on one worker),
//! gossip counted, private messages logged, requests answered with `respond`.
//!
//! ```text
//! cargo run --example pool_server -- --listen 127.0.0.1:7000 [--id 1] [--workers 4]
//! cargo run --example pool_server -- --self-test
//! ```
//!
//! `--self-test` starts the server and three clients in this process, sends gossip,
//! private messages and requests from each, checks every reply and count, shuts
//! down, and exits 0 if all held (1 otherwise).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use wirelane::{Config, Dispatcher, Lane, Message, Node, PeerId};

/// What the handlers saw, for the self-test and the server's summary.
#[derive(Default)]
struct Seen {
    gossip: AtomicU64,
    private: AtomicU64,
    answered: AtomicU64,
}

/// The server's handler: runs on the pool's workers.
fn handle(node: &Node, seen: &Seen, m: Message) {
    match m.lane {
        Lane::Gossip => {
            seen.gossip.fetch_add(1, Relaxed);
        }
        Lane::Request => {
            // An answer of the request's own length: "ok:" and the request.
            let mut reply = b"ok:".to_vec();
            reply.extend_from_slice(&m.payload);
            if node.respond(&m, reply).is_ok() {
                seen.answered.fetch_add(1, Relaxed);
            }
        }
        _ => {
            seen.private.fetch_add(1, Relaxed);
        }
    }
}

/// A running server: its node, its pool, and what its handlers saw.
type Server = (Arc<Node>, Dispatcher, Arc<Seen>);

fn start(listen: &str, id: u64, workers: usize) -> Result<Server, Box<dyn std::error::Error>> {
    let node = Arc::new(Node::bind(PeerId(id), listen, Config::default())?);
    let seen = Arc::new(Seen::default());
    let pool = Dispatcher::builder()
        .workers(workers)
        .name("pool")
        .spawn(&node, {
            let (node, seen) = (node.clone(), seen.clone());
            move |m| handle(&node, &seen, m)
        })?;
    Ok((node, pool, seen))
}

fn self_test() -> Result<(), String> {
    const CLIENTS: u64 = 3;
    const EACH: u64 = 500;
    let (server, pool, seen) = start("127.0.0.1:0", 1, 4).map_err(|e| e.to_string())?;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let addr = server.local_addr();
            thread::spawn(move || -> Result<(), String> {
                let c = Node::bind(PeerId(10 + i), "127.0.0.1:0", Config::default())
                    .map_err(|e| e.to_string())?;
                let peer = c.connect(addr).map_err(|e| e.to_string())?;
                for n in 0..EACH {
                    let body = format!("{i}:{n}").into_bytes();
                    c.send(peer, body.clone()).map_err(|e| e.to_string())?;
                    // Gossip may be dropped; it is only counted.
                    let _ = c.try_send(peer, body.clone());
                    let reply = c
                        .request(peer, body.clone(), Duration::from_secs(10))
                        .map_err(|e| format!("request {i}:{n}: {e}"))?;
                    if reply[..] != [b"ok:".as_slice(), &body].concat()[..] {
                        return Err(format!("wrong reply to {i}:{n}"));
                    }
                }
                c.shutdown();
                Ok(())
            })
        })
        .collect();
    for c in clients {
        c.join().map_err(|_| "a client panicked".to_owned())??;
    }
    // Private messages are counted by the handler a moment after the replies that
    // followed them were sent: wait for the counts, within a guard.
    let want = CLIENTS * EACH;
    for _ in 0..1000 {
        if seen.private.load(Relaxed) == want {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    server.shutdown();
    pool.join();
    let (private, answered) = (seen.private.load(Relaxed), seen.answered.load(Relaxed));
    println!(
        "pool_server self-test: {private} private, {answered} requests answered, {} gossip",
        seen.gossip.load(Relaxed)
    );
    if private != want || answered != want {
        return Err(format!("expected {want} private and {want} answered"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    if args.iter().any(|a| a == "--self-test") {
        return match self_test() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pool_server self-test failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let listen = value("--listen").unwrap_or_else(|| "127.0.0.1:7000".to_owned());
    let id = value("--id").and_then(|v| v.parse().ok()).unwrap_or(1);
    let workers = value("--workers").and_then(|v| v.parse().ok()).unwrap_or(4);
    let (node, _pool, seen) = match start(&listen, id, workers) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("pool_server: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "pool_server: {} listening on {}",
        node.id(),
        node.local_addr()
    );
    loop {
        thread::sleep(Duration::from_secs(10));
        println!(
            "{} private, {} requests answered, {} gossip; {}",
            seen.private.load(Relaxed),
            seen.answered.load(Relaxed),
            seen.gossip.load(Relaxed),
            node.stats()
        );
    }
}
