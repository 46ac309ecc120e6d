//! Peers that move just enough bytes to look alive: trickled frames, slow readers, silent or
//! trickling dialers, held payloads, and many handshakes from one address. Each is bounded by
//! a rate or a deadline, and the node goes on serving everyone else.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sinew::layers::transport::RefusedLimit;
use sinew::{DialError, DisconnectCode, DropReason, Event, Opcode, Reason};
use sinew_codec::{Frame, flags};
use sinew_tests::{
    WAIT, addr, connected, disconnected, node, node_with, still_serves, tcp_node, tcp_node_with,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::raw::raw_connect;

/// The reason of the next message the node drops.
async fn next_drop(events: &mut sinew::Events) -> Option<DropReason> {
    events
        .wait_for(WAIT, |e| match e {
            Event::MessageDropped { reason, .. } => Some(*reason),
            _ => None,
        })
        .await
}

/// A frame that makes progress on every read, but far below the lanes' minimum rate, closes
/// the connection: moving a byte within each stall timeout is not enough to hold a 1 MiB
/// receive buffer.
#[tokio::test]
async fn a_frame_trickled_below_the_lane_rate_closes_the_connection() {
    let a = node_with(|c| {
        c.frame_stall_timeout = Duration::from_secs(1);
        c.lane_min_rate = 16 * 1024;
    })
    .await;
    let mut events = a.events();
    let mut raw = raw_connect(&addr(&a)).await;
    let mut lane = raw.message_stream().await;
    let frame = Frame::message(Opcode::app(1000).unwrap(), Bytes::from(vec![7u8; 1 << 20]));
    let bytes = frame.to_bytes();
    // 64 bytes every 50 ms: 1.3 KB/s, each read well within the 1 s stall timeout.
    let trickle = tokio::spawn(async move {
        for chunk in bytes.chunks(64) {
            if lane.write_all(chunk).await.is_err() || lane.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert_eq!(raw.goodbye_code().await, DisconnectCode::PROTOCOL_ERROR);
    let reason = disconnected(&mut events, raw.id).await;
    assert!(matches!(&reason, Reason::ProtocolError(d) if d.contains("too slowly")), "{reason:?}");
    trickle.abort();
    still_serves(&a).await;
}

/// A reader that takes our queued application frames, but slower than the lanes' minimum rate
/// (each write still progresses within the write-stall timeout), is closed as stalled, and is
/// told so on the control stream.
#[tokio::test]
async fn a_reader_slower_than_the_lane_rate_is_closed_as_stalled() {
    let a = node_with(|c| {
        c.frame_stall_timeout = Duration::from_secs(1);
        c.write_stall_timeout = Duration::from_secs(5);
        c.lane_min_rate = 256 * 1024;
    })
    .await;
    let mut events = a.events();
    let mut raw = raw_connect(&addr(&a)).await;
    connected(&mut events, raw.id).await;
    let muxer = raw._connection.muxer.clone();
    // About 64 KB/s: yamux returns window after half of its 256 KiB is read, so a's writes
    // move every 2 s, within the write-stall timeout, at a quarter of the minimum rate.
    let slow_reader = tokio::spawn(async move {
        let Some(mut stream) = muxer.accept_stream().await else { return };
        let mut buf = vec![0u8; 8 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(125)).await,
            }
        }
    });
    let op = Opcode::app(1000).unwrap();
    for _ in 0..64 {
        a.try_send(raw.id, op, Bytes::from(vec![1u8; 64 * 1024])).unwrap();
    }
    assert_eq!(raw.goodbye_code().await, DisconnectCode::STALLED);
    let reason = disconnected(&mut events, raw.id).await;
    assert_eq!(reason, Reason::Local(DisconnectCode::STALLED));
    slow_reader.abort();
    still_serves(&a).await;
}

/// A socket that says nothing, or trickles its preamble, is closed after the 2 s the listener
/// gives the dialler's first messages, not after the whole handshake timeout.
#[tokio::test]
async fn silent_and_trickling_dialers_are_closed_within_the_first_message_timeout() {
    let a = tcp_node_with(|c| c.tcp.noise.handshake_timeout = Duration::from_secs(30)).await;
    let target = a.listen_addrs()[0].socket_addr().unwrap();
    let preamble = *sinew_secure::Preamble::new(sinew::NoiseSuite::AesGcm).as_bytes();
    for trickle in [false, true] {
        let mut socket = TcpStream::connect(target).await.unwrap();
        let started = Instant::now();
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            let mut byte = [0u8; 1];
            for b in preamble.iter().filter(|_| trickle) {
                if socket.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            // The node closes the socket: the read ends (EOF or reset).
            let _ = socket.read(&mut byte).await;
        });
        assert!(closed.await.is_ok(), "trickle {trickle}: still open after 5 s");
        assert!(started.elapsed() >= Duration::from_millis(1900), "not before its time");
    }
    still_serves(&a).await;
}

/// A dialler that gets message 2 and never sends message 3 holds its pending slot for the 2 s
/// the listener gives each of the dialler's messages, not for the whole handshake timeout.
#[tokio::test]
async fn a_dialler_that_stops_before_message_3_is_closed_within_the_message_timeout() {
    use sinew_secure::{HandshakeStep, NoiseHandshake, NoiseIdentity};
    let a = tcp_node_with(|c| c.tcp.noise.handshake_timeout = Duration::from_secs(30)).await;
    let mut events = a.events();
    let target = a.listen_addrs()[0].socket_addr().unwrap();
    let identity = NoiseIdentity::new(&sinew::Keypair::generate(), 1);
    let mut handshake = NoiseHandshake::initiator(&identity, sinew::NoiseSuite::AesGcm, None);
    let mut out = handshake.preamble().as_bytes().to_vec();
    handshake.write_message(&mut out).unwrap();
    let mut socket = TcpStream::connect(target).await.unwrap();
    socket.write_all(&out).await.unwrap();
    // Message 2 arrives...
    let mut prefix = [0u8; 2];
    socket.read_exact(&mut prefix).await.unwrap();
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    socket.read_exact(&mut message).await.unwrap();
    handshake.read_message(&message).unwrap();
    assert_eq!(handshake.step(), HandshakeStep::Write, "message 3 is ours to send");
    // ... and we send nothing more.
    let started = Instant::now();
    let failed = events.wait_for(WAIT, |e| match e {
        Event::HandshakeFailed { error, .. } => Some(error.to_string()),
        _ => None,
    });
    let error = failed.await.expect("the handshake fails");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}: {error}");
    assert!(waited >= Duration::from_millis(1900), "not before its time: {waited:?}");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, socket.read_to_end(&mut rest)).await.expect("closed");
    still_serves(&a).await;
}

