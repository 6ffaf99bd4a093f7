//! A peer process killed with SIGKILL in the middle of a frame, while private
//! messages are queued for it: the surviving node reports the disconnection with an
//! I/O error, hands back every queued private message in `Event::Undelivered` (each
//! message it was offered was written, handed back, or refused by `send` — exactly
//! once, in order), and goes on serving its other peers.
//!
//! The peer is `wirelane-bench peer` in a child process, a real wirelane node that
//! never reads its inbound queue and holds one large payload at most
//! (`--inbound-bytes`): the second large gossip payload it is sent stops its reader
//! before it is allocated, so the survivor's writer stays inside that write, and
//! nothing it is sent can drain.

mod fault;
// The library's own test helpers: one copy, public API only.
#[path = "../../../tests/util/mod.rs"]
mod util;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;

use fault::{unread_bytes, PeerProcess};
use util::{connect, event, finishes, node_with, tagged, unbufferable, untag, wait_until, GUARD};
use wirelane::{DisconnectReason, Event, Lane, PeerId, SendError};

/// A gossip payload large enough to be read into a buffer of its own, and the
/// whole of the peer's budget for such payloads.
const LARGE: usize = 1 << 20;
const CAPACITY: usize = 4;

#[test]
fn a_peer_killed_mid_frame_is_reported_its_queue_handed_back_and_others_served() {
    let huge = unbufferable();
    // The survivor's gossip lane takes both large payloads; its private lane holds 4.
    let survivor = Arc::new(node_with(
        1,
        util::config()
            .private_capacity(CAPACITY)
            .gossip_lane_bytes(2 * huge),
    ));
    // A bystander, connected before the fault and still served after it.
    let other = node_with(3, util::config());
    connect(&other, &survivor);

    let mut child = PeerProcess::start(
        "killed peer",
        None,
        &[
            "--listen=127.0.0.1:0".into(),
            "--id=2".into(),
            "--read=none".into(),
            format!("--inbound-bytes={LARGE}"),
            format!("--max-frame={huge}"),
        ],
    );
    assert_eq!(
        survivor.connect(child.addr).expect("dial the peer"),
        PeerId(2)
    );
    let conn = survivor.peer_stats(PeerId(2)).expect("connected");

    // Survivor -> peer: a large gossip payload fills the peer's budget; the next,
    // larger than every socket buffer between the two, stops the peer's reader at
    // its header, and the survivor's writer inside its write, for good.
    survivor.try_send(PeerId(2), tagged(1, 0, LARGE)).unwrap();
    survivor.try_send(PeerId(2), tagged(1, 1, huge)).unwrap();
    wait_until(
        "the peer's reader has stopped inside the huge frame",
        || {
            unread_bytes(conn.peer_addr, conn.local_addr).is_some_and(|n| n >= 64 * 1024)
                && survivor
                    .peer_stats(PeerId(2))
                    .is_some_and(|s| s.gossip.sent == 1 && s.gossip.queued == 1)
        },
    );

    // Then private messages, until the lane is full and the sender blocked for good:
    // on message CAPACITY, with 0 to CAPACITY - 1 in the lane.
    let attempting = Arc::new(AtomicU32::new(0));
    let sender = {
        let (survivor, attempting) = (survivor.clone(), attempting.clone());
        thread::spawn(move || {
            for seq in 0.. {
                attempting.store(seq, Ordering::SeqCst);
                if let Err(e) = survivor.send(PeerId(2), tagged(1, seq, 16)) {
                    return (seq, e);
                }
            }
            unreachable!()
        })
    };
    wait_until("the sender is blocked for good on a full lane", || {
        attempting.load(Ordering::SeqCst) == CAPACITY as u32
            && survivor
                .peer_stats(PeerId(2))
                .is_some_and(|s| s.blocked_senders == 1)
    });

    // Peer -> survivor: two small frames, delivered at once (the survivor's reader
    // never waits for its application).
    child.command("send 2 16");
    child.wait_line("the small frames queued", |l| l == "sent 2");
    wait_until("the survivor has received both", || {
        survivor
            .peer_stats(PeerId(2))
            .is_some_and(|s| s.private.received == 2)
    });

    let unread = unread_bytes(conn.peer_addr, conn.local_addr).unwrap_or_default();
    child.kill();

    // The peer died with unread data in its socket (the survivor's huge frame), so
    // its kernel answers with a reset, not a FIN. The kernel reports a reset to one
    // system call only: to the survivor's reader, waiting for bytes, or to its
    // writer, inside its write. If the writer takes it, the reader's next read finds
    // a plain end of stream and may record it first, as the peer having closed: the
    // reader never stops reading now, so which one wins is a race.
    let Event::Undelivered { peer, messages, .. } =
        event(&survivor, "the queue handed back", |e| {
            matches!(e, Event::Undelivered { .. })
        })
    else {
        unreachable!()
    };
    assert_eq!(peer, PeerId(2));
    let ended = event(&survivor, "the disconnection", |e| {
        matches!(e, Event::Disconnected { .. })
    });
    let Event::Disconnected { peer, reason, .. } = &ended else {
        unreachable!()
    };
    assert_eq!(*peer, PeerId(2));
    match reason {
        DisconnectReason::Io(error) => assert!(
            matches!(
                error.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ),
            "{error}"
        ),
        DisconnectReason::ClosedByPeer => {}
        other => panic!("expected the reset or the end it leaves, got {other:?}"),
    }
    eprintln!(
        "fault_sigkill: killed with {unread} bytes of the survivor's frame unread there; survivor saw: {reason}"
    );

    // The blocked sender got out. Usually with its message CAPACITY in a
    // `Disconnected` error; but the writer, whose failed write closed the connection,
    // drains the lane at once, and a slot freed by that drain is as ready to the
    // blocked sender as the close signal: if it takes the slot, `send` returns `Ok`,
    // the message is drained with the rest and comes back in `Undelivered`, and the
    // next send finds no connection. Either way the accounting below is exact.
    let (refused, err) = finishes("the blocked sender wakes", GUARD, move || {
        sender.join().unwrap()
    });
    let blocked = CAPACITY as u32;
    match (refused, &err) {
        (r, SendError::Disconnected(_)) if r == blocked => {}
        (r, SendError::NotConnected(_)) if r == blocked + 1 => {}
        _ => panic!("message {refused} refused with {err:?}"),
    }
    assert_eq!(untag(&err.into_inner()), (1, refused));

    // Accounting, with the connection over (so the counters are exact): each message
    // offered was written, handed back or refused, exactly once.
    let stats = survivor.stats();
    let written = stats.private.sent as u32;
    assert_eq!(
        written, 0,
        "the writer never got past the huge gossip frame"
    );
    assert_eq!(stats.private.dropped, 0, "no private message lost");
    assert_eq!(stats.private.queued, 0);
    let returned: Vec<u32> = messages.iter().map(|m| untag(m).1).collect();
    assert_eq!(
        returned,
        (written..refused).collect::<Vec<_>>(),
        "oldest first"
    );
    let mut all = BTreeSet::new();
    for seq in (0..written)
        .chain(returned.iter().copied())
        .chain([refused])
    {
        assert!(all.insert(seq), "message {seq} accounted twice");
    }
    assert_eq!(all, (0..=refused).collect(), "every message accounted for");

    // What the survivor received from the peer: both frames, delivered.
    for seq in 0..2 {
        let m = util::recv(survivor.incoming());
        assert_eq!((m.from, m.lane), (PeerId(2), Lane::Private));
        assert_eq!(untag(&m.payload), (2, seq));
    }
    assert_eq!((stats.private.received, stats.private.recv_dropped), (2, 0));

    // The survivor goes on serving its other peer, both ways.
    assert_eq!(survivor.peers(), vec![PeerId(3)]);
    for seq in 0..100 {
        other.send(PeerId(1), tagged(3, seq, 64)).unwrap();
        survivor.send(PeerId(3), tagged(1, seq, 64)).unwrap();
        let m = util::recv(survivor.incoming());
        assert_eq!((m.from, untag(&m.payload)), (PeerId(3), (3, seq)));
        let m = util::recv(other.incoming());
        assert_eq!((m.from, untag(&m.payload)), (PeerId(1), (1, seq)));
    }
    assert!(other.is_connected(PeerId(1)));
}
