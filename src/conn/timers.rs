//! The connection's clocks, as small state types that are told the time: when the
//! peer was last heard from, how long a graceful close may linger, how long the
//! peer's private lane has stayed full, and whether the reader looks for bytes
//! before it sleeps. Their threads read the clock and pass
//! `now` in, so every rule here is tested without sleeping.

use std::time::{Duration, Instant};

/// A graceful close lasts at most this many lingers, however steadily data moves.
pub(crate) const LINGER_CAP: u32 = 10;

/// When the peer was last heard from, against the silence timeout.
pub(crate) struct Silence {
    last: Instant,
    timeout: Duration,
}

impl Silence {
    pub(crate) fn new(now: Instant, timeout: Duration) -> Silence {
        Silence { last: now, timeout }
    }

    /// Something arrived (or the reader was busy with the application, which is not
    /// the peer's silence).
    pub(crate) fn heard(&mut self, now: Instant) {
        self.last = now;
    }

    /// When the peer was last heard from.
    pub(crate) fn last(&self) -> Instant {
        self.last
    }

    /// How long the peer has been silent, if that is past the timeout.
    pub(crate) fn dead(&self, now: Instant) -> Option<Duration> {
        let silent = now.saturating_duration_since(self.last);
        (silent >= self.timeout).then_some(silent)
    }
}

/// How long a graceful close waits for the peer: a linger from the last time data
/// moved, and never past a cap of [`LINGER_CAP`] lingers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Linger {
    linger: Duration,
    deadline: Option<Instant>,
    cap: Option<Instant>,
    /// A bound no start or progress moves the close past: the node's shutdown.
    limit: Option<Instant>,
    /// When the clock last started: a reader that starts late (it waited for the
    /// readers before it) still gets its linger to read what was sent.
    started: Option<Instant>,
}

impl Linger {
    /// A linger that has not started: the connection is open.
    pub(crate) fn new(linger: Duration) -> Linger {
        Linger {
            linger,
            deadline: None,
            cap: None,
            limit: None,
            started: None,
        }
    }

    /// The close starts, or its clock starts again (a reader that could deliver
    /// nothing until now).
    pub(crate) fn start(&mut self, now: Instant) {
        let cap = now + self.linger * LINGER_CAP;
        let cap = self.limit.map_or(cap, |limit| cap.min(limit));
        self.cap = Some(cap);
        self.deadline = Some((now + self.linger).min(cap));
        self.started = Some(now);
    }

    /// The node is shutting down: whatever restarts the clock later, the close ends
    /// by `limit`. So a chain of readers, each waiting for the one before, does not
    /// add its lingers up: shutdown takes at most one cap.
    pub(crate) fn limit(&mut self, limit: Instant) {
        self.limit = Some(self.limit.map_or(limit, |l| l.min(limit)));
        if let Some(cap) = &mut self.cap {
            *cap = (*cap).min(limit);
        }
        if let Some(deadline) = &mut self.deadline {
            *deadline = (*deadline).min(limit);
        }
    }

    /// Data moved: the peer is slow, not gone. No-op before the close starts.
    pub(crate) fn progress(&mut self, now: Instant) {
        if let Some(cap) = self.cap {
            self.deadline = Some((now + self.linger).min(cap));
        }
    }

    /// The longest a close may last: the cap.
    pub(crate) fn longest(&self) -> Duration {
        self.linger * LINGER_CAP
    }

    /// When the close gives up, as things stand; `None` while open.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether nothing has moved for a linger.
    pub(crate) fn over(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// Whether the close has lasted as long as it may wait for the application.
    pub(crate) fn capped(&self, now: Instant) -> bool {
        self.cap.is_some_and(|c| now >= c)
    }

    /// Whether the close has outlasted its cap by another cap: the most a capped
    /// reader has to read what the peer already sent (counting it, not delivering
    /// it) before the socket is cut. It is cut sooner once nothing arrives for a
    /// linger.
    pub(crate) fn drained(&self, now: Instant) -> bool {
        let from = self.cap.max(self.started);
        from.is_some_and(|from| now >= from + self.linger * LINGER_CAP)
    }
}

/// Since when the peer's private lane has been full, as the reader last looked.
pub(crate) struct SlowWatch {
    after: Duration,
    since: Option<Instant>,
    reported: bool,
}

impl SlowWatch {
    pub(crate) fn new(after: Duration) -> SlowWatch {
        SlowWatch {
            after,
            since: None,
            reported: false,
        }
    }

    /// Looks at the lane; returns how long it has been full the first time that is
    /// `after` or longer in one episode (an episode ends when the lane has room).
    pub(crate) fn observe(&mut self, full: bool, now: Instant) -> Option<Duration> {
        if !full {
            self.since = None;
            self.reported = false;
            return None;
        }
        let full_for = now.saturating_duration_since(*self.since.get_or_insert(now));
        if self.reported || full_for < self.after {
            return None;
        }
        self.reported = true;
        Some(full_for)
    }
}

/// Most failed looks in a row that lengthen the back-off: after them the reader
/// skips 2^6 - 1 = 63 chances between looks.
const SPIN_BACKOFF_MAX: u32 = 6;

/// Whether a reader out of bytes, after a read that brought data, looks for more
/// for a while before it sleeps (see [`Config::read_spin`]). Each look that finds
/// nothing doubles the chances skipped before the next, up to 63; one that finds
/// bytes ends the back-off.
///
/// [`Config::read_spin`]: crate::Config::read_spin
pub(crate) struct ReadSpin {
    limit: Duration,
    failures: u32,
    skip: u32,
}

impl ReadSpin {
    pub(crate) fn new(limit: Duration) -> ReadSpin {
        ReadSpin {
            limit,
            failures: 0,
            skip: 0,
        }
    }

