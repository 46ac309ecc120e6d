//! Throughput of one yamux stream over loopback TCP (plaintext), against plain TCP in the same
//! run.
//!
//! Each iteration moves 64 MiB one way and waits for the receiver's one-byte acknowledgement
//! that it read everything. yamux runs with `split_send_size` 16 KiB (yamux's default), 64 KiB
//! and 256 KiB (sinew's default), the application writing 256 KiB at a time; plain TCP writes
//! 1 MiB at a time (a 64 KiB write is a full loopback segment plus a runt, which halves it).
//!
//! `cargo bench -p sinew-benches --bench mux_yamux`

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use sinew_mux::{YamuxConfig, yamux};
use sinew_transport::{Direction, MuxedConnection};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const TOTAL: usize = 64 << 20;
const APP_WRITE: usize = 256 << 10;
const TCP_WRITE: usize = 1 << 20;
const READ_BUF: usize = 256 << 10;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
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

/// Writes `TOTAL` bytes in `chunk`-sized writes.
async fn send_all(io: &mut (impl AsyncWrite + Unpin), data: &[u8], chunk: usize) {
    let mut left = TOTAL;
    while left > 0 {
        let n = left.min(chunk);
        io.write_all(&data[..n]).await.unwrap();
        left -= n;
    }
}

/// Reads until `TOTAL` bytes (or EOF) arrived; returns the count.
async fn receive_all(io: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < TOTAL {
        match io.read(buf).await.unwrap() {
            0 => break,
            n => got += n,
        }
    }
    got
}

/// A yamux pair whose listener reads every stream to the end and acknowledges with one byte.
fn yamux_pair(rt: &Runtime, split_send_size: usize) -> MuxedConnection {
    rt.block_on(async {
        let (a, b) = tcp_pair().await;
        let config = YamuxConfig { split_send_size, ..YamuxConfig::default() };
        let dialer = yamux(a, Direction::Outbound, &config);
        let listener = yamux(b, Direction::Inbound, &config);
        tokio::spawn(async move {
            let mut buf = vec![0u8; READ_BUF];
            while let Some(mut stream) = listener.accept_stream().await {
                let got = receive_all(&mut stream, &mut buf).await;
                assert_eq!(got, TOTAL);
                stream.write_all(&[1]).await.unwrap();
                stream.finish().await.unwrap();
            }
        });
        dialer
    })
}

async fn yamux_transfer(dialer: &MuxedConnection, data: &[u8]) {
    let mut stream = dialer.open_stream().await.unwrap();
    send_all(&mut stream, data, APP_WRITE).await;
    stream.finish().await.unwrap();
    let mut ack = [0u8];
    stream.read_exact(&mut ack).await.unwrap();
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let data = vec![0xa5u8; TCP_WRITE];
    let mut group = c.benchmark_group("mux_yamux_64MiB");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(TOTAL as u64));

    // Baseline: the same socket pair without yamux, 1 MiB writes.
    let mut sender = rt.block_on(async {
        let (a, mut b) = tcp_pair().await;
        tokio::spawn(async move {
            let mut buf = vec![0u8; READ_BUF];
            loop {
                if receive_all(&mut b, &mut buf).await < TOTAL {
                    return;
                }
                b.write_all(&[1]).await.unwrap();
            }
        });
        a
    });
    group.bench_function("tcp_1MiB_writes", |bencher| {
        bencher.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    send_all(&mut sender, &data, TCP_WRITE).await;
                    let mut ack = [0u8];
                    sender.read_exact(&mut ack).await.unwrap();
                }
                start.elapsed()
            })
        });
    });
    drop(sender);

    for split in [16 << 10, 64 << 10, 256 << 10] {
        let dialer = yamux_pair(&rt, split);
        let name = format!("yamux_split_{}KiB_256KiB_writes", split >> 10);
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        yamux_transfer(&dialer, &data).await;
                    }
                    start.elapsed()
                })
            });
        });
        rt.block_on(dialer.close());
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
