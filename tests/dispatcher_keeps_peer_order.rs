//! The dispatcher spreads one node's messages over a pool of workers and keeps each
//! peer's order: three peers each send 2,000 private messages and 200 requests,
//! interleaved; every message is handled once, each peer's in the order it sent
//! them, though the handler runs on four threads; every request is answered from
//! the handler with `respond`.

mod util;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use util::{config, connect, finishes, node_with, tagged, untag, wait_until, GUARD};
use wirelane::{Dispatcher, Lane, Node, PeerId};

const PEERS: u64 = 3;
const PER_PEER: u32 = 2_000;
const REQUESTS: u32 = 200;

#[test]
fn each_peers_messages_are_handled_in_order_across_four_workers() {
    let server = Arc::new(node_with(1, config()));
    let seen: Arc<Mutex<Vec<(PeerId, u32, String)>>> = Arc::default();
    let pool = Dispatcher::builder()
        .workers(4)
        .queue(8)
        .name("pool")
        .spawn(&server, {
            let (server, seen) = (server.clone(), seen.clone());
            move |m| {
                let (_, seq) = untag(&m.payload);
                let worker = thread::current().name().unwrap_or("").to_owned();
                if m.lane == Lane::Request {
                    server.respond(&m, m.payload.clone()).expect("respond");
                } else {
                    seen.lock().unwrap().push((m.from, seq, worker));
                }
            }
        })
        .expect("spawn the pool");

    let clients: Vec<Arc<Node>> = (0..PEERS)
        .map(|i| Arc::new(node_with(10 + i, config())))
        .collect();
    let senders: Vec<_> = clients
        .iter()
        .map(|c| {
            connect(c, &server);
            let c = c.clone();
            thread::spawn(move || {
                let id = c.id().0 as u8;
                for seq in 0..PER_PEER {
                    c.send(PeerId(1), tagged(id, seq, 32)).expect("send");
                    if seq % (PER_PEER / REQUESTS) == 0 {
                        let body = tagged(id, seq, 8);
                        let reply = c
                            .request(PeerId(1), body.clone(), Duration::from_secs(30))
                            .expect("a reply from the handler");
                        assert_eq!(&reply[..], &body[..]);
                    }
                }
            })
        })
        .collect();
    for s in senders {
        finishes("a client", GUARD, move || s.join().expect("client"));
    }
    let total = PEERS * u64::from(PER_PEER);
    wait_until("every message is handled", || {
        pool.stats().handled == total + PEERS * u64::from(REQUESTS)
    });

    let seen = seen.lock().unwrap();
    let mut workers = BTreeSet::new();
    for peer in 0..PEERS {
        let from = PeerId(10 + peer);
        let mine: Vec<&(PeerId, u32, String)> = seen.iter().filter(|s| s.0 == from).collect();
        let seqs: Vec<u32> = mine.iter().map(|s| s.1).collect();
        assert_eq!(
            seqs,
            (0..PER_PEER).collect::<Vec<_>>(),
            "{from} out of order"
        );
        let on: BTreeSet<&str> = mine.iter().map(|s| s.2.as_str()).collect();
        assert_eq!(on.len(), 1, "{from} handled on {on:?}");
        assert!(on.iter().all(|w| w.starts_with("pool-")));
        workers.extend(on);
    }
    assert_eq!(pool.stats().panics, 0);
    pool.stop();
    assert!(
        server.is_connected(PeerId(10)),
        "stopping the pool leaves the node"
    );
}
