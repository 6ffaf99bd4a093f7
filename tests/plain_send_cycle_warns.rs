//! The cycle `respond` exists to avoid, built on purpose with plain `send`: each
//! node's only reader of `incoming()` answers every private message with a blocking
//! `send`, while other threads flood both ways through queues of one. The crate
//! cannot break this cycle (every bounded system has it), but it must say so: once
//! per connection, a warning names the cycle and the fix. And shutdown still frees
//! every blocked thread.

mod util;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use util::{config, connect, finishes, node_with, wait_until};
use wirelane::{Node, PeerId};

/// Keeps the warnings that name the cycle.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = record.args().to_string();
        if line.contains("respond()") {
            self.0.lock().unwrap().push(line);
        }
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

/// Floods `to` from two threads and answers every message received with `send`,
/// on the one thread that reads `incoming()`; every thread ends at shutdown.
fn flood_and_answer(node: &Arc<Node>, to: PeerId) -> Vec<thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for _ in 0..2 {
        let node = node.clone();
        threads.push(thread::spawn(
            move || {
                while node.send(to, vec![0u8; 64]).is_ok() {}
            },
        ));
    }
    let node = node.clone();
    threads.push(thread::spawn(move || {
        while let Ok(m) = node.incoming().recv() {
            if node.send(m.from, m.payload).is_err() {
                break;
            }
        }
    }));
    threads
}

#[test]
fn answering_with_send_on_the_receive_loop_is_named_once_per_connection() {
    log::set_logger(&CAPTURE).expect("the only logger of this test binary");
    log::set_max_level(log::LevelFilter::Warn);
    let cfg = config()
        .private_capacity(1)
        .inbound_capacity(1)
        .ping_interval(Duration::from_millis(100))
        .silence_timeout(Duration::from_millis(400));
    let a = Arc::new(node_with(1, cfg.clone()));
    let b = Arc::new(node_with(2, cfg));
    connect(&a, &b);

    let mut threads = flood_and_answer(&a, PeerId(2));
    threads.extend(flood_and_answer(&b, PeerId(1)));
    wait_until("both nodes warn of the cycle", || {
        let lines = CAPTURE.0.lock().unwrap();
        lines.iter().any(|l| l.starts_with("peer-1:"))
            && lines.iter().any(|l| l.starts_with("peer-2:"))
    });
    // Stuck for good: several more silence timeouts pass without another warning
    // for the same connections. (This sleep decides nothing about the cycle; it
    // only gives a second warning the time to appear if it were going to.)
    thread::sleep(Duration::from_millis(1500));
    {
        let lines = CAPTURE.0.lock().unwrap();
        for node in ["peer-1:", "peer-2:"] {
            let n = lines.iter().filter(|l| l.starts_with(node)).count();
            assert_eq!(n, 1, "node {node} warned {n} times: {lines:?}");
        }
        assert!(lines[0].contains("incoming()") && lines[0].contains("send_timeout"));
    }

    finishes(
        "shutdown frees every blocked thread",
        Duration::from_secs(60),
        move || {
            a.shutdown();
            b.shutdown();
            for t in threads {
                t.join().expect("a flooding or answering thread");
            }
        },
    );
}
