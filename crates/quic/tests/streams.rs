//! Streams over QUIC: the same contract as sinew's yamux muxer.

mod common;

use std::io::ErrorKind;
use std::time::Duration;

use common::{connected, within};
use sinew_quic::QuicConfig;
use sinew_transport::{StreamError, StreamLimits};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test]
async fn echo_both_ways_and_finish_reads_as_clean_eof() {
    let (out, inc, _, _) = connected(QuicConfig::default()).await;
    let mut a = within(out.muxer.open_stream()).await.unwrap();
    a.write_all(b"hello").await.unwrap();
    let mut b = within(inc.muxer.accept_stream()).await.expect("inbound stream");
    let mut buf = [0u8; 5];
    within(b.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"hello");
    b.write_all(b"world").await.unwrap();
    within(a.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"world");

    within(a.finish()).await.unwrap();
    let mut rest = Vec::new();
    assert_eq!(within(b.read_to_end(&mut rest)).await.unwrap(), 0, "FIN is a clean EOF");
    // The other half is still open.
    b.write_all(b"more").await.unwrap();
    within(b.finish()).await.unwrap();
    let mut tail = Vec::new();
    within(a.read_to_end(&mut tail)).await.unwrap();
    assert_eq!(tail, b"more");
}

#[tokio::test]
async fn the_remote_learns_of_a_stream_with_its_first_bytes() {
    let (out, inc, _, _) = connected(QuicConfig::default()).await;
    let mut a = within(out.muxer.open_stream()).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(200), inc.muxer.accept_stream()).await;
    assert!(early.is_err(), "no stream before the opener writes");
    a.write_all(b"x").await.unwrap();
    let mut b = within(inc.muxer.accept_stream()).await.expect("stream after first bytes");
    let mut one = [0u8; 1];
    within(b.read_exact(&mut one)).await.unwrap();
}

#[tokio::test]
async fn dropping_without_finish_resets_the_stream() {
    let (out, inc, _, _) = connected(QuicConfig::default()).await;
    let mut a = within(out.muxer.open_stream()).await.unwrap();
    a.write_all(b"partial").await.unwrap();
    let mut b = within(inc.muxer.accept_stream()).await.unwrap();
    let mut buf = [0u8; 7];
    within(b.read_exact(&mut buf)).await.unwrap();
    drop(a);
    let mut rest = Vec::new();
    let err = within(b.read_to_end(&mut rest)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
}

#[tokio::test]
async fn dropping_the_reader_makes_the_writer_fail() {
    let (out, inc, _, _) = connected(QuicConfig::default()).await;
    let mut a = within(out.muxer.open_stream()).await.unwrap();
    a.write_all(b"x").await.unwrap();
    let b = within(inc.muxer.accept_stream()).await.unwrap();
    drop(b);
    let chunk = vec![0u8; 64 * 1024];
    let err = within(async {
        loop {
            if let Err(e) = a.write_all(&chunk).await {
                return e;
            }
        }
    })
    .await;
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
}

#[tokio::test]
async fn a_close_after_a_finish_loses_nothing() {
    let (out, inc, _, _) = connected(QuicConfig::default()).await;
    let mut a = within(out.muxer.open_stream()).await.unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let reader = tokio::spawn(async move {
        let mut b = inc.muxer.accept_stream().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.map(|_| got)
    });
    within(a.write_all(&data)).await.unwrap();
    within(a.finish()).await.unwrap();
    within(out.muxer.close()).await;
    assert_eq!(within(reader).await.unwrap().unwrap(), data);
}

#[tokio::test]
async fn closing_ends_reads_accepts_and_opens() {
    let (out, inc, _, _) = connected(QuicConfig::default()).await;
    let mut a = within(out.muxer.open_stream()).await.unwrap();
    a.write_all(b"x").await.unwrap();
    let mut b = within(inc.muxer.accept_stream()).await.unwrap();
    let mut one = [0u8; 1];
    within(b.read_exact(&mut one)).await.unwrap();

    // A read pending on each side when the dialler closes.
    let remote_read = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        b.read(&mut buf).await
    });
    let local_read = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        a.read(&mut buf).await
    });
    within(out.muxer.close()).await;
    assert!(out.muxer.is_closed());

    let err = within(remote_read).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "remote: {err}");
    let err = within(local_read).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "local: {err}");

    assert!(within(inc.muxer.accept_stream()).await.is_none());
    assert!(inc.muxer.is_closed());
    assert!(within(out.muxer.accept_stream()).await.is_none());
    assert!(matches!(within(out.muxer.open_stream()).await, Err(StreamError::ConnectionClosed)));
    assert!(matches!(within(inc.muxer.open_stream()).await, Err(StreamError::ConnectionClosed)));
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    let (out, inc, _, _) = connected(QuicConfig::default()).await;
    drop(out);
    assert!(within(inc.muxer.accept_stream()).await.is_none());
    assert!(inc.muxer.is_closed());
}

