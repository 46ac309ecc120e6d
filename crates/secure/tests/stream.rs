//! The encrypted stream: bulk and tiny transfers, batching, buffer release, and bad input.
#![cfg(feature = "noise")]

mod common;

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use common::{SUITES, TIMEOUT, WAIT, frame, identity, tcp_pair, transport_pair};
use rand::rngs::StdRng;
use rand::{Rng as _, RngExt as _, SeedableRng as _};
use sinew_secure::{
    MAX_PLAINTEXT, NoiseError, NoiseStream, WRITE_BATCH, upgrade_inbound, upgrade_outbound,
};
use sinew_transport::NoiseSuite;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf, duplex};
use tokio::time::timeout;

/// A deterministic byte stream: the bytes `seed` generates.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

async fn tcp_streams(
    suite: NoiseSuite,
) -> (NoiseStream<tokio::net::TcpStream>, NoiseStream<tokio::net::TcpStream>) {
    let (_, a) = identity(1, 1);
    let (_, b) = identity(2, 2);
    let (dialed, accepted) = tcp_pair().await;
    let (out, inb) = tokio::join!(
        upgrade_outbound(dialed, &a, suite, None, TIMEOUT),
        upgrade_inbound(accepted, &b, TIMEOUT),
    );
    (out.unwrap().0, inb.unwrap().0)
}

/// Writes `payload` in random chunk sizes (flushing now and then), then shuts down.
async fn send_random_chunks<W: AsyncWrite + Unpin>(mut w: W, payload: Vec<u8>, seed: u64) -> W {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sent = 0;
    while sent < payload.len() {
        let n = rng.random_range(1..=200_000).min(payload.len() - sent);
        w.write_all(&payload[sent..sent + n]).await.unwrap();
        if rng.random_range(0..4) == 0 {
            w.flush().await.unwrap();
        }
        sent += n;
    }
    w.shutdown().await.unwrap();
    w
}

/// Reads to the end with random buffer sizes.
async fn receive_random_reads<R: AsyncRead + Unpin>(mut r: R, seed: u64) -> (R, Vec<u8>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 300_000];
    loop {
        let size = rng.random_range(1..=buf.len());
        let n = r.read(&mut buf[..size]).await.unwrap();
        if n == 0 {
            return (r, got);
        }
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_megabyte_both_ways_random_chunks() {
    for suite in SUITES {
        let (a, b) = tcp_streams(suite).await;
        let (a_read, a_write) = tokio::io::split(a);
        let (b_read, b_write) = tokio::io::split(b);
        let (to_b, to_a) = (data(1, 6 << 20), data(2, 5 << 20));
        let tasks = (
            tokio::spawn(send_random_chunks(a_write, to_b.clone(), 3)),
            tokio::spawn(send_random_chunks(b_write, to_a.clone(), 4)),
            tokio::spawn(receive_random_reads(b_read, 5)),
            tokio::spawn(receive_random_reads(a_read, 6)),
        );
        let all = async { tokio::try_join!(tasks.0, tasks.1, tasks.2, tasks.3) };
        let (_, _, (_, at_b), (_, at_a)) = timeout(WAIT * 6, all).await.unwrap().unwrap();
        assert!(at_b == to_b, "{suite:?}: dialer to listener differs");
        assert!(at_a == to_a, "{suite:?}: listener to dialer differs");
    }
}

#[tokio::test]
async fn many_tiny_writes_with_flushes() {
    let (mut a, mut b) = tcp_streams(NoiseSuite::ChaChaPoly).await;
    let payload = data(7, 30_000);
    let mut rng = StdRng::seed_from_u64(8);
    let mut chunks = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let n = rng.random_range(1..=20).min(payload.len() - at);
        chunks.push(&payload[at..at + n]);
        at += n;
    }
    let writer = async {
        for chunk in &chunks {
            a.write_all(chunk).await.unwrap();
            a.flush().await.unwrap();
        }
        a.shutdown().await.unwrap();
    };
    let reader = async {
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = timeout(WAIT, async { tokio::join!(writer, reader) }).await.unwrap();
    assert!(got == payload);
}

#[tokio::test]
async fn flush_delivers_each_message_at_once() {
    let (mut a, mut b) = tcp_streams(NoiseSuite::AesGcm).await;
    for i in 0..50u8 {
        a.write_all(&[i; 3]).await.unwrap();
        a.flush().await.unwrap();
        let mut buf = [0u8; 3];
        timeout(WAIT, b.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(buf, [i; 3]);
        b.write_all(&[i]).await.unwrap();
        b.flush().await.unwrap();
        let mut one = [0u8; 1];
        timeout(WAIT, a.read_exact(&mut one)).await.unwrap().unwrap();
        assert_eq!(one, [i]);
    }
}

#[tokio::test]
async fn small_read_buffers_get_large_messages() {
    let (ti, tr) = transport_pair(NoiseSuite::AesGcm);
    let (x, y) = duplex(1 << 20);
    let (mut a, mut b) = (NoiseStream::new(x, ti), NoiseStream::new(y, tr));
    let payload = data(9, 3 * MAX_PLAINTEXT + 1234);
    let writer = async {
        a.write_all(&payload).await.unwrap();
        a.shutdown().await.unwrap();
    };
    let reader = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = b.read(&mut buf).await.unwrap();
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&buf[..n]);
        }
    };
    let ((), got) = timeout(WAIT, async { tokio::join!(writer, reader) }).await.unwrap();
    assert!(got == payload);
}

