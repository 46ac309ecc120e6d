//! Frame encode and decode throughput for 1 KiB and 64 KiB payloads, with a plain memcpy of
//! the same bytes as the baseline in the same run.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sinew_codec::{Frame, FrameDecoder, FrameKind, Opcode};

/// Frames per iteration, so each iteration moves a few MiB.
fn frames_for(size: usize) -> usize {
    (4 << 20) / size
}

fn bench(c: &mut Criterion) {
    for size in [1024usize, 64 * 1024] {
        let count = frames_for(size);
        let frame = Frame::new(
            Opcode::app(1000).unwrap(),
            FrameKind::Request { id: 7 },
            Bytes::from(vec![0x5a; size]),
        );
        let total = frame.encoded_len() * count;
        let mut group = c.benchmark_group(format!("codec_{}k", size / 1024));
        group.throughput(Throughput::Bytes(total as u64));
        group
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1))
            .sample_size(20);

        group.bench_function("memcpy_baseline", |b| {
            let mut out = BytesMut::with_capacity(total);
            b.iter(|| {
                out.clear();
                for _ in 0..count {
                    out.extend_from_slice(black_box(&frame.payload));
                }
                black_box(out.len())
            });
        });

        group.bench_function("encode", |b| {
            let mut out = BytesMut::with_capacity(total);
            b.iter(|| {
                out.clear();
                for _ in 0..count {
                    black_box(&frame).encode(&mut out);
                }
                black_box(out.len())
            });
        });

        let mut wire = BytesMut::with_capacity(total);
        for _ in 0..count {
            frame.encode(&mut wire);
        }
        let wire = wire.freeze();
        group.bench_function("decode", |b| {
            let mut decoder = FrameDecoder::new(1 << 20);
            b.iter(|| {
                // Decoding splits payloads off the buffer without copying them.
                let mut buf = BytesMut::from(&wire[..]);
                let mut n = 0;
                while let Some(f) = decoder.decode(&mut buf).unwrap() {
                    n += f.payload.len();
                }
                black_box(n)
            });
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
