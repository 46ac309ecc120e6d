//! The rest of the node API: IPv6 and DNS addresses, raw streams, persistent peers, protocol
//! registration, and the event stream's bound.

use std::time::Duration;

use bytes::Bytes;
use sinew::{
    Ctx, DisconnectCode, Event, Handled, Keypair, Message, Node, Opcode, Opcodes, Protocol,
};
use sinew_tests::{WAIT, addr, connected, node, node_with, tcp_node};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test]
async fn dials_ipv6_and_dns_names() {
    let v6 =
        Node::builder(Keypair::generate()).listen("tcp://[::1]:0".parse().unwrap()).start().await;
    let Ok(v6) = v6 else {
        assert!(!sinew_tests::in_ci(), "IPv6 loopback is required under CI");
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    };
    let client = tcp_node().await;
    assert_eq!(client.dial(addr(&v6)).await.unwrap(), v6.peer_id());
    // A DNS name, resolved at dial time.
    let a = tcp_node().await;
    let port = a.listen_addrs()[0].port();
    let by_name: sinew::Addr = format!("tcp://{}@localhost:{port}", a.peer_id()).parse().unwrap();
    assert_eq!(client.dial(by_name).await.unwrap(), a.peer_id());
}

#[tokio::test]
async fn raw_streams_reach_their_handler() {
    let op = Opcode::app(2000).unwrap();
    let (a, b) = (node().await, node().await);
    let mut handler = a.stream_handler(op).await.unwrap();
    assert!(a.stream_handler(op).await.is_err(), "one handler per opcode");
    tokio::spawn(async move {
        while let Some(incoming) = handler.next().await {
            let mut stream = incoming.stream;
            let mut data = Vec::new();
            stream.read_to_end(&mut data).await.unwrap();
            data.reverse();
            stream.write_all(&data).await.unwrap();
            stream.finish().await.unwrap();
        }
    });
    let peer = b.dial(addr(&a)).await.unwrap();
    let mut stream = b.open_stream(peer, op).await.unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    stream.write_all(&data).await.unwrap();
    stream.finish().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut back)).await.unwrap().unwrap();
    back.reverse();
    assert!(back == data);
    // No handler for another opcode: the stream is reset, and the node says so.
    let mut events = a.events();
    let mut orphan = b.open_stream(peer, Opcode::app(2001).unwrap()).await.unwrap();
    let _ = orphan.write_all(b"anyone?").await;
    let dropped = events
        .wait_for(WAIT, |e| {
            matches!(e, Event::MessageDropped { reason: sinew::DropReason::NoStreamHandler, .. })
                .then_some(())
        })
        .await;
    assert!(dropped.is_some());
}

#[tokio::test]
async fn persistent_peers_reconnect_and_removed_ones_do_not() {
    let a = node().await;
    let mut a_events = a.events();
    let b = node_with(|c| {
        c.peers.backoff.initial = Duration::from_millis(50);
        c.peers.backoff.max = Duration::from_millis(200);
    })
    .await;
    let mut events = b.events();
    b.add_peer(addr(&a)).await.unwrap();
    connected(&mut events, a.peer_id()).await;
    // The dialler finishes its handshake first: wait until A knows B too.
    connected(&mut a_events, b.peer_id()).await;
    // A closes the connection: B redials by itself.
    a.disconnect(b.peer_id(), DisconnectCode::SHUTDOWN).await.unwrap();
    sinew_tests::disconnected(&mut events, a.peer_id()).await;
    connected(&mut events, a.peer_id()).await;
    // Removed: B closes and stays away.
    b.remove_peer(a.peer_id()).await.unwrap();
    assert_eq!(sinew_tests::disconnected(&mut events, a.peer_id()).await, sinew::Reason::Removed);
    let again = events
        .wait_for(Duration::from_millis(600), |e| {
            matches!(e, Event::PeerConnected { .. }).then_some(())
        })
        .await;
    assert!(again.is_none(), "a removed peer is not redialled");
}

