//! How a connection ends: closed by either side, failed, or abandoned by its handles.

mod common;

use std::time::Duration;

use common::{pair, tcp_pair, within};
use sinew_mux::{YamuxConfig, yamux_with_stats};
use sinew_transport::{Direction, StreamError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

#[tokio::test]
async fn remote_close_ends_accept_opens_and_streams() {
    let ((dialer, dialer_stats), (listener, listener_stats)) = pair(&YamuxConfig::default()).await;
    let mut out = dialer.open_stream().await.unwrap();
    out.write_all(b"hi").await.unwrap();
    let mut inc = within("accept", listener.accept_stream()).await.unwrap();
    let mut buf = [0u8; 2];
    inc.read_exact(&mut buf).await.unwrap();
    // Both ends are reading when the dialer closes.
    let dialer_read = tokio::spawn(async move { out.read(&mut [0u8; 16]).await });
    let listener_read = tokio::spawn(async move { inc.read(&mut [0u8; 16]).await });

    within("local close", dialer.close()).await;
    assert!(dialer.is_closed() && dialer_stats.is_ended());

    assert!(within("accept after remote close", listener.accept_stream()).await.is_none());
    assert!(listener.is_closed() && listener_stats.is_ended());
    assert!(matches!(listener.open_stream().await, Err(StreamError::ConnectionClosed)));
    assert!(matches!(dialer.open_stream().await, Err(StreamError::ConnectionClosed)));
    // The remote's reader learns the stream was cut short (no FIN came): an error, not the
    // clean end a FIN gives.
    let remote = within("remote read", listener_read).await.unwrap();
    assert!(
        remote.as_ref().is_err_and(|e| matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        )),
        "{remote:?}"
    );
    // A local reader parked before the close is woken too (yamux alone would leave it parked).
    let local = within("local read", dialer_read).await.unwrap();
    assert!(matches!(local, Ok(0) | Err(_)), "{local:?}");
}

#[tokio::test]
async fn a_local_close_is_bounded_by_close_timeout_when_the_remote_does_not_read() {
    let close_timeout = Duration::from_millis(300);
    let config = YamuxConfig { close_timeout, ..YamuxConfig::default() };
    // A pipe of 64 bytes whose far end is never read: yamux's writes soon block.
    let (near, _far) = tokio::io::duplex(64);
    let (conn, stats) = yamux_with_stats(near, Direction::Outbound, &config);
    let mut stream = conn.open_stream().await.unwrap();
    stream.write_all(&[7u8; 4096]).await.unwrap(); // queued in yamux, stuck behind the pipe

    let started = Instant::now();
    within("a bounded close", conn.close()).await;
    let took = started.elapsed();
    assert!(conn.is_closed() && stats.is_ended());
    assert!(took >= close_timeout, "the close really was stuck ({took:?})");
    assert!(took < close_timeout + Duration::from_secs(3), "bounded ({took:?})");
    assert!(stream.write_all(b"more").await.is_err());
}

#[tokio::test]
async fn dropping_every_handle_ends_the_driver_and_closes_gracefully() {
    let ((dialer, dialer_stats), (listener, _)) = pair(&YamuxConfig::default()).await;
    let clone = dialer.clone();
    let mut held = dialer.open_stream().await.unwrap();
    held.write_all(b"x").await.unwrap();
    let mut inc = within("accept", listener.accept_stream()).await.unwrap();

    drop(dialer);
    assert!(!dialer_stats.is_ended(), "a clone still holds the connection");
    drop(clone);
    within("the driver's end", dialer_stats.ended()).await;
    // The stream still held by the application ends with its connection.
    assert!(held.write_all(b"y").await.is_err());
    // The remote saw a graceful close (GoAway).
    assert!(within("remote accept", listener.accept_stream()).await.is_none());
    // What was written arrives; then, as the stream was never finished, an error.
    let mut rest = Vec::new();
    let end = within("remote read", inc.read_to_end(&mut rest)).await;
    assert_eq!(rest, b"x");
    assert!(end.is_err(), "{end:?}");
}

#[tokio::test]
async fn the_socket_closing_under_the_connection_ends_it() {
    let (a, b) = tcp_pair().await;
    let (conn, stats) = yamux_with_stats(a, Direction::Inbound, &YamuxConfig::default());
    drop(b);
    assert!(within("accept", conn.accept_stream()).await.is_none());
    assert!(conn.is_closed() && stats.is_ended());
    assert!(matches!(conn.open_stream().await, Err(StreamError::ConnectionClosed)));
}

#[tokio::test]
async fn garbage_from_the_network_fails_the_connection_without_panicking() {
    let huge_frame = vec![0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]; // SYN, 4 GiB body
    let bad_version = vec![0xffu8; 64];
    for garbage in [bad_version, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), huge_frame] {
        let (a, mut b) = tcp_pair().await;
        let (conn, stats) = yamux_with_stats(a, Direction::Inbound, &YamuxConfig::default());
        b.write_all(&garbage).await.unwrap();
        assert!(within("accept", conn.accept_stream()).await.is_none());
        assert!(conn.is_closed() && stats.is_ended());
    }
}

#[tokio::test]
async fn an_open_waiting_inside_yamux_fails_when_the_connection_ends() {
    // yamux opens at most 256 streams the remote has not acknowledged; this remote never answers.
    let config = YamuxConfig {
        limits: sinew_transport::StreamLimits { outbound: 300, inbound: 1 },
        ..YamuxConfig::default()
    };
    let (near, far) = tokio::io::duplex(1 << 20);
    let (conn, stats) = yamux_with_stats(near, Direction::Outbound, &config);
    let mut unacknowledged = Vec::new();
    for _ in 0..256 {
        unacknowledged.push(conn.open_stream().await.unwrap());
    }
    let waiting = tokio::spawn({
        let conn = conn.clone();
        async move { conn.open_stream().await.map(drop) }
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(100), conn.open_stream()).await.is_err(),
        "yamux holds the 257th open until an acknowledgement"
    );
    assert!(!waiting.is_finished());

    drop(far); // the remote goes away
    within("the driver's end", stats.ended()).await;
    let result = within("the waiting open", waiting).await.unwrap();
    assert!(matches!(result, Err(StreamError::ConnectionClosed)), "{result:?}");
}
