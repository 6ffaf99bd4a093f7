//! A peer process killed with SIGKILL in the middle of a frame, while private
//! messages are queued for it: the surviving node reports the disconnection with an
//! I/O error, hands back every queued private message in `Event::Undelivered` (each
//! message it was offered was written, handed back, or refused by `send` — exactly
//! once, in order), and goes on serving its other peers.
//!
//! The peer is `wirelane-bench peer` in a child process, a real wirelane node that
//! never reads its inbound queue, so that nothing it is sent can drain.

mod fault;
// The library's own test helpers: one copy, public API only.
#[path = "../../../tests/util/mod.rs"]
mod util;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::sync::Arc;

use fault::{unread_bytes, PeerProcess};
use util::{
    connect, event, finishes, node_with, silent_receiver, stuck_sender, tagged, unbufferable,
    untag, wait_until, GUARD,
};
use wirelane::{DisconnectReason, Event, Lane, PeerId, SendError};

#[test]
fn a_peer_killed_mid_frame_is_reported_its_queue_handed_back_and_others_served() {
    let huge = unbufferable();
    // The survivor never reads until the kill (inbound queue of 1), and admits the
    // peer's huge frame; its private lane holds 4.
    let survivor = Arc::new(node_with(1, silent_receiver().private_capacity(4)));
    // A bystander, connected before the fault and still served after it.
    let other = node_with(3, util::config());
    connect(&other, &survivor);

    // The peer: an inbound queue of 1 that it never reads, and a frame limit that
    // admits the survivor's huge message.
    let mut child = PeerProcess::start(
        "killed peer",
        None,
        &[
            "--listen=127.0.0.1:0".into(),
            "--id=2".into(),
            "--read=none".into(),
            "--inbound=1".into(),
            format!("--max-frame={huge}"),
        ],
    );
    assert_eq!(
        survivor.connect(child.addr).expect("dial the peer"),
        PeerId(2)
    );

    // Survivor -> peer: messages 0 and 1 small, 2 larger than every socket buffer
    // between the two, then the lane fills: the sender is blocked for good on 7, with
    // 3..=6 in the lane and the writer stuck inside its write of 2.
    let sender = stuck_sender(&survivor, PeerId(2), 4);
    assert_eq!(sender.blocked_on, 7);

    // Peer -> survivor: two small frames, then one larger than every buffer. The
    // survivor's reader delivers frame 0, then waits for room to deliver frame 1 and
    // reads nothing more, so the peer's writer can never finish frame 2.
    child.command("send 2 16");
    child.command(&format!("send 1 {huge}"));
    child.wait_line("the small frames queued", |l| l == "sent 2");
    child.wait_line("the huge frame queued", |l| l == "sent 1");
    let conn = survivor.peer_stats(PeerId(2)).expect("connected");
    // Bytes of frame 2 are arriving: more than pings and frame 1 could ever be are
    // waiting, unread, in the survivor's socket. So the peer is in the middle of
    // frame 2, where it stays.
    wait_until("the peer is in the middle of its huge frame", || {
        unread_bytes(conn.local_addr, conn.peer_addr).is_some_and(|n| n >= 64 * 1024)
    });
    wait_until(
        "the survivor's reader holds frame 0 for the application",
        || survivor.incoming().is_full(),
    );

    let unread = unread_bytes(conn.local_addr, conn.peer_addr).unwrap_or_default();
    child.kill();

    // The peer died with unread data in its socket (the survivor's messages), so its
    // kernel answers with a reset, not a FIN. The survivor's writer is blocked inside
    // the write of message 2 and is the first to hear of it: the write fails with
    // ECONNRESET and that is the reason recorded. (Its reader is not reading: it is
    // waiting for room to deliver frame 1; and were it reading, it would first get
    // the bytes still buffered, not the error.) Never `ClosedByPeer`: no close frame
    // came, and the stream ended inside a frame.
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
    let Event::Disconnected {
        peer,
        reason: DisconnectReason::Io(error),
        ..
    } = &ended
    else {
        panic!("expected an I/O error, got {ended:?}")
    };
    assert_eq!(*peer, PeerId(2));
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    eprintln!(
        "fault_sigkill: killed with {unread} bytes of its frame unread here; survivor saw: {error}"
    );

    // The blocked sender got out. Usually with its message 7 in a `Disconnected`
    // error; but the writer, whose failed write closed the connection, drains the
    // lane at once, and a slot freed by that drain is as ready to the blocked sender
    // as the close signal: if it takes the slot, `send` returns `Ok`, message 7 is
    // drained with the rest and comes back in `Undelivered`, and the next send, 8,
    // finds no connection. Either way the accounting below is exact.
    let (refused, err) = finishes("the blocked sender wakes", GUARD, move || {
        sender.thread.join().unwrap()
    });
    match (refused, &err) {
        (7, SendError::Disconnected(_)) | (8, SendError::NotConnected(_)) => {}
        _ => panic!("message {refused} refused with {err:?}"),
    }
    assert_eq!(untag(&err.into_inner()), (1, refused));

    // Accounting, with the connection over (so the counters are exact): each message
    // offered was written, handed back or refused, exactly once.
    let stats = survivor.stats();
    let written = stats.private.sent as u32;
    assert_eq!(written, 2, "messages 0 and 1; 2 never fully left");
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

    // What the survivor received from the peer: frame 0, delivered; frame 1, which
    // its reader held when the connection died, is counted as discarded.
    let m = util::recv(survivor.incoming());
    assert_eq!((m.from, m.lane), (PeerId(2), Lane::Private));
    assert_eq!(untag(&m.payload), (2, 0));
    assert_eq!(stats.private.received, 1);
    assert!(stats.private.recv_dropped <= 1, "{stats}");

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