/// Records the size of every write and counts flushes.
#[derive(Default, Clone)]
struct Recorder {
    writes: Arc<Mutex<Vec<usize>>>,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl AsyncWrite for Recorder {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writes.lock().unwrap().push(buf.len());
        self.bytes.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn writes_are_batched_into_large_socket_writes() {
    let (ti, mut tr) = transport_pair(NoiseSuite::ChaChaPoly);
    let recorder = Recorder::default();
    let mut a = NoiseStream::new(recorder.clone(), ti);
    let payload = data(10, 1 << 20);
    a.write_all(&payload).await.unwrap();
    a.flush().await.unwrap();
    let writes = recorder.writes.lock().unwrap().clone();
    // 1 MiB is 17 full Noise messages: five socket writes, each of many messages.
    assert_eq!(writes.len(), 5, "{writes:?}");
    assert!(writes[..4].iter().all(|&n| n >= WRITE_BATCH), "{writes:?}");

    // Nothing buffered: a flush writes nothing.
    a.flush().await.unwrap();
    assert_eq!(recorder.writes.lock().unwrap().len(), 5);
    assert_eq!(a.buffered_capacity(), 0, "a flush that empties the output releases it");

    // The bytes are well-formed frames with at most MAX_PLAINTEXT plaintext each.
    let wire = recorder.bytes.lock().unwrap().clone();
    let (mut at, mut plain, mut messages) = (0, Vec::new(), 0);
    let mut out = vec![0u8; 70_000];
    while at < wire.len() {
        let len = usize::from(u16::from_be_bytes([wire[at], wire[at + 1]]));
        let n = tr.decrypt(&wire[at + 2..at + 2 + len], &mut out).unwrap();
        assert!(n <= MAX_PLAINTEXT && n > 0);
        plain.extend_from_slice(&out[..n]);
        at += 2 + len;
        messages += 1;
    }
    assert_eq!(messages, (1 << 20) / MAX_PLAINTEXT + 1);
    assert!(plain == payload);
}

#[tokio::test]
async fn small_writes_coalesce_until_flush() {
    let (ti, _) = transport_pair(NoiseSuite::AesGcm);
    let recorder = Recorder::default();
    let mut a = NoiseStream::new(recorder.clone(), ti);
    for _ in 0..100 {
        a.write_all(b"0123456789").await.unwrap();
    }
    assert!(recorder.writes.lock().unwrap().is_empty(), "nothing is written before a flush");
    a.flush().await.unwrap();
    let writes = recorder.writes.lock().unwrap().clone();
    assert_eq!(writes, [2 + 1000 + 16], "one message, one write");
}

#[tokio::test]
async fn idle_stream_releases_its_buffers() {
    let (a, b) = tcp_streams(NoiseSuite::AesGcm).await;
    let (mut a, mut b) = (a, b);
    let big = data(11, 700_000);
    a.write_all(&big).await.unwrap();
    assert!(a.buffered_capacity() > 0, "unflushed output is kept");
    a.flush().await.unwrap();
    assert!(a.buffered_capacity() > 0, "a flush after writes keeps the buffers for the next batch");
    a.flush().await.unwrap();
    assert_eq!(a.buffered_capacity(), 0, "a flush with nothing new releases them");
    let mut got = vec![0u8; big.len()];
    timeout(WAIT, b.read_exact(&mut got)).await.unwrap().unwrap();
    assert!(got == big);
    // Nothing more to read: the read that finds the socket empty releases the input buffers.
    let pending = std::future::poll_fn(|cx| {
        let mut buf = [0u8; 16];
        let mut buf = ReadBuf::new(&mut buf);
        Poll::Ready(Pin::new(&mut b).poll_read(cx, &mut buf).is_pending())
    })
    .await;
    assert!(pending);
    assert_eq!(b.buffered_capacity(), 0);
}

/// A stream whose peer is driven by hand with the other cipher.
fn raw_peer(
    suite: NoiseSuite,
) -> (NoiseStream<tokio::io::DuplexStream>, tokio::io::DuplexStream, sinew_secure::NoiseTransport) {
    let (ti, tr) = transport_pair(suite);
    let (x, y) = duplex(1 << 20);
    (NoiseStream::new(y, tr), x, ti)
}

fn kind_and_inner(err: &io::Error) -> (io::ErrorKind, Option<NoiseError>) {
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<NoiseError>()).copied();
    (err.kind(), inner)
}

#[tokio::test]
async fn several_messages_in_one_read_and_clean_eof() {
    let (mut s, mut peer, mut t) = raw_peer(NoiseSuite::ChaChaPoly);
    let mut wire = frame(&mut t, b"one ");
    wire.extend(frame(&mut t, b"two "));
    wire.extend(frame(&mut t, b"three"));
    peer.write_all(&wire).await.unwrap();
    drop(peer);
    let mut got = Vec::new();
    timeout(WAIT, s.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, b"one two three");
}

#[tokio::test]
async fn eof_inside_a_message_is_unexpected_eof() {
    let (mut s, mut peer, mut t) = raw_peer(NoiseSuite::AesGcm);
    let wire = frame(&mut t, b"a message cut short");
    peer.write_all(&wire[..wire.len() - 5]).await.unwrap();
    drop(peer);
    let mut buf = [0u8; 64];
    let err = timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap_err();
    assert_eq!(kind_and_inner(&err), (io::ErrorKind::UnexpectedEof, Some(NoiseError::Truncated)));

    // EOF inside the length prefix too.
    let (mut s, mut peer, _) = raw_peer(NoiseSuite::AesGcm);
    peer.write_all(&[0]).await.unwrap();
    drop(peer);
    let err = timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn zero_length_is_invalid_data() {
    let (mut s, mut peer, mut t) = raw_peer(NoiseSuite::ChaChaPoly);
    let mut wire = frame(&mut t, b"fine");
    wire.extend_from_slice(&[0, 0]);
    peer.write_all(&wire).await.unwrap();
    let mut buf = [0u8; 4];
    timeout(WAIT, s.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"fine");
    let err = timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap_err();
    assert_eq!(kind_and_inner(&err), (io::ErrorKind::InvalidData, Some(NoiseError::ZeroLength)));
}

#[tokio::test]
async fn tampered_or_replayed_message_is_invalid_data() {
    for suite in SUITES {
        let (mut s, mut peer, mut t) = raw_peer(suite);
        let mut wire = frame(&mut t, b"tamper with me");
        wire[5] ^= 0x20;
        peer.write_all(&wire).await.unwrap();
        let mut buf = [0u8; 64];
        let err = timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap_err();
        assert_eq!(kind_and_inner(&err), (io::ErrorKind::InvalidData, Some(NoiseError::Decrypt)));
        // The stream stays failed, even when a valid message follows.
        peer.write_all(&frame(&mut t, b"later")).await.unwrap();
        let err = timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        // A replayed message fails too (its nonce is in the past).
        let (mut s, mut peer, mut t) = raw_peer(suite);
        let wire = frame(&mut t, b"once");
        peer.write_all(&wire).await.unwrap();
        peer.write_all(&wire).await.unwrap();
        let mut four = [0u8; 4];
        timeout(WAIT, s.read_exact(&mut four)).await.unwrap().unwrap();
        assert_eq!(&four, b"once");
        let err = timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}

#[tokio::test]
async fn empty_plaintext_messages_are_skipped() {
    let (mut s, mut peer, mut t) = raw_peer(NoiseSuite::AesGcm);
    let mut wire = frame(&mut t, b"");
    wire.extend(frame(&mut t, b"after"));
    peer.write_all(&wire).await.unwrap();
    drop(peer);
    let mut got = Vec::new();
    timeout(WAIT, s.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, b"after", "an empty message is not end of stream");
}

#[tokio::test]
async fn partial_messages_across_reads() {
    let (mut s, mut peer, mut t) = raw_peer(NoiseSuite::ChaChaPoly);
    let payload = data(12, 100_000);
    let mut wire = frame(&mut t, &payload[..MAX_PLAINTEXT]);
    wire.extend(frame(&mut t, &payload[MAX_PLAINTEXT..]));
    let reader = async {
        let mut got = vec![0u8; payload.len()];
        s.read_exact(&mut got).await.unwrap();
        got
    };
    let writer = async {
        // Dribble the bytes out in odd pieces, letting the reader run in between.
        for piece in wire.chunks(997) {
            peer.write_all(piece).await.unwrap();
            tokio::task::yield_now().await;
        }
    };
    let (got, ()) = timeout(WAIT, async { tokio::join!(reader, writer) }).await.unwrap();
    assert!(got == payload);
}

#[tokio::test]
async fn vectored_writes_take_every_slice() {
    let (ti, mut tr) = transport_pair(NoiseSuite::ChaChaPoly);
    let recorder = Recorder::default();
    let mut a = NoiseStream::new(recorder.clone(), ti);
    assert!(a.is_write_vectored());
    let big = data(13, 100_000);
    let slices = [io::IoSlice::new(b"header"), io::IoSlice::new(&big), io::IoSlice::new(b"end")];
    let n = a.write_vectored(&slices).await.unwrap();
    assert_eq!(n, 6 + big.len() + 3, "everything fits below one batch");
    a.flush().await.unwrap();
    let wire = recorder.bytes.lock().unwrap().clone();
    let mut plain = Vec::new();
    let (mut at, mut out) = (0, vec![0u8; 70_000]);
    while at < wire.len() {
        let len = usize::from(u16::from_be_bytes([wire[at], wire[at + 1]]));
        let n = tr.decrypt(&wire[at + 2..at + 2 + len], &mut out).unwrap();
        plain.extend_from_slice(&out[..n]);
        at += 2 + len;
    }
    let mut expected = b"header".to_vec();
    expected.extend_from_slice(&big);
    expected.extend_from_slice(b"end");
    assert!(plain == expected);
}

#[test]
fn streams_and_handshake_futures_are_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<NoiseStream<tokio::net::TcpStream>>();
    send_sync::<sinew_secure::NoiseIdentity>();
    send_sync::<sinew_secure::NoiseHandshake>();
    let (_, a) = identity(1, 1);
    let (x, y) = duplex(16);
    send(&upgrade_outbound(x, &a, NoiseSuite::AesGcm, None, TIMEOUT));
    send(&upgrade_inbound(y, &a, TIMEOUT));
}

/// A partial message holds a buffer about its size, not a read chunk: one byte of a message
/// (its first length byte) and then silence leaves a few KiB held at most.
#[tokio::test]
async fn a_partial_message_holds_only_about_what_arrived() {
    let (mut a, mut b) = tcp_streams(NoiseSuite::AesGcm).await;
    // One byte of the next message's length prefix, straight to the socket under the cipher.
    a.get_mut().write_all(&[0x01]).await.unwrap();
    a.get_mut().flush().await.unwrap();
    // Let the stream read until it has taken the byte (readiness may be stale once: a pending
    // read clears it, and the next wait is for the byte itself). It stays pending throughout.
    for _ in 0..3 {
        timeout(WAIT, b.get_ref().readable()).await.unwrap().unwrap();
        let pending = std::future::poll_fn(|cx| {
            let mut buf = [0u8; 16];
            let mut rb = ReadBuf::new(&mut buf);
            Poll::Ready(Pin::new(&mut b).poll_read(cx, &mut rb).is_pending())
        })
        .await;
        assert!(pending, "one byte is not a message");
        if b.buffered_capacity() > 0 {
            break;
        }
    }
    let held = b.buffered_capacity();
    assert!(held > 0 && held <= 8 * 1024, "{held} bytes held for one byte of a message");
}
