//! Network namespaces for runs across many hosts on one machine: commands to run
//! (`ip`, `tc`, `iptables`), what the machine lacks for them, and [`Mesh`], a
//! namespace per node joined by a bridge in a namespace of its own.
//!
//! Standard library only, so that the fault tests (`tests/fault/netns.rs`) use the
//! same commands and the same checks.
//!
//! Everything a run creates is named after its process (`wlm<pid>-…`) and removed
//! when its guard is dropped, also when the run fails; what a run killed outright
//! left behind is removed by the next run ([`sweep_stale`]).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs a command; its stdout, or what went wrong.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    run_with_input(program, args, None)
}

/// Runs a command with `input` on its stdin (if any); its stdout, or what went
/// wrong.
pub fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let shown = format!("`{program} {}`", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{shown} cannot run: {e}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("{shown}: writing its input: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{shown}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip` with `args`, split at whitespace.
pub fn ip(args: &str) -> Result<String, String> {
    run("ip", &args.split_whitespace().collect::<Vec<_>>())
}

/// Whether the run is under CI (the `CI` variable set, as CI services and
/// `.ci/run` do): there, a check that cannot run must fail rather than skip, so
/// that a machine that lost a prerequisite is noticed.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Why this process is not root, if it is not: namespaces, links and packet
/// filters need root.
pub fn not_root() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // "Uid: real effective saved fs"
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
    (euid.as_deref() != Some("0")).then(|| {
        format!(
            "root: this runs as uid {}, and namespaces, links and packet filters need root",
            euid.as_deref().unwrap_or("?")
        )
    })
}

/// Why `program` cannot be used, if it cannot: `program args` must run.
pub fn lacks(program: &str, args: &[&str], package: &str) -> Option<String> {
    run(program, args)
        .err()
        .map(|e| format!("`{program}` from {package}: {e}"))
}

/// Deletes namespaces named `<prefix><pid>-…` whose process is gone: an earlier run
/// killed before its guards ran.
pub fn sweep_stale(prefix: &str) {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// The prefix of every namespace a [`Mesh`] creates.
pub const MESH_PREFIX: &str = "wlm";
/// The name of every node's end of its link, inside its namespace.
pub const NODE_IF: &str = "eth0";

/// How the links delay and lose packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulation {
    /// `tc netem` on both ends of every link.
    Netem,
    /// No netem in this kernel: every packet crossing the bridge goes through an
    /// NFQUEUE to a process that holds it and drops some (`link-queue`).
    Queue,
}

/// A namespace per node, each with one end of a veth pair (`eth0`, 10.77.0.N/24),
/// the other ends on a bridge in a namespace of its own: one link per node, and
/// every pair of nodes two links apart, as hosts on one switch. Dropping it
/// deletes every namespace, which takes the links with them.
#[derive(Debug)]
pub struct Mesh {
    pub bridge: String,
    pub nodes: Vec<String>,
}

impl Mesh {
    /// Creates the bridge's namespace and `count` node namespaces (at most 250).
    ///
    /// # Errors
    ///
    /// What the machine refused; whatever was made by then is removed.
    pub fn create(count: usize) -> Result<Mesh, String> {
        assert!(count <= 250, "one /24 holds the nodes");
        sweep_stale(MESH_PREFIX);
        let pid = std::process::id();
        let bridge = format!("{MESH_PREFIX}{pid}-br");
        run("ip", &["netns", "add", &bridge])?;
        // From here on, a failure drops `mesh`, which removes what was made.
        let mut mesh = Mesh {
            bridge,
            nodes: Vec::new(),
        };
        let br = mesh.bridge.clone();
        for step in [
            format!("-n {br} link add br0 type bridge"),
            format!("-n {br} link set br0 up"),
            format!("-n {br} link set lo up"),
        ] {
            ip(&step)?;
        }
        for i in 0..count {
            let ns = format!("{MESH_PREFIX}{pid}-{}", i + 1);
            run("ip", &["netns", "add", &ns])?;
            mesh.nodes.push(ns.clone());
            let port = format!("p{}", i + 1);
            let addr = mesh.node_ip(i);
            // `gso_max_segs 1`: the stack hands each link one segment per packet, as
            // a real network carries them, instead of 64 KiB super-packets; so 1%
            // loss loses 1% of the segments.
            for step in [
                format!("-n {br} link add {port} type veth peer name {NODE_IF} netns {ns}"),
                format!("-n {br} link set dev {port} gso_max_segs 1"),
                format!("-n {ns} link set dev {NODE_IF} gso_max_segs 1"),
                format!("-n {br} link set {port} master br0"),
                format!("-n {br} link set {port} up"),
                format!("-n {ns} addr add {addr}/24 dev {NODE_IF}"),
                format!("-n {ns} link set {NODE_IF} up"),
                format!("-n {ns} link set lo up"),
            ] {
                ip(&step)?;
            }
        }
        Ok(mesh)
    }

    /// Node `i`'s address (from 0).
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, i as u8 + 1)
    }

    /// Every link's name, in the namespace that holds that end: each node's end and
    /// the bridge's end.
    fn link_ends(&self) -> Vec<(String, String)> {
        let mut ends = Vec::new();
        for (i, ns) in self.nodes.iter().enumerate() {
            ends.push((ns.clone(), NODE_IF.to_owned()));
            ends.push((self.bridge.clone(), format!("p{}", i + 1)));
        }
        ends
    }

    /// Delays every packet leaving either end of every link by `delay` and loses
    /// `loss_pct` percent of them, with `tc netem`.
    ///
    /// # Errors
    ///
    /// Why not (typically: this kernel has no netem); nothing is left installed.
    pub fn netem(&self, delay: Duration, loss_pct: f64) -> Result<(), String> {
        let spec = format!("root netem delay {}us loss {loss_pct}%", delay.as_micros());
        for (ns, dev) in self.link_ends() {
            let args = format!("netns exec {ns} tc qdisc add dev {dev} {spec}");
            if let Err(e) = ip(&args) {
                self.no_netem();
                return Err(e);
            }
        }
        Ok(())
    }

    fn no_netem(&self) {
        for (ns, dev) in self.link_ends() {
            let _ = ip(&format!("netns exec {ns} tc qdisc del dev {dev} root"));
        }
    }

    /// Sends every IPv4 packet crossing the bridge to NFQUEUE `queue` (the bridge
    /// hands bridged packets to iptables with `bridge-nf-call-iptables`), for a
    /// `link-queue` process in the bridge's namespace to delay and drop. Without
    /// that process, nothing crosses.
    ///
    /// # Errors
    ///
    /// Why not: no iptables with the NFQUEUE target, or no bridge netfilter.
    pub fn queue_rules(&self, queue: u16) -> Result<(), String> {
        let br = &self.bridge;
        ip(&format!(
            "netns exec {br} sysctl -q -w net.bridge.bridge-nf-call-iptables=1"
        ))?;
        let iptables = iptables()?;
        ip(&format!(
            "netns exec {br} {iptables} -w -A FORWARD -j NFQUEUE --queue-num {queue}"
        ))?;
        Ok(())
    }
}

/// The iptables that has the NFQUEUE target: the legacy one where both are
/// installed (the nft-based one translates the target into nftables' `queue`,
/// which some kernels lack).
pub fn iptables() -> Result<&'static str, String> {
    ["iptables-legacy", "iptables"]
        .into_iter()
        .find(|p| run(p, &["--version"]).is_ok())
        .ok_or_else(|| "`iptables` (package iptables) is not installed".to_owned())
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // A namespace's links and rules go with it; deleting a node's namespace
        // deletes its veth pair, the bridge's end included.
        for ns in self.nodes.iter().chain(std::iter::once(&self.bridge)) {
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}
