//! A `netmesh` killed outright (its guards never run) leaves no process behind: its
//! nodes and its link queue end when their stdin closes. Its namespaces are removed
//! by the next run.
//!
//! Needs root and iproute2 (and netem or iptables); on a machine without them the
//! bench says it skipped, and so does this test (under CI the bench fails instead).

mod bench;

use std::process::{Command, Stdio};
use std::time::Duration;

use bench::{namespaces, processes_with, run, skipped, wait_for, BENCH};

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn a_killed_netmesh_leaves_namespaces_that_the_next_run_removes() {
    let mut first = Command::new(BENCH)
        .args(["--quiet", "netmesh", "--nodes=3", "--secs=60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start netmesh");
    let prefix = format!("wlm{}-", first.id());
    let nodes = || processes_with(&["wirelane-bench", "mesh-node"]);
    let started = std::time::Instant::now();
    // Its nodes running means its namespaces and links are made.
    while nodes().len() < 3 {
        if let Some(status) = first.try_wait().expect("wait") {
            // Exited before starting its nodes: this machine cannot run it.
            let again = run(&["--quiet", "netmesh", "--nodes=2", "--secs=1"], LIMIT);
            assert!(
                skipped(&again),
                "netmesh exited early ({status}): {}",
                again.stderr
            );
            eprintln!("netmesh_cleans_up: the bench skipped netmesh");
            return;
        }
        assert!(started.elapsed() < LIMIT, "netmesh's nodes did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!namespaces(&prefix).is_empty());
    first.kill().expect("SIGKILL netmesh");
    first.wait().expect("reap netmesh");

    wait_for("its nodes and link queue to end", LIMIT, || {
        nodes().is_empty() && processes_with(&["wirelane-bench", "link-queue"]).is_empty()
    });
    assert!(
        !namespaces(&prefix).is_empty(),
        "killed outright, it could not remove its namespaces"
    );

    let next = run(&["--quiet", "netmesh", "--nodes=2", "--secs=1"], LIMIT);
    assert!(next.status.success(), "{}\n{}", next.stdout, next.stderr);
    assert_eq!(
        namespaces(&prefix),
        Vec::<String>::new(),
        "the next run removed them"
    );
}