/// Emits `n` events per message it gets; counts starts and stops.
struct Chatty {
    stopped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Protocol for Chatty {
    fn opcodes(&self) -> Opcodes {
        Opcode::app(3000).unwrap().into()
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, _msg: Message) -> Handled {
        for i in 0..50u32 {
            ctx.emit(i);
        }
        Handled::Yes
    }
    fn on_stop(&mut self, _ctx: &mut Ctx<'_>) {
        self.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn slow_event_subscribers_are_told_what_they_missed_and_unregister_stops_protocols() {
    let a = node_with(|c| c.event_capacity = 8).await;
    let b = node().await;
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handle = a.register(Chatty { stopped: stopped.clone() }).await.unwrap();
    let mut events = a.events(); // subscribed, and never read while the burst comes
    let peer = b.dial(addr(&a)).await.unwrap();
    b.send_acked(peer, Opcode::app(3000).unwrap(), Bytes::new()).await.unwrap();
    let missed = events.wait_for(WAIT, |e| match e {
        Event::Lagged { missed } => Some(*missed),
        _ => None,
    });
    assert!(missed.await.unwrap() > 0, "the subscriber learns how many events it missed");
    assert!(a.unregister(handle).await);
    assert!(stopped.load(std::sync::atomic::Ordering::SeqCst), "on_stop ran");
    assert_eq!(
        b.request(peer, Opcode::app(3000).unwrap(), Bytes::new()).await,
        Err(sinew::RequestError::Remote(sinew::Status::UNKNOWN_OPCODE)),
        "its opcodes are free again"
    );
}

/// Events, inboxes and stream inboxes are `futures::Stream`s, for stream combinators.
#[tokio::test]
async fn events_inboxes_and_stream_inboxes_are_streams() {
    use futures::StreamExt as _;
    let op = Opcode::app(1000).unwrap();
    let a = node().await;
    let b = node().await;
    let inbox = a.inbox(op).await.unwrap();
    let streams = a.stream_handler(op).await.unwrap();
    let events = b.events();
    let peer = b.dial(addr(&a)).await.unwrap();
    // The first event b sees, through StreamExt.
    let first: Vec<Event> = events.take(1).collect().await;
    assert!(matches!(first[..], [Event::PeerConnected { .. }]), "{first:?}");
    for text in ["one", "two", "three"] {
        b.send(peer, op, Bytes::from_static(text.as_bytes())).await.unwrap();
    }
    let received: Vec<Bytes> =
        tokio::time::timeout(WAIT, inbox.map(|m| m.payload).take(3).collect()).await.unwrap();
    assert_eq!(received, ["one", "two", "three"].map(|s| Bytes::from_static(s.as_bytes())));
    let _stream = b.open_stream(peer, op).await.unwrap();
    let mut streams = streams.boxed();
    let incoming = tokio::time::timeout(WAIT, streams.next()).await.unwrap();
    assert!(incoming.is_some(), "the stream arrives through the Stream impl");
}

/// Commands about one peer say what they did, and the synchronous views agree with events.
#[tokio::test]
async fn commands_about_peers_report_what_they_did() {
    let (a, b) = (node().await, node().await);
    let stranger = Keypair::generate().peer_id();
    assert!(!b.is_connected(&a.peer_id()));
    assert_eq!(
        b.disconnect(a.peer_id(), DisconnectCode::SHUTDOWN).await,
        Err(sinew::PeerError::NotConnected)
    );
    assert_eq!(b.remove_peer(stranger).await, Err(sinew::PeerError::Unknown));
    let mut events = b.events();
    let peer = b.dial(addr(&a)).await.unwrap();
    assert!(b.is_connected(&peer), "connected once dial returns");
    assert_eq!(b.connected_peers(), vec![peer]);
    b.authorize(peer).await.unwrap();
    b.disconnect(peer, DisconnectCode::SHUTDOWN).await.unwrap();
    sinew_tests::disconnected(&mut events, peer).await;
    assert!(!b.is_connected(&peer), "gone once PeerDisconnected is out");
    assert_eq!(b.connected_peers(), Vec::<sinew::PeerId>::new());
    b.shutdown().await;
    assert_eq!(b.network_state().await.err(), Some(sinew::Stopped));
    assert_eq!(b.authorize(peer).await, Err(sinew::PeerError::Stopped));
}

/// A send to a peer the node knew but that is gone dials it, and reports why that failed.
#[tokio::test]
async fn a_send_to_a_known_peer_that_is_down_reports_the_dial_error() {
    let (a, b) = (node().await, node().await);
    let mut events = a.events();
    let peer = a.dial(addr(&b)).await.unwrap();
    b.shutdown().await;
    drop(b);
    sinew_tests::disconnected(&mut events, peer).await;
    let op = Opcode::app(1000).unwrap();
    let sent = a.send(peer, op, Bytes::from_static(b"hi")).await;
    assert_eq!(sent, Err(sinew::SendError::Dial(sinew::DialFailure::Unreachable)));
    let stranger = Keypair::generate().peer_id();
    assert_eq!(a.send(stranger, op, Bytes::new()).await, Err(sinew::SendError::NotConnected));
}

/// Transports are keyed by scheme: a node with the in-process transport listens and dials on
/// both it and TCP, and an address no transport serves (memory, on a node without it) fails to
/// dial and to listen.
#[tokio::test]
async fn transports_serve_the_schemes_they_name() {
    let start = |builder: sinew::NodeBuilder| async move { builder.start().await.unwrap() };
    let a = start(
        Node::builder(Keypair::generate())
            .memory()
            .listen("memory://127.0.0.1:0".parse().unwrap())
            .listen("tcp://127.0.0.1:0".parse().unwrap()),
    )
    .await;
    let schemes: Vec<_> = a.listen_addrs().iter().map(|a| a.scheme()).collect();
    assert_eq!(
        schemes,
        vec![sinew::layers::types::Scheme::Memory, sinew::layers::types::Scheme::Tcp]
    );
    let b = start(Node::builder(Keypair::generate()).memory()).await;
    let over_memory = a.listen_addrs()[0].clone().with_peer(a.peer_id());
    assert_eq!(b.dial(over_memory).await.unwrap(), a.peer_id());
    let tcp_only = start(Node::builder(Keypair::generate())).await;
    let err = tcp_only.dial(a.listen_addrs()[0].clone()).await.unwrap_err();
    assert_eq!(err.failure(), sinew::DialFailure::UnsupportedScheme, "{err}");
    let memory = tcp_only.listen("memory://127.0.0.1:0".parse().unwrap()).await;
    assert!(
        matches!(memory, Err(sinew::layers::transport::ListenError::UnsupportedScheme(_))),
        "{memory:?}"
    );
}

/// A peer known at several addresses is dialled at each in turn (a short stagger apart, at
/// once after a failure), and the first that authenticates is kept: a dead address first in
/// the address book does not keep a persistent peer away.
#[tokio::test]
async fn a_peer_is_dialled_at_each_of_its_addresses_until_one_authenticates() {
    let (a, b) = (node().await, node().await);
    let mut events = b.events();
    let peer = b.dial(addr(&a)).await.unwrap();
    b.disconnect(peer, DisconnectCode::SHUTDOWN).await.unwrap();
    sinew_tests::disconnected(&mut events, peer).await;
    // An address where nobody listens, for the same peer: now first in the address book.
    let dead = {
        let gone = node().await;
        let dead = gone.listen_addrs()[0].clone();
        gone.shutdown().await;
        dead
    };
    b.add_peer(dead.with_peer(peer)).await.unwrap();
    connected(&mut events, peer).await;
    let state = b.network_state().await.unwrap();
    assert_eq!(state.peers[0].peer, peer);
}
