//! A node whose application stops taking messages keeps its connection working:
//! while B's consumer of `incoming()` is stalled and A floods B with private
//! `send`s, B's own requests to A still get their replies in time, pings keep the
//! connection alive well past ten silence timeouts, and A's gossip keeps being read
//! (and dropped and counted, once the gossip places in B's queue are taken). When
//! the consumer resumes, every private message arrives once, in order.
//!
//! What makes it work is flow control: B grants A a window of private messages, and
//! A's writer sends no more until B's application takes some; so B's reader never
//! waits for the application. Before it, B's reader waited for room in a full
//! inbound queue and stopped reading the socket: the replies to B's requests sat
//! unread behind A's flood, and the requests timed out.

mod util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use util::{config, connect, node_with, recv, tagged, untag, wait_until, GUARD};
use wirelane::{Config, Event, Lane};

const WINDOW: usize = 16;
const FLOOD: u32 = 3000;
const GOSSIP: u32 = 100;
const SILENCE: Duration = Duration::from_millis(200);

fn quick(config: Config) -> Config {
    config
        .silence_timeout(SILENCE)
        .ping_interval(Duration::from_millis(40))
        .private_window(WINDOW)
        .inbound_capacity(8)
}

#[test]
fn a_stalled_consumer_keeps_replies_pings_and_gossip_flowing() {
    let a = Arc::new(node_with(1, quick(config())));
    let b = Arc::new(node_with(2, quick(config())));
    let peer_b = connect(&a, &b);
    let peer_a = a.id();
    let conn = b.peer_stats(peer_a).expect("connected").conn;

    // A answers every request on its receive loop.
    let stop = Arc::new(AtomicBool::new(false));
    let responder = {
        let (a, stop) = (a.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok(m) = a.incoming().recv_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                if m.lane == Lane::Request {
                    let body = m.payload.to_vec();
                    a.respond(&m, body).expect("respond");
                }
            }
        })
    };
    // A floods B, which takes nothing for now.
    let flood = {
        let a = a.clone();
        thread::spawn(move || {
            for seq in 0..FLOOD {
                a.send(peer_b, tagged(1, seq, 64)).expect("send");
            }
        })
    };
    wait_until("A's writer holds a message for B's window", || {
        a.peer_stats(peer_b).is_some_and(|s| s.window_closed)
    });
    wait_until("A's flood is blocked in send", || {
        a.peer_stats(peer_b).is_some_and(|s| s.blocked_senders == 1)
    });

    // Gossip keeps being read: the first few take B's gossip places, the rest are
    // dropped on receipt and counted.
    for seq in 0..GOSSIP {
        a.try_send(peer_b, tagged(1, seq, 16))
            .expect("gossip lane has room");
    }
    wait_until("B has read every gossip message A sent", || {
        let g = b.peer_stats(peer_a).map(|s| s.gossip).unwrap_or_default();
        g.received + g.recv_dropped == u64::from(GOSSIP)
    });
    let gossip = b.peer_stats(peer_a).unwrap().gossip;
    assert_eq!((gossip.received, gossip.recv_dropped), (8, 92));

    // For ten silence timeouts, B's requests are answered in time. Time decides
    // nothing here but how long the stall lasts; each request has its own deadline.
    let until = Instant::now() + SILENCE * 10;
    let mut asked = 0u32;
    while Instant::now() < until || asked < 20 {
        let body = format!("question {asked}").into_bytes();
        let reply = b
            .request(peer_a, body.clone(), Duration::from_secs(5))
            .expect("a reply while B's consumer is stalled");
        assert_eq!(&reply[..], &body[..]);
        asked += 1;
    }
    let stats = b
        .peer_stats(peer_a)
        .expect("still connected after the stall");
    assert_eq!(stats.conn, conn, "the connection was never replaced");
    assert!(!stats.reader_waiting);
    assert!(
        a.peer_stats(peer_b).unwrap().window_closed,
        "the flood still waits for B's window"
    );
    while let Ok(e) = b.events().try_recv() {
        assert!(
            !matches!(e, Event::Disconnected { .. }),
            "B lost A during the stall: {e:?}"
        );
    }

    // The consumer resumes: every private message, once, in order.
    let mut next = 0;
    let deadline = Instant::now() + GUARD;
    while next < FLOOD {
        let m = recv(b.incoming());
        assert!(
            Instant::now() < deadline,
            "the flood did not arrive in time"
        );
        if m.lane != Lane::Private {
            continue;
        }
        assert_eq!(untag(&m.payload), (1, next), "out of order or repeated");
        next += 1;
    }
    flood.join().expect("the flood");
    let private = b.peer_stats(peer_a).unwrap().private;
    assert_eq!(
        (private.received, private.recv_dropped),
        (u64::from(FLOOD), 0)
    );
    let waited = a.peer_stats(peer_b).unwrap().window_wait;
    assert!(
        waited >= SILENCE * 10,
        "A's writer waited {waited:?} for B's window in all"
    );
    assert!(a.peer_stats(peer_b).unwrap().to_string().contains("window"));
    // The flood's sends that found the lane full waited, one of them the whole
    // stall: the histogram of send waits has it.
    let waits = a.stats().send_wait;
    assert!(
        waits.count >= 1 && waits.quantile(1.0) >= Some(SILENCE * 10),
        "{waits:?}"
    );
    stop.store(true, Ordering::SeqCst);
    responder.join().expect("the responder");
}
