//! Opening, accepting and moving bytes over sinew's yamux streams.

mod common;

use common::{pair, pattern, within};
use sinew_mux::YamuxConfig;
use sinew_transport::Stream;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinSet;

#[tokio::test]
async fn open_accept_and_transfer_both_ways_with_eof() {
    let ((dialer, _), (listener, _)) = pair(&YamuxConfig::default()).await;

    // A stream opened by the dialer.
    let mut out = dialer.open_stream().await.unwrap();
    out.write_all(b"hello from the dialer").await.unwrap();
    out.finish().await.unwrap();
    let mut inc = within("accept", listener.accept_stream()).await.expect("an inbound stream");
    let mut got = Vec::new();
    within("EOF after FIN", inc.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"hello from the dialer");
    // Half-closed: the accepting side can still answer, then finish.
    inc.write_all(b"answer").await.unwrap();
    inc.finish().await.unwrap();
    let mut answer = Vec::new();
    within("answer EOF", out.read_to_end(&mut answer)).await.unwrap();
    assert_eq!(answer, b"answer");

    // A stream opened by the listener.
    let mut out = listener.open_stream().await.unwrap();
    out.write_all(b"hello from the listener").await.unwrap();
    out.finish().await.unwrap();
    let mut inc = within("accept", dialer.accept_stream()).await.expect("an inbound stream");
    let mut got = Vec::new();
    within("EOF after FIN", inc.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"hello from the listener");

    assert!(!dialer.is_closed() && !listener.is_closed());
}

/// Sends `len` bytes of `pattern(seed)` and finishes, then expects the echoed length back.
async fn send_and_check_ack(mut stream: Stream, seed: u64, len: usize) {
    stream.write_all(&seed.to_le_bytes()).await.unwrap();
    let data = pattern(seed, len);
    for chunk in data.chunks(100_000) {
        stream.write_all(chunk).await.unwrap();
    }
    stream.finish().await.unwrap();
    let mut ack = [0u8; 8];
    stream.read_exact(&mut ack).await.unwrap();
    assert_eq!(u64::from_le_bytes(ack), len as u64, "stream {seed}: receiver's count");
}

/// Reads a seed and data up to EOF, checks it against `pattern(seed)`, acks the length.
async fn receive_and_ack(mut stream: Stream, len: usize) -> u64 {
    let mut seed = [0u8; 8];
    stream.read_exact(&mut seed).await.unwrap();
    let seed = u64::from_le_bytes(seed);
    let mut data = Vec::with_capacity(len);
    stream.read_to_end(&mut data).await.unwrap();
    assert!(data == pattern(seed, len), "stream {seed}: content differs");
    stream.write_all(&(data.len() as u64).to_le_bytes()).await.unwrap();
    stream.finish().await.unwrap();
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_move_megabytes_intact() {
    const PER_SIDE: u64 = 8;
    const LEN: usize = 3 << 20;
    let ((dialer, _), (listener, _)) = pair(&YamuxConfig::default()).await;

    let mut tasks = JoinSet::new();
    for (opener, acceptor, base) in [(&dialer, &listener, 0), (&listener, &dialer, 100)] {
        for seed in base..base + PER_SIDE {
            let opener = opener.clone();
            tasks.spawn(async move {
                let stream = opener.open_stream().await.unwrap();
                send_and_check_ack(stream, seed, LEN).await;
                Vec::new()
            });
        }
        // One task accepts (the contract), each stream is read by its own task.
        let acceptor = acceptor.clone();
        tasks.spawn(async move {
            let mut readers = JoinSet::new();
            for _ in 0..PER_SIDE {
                let stream = acceptor.accept_stream().await.expect("an inbound stream");
                readers.spawn(receive_and_ack(stream, LEN));
            }
            readers.join_all().await
        });
    }
    let mut received: Vec<u64> = within("all transfers", async {
        let mut received = Vec::new();
        while let Some(result) = tasks.join_next().await {
            received.extend(result.unwrap());
        }
        received
    })
    .await;
    received.sort_unstable();
    let expected: Vec<u64> = (0..PER_SIDE).chain(100..100 + PER_SIDE).collect();
    assert_eq!(received, expected);
    assert_eq!(dialer.open_streams(), (0, 0));
    assert_eq!(listener.open_streams(), (0, 0));
}

#[tokio::test]
async fn dropping_an_unfinished_stream_resets_it() {
    let ((dialer, _), (listener, _)) = pair(&YamuxConfig::default()).await;
    let mut out = dialer.open_stream().await.unwrap();
    out.write_all(b"partial").await.unwrap();
    let mut inc = within("accept", listener.accept_stream()).await.unwrap();
    let mut buf = [0u8; 7];
    inc.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"partial");

    drop(out); // no finish: RST
    // yamux alone reports a reset to the reader as the end of the stream; ours says what it
    // is: an error, never the clean end a FIN gives...
    let mut rest = Vec::new();
    let reset = within("the reset", inc.read_to_end(&mut rest)).await;
    assert_eq!(reset.map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionReset));
    assert!(rest.is_empty());
    // ...and, unlike after a FIN (see the half-close above), the stream can no longer be written.
    let error = inc.write_all(b"too late").await.expect_err("writing to a reset stream");
    assert_eq!(error.kind(), std::io::ErrorKind::WriteZero);

    // The connection is unaffected.
    let mut again = dialer.open_stream().await.unwrap();
    again.write_all(b"x").await.unwrap();
    let mut inc = within("accept", listener.accept_stream()).await.unwrap();
    inc.read_exact(&mut buf[..1]).await.unwrap();
    assert_eq!(buf[0], b'x');
}

#[tokio::test]
async fn the_accepting_side_dropping_resets_the_openers_writes() {
    let ((dialer, _), (listener, _)) = pair(&YamuxConfig::default()).await;
    let mut out = dialer.open_stream().await.unwrap();
    out.write_all(b"hi").await.unwrap();
    let inc = within("accept", listener.accept_stream()).await.unwrap();
    drop(inc);
    let mut rest = Vec::new();
    let reset = within("the reset", out.read_to_end(&mut rest)).await;
    assert_eq!(reset.map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionReset));
    assert!(out.write_all(b"more").await.is_err());
}