#[tokio::test]
async fn inbound_streams_over_the_limit_are_reset_and_counted() {
    let limits = StreamLimits { outbound: 8, inbound: 2 };
    let config = QuicConfig { limits, ..QuicConfig::default() };
    let (out, inc, _, _) = connected(config).await;
    let mut opened = Vec::new();
    for i in 0..3u8 {
        let mut s = within(out.muxer.open_stream()).await.unwrap();
        s.write_all(&[i]).await.unwrap();
        opened.push(s);
    }
    let mut accepted = Vec::new();
    for _ in 0..2 {
        let mut s = within(inc.muxer.accept_stream()).await.unwrap();
        let mut one = [0u8; 1];
        within(s.read_exact(&mut one)).await.unwrap();
        accepted.push(s);
    }
    // The third is over the limit: accept resets it and goes on waiting.
    let waiting = tokio::time::timeout(Duration::from_millis(300), inc.muxer.accept_stream());
    assert!(waiting.await.is_err());
    assert_eq!(inc.muxer.refused_inbound(), 1);
    let mut third = opened.pop().unwrap();
    let mut rest = Vec::new();
    let err = within(third.read_to_end(&mut rest)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");

    // The connection is still up: a stream after a slot frees works.
    drop(accepted.pop());
    drop(opened.pop());
    let mut s = within(out.muxer.open_stream()).await.unwrap();
    s.write_all(b"again").await.unwrap();
    s.finish().await.unwrap();
    let mut t = within(inc.muxer.accept_stream()).await.expect("connection still up");
    let mut got = Vec::new();
    within(t.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"again");
    assert!(!inc.muxer.is_closed() && !out.muxer.is_closed());
}

#[tokio::test]
async fn the_outbound_limit_makes_open_wait() {
    let limits = StreamLimits { outbound: 2, inbound: 8 };
    let config = QuicConfig { limits, ..QuicConfig::default() };
    let (out, _inc, _, _) = connected(config).await;
    let s1 = within(out.muxer.open_stream()).await.unwrap();
    let _s2 = within(out.muxer.open_stream()).await.unwrap();
    let third = tokio::time::timeout(Duration::from_millis(200), out.muxer.open_stream()).await;
    assert!(third.is_err(), "a third stream waits");
    drop(s1);
    let _s3 = within(out.muxer.open_stream()).await.unwrap();
    assert_eq!(out.muxer.open_streams(), (2, 0));
}

#[tokio::test]
async fn quinn_limit_is_above_sinews_so_many_streams_work() {
    // More streams over the connection's life than quinn's concurrent limit: credit returns.
    let limits = StreamLimits { outbound: 4, inbound: 4 };
    let config = QuicConfig { limits, ..QuicConfig::default() };
    let (out, inc, _, _) = connected(config).await;
    let server = tokio::spawn(async move {
        while let Some(mut s) = inc.muxer.accept_stream().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if s.read_to_end(&mut buf).await.is_ok() {
                    let _ = s.write_all(&buf).await;
                    let _ = s.finish().await;
                }
            });
        }
    });
    for i in 0..100u32 {
        let mut s = within(out.muxer.open_stream()).await.unwrap();
        s.write_all(&i.to_le_bytes()).await.unwrap();
        within(s.finish()).await.unwrap();
        let mut back = Vec::new();
        within(s.read_to_end(&mut back)).await.unwrap();
        assert_eq!(back, i.to_le_bytes());
    }
    out.muxer.close().await;
    within(server).await.unwrap();
}

#[tokio::test]
async fn a_priority_echo_completes_during_a_16_mib_transfer() {
    const SIZE: usize = 16 << 20;
    // A 4 MiB stream window: the bulk writer cannot finish before the receiver reads, and the
    // receiver reads the bulk stream only after the echo, so the echo must not wait for it.
    let config = QuicConfig { stream_receive_window: 4 << 20, ..QuicConfig::default() };
    let (out, inc, _, _) = connected(config).await;
    let server = tokio::spawn(async move {
        // First stream: the bulk one; second: the priority echo.
        let mut bulk = inc.muxer.accept_stream().await.unwrap();
        let mut echo = inc.muxer.accept_stream().await.unwrap();
        echo.set_priority(true);
        let mut ping = [0u8; 4];
        echo.read_exact(&mut ping).await.unwrap();
        echo.write_all(&ping).await.unwrap();
        echo.finish().await.unwrap();
        let mut got = Vec::with_capacity(SIZE);
        bulk.read_to_end(&mut got).await.unwrap();
        (got, inc)
    });
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 253) as u8).collect();
    let mut bulk = within(out.muxer.open_stream()).await.unwrap();
    bulk.write_all(&data[..1024]).await.unwrap();
    let writer = tokio::spawn(async move {
        bulk.write_all(&data[1024..]).await.unwrap();
        bulk.finish().await.unwrap();
        (bulk, data)
    });
    let mut control = within(out.muxer.open_stream()).await.unwrap();
    control.set_priority(true);
    control.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    within(control.read_exact(&mut pong)).await.unwrap();
    assert_eq!(&pong, b"ping");
    assert!(!writer.is_finished(), "the echo completed while the bulk stream was still going");
    let (_bulk, data) = within(writer).await.unwrap();
    let (received, _inc) = within(server).await.unwrap();
    assert!(received == data, "the 16 MiB arrived intact");
}

