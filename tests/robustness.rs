//! Bad input gets a typed error, the connection that sent it is closed, and the node goes on.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sinew::{Event, Opcode, Reason};
use sinew_tests::{
    WAIT, addr, disconnected, node, node_with, still_serves, tcp_node, tcp_node_with,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::raw::raw_connect;

#[tokio::test]
async fn a_partial_frame_that_makes_no_progress_closes_the_connection() {
    let a = node_with(|c| c.frame_stall_timeout = Duration::from_millis(300)).await;
    let mut events = a.events();
    let mut raw = raw_connect(&addr(&a)).await;
    // Six bytes of a frame header, then silence.
    let frame =
        sinew_codec::Frame::message(Opcode::app(1000).unwrap(), Bytes::from_static(b"payload"))
            .to_bytes();
    raw.control.write_all(&frame[..6]).await.unwrap();
    raw.control.flush().await.unwrap();
    let started = Instant::now();
    let reason = disconnected(&mut events, raw.id).await;
    assert!(
        matches!(&reason, Reason::ProtocolError(detail) if detail.contains("no progress")),
        "{reason:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed by the stall timeout, not before"
    );
    still_serves(&a).await;
}

#[tokio::test]
async fn garbage_truncated_and_tls_handshakes_are_refused_while_the_listener_serves_others() {
    let a = tcp_node_with(|c| c.tcp.noise.handshake_timeout = Duration::from_secs(2)).await;
    let mut events = a.events();
    let target = a.listen_addrs()[0].socket_addr().unwrap();
    let tls_client_hello = [0x16u8, 0x03, 0x01, 0x00, 0xa0, 0x01, 0x00, 0x00, 0x9c, 0x03, 0x03];
    let cases: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        // A valid preamble and the start of Noise message 1, then the dialler gives up.
        b"SINEW\x01\x02\x00\x00\x20\x01\x02\x03",
        &tls_client_hello,
    ];
    for bytes in cases {
        let mut socket = TcpStream::connect(target).await.unwrap();
        socket.write_all(bytes).await.unwrap();
        socket.shutdown().await.unwrap();
        let mut rest = Vec::new();
        // The node closes the socket: reading ends (EOF or reset), it does not hang.
        let _ = tokio::time::timeout(WAIT, socket.read_to_end(&mut rest))
            .await
            .expect("the node closes the socket");
        let error = events
            .wait_for(WAIT, |e| match e {
                Event::HandshakeFailed { error, .. } => Some(error.to_string()),
                _ => None,
            })
            .await
            .expect("a handshake failure is reported");
        eprintln!("refused: {error}");
        still_serves(&a).await;
    }
}

#[tokio::test]
async fn a_half_open_peer_that_stops_reading_is_disconnected_by_missed_pongs() {
    let a = node_with(|c| {
        c.peers.ping_interval = Duration::from_millis(200);
        c.peers.ping_timeout = Duration::from_millis(150);
        c.peers.max_missed_pings = 3;
    })
    .await;
    let mut events = a.events();
    let started = Instant::now();
    let raw = raw_connect(&addr(&a)).await; // never reads or answers again
    let reason = disconnected(&mut events, raw.id).await;
    assert_eq!(reason, Reason::PingTimeout);
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "three intervals: {:?}",
        started.elapsed()
    );
    drop(raw);
    still_serves(&a).await;
}

#[tokio::test]
async fn an_oversize_control_frame_closes_only_that_connection() {
    let a = node_with(|_| {}).await;
    let b = node().await;
    let mut events = a.events();
    let peer = b.dial(addr(&a)).await.unwrap();
    let other = node().await;
    let other_peer = other.dial(addr(&a)).await.unwrap();
    let mut raw = raw_connect(&addr(&a)).await;
    // Claims 1 GiB: refused from the header alone.
    let mut header =
        sinew_codec::Frame::message(Opcode::app(1000).unwrap(), Bytes::new()).to_bytes().to_vec();
    header[0..4].copy_from_slice(&(1u32 << 30).to_le_bytes());
    raw.control.write_all(&header).await.unwrap();
    raw.control.flush().await.unwrap();
    let reason = disconnected(&mut events, raw.id).await;
    assert!(
        matches!(&reason, Reason::ProtocolError(d) if d.contains("exceeds the cap")),
        "{reason:?}"
    );
    b.ping(peer).await.expect("other connections are untouched");
    other.ping(other_peer).await.expect("other connections are untouched");
}

