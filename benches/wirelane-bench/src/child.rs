//! A child process driven through its stdin and stdout, one line each way, for the
//! jobs that put part of a run in another process (`scale`'s idle peers,
//! `netmesh`'s nodes and its link queue). Every wait has a deadline, a child that
//! ends early is reported with the last lines of its stderr, and dropping the
//! handle kills and reaps the child, whatever happened.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

use crate::threads::{start, Named};

/// Lines of a child's stderr kept for an error message.
const STDERR_TAIL: usize = 20;
/// How often [`Driven::finish`] looks whether the child has exited.
const POLL: Duration = Duration::from_millis(20);
/// How long the readers of a killed child's pipes are waited for.
const READERS_DEADLINE: Duration = Duration::from_secs(5);

/// A running child process. Dropping it kills and reaps it.
pub struct Driven {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// The last lines of its stderr.
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<Named<()>>,
}

impl Driven {
    /// Starts `command` with its three streams piped; `name` names it in errors
    /// and in its reader threads.
    pub fn spawn(name: &str, mut command: Command) -> anyhow::Result<Driven> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdin = child.stdin.take();
        let (stdout, stderr_pipe) = (child.stdout.take(), child.stderr.take());
        let (tx, lines) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(stdout) = stdout {
            readers.push(start(format!("{name}-out"), move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }));
        }
        if let Some(pipe) = stderr_pipe {
            let tail = stderr.clone();
            readers.push(start(format!("{name}-err"), move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                    if tail.len() == STDERR_TAIL {
                        tail.remove(0);
                    }
                    tail.push(line);
                }
            }));
        }
        Ok(Driven {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            stderr,
            readers,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one line.
    pub fn command(&mut self, line: &str) -> anyhow::Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(self.failed("its stdin is closed"));
        };
        let sent = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
        sent.map_err(|e| self.failed(&format!("sending `{line}`: {e}")))
    }

    /// Waits for a line that `done` accepts (every line is shown to it), until
    /// `deadline`. A line `error …` is the child's failure.
    pub fn wait_line(
        &mut self,
        deadline: Instant,
        what: &str,
        mut done: impl FnMut(&str) -> bool,
    ) -> anyhow::Result<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if done(&line) => return Ok(line),
                Ok(line) if line.starts_with("error ") => {
                    return Err(self.failed(&format!("while waiting for {what}: {line}")))
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(self.failed(&format!("no answer in time while waiting for {what}")))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(self.failed(&format!("it ended while waiting for {what}")))
                }
            }
        }
    }

    /// Closes its stdin and waits until `deadline` for it to exit; kills it then.
    pub fn finish(&mut self, deadline: Instant) -> anyhow::Result<ExitStatus> {
        drop(self.stdin.take());
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
                Ok(None) => {
                    let _ = self.child.kill();
                    return Err(self.failed("it did not exit in time, and was killed"));
                }
                Err(e) => return Err(self.failed(&format!("waiting for it: {e}"))),
            }
        }
    }

    /// An error about the child, with the end of its stderr.
    pub fn failed(&self, what: &str) -> anyhow::Error {
        // Give its last words a moment to arrive.
        thread::sleep(Duration::from_millis(100));
        let tail = self
            .stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n  ");
        if tail.is_empty() {
            anyhow!("{}: {what}", self.name)
        } else {
            anyhow!("{}: {what}; its stderr:\n  {tail}", self.name)
        }
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The pipes closed with the child, so the readers end.
        let deadline = Instant::now() + READERS_DEADLINE;
        for reader in self.readers.drain(..) {
            let _ = reader.join_by(deadline);
        }
    }
}
