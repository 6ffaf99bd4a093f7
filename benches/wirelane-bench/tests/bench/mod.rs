//! Helpers for the tests that run the bench binary whole: a run with a deadline, its
//! JSON records, the processes and namespaces a run leaves behind.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The bench binary.
pub const BENCH: &str = env!("CARGO_BIN_EXE_wirelane-bench");

/// How often a wait looks again; no outcome depends on it.
const POLL: Duration = Duration::from_millis(50);

/// What a finished run printed.
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the bench with `args` and waits for it until `limit` has passed; a run
/// still going then is killed and the test fails.
#[track_caller]
pub fn run(args: &[&str], limit: Duration) -> Ran {
    let child = Command::new(BENCH)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BENCH}: {e}"));
    finish(child, limit, &args.join(" "))
}

/// Runs `script` with `sh -c`, `$BENCH` set to the bench binary, with a deadline
/// as [`run`].
#[track_caller]
pub fn run_shell(script: &str, limit: Duration) -> Ran {
    let child = Command::new("sh")
        .args(["-c", script])
        .env("BENCH", BENCH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start sh: {e}"));
    finish(child, limit, script)
}

#[track_caller]
fn finish(mut child: Child, limit: Duration, what: &str) -> Ran {
    // The pipes are read as the run goes, so that a full pipe never stalls it.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let stdout = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the bench") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{what}` did not finish within {limit:?}");
        }
        thread::sleep(POLL);
    };
    Ran {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// The JSON records a `--json` run printed.
pub fn records(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Processes whose command line contains every one of `words`.
pub fn processes_with(words: &[&str]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            words.iter().all(|w| cmdline.contains(w))
        })
        .collect()
}

/// Network namespaces whose name starts with `prefix`.
pub fn namespaces(prefix: &str) -> Vec<String> {
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Polls `condition` until it holds, failing the test at `limit`.
#[track_caller]
pub fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        thread::sleep(POLL);
    }
}

/// Whether the bench said it skipped a run this machine cannot give it (it then
/// checked nothing; under CI it fails instead, so this is never true there).
pub fn skipped(ran: &Ran) -> bool {
    ran.stderr.contains("SKIPPED")
}
