//! A peer's hello payload through the hello decoder.
//!
//! The input is tried as it is, which mostly exercises the length and magic checks,
//! and then with a valid-looking 28-byte prefix spliced in ("WRLN", version 5, then
//! 22 bytes of the input as capability flags, peer id, incarnation and frame limit),
//! so that the checks behind magic and version are reached too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wirelane::__fuzz::hello;

/// Bytes in a hello payload (docs/wire-format.md).
const HELLO_LEN: usize = 60;
/// Magic and protocol version 5.
const VALID_START: [u8; 6] = [b'W', b'R', b'L', b'N', 0, 5];
/// Bytes of the prefix after magic and version: flags, peer id, incarnation, limit.
const FIELDS: usize = 22;

fuzz_target!(|data: &[u8]| {
    let accepted = hello(data);
    if data.len() != HELLO_LEN || !data.starts_with(&VALID_START) {
        assert!(!accepted, "accepted a {}-byte hello", data.len());
    }

    // Magic and version, the input's first 22 bytes (zero-padded) as the remaining
    // fields of the prefix, then the rest of the input: any length, so the length
    // check is still exercised...
    let fields = data.len().min(FIELDS);
    let mut spliced = Vec::with_capacity(data.len() + 28);
    spliced.extend_from_slice(&VALID_START);
    spliced.extend_from_slice(&data[..fields]);
    spliced.resize(VALID_START.len() + FIELDS, 0);
    spliced.extend_from_slice(&data[fields..]);
    check(&spliced);
    // ...and cut or padded to a hello's length, so the field checks always run.
    spliced.resize(HELLO_LEN, 0);
    check(&spliced);
});

/// A hello with the right magic and version is accepted exactly when it is 60 bytes
/// long and announces a non-zero frame limit; capability flags, peer id, incarnation
/// and nonce may be anything.
fn check(payload: &[u8]) {
    let accepted = hello(payload);
    let expected = payload.len() == HELLO_LEN && payload[24..28] != [0; 4];
    assert_eq!(accepted, expected, "hello {payload:02x?}");
}
