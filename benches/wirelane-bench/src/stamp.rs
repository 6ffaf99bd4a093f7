//! The stamp every checked payload carries, and the one order checker of the bench.
//!
//! Counting messages alone cannot show a duplicate hiding a loss, or two messages
//! swapped, so `mesh`, `soak`, `deadlock` and `peer` stamp every payload with its
//! lane, sender, destination and a sequence number that counts 0, 1, 2, … per
//! stream with no gap (a failed send did not take the message, and its number is
//! used again). A gap in what arrives is fine only where the missing numbers were
//! handed back, which can be known only at the end (a hand-back can be reported
//! after later messages arrived), so the receiving side records sets and [`verify`]
//! compares them once everything has settled.

use serde_json::{json, Value};
use wirelane::{Bytes, Lane, PeerId};

/// The header of every checked payload. The rest of the payload is filler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub lane: Lane,
    pub src: PeerId,
    pub dst: PeerId,
    pub seq: u64,
}

impl Stamp {
    const MAGIC: [u8; 4] = *b"wls1";
    /// Bytes a stamp takes at the start of a payload.
    pub const LEN: usize = 32;

    /// A payload of `len` bytes (at least [`Stamp::LEN`]) that starts with this stamp.
    pub fn encode(&self, len: usize) -> Bytes {
        let mut p = vec![0u8; len.max(Stamp::LEN)];
        p[0..4].copy_from_slice(&Stamp::MAGIC);
        p[4] = match self.lane {
            Lane::Private => b'p',
            _ => b'g', // gossip, the only other lane the bench sends on
        };
        p[8..16].copy_from_slice(&self.src.0.to_le_bytes());
        p[16..24].copy_from_slice(&self.dst.0.to_le_bytes());
        p[24..32].copy_from_slice(&self.seq.to_le_bytes());
        Bytes::from(p)
    }

    /// Reads the stamp back, or `None` if the payload does not start with one.
    pub fn decode(p: &[u8]) -> Option<Stamp> {
        if p.len() < Stamp::LEN || p[0..4] != Stamp::MAGIC {
            return None;
        }
        let lane = match p[4] {
            b'g' => Lane::Gossip,
            b'p' => Lane::Private,
            _ => return None,
        };
        let u64_at =
            |at: usize| u64::from_le_bytes(p[at..at + 8].try_into().expect("an 8-byte slice"));
        Some(Stamp {
            lane,
            src: PeerId(u64_at(8)),
            dst: PeerId(u64_at(16)),
            seq: u64_at(24),
        })
    }
}

/// A growable set of sequence numbers, one bit each: a 30-second soak carries
/// millions of messages, and a bit per number keeps that to a few hundred KiB.
#[derive(Debug, Clone, Default)]
pub struct SeqSet {
    words: Vec<u64>,
}

impl SeqSet {
    /// Adds `seq`; returns whether it was new.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let was = self.words[word] & (1 << bit) != 0;
        self.words[word] |= 1 << bit;
        !was
    }

    fn word(&self, i: usize) -> u64 {
        self.words.get(i).copied().unwrap_or(0)
    }

    /// How many numbers at or above `from` are in the set.
    fn count_from(&self, from: u64) -> u64 {
        let first = (from / 64) as usize;
        let partial = (self.word(first) & !low_bits(from % 64)).count_ones();
        let rest: u32 = self
            .words
            .iter()
            .skip(first + 1)
            .map(|w| w.count_ones())
            .sum();
        u64::from(partial) + u64::from(rest)
    }
}

/// A mask of the lowest `n` bits, `n < 64`.
fn low_bits(n: u64) -> u64 {
    (1u64 << n) - 1
}

/// What one side saw of one stream: the numbers, and the ones that came twice or
/// late.
#[derive(Debug, Clone, Default)]
pub struct Track {
    seen: SeqSet,
    pub distinct: u64,
    pub duplicates: u64,
    /// Numbers first seen after a higher one: overtaken.
    pub reordered: u64,
    pub highest: Option<u64>,
    /// The first duplicate, and the first overtaken number with the number that had
    /// overtaken it, for the report.
    pub first_duplicate: Option<u64>,
    pub first_reordered: Option<(u64, u64)>,
}

