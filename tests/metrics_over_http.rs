//! The Prometheus collector (feature `prometheus`), scraped over HTTP after a known
//! workload, reports what `Node::stats` and `Node::peer_stats` report: messages per
//! lane, requests by outcome, per-peer series, and the round-trip histogram.
#![cfg(feature = "prometheus")]

mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use prometheus_client::registry::Registry;
use util::{config, connect, node_with, recv, wait_until, GUARD};
use wirelane::{Lane, Node, PeerId};

/// Serves `/metrics` for `node` on a port of its own, one connection at a time,
/// until the test ends.
fn serve(node: Arc<Node>) -> std::net::SocketAddr {
    let mut registry = Registry::default();
    wirelane::metrics::register(&mut registry, node);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let mut body = String::new();
            prometheus_client::encoding::text::encode(&mut body, &registry).unwrap();
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// Scrapes `addr` over HTTP: each sample line, `name{labels}` to its value.
fn scrape(addr: std::net::SocketAddr) -> HashMap<String, f64> {
    let mut stream = TcpStream::connect(addr).expect("connect to /metrics");
    stream.set_read_timeout(Some(GUARD)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("a sample");
            (key.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn scraped_metrics_equal_the_nodes_stats() {
    let a = Arc::new(node_with(1, config()));
    let b = Arc::new(node_with(2, config()));
    connect(&a, &b);
    for i in 0..100u32 {
        a.send(PeerId(2), i.to_be_bytes().to_vec()).unwrap();
    }
    for i in 0..50u32 {
        a.try_send(PeerId(2), i.to_be_bytes().to_vec()).unwrap();
    }
    // B takes the 150 messages, then answers 10 requests.
    let (mut private, mut gossip) = (0, 0);
    while private + gossip < 150 {
        match recv(b.incoming()).lane {
            Lane::Private => private += 1,
            _ => gossip += 1,
        }
    }
    let responder = {
        let b = b.clone();
        thread::spawn(move || {
            for _ in 0..10 {
                let m = recv(b.incoming());
                b.respond(&m, m.payload.clone()).unwrap();
            }
        })
    };
    for i in 0..10u32 {
        a.request(PeerId(2), i.to_be_bytes().to_vec(), Duration::from_secs(30))
            .unwrap();
    }
    responder.join().unwrap();
    wait_until("the counters settle", || {
        b.stats().requests.responded == 10 && a.stats().private.sent == 100
    });

    let at_b = scrape(serve(b.clone()));
    let at_a = scrape(serve(a.clone()));
    let (sa, sb) = (a.stats(), b.stats());
    let want = |m: &HashMap<String, f64>, key: &str, value: u64| {
        assert_eq!(m.get(key).copied(), Some(value as f64), "{key}");
    };
    want(&at_b, "wirelane_peers", 1);
    want(
        &at_b,
        r#"wirelane_messages_received_total{lane="private"}"#,
        sb.private.received,
    );
    want(
        &at_b,
        r#"wirelane_messages_received_total{lane="gossip"}"#,
        sb.gossip.received,
    );
    assert_eq!((sb.private.received, sb.gossip.received), (100, 50));
    want(
        &at_a,
        r#"wirelane_messages_sent_total{lane="private"}"#,
        sa.private.sent,
    );
    want(
        &at_a,
        r#"wirelane_messages_sent_total{lane="gossip"}"#,
        sa.gossip.sent,
    );
    want(
        &at_a,
        r#"wirelane_requests_total{outcome="answered"}"#,
        sa.requests.answered,
    );
    want(
        &at_b,
        r#"wirelane_requests_served_total{outcome="responded"}"#,
        sb.requests.responded,
    );
    assert_eq!((sa.requests.answered, sb.requests.responded), (10, 10));
    want(
        &at_a,
        "wirelane_request_duration_seconds_count",
        sa.request_time.count,
    );
    assert_eq!(sa.request_time.count, 10);
    want(
        &at_a,
        "wirelane_send_wait_seconds_count",
        sa.send_wait.count,
    );
    let peer = b.peer_stats(PeerId(1)).unwrap();
    want(
        &at_b,
        r#"wirelane_peer_messages_received_total{peer="peer-1",lane="private"}"#,
        peer.private.received,
    );
    want(
        &at_b,
        r#"wirelane_messages_dropped_total{lane="gossip",side="receive"}"#,
        sb.gossip.recv_dropped,
    );
    assert!(
        at_b.keys().all(|k| k.starts_with("wirelane_")),
        "{:?}",
        at_b.keys()
    );
}
