//! A handler that panics is logged and counted, and its worker goes on with the next
//! message; when the node shuts down, the pool handles what the node had received
//! and ends, every thread joined; a dropped pool stops at once.

mod util;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use util::{config, connect, finishes, node_with, tagged, untag, wait_until, GUARD};
use wirelane::{Dispatcher, PeerId};

/// This process's threads whose names start with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[test]
fn panics_are_counted_and_shutdown_ends_the_pool() {
    let server = node_with(1, config());
    let client = node_with(2, config());
    connect(&client, &server);
    let handled = Arc::new(AtomicU32::new(0));
    let pool = Dispatcher::builder()
        .workers(2)
        .name("shut-pool")
        .spawn(&server, {
            let handled = handled.clone();
            move |m| {
                let (_, seq) = untag(&m.payload);
                assert!(seq % 10 != 3, "the handler refuses message {seq}");
                handled.fetch_add(1, Ordering::SeqCst);
            }
        })
        .expect("spawn the pool");
    // A thread takes its name as it starts.
    wait_until("the pool's threads run", || threads_named("shut-pool") == 3);
    for seq in 0..100 {
        client.send(PeerId(1), tagged(2, seq, 16)).unwrap();
    }
    wait_until("every message is handled", || pool.stats().handled == 100);
    assert_eq!(pool.stats().panics, 10);
    assert_eq!(handled.load(Ordering::SeqCst), 90);

    // The node shuts down: the pool drains and ends by itself.
    finishes("shutdown and the pool's end", GUARD, move || {
        server.shutdown();
        pool.join();
    });
    assert_eq!(threads_named("shut-pool"), 0, "every thread joined");
    client.shutdown();
}

#[test]
fn dropping_the_pool_stops_it() {
    let server = node_with(1, config());
    let pool = Dispatcher::builder()
        .workers(3)
        .name("drop-pool")
        .spawn(&server, |_| {})
        .expect("spawn the pool");
    wait_until("the pool's threads run", || threads_named("drop-pool") == 4);
    finishes("the drop", GUARD, move || drop(pool));
    assert_eq!(
        threads_named("drop-pool"),
        0,
        "the feeder and three workers joined"
    );
}
