//! `netmesh` runs a full mesh of node processes, each in a network namespace of its
//! own, over links that delay and lose packets, and accounts for every private
//! message; it removes its namespaces when it ends.
//!
//! Needs root and iproute2 (and netem or iptables); on a machine without them the
//! bench says it skipped, and so does this test (under CI the bench fails instead).

mod bench;

use std::time::Duration;

use bench::{namespaces, run, skipped};

#[test]
fn a_netmesh_accounts_for_every_private_message_and_removes_its_namespaces() {
    let ran = run(
        &["--quiet", "netmesh", "--nodes=3", "--secs=2"],
        Duration::from_secs(300),
    );
    if skipped(&ran) {
        eprintln!(
            "netmesh_reconciles: the bench skipped netmesh:\n{}",
            ran.stderr
        );
        return;
    }
    assert!(ran.status.success(), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("result: PASS"), "{}", ran.stdout);
    assert!(
        ran.stdout
            .contains("lost private messages: 0   reordered/duplicated: 0"),
        "{}",
        ran.stdout
    );
    let line = ran
        .stdout
        .lines()
        .find(|l| l.starts_with(" private") || l.starts_with("private "))
        .unwrap_or_else(|| panic!("no private row: {}", ran.stdout));
    let received: u64 = line
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a bad private row: {line}"));
    assert!(received > 0, "no private message crossed: {line}");
    assert!(ran.stdout.contains("links: "), "{}", ran.stdout);
    // Every namespace a run makes is named wlm<its pid>-…; none is left.
    let left: Vec<String> = namespaces("wlm")
        .into_iter()
        .filter(|ns| ns.ends_with("-br") || ns.contains('-'))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
