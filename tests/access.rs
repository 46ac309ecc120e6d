//! The authorization gate covers every opcode block and every stream kind: by default an
//! unauthorized peer may use ping, keepalive, identify and disconnect, nothing else.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sinew_codec::messages::{MessageBody as _, OpenStream, Perf};
use sinew_codec::{Frame, FrameKind, Opcode, Status};
use sinew_tests::{WAIT, addr, node_with};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::raw::raw_connect;

/// Reads control frames until one answers request `id`.
async fn answer(raw: &mut crate::raw::RawPeer, buf: &mut BytesMut, id: u64) -> Frame {
    tokio::time::timeout(WAIT, async {
        loop {
            let frame = raw.next_frame(buf).await.expect("the connection stays up");
            if frame.kind.id() == Some(id)
                && matches!(frame.kind, FrameKind::Response { .. } | FrameKind::Error { .. })
            {
                return frame;
            }
        }
    })
    .await
    .expect("an answer in time")
}

/// Whether the node reset (or refused) a stream we opened with `header`.
async fn refused(raw: &crate::raw::RawPeer, header: Bytes) -> bool {
    let mut stream = raw._connection.muxer.open_stream().await.unwrap();
    stream.write_all(&header).await.unwrap();
    stream.flush().await.unwrap();
    let mut byte = [0u8; 1];
    // yamux 0.14 reports a reset as the end of the stream: nothing ever comes back.
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn an_unauthorized_peer_may_only_ping_keepalive_identify_and_disconnect() {
    let a = node_with(|c| {
        c.peers.default_authorized = false;
        c.peers.auth_timeout = Duration::from_secs(60);
    })
    .await;
    let _inbox = a.inbox(Opcode::app(1000).unwrap()).await.unwrap();
    let mut raw = raw_connect(&addr(&a)).await;
    let mut buf = BytesMut::new();

    // Ping is answered.
    let ping =
        Frame::new(Opcode::PING, FrameKind::Request { id: 1 }, Bytes::from_static(b"12345678"));
    raw.write_frame(&ping).await;
    let pong = answer(&mut raw, &mut buf, 1).await;
    assert_eq!((pong.opcode, &pong.payload[..]), (Opcode::PONG, &b"12345678"[..]));

    // A rendezvous-block request is refused, whatever handles it.
    let rendezvous = Frame::new(Opcode::from_u32(150), FrameKind::Request { id: 2 }, Bytes::new());
    raw.write_frame(&rendezvous).await;
    let refusal = answer(&mut raw, &mut buf, 2).await;
    assert_eq!(refusal.kind, FrameKind::Error { id: 2, status: Status::UNAUTHORIZED });

    // So is an application request on the message stream, though an inbox takes 1000.
    let mut lane = raw.message_stream().await;
    let app = Frame::new(Opcode::app(1000).unwrap(), FrameKind::Request { id: 3 }, Bytes::new());
    lane.write_all(&app.to_bytes()).await.unwrap();
    lane.flush().await.unwrap();
    let refusal = answer(&mut raw, &mut buf, 3).await;
    assert_eq!(refusal.kind, FrameKind::Error { id: 3, status: Status::UNAUTHORIZED });

    // Raw, perf and large streams are reset.
    let open = Frame::message(
        Opcode::OPEN_STREAM,
        OpenStream { opcode: Opcode::app(1000).unwrap() }.encode(),
    );
    assert!(refused(&raw, open.to_bytes()).await, "raw stream");
    let perf = Frame::message(Opcode::PERF, Perf { upload: 10, download: 10 }.encode());
    assert!(refused(&raw, perf.to_bytes()).await, "perf stream");
    let mut large = Frame::message(Opcode::app(1000).unwrap(), Bytes::from(vec![1u8; 100]));
    large.large = true;
    assert!(refused(&raw, large.to_bytes()).await, "large stream");

    // And the connection is still up: keepalive is answered... (a message 2 gets a message 3)
    raw.write_frame(&Frame::message(Opcode::KEEPALIVE, Bytes::new())).await;
    let answered = tokio::time::timeout(WAIT, async {
        loop {
            let frame = raw.next_frame(&mut buf).await.expect("still up");
            if frame.opcode == Opcode::KEEPALIVE_RESPONSE {
                return;
            }
        }
    })
    .await;
    assert!(answered.is_ok());
    // ... and we may not send it application messages.
    assert_eq!(
        a.try_send(raw.id, Opcode::app(1000).unwrap(), Bytes::new()),
        Err(sinew::SendError::Unauthorized)
    );
}

/// A perf request over the server's bounds is refused before any byte is moved.
#[tokio::test]
async fn perf_requests_over_the_bounds_are_refused() {
    let a = node_with(|c| {
        c.perf_server = true;
        c.perf_limits.max_bytes = 1 << 20;
    })
    .await;
    let b = node_with(|_| {}).await;
    let peer = b.dial(addr(&a)).await.unwrap();
    b.perf(peer, 1 << 20, 0, 64 << 10).await.expect("within the bounds");
    assert!(b.perf(peer, 1, 1 << 30, 64 << 10).await.is_err(), "download over the bound");
    assert!(b.perf(peer, (1 << 20) + 1, 0, 64 << 10).await.is_err(), "upload over the bound");
}

/// A perf test is bounded in time too: one the server's receive limit slows past
/// `perf_limits.max_duration` is reset at that deadline, not left to run.
#[tokio::test]
async fn perf_tests_are_reset_at_their_time_bound() {
    let a = node_with(|c| {
        c.perf_server = true;
        c.perf_limits.max_duration = Duration::from_secs(1);
        c.recv_rate_limit = Some(1_000_000);
    })
    .await;
    let b = node_with(|_| {}).await;
    let peer = b.dial(addr(&a)).await.unwrap();
    let started = std::time::Instant::now();
    // 16 MB at 1 MB/s would take 16 s.
    let result = tokio::time::timeout(WAIT, b.perf(peer, 16_000_000, 0, 64 << 10)).await;
    let result = result.expect("ended by the server's deadline, not ours");
    assert!(result.is_err(), "reset: {result:?}");
    assert!(started.elapsed() >= Duration::from_millis(900), "not before its time");
    b.ping(peer).await.expect("the connection goes on");
}