/// A delivered large message keeps its share of the receive budget until the application
/// drops it, so payloads an application holds are bounded too.
#[tokio::test]
async fn a_held_large_payload_keeps_its_budget_until_dropped() {
    let op = Opcode::app(1000).unwrap();
    let a = node_with(|c| c.large_message_budget = 16 << 20).await;
    let b = node().await;
    let mut inbox = a.inbox(op).await.unwrap();
    let mut events = a.events();
    let peer = b.dial(addr(&a)).await.unwrap();
    b.send_acked(peer, op, Bytes::from(vec![1u8; 12 << 20])).await.unwrap();
    let held = inbox.try_next().expect("delivered before the ack");
    // A second one does not fit beside the one held.
    let refused = b.send(peer, op, Bytes::from(vec![2u8; 12 << 20])).await;
    assert_eq!(refused, Err(sinew::SendError::Reset), "the sender learns of the reset");
    let dropped = next_drop(&mut events).await;
    assert_eq!(dropped, Some(DropReason::BudgetExhausted));
    assert!(inbox.try_next().is_none(), "nothing else was delivered");
    // Let go of it: the next one fits.
    drop(held);
    b.send_acked(peer, op, Bytes::from(vec![3u8; 12 << 20])).await.unwrap();
    let msg = inbox.try_next().expect("delivered before the ack");
    assert_eq!(msg.payload[0], 3);
    b.ping(peer).await.expect("the connection went on");
}

/// One address may hold at most 8 inbound handshakes in progress: a dialler from it is refused
/// past that and told which limit, and served again once they end.
#[tokio::test]
async fn handshakes_in_progress_are_limited_per_address() {
    let a = tcp_node_with(|c| c.tcp.noise.handshake_timeout = Duration::from_secs(30)).await;
    let mut events = a.events();
    let target = a.listen_addrs()[0].socket_addr().unwrap();
    let limit = sinew::PeersConfig::default().limits.max_pending_per_ip;
    let mut silent = Vec::new();
    for _ in 0..limit {
        silent.push(TcpStream::connect(target).await.unwrap());
    }
    let b = tcp_node().await;
    let refused = b.dial(addr(&a)).await;
    assert!(
        matches!(refused, Err(DialError::Refused { limit: RefusedLimit::PendingHandshakes, .. })),
        "{refused:?}"
    );
    let refusal = events
        .wait_for(WAIT, |e| match e {
            Event::InboundRefused { refusal, .. } => Some(refusal.to_string()),
            _ => None,
        })
        .await
        .expect("the refusal is reported");
    assert!(refusal.contains("pending handshake limit reached for 127.0.0.1"), "{refusal}");
    // The silent sockets go away: their slots are free again.
    drop(silent);
    let mut failed = 0;
    while failed < limit {
        let event = events.wait_for(WAIT, |e| match e {
            Event::HandshakeFailed { .. } => Some(()),
            _ => None,
        });
        event.await.expect("each silent socket's handshake fails");
        failed += 1;
    }
    b.dial(addr(&a)).await.expect("served again");
}

