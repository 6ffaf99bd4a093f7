//! A `load` whose connection is refused exits non-zero and says why on stderr:
//! its certificate is signed by a CA `serve` does not trust, or it speaks TLS to a
//! plaintext `serve`. A `load` with a certificate from `serve`'s own CA is served,
//! so that the refusals are the certificates' doing.
//!
//! The real binary runs as `serve` and `load` in child processes, with certificates
//! from its `certs` subcommand.

mod bench;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bench::{Ran, BENCH};

/// Only turns a hang into a failure.
const GUARD: Duration = Duration::from_secs(60);

/// A directory of its own for one test, under cargo's scratch directory.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("load_refused-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `certs --out DIR --ids IDS`, which must succeed.
fn certs(dir: &Path, ids: &str) {
    let out = run(&["certs", "--out", &dir.display().to_string(), "--ids", ids]);
    assert!(out.status.success(), "certs failed: {}", out.stderr);
}

/// The options that give node `id` its certificate from `dir`.
fn tls(dir: &Path, id: u64) -> Vec<String> {
    let d = dir.display();
    vec![
        format!("--cert={d}/node-{id}.pem"),
        format!("--key={d}/node-{id}.key"),
        format!("--ca={d}/ca.pem"),
    ]
}

/// Runs the binary to its end, within the guard.
fn run(args: &[&str]) -> Ran {
    bench::run(args, GUARD)
}

/// Checks that a `load` was refused: exit code 1, the reason on stderr naming TLS.
#[track_caller]
fn assert_refused_over_tls(refused: &Ran) {
    let why = &refused.stderr;
    assert_eq!(refused.status.code(), Some(1), "{why}");
    assert!(why.contains("cannot connect to"), "{why}");
    assert!(
        why.to_lowercase().contains("tls"),
        "the reason names TLS: {why}"
    );
}

/// `load --connect ADDR --id 1 --workload latency --count 20` with `extra`.
fn load(addr: &str, extra: &[String]) -> Ran {
    let mut args = vec!["--quiet", "load", "--connect", addr, "--id", "1"];
    args.extend(["--workload", "latency", "--count", "20"]);
    args.extend(extra.iter().map(String::as_str));
    run(&args)
}

/// A `serve` child process; killed and reaped when dropped, also when a test fails.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    /// Starts `serve --listen 127.0.0.1:0 --id 2` with `extra`, and waits until it
    /// says where it listens.
    fn start(extra: &[String]) -> Serve {
        let child = Command::new(BENCH)
            .args(["serve", "--listen", "127.0.0.1:0", "--id", "2"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BENCH} serve: {e}"));
        // Owned from here on, so that a failed wait below still kills it.
        let mut serve = Serve {
            child,
            addr: String::new(),
        };
        let (tx, rx) = mpsc::channel();
        let stderr = serve.child.stderr.take().expect("piped stderr");
        // Read to the end, also once the address is known: a closed pipe would end
        // `serve` at its next log line.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Shown with a failing test only.
                eprintln!("[serve] {line}");
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("serve never said where it listens: {e}"));
            if let Some(rest) = line.split(" listening on ").nth(1) {
                let addr = rest.split_whitespace().next().expect("an address");
                serve.addr = addr.to_owned();
                return serve;
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_load_whose_certificate_serve_does_not_trust_exits_non_zero_saying_why() {
    let (ours, theirs) = (scratch("ours"), scratch("theirs"));
    certs(&ours, "1,2");
    certs(&theirs, "1");
    let serve = Serve::start(&tls(&ours, 2));

    let served = load(&serve.addr, &tls(&ours, 1));
    assert!(served.status.success(), "{}", served.stderr);

    let refused = load(&serve.addr, &tls(&theirs, 1));
    assert_refused_over_tls(&refused);
    drop(serve);
    let _ = std::fs::remove_dir_all(&ours);
    let _ = std::fs::remove_dir_all(&theirs);
}

#[test]
fn a_tls_load_against_a_plaintext_serve_exits_non_zero_saying_why() {
    let dir = scratch("plain");
    certs(&dir, "1");
    let serve = Serve::start(&[]);

    let served = load(&serve.addr, &[]);
    assert!(served.status.success(), "{}", served.stderr);

    let refused = load(&serve.addr, &tls(&dir, 1));
    assert_refused_over_tls(&refused);
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}
