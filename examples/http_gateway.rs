//! A legacy thread-pool HTTP server (tiny_http) that embeds a wirelane node and
//! serves each HTTP request with a wirelane request to a backend node.
//!
//! ```text
//! cargo run --release --features prometheus --example http_gateway -- \
//!     [--listen 127.0.0.1:8080] [--backend ADDR] [--workers 16] [--timeout-ms 500] \
//!     [--slow-every N --slow-ms MS] [--seconds S]
//! cargo run --release --features prometheus --example http_gateway -- --self-test
//! ```
//!
//! - `GET /echo?size=N` sends a request of N bytes to the backend and answers 200
//!   with the reply's N bytes; 504 if the reply does not come within the timeout,
//!   503 if the backend cannot be asked (not connected, connection lost, refused).
//!   A worker never waits longer than the timeout.
//! - `GET /metrics` serves the gateway node's metrics in the Prometheus text format.
//!
//! Without `--backend`, a backend node runs in this process; `--slow-every N`
//! makes it sleep `--slow-ms` before every Nth answer, so that some requests time
//! out. `--seconds S` stops after S seconds. `--self-test` runs a short scripted
//! check against an in-process backend and exits 0 if it held (1 otherwise).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use tiny_http::{Header, Response, Server};
use wirelane::{Config, Lane, Node, PeerId, RequestError};

const GATEWAY: PeerId = PeerId(100);
const BACKEND: PeerId = PeerId(200);
/// The largest echo a client may ask for.
const MAX_SIZE: usize = 1 << 20;

struct Options {
    listen: String,
    backend: Option<String>,
    workers: usize,
    timeout: Duration,
    slow_every: u64,
    slow: Duration,
    seconds: Option<u64>,
}

/// A backend in this process: answers every request with its own bytes, sleeping
/// first on every `slow_every`th one.
///
/// Its workers all read `incoming()` themselves rather than through a
/// `Dispatcher`: every request comes from one peer (the gateway), and a dispatcher
/// keeps one peer's messages in order on one worker, so one slow answer would hold
/// up every request behind it. Requests need no order; independent workers let the
/// others go on.
fn backend(
    slow_every: u64,
    slow: Duration,
) -> Result<(Arc<Node>, Vec<thread::JoinHandle<()>>), String> {
    let node =
        Arc::new(Node::bind(BACKEND, "127.0.0.1:0", Config::default()).map_err(|e| e.to_string())?);
    let n = Arc::new(AtomicU64::new(0));
    let workers = (0..8)
        .map(|i| {
            let (node, n) = (node.clone(), n.clone());
            thread::Builder::new()
                .name(format!("backend-{i}"))
                .spawn(move || {
                    // Ends when the node shuts down.
                    for m in node.incoming() {
                        if m.lane != Lane::Request {
                            continue;
                        }
                        if slow_every > 0 && n.fetch_add(1, Relaxed) % slow_every == slow_every - 1
                        {
                            thread::sleep(slow);
                        }
                        let _ = node.respond(&m, m.payload.clone());
                    }
                })
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    Ok((node, workers))
}

/// The gateway: its node, connected to the backend, and its HTTP server.
struct Gateway {
    node: Arc<Node>,
    server: Arc<Server>,
    workers: Vec<thread::JoinHandle<()>>,
    backend: Option<(Arc<Node>, Vec<thread::JoinHandle<()>>)>,
}

fn start(o: &Options) -> Result<Gateway, String> {
    let backend_node = match &o.backend {
        Some(_) => None,
        None => Some(backend(o.slow_every, o.slow)?),
    };
    let addr: String = match (&o.backend, &backend_node) {
        (Some(addr), _) => addr.clone(),
        (None, Some((node, _))) => node.local_addr().to_string(),
        (None, None) => unreachable!(),
    };
    let config = Config::default().reconnect_interval(Some(Duration::from_millis(100)));
    let node = Arc::new(Node::bind(GATEWAY, "127.0.0.1:0", config).map_err(|e| e.to_string())?);
    let peer = node
        .connect(addr.as_str())
        .map_err(|e| format!("backend {addr}: {e}"))?;
    let server = Arc::new(Server::http(o.listen.as_str()).map_err(|e| e.to_string())?);
    let mut registry = Registry::default();
    wirelane::metrics::register(&mut registry, node.clone());
    let registry = Arc::new(registry);
    let workers = (0..o.workers)
        .map(|i| {
            let (server, node, registry) = (server.clone(), node.clone(), registry.clone());
            let timeout = o.timeout;
            thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || {
                    // Ends when the server is unblocked.
                    while let Ok(request) = server.recv() {
                        let response = answer(&node, peer, &registry, request.url(), timeout);
                        let _ = request.respond(response);
                    }
                })
                .expect("spawn an HTTP worker")
        })
        .collect();
    Ok(Gateway {
        node,
        server,
        workers,
        backend: backend_node,
    })
}

fn answer(
    node: &Node,
    peer: PeerId,
    registry: &Registry,
    url: &str,
    timeout: Duration,
) -> Response<std::io::Cursor<Vec<u8>>> {
    if url == "/metrics" {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
            return Response::from_string("encoding failed").with_status_code(500);
        }
        let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        let header = Header::from_bytes(&b"Content-Type"[..], kind.as_bytes()).unwrap();
        return Response::from_string(text).with_header(header);
    }
    let Some(size) = url
        .strip_prefix("/echo?size=")
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return Response::from_string("not found").with_status_code(404);
    };
    if size > MAX_SIZE {
        return Response::from_string("size over 1 MiB").with_status_code(400);
    }
    match node.request(peer, vec![b'x'; size], timeout) {
        Ok(reply) => Response::from_data(reply.to_vec()),
        Err(RequestError::Timeout(_)) => {
            Response::from_string("backend slow").with_status_code(504)
        }
        Err(e) => Response::from_string(format!("backend busy: {e}")).with_status_code(503),
    }
}

