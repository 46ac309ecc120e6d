//! `WsStream` against a raw tungstenite peer: pings, close, resets, limits, batching.

mod common;

use std::io::ErrorKind;

use bytes::Bytes;
use common::{WAIT, pattern};
use futures::{SinkExt as _, StreamExt as _};
use sinew_ws::{WsStream, WsStreamConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Raw = WebSocketStream<TcpStream>;

/// Our `WsStream` as the server, a raw tungstenite client.
async fn ours_serving(config: WsStreamConfig) -> (WsStream<TcpStream>, Raw) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        WsStream::accept(tcp, "/", &config).await.unwrap()
    };
    let client = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/"), tcp).await.unwrap().0
    };
    tokio::time::timeout(WAIT, async { tokio::join!(server, client) }).await.unwrap()
}

/// Our `WsStream` as the client, a raw tungstenite server.
async fn ours_dialling(config: WsStreamConfig) -> (WsStream<TcpStream>, Raw) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        tokio_tungstenite::accept_async(tcp).await.unwrap()
    };
    let client = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        WsStream::connect(tcp, &format!("ws://127.0.0.1:{port}/"), &config).await.unwrap().0
    };
    let (raw, ours) =
        tokio::time::timeout(WAIT, async { tokio::join!(server, client) }).await.unwrap();
    (ours, raw)
}

async fn next(raw: &mut Raw) -> Option<Message> {
    tokio::time::timeout(WAIT, raw.next()).await.expect("a message in time").map(Result::unwrap)
}

fn close_code(message: Option<Message>) -> Option<CloseCode> {
    match message {
        Some(Message::Close(frame)) => frame.map(|f| f.code),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_ping_is_answered_while_the_application_only_reads() {
    for dialling in [false, true] {
        let (mut ours, mut raw) = if dialling {
            ours_dialling(WsStreamConfig::default()).await
        } else {
            ours_serving(WsStreamConfig::default()).await
        };
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            ours.read_to_end(&mut got).await.map(|_| got)
        });
        raw.send(Message::Ping(Bytes::from_static(b"are you there"))).await.unwrap();
        assert_eq!(next(&mut raw).await, Some(Message::Pong(Bytes::from_static(b"are you there"))));
        raw.send(Message::Binary(Bytes::from_static(b"data"))).await.unwrap();
        raw.send(Message::Ping(Bytes::from_static(b"again"))).await.unwrap();
        assert_eq!(next(&mut raw).await, Some(Message::Pong(Bytes::from_static(b"again"))));
        raw.close(None).await.unwrap();
        let got = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
        assert_eq!(got.unwrap(), b"data", "a close reads as the end after the data");
    }
}

#[tokio::test]
async fn a_close_from_the_peer_reads_as_the_end_after_the_data() {
    let (mut ours, mut raw) = ours_dialling(WsStreamConfig::default()).await;
    raw.send(Message::Binary(Bytes::from_static(b"one "))).await.unwrap();
    raw.send(Message::Binary(pattern(100_000, 1).into())).await.unwrap();
    raw.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })))
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, ours.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(&got[..4], b"one ");
    assert_eq!(&got[4..], &pattern(100_000, 1)[..]);
    // Our reply completed the close handshake; reading again stays at the end.
    assert_eq!(close_code(next(&mut raw).await), Some(CloseCode::Normal));
    assert_eq!(ours.read(&mut [0; 8]).await.unwrap(), 0);
    // Writing after the close is refused.
    let error = ours.write_all(b"late").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BrokenPipe);
}

#[tokio::test]
async fn the_connection_ending_without_a_close_frame_is_a_reset() {
    // Between messages.
    let (mut ours, mut raw) = ours_serving(WsStreamConfig::default()).await;
    raw.send(Message::Binary(Bytes::from_static(b"last words"))).await.unwrap();
    drop(raw.into_inner());
    let mut got = Vec::new();
    let error = tokio::time::timeout(WAIT, ours.read_to_end(&mut got)).await.unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    assert_eq!(got, b"last words");
    let again = ours.read(&mut [0; 8]).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::ConnectionReset);

    // In the middle of a frame: a binary frame header announcing 100 bytes, then 3 of them.
    let (mut ours, raw) = ours_dialling(WsStreamConfig::default()).await;
    let mut tcp = raw.into_inner();
    tcp.write_all(&[0x82, 100, 1, 2, 3]).await.unwrap();
    drop(tcp);
    let error = tokio::time::timeout(WAIT, ours.read(&mut [0; 8])).await.unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
}

