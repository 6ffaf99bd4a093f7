//! The ways a request or a reply is refused at the call, each with its own error and
//! the payload handed back: answering what is not a request, a reply or a request
//! over the other side's frame limit, a request to a peer not connected, a request
//! or an answer after shutdown.
//!
//! The application must be able to tell these apart (retry elsewhere, shrink the
//! reply, stop), and must get its bytes back; and a refused reply must not use up
//! the request's one answer.

mod util;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use util::{config, connect, node, node_with, GUARD};
use wirelane::{Lane, Outcome, PeerId, RequestError, RespondError};

const LIMIT: u32 = 1024;

#[test]
fn answering_a_gossip_or_private_message_is_not_a_request() {
    let a = node(1);
    let b = node(2);
    let peer = connect(&a, &b);
    a.try_send(peer, b"gossip".to_vec()).expect("gossip");
    a.send(peer, b"private".to_vec()).expect("private");
    let mut lanes = Vec::new();
    for _ in 0..2 {
        let m = util::recv(b.incoming());
        match b.respond(&m, b"reply".to_vec()) {
            Err(RespondError::NotARequest(reply)) => assert_eq!(&reply[..], b"reply"),
            other => panic!("{:?} message: expected NotARequest, got {other:?}", m.lane),
        }
        lanes.push(m.lane);
    }
    lanes.sort();
    assert_eq!(lanes, [Lane::Gossip, Lane::Private]);
    assert_eq!(b.stats().requests.responded, 0);
}

#[test]
fn a_reply_over_the_requesters_frame_limit_is_refused_and_the_request_stays_open() {
    let a = Arc::new(node_with(1, config().max_frame_len(LIMIT)));
    let b = node(2);
    let peer = connect(&a, &b);

    let requester = {
        let a = a.clone();
        thread::spawn(move || a.request(peer, b"big answer?".to_vec(), GUARD))
    };
    let m = util::recv(b.incoming());
    let too_big = vec![7u8; LIMIT as usize + 1];
    match b.respond(&m, too_big.clone()) {
        Err(RespondError::TooLarge(reply)) => assert_eq!(reply, too_big),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The refusal did not answer the request: a reply at the limit still goes.
    let at_limit = vec![8u8; LIMIT as usize];
    b.respond(&m, at_limit.clone())
        .expect("a reply at the limit");
    let reply = requester.join().expect("requester").expect("the reply");
    assert_eq!(reply, at_limit);
    assert_eq!(b.peer_stats(a.id()).unwrap().requests.responded, 1);
}

#[test]
fn a_request_over_the_peers_frame_limit_is_refused_unsent() {
    let a = node(1);
    let b = Arc::new(node_with(2, config().max_frame_len(LIMIT)));
    let peer = connect(&a, &b);

    let too_big = vec![1u8; LIMIT as usize + 1];
    match a.request(peer, too_big.clone(), GUARD) {
        Err(RequestError::TooLarge(payload)) => assert_eq!(payload, too_big),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let replies = a.request_many(&[peer], too_big, 1, GUARD);
    assert_eq!(
        replies.get(peer),
        Some(&Outcome::Failed(RequestError::TooLarge(())))
    );

    // A request at the limit goes, on the same connection.
    let responder = {
        let b = b.clone();
        thread::spawn(move || {
            let m = util::recv(b.incoming());
            assert_eq!(m.payload.len(), LIMIT as usize);
            b.respond(&m, b"fits".to_vec()).expect("respond");
        })
    };
    let at_limit = vec![2u8; LIMIT as usize];
    assert_eq!(
        &a.request(peer, at_limit, GUARD).expect("at the limit")[..],
        b"fits"
    );
    responder.join().expect("responder");
    let r = a.peer_stats(peer).unwrap().requests;
    assert_eq!((r.sent, r.answered, r.failed), (1, 1, 0), "{r:?}");
}

#[test]
fn a_request_to_a_peer_not_connected_is_refused() {
    let a = node(1);
    match a.request(PeerId(99), b"hello?".to_vec(), GUARD) {
        Err(RequestError::NotConnected(payload)) => assert_eq!(&payload[..], b"hello?"),
        other => panic!("expected NotConnected, got {other:?}"),
    }
    let replies = a.request_many(&[PeerId(99)], b"hello?".to_vec(), 1, GUARD);
    assert_eq!(
        replies.get(PeerId(99)),
        Some(&Outcome::Failed(RequestError::NotConnected(())))
    );
    assert_eq!((replies.succeeded(), replies.failed()), (0, 1));
}

#[test]
fn a_request_after_shutdown_is_refused_with_shutdown() {
    let a = node(1);
    let b = node(2);
    let peer = connect(&a, &b);
    a.shutdown();
    match a.request(peer, b"still there?".to_vec(), GUARD) {
        Err(RequestError::Shutdown(payload)) => assert_eq!(&payload[..], b"still there?"),
        other => panic!("expected Shutdown, got {other:?}"),
    }
    let replies = a.request_many(&[peer], b"x".to_vec(), 1, GUARD);
    assert_eq!(
        replies.get(peer),
        Some(&Outcome::Failed(RequestError::Shutdown(())))
    );
}

#[test]
fn answering_after_the_responder_shut_down_is_refused_with_shutdown() {
    let a = Arc::new(node(1));
    let b = node(2);
    let peer = connect(&a, &b);
    let requester = {
        let a = a.clone();
        thread::spawn(move || a.request(peer, b"question".to_vec(), Duration::from_secs(60)))
    };
    let m = util::recv(b.incoming());
    b.shutdown();
    match b.respond(&m, b"answer".to_vec()) {
        Err(RespondError::Shutdown(reply)) => assert_eq!(&reply[..], b"answer"),
        other => panic!("expected RespondError::Shutdown, got {other:?}"),
    }
    match requester.join().expect("requester") {
        Err(RequestError::Disconnected(_)) => {}
        other => panic!("expected Disconnected, got {other:?}"),
    }
}
