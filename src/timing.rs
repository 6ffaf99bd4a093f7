//! Histograms of how long things took: a sender waiting for room, a request waiting
//! for its reply. Recorded only where something waited or a request ended, never
//! on the path of a message that found room; read by [`Node::stats`](crate::Node::stats).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Buckets: at most 1 µs, 2 µs, 4 µs, … 2^24 µs (about 17 s), and the rest.
const BUCKETS: usize = 26;

/// A histogram of durations, as counted so far, from
/// [`NodeStats`](crate::NodeStats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Histogram {
    /// Upper bounds and how many durations were at most each, cumulative and in
    /// ascending order of bound; the last bound is [`Duration::MAX`] (everything).
    pub buckets: Vec<(Duration, u64)>,
    /// How many durations were recorded.
    pub count: u64,
    /// Their sum.
    pub sum: Duration,
}

impl Histogram {
    /// The upper bound of the bucket that holds the `q` quantile (`0.0..=1.0`), or
    /// `None` if nothing was recorded: "p99 is at most this".
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        self.buckets
            .iter()
            .find(|(_, n)| *n >= rank)
            .map(|(bound, _)| *bound)
    }
}

/// The counting side of a [`Histogram`]: atomics, added to by whoever waited.
pub(crate) struct Recorder {
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Recorder {
    pub(crate) fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket(ns)].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Histogram {
        let mut total = 0;
        let buckets = (0..BUCKETS)
            .map(|i| {
                total += self.counts[i].load(Relaxed);
                (bound(i), total)
            })
            .collect();
        Histogram {
            buckets,
            count: total,
            sum: Duration::from_nanos(self.sum_ns.load(Relaxed)),
        }
    }
}

/// The bucket a duration of `ns` nanoseconds falls in.
fn bucket(ns: u64) -> usize {
    let us = ns.div_ceil(1000);
    if us <= 1 {
        return 0;
    }
    ((u64::BITS - (us - 1).leading_zeros()) as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `i`.
fn bound(i: usize) -> Duration {
    if i == BUCKETS - 1 {
        Duration::MAX
    } else {
        Duration::from_micros(1 << i)
    }
}

/// What a node times, shared with its connections.
#[derive(Default)]
pub(crate) struct Timings {
    /// How long private sends (and requests) waited for room, those that waited.
    pub(crate) send_wait: Recorder,
    /// How long requests took from the call to their reply, those that got one.
    pub(crate) request: Recorder,
}

/// Times a wait from its first moment, recorded when dropped.
pub(crate) struct WaitTimer<'a> {
    into: &'a Recorder,
    since: Instant,
}

impl<'a> WaitTimer<'a> {
    pub(crate) fn start(into: &'a Recorder) -> WaitTimer<'a> {
        WaitTimer {
            into,
            since: Instant::now(),
        }
    }
}

impl Drop for WaitTimer<'_> {
    fn drop(&mut self) {
        self.into.record(self.since.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_the_bucket_whose_bound_holds_them() {
        for (ns, i) in [
            (0, 0),
            (1000, 0),
            (1001, 1),
            (2000, 1),
            (2001, 2),
            (4000, 2),
        ] {
            assert_eq!(bucket(ns), i, "{ns} ns");
            assert!(Duration::from_nanos(ns) <= bound(i));
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn a_snapshot_is_cumulative_and_answers_quantiles() {
        let r = Recorder::default();
        for us in [1, 3, 3, 100, 5000] {
            r.record(Duration::from_micros(us));
        }
        let h = r.snapshot();
        assert_eq!(h.count, 5);
        assert_eq!(h.sum, Duration::from_micros(5107));
        assert_eq!(h.buckets.last().unwrap().1, 5);
        assert_eq!(h.quantile(0.5), Some(Duration::from_micros(4)));
        assert_eq!(h.quantile(1.0), Some(Duration::from_micros(8192)));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
