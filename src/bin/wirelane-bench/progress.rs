//! Progress on stderr for runs longer than two seconds.
//!
//! Shown only when stderr is a terminal and `--quiet` was not given, so that logs
//! and pipes get clean output. A named ticker thread redraws one line twice a second
//! and is stopped and joined when the run ends.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

/// Runs this long before any progress appears.
const QUIET_START: Duration = Duration::from_secs(2);
const REDRAW: Duration = Duration::from_millis(500);

/// A progress line on stderr; dropped or [`Progress::finish`]ed to stop it.
pub struct Progress {
    stop: Option<Sender<()>>,
    ticker: Option<JoinHandle<()>>,
    done: Arc<AtomicU64>,
}

impl Progress {
    /// Starts showing `label` with elapsed time and, if `total` is given, how much of
    /// it is done (as counted through [`Progress::counter`]).
    pub fn start(label: &str, total: Option<u64>, quiet: bool) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        if quiet || !std::io::stderr().is_terminal() {
            return Progress {
                stop: None,
                ticker: None,
                done,
            };
        }
        let (stop, stopped) = bounded::<()>(0);
        let (label, counter) = (label.to_owned(), done.clone());
        let ticker = thread::Builder::new()
            .name("bench-progress".to_owned())
            .spawn(move || {
                let started = Instant::now();
                let mut drawn = false;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(REDRAW) {
                    let elapsed = started.elapsed();
                    if elapsed < QUIET_START {
                        continue;
                    }
                    let done = counter.load(Ordering::Relaxed);
                    let amount = match total {
                        Some(total) if total > 0 => {
                            format!(
                                " {done}/{total} ({:.0}%)",
                                done as f64 * 100.0 / total as f64
                            )
                        }
                        _ => String::new(),
                    };
                    eprint!("\r{label}: {:.0} s{amount}   ", elapsed.as_secs_f64());
                    let _ = std::io::stderr().flush();
                    drawn = true;
                }
                if drawn {
                    eprint!("\r\x1b[2K");
                    let _ = std::io::stderr().flush();
                }
            })
            .ok();
        Progress {
            stop: Some(stop),
            ticker,
            done,
        }
    }

    /// The counter the run advances as it goes.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.done.clone()
    }

    /// Stops the line and joins the ticker.
    pub fn finish(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        drop(self.stop.take());
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop_now();
    }
}