#[tokio::test]
async fn priority_echoes_stay_fast_while_a_bulk_stream_runs_at_full_speed() {
    const SIZE: usize = 64 << 20;
    let (out, inc, _, _) = connected(QuicConfig::default()).await;
    let server = tokio::spawn(async move {
        let mut bulk = inc.muxer.accept_stream().await.unwrap();
        let sink = tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0;
            loop {
                match bulk.read(&mut buf).await.unwrap() {
                    0 => return total,
                    n => total += n,
                }
            }
        });
        let mut echo = inc.muxer.accept_stream().await.unwrap();
        echo.set_priority(true);
        let mut ping = [0u8; 8];
        while echo.read_exact(&mut ping).await.is_ok() {
            echo.write_all(&ping).await.unwrap();
        }
        (sink.await.unwrap(), inc)
    });
    let mut bulk = within(out.muxer.open_stream()).await.unwrap();
    bulk.write_all(&[0; 1024]).await.unwrap();
    let writer = tokio::spawn(async move {
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..SIZE / chunk.len() {
            bulk.write_all(&chunk).await.unwrap();
        }
        bulk.finish().await.unwrap();
    });
    let mut control = within(out.muxer.open_stream()).await.unwrap();
    control.set_priority(true);
    let mut worst = Duration::ZERO;
    let mut echoes = 0;
    while !writer.is_finished() && echoes < 1000 {
        let started = std::time::Instant::now();
        control.write_all(&[7; 8]).await.unwrap();
        let mut pong = [0u8; 8];
        within(control.read_exact(&mut pong)).await.unwrap();
        worst = worst.max(started.elapsed());
        echoes += 1;
    }
    within(writer).await.unwrap();
    control.finish().await.unwrap();
    let (total, _inc) = within(server).await.unwrap();
    assert_eq!(total, SIZE + 1024);
    eprintln!("{echoes} priority echoes during 64 MiB of bulk, worst round trip {worst:?}");
    assert!(worst < Duration::from_secs(1), "worst echo {worst:?}");
}

#[tokio::test]
async fn stream_credit_grows_to_sinews_limit_as_streams_are_held() {
    // quinn's credit starts at 24 streams at once; a remote holding all 64 of sinew's inbound
    // limit open gets them (the credit is raised as they are accepted), and the 65th is
    // refused by sinew's limit, not left waiting on quinn's.
    let limits = StreamLimits::default();
    assert!(sinew_quic::INITIAL_STREAM_CREDIT < limits.inbound as u32);
    let config =
        QuicConfig { limits: StreamLimits { outbound: 65, ..limits }, ..QuicConfig::default() };
    let (out, inc, _, _) = connected(config).await;
    let opener = tokio::spawn(async move {
        let mut opened = Vec::new();
        for i in 0..65u8 {
            let mut s = within(out.muxer.open_stream()).await.unwrap();
            s.write_all(&[i]).await.unwrap();
            opened.push(s);
        }
        (out, opened)
    });
    let mut accepted = Vec::new();
    for _ in 0..limits.inbound {
        let mut s = within(inc.muxer.accept_stream()).await.unwrap();
        let mut one = [0u8; 1];
        within(s.read_exact(&mut one)).await.unwrap();
        accepted.push(one[0]);
        std::mem::forget(s); // held open until the test ends
    }
    let (_out, mut opened) = within(opener).await.unwrap();
    // Streams arrive in the order they were opened.
    assert_eq!(accepted, (0..64u8).collect::<Vec<_>>());
    // The 65th is over sinew's limit: accept resets it and goes on waiting.
    let waiting = tokio::time::timeout(Duration::from_millis(300), inc.muxer.accept_stream());
    assert!(waiting.await.is_err());
    let mut last = opened.pop().unwrap();
    let mut rest = Vec::new();
    let err = within(last.read_to_end(&mut rest)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert_eq!(inc.muxer.refused_inbound(), 1);
}
