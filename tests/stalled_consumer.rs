//! The application stops reading `incoming()` for three seconds — three times the
//! silence timeout — while its peer keeps sending on both lanes: gossip that finds
//! the inbound queue full is dropped and counted (`gossip.recv_dropped` grows);
//! private data waits (the peer's `send` blocks on a full lane, and nothing private
//! is dropped); every private message arrives, in order, once the consumer resumes;
//! and no one is declared dead, because time spent waiting for the application is
//! not the peer's silence.

mod util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use util::{config, connect, finishes, node_with, tagged, untag, wait_until, GUARD};
use wirelane::{Event, Lane, Node, PeerId, TrySendError};

/// The inbound queue of the stalled node.
const INBOUND: usize = 64;
/// Gossip sent in a burst at the start of the stall: more than the queue holds.
const BURST: u32 = INBOUND as u32 + 200;
/// How long the consumer stays away once the sender is blocked.
const STALL: Duration = Duration::from_secs(3);
/// The end of the private stream: carries the number of messages before it.
const END: u8 = 0xEE;

#[test]
fn a_stalled_consumer_drops_gossip_holds_private_data_and_stays_connected() {
    // Short ping and silence, so that a node that counted the stall as silence would
    // declare the peer dead three times over.
    let quick = config()
        .ping_interval(Duration::from_millis(100))
        .silence_timeout(Duration::from_secs(1));
    let sender = Arc::new(node_with(
        1,
        quick.clone().gossip_capacity(512).private_capacity(16),
    ));
    let stalled = node_with(2, quick.inbound_capacity(INBOUND));
    connect(&sender, &stalled);
    let to = PeerId(2);

    // The stall starts now: nothing below reads `stalled.incoming()` until it ends.

    // A burst of gossip, all of which fits the sender's lane: the first INBOUND fill
    // the stalled node's queue and the rest are dropped on arrival, and counted.
    for seq in 0..BURST {
        sender
            .try_send(to, tagged(1, seq, 32))
            .expect("the lane has room");
    }
    wait_until("the whole burst has arrived", || {
        let g = stalled.peer_stats(PeerId(1)).unwrap().gossip;
        g.received + g.recv_dropped == u64::from(BURST)
    });
    let g = stalled.peer_stats(PeerId(1)).unwrap().gossip;
    assert_eq!(g.received, INBOUND as u64, "the queue took what it holds");
    assert_eq!(g.recv_dropped, u64::from(BURST) - INBOUND as u64);

    // Then both lanes, continuously: private data from one thread (blocking sends),
    // gossip from another (never blocking; dropped when its lane is full).
    let stop = Arc::new(AtomicBool::new(false));
    let private = {
        let (sender, stop) = (sender.clone(), stop.clone());
        thread::spawn(move || {
            let mut seq = 0;
            while !stop.load(Ordering::SeqCst) {
                sender.send(to, tagged(1, seq, 1024)).expect("private send");
                seq += 1;
            }
            sender.send(to, tagged(END, seq, 8)).expect("end marker");
            seq
        })
    };
    let gossip = {
        let (sender, stop) = (sender.clone(), stop.clone());
        thread::spawn(move || {
            let (mut queued, mut full) = (0u64, 0u64);
            let mut seq = BURST;
            while !stop.load(Ordering::SeqCst) {
                match sender.try_send(to, tagged(1, seq, 32)) {
                    Ok(()) => queued += 1,
                    Err(TrySendError::Full(_)) => full += 1,
                    Err(e) => panic!("gossip: {e}"),
                }
                seq += 1;
                // Paces the gossip; nothing depends on the rate.
                thread::sleep(Duration::from_millis(1));
            }
            (queued, full)
        })
    };

    // Private data waits: the stalled node's reader holds a private frame it cannot
    // deliver, the socket buffers fill, the lane fills, and `send` blocks.
    wait_until("the private sender is blocked on a full lane", || {
        sender.peer_stats(to).unwrap().blocked_senders == 1
    });
    // The stall itself: the condition under test, not what decides the outcome.
    thread::sleep(STALL);
    let during = stalled.peer_stats(PeerId(1)).expect("still connected");
    assert_eq!(during.private.recv_dropped, 0);
    assert!(sender.is_connected(to), "the sender kept the connection");

    // The consumer resumes. Every private message arrives, in order, then the end.
    stop.store(true, Ordering::SeqCst);
    let mut next = 0u32;
    let mut gossip_seen = 0u64;
    let count = loop {
        let m = util::recv(stalled.incoming());
        assert_eq!(m.from, PeerId(1));
        match m.lane {
            Lane::Gossip => gossip_seen += 1,
            Lane::Private => match untag(&m.payload) {
                (END, count) => break count,
                (1, seq) => {
                    assert_eq!(seq, next, "lost, duplicated or reordered");
                    next += 1;
                }
                other => panic!("unexpected private message {other:?}"),
            },
            other => panic!("a message on the {other} lane, which nothing sent on"),
        }
    };
    assert_eq!(next, count, "every private message before the end arrived");
    let sent = finishes("the private sender", GUARD, move || private.join().unwrap());
    assert_eq!(sent, count);
    let (queued, full) = finishes("the gossip sender", GUARD, move || gossip.join().unwrap());
    assert!(count > 16, "the lane filled: {count} private messages");
    eprintln!(
        "stalled_consumer: {count} private messages held and delivered; gossip: {queued} queued, \
         {full} refused by the full lane, {} dropped on arrival",
        stalled.stats().gossip.recv_dropped
    );

    // Gossip: every message offered was sent or refused, and every frame that
    // arrived was delivered or dropped and counted. (Counters are added once per
    // batch, so they are waited for rather than read once.)
    let attempts = u64::from(BURST) + queued + full;
    wait_until(
        "every gossip message is accounted for on both sides",
        || {
            let (out, inb) = (sender.stats().gossip, stalled.stats().gossip);
            out.queued == 0
                && out.sent + out.dropped == attempts
                && inb.received + inb.recv_dropped == out.sent
        },
    );
    let g = stalled.stats().gossip;
    assert!(g.recv_dropped >= u64::from(BURST) - INBOUND as u64);
    for m in stalled.incoming().try_iter() {
        assert_eq!(
            m.lane,
            Lane::Gossip,
            "only gossip can follow the end marker"
        );
        gossip_seen += 1;
    }
    assert!(gossip_seen <= g.received);

    // Private data: everything sent and received (the end marker too), nothing
    // dropped on either side.
    wait_until("the private counters catch up", || {
        sender.stats().private.sent == u64::from(count) + 1
            && stalled.stats().private.received == u64::from(count) + 1
    });
    assert_eq!(stalled.stats().private.recv_dropped, 0);
    assert_eq!(sender.stats().private.dropped, 0);

    // No one was declared dead, or disconnected at all.
    for node in [&*sender, &stalled] {
        assert_connected_throughout(node);
    }
}

/// The node's only events are its connection's `Connected`, and it is still
/// connected.
fn assert_connected_throughout(node: &Node) {
    for e in node.events().try_iter() {
        assert!(
            matches!(e, Event::Connected { .. }),
            "{}: unexpected event during the stall: {e:?}",
            node.id()
        );
    }
    assert_eq!(node.peers().len(), 1, "{}", node.id());
}
