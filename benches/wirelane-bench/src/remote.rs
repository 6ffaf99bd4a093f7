//! The control protocol between `serve` and `load`, carried in private messages.
//!
//! The private lane is ordered and never loses a message silently, so the protocol
//! needs no acknowledgements or sequence numbers of its own: a count request sent
//! after the last data message is answered after that message has been counted.
//!
//! The first byte of every payload is an [`Op`]; what follows depends on it:
//!
//! | op | name          | body                      | `serve` does                     |
//! |----|---------------|---------------------------|----------------------------------|
//! | 0  | echo          | anything                  | sends the whole payload back     |
//! | 1  | data          | anything                  | counts it against its sender     |
//! | 2  | count request | nothing                   | answers with a count             |
//! | 3  | count         | `u64`, little-endian      | (an answer; `load` reads it)     |
//!
//! A count is the number of data messages `serve` has received from the asker's
//! peer id while it has been connected: `load` asks once before it starts and once
//! after, and uses the difference, so an earlier run with the same id does not
//! matter.

use std::fmt;

use wirelane::Bytes;

use crate::oneway::FILL;

/// What a message asks for, or answers: the payload's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Send this payload back (latency).
    Echo = 0,
    /// Count this message (throughput).
    Data = 1,
    /// Answer with how many data messages you have received from me.
    CountRequest = 2,
    /// The answer to a count request.
    Count = 3,
}

impl Op {
    /// The operation a payload carries, or `None` if it is empty or its opcode is
    /// unknown.
    pub fn of(payload: &[u8]) -> Option<Op> {
        [Op::Echo, Op::Data, Op::CountRequest, Op::Count]
            .into_iter()
            .find(|&op| payload.first() == Some(&(op as u8)))
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Echo => "echo",
            Op::Data => "data",
            Op::CountRequest => "count request",
            Op::Count => "count",
        })
    }
}

/// A `size`-byte data message (at least the opcode), freshly allocated as an
/// application would.
pub fn data(size: usize) -> Vec<u8> {
    let mut p = vec![FILL; size.max(1)];
    p[0] = Op::Data as u8;
    p
}

/// A `size`-byte echo request carrying `seq` after the opcode (as much of it as
/// fits), so that an echo of the wrong request is noticed.
pub fn echo(size: usize, seq: u64) -> Bytes {
    let mut p = vec![FILL; size.max(1)];
    p[0] = Op::Echo as u8;
    let seq = seq.to_le_bytes();
    let n = seq.len().min(p.len() - 1);
    p[1..=n].copy_from_slice(&seq[..n]);
    Bytes::from(p)
}

/// A count request.
pub fn count_request() -> Vec<u8> {
    vec![Op::CountRequest as u8]
}

/// The answer to a count request.
pub fn count(n: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(9);
    p.push(Op::Count as u8);
    p.extend_from_slice(&n.to_le_bytes());
    p
}

/// Reads a count answer, or `None` if the payload is not one.
pub fn parse_count(payload: &[u8]) -> Option<u64> {
    match payload {
        [code, n @ ..] if *code == Op::Count as u8 => Some(u64::from_le_bytes(n.try_into().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_names_its_op() {
        assert_eq!(Op::of(&data(64)), Some(Op::Data));
        assert_eq!(data(0).len(), 1);
        assert_eq!(Op::of(&echo(64, 7)), Some(Op::Echo));
        assert_eq!(Op::of(&count_request()), Some(Op::CountRequest));
        assert_eq!(Op::of(&count(5)), Some(Op::Count));
        assert_eq!(Op::of(&[]), None);
        assert_eq!(Op::of(&[200]), None);
    }

    #[test]
    fn echoes_of_different_requests_differ_and_small_ones_fit() {
        assert_ne!(echo(64, 1), echo(64, 2));
        assert_eq!(echo(64, 1).len(), 64);
        assert_eq!(echo(3, u64::MAX).len(), 3);
        assert_eq!(echo(1, 9).len(), 1);
    }

    #[test]
    fn a_count_reads_back() {
        assert_eq!(parse_count(&count(1 << 40)), Some(1 << 40));
        assert_eq!(parse_count(&count(0)[..5]), None);
        assert_eq!(parse_count(&data(9)), None);
        assert_eq!(parse_count(&[]), None);
    }
}
