//! The frame codec: encoding frames into a batch buffer and cutting them out of a
//! read buffer, without I/O. Regressions here show up directly as per-message cost.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wirelane::__bench::{decode_header, encode, FrameKind};

const FRAMES: usize = 1000;

fn encode_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for size in [64usize, 1024] {
        let payload = vec![7u8; size];
        let mut out = Vec::with_capacity(FRAMES * (size + 6));
        group.throughput(Throughput::Elements(FRAMES as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &payload, |b, payload| {
            b.iter(|| {
                out.clear();
                for _ in 0..FRAMES {
                    encode(&mut out, FrameKind::Private, black_box(payload));
                }
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn decode_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for size in [64usize, 1024] {
        let mut wire = Vec::new();
        for _ in 0..FRAMES {
            encode(&mut wire, FrameKind::Private, &vec![7u8; size]);
        }
        group.throughput(Throughput::Elements(FRAMES as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &wire, |b, wire| {
            b.iter(|| {
                let mut rest = &wire[..];
                let mut payload_bytes = 0usize;
                while let Ok(Some(header)) = decode_header(rest, 1 << 20) {
                    payload_bytes += header.len as usize;
                    rest = &rest[header.frame_len()..];
                }
                black_box(payload_bytes)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encode_frames, decode_frames);
criterion_main!(benches);
