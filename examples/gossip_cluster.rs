//! A small cluster: N nodes in a full mesh with redialling on, spreading rumours by
//! gossip (each node forwards a rumour the first time it hears it) and exchanging
//! private messages, then printing each node's stats. Halfway, the first node (the
//! one every other dialled) restarts on the same port, and the others dial it again.
//!
//! ```text
//! cargo run --example gossip_cluster -- [--nodes 5] [--rumours 200]
//! cargo run --example gossip_cluster -- --self-test
//! ```
//!
//! `--self-test` checks that every rumour reached every node, that every private
//! message accepted by `send` arrived, came back in `Undelivered` or was counted
//! dropped on receipt, and that the restarted node was dialled again; it exits 0 if
//! all held (1 otherwise).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use wirelane::{Config, Event, Lane, Node, PeerId};

fn config() -> Config {
    Config::default()
        .reconnect_interval(Some(Duration::from_millis(50)))
        .reconnect_max(Duration::from_millis(400))
}

/// One member: its node, and the rumours it has heard.
struct Member {
    node: Arc<Node>,
    heard: Arc<Mutex<HashSet<u64>>>,
    private_in: Arc<Mutex<u64>>,
    receiver: thread::JoinHandle<()>,
}

/// Starts a member whose receive loop forwards each new rumour to every peer.
fn member(id: u64, addr: SocketAddr) -> Member {
    let node = Arc::new(Node::bind(PeerId(id), addr, config()).expect("bind"));
    let heard: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let private_in: Arc<Mutex<u64>> = Arc::default();
    let (n, h, p) = (node.clone(), heard.clone(), private_in.clone());
    let receiver = thread::Builder::new()
        .name(format!("member-{id}"))
        .spawn(move || {
            // Ends when the node shuts down and its queue is drained.
            for m in n.incoming() {
                match m.lane {
                    Lane::Gossip => {
                        let rumour = u64::from_be_bytes(m.payload[..8].try_into().unwrap());
                        if h.lock().unwrap().insert(rumour) {
                            for peer in n.peers() {
                                if peer != m.from {
                                    let _ = n.try_send(peer, m.payload.clone());
                                }
                            }
                        }
                    }
                    _ => *p.lock().unwrap() += 1,
                }
            }
        })
        .expect("spawn a member");
    Member {
        node,
        heard,
        private_in,
        receiver,
    }
}

/// The private messages a node that has shut down handed back, from its events.
fn undelivered(node: &Node) -> u64 {
    node.events()
        .try_iter()
        .map(|e| match e {
            Event::Undelivered { messages, .. } => messages.len() as u64,
            _ => 0,
        })
        .sum()
}

fn run(nodes: u64, rumours: u64, verbose: bool) -> Result<(), String> {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut members: Vec<Member> = (1..=nodes).map(|id| member(id, any)).collect();
    for i in 0..members.len() {
        for j in 0..i {
            let addr = members[j].node.local_addr();
            members[i].node.connect(addr).map_err(|e| e.to_string())?;
        }
    }
    let mut private_sent = 0u64;
    let mut spread = |members: &[Member], from: u64, to: u64| {
        for r in from..to {
            let origin = &members[(r % nodes) as usize];
            origin.heard.lock().unwrap().insert(r);
            for peer in origin.node.peers() {
                let _ = origin.node.try_send(peer, r.to_be_bytes().to_vec());
                if origin
                    .node
                    .send_timeout(peer, b"private".to_vec(), Duration::from_secs(5))
                    .is_ok()
                {
                    private_sent += 1;
                }
            }
        }
    };
    spread(&members, 0, rumours / 2);

    // The first member, which every other dialled, restarts on the same port; the
    // others are told they are dialling it again, and do.
    let first = members.remove(0);
    let addr = first.node.local_addr();
    first.node.shutdown();
    first
        .receiver
        .join()
        .map_err(|_| "a receive loop panicked")?;
    // What the first member had not written when it stopped comes back to it.
    let mut handed_back = undelivered(&first.node);
    let mut redialled = 0;
    for m in &members {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(e) = m.node.events().recv_deadline(deadline) {
            match e {
                Event::Undelivered { messages, .. } => handed_back += messages.len() as u64,
                Event::Redialing {
                    peer: PeerId(1), ..
                } => {
                    redialled += 1;
                    break;
                }
                _ => {}
            }
        }
    }
    let back = member(1, addr);
    let heard_before: Vec<u64> = first.heard.lock().unwrap().iter().copied().collect();
    back.heard.lock().unwrap().extend(heard_before);
    let mut received = *first.private_in.lock().unwrap();
    let mut recv_dropped = first.node.stats().private.recv_dropped;
    members.insert(0, back);
    let deadline = Instant::now() + Duration::from_secs(20);
    while members
        .iter()
        .any(|m| m.node.peers().len() + 1 < nodes as usize)
    {
        if Instant::now() > deadline {
            return Err("the mesh did not come back after the restart".to_owned());
        }
        thread::sleep(Duration::from_millis(10));
    }
    spread(&members, rumours / 2, rumours);

    // Every rumour reaches every member. Gossip may be lost (dropped when a queue is
    // full, or with a connection that a redial replaced), so, as gossip protocols
    // do, each member pushes what it has heard again every 100 ms until all agree.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last_push = Instant::now();
    loop {
        if last_push.elapsed() >= Duration::from_millis(100) {
            last_push = Instant::now();
            for m in &members {
                let heard: Vec<u64> = m.heard.lock().unwrap().iter().copied().collect();
                for peer in m.node.peers() {
                    for r in &heard {
                        let _ = m.node.try_send(peer, r.to_be_bytes().to_vec());
                    }
                }
            }
        }
        let missing: u64 = members
            .iter()
            .map(|m| rumours - m.heard.lock().unwrap().len() as u64)
            .sum();
        if missing == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{missing} rumour deliveries missing"));
        }
        thread::sleep(Duration::from_millis(10));
    }
    for m in &members {
        m.node.shutdown();
    }
    for m in members {
        if verbose {
            print!("{}", m.node.stats());
        }
        m.receiver.join().map_err(|_| "a receive loop panicked")?;
        received += *m.private_in.lock().unwrap();
        recv_dropped += m.node.stats().private.recv_dropped;
        handed_back += undelivered(&m.node);
    }
    println!(
        "gossip_cluster: {nodes} nodes, {rumours} rumours everywhere; {private_sent} private accepted = {received} received + {handed_back} handed back + {recv_dropped} dropped on receipt; {redialled} of {} nodes dialled the restarted one again",
        nodes - 1
    );
    if received + handed_back + recv_dropped != private_sent || redialled != nodes - 1 {
        return Err("private messages or the redials did not add up".to_owned());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let self_test = args.iter().any(|a| a == "--self-test");
    let nodes = value("--nodes").unwrap_or(5).max(2);
    let rumours = value("--rumours").unwrap_or(200);
    match run(nodes, rumours, !self_test) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gossip_cluster failed: {e}");
            ExitCode::FAILURE
        }
    }
}