/// The caps are exact, on the payload: 1 MiB on a message stream and 64 KiB on the control
/// stream are accepted; one byte more closes the connection, said with DISCONNECT code 4.
#[tokio::test]
async fn frame_caps_hold_at_the_cap_and_refuse_cap_plus_one() {
    use sinew_codec::{DEFAULT_CONTROL_CAP, Frame, SYSTEM_FRAME_CAP};
    let a = node().await;
    let op = Opcode::app(1000).unwrap();
    let mut inbox = a.inbox(op).await.unwrap();
    let mut events = a.events();

    // A message stream frame of exactly 1 MiB arrives.
    let raw = raw_connect(&addr(&a)).await;
    let mut lane = raw.message_stream().await;
    let at_cap = Frame::message(op, Bytes::from(vec![7u8; DEFAULT_CONTROL_CAP]));
    lane.write_all(&at_cap.to_bytes()).await.unwrap();
    lane.flush().await.unwrap();
    let msg = tokio::time::timeout(WAIT, inbox.next()).await.unwrap().unwrap();
    assert_eq!(msg.payload.len(), DEFAULT_CONTROL_CAP);

    // One byte more: refused from its header, with a goodbye that says why.
    let mut raw = raw_connect(&addr(&a)).await;
    let mut lane = raw.message_stream().await;
    let over = Frame::message(op, Bytes::from(vec![7u8; DEFAULT_CONTROL_CAP + 1]));
    let _ = lane.write_all(&over.to_bytes()).await;
    assert_eq!(raw.goodbye_code().await, sinew::DisconnectCode::PROTOCOL_ERROR);
    let reason = disconnected(&mut events, raw.id).await;
    assert!(
        matches!(&reason, Reason::ProtocolError(d) if d.contains("exceeds the cap")),
        "{reason:?}"
    );

    // The control stream: a keepalive carrying exactly 64 KiB is answered...
    let mut raw = raw_connect(&addr(&a)).await;
    let at_cap = Frame::message(Opcode::KEEPALIVE, Bytes::from(vec![1u8; SYSTEM_FRAME_CAP]));
    raw.write_frame(&at_cap).await;
    let mut buf = bytes::BytesMut::new();
    let answered = tokio::time::timeout(WAIT, async {
        loop {
            if raw.next_frame(&mut buf).await.expect("up").opcode == Opcode::KEEPALIVE_RESPONSE {
                return;
            }
        }
    });
    assert!(answered.await.is_ok());
    // ... and one carrying a byte more closes the connection.
    let over = Frame::message(Opcode::KEEPALIVE, Bytes::from(vec![1u8; SYSTEM_FRAME_CAP + 1]));
    raw.write_frame(&over).await;
    assert_eq!(raw.goodbye_code().await, sinew::DisconnectCode::PROTOCOL_ERROR);
    still_serves(&a).await;
}

/// A burst of stream opens within the limit is never reset; past it, exactly the excess is.
/// The raw peer holds its control stream, then opens 70 raw streams at once: 63 fit the
/// inbound limit of 64, 7 are reset.
#[tokio::test]
async fn a_burst_of_stream_opens_is_refused_exactly_past_the_limit() {
    use sinew_codec::messages::{MessageBody as _, OpenStream};
    let a = node().await;
    let op = Opcode::app(2000).unwrap();
    let mut handler = a.stream_handler(op).await.unwrap();
    // Our side may open more than 64 streams, so that the node's limit is the one that counts.
    let mut config = sinew_tcp::TcpConfig::default();
    config.mux.limits.outbound = 128;
    let key = sinew_types::Keypair::generate();
    let raw = crate::raw::raw_connect_with(&key, 1, &addr(&a), config).await;
    let header =
        sinew_codec::Frame::message(Opcode::OPEN_STREAM, OpenStream { opcode: op }.encode())
            .to_bytes();
    let mut streams = Vec::new();
    for _ in 0..70 {
        let mut stream = raw._connection.muxer.open_stream().await.unwrap();
        stream.write_all(&header).await.unwrap();
        stream.flush().await.unwrap();
        streams.push(stream);
    }
    let mut taken = Vec::new();
    for _ in 0..63 {
        let incoming = tokio::time::timeout(WAIT, handler.next()).await.expect("taken").unwrap();
        taken.push(incoming);
    }
    let more = tokio::time::timeout(Duration::from_millis(500), handler.next()).await;
    assert!(more.is_err(), "no 64th stream");
    // The other 7 were reset: they read the end at once (the taken ones stay open).
    let reads = streams.iter_mut().map(|stream| async move {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte));
        matches!(read.await, Ok(Ok(0) | Err(_)))
    });
    let ended = futures::future::join_all(reads).await.into_iter().filter(|e| *e).count();
    assert_eq!(ended, 7, "exactly the streams over the limit are reset");
}

/// A dialler speaking another control stream version is told so (DISCONNECT 11) and closed.
#[tokio::test]
async fn another_control_stream_version_is_refused_with_its_code() {
    use sinew_codec::messages::{ControlHello, Disconnect, MessageBody as _};
    use sinew_codec::{Frame, FrameDecoder};
    use sinew_transport::Transport as _;
    let a = tcp_node().await;
    let key = sinew_types::Keypair::generate();
    let identity = std::sync::Arc::new(sinew_secure::NoiseIdentity::new(&key, 1));
    let transport = sinew_tcp::TcpTransport::new(identity, sinew_tcp::TcpConfig::default());
    let connection = transport.dial(addr(&a)).await.unwrap();
    let mut control = connection.muxer.open_stream().await.unwrap();
    let hello = Frame::message(Opcode::CONTROL_STREAM, ControlHello { version: 1 }.encode());
    control.write_all(&hello.to_bytes()).await.unwrap();
    control.flush().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, control.read_to_end(&mut answer)).await.unwrap().unwrap();
    let mut buf = bytes::BytesMut::from(&answer[..]);
    let frame = FrameDecoder::new(1024).decode(&mut buf).unwrap().expect("a goodbye");
    assert_eq!(frame.opcode, Opcode::DISCONNECT);
    let goodbye = Disconnect::decode(frame.payload).unwrap();
    assert_eq!(goodbye.code, sinew::DisconnectCode::UNSUPPORTED_VERSION);
    let speaks = format!("speaks {}", sinew_codec::messages::CONTROL_VERSION);
    assert!(goodbye.message.contains(&speaks), "{}", goodbye.message);
}