impl Track {
    /// Records one number, in the order they are seen.
    pub fn observe(&mut self, seq: u64) {
        if !self.seen.insert(seq) {
            self.duplicates += 1;
            self.first_duplicate.get_or_insert(seq);
            return;
        }
        self.distinct += 1;
        match self.highest {
            Some(high) if seq < high => {
                self.reordered += 1;
                self.first_reordered.get_or_insert((seq, high));
            }
            _ => self.highest = Some(seq),
        }
    }

    /// The numbers seen, as runs `[start, end)` in increasing order.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (i, &word) in self.seen.words.iter().enumerate() {
            for bit in (0..64).filter(|b| word & (1 << b) != 0) {
                let seq = i as u64 * 64 + bit;
                match runs.last_mut() {
                    Some((_, end)) if *end == seq => *end += 1,
                    _ => runs.push((seq, seq + 1)),
                }
            }
        }
        runs
    }

    /// Whether every number from 0 up to `count` was seen once each, in order.
    pub fn is_whole(&self, count: u64) -> bool {
        self.distinct == count
            && self.duplicates == 0
            && self.reordered == 0
            && self.highest.map_or(0, |h| h + 1) == count
    }
}

impl Track {
    /// The track as JSON, for a node in another process to report what it saw: the
    /// set as hexadecimal words (a bit per number), and the counters.
    pub fn to_json(&self) -> Value {
        let words: String = self
            .seen
            .words
            .iter()
            .map(|w| format!("{w:016x}"))
            .collect();
        json!({
            "words": words,
            "distinct": self.distinct,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "highest": self.highest,
            "first_duplicate": self.first_duplicate,
            "first_reordered": self.first_reordered.map(|(a, b)| [a, b]),
        })
    }

    /// Reads back what [`Track::to_json`] wrote; `None` if it does not parse.
    pub fn from_json(v: &Value) -> Option<Track> {
        let hex = v.get("words")?.as_str()?;
        if hex.len() % 16 != 0 {
            return None;
        }
        let words = (0..hex.len() / 16)
            .map(|i| u64::from_str_radix(hex.get(i * 16..i * 16 + 16)?, 16).ok())
            .collect::<Option<Vec<u64>>>()?;
        let number = |key: &str| v.get(key).and_then(Value::as_u64);
        let first_reordered = match v.get("first_reordered")? {
            Value::Null => None,
            pair => Some((pair.get(0)?.as_u64()?, pair.get(1)?.as_u64()?)),
        };
        Some(Track {
            seen: SeqSet { words },
            distinct: number("distinct")?,
            duplicates: number("duplicates")?,
            reordered: number("reordered")?,
            highest: number("highest"),
            first_duplicate: number("first_duplicate"),
            first_reordered,
        })
    }
}

/// The fate of every number of one stream, from [`verify`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Numbers a send accepted: `0..accepted`.
    pub accepted: u64,
    /// Accepted numbers the destination received.
    pub received: u64,
    /// Accepted numbers the sender's node handed back.
    pub returned: u64,
    /// Accepted numbers neither received nor handed back.
    pub lost: u64,
    pub first_lost: Option<u64>,
    /// Numbers both received and handed back.
    pub both: u64,
    /// Numbers received or handed back that no send accepted.
    pub phantom: u64,
}

