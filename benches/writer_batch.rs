//! The writer's batching: payloads gathered into one batch and written with one
//! (vectored) write. Small payloads are copied into the batch buffer, large ones are
//! referenced; the sink stands in for the socket, so this measures our own cost per
//! message, not the kernel's.

use std::io::{self, IoSlice, Write};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wirelane::__bench::Batch;
use wirelane::Lane;

/// A socket stand-in that accepts everything, as a kernel with room would.
struct Sink(usize);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = bufs.iter().map(|b| b.len()).sum();
        self.0 += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch");
    for (size, per_batch) in [(64usize, 900usize), (1024, 64), (65536, 16)] {
        let payloads: Vec<Bytes> = (0..per_batch)
            .map(|_| Bytes::from(vec![7u8; size]))
            .collect();
        let mut batch = Batch::default();
        group.throughput(Throughput::Elements(per_batch as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(size),
            &payloads,
            |b, payloads| {
                b.iter(|| {
                    for payload in payloads {
                        // Cloning a `Bytes` is a reference count; the writer gets each
                        // payload by value from the lane the same way.
                        batch.push(Lane::Private, payload.clone());
                    }
                    let mut sink = Sink(0);
                    let (written, result) = batch.write(&mut sink, &mut || {});
                    assert!(result.is_ok());
                    black_box(written.bytes);
                    black_box(sink.0)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, batch);
criterion_main!(benches);
