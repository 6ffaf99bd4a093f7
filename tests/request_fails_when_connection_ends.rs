//! Requests pending on a connection fail as soon as the connection ends — not at
//! their deadline: `Disconnected` when the peer closes it, `Shutdown` when the
//! requester's own node shuts down, each with its payload.
//!
//! A requester with a long deadline must not sit out that deadline for a reply that
//! can no longer come; and every pending request must get exactly one outcome.

mod util;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use util::{connect, node, wait_until};
use wirelane::{Bytes, Lane, Message, Node, PeerId, RequestError, RespondError};

const PENDING: u32 = 20;
/// The requests' deadline: far longer than any of them may take to fail.
const DEADLINE: Duration = Duration::from_secs(60);
/// How soon after the close every request must have failed.
const PROMPT: Duration = Duration::from_secs(10);

type Outcome = (Result<Bytes, RequestError<Bytes>>, Instant);

/// Fires `PENDING` requests from `a` to `peer`, one thread each, and returns the
/// threads and the requests as `b` holds them, unanswered.
fn pending_requests(
    a: &Arc<Node>,
    b: &Node,
    peer: PeerId,
) -> (Vec<thread::JoinHandle<Outcome>>, Vec<Message>) {
    let threads = (0..PENDING)
        .map(|i| {
            let a = a.clone();
            thread::spawn(move || {
                let result = a.request(peer, format!("request {i}").into_bytes(), DEADLINE);
                (result, Instant::now())
            })
        })
        .collect();
    let mut held: Vec<Message> = (0..PENDING).map(|_| util::recv(b.incoming())).collect();
    assert!(held.iter().all(|m| m.lane == Lane::Request));
    held.sort_by(|x, y| x.payload.cmp(&y.payload));
    let mut expected: Vec<Vec<u8>> = (0..PENDING)
        .map(|i| format!("request {i}").into_bytes())
        .collect();
    expected.sort();
    let got: Vec<&[u8]> = held.iter().map(|m| &m.payload[..]).collect();
    assert_eq!(got, expected.iter().map(|e| &e[..]).collect::<Vec<_>>());
    (threads, held)
}

/// Joins the requesters and checks each failed `expected` with its own payload,
/// within `PROMPT` of `closed`.
fn check_failed(
    threads: Vec<thread::JoinHandle<Outcome>>,
    closed: Instant,
    expected: fn(&RequestError<Bytes>) -> bool,
) {
    let mut payloads: Vec<Vec<u8>> = threads
        .into_iter()
        .map(|t| {
            let (result, at) = t.join().expect("requester");
            let waited = at.saturating_duration_since(closed);
            assert!(
                waited < PROMPT,
                "a request failed {waited:?} after the close"
            );
            match result {
                Err(e) if expected(&e) => e.into_inner().to_vec(),
                other => panic!("unexpected outcome {other:?}"),
            }
        })
        .collect();
    payloads.sort();
    let mut want: Vec<Vec<u8>> = (0..PENDING)
        .map(|i| format!("request {i}").into_bytes())
        .collect();
    want.sort();
    assert_eq!(payloads, want, "every request's own payload came back");
}

#[test]
fn pending_requests_fail_disconnected_when_the_responder_disconnects() {
    let a = Arc::new(node(1));
    let b = node(2);
    let peer = connect(&a, &b);
    let (threads, held) = pending_requests(&a, &b, peer);
    wait_until("every request is written", || {
        a.peer_stats(peer).unwrap().requests.sent == u64::from(PENDING)
    });

    let closed = Instant::now();
    assert!(b.disconnect(a.id()));
    check_failed(threads, closed, |e| {
        matches!(e, RequestError::Disconnected(_))
    });

    // Every request counted once, as failed (the connection's counts move to the
    // node's totals when it ends).
    wait_until("the requests are counted failed", || {
        a.stats().requests.failed == u64::from(PENDING)
    });
    let r = a.stats().requests;
    assert_eq!(
        (r.sent, r.failed, r.answered, r.timed_out, r.unanswered),
        (u64::from(PENDING), u64::from(PENDING), 0, 0, 0),
        "{r:?}"
    );

    // The responder's held requests can no longer be answered.
    for m in &held {
        match b.respond(m, b"too late".to_vec()) {
            Err(RespondError::Disconnected(reply)) => assert_eq!(&reply[..], b"too late"),
            other => panic!("expected RespondError::Disconnected, got {other:?}"),
        }
    }
}

#[test]
fn pending_requests_fail_disconnected_when_the_responder_shuts_down() {
    let a = Arc::new(node(1));
    let b = node(2);
    let peer = connect(&a, &b);
    let (threads, held) = pending_requests(&a, &b, peer);

    let closed = Instant::now();
    b.shutdown();
    check_failed(threads, closed, |e| {
        matches!(e, RequestError::Disconnected(_))
    });
    drop(held);
}

#[test]
fn pending_requests_fail_shutdown_when_the_requester_shuts_down() {
    let a = Arc::new(node(1));
    let b = node(2);
    let peer = connect(&a, &b);
    let (threads, held) = pending_requests(&a, &b, peer);

    let closed = Instant::now();
    a.shutdown();
    check_failed(threads, closed, |e| matches!(e, RequestError::Shutdown(_)));
    drop(held);
}
