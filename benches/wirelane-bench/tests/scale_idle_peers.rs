//! `scale` opens its idle connections from a child process, which answers the hub's
//! pings, and reads the hub's own figures: two threads per connection, the pings
//! answered during the idle window, the time to open them all; and the child is
//! gone when the run is.

mod bench;

use std::time::Duration;

use bench::{processes_with, records, run};

const CONNS: u64 = 40;

#[test]
fn scale_opens_idle_peers_from_a_child_that_answers_pings() {
    // An idle window longer than the ping interval (2 s), so that every connection
    // is pinged in it.
    let ran = run(
        &[
            "--json",
            "--quiet",
            "scale",
            &format!("--conns={CONNS}"),
            "--repeat=1",
            "--count=20000",
            "--idle-secs=3",
        ],
        Duration::from_secs(300),
    );
    assert!(ran.status.success(), "{}\n{}", ran.stdout, ran.stderr);
    let records = records(&ran.stdout);
    let crowded = records
        .iter()
        .find(|r| r["conns"] == CONNS)
        .unwrap_or_else(|| panic!("no record for {CONNS} connections: {}", ran.stdout));
    assert_eq!(crowded["threads_per_conn"].as_f64(), Some(2.0), "{crowded}");
    let pongs = crowded["pongs"].as_u64().expect("pongs");
    assert!(
        pongs >= CONNS,
        "{pongs} pings answered in 3 s by {CONNS} peers: {crowded}"
    );
    let rss = crowded["rss_kib_per_conn"]
        .as_f64()
        .expect("rss_kib_per_conn");
    assert!(rss > 0.0, "{crowded}");
    assert!(
        crowded["connect_s"].as_f64().is_some_and(|s| s > 0.0),
        "{crowded}"
    );
    assert!(ran.stderr.contains("0 connections ended"), "{}", ran.stderr);
    // Its idle peers were asked to leave and reaped.
    assert_eq!(
        processes_with(&["wirelane-bench", "idle-peers"]),
        Vec::<u32>::new()
    );
}
