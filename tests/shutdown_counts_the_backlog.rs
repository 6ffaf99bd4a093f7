//! A node that shuts down while its application has fallen far behind still
//! accounts for every private message its peer sent: delivered, or counted as
//! received and not delivered (`recv_dropped`), or handed back to the sender —
//! including the backlog in the kernel's socket buffers and in B's inbound queue.
//! Regression test: a slow consumer and a shutdown lost thousands of messages that
//! neither side counted, when the backlog sat in the kernels' buffers and a close at
//! its cap cut them away unread. (With flow control the backlog B takes in is its
//! window, and the rest waits in A's lane.)

mod util;

use std::sync::Arc;
use std::time::Duration;

use util::{config, connect, finishes, node_with, tagged, GUARD};
use wirelane::{Event, PeerId, SendTimeoutError};

/// B's window: the backlog B takes in, which its consumer drains 5 ms a message.
const WINDOW: usize = 400;

#[test]
fn every_message_sent_to_a_node_that_shuts_down_behind_is_delivered_or_counted() {
    // B's close lingers 50 ms, so its cap is 500 ms; its application takes a message
    // every 5 ms, which keeps a close lingering but drains the backlog far slower.
    let b = Arc::new(node_with(
        1,
        config()
            .inbound_capacity(1)
            .private_window(WINDOW)
            .linger(Duration::from_millis(50)),
    ));
    let a = Arc::new(node_with(2, config()));
    connect(&a, &b);
    // Fill every buffer between A's application and B's: lanes, kernels, read
    // buffer. A send that cannot get room for 200 ms means they are full.
    let sender = {
        let a = a.clone();
        std::thread::spawn(move || {
            let mut accepted = 0u64;
            for seq in 0.. {
                match a.send_timeout(PeerId(1), tagged(2, seq, 32), Duration::from_millis(200)) {
                    Ok(()) => accepted += 1,
                    Err(SendTimeoutError::Timeout(_)) => return accepted,
                    Err(e) => panic!("unexpected send error: {e:?}"),
                }
            }
            unreachable!()
        })
    };
    let accepted = finishes("the sender", GUARD, move || sender.join().unwrap());
    assert!(
        accepted > WINDOW as u64,
        "only {accepted} messages fit: no backlog"
    );

    let consumer = {
        let b = b.clone();
        std::thread::spawn(move || {
            let mut delivered = 0u64;
            // Until B has shut down and its queue is empty.
            while b.incoming().recv_timeout(GUARD).is_ok() {
                delivered += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            delivered
        })
    };
    let (received, recv_dropped) = finishes("B's shutdown", GUARD, {
        let b = b.clone();
        move || {
            b.shutdown();
            let private = b.stats().private;
            (private.received, private.recv_dropped)
        }
    });
    let delivered = finishes("B's consumer", GUARD, move || consumer.join().unwrap());
    // What A had not written when B went away comes back to A.
    let mut handed_back = 0u64;
    loop {
        match util::recv(a.events()) {
            Event::Undelivered { messages, .. } => handed_back += messages.len() as u64,
            Event::Disconnected { .. } => break,
            _ => {}
        }
    }
    assert_eq!(delivered, received, "B's application got all B delivered");
    assert_eq!(
        accepted,
        received + recv_dropped + handed_back,
        "accepted {accepted} = delivered {received} + counted by B {recv_dropped} + handed back {handed_back}"
    );
}
