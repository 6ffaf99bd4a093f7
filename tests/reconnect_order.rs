//! A peer's messages keep their order across a reconnection: what it wrote on the old
//! connection is delivered before anything from the new one, and nothing is lost —
//! each message is either delivered or handed back to its sender.

mod util;

use std::time::Duration;

use util::{config, event, node_with, recv, tagged, untag, wait_until};
use wirelane::{Bytes, Event, Node, PeerId};

const OLD: u32 = 200;
const NEW: u32 = 50;

/// A connected to B; B does not read yet, so its reader stops once its inbound queue
/// is full and the rest waits in the socket buffers and in A's lane. Returns the
/// nodes and how many old messages A accepted.
fn backlog() -> (Node, Node, u32) {
    // Long lingers: the old connection must be allowed to finish delivering while
    // the application is not reading yet.
    let cfg = config().linger(Duration::from_secs(30));
    let a = node_with(1, cfg.clone().private_capacity(8));
    let b = node_with(2, cfg.inbound_capacity(4));
    a.connect(b.local_addr()).unwrap();
    // Sends until the pipeline is full: a send finds no room while B's reader waits
    // for room in its inbound queue. A send that finds no room while B's reader is
    // still reading is offered again, so a slow writer cannot end this early.
    let mut accepted = 0;
    'sending: for seq in 0..OLD {
        let mut msg: Bytes = tagged(b'o', seq, 512).into();
        loop {
            match a.send_timeout(PeerId(2), msg, Duration::from_millis(50)) {
                Ok(()) => break,
                Err(e) if e.is_timeout() => {
                    if b.peer_stats(PeerId(1)).is_some_and(|s| s.reader_waiting) {
                        break 'sending;
                    }
                    msg = e.into_inner();
                }
                Err(e) => panic!("{e}"),
            }
        }
        accepted += 1;
    }
    // Beyond A's lane: B's inbound queue, the one B's reader holds, and maybe more in
    // the socket buffers.
    assert!(
        accepted > 8 + 4,
        "the pipeline absorbed only {accepted} messages"
    );
    (a, b, accepted)
}

/// A closes its connection and reconnects at once, while B's old reader still has
/// messages to deliver, then sends the new messages.
fn reconnect_and_send(a: &Node, b: &Node) -> wirelane::ConnId {
    let old = a.peer_stats(PeerId(2)).unwrap().conn;
    assert!(a.disconnect(PeerId(2)));
    wait_until("A has reconnected", || {
        a.connect(b.local_addr()).is_ok() && a.peer_stats(PeerId(2)).is_some_and(|s| s.conn != old)
    });
    for seq in 0..NEW {
        a.send(PeerId(2), tagged(b'n', seq, 16)).unwrap();
    }
    old
}

/// B reads until every new message has arrived; checks that the old ones came first,
/// in order, and together with what A got back make up exactly what A accepted.
fn check(a: &Node, b: &Node, old_conn: wirelane::ConnId, accepted: u32) {
    let mut old = Vec::new();
    let mut new = Vec::new();
    while new.len() < NEW as usize {
        let (tag, seq) = untag(&recv(b.incoming()).payload);
        match tag {
            b'o' => {
                assert!(new.is_empty(), "old message {seq} after a new one");
                old.push(seq);
            }
            _ => new.push(seq),
        }
    }
    assert_eq!(new, (0..NEW).collect::<Vec<_>>());
    assert_eq!(old, (0..old.len() as u32).collect::<Vec<_>>());
    // What A got back is exactly the rest, in order.
    let returned: Vec<u32> = match event(
        a,
        "the old connection's end",
        |e| matches!(e, Event::Undelivered { conn, .. } | Event::Disconnected { conn, .. } if *conn == old_conn),
    ) {
        Event::Undelivered { messages, .. } => {
            messages.iter().map(|m: &Bytes| untag(m).1).collect()
        }
        _ => Vec::new(),
    };
    assert_eq!(returned, (old.len() as u32..accepted).collect::<Vec<_>>());
    assert_eq!(b.stats().private.recv_dropped, 0);
    assert!(b.incoming().is_empty());
}

#[test]
fn messages_from_the_old_connection_come_first_and_none_is_lost() {
    let (a, b, accepted) = backlog();
    let old = reconnect_and_send(&a, &b);
    check(&a, &b, old, accepted);
}

#[test]
fn a_replacement_closed_before_the_old_connection_finished_still_waits_its_turn() {
    let (a, b, accepted) = backlog();
    let old = reconnect_and_send(&a, &b);
    wait_until("A has written the new messages", || {
        a.peer_stats(PeerId(2))
            .is_some_and(|s| s.private.sent == u64::from(NEW))
    });
    // B closes the replacement, as an application or a dead-peer check might. Its
    // graceful close still delivers what A wrote on it, and must still wait for the
    // old connection's messages first. (The pause only gives a broken
    // implementation time to deliver out of turn; a correct one passes without it.)
    assert!(b.disconnect(PeerId(1)));
    std::thread::sleep(Duration::from_millis(200));
    check(&a, &b, old, accepted);
}
