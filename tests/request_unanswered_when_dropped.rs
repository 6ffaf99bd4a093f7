//! A request whose message is dropped unanswered (every clone of it) fails with
//! `Unanswered` at once, not at its deadline; clones share one answer, so a request
//! is answered at most once whichever clone answers.
//!
//! An application that decides not to answer (or forgets to) must not leave the
//! requester waiting out its deadline, nor hold one of the connection's request
//! slots; and two replies to one request would be a protocol error that ends the
//! connection.

mod util;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use util::{connect, node, wait_until};
use wirelane::{Lane, RequestError, RespondError};

/// The requests' deadline: far longer than any outcome here may take.
const DEADLINE: Duration = Duration::from_secs(60);
const PROMPT: Duration = Duration::from_secs(10);

#[test]
fn dropping_a_request_unanswered_tells_the_requester_at_once() {
    let a = Arc::new(node(1));
    let b = node(2);
    let peer = connect(&a, &b);

    let requester = {
        let a = a.clone();
        thread::spawn(move || a.request(peer, b"anyone?".to_vec(), DEADLINE))
    };
    let m = util::recv(b.incoming());
    assert_eq!(m.lane, Lane::Request);
    let dropped = Instant::now();
    drop(m);
    match requester.join().expect("requester") {
        Err(RequestError::Unanswered(payload)) => assert_eq!(&payload[..], b"anyone?"),
        other => panic!("expected Unanswered, got {other:?}"),
    }
    assert!(
        dropped.elapsed() < PROMPT,
        "told after {:?}",
        dropped.elapsed()
    );

    let r = a.peer_stats(peer).unwrap().requests;
    assert_eq!(
        (r.sent, r.unanswered, r.answered, r.timed_out, r.failed),
        (1, 1, 0, 0, 0),
        "{r:?}"
    );
    wait_until("the responder counts the dropped request", || {
        b.peer_stats(a.id()).unwrap().requests.dropped_unanswered == 1
    });
    let r = b.peer_stats(a.id()).unwrap().requests;
    assert_eq!((r.served, r.responded, r.dropped_unanswered), (1, 0, 1));
}

#[test]
fn a_clone_answers_once_for_all_clones() {
    let a = Arc::new(node(1));
    let b = node(2);
    let peer = connect(&a, &b);
    let conn = a.peer_stats(peer).unwrap().conn;

    let requester = {
        let a = a.clone();
        thread::spawn(move || a.request(peer, b"question".to_vec(), DEADLINE))
    };
    let original = util::recv(b.incoming());
    let clone = original.clone();
    b.respond(&clone, b"first".to_vec())
        .expect("respond via the clone");
    match b.respond(&original, b"second".to_vec()) {
        Err(RespondError::AlreadyAnswered(reply)) => assert_eq!(&reply[..], b"second"),
        other => panic!("expected AlreadyAnswered, got {other:?}"),
    }
    match b.respond(&clone, b"third".to_vec()) {
        Err(RespondError::AlreadyAnswered(reply)) => assert_eq!(&reply[..], b"third"),
        other => panic!("expected AlreadyAnswered, got {other:?}"),
    }
    let reply = requester.join().expect("requester").expect("the reply");
    assert_eq!(&reply[..], b"first");
    // Dropping answered clones sends nothing more.
    drop((original, clone));

    // A round trip after the drop: had the drop sent a second reply for the same
    // request, the requester would have seen a reply to no request in flight and
    // ended the connection, and the unanswered count would show it.
    let next = {
        let a = a.clone();
        thread::spawn(move || a.request(peer, b"again".to_vec(), DEADLINE))
    };
    let m = util::recv(b.incoming());
    b.respond(&m, b"again yes".to_vec()).expect("respond");
    assert_eq!(&next.join().unwrap().expect("reply")[..], b"again yes");

    let s = a.peer_stats(peer).unwrap();
    assert_eq!(s.conn, conn, "the connection is the same one");
    let r = s.requests;
    assert_eq!(
        (r.sent, r.answered, r.unanswered, r.late_replies),
        (2, 2, 0, 0),
        "{r:?}"
    );
    let r = b.peer_stats(a.id()).unwrap().requests;
    assert_eq!(
        (r.served, r.responded, r.dropped_unanswered),
        (2, 2, 0),
        "{r:?}"
    );
}

#[test]
fn dropping_one_clone_leaves_the_other_to_answer() {
    let a = Arc::new(node(1));
    let b = node(2);
    let peer = connect(&a, &b);

    let requester = {
        let a = a.clone();
        thread::spawn(move || a.request(peer, b"question".to_vec(), DEADLINE))
    };
    let original = util::recv(b.incoming());
    let clone = original.clone();
    // Had this drop told the requester, it would fail Unanswered below.
    drop(original);
    b.respond(&clone, b"answer".to_vec())
        .expect("respond via the clone");
    let reply = requester.join().expect("requester").expect("the reply");
    assert_eq!(&reply[..], b"answer");
    drop(clone);

    let r = a.peer_stats(peer).unwrap().requests;
    assert_eq!((r.answered, r.unanswered), (1, 0), "{r:?}");
}