/// An unauthorized peer's frame cap (16 KiB) is exact: a keepalive at the cap is answered, one
/// byte more closes the connection with a goodbye that says why.
#[tokio::test]
async fn the_unauthorized_frame_cap_is_exact() {
    let cap = sinew::NodeConfig::default().unauthorized_frame_cap;
    let a = node_with(|c| {
        c.peers.default_authorized = false;
        c.peers.auth_timeout = Duration::from_secs(60);
    })
    .await;
    let mut raw = raw_connect(&addr(&a)).await;
    raw.write_frame(&Frame::message(Opcode::KEEPALIVE, Bytes::from(vec![1u8; cap]))).await;
    let mut buf = bytes::BytesMut::new();
    let answered = tokio::time::timeout(WAIT, async {
        loop {
            if raw.next_frame(&mut buf).await.expect("up").opcode == Opcode::KEEPALIVE_RESPONSE {
                return;
            }
        }
    });
    assert!(answered.await.is_ok(), "a keepalive at the cap is answered");
    raw.write_frame(&Frame::message(Opcode::KEEPALIVE, Bytes::from(vec![1u8; cap + 1]))).await;
    assert_eq!(raw.goodbye_code().await, DisconnectCode::PROTOCOL_ERROR);
    still_serves(&a).await;
}

/// A `LARGE` header is judged by its claim at once: 512 MiB is taken (the body is read),
/// 512 MiB + 1 is refused before any of it is read.
#[tokio::test]
async fn the_large_message_cap_is_exact() {
    let op = Opcode::app(1000).unwrap();
    let a = node().await;
    let mut events = a.events();
    let raw = raw_connect(&addr(&a)).await;
    let header = |payload: usize| {
        let mut h = Vec::new();
        h.extend_from_slice(&((payload + 5) as u32).to_le_bytes());
        h.extend_from_slice(&op.value().to_le_bytes());
        h.push(flags::LARGE);
        h
    };
    let muxer = raw._connection.muxer.clone();
    // At the cap: the node reads the body (1 MiB of it is sent, then the stream is dropped).
    let mut stream = muxer.open_stream().await.unwrap();
    stream.write_all(&header(sinew_codec::MAX_MESSAGE)).await.unwrap();
    stream.write_all(&vec![0u8; 1 << 20]).await.unwrap();
    stream.flush().await.unwrap();
    let read_body = sinew_tests::eventually(|| async {
        let state = a.network_state().await.unwrap();
        state.peers.iter().any(|p| p.peer == raw.id && p.bytes_in > 1 << 20)
    });
    assert!(read_body.await, "the body of a message at the cap is read");
    drop(stream);
    // One byte over: refused from its header.
    let mut stream = muxer.open_stream().await.unwrap();
    stream.write_all(&header(sinew_codec::MAX_MESSAGE + 1)).await.unwrap();
    stream.flush().await.unwrap();
    let dropped = next_drop(&mut events).await;
    assert_eq!(dropped, Some(DropReason::TooLarge), "only the one over the cap is refused");
    let mut byte = [0u8; 1];
    let reset = tokio::time::timeout(WAIT, stream.read(&mut byte)).await.expect("ended");
    assert!(!matches!(reset, Ok(n) if n > 0), "the stream carries nothing back");
    still_serves(&a).await;
}

/// An inbox is bounded in bytes too: a peer sending 1 MiB messages to an application that does
/// not read fills it to `inbox_bytes`, then its messages are refused (`InboxFull`) in order,
/// with nothing else lost; once the application reads, they fit again.
#[tokio::test]
async fn an_inbox_is_bounded_in_bytes() {
    let op = Opcode::app(1000).unwrap();
    let a = node_with(|c| c.inbox_bytes = 3 << 20).await;
    let b = node().await;
    let mut inbox = a.inbox(op).await.unwrap();
    let mut events = a.events();
    let peer = b.dial(addr(&a)).await.unwrap();
    for i in 0..5u8 {
        b.send(peer, op, Bytes::from(vec![i; 1 << 20])).await.unwrap();
    }
    for _ in 0..2 {
        assert_eq!(next_drop(&mut events).await, Some(DropReason::InboxFull));
    }
    // The first three are there, in order, and nothing else.
    for i in 0..3u8 {
        let msg = inbox.try_next().expect("held");
        assert_eq!((msg.payload.len(), msg.payload[0]), (1 << 20, i));
    }
    assert!(inbox.try_next().is_none());
    b.send(peer, op, Bytes::from(vec![9u8; 1 << 20])).await.unwrap();
    let msg = tokio::time::timeout(WAIT, inbox.next()).await.unwrap().unwrap();
    assert_eq!(msg.payload[0], 9, "room again once read");
}
