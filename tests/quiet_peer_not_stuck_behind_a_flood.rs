//! A quiet peer's private messages are not stuck behind a flooding peer's: each
//! connection has its own window in the receiver's inbound queue, so while F floods
//! R (whose application is stalled) and has used all of its window, Q's messages
//! still go straight into R's queue, and once R reads again they come after at most
//! F's one window of messages.
//!
//! Before flow control the inbound queue was shared first come, first served: F's
//! flood filled it, Q's reader waited for room like F's did, and Q's messages
//! competed with every message F sent meanwhile.

mod util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use util::{config, connect, node_with, recv, tagged, untag, wait_until};
use wirelane::Lane;

const WINDOW: usize = 32;
const QUIET: u32 = 10;

#[test]
fn a_quiet_peers_messages_pass_a_flooding_peers() {
    let r = node_with(1, config().private_window(WINDOW));
    let f = Arc::new(node_with(2, config()));
    let q = node_with(3, config());
    let peer_r = connect(&f, &r);
    assert_eq!(connect(&q, &r), peer_r);

    // F floods until told to stop; R's application takes nothing yet.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (f, stop) = (f.clone(), stop.clone());
        thread::spawn(move || {
            let mut seq = 0;
            while !stop.load(Ordering::SeqCst) {
                let payload = tagged(2, seq, 64);
                match f.send_timeout(peer_r, payload, std::time::Duration::from_millis(50)) {
                    Ok(()) => seq += 1,
                    Err(e) if e.is_timeout() => {}
                    Err(e) => panic!("flood: {e}"),
                }
            }
            seq
        })
    };
    wait_until("F has used all of its window at R", || {
        f.peer_stats(peer_r).is_some_and(|s| s.window_closed)
    });

    // Q's messages reach R's queue while R's application is still stalled.
    for seq in 0..QUIET {
        q.send(peer_r, tagged(3, seq, 64)).expect("send");
    }
    wait_until("R has received all of Q's messages", || {
        r.peer_stats(q.id())
            .is_some_and(|s| s.private.received == u64::from(QUIET))
    });
    wait_until("R has received F's window", || {
        r.peer_stats(f.id())
            .is_some_and(|s| s.private.received == WINDOW as u64)
    });
    assert!(f.peer_stats(peer_r).unwrap().window_closed);

    // R reads again: Q's messages come after F's one window at the most.
    let mut before_q = 0;
    let mut next_q = 0;
    let mut next_f = 0;
    while next_q < QUIET {
        let m = recv(r.incoming());
        assert_eq!(m.lane, Lane::Private);
        match untag(&m.payload) {
            (3, seq) => {
                assert_eq!(seq, next_q);
                next_q += 1;
            }
            (2, seq) => {
                assert_eq!(seq, next_f);
                next_f += 1;
                if next_q == 0 {
                    before_q += 1;
                }
            }
            other => panic!("unexpected message {other:?}"),
        }
    }
    assert!(
        before_q <= WINDOW,
        "{before_q} of F's messages came before Q's first"
    );
    stop.store(true, Ordering::SeqCst);
    let sent = flood.join().expect("the flood");
    // The rest of F's flood still arrives, in order.
    while next_f < sent {
        let m = recv(r.incoming());
        assert_eq!(untag(&m.payload), (2, next_f));
        next_f += 1;
    }
}