impl Gateway {
    fn addr(&self) -> SocketAddr {
        self.server.server_addr().to_ip().expect("an IP listener")
    }

    /// Stops the HTTP workers, then the node: every thread joined.
    fn stop(self) {
        for _ in &self.workers {
            self.server.unblock();
        }
        for w in self.workers {
            let _ = w.join();
        }
        self.node.shutdown();
        if let Some((node, workers)) = self.backend {
            node.shutdown();
            for w in workers {
                let _ = w.join();
            }
        }
    }
}

/// One HTTP/1.0 GET: the status and the body.
fn get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: gateway\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    Ok((status, raw[split + 4..].to_vec()))
}

fn self_test() -> Result<(), String> {
    let gateway = start(&Options {
        listen: "127.0.0.1:0".into(),
        backend: None,
        workers: 8,
        timeout: Duration::from_millis(100),
        slow_every: 5,
        slow: Duration::from_millis(300),
        seconds: None,
    })?;
    let addr = gateway.addr();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            thread::spawn(move || -> Result<(u32, u32), String> {
                let (mut ok, mut slow) = (0, 0);
                for i in 0..10 {
                    let size = 1 + (c * 97 + i * 31) % 4000;
                    let started = Instant::now();
                    let (status, body) = get(addr, &format!("/echo?size={size}"))?;
                    match status {
                        200 if body.len() == size && body.iter().all(|&b| b == b'x') => ok += 1,
                        503 | 504 => slow += 1,
                        _ => return Err(format!("{status} with {} bytes for {size}", body.len())),
                    }
                    if started.elapsed() > Duration::from_secs(5) {
                        return Err("a request hung".into());
                    }
                }
                Ok((ok, slow))
            })
        })
        .collect();
    let (mut ok, mut slow) = (0, 0);
    for c in clients {
        let (o, s) = c.join().map_err(|_| "a client panicked")??;
        ok += o;
        slow += s;
    }
    let (status, metrics) = get(addr, "/metrics")?;
    let metrics = String::from_utf8_lossy(&metrics).to_string();
    let bad = get(addr, "/nowhere")?.0;
    gateway.stop();
    println!("http_gateway self-test: {ok} answered 200, {slow} answered 503/504, /metrics {status}, unknown path {bad}");
    if ok == 0
        || slow == 0
        || status != 200
        || !metrics.contains("wirelane_requests_total")
        || bad != 404
    {
        return Err("unexpected answers".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let num =
        |flag: &str, default: u64| value(flag).and_then(|v| v.parse().ok()).unwrap_or(default);
    if args.iter().any(|a| a == "--self-test") {
        return match self_test() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("http_gateway self-test failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let options = Options {
        listen: value("--listen").unwrap_or_else(|| "127.0.0.1:8080".into()),
        backend: value("--backend"),
        workers: num("--workers", 16) as usize,
        timeout: Duration::from_millis(num("--timeout-ms", 500)),
        slow_every: num("--slow-every", 0),
        slow: Duration::from_millis(num("--slow-ms", 200)),
        seconds: value("--seconds").and_then(|v| v.parse().ok()),
    };
    let gateway = match start(&options) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("http_gateway: {e}");
            return ExitCode::from(2);
        }
    };
    println!("http_gateway: listening on {}", gateway.addr());
    let _ = std::io::stdout().flush();
    let until = options
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    while until.is_none_or(|u| Instant::now() < u) {
        thread::sleep(Duration::from_millis(200));
    }
    let stats = gateway.node.stats();
    gateway.stop();
    print!("{stats}");
    ExitCode::SUCCESS
}
