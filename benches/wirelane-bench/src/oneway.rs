//! The one-way throughput driver: sender threads released together, a drain on the
//! calling thread, timed from the release to the last message drained.
//!
//! `throughput`, `scale` and the three baselines all measure the same thing — how
//! fast messages go one way through something — so they share this driver, and
//! their figures differ only by what they send through.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use wirelane::crossbeam_channel::RecvTimeoutError;
use wirelane::{Lane, Node, PeerId};

use crate::report::Record;
use crate::threads::{self, Named};

pub const FILL: u8 = 0x5A;
/// Longest a drain waits for the next message before the run is declared stuck.
const STALL: Duration = Duration::from_secs(30);
/// Longest wait for the senders once the drain has everything (or gave up).
const JOIN_DEADLINE: Duration = Duration::from_secs(30);
/// How long an empty inbound queue is waited on before the drain looks around.
const IDLE: Duration = Duration::from_millis(20);

/// A message count that keeps a run around a second or two for `size`-byte payloads.
pub fn default_count(size: usize) -> u64 {
    ((512u64 << 20) / (size as u64 + 6)).clamp(20_000, 3_000_000)
}

/// A throughput record from a count of `size`-byte messages in `elapsed`.
pub fn record(implementation: &str, size: usize, count: u64, elapsed: Duration) -> Record {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let per_sec = count as f64 / secs;
    Record::new("throughput", implementation)
        .set("size", size as u64)
        .set("count", count)
        .set("secs", secs)
        .set("msgs_per_s", per_sec)
        .set("mb_per_s", per_sec * size as f64 / 1e6)
}

/// Keeps the faster of `best` and `run`: the machine is shared, and the fastest run
/// is the one least disturbed.
pub fn keep_faster(best: &mut Option<Record>, run: Record) {
    if best.as_ref().is_none_or(|b| run.rate() > b.rate()) {
        *best = Some(run);
    }
}

/// Runs each sender on a thread of its own and `drain` on this one, releasing the
/// senders together, and times from the release to the drain's return. `drain` is
/// told whether every sender has finished. Returns what the drain returned.
///
/// # Errors
///
/// The drain's error, or a sender's; a sender that does not finish in time after
/// the drain returned ends the process (see [`threads::abandon`]).
pub fn timed<S, T>(
    name: &str,
    senders: Vec<S>,
    drain: impl FnOnce(&dyn Fn() -> bool) -> anyhow::Result<T>,
) -> anyhow::Result<(T, Duration)>
where
    S: FnOnce() -> anyhow::Result<()> + Send + 'static,
{
    let release = Arc::new(Barrier::new(senders.len() + 1));
    let threads: Vec<Named<anyhow::Result<()>>> = senders
        .into_iter()
        .enumerate()
        .map(|(i, send)| {
            let release = release.clone();
            threads::start(format!("{name}-send-{i}"), move || {
                release.wait();
                send()
            })
        })
        .collect();
    release.wait();
    let started = Instant::now();
    let drained = drain(&|| threads.iter().all(Named::is_finished));
    let elapsed = started.elapsed();
    let sent = threads::join_all(threads, Instant::now() + JOIN_DEADLINE);
    let drained = drained?;
    sent.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok((drained, elapsed))
}

/// Sends `per_sender` `size`-byte messages on `lane` from each of `senders` (one
/// thread each, every payload freshly allocated as an application would) into
/// `receiver`, drained by this thread. Returns the messages received and the time
/// from the first send to the last receipt.
///
/// Gossip can be dropped on the way, so for gossip the drain cannot count to a
/// known total: once the senders are done, it stops when the receiving side has
/// accounted for every accepted message.
///
/// # Errors
///
/// Fails if nothing arrives for [`STALL`] (the senders are then shut down, which
/// ends their waits), or if a private send fails.
pub fn wirelane(
    receiver: &Node,
    senders: &[Arc<Node>],
    size: usize,
    per_sender: u64,
    lane: Lane,
) -> anyhow::Result<(u64, Duration)> {
    let to = receiver.id();
    let from: HashSet<PeerId> = senders.iter().map(|s| s.id()).collect();
    let accepted = Arc::new(AtomicU64::new(0));
    let work = senders.iter().map(|node| {
        let (node, accepted) = (node.clone(), accepted.clone());
        move || -> anyhow::Result<()> {
            for _ in 0..per_sender {
                let payload = vec![FILL; size];
                let took = match lane {
                    Lane::Private => node.send(to, payload).map(|()| true)?,
                    _ => node.try_send(to, payload).is_ok(),
                };
                accepted.fetch_add(u64::from(took), Relaxed);
            }
            Ok(())
        }
    });
    timed("oneway", work.collect(), |done| {
        let count = per_sender * senders.len() as u64;
        let (mut received, mut progress_at, mut progress_count) = (0u64, Instant::now(), 0u64);
        loop {
            // Take what is there without looking at the clock; only an empty queue
            // waits.
            let incoming = receiver.incoming();
            match incoming.try_recv().or_else(|_| incoming.recv_timeout(IDLE)) {
                Ok(m) if from.contains(&m.from) && m.lane == lane => {
                    received += 1;
                    if lane == Lane::Private && received == count {
                        return Ok(received);
                    }
                    continue;
                }
                Ok(_) => continue,
                Err(RecvTimeoutError::Disconnected) => bail!("the receiver's inbound queue closed"),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if lane == Lane::Gossip && done() {
                let s = receiver.stats().gossip;
                if s.received + s.recv_dropped >= accepted.load(Relaxed) && received >= s.received {
                    return Ok(received);
                }
            }
            let now = Instant::now();
            if received > progress_count {
                (progress_at, progress_count) = (now, received);
            } else if now - progress_at > STALL {
                let seen = stall_report(receiver, senders);
                // Wakes the senders' waits, so that they can be joined.
                senders.iter().for_each(|s| s.shutdown());
                return Err(anyhow!(
                    "stalled after {received} of {count} messages: {seen}"
                ));
            }
        }
    })
}

/// What each side of each sender's connection says about the private lane, for a
/// run that stalled: where the messages are held.
fn stall_report(receiver: &Node, senders: &[Arc<Node>]) -> String {
    let sides: Vec<String> = senders
        .iter()
        .map(|s| {
            let out = s
                .peer_stats(receiver.id())
                .map_or("not connected".to_owned(), |p| {
                    format!(
                        "sent {} queued {} blocked senders {} window closed {} (waited {:?})",
                        p.private.sent,
                        p.private.queued,
                        p.blocked_senders,
                        p.window_closed,
                        p.window_wait
                    )
                });
            let inn = receiver
                .peer_stats(s.id())
                .map_or("not connected".to_owned(), |p| {
                    format!(
                        "received {}, {} bytes in, reader waiting {}",
                        p.private.received, p.bytes_in, p.reader_waiting
                    )
                });
            format!(
                "{} -> {}: {out}; {}: {inn}",
                s.id(),
                receiver.id(),
                receiver.id()
            )
        })
        .collect();
    sides.join(" | ")
}