    /// How long to look this time, if at all.
    pub(crate) fn next(&mut self) -> Option<Duration> {
        if self.limit.is_zero() {
            return None;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        Some(self.limit)
    }

    /// What the look found.
    pub(crate) fn found(&mut self, bytes: bool) {
        if bytes {
            self.failures = 0;
            self.skip = 0;
        } else {
            self.failures = (self.failures + 1).min(SPIN_BACKOFF_MAX);
            self.skip = (1 << self.failures) - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_peer_is_dead_after_the_timeout_since_it_was_last_heard() {
        let t0 = Instant::now();
        let mut silence = Silence::new(t0, 100 * MS);
        assert_eq!(silence.dead(t0 + 99 * MS), None);
        assert_eq!(silence.dead(t0 + 100 * MS), Some(100 * MS));
        silence.heard(t0 + 100 * MS);
        assert_eq!(silence.dead(t0 + 150 * MS), None);
        assert_eq!(silence.dead(t0 + 250 * MS), Some(150 * MS));
    }

    #[test]
    fn a_linger_moves_with_progress_up_to_its_cap() {
        let t0 = Instant::now();
        let mut linger = Linger::new(100 * MS);
        linger.progress(t0);
        assert_eq!(
            linger.deadline(),
            None,
            "an open connection does not linger"
        );
        assert!(!linger.over(t0 + 10_000 * MS));
        linger.start(t0);
        assert!(!linger.over(t0 + 99 * MS));
        assert!(linger.over(t0 + 100 * MS));
        linger.progress(t0 + 90 * MS);
        assert!(!linger.over(t0 + 150 * MS), "data moved at 90 ms");
        assert!(linger.over(t0 + 190 * MS));
        // However steadily data moves, the close ends at ten lingers.
        linger.progress(t0 + 950 * MS);
        assert_eq!(linger.deadline(), Some(t0 + 1000 * MS));
        assert!(!linger.capped(t0 + 999 * MS));
        assert!(linger.capped(t0 + 1000 * MS));
        assert!(!linger.drained(t0 + 1999 * MS) && linger.drained(t0 + 2000 * MS));
        // Starting again (a reader that waited for its predecessors) moves both.
        linger.start(t0 + 2000 * MS);
        assert!(!linger.over(t0 + 2050 * MS) && !linger.capped(t0 + 2999 * MS));
        // A shutdown's limit holds against later starts and progress.
        linger.limit(t0 + 2500 * MS);
        assert!(linger.capped(t0 + 2500 * MS));
        linger.start(t0 + 2400 * MS);
        linger.progress(t0 + 2450 * MS);
        assert_eq!(linger.deadline(), Some(t0 + 2500 * MS));
        assert!(linger.capped(t0 + 2500 * MS));
        // A reader that starts after the limit still has a linger to read.
        linger.start(t0 + 3000 * MS);
        assert!(linger.capped(t0 + 3000 * MS));
        assert!(!linger.drained(t0 + 3999 * MS) && linger.drained(t0 + 4000 * MS));
    }

    #[test]
    fn a_full_lane_is_reported_once_per_episode_after_the_threshold() {
        let t0 = Instant::now();
        let mut watch = SlowWatch::new(100 * MS);
        assert_eq!(watch.observe(true, t0), None);
        assert_eq!(watch.observe(true, t0 + 99 * MS), None);
        assert_eq!(watch.observe(true, t0 + 120 * MS), Some(120 * MS));
        assert_eq!(watch.observe(true, t0 + 500 * MS), None, "once per episode");
        assert_eq!(watch.observe(false, t0 + 501 * MS), None);
        assert_eq!(watch.observe(true, t0 + 600 * MS), None);
        assert_eq!(watch.observe(true, t0 + 700 * MS), Some(100 * MS));
    }

    #[test]
    fn failed_looks_back_off_and_a_found_one_ends_the_back_off() {
        let looks = |spin: &mut ReadSpin, chances: usize| {
            (0..chances).filter(|_| spin.next().is_some()).count()
        };
        let mut spin = ReadSpin::new(MS);
        assert_eq!(looks(&mut spin, 10), 10, "no failure yet: every chance");
        // Failures in a row: 1, 3, 7, ... chances skipped after each, up to 63.
        for skipped in [1, 3, 7, 15, 31, 63, 63, 63] {
            assert_eq!(spin.next(), Some(MS));
            spin.found(false);
            assert_eq!(looks(&mut spin, skipped), 0);
        }
        assert_eq!(spin.next(), Some(MS));
        spin.found(true);
        assert_eq!(looks(&mut spin, 10), 10, "found: no more skipping");
        // Zero never looks.
        let mut never = ReadSpin::new(Duration::ZERO);
        assert_eq!(looks(&mut never, 100), 0);
    }
}
