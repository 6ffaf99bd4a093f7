//! Properties of the frame codec and the reader's buffer, over generated frames and
//! generated splits of the stream into reads:
//!
//! - any sequence of frames, encoded and read back in reads of any sizes, comes out
//!   exactly as it went in — payloads from empty to 70 000 bytes, so that frames are
//!   cut out of the buffer as well as read into allocations of their own;
//! - reading stops at the first frame over the limit, and returns every frame before it;
//! - any bytes at all decode to a prefix of the stream, within the limit, without a
//!   panic.
//!
//! The case counts are kept small enough for a debug build; `PROPTEST_CASES` runs more,
//! and `PROPTEST_RNG_SEED` another sequence of cases (the default seed is fixed, so
//! that every run checks the same cases). Failures are not persisted to files.

mod util;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError};
use wirelane::__bench::{encode, FrameKind, HEADER_LEN};
use wirelane::__fuzz::read_frames;

/// The largest payload generated.
const MAX_PAYLOAD: usize = 70_000;

/// `cases` cases from a fixed seed, unless the environment asks for others, and no
/// regression files.
fn config(cases: u32) -> Config {
    let from_env = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            from_env.cases
        } else {
            cases
        },
        rng_seed: match from_env.rng_seed {
            RngSeed::Random => RngSeed::Fixed(0x5EED_F4A3_E000_0001),
            seed => seed,
        },
        failure_persistence: None,
        ..from_env
    }
}

/// `len` pseudo-random bytes from `seed`, different for every frame, so a payload
/// cut from the wrong place does not look right.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    util::pseudo_random(seed, len)
}

/// A data payload: mostly small, some of any size up to [`MAX_PAYLOAD`], and some
/// whose frame is within a few bytes of a power of two from 1 KiB to 64 KiB — a
/// quarter of the buffer decides between the in-buffer and the large-frame path, and
/// the buffer's size is where a frame no longer fits in it at all.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..=200),
        2 => (0..=MAX_PAYLOAD, any::<u64>()).prop_map(|(len, seed)| pattern(len, seed)),
        1 => (10u32..=16, -8isize..=8, any::<u64>()).prop_map(|(power, offset, seed)| {
            let frame_len = (1usize << power).saturating_add_signed(offset);
            pattern(frame_len.saturating_sub(HEADER_LEN), seed)
        }),
    ]
}

/// A data frame (Gossip or Private), or an empty Ping, Pong or Accept.
fn frame() -> impl Strategy<Value = (FrameKind, Vec<u8>)> {
    prop_oneof![
        6 => (prop_oneof![Just(FrameKind::Gossip), Just(FrameKind::Private)], payload()),
        1 => prop_oneof![
            Just(FrameKind::Ping),
            Just(FrameKind::Pong),
            Just(FrameKind::Accept)
        ]
        .prop_map(|kind| (kind, Vec::new())),
    ]
}

/// The sizes of successive reads, cycled (`read_frames` reads 1 to 255 bytes at a time;
/// 0 reads 1, and no sizes at all read 255).
fn chunks() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=16)
}

/// The reader's buffer size: the default 64 KiB, small ones, and anything.
fn block() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(4096usize),
        Just(16 * 1024),
        Just(64 * 1024),
        0usize..=200_000
    ]
}

fn encode_all(frames: &[(FrameKind, Vec<u8>)]) -> Vec<u8> {
    let mut wire = Vec::new();
    for (kind, payload) in frames {
        encode(&mut wire, *kind, payload);
    }
    wire
}

/// Whether a frame of this kind and payload is within `limit`, which bounds data
/// frames only.
fn within(kind: FrameKind, payload: &[u8], limit: u32) -> bool {
    !matches!(kind, FrameKind::Gossip | FrameKind::Private) || payload.len() <= limit as usize
}

/// `got == want`, reported by the first difference rather than by printing both.
fn same_frames(
    got: &[(FrameKind, Vec<u8>)],
    want: &[(FrameKind, Vec<u8>)],
) -> Result<(), TestCaseError> {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        prop_assert_eq!(g.0, w.0, "kind of frame {}", i);
        prop_assert_eq!(g.1.len(), w.1.len(), "payload length of frame {}", i);
        if let Some(at) = g.1.iter().zip(&w.1).position(|(a, b)| a != b) {
            return Err(TestCaseError::fail(format!(
                "payload of frame {i} ({} bytes) differs from byte {at}",
                w.1.len()
            )));
        }
    }
    prop_assert_eq!(got.len(), want.len(), "number of frames");
    Ok(())
}

