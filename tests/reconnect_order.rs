//! A peer's messages keep their order across a reconnection: what it wrote on the old
//! connection is delivered before anything from the new one, and nothing is lost —
//! each message is either delivered or handed back to its sender.

mod util;

use std::time::Duration;

use util::{config, event, node_with, recv, tagged, untag, wait_until};
use wirelane::{Event, PeerId};

const OLD: u32 = 200;
const NEW: u32 = 50;

#[test]
fn messages_from_the_old_connection_come_first_and_none_is_lost() {
    // Long lingers: the old connection must be allowed to finish delivering while the
    // application is not reading yet.
    let cfg = config().linger(Duration::from_secs(30));
    let a = node_with(1, cfg.clone().private_capacity(8));
    let b = node_with(2, cfg.inbound_capacity(4));
    let to_b = a.connect(b.local_addr()).unwrap();

    // B does not read yet: its reader stops once the inbound queue is full, the rest
    // waits in the socket buffers and in A's lane.
    let mut accepted = 0;
    for seq in 0..OLD {
        match a.send_timeout(to_b, tagged(b'o', seq, 512), Duration::from_millis(50)) {
            Ok(()) => accepted += 1,
            Err(e) if e.is_timeout() => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        accepted > 8,
        "the pipeline absorbed only {accepted} messages"
    );

    // A closes and reconnects at once; B's old reader still has messages to deliver.
    let old_conn = a.peer_stats(to_b).unwrap().conn;
    assert!(a.disconnect(to_b));
    let returned = match event(
        &a,
        "undelivered",
        |e| matches!(e, Event::Undelivered { conn, .. } | Event::Disconnected { conn, .. } if *conn == old_conn),
    ) {
        Event::Undelivered { messages, .. } => {
            messages.iter().map(|m| untag(m).1).collect::<Vec<_>>()
        }
        _ => Vec::new(),
    };
    wait_until("A has reconnected", || {
        a.connect(b.local_addr()).is_ok() && a.is_connected(PeerId(2))
    });
    for seq in 0..NEW {
        a.send(to_b, tagged(b'n', seq, 16)).unwrap();
    }

    // Now B reads: every old message that was not handed back, in order, then the
    // new ones, in order.
    let expected_old: Vec<u32> = (0..accepted).filter(|s| !returned.contains(s)).collect();
    assert_eq!(
        expected_old,
        (0..expected_old.len() as u32).collect::<Vec<_>>(),
        "what comes back is a tail of what was sent"
    );
    let mut got = Vec::new();
    for _ in 0..expected_old.len() as u32 + NEW {
        got.push(untag(&recv(b.incoming()).payload));
    }
    let want: Vec<(u8, u32)> = expected_old
        .iter()
        .map(|&s| (b'o', s))
        .chain((0..NEW).map(|s| (b'n', s)))
        .collect();
    assert_eq!(got, want);
    assert_eq!(b.stats().private.recv_dropped, 0);
}
