//! A request whose reply comes after its deadline fails with `Timeout`, handing its
//! payload back; the reply that comes later is dropped and counted in
//! `late_replies`, and the connection goes on working.
//!
//! A requester that gave up must never see a stale reply (it could be taken for the
//! answer to a later request), the request's slot must come back when the late
//! reply arrives, and the late reply must not be mistaken for a protocol error
//! (a reply to an unknown request ends the connection).

mod util;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use util::{connect, node, wait_until, GUARD};
use wirelane::{Lane, RequestError};

/// The requester's deadline. It only has to outlast writing one small frame on
/// loopback (the responder waits for the request before anything else happens), and
/// the responder holds the request until the requester has timed out, so the
/// outcome does not depend on it otherwise.
const DEADLINE: Duration = Duration::from_secs(3);

#[test]
fn a_reply_after_the_deadline_is_a_timeout_then_a_late_reply() {
    let a = Arc::new(node(1));
    let b = node(2);
    let peer = connect(&a, &b);

    let requester = {
        let a = a.clone();
        thread::spawn(move || a.request(peer, b"slow question".to_vec(), DEADLINE))
    };
    // The responder holds the request past the requester's deadline...
    let m = util::recv(b.incoming());
    assert_eq!((m.from, m.lane), (a.id(), Lane::Request));
    assert_eq!(&m.payload[..], b"slow question");
    let outcome = requester.join().expect("requester");
    match outcome {
        Err(RequestError::Timeout(payload)) => assert_eq!(&payload[..], b"slow question"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    let r = a.peer_stats(peer).unwrap().requests;
    assert_eq!(
        (r.sent, r.timed_out, r.answered, r.late_replies),
        (1, 1, 0, 0)
    );

    // ...then answers it: the responder cannot tell, the requester drops the reply.
    b.respond(&m, b"too late".to_vec()).expect("respond");
    wait_until("the late reply is counted", || {
        a.peer_stats(peer).unwrap().requests.late_replies == 1
    });
    let r = a.peer_stats(peer).unwrap().requests;
    assert_eq!(
        (
            r.sent,
            r.timed_out,
            r.late_replies,
            r.answered,
            r.failed,
            r.unanswered
        ),
        (1, 1, 1, 0, 0, 0),
        "{r:?}"
    );
    assert_eq!(b.peer_stats(a.id()).unwrap().requests.responded, 1);

    // The same connection still works, and the next request gets its own reply,
    // not the stale one.
    let conn = a.peer_stats(peer).unwrap().conn;
    let next = {
        let a = a.clone();
        thread::spawn(move || a.request(peer, b"next question".to_vec(), GUARD))
    };
    let m = util::recv(b.incoming());
    assert_eq!(&m.payload[..], b"next question");
    b.respond(&m, b"next answer".to_vec()).expect("respond");
    let reply = next.join().expect("requester").expect("the next request");
    assert_eq!(&reply[..], b"next answer");
    let s = a.peer_stats(peer).unwrap();
    assert_eq!(s.conn, conn, "the late reply did not end the connection");
    assert_eq!(
        (
            s.requests.answered,
            s.requests.late_replies,
            s.requests.timed_out
        ),
        (1, 1, 1)
    );
}