/// Compares what was accepted with what was received and what was handed back.
pub fn verify(accepted: u64, received: &Track, returned: &Track) -> Verdict {
    let (r, u) = (&received.seen, &returned.seen);
    let mut v = Verdict {
        accepted,
        ..Verdict::default()
    };
    for i in 0..accepted.div_ceil(64) as usize {
        let in_range = match accepted - i as u64 * 64 {
            n if n >= 64 => u64::MAX,
            n => low_bits(n),
        };
        let (rw, uw) = (r.word(i) & in_range, u.word(i) & in_range);
        v.received += u64::from(rw.count_ones());
        v.returned += u64::from(uw.count_ones());
        v.both += u64::from((rw & uw).count_ones());
        let missing = !(rw | uw) & in_range;
        v.lost += u64::from(missing.count_ones());
        if missing != 0 && v.first_lost.is_none() {
            v.first_lost = Some(i as u64 * 64 + u64::from(missing.trailing_zeros()));
        }
    }
    v.phantom = r.count_from(accepted) + u.count_from(accepted);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(seqs: &[u64]) -> Track {
        let mut t = Track::default();
        seqs.iter().for_each(|&s| t.observe(s));
        t
    }

    #[test]
    fn a_stamp_reads_back_as_written() {
        let stamp = Stamp {
            lane: Lane::Private,
            src: PeerId(3),
            dst: PeerId(u64::MAX),
            seq: 1 << 40,
        };
        let payload = stamp.encode(64);
        assert_eq!(payload.len(), 64);
        assert_eq!(Stamp::decode(&payload), Some(stamp));
        assert_eq!(Stamp::decode(&payload[..Stamp::LEN - 1]), None);
        assert_eq!(Stamp::decode(&[0u8; 64]), None);
    }

    #[test]
    fn the_track_counts_duplicates_and_overtaken_numbers() {
        let t = track(&[0, 1, 3, 2, 3, 5]);
        assert_eq!((t.distinct, t.duplicates, t.reordered), (5, 1, 1));
        assert_eq!(t.first_duplicate, Some(3));
        assert_eq!(t.first_reordered, Some((2, 3)));
        // Gaps alone are not reordering: they are judged by `verify`.
        let t = track(&[0, 5, 70, 200, 6]);
        assert_eq!((t.duplicates, t.reordered), (0, 1));
        assert_eq!(t.ranges(), vec![(0, 1), (5, 7), (70, 71), (200, 201)]);
        assert!(track(&[0, 1, 2]).is_whole(3));
        assert!(!track(&[0, 2, 1]).is_whole(3));
        assert!(!track(&[0, 1]).is_whole(3));
    }

    #[test]
    fn every_accepted_number_is_received_or_returned_once() {
        let received = track(&[0, 1, 2, 5, 6, 130]);
        let returned = track(&[3, 4, 7, 8]);
        let v = verify(131, &received, &returned);
        assert_eq!((v.received, v.returned, v.both, v.phantom), (6, 4, 0, 0));
        // 9..=129 are missing.
        assert_eq!((v.lost, v.first_lost), (121, Some(9)));
    }

    #[test]
    fn a_track_reads_back_from_json_as_it_was() {
        let t = track(&[0, 1, 3, 2, 3, 200]);
        let back = Track::from_json(&t.to_json()).expect("parses");
        assert_eq!(back.ranges(), t.ranges());
        assert_eq!(
            (back.distinct, back.duplicates, back.reordered, back.highest),
            (t.distinct, t.duplicates, t.reordered, t.highest)
        );
        assert_eq!(back.first_duplicate, Some(3));
        assert_eq!(back.first_reordered, Some((2, 3)));
        let empty = Track::from_json(&Track::default().to_json()).expect("parses");
        assert!(empty.is_whole(0));
        assert!(Track::from_json(&json!({"words": "xyz"})).is_none());
    }

    #[test]
    fn overlap_and_numbers_never_accepted_are_caught() {
        let received = track(&[0, 1, 2, 64, 65]);
        let returned = track(&[2, 3, 66, 200]);
        let v = verify(65, &received, &returned);
        // 2 is both; 65, 66 and 200 were never accepted.
        assert_eq!((v.both, v.phantom, v.lost), (1, 3, 60));
        assert_eq!(v.first_lost, Some(4));
        let v = verify(0, &Track::default(), &Track::default());
        assert_eq!(v, Verdict::default());
    }
}