/// A stream of bytes a hostile or broken peer might send: garbage, valid frames of
/// every kind (of valid and invalid lengths), and bare headers of any length, kind and
/// flags, concatenated.
fn hostile_stream() -> impl Strategy<Value = Vec<u8>> {
    let any_kind = prop_oneof![
        Just(FrameKind::Hello),
        Just(FrameKind::Accept),
        Just(FrameKind::Close),
        Just(FrameKind::Ping),
        Just(FrameKind::Pong),
        Just(FrameKind::Gossip),
        Just(FrameKind::Private),
        Just(FrameKind::Auth),
        Just(FrameKind::Holds),
        Just(FrameKind::Verdict),
    ];
    let segment = prop_oneof![
        vec(any::<u8>(), 0..=64),
        (any_kind, prop_oneof![vec(any::<u8>(), 0..=2), payload()]).prop_map(|(kind, payload)| {
            let mut out = Vec::new();
            encode(&mut out, kind, &payload);
            out
        }),
        (
            prop_oneof![5 => Just(60usize), 1 => 0usize..=70],
            any::<u64>()
        )
            .prop_map(|(len, seed)| {
                // A hello frame, mostly of the right length.
                let mut out = Vec::new();
                encode(&mut out, FrameKind::Hello, &pattern(len, seed));
                out
            }),
        (
            any::<u32>(),
            0u8..=9,
            prop_oneof![3 => Just(0u8), 1 => any::<u8>()]
        )
            .prop_map(|(len, kind, flags)| {
                let mut header = len.to_be_bytes().to_vec();
                header.extend([kind, flags]);
                header
            }),
    ];
    vec(segment, 0..=8).prop_map(|segments| segments.concat())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn frames_come_back_exactly_whatever_the_reads(
        frames in vec(frame(), 0..=8),
        chunks in chunks(),
        limit in prop_oneof![Just(MAX_PAYLOAD as u32), Just(16 << 20), Just(u32::MAX)],
        block in block(),
    ) {
        let wire = encode_all(&frames);
        let got = read_frames(&wire, &chunks, limit, block);
        same_frames(&got, &frames)?;
    }

    #[test]
    fn reading_stops_at_the_first_frame_over_the_limit(
        frames in vec(frame(), 1..=8),
        pick in any::<prop::sample::Index>(),
        shrink in 0u32..=2,
        chunks in chunks(),
        block in block(),
    ) {
        // A limit just below, at or just above one of the frames' sizes.
        let (_, chosen) = &frames[pick.index(frames.len())];
        let limit = (chosen.len() as u32 + 1).saturating_sub(shrink);
        let wire = encode_all(&frames);
        let want: Vec<_> = frames
            .iter()
            .take_while(|(kind, payload)| within(*kind, payload, limit))
            .cloned()
            .collect();
        let got = read_frames(&wire, &chunks, limit, block);
        same_frames(&got, &want)?;
    }
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn any_bytes_decode_to_a_prefix_of_the_stream(
        stream in prop_oneof![vec(any::<u8>(), 0..=512), hostile_stream()],
        chunks in chunks(),
        limit in prop_oneof![Just(0u32), Just(64), Just(1024), Just(MAX_PAYLOAD as u32), Just(16 << 20)],
        block in block(),
    ) {
        let got = read_frames(&stream, &chunks, limit, block);
        let total: usize = got.iter().map(|(_, payload)| payload.len()).sum();
        prop_assert!(total <= stream.len());
        for (i, (kind, payload)) in got.iter().enumerate() {
            prop_assert!(within(*kind, payload, limit), "frame {} over the limit", i);
        }
        let again = encode_all(&got);
        prop_assert!(
            stream.starts_with(&again),
            "the {} frames read are not the first {} bytes of the stream",
            got.len(),
            again.len()
        );
    }
}
