//! Pings belong to their connection, and a remote's goodbye is heard: a pong from the wrong
//! connection or with the wrong payload does not count, and a duplicate drained by the remote
//! hands over to its successor without a disconnect.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sinew::{Event, Reason};
use sinew_codec::messages::{Disconnect, DisconnectCode, MessageBody as _};
use sinew_codec::{Frame, FrameKind, Opcode};
use sinew_tests::{WAIT, addr, disconnected, node_with};
use sinew_types::Keypair;
use tokio::io::AsyncWriteExt as _;

use crate::raw::{RawPeer, raw_connect};

/// Answers every ping on `raw`'s control stream with a pong whose payload `forge` makes.
fn answer_pings(mut raw: RawPeer, forge: fn(&Bytes) -> Bytes) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = BytesMut::new();
        while let Some(frame) = raw.next_frame(&mut buf).await {
            if let (Opcode::PING, FrameKind::Request { id }) = (frame.opcode, frame.kind) {
                let pong =
                    Frame::new(Opcode::PONG, FrameKind::Response { id }, forge(&frame.payload));
                raw.write_frame(&pong).await;
            }
        }
    })
}

fn fast_pings(c: &mut sinew::NodeConfig) {
    c.peers.ping_interval = Duration::from_millis(200);
    c.peers.ping_timeout = Duration::from_millis(150);
    c.peers.max_missed_pings = 3;
}

/// A pong must echo the ping's payload: a peer answering with anything else misses its pings.
#[tokio::test]
async fn pongs_with_the_wrong_payload_do_not_count() {
    let a = node_with(fast_pings).await;
    let mut events = a.events();
    let raw = raw_connect(&addr(&a)).await;
    let id = raw.id;
    let _answers = answer_pings(raw, |_| Bytes::from_static(b"forged!!"));
    assert_eq!(disconnected(&mut events, id).await, Reason::PingTimeout);
}

/// The control: a peer that echoes correctly stays connected through many ping intervals.
#[tokio::test]
async fn pongs_that_echo_keep_the_connection() {
    let a = node_with(fast_pings).await;
    let mut events = a.events();
    let raw = raw_connect(&addr(&a)).await;
    let id = raw.id;
    let _answers = answer_pings(raw, Bytes::clone);
    let gone = events
        .wait_for(Duration::from_millis(1500), |e| {
            matches!(e, Event::PeerDisconnected { peer, .. } if *peer == id).then_some(())
        })
        .await;
    assert!(gone.is_none(), "an answering peer stays connected");
}

/// A pong on another connection of the same peer does not answer a ping: pings are matched
/// by connection and id. Here a second connection of the same peer process answers the
/// first connection's pings with their exact ids and payloads.
#[tokio::test]
async fn a_pong_on_another_connection_does_not_count() {
    let a = node_with(fast_pings).await;
    let mut events = a.events();
    let key = Keypair::generate();
    let mut first = crate::raw::raw_connect_as(&key, 7, &addr(&a)).await;
    let mut second = crate::raw::raw_connect_as(&key, 7, &addr(&a)).await;
    // The node keeps one of the two and drains the other; both read, only `second` answers,
    // with the pings `first` receives.
    tokio::spawn(async move {
        let (mut buf1, mut buf2) = (BytesMut::new(), BytesMut::new());
        let (mut first_open, mut second_open) = (true, true);
        while first_open || second_open {
            tokio::select! {
                frame = first.next_frame(&mut buf1), if first_open => {
                    let Some(frame) = frame else { first_open = false; continue };
                    if let (Opcode::PING, FrameKind::Request { id }) = (frame.opcode, frame.kind) {
                        let pong = Frame::new(Opcode::PONG, FrameKind::Response { id }, frame.payload);
                        second.write_frame(&pong).await;
                    }
                }
                frame = second.next_frame(&mut buf2), if second_open => {
                    second_open = frame.is_some();
                }
            }
        }
        // Both stay open (the drained one is closed by the node) until the test ends.
        std::future::pending::<()>().await;
    });
    let reason = disconnected(&mut events, key.peer_id()).await;
    assert_eq!(reason, Reason::PingTimeout);
}

/// The remote drains its connection as a duplicate (its `DISCONNECT` is forwarded to the peer
/// manager) and that connection ends before its successor's handshake: the peer stays
/// connected through the swap, with no `PeerDisconnected`, and the successor carries on.
#[tokio::test]
async fn a_duplicate_drained_by_the_remote_hands_over_without_a_disconnect() {
    let a = node_with(|_| {}).await;
    let mut events = a.events();
    let op = Opcode::app(1000).unwrap();
    let mut inbox = a.inbox(op).await.unwrap();
    let key = Keypair::generate();
    let mut first = crate::raw::raw_connect_as(&key, 9, &addr(&a)).await;
    sinew_tests::connected(&mut events, key.peer_id()).await;
    let goodbye = Disconnect { code: DisconnectCode::DUPLICATE, message: String::new() };
    first.write_frame(&Frame::message(Opcode::DISCONNECT, goodbye.encode())).await;
    first.control.shutdown().await.unwrap();
    // As a draining peer does: read until the node has finished its side too, then end the
    // connection, before the successor exists.
    let mut buf = BytesMut::new();
    while tokio::time::timeout(WAIT, first.next_frame(&mut buf))
        .await
        .expect("node finishes")
        .is_some()
    {}
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = crate::raw::raw_connect_as(&key, 9, &addr(&a)).await;
    let mut lane = second.message_stream().await;
    lane.write_all(&Frame::message(op, Bytes::from_static(b"after the swap")).to_bytes())
        .await
        .unwrap();
    lane.flush().await.unwrap();
    let msg = tokio::time::timeout(WAIT, inbox.next()).await.expect("delivered").unwrap();
    assert_eq!(&msg.payload[..], b"after the swap");
    while let Some(event) = events.try_next() {
        assert!(
            !matches!(event, Event::PeerDisconnected { .. } | Event::PeerConnected { .. }),
            "the swap is silent: {event:?}"
        );
    }
}

/// A peer that pings without ever reading the pongs fills the system lane: the node closes the
/// connection for flooding (a typed reason), and drops nothing silently.
#[tokio::test]
async fn a_peer_flooding_pings_is_closed_for_flooding() {
    let a = node_with(|_| {}).await;
    let mut events = a.events();
    let mut raw = raw_connect(&addr(&a)).await;
    let id = raw.id;
    sinew_tests::connected(&mut events, id).await;
    let payload = Bytes::from(vec![0u8; 1024]);
    let flood = tokio::spawn(async move {
        for i in 0..10_000u64 {
            let ping = Frame::new(Opcode::PING, FrameKind::Request { id: i }, payload.clone());
            let bytes = ping.to_bytes();
            if tokio::io::AsyncWriteExt::write_all(&mut raw.control, &bytes).await.is_err() {
                break;
            }
        }
        raw
    });
    let reason = disconnected(&mut events, id).await;
    assert_eq!(reason, Reason::Local(DisconnectCode::FLOODING));
    drop(flood);
}
