//! A network namespace joined to the test's own (root) namespace by a veth pair, for
//! the network fault tests; nftables rules inside the namespace to lose or drop
//! packets; and a relay that delays the bytes of a TCP connection.
//!
//! Everything created is named after this process (`wlf<pid>…`) and removed when the
//! guard is dropped, also when a test fails; a namespace left behind by a test
//! process that was killed outright is removed by the next run.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The name of the peer's end of the veth, inside the namespace.
pub const PEER_IF: &str = "wlpeer";
/// The nftables table the fault rules live in, inside the namespace.
const TABLE: &str = "wirelane_fault";

/// Says loudly that a test could not run here, and why; the test then returns
/// without checking anything. Under CI (the `CI` variable set, as CI services and
/// `.ci/run` do) a skip would hide that the check never ran, so it fails instead.
pub fn skip_banner(test: &str, missing: &[String]) {
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test} cannot run: CI is set, and this machine cannot give it a network \
             namespace and a veth pair. Missing: {}",
            missing.join("; ")
        );
    }
    let rule = "=".repeat(78);
    let mut text = format!(
        "\n{rule}\n  SKIPPED: {test} did NOT run.\n  This machine cannot give it a network namespace and a veth pair. Missing:\n"
    );
    for m in missing {
        text.push_str(&format!("    - {m}\n"));
    }
    text.push_str(
        "  It needs root, `ip` (iproute2) and `nft` (nftables); `.ci/run` installs the\n  tools. The test passes WITHOUT having checked anything.\n",
    );
    text.push_str(&rule);
    // Straight to the process's stderr, past the harness's capture: a skip must be
    // seen even when the test passes.
    let _ = writeln!(io::stderr().lock(), "{text}");
}

// The commands and checks `netmesh` uses too: one copy, in the bench's source.
#[path = "../../src/netns.rs"]
mod shared;

pub use shared::{ip, run};
use shared::{lacks, not_root, run_with_input};

/// What this machine lacks for the namespace tests; empty if nothing.
pub fn missing_prerequisites() -> Vec<String> {
    let mut missing: Vec<String> = not_root().into_iter().collect();
    missing.extend(lacks("ip", &["-V"], "iproute2"));
    missing.extend(lacks("nft", &["--version"], "nftables"));
    missing
}

/// A network namespace holding one end of a veth pair, the other end in the root
/// namespace, with a /30 of 10.192.0.0/10 between them. Dropping it deletes both.
pub struct Netns {
    pub name: String,
    /// The root namespace's end of the veth.
    pub host_if: String,
    /// The test's address, on `host_if`.
    pub host_ip: Ipv4Addr,
    /// The peer's address, on [`PEER_IF`] inside the namespace.
    pub peer_ip: Ipv4Addr,
}

impl Netns {
    /// Creates namespace number `index` (0 to 3) of this process. Returns what is
    /// missing if the machine refuses.
    pub fn create(index: u32) -> Result<Netns, Vec<String>> {
        assert!(index < 4);
        let missing = missing_prerequisites();
        if !missing.is_empty() {
            return Err(missing);
        }
        sweep_stale();
        let pid = std::process::id();
        // Distinct per live process and per test, so parallel tests (and parallel
        // runs) never share a name or a subnet.
        let slot = ((pid % (1 << 18)) << 2) | index;
        let base = u32::from(Ipv4Addr::new(10, 192, 0, 0)) + (slot << 2);
        let name = format!("wlf{pid}-{index}");
        run("ip", &["netns", "add", &name])
            .map_err(|e| vec![format!("network namespaces: {e}")])?;
        // From here on, a failure drops `ns`, which removes what was made.
        let ns = Netns {
            name,
            host_if: format!("wlf{pid}h{index}"),
            host_ip: Ipv4Addr::from(base + 1),
            peer_ip: Ipv4Addr::from(base + 2),
        };
        // `gso_max_segs 1`: the stack hands the link one segment per packet, as a
        // real network carries them, instead of 64 KiB super-packets; so a rule that
        // drops 5% of the packets drops 5% of the segments.
        let (name, host_if) = (&ns.name, &ns.host_if);
        let steps = [
            format!("link add {host_if} type veth peer name {PEER_IF} netns {name}"),
            format!("link set dev {host_if} gso_max_segs 1"),
            format!("-n {name} link set dev {PEER_IF} gso_max_segs 1"),
            format!("addr add {}/30 dev {host_if}", ns.host_ip),
            format!("link set {host_if} up"),
            format!("-n {name} addr add {}/30 dev {PEER_IF}", ns.peer_ip),
            format!("-n {name} link set {PEER_IF} up"),
            format!("-n {name} link set lo up"),
        ];
        for step in steps {
            ip(&step).map_err(|e| vec![format!("a veth pair: {e}")])?;
        }
        ns.nft("list tables\n")
            .map_err(|e| vec![format!("nftables in the namespace: {e}")])?;
        Ok(ns)
    }

