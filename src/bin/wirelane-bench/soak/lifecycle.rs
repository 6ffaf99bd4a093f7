//! Bringing a `soak` mesh up and down, and the run's threads: every one named,
//! every one joined by a deadline, and the run given up (rather than hung) when one
//! cannot be.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use wirelane::{Node, PeerId};

use crate::procfs;
use crate::threads::{self, Named};

/// Pause between two dials of the same pair when one failed.
const REDIAL_PAUSE: Duration = Duration::from_millis(50);
/// How often a wait checks its condition.
const WAIT_POLL: Duration = Duration::from_millis(5);
/// Longest wait for the nodes to shut down, and for the threads that end with them.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

/// Has the lower id of every pair dial the higher (again, after the load: a pair
/// already connected answers at once), then waits until every node has every peer
/// and each of those connections has its reader and writer running and no other
/// connection thread is left over.
pub fn connect_all(
    nodes: &[Arc<Node>],
    directory: &[(PeerId, SocketAddr)],
    deadline: Instant,
) -> Result<(), String> {
    for (i, node) in nodes.iter().enumerate() {
        for &(peer, addr) in &directory[i + 1..] {
            loop {
                match node.connect(addr) {
                    Ok(p) if p == peer => break,
                    Ok(p) => return Err(format!("{} dialled {peer} but reached {p}", node.id())),
                    Err(e) if Instant::now() >= deadline => {
                        return Err(format!("{} could not connect to {peer}: {e}", node.id()))
                    }
                    // A redial by the node's watcher may be racing this one.
                    Err(_) => thread::sleep(REDIAL_PAUSE),
                }
            }
        }
    }
    let others = nodes.len() - 1;
    let settled = || -> bool {
        let Ok(names) = procfs::thread_names() else {
            return false;
        };
        nodes.iter().all(|n| {
            let named =
                |what: char| procfs::count_prefixed(&names, &format!("wl{}-{what}", n.id().0));
            n.peers().len() == others && named('r') == others && named('w') == others
        })
    };
    if wait_until(deadline, settled) {
        return Ok(());
    }
    let seen: Vec<String> = nodes
        .iter()
        .map(|n| format!("{} has {}", n.id(), n.peers().len()))
        .collect();
    Err(format!(
        "the mesh did not settle with every pair connected by its deadline: {}",
        seen.join(", ")
    ))
}

/// Shuts every node down at once (each shutdown lingers for its peers, so one after
/// another would add up).
pub fn shut_down(nodes: &[Arc<Node>]) {
    let shutdowns: Vec<Named<()>> = nodes
        .iter()
        .map(|node| {
            let node = node.clone();
            start(&format!("soak-shutdown-{}", node.id().0), move || {
                node.shutdown()
            })
        })
        .collect();
    join_all(shutdowns, Instant::now() + SHUTDOWN_DEADLINE);
}

/// Gives up on the run when one of its threads cannot be started or joined: a stuck
/// thread is what a soak exists to catch, and waiting for it would hang. The process
/// exits at once, because the nodes that thread holds would, when dropped, wait for
/// their own shutdown too.
fn abandon(what: impl fmt::Display) -> ! {
    eprintln!("wirelane-bench: FAIL: {what}; exiting without waiting for it");
    std::process::exit(1)
}

/// Starts a named thread, or gives up on the run.
pub fn start<T, F>(name: &str, f: F) -> Named<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    threads::spawn(name.to_owned(), f)
        .unwrap_or_else(|e| abandon(format_args!("could not start thread `{name}`: {e}")))
}

/// Joins every thread by the deadline, in order, or gives up on the run.
pub fn join_all<T>(threads: Vec<Named<T>>, deadline: Instant) -> Vec<T> {
    threads
        .into_iter()
        .map(|t| t.join_by(deadline).unwrap_or_else(|e| abandon(e)))
        .collect()
}

/// Polls `condition` until it holds or the deadline passes; returns whether it held.
pub fn wait_until(deadline: Instant, mut condition: impl FnMut() -> bool) -> bool {
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(WAIT_POLL.min(deadline - now));
    }
}