#[tokio::test]
async fn shutdown_sends_a_normal_close_and_reading_ends_cleanly() {
    for dialling in [false, true] {
        let (mut ours, mut raw) = if dialling {
            ours_dialling(WsStreamConfig::default()).await
        } else {
            ours_serving(WsStreamConfig::default()).await
        };
        ours.write_all(b"unflushed").await.unwrap();
        ours.shutdown().await.unwrap();
        assert_eq!(next(&mut raw).await, Some(Message::Binary(Bytes::from_static(b"unflushed"))));
        assert_eq!(close_code(next(&mut raw).await), Some(CloseCode::Normal));
        // tungstenite replies to the close as it reads on.
        let raw_end = tokio::spawn(async move { while raw.next().await.is_some() {} });
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, ours.read_to_end(&mut rest)).await.unwrap().unwrap();
        assert!(rest.is_empty());
        tokio::time::timeout(WAIT, raw_end).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_text_message_is_invalid_data_and_closes_with_1003() {
    let (mut ours, mut raw) = ours_serving(WsStreamConfig::default()).await;
    raw.send(Message::Text("hello".into())).await.unwrap();
    let error = tokio::time::timeout(WAIT, ours.read(&mut [0; 8])).await.unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidData);
    assert_eq!(close_code(next(&mut raw).await), Some(CloseCode::Unsupported));
}

#[tokio::test]
async fn an_oversize_message_is_invalid_data_and_closes_with_1009() {
    let config = WsStreamConfig { max_message_size: 1000, ..WsStreamConfig::default() };
    let (mut ours, mut raw) = ours_dialling(config).await;
    raw.send(Message::Binary(pattern(1000, 0).into())).await.unwrap();
    raw.send(Message::Binary(pattern(1001, 0).into())).await.unwrap();
    let mut got = vec![0; 1000];
    ours.read_exact(&mut got).await.unwrap();
    let error = tokio::time::timeout(WAIT, ours.read(&mut [0; 8])).await.unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidData);
    assert_eq!(close_code(next(&mut raw).await), Some(CloseCode::Size));
}

#[tokio::test]
async fn writes_are_coalesced_into_messages_up_to_the_batch() {
    let config = WsStreamConfig { write_batch: 64 * 1024, ..WsStreamConfig::default() };
    let (mut ours, mut raw) = ours_dialling(config).await;
    for _ in 0..1000 {
        ours.write_all(b"0123456789").await.unwrap();
    }
    ours.flush().await.unwrap();
    assert_eq!(next(&mut raw).await, Some(Message::Binary(b"0123456789".repeat(1000).into())));

    let big = pattern(200 * 1024, 5);
    ours.write_all(&big).await.unwrap();
    ours.flush().await.unwrap();
    let mut got = Vec::new();
    while got.len() < big.len() {
        match next(&mut raw).await {
            Some(Message::Binary(m)) => {
                assert!(m.len() <= 64 * 1024, "a message of {} bytes", m.len());
                got.extend_from_slice(&m);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(got == big);
}

#[tokio::test]
async fn our_ping_gets_a_pong() {
    let (mut ours, mut raw) = ours_serving(WsStreamConfig::default()).await;
    ours.write_all(b"before").await.unwrap();
    ours.ping(Bytes::from_static(b"p")).await.unwrap();
    assert_eq!(next(&mut raw).await, Some(Message::Binary(Bytes::from_static(b"before"))));
    assert_eq!(next(&mut raw).await, Some(Message::Ping(Bytes::from_static(b"p"))));
    // tungstenite writes its queued pong after the next message it sends.
    raw.send(Message::Binary(Bytes::from_static(b"after"))).await.unwrap();
    raw.send(Message::Binary(Bytes::from_static(b"more"))).await.unwrap();
    let mut got = [0; 9];
    tokio::time::timeout(WAIT, ours.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(&got, b"aftermore");
    assert_eq!(ours.pongs_received(), 1);
}

#[tokio::test]
async fn a_request_for_another_path_gets_404() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        WsStream::accept(tcp, "/here", &WsStreamConfig::default()).await.err()
    });
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let error = tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/there"), tcp)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("404"), "{error}");
    let server_error = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    assert!(server_error.is_some());
}

/// tungstenite's output buffer is bounded: a peer that pings and never reads cannot make the
/// pongs pile up without limit (by default tungstenite's bound is `usize::MAX`).
#[test]
fn the_output_buffer_is_bounded() {
    let config = WsStreamConfig::default();
    let tungstenite = config.websocket_config();
    assert_eq!(tungstenite.max_write_buffer_size, config.max_write_buffer());
    assert!(tungstenite.max_write_buffer_size <= config.write_batch + 64 * 1024);
    assert!(tungstenite.max_write_buffer_size > config.write_batch + 14, "a batch must fit");
}
