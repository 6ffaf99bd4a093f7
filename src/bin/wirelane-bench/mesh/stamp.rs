//! The stamp every private message of a mesh run carries, and the check that each
//! stream of them arrives whole, once, and in order.
//!
//! The private lane promises per-peer order and no silent loss. Counting messages
//! alone cannot show a duplicate hiding a loss, or two messages swapped, so every
//! private payload starts with a stamp naming its stream (sender and receiver) and
//! its place in it, and each receiver checks that every stream addressed to it
//! counts 0, 1, 2, … with nothing missing or repeated.

use std::cmp::Ordering;
use std::collections::HashMap;

use wirelane::{Bytes, Lane, Message, PeerId};

/// The header of every private payload: who sent it, to whom, and its place in that
/// stream. The rest of the payload is filler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub src: PeerId,
    pub dst: PeerId,
    /// Counts from 0 per (`src`, `dst`), so that each receiver sees every stream
    /// addressed to it as 0, 1, 2, … with no gap.
    pub seq: u64,
}

impl Stamp {
    /// Marks a payload as one of this bench's stamps, so that a stray payload is
    /// reported as malformed rather than read as a sequence number.
    const MAGIC: [u8; 4] = *b"wlb2";
    /// Bytes a stamp takes at the start of a payload: the smallest payload a mesh
    /// run can use.
    pub const LEN: usize = 28;

    /// A payload of `len` bytes (at least [`Stamp::LEN`]) that starts with this stamp.
    pub fn encode(&self, len: usize) -> Bytes {
        let mut p = vec![0u8; len.max(Stamp::LEN)];
        p[0..4].copy_from_slice(&Stamp::MAGIC);
        p[4..12].copy_from_slice(&self.src.0.to_le_bytes());
        p[12..20].copy_from_slice(&self.dst.0.to_le_bytes());
        p[20..28].copy_from_slice(&self.seq.to_le_bytes());
        Bytes::from(p)
    }

    /// Reads the stamp back, or `None` if the payload does not start with one.
    pub fn decode(p: &[u8]) -> Option<Stamp> {
        if p.get(0..4)? != Stamp::MAGIC {
            return None;
        }
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(p.get(at..at + 8)?.try_into().ok()?))
        };
        Some(Stamp {
            src: PeerId(u64_at(4)?),
            dst: PeerId(u64_at(12)?),
            seq: u64_at(20)?,
        })
    }
}

/// Private messages that broke the lane's promise, as seen by the receivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Anomalies {
    /// A sequence number lower than expected: a duplicate, or a message that a later
    /// one overtook.
    pub behind: u64,
    /// A sequence number higher than expected: messages before it are missing (lost,
    /// or overtaken).
    pub ahead: u64,
    /// No stamp, or a stamp naming another sender or another receiver.
    pub malformed: u64,
}

impl Anomalies {
    pub fn total(&self) -> u64 {
        self.behind + self.ahead + self.malformed
    }
}

impl std::iter::Sum for Anomalies {
    fn sum<I: Iterator<Item = Anomalies>>(iter: I) -> Anomalies {
        iter.fold(Anomalies::default(), |a, b| Anomalies {
            behind: a.behind + b.behind,
            ahead: a.ahead + b.ahead,
            malformed: a.malformed + b.malformed,
        })
    }
}

/// Checks the private messages one node receives: the stream from each sender must
/// count 0, 1, 2, … — in order, exactly once.
#[derive(Debug)]
pub struct Checker {
    me: PeerId,
    /// The sequence number each sender's stream should deliver next.
    next: HashMap<PeerId, u64>,
    anomalies: Anomalies,
}

impl Checker {
    pub fn new(me: PeerId) -> Checker {
        Checker {
            me,
            next: HashMap::new(),
            anomalies: Anomalies::default(),
        }
    }

    /// What the checker has found so far.
    pub fn anomalies(&self) -> Anomalies {
        self.anomalies
    }

    /// Checks one received message; gossip is not checked.
    pub fn observe(&mut self, msg: &Message) {
        if msg.lane != Lane::Private {
            return;
        }
        let stamp = match Stamp::decode(&msg.payload) {
            Some(s) if s.src == msg.from && s.dst == self.me => s,
            _ => {
                self.anomalies.malformed += 1;
                return;
            }
        };
        let next = self.next.entry(stamp.src).or_insert(0);
        match stamp.seq.cmp(next) {
            Ordering::Equal => *next += 1,
            Ordering::Less => self.anomalies.behind += 1,
            Ordering::Greater => {
                self.anomalies.ahead += 1;
                *next = stamp.seq + 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private(from: u64, to: u64, seq: u64) -> Message {
        let stamp = Stamp {
            src: PeerId(from),
            dst: PeerId(to),
            seq,
        };
        Message {
            from: PeerId(from),
            lane: Lane::Private,
            payload: stamp.encode(64),
        }
    }

    #[test]
    fn a_stamp_reads_back_as_written() {
        let stamp = Stamp {
            src: PeerId(3),
            dst: PeerId(u64::MAX),
            seq: 1 << 40,
        };
        let payload = stamp.encode(64);
        assert_eq!(payload.len(), 64);
        assert_eq!(Stamp::decode(&payload), Some(stamp));
        assert_eq!(Stamp::decode(&payload[..Stamp::LEN]), Some(stamp));
        assert_eq!(Stamp::decode(&payload[..Stamp::LEN - 1]), None);
        assert_eq!(Stamp::decode(&[0u8; 64]), None);
        assert_eq!(stamp.encode(1).len(), Stamp::LEN);
    }

    #[test]
    fn the_checker_accepts_interleaved_streams_in_order() {
        let mut checker = Checker::new(PeerId(1));
        for seq in 0..3 {
            checker.observe(&private(2, 1, seq));
            checker.observe(&private(3, 1, seq));
        }
        assert_eq!(checker.anomalies(), Anomalies::default());
    }

    #[test]
    fn the_checker_flags_duplicates_gaps_and_strangers() {
        let mut checker = Checker::new(PeerId(1));
        for seq in [0, 1, 1, 3, 2] {
            checker.observe(&private(2, 1, seq));
        }
        // A message for another node, and one whose stamp names another sender.
        checker.observe(&private(2, 4, 0));
        let mut forged = private(3, 1, 0);
        forged.from = PeerId(2);
        checker.observe(&forged);
        let a = checker.anomalies();
        assert_eq!((a.behind, a.ahead, a.malformed), (2, 1, 2));
        assert_eq!(a.total(), 5);
    }

    #[test]
    fn gossip_is_not_checked() {
        let mut checker = Checker::new(PeerId(1));
        checker.observe(&Message {
            from: PeerId(2),
            lane: Lane::Gossip,
            payload: Bytes::from_static(b"anything"),
        });
        assert_eq!(checker.anomalies(), Anomalies::default());
    }
}
