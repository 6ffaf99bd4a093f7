//! The chaos thread of a `soak` run: it cuts a random connection every 100–500 ms,
//! on a schedule that a seed replays, so that a failing run can be run again.

use std::sync::Arc;
use std::time::Duration;

use wirelane::crossbeam_channel::{Receiver, RecvTimeoutError};
use wirelane::Node;

/// The chaos thread waits between this many milliseconds…
const CHAOS_MIN_MS: u64 = 100;
/// …and this many between two disconnects.
const CHAOS_MAX_MS: u64 = 500;

/// A small deterministic generator (SplitMix64), so that a seed replays the same
/// chaos schedule.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n > 0`); the modulo bias is negligible for small `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// What the chaos thread did.
#[derive(Debug, Default)]
pub struct ChaosLog {
    /// Disconnects that closed a connection.
    pub disconnects: u64,
    /// Picks that found the pair already disconnected.
    pub misses: u64,
}

/// Every 100–500 ms, one random node disconnects one random peer, until `stop`
/// disconnects. The schedule (pauses and pairs) depends on `seed` only.
pub fn chaos(nodes: &[Arc<Node>], seed: u64, stop: &Receiver<()>) -> ChaosLog {
    let mut rng = Rng(seed);
    let mut log = ChaosLog::default();
    let n = nodes.len() as u64;
    loop {
        let pause = CHAOS_MIN_MS + rng.below(CHAOS_MAX_MS - CHAOS_MIN_MS + 1);
        if let Ok(()) | Err(RecvTimeoutError::Disconnected) =
            stop.recv_timeout(Duration::from_millis(pause))
        {
            return log;
        }
        let a = rng.below(n) as usize;
        let mut b = rng.below(n - 1) as usize;
        if b >= a {
            b += 1;
        }
        if nodes[a].disconnect(nodes[b].id()) {
            log.disconnects += 1;
        } else {
            log.misses += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic_and_spreads() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        let xs: Vec<u64> = (0..100).map(|_| a.below(4)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(4)).collect();
        assert_eq!(xs, ys);
        assert!((0..4).all(|v| xs.contains(&v)));
        assert_ne!(Rng(1).next_u64(), Rng(2).next_u64());
    }
}
