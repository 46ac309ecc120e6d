//! Noise throughput, each with its baseline in the same run:
//!
//! - `noise_encrypt_65519`: encrypting one full Noise message (65,519 bytes of plaintext) with
//!   snow's `TransportState` (ring-accelerated), against ring's AEAD sealing the same bytes in
//!   place. The ratio is snow's overhead (its copy of the plaintext, its nonce handling).
//! - `noise_stream_sink`: `NoiseStream` writing 1 MiB chunks (and a flush) into `tokio::io::sink`:
//!   framing, batching and encryption, no socket.
//! - `noise_stream_tcp`: 1 MiB writes over loopback TCP with a reader task, for plain TCP and
//!   `NoiseStream` with each suite (encrypt on one core, decrypt on the other).
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use sinew_secure::{
    HandshakeStep, MAX_PLAINTEXT, NoiseHandshake, NoiseIdentity, NoiseStream, NoiseTransport,
};
use sinew_transport::NoiseSuite;
use sinew_types::Keypair;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const CHUNK: usize = 1 << 20;
const SUITES: [(NoiseSuite, &str); 2] =
    [(NoiseSuite::ChaChaPoly, "chachapoly"), (NoiseSuite::AesGcm, "aesgcm")];

fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group.sample_size(10).warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
}

/// snow transport states from a `Noise_NN` handshake run in memory.
fn snow_pair(cipher: &str) -> (snow::TransportState, snow::TransportState) {
    let name = format!("Noise_NN_25519_{cipher}_SHA256");
    let mut i = snow::Builder::new(name.parse().unwrap()).build_initiator().unwrap();
    let mut r = snow::Builder::new(name.parse().unwrap()).build_responder().unwrap();
    let (mut buf, mut payload) = ([0u8; 256], [0u8; 256]);
    let n = i.write_message(&[], &mut buf).unwrap();
    r.read_message(&buf[..n], &mut payload).unwrap();
    let n = r.write_message(&[], &mut buf).unwrap();
    i.read_message(&buf[..n], &mut payload).unwrap();
    (i.into_transport_mode().unwrap(), r.into_transport_mode().unwrap())
}

/// sinew's transport ciphers from its own handshake run in memory.
fn sinew_pair(suite: NoiseSuite) -> (NoiseTransport, NoiseTransport) {
    let a = NoiseIdentity::new(&Keypair::from_secret_bytes([1; 32]), 1);
    let b = NoiseIdentity::new(&Keypair::from_secret_bytes([2; 32]), 2);
    let mut i = NoiseHandshake::initiator(&a, suite, None);
    let mut r = NoiseHandshake::responder(&b, i.preamble());
    while i.step() != HandshakeStep::Finished || r.step() != HandshakeStep::Finished {
        let (from, to) =
            if i.step() == HandshakeStep::Write { (&mut i, &mut r) } else { (&mut r, &mut i) };
        let mut frame = Vec::new();
        from.write_message(&mut frame).unwrap();
        to.read_message(&frame[2..]).unwrap();
    }
    (i.finish().unwrap().0, r.finish().unwrap().0)
}

fn encrypt(c: &mut Criterion) {
    let mut group = c.benchmark_group("noise_encrypt_65519");
    configure(&mut group);
    group.throughput(Throughput::Bytes(MAX_PLAINTEXT as u64));
    let plaintext = vec![0x5au8; MAX_PLAINTEXT];

    for (cipher, label) in [("ChaChaPoly", "chachapoly"), ("AESGCM", "aesgcm")] {
        let (mut tx, _rx) = snow_pair(cipher);
        let mut out = vec![0u8; MAX_PLAINTEXT + 16];
        group.bench_function(format!("snow_{label}"), |b| {
            b.iter(|| black_box(tx.write_message(black_box(&plaintext), &mut out).unwrap()));
        });
    }

    for (algorithm, label) in [(&CHACHA20_POLY1305, "chachapoly"), (&AES_256_GCM, "aesgcm")] {
        let key = LessSafeKey::new(UnboundKey::new(algorithm, &[7u8; 32]).unwrap());
        let mut buf = plaintext.clone();
        let mut counter = 0u64;
        group.bench_function(format!("ring_{label}"), |b| {
            b.iter(|| {
                counter += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_le_bytes());
                let nonce = Nonce::assume_unique_for_key(nonce);
                black_box(key.seal_in_place_separate_tag(nonce, Aad::empty(), &mut buf).unwrap())
            });
        });
    }
    group.finish();
}

fn stream_sink(c: &mut Criterion) {
    let mut group = c.benchmark_group("noise_stream_sink");
    configure(&mut group);
    group.throughput(Throughput::Bytes(CHUNK as u64));
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let chunk = vec![0x5au8; CHUNK];
    for (suite, label) in SUITES {
        let (tx, _) = sinew_pair(suite);
        let mut stream = NoiseStream::new(tokio::io::sink(), tx);
        group.bench_function(label, |b| {
            b.iter(|| {
                rt.block_on(async {
                    stream.write_all(&chunk).await.unwrap();
                    stream.flush().await.unwrap();
                });
            });
        });
    }
    group.finish();
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (dialed, accepted) = (dialed.unwrap(), accepted.unwrap().0);
    dialed.set_nodelay(true).unwrap();
    accepted.set_nodelay(true).unwrap();
    (dialed, accepted)
}

/// Writes `iters` chunks from `writer` on the calling thread while a task on the runtime reads
/// them from `reader`; returns the time until the reader has them all.
fn one_way<W, R>(rt: &Runtime, pair: &mut Option<(W, R)>, iters: u64) -> Duration
where
    W: AsyncWrite + Unpin + Send + 'static,
    R: AsyncRead + Unpin + Send + 'static,
{
    let (mut writer, mut reader) = pair.take().unwrap();
    let total = CHUNK as u64 * iters;
    let chunk = vec![0x5au8; CHUNK];
    let start = Instant::now();
    let read = rt.spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        let mut left = total;
        while left > 0 {
            let n = reader.read(&mut buf).await.unwrap();
            assert!(n > 0, "unexpected end of stream");
            left -= n as u64;
        }
        reader
    });
    let reader = rt.block_on(async {
        for _ in 0..iters {
            writer.write_all(&chunk).await.unwrap();
        }
        writer.flush().await.unwrap();
        read.await.unwrap()
    });
    let elapsed = start.elapsed();
    *pair = Some((writer, reader));
    elapsed
}

fn stream_tcp(c: &mut Criterion) {
    let mut group = c.benchmark_group("noise_stream_tcp");
    configure(&mut group);
    group.throughput(Throughput::Bytes(CHUNK as u64));
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();

    let mut raw = Some(rt.block_on(tcp_pair()));
    group.bench_function("plain_tcp", |b| b.iter_custom(|iters| one_way(&rt, &mut raw, iters)));

    for (suite, label) in SUITES {
        let (tx, rx) = sinew_pair(suite);
        let (dialed, accepted) = rt.block_on(tcp_pair());
        let mut pair = Some((NoiseStream::new(dialed, tx), NoiseStream::new(accepted, rx)));
        group.bench_function(label, |b| b.iter_custom(|iters| one_way(&rt, &mut pair, iters)));
    }
    group.finish();
}

criterion_group!(benches, encrypt, stream_sink, stream_tcp);
criterion_main!(benches);