    /// Runs `nft` inside the namespace with `script` as its input file.
    fn nft(&self, script: &str) -> Result<String, String> {
        run_with_input(
            "ip",
            &["netns", "exec", &self.name, "nft", "-f", "-"],
            Some(script),
        )
    }

    /// Installs `rule` on the namespace's end of the veth, for packets in both
    /// directions, replacing any rule installed before.
    ///
    /// Input drops are lost on the wire as far as the test's node can tell. Output
    /// drops happen inside the peer's own stack, which sees a failed transmission
    /// and retries it as it retransmits a lost segment; to wirelane, above TCP,
    /// both are the same stalled byte stream.
    pub fn filter(&self, rule: &str) {
        self.heal();
        let script = format!(
            "table inet {TABLE} {{
                chain input {{ type filter hook input priority 0; policy accept; iifname \"{PEER_IF}\" {rule}; }}
                chain output {{ type filter hook output priority 0; policy accept; oifname \"{PEER_IF}\" {rule}; }}
            }}\n"
        );
        self.nft(&script)
            .unwrap_or_else(|e| panic!("installing `{rule}`: {e}"));
    }

    /// Packets the rules installed by [`filter`](Netns::filter) have dropped so far
    /// (the rule must contain `counter`).
    pub fn dropped_packets(&self) -> u64 {
        let listing = ip(&format!(
            "netns exec {} nft list table inet {TABLE}",
            self.name
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let words: Vec<&str> = listing.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "packets")
            .map(|w| w[1].parse::<u64>().expect("a packet count"))
            .sum()
    }

    /// Removes the rules installed by [`filter`](Netns::filter), if any.
    pub fn heal(&self) {
        let _ = self.nft(&format!("delete table inet {TABLE}\n"));
    }

    /// Takes the namespace's end of the veth down: from then on nothing crosses the
    /// link, in either direction, and neither side is told.
    pub fn link_down(&self) {
        ip(&format!("-n {} link set {PEER_IF} down", self.name)).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Adds `delay` to every packet leaving either end of the veth with `tc netem`,
    /// if this kernel has it. Returns whether it does.
    pub fn try_netem(&self, delay: Duration) -> Result<(), String> {
        let netem = format!("root netem delay {}ms", delay.as_millis());
        let host = format!("qdisc add dev {} {netem}", self.host_if);
        run("tc", &host.split_whitespace().collect::<Vec<_>>())?;
        ip(&format!(
            "netns exec {} tc qdisc add dev {PEER_IF} {netem}",
            self.name
        ))
        .inspect_err(|_| {
            let _ = run("tc", &["qdisc", "del", "dev", &self.host_if, "root"]);
        })?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The nftables table and the namespace's end of the veth go with the
        // namespace; deleting our end removes the pair at once (deleting the
        // namespace alone frees its end in the background).
        let _ = run("ip", &["link", "del", &self.host_if]);
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Deletes namespaces that an earlier test process, now gone, left behind (it was
/// killed before its guards ran).
fn sweep_stale() {
    shared::sweep_stale("wlf");
}

/// A TCP relay on loopback that forwards each direction of every connection it
/// accepts to `target`, holding every chunk it reads for a fixed delay first.
///
/// This delays *segments* — whatever each read returned — rather than packets, and
/// it terminates TCP on both sides: its own kernel acknowledges the data at once,
/// so the delay is seen in the arrival of data and not in acknowledgements. For
/// wirelane, which sees only the byte stream, the effect is the same: everything
/// arrives `delay` late, in order.
pub struct Relay {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    pub fn start(target: SocketAddr, delay: Duration) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay bind");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sockets: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = {
            let (stop, sockets, threads) = (stop.clone(), sockets.clone(), threads.clone());
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let mut held = sockets.lock().unwrap();
                    held.push(client.try_clone().unwrap());
                    held.push(server.try_clone().unwrap());
                    drop(held);
                    let there = pump(
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        delay,
                    );
                    let back = pump(server, client, delay);
                    threads
                        .lock()
                        .unwrap()
                        .extend(there.into_iter().chain(back));
                }
            })
        };
        Relay {
            addr,
            stop,
            sockets,
            threads,
            acceptor: Some(acceptor),
        }
    }
}

/// Forwards `from` to `to`, each chunk `delay` after it was read: a reader thread
/// and a writer thread joined by a bounded queue, so a slow destination pushes back.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) -> [JoinHandle<()>; 2] {
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(256);
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    let writer = thread::spawn(move || {
        for (due, chunk) in rx {
            // Paces the forwarding; no outcome depends on it.
            thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        // The source ended (or this side failed): pass the end on.
        let _ = to.shutdown(Shutdown::Write);
    });
    [reader, writer]
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
        for s in self.sockets.lock().unwrap().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for t in std::mem::take(&mut *self.threads.lock().unwrap()) {
            let _ = t.join();
        }
    }
}
