//! One conformance suite for every transport and security pair: tcp+noise, tcp+tls, ws+noise,
//! ws+tls, wss+noise and quic. Each case is written once (`cases`) and instantiated for every
//! pair by `suite!`; `every_pair_runs_every_case` lists this test binary and checks that the
//! whole cross product is there. Above `MuxedConnection` nothing may behave differently.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use sinew::layers::ws::{WssDial, WssListen};
use sinew::{Addr, DialError, Event, Keypair, Node, NodeConfig, Opcode, Reason, Security};
use sinew_tests::{WAIT, connected, disconnected};
use tokio::io::AsyncWriteExt as _;

/// A transport and its security.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pair {
    /// The address scheme.
    scheme: &'static str,
    /// Whether diallers use TLS 1.3 (QUIC always does).
    tls: bool,
}

fn tcp_noise() -> Pair {
    Pair { scheme: "tcp", tls: false }
}
fn tcp_tls() -> Pair {
    Pair { scheme: "tcp", tls: true }
}
fn ws_noise() -> Pair {
    Pair { scheme: "ws", tls: false }
}
fn ws_tls() -> Pair {
    Pair { scheme: "ws", tls: true }
}
fn wss_noise() -> Pair {
    Pair { scheme: "wss", tls: false }
}
fn quic() -> Pair {
    Pair { scheme: "quic", tls: true }
}

fn op(n: u32) -> Opcode {
    Opcode::app(n).expect("application opcode")
}

/// The web certificate of every wss listener here (for 127.0.0.1), and the roots its diallers
/// trust: made once per test process.
fn web_certificate() -> &'static (WssListen, WssDial) {
    static CERT: OnceLock<(WssListen, WssDial)> = OnceLock::new();
    CERT.get_or_init(|| {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let der = made.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
        (WssListen::new(vec![der.clone()], key).unwrap(), WssDial::new([der]).unwrap())
    })
}

/// Sets `config` up to dial with `pair` (and to listen on wss).
fn configure(pair: Pair, config: &mut NodeConfig) {
    config.tcp.dial_tls = pair.tls;
    config.ws.dial_tls = pair.tls;
    let (listen, dial) = web_certificate();
    config.ws.wss_listen = Some(listen.clone());
    config.ws.wss_dial = Some(dial.clone());
}

/// A node listening on `pair`'s transport (127.0.0.1, port 0), dialling with `pair`.
async fn node_on(pair: Pair, tune: impl FnOnce(&mut NodeConfig)) -> Node {
    node_listening(pair, &[pair.scheme], tune).await
}

async fn node_listening(pair: Pair, schemes: &[&str], tune: impl FnOnce(&mut NodeConfig)) -> Node {
    let mut config = NodeConfig::default();
    configure(pair, &mut config);
    tune(&mut config);
    let mut builder = Node::builder(Keypair::generate()).with_config(config);
    for scheme in schemes {
        builder = builder.listen(format!("{scheme}://127.0.0.1:0").parse().unwrap());
    }
    builder.start().await.expect("node starts")
}

/// `node`'s listen address on `scheme`, naming its peer id.
fn addr_on(node: &Node, scheme: &str) -> Addr {
    node.listen_addrs()
        .into_iter()
        .find(|a| a.scheme().as_str() == scheme)
        .unwrap_or_else(|| panic!("no {scheme} listener"))
        .with_peer(node.peer_id())
}

/// Serves requests on opcode 1001 with the payload reversed.
async fn serve_reversed(node: &Node) {
    let mut inbox = node.inbox(op(1001)).await.unwrap();
    let server = node.clone();
    tokio::spawn(async move {
        while let Some(msg) = inbox.next().await {
            let mut answer = msg.payload.to_vec();
            answer.reverse();
            let _ = server.reply(&msg, Bytes::from(answer)).await;
        }
    });
}

/// Checks that `target` serves a fresh peer dialling with `pair`: connect, request, answer.
async fn serves(pair: Pair, target: &Node) {
    let fresh = node_on(pair, |_| {}).await;
    let peer = tokio::time::timeout(WAIT, fresh.dial(addr_on(target, pair.scheme)))
        .await
        .expect("dial in time")
        .expect("dial succeeds");
    let answer = fresh.request(peer, op(1001), Bytes::from_static(b"still")).await.unwrap();
    assert_eq!(&answer[..], b"llits");
    fresh.shutdown().await;
}

mod cases {
    use super::*;

    /// The handshake proves the expected identity on both sides, and both report the pair's
    /// scheme.
    pub(super) async fn handshake_and_peer_id(pair: Pair) {
        let (a, b) = (node_on(pair, |_| {}).await, node_on(pair, |_| {}).await);
        let mut a_events = a.events();
        let peer = b.dial(addr_on(&a, pair.scheme)).await.unwrap();
        assert_eq!(peer, a.peer_id());
        connected(&mut a_events, b.peer_id()).await;
        for (node, other) in [(&b, &a), (&a, &b)] {
            let state = node.network_state().await.unwrap();
            assert_eq!(state.peers.len(), 1);
            assert_eq!(state.peers[0].peer, other.peer_id());
            assert_eq!(state.peers[0].addr.scheme().as_str(), pair.scheme);
            // The security the pair names secured it, on both sides.
            let security = state.peers[0].security.expect("a connection");
            assert_eq!(security == Security::Tls, pair.tls, "{security}");
        }
    }

    /// A dial expecting another identity fails, typed, and leaves no connection.
    pub(super) async fn wrong_expected_peer_id(pair: Pair) {
        let (a, b) = (node_on(pair, |_| {}).await, node_on(pair, |_| {}).await);
        let other = Keypair::generate().peer_id();
        let wrong = addr_on(&a, pair.scheme).with_peer(other);
        let error = b.dial(wrong).await.unwrap_err();
        let DialError::Transport(transport) = &error else {
            panic!("expected a transport error, got {error:?}");
        };
        let text = transport.to_string();
        assert!(text.contains("expected peer"), "{text}");
        assert!(b.connected_peers().is_empty());
        // And the right identity still connects.
        assert_eq!(b.dial(addr_on(&a, pair.scheme)).await.unwrap(), a.peer_id());
    }

    /// Ping, messages both ways in order, request and response.
    pub(super) async fn ping_messages_and_requests(pair: Pair) {
        let (a, b) = (node_on(pair, |_| {}).await, node_on(pair, |_| {}).await);
        serve_reversed(&a).await;
        let mut a_inbox = a.inbox(op(1000)).await.unwrap();
        let mut b_inbox = b.inbox(op(1000)).await.unwrap();
        let peer = b.dial(addr_on(&a, pair.scheme)).await.unwrap();
        b.ping(peer).await.unwrap();
        for i in 0..100u32 {
            b.send(peer, op(1000), Bytes::from(i.to_le_bytes().to_vec())).await.unwrap();
            a.send(b.peer_id(), op(1000), Bytes::from((1000 + i).to_le_bytes().to_vec()))
                .await
                .unwrap();
        }
        for i in 0..100u32 {
            let msg = tokio::time::timeout(WAIT, a_inbox.next()).await.unwrap().unwrap();
            assert_eq!((msg.peer, &msg.payload[..]), (b.peer_id(), &i.to_le_bytes()[..]));
            let msg = tokio::time::timeout(WAIT, b_inbox.next()).await.unwrap().unwrap();
            assert_eq!((msg.peer, &msg.payload[..]), (a.peer_id(), &(1000 + i).to_le_bytes()[..]));
        }
        let answer = b.request(peer, op(1001), Bytes::from_static(b"abc")).await.unwrap();
        assert_eq!(&answer[..], b"cba");
    }

    /// A 16 MiB message arrives intact, and a ping sent while it travels is answered.
    pub(super) async fn large_message_with_a_ping(pair: Pair) {
        let (a, b) = (node_on(pair, |_| {}).await, node_on(pair, |_| {}).await);
        let mut inbox = a.inbox(op(1000)).await.unwrap();
        let peer = b.dial(addr_on(&a, pair.scheme)).await.unwrap();
        let data: Bytes = (0..16u32 << 20).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
        let sender = b.clone();
        let payload = data.clone();
        let send = tokio::spawn(async move { sender.send(peer, op(1000), payload).await });
        let rtt = tokio::time::timeout(WAIT, b.ping(peer)).await.unwrap().unwrap();
        assert!(rtt < WAIT);
        let msg = tokio::time::timeout(WAIT, inbox.next()).await.unwrap().unwrap();
        assert!(msg.payload == data, "16 MiB differ");
        send.await.unwrap().unwrap();
    }

    /// Garbage and truncated handshakes are refused while honest peers are served.
    pub(super) async fn garbage_and_truncated_handshakes(pair: Pair) {
        let target = node_on(pair, |_| {}).await;
        serve_reversed(&target).await;
        let addr = addr_on(&target, pair.scheme);
        let port = addr.port();
        let mut held = Vec::new();
        if pair.scheme == "quic" {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            for garbage in [&b"garbage"[..], &[0xc0; 1200], &[0xc3, 0, 0, 0, 1, 8]] {
                socket.send_to(garbage, ("127.0.0.1", port)).await.unwrap();
            }
        } else {
            let truncated: [&[u8]; 4] = [
                b"\x00garbage that is no handshake at all\r\n\r\n",
                b"SIN",                                // part of a preamble
                b"\x16\x03\x01\x02\x00\x01\x00\x01",   // part of a ClientHello
                b"GET / HTTP/1.1\r\nUpgrade: websock", // part of an upgrade
            ];
            for bytes in truncated {
                let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                socket.write_all(bytes).await.unwrap();
                held.push(socket); // kept open: a slow or dead handshake holds its slot
            }
        }
        serves(pair, &target).await;
        drop(held);
        serves(pair, &target).await;
    }

    /// An idle connection is closed after the application idle timeout, with reason `Idle`.
    pub(super) async fn idle_timeout(pair: Pair) {
        let idle = |c: &mut NodeConfig| c.peers.idle_timeout = Some(Duration::from_millis(600));
        let (a, b) = (node_on(pair, idle).await, node_on(pair, idle).await);
        let mut events = b.events();
        let peer = b.dial(addr_on(&a, pair.scheme)).await.unwrap();
        let reason = disconnected(&mut events, peer).await;
        assert_eq!(reason, Reason::Idle);
    }

    /// A disconnect's code reaches the peer, and a shutdown's too: the last frame is not lost
    /// when the connection closes.
    pub(super) async fn disconnect_reason_reaches_the_peer(pair: Pair) {
        let (a, b, c) =
            (node_on(pair, |_| {}).await, node_on(pair, |_| {}).await, node_on(pair, |_| {}).await);
        let (mut a_events, mut c_events) = (a.events(), c.events());
        let peer = b.dial(addr_on(&a, pair.scheme)).await.unwrap();
        connected(&mut a_events, b.peer_id()).await;
        b.disconnect(peer, sinew::DisconnectCode::IDLE).await.unwrap();
        let reason = disconnected(&mut a_events, b.peer_id()).await;
        assert!(
            matches!(reason, Reason::Remote { code: sinew::DisconnectCode::IDLE, .. }),
            "{reason:?}"
        );
        b.dial(addr_on(&c, pair.scheme)).await.unwrap();
        connected(&mut c_events, b.peer_id()).await;
        b.shutdown().await;
        let reason = disconnected(&mut c_events, b.peer_id()).await;
        assert!(
            matches!(reason, Reason::Remote { code: sinew::DisconnectCode::SHUTDOWN, .. }),
            "{reason:?}"
        );
    }

    /// Both dial each other at once: one connection on each side, and it carries messages.
    pub(super) async fn simultaneous_dial(pair: Pair) {
        simultaneous(pair, pair).await;
    }

    /// As `simultaneous_dial`, with the other side dialling over tcp+noise.
    pub(super) async fn simultaneous_dial_across_transports(pair: Pair) {
        simultaneous(pair, tcp_noise()).await;
    }

    async fn simultaneous(a_pair: Pair, b_pair: Pair) {
        let schemes = [a_pair.scheme, b_pair.scheme];
        let a = node_listening(a_pair, &schemes, |_| {}).await;
        let b = node_listening(b_pair, &schemes, |_| {}).await;
        let mut a_inbox = a.inbox(op(1000)).await.unwrap();
        let (mut a_events, mut b_events) = (a.events(), b.events());
        let (a_to_b, b_to_a) = (addr_on(&b, a_pair.scheme), addr_on(&a, b_pair.scheme));
        let (x, y) = tokio::join!(a.dial(a_to_b), b.dial(b_to_a));
        assert_eq!((x.unwrap(), y.unwrap()), (b.peer_id(), a.peer_id()));
        for i in 0..20u32 {
            b.send(a.peer_id(), op(1000), Bytes::from(i.to_le_bytes().to_vec())).await.unwrap();
        }
        for i in 0..20u32 {
            let msg = tokio::time::timeout(WAIT, a_inbox.next()).await.unwrap().unwrap();
            assert_eq!(&msg.payload[..], &i.to_le_bytes()[..]);
        }
        let (sa, sb) = (a.network_state().await.unwrap(), b.network_state().await.unwrap());
        assert_eq!((sa.peers.len(), sb.peers.len()), (1, 1));
        // A duplicate may still be draining: it goes, and the survivor stays.
        let one_each = sinew_tests::eventually(|| async {
            let (sa, sb) = (a.network_state().await.unwrap(), b.network_state().await.unwrap());
            (sa.connections, sb.connections) == (1, 1)
        })
        .await;
        assert!(one_each, "one connection each side");
        assert!(a.is_connected(&b.peer_id()) && b.is_connected(&a.peer_id()));
        // Each side saw the peer connect once and never disconnect.
        for events in [&mut a_events, &mut b_events] {
            let (mut connects, mut disconnects) = (0, 0);
            while let Some(event) = events.try_next() {
                match event {
                    Event::PeerConnected { .. } => connects += 1,
                    Event::PeerDisconnected { .. } => disconnects += 1,
                    _ => {}
                }
            }
            assert_eq!((connects, disconnects), (1, 0));
        }
    }

    /// A node listening on every transport at once is reached over this pair.
    pub(super) async fn reached_on_a_node_listening_on_all(pair: Pair) {
        let target = node_listening(tcp_noise(), &["tcp", "ws", "wss", "quic"], |_| {}).await;
        serve_reversed(&target).await;
        let schemes: Vec<_> =
            target.listen_addrs().iter().map(|a| a.scheme().as_str().to_owned()).collect();
        assert_eq!(schemes, ["tcp", "ws", "wss", "quic"]);
        serves(pair, &target).await;
        let mut events = target.events();
        let fresh = node_on(pair, |_| {}).await;
        fresh.dial(addr_on(&target, pair.scheme)).await.unwrap();
        let addr = events
            .wait_for(WAIT, |e| match e {
                Event::PeerConnected { peer, addr, .. } if *peer == fresh.peer_id() => {
                    Some(addr.clone())
                }
                _ => None,
            })
            .await
            .expect("connected");
        assert_eq!(addr.scheme().as_str(), pair.scheme);
    }

    /// A 512 MiB message (release mode; run by `.ci/run`).
    pub(super) async fn message_512_mib(pair: Pair) {
        let configure = |c: &mut NodeConfig| c.request_timeout = Duration::from_secs(600);
        let (a, b) = (node_on(pair, configure).await, node_on(pair, configure).await);
        let mut inbox = a.inbox(op(1000)).await.unwrap();
        let peer = b.dial(addr_on(&a, pair.scheme)).await.unwrap();
        let len = sinew::layers::codec::MAX_MESSAGE;
        let data: Bytes = (0..len).map(|i| (i % 253) as u8).collect::<Vec<_>>().into();
        let sender = b.clone();
        let payload = data.clone();
        let send = tokio::spawn(async move { sender.send(peer, op(1000), payload).await });
        let msg =
            tokio::time::timeout(Duration::from_secs(300), inbox.next()).await.unwrap().unwrap();
        assert_eq!(msg.payload.len(), len);
        assert!(msg.payload == data, "512 MiB differ");
        send.await.unwrap().unwrap();
    }
}

/// The cases every pair runs (the names of `cases`' functions).
const CASES: &[&str] = &[
    "handshake_and_peer_id",
    "wrong_expected_peer_id",
    "ping_messages_and_requests",
    "large_message_with_a_ping",
    "garbage_and_truncated_handshakes",
    "idle_timeout",
    "disconnect_reason_reaches_the_peer",
    "simultaneous_dial",
    "simultaneous_dial_across_transports",
    "reached_on_a_node_listening_on_all",
];

macro_rules! suite {
    ($($pair:ident),* $(,)?) => {
        /// Every pair the suite runs.
        const PAIRS: &[&str] = &[$(stringify!($pair)),*];
        $(
            mod $pair {
                suite!(@cases $pair:
                    handshake_and_peer_id,
                    wrong_expected_peer_id,
                    ping_messages_and_requests,
                    large_message_with_a_ping,
                    garbage_and_truncated_handshakes,
                    idle_timeout,
                    disconnect_reason_reaches_the_peer,
                    simultaneous_dial,
                    simultaneous_dial_across_transports,
                    reached_on_a_node_listening_on_all,
                );
            }
        )*
    };
    (@cases $pair:ident: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                super::cases::$case(super::$pair()).await;
            }
        )*
    };
}

suite!(tcp_noise, tcp_tls, ws_noise, ws_tls, wss_noise, quic);

/// The largest message, on the pairs the issue names (release mode, `--ignored`).
mod largest {
    #[tokio::test]
    #[ignore = "512 MiB: release mode, run by .ci/run"]
    async fn tcp_noise() {
        super::cases::message_512_mib(super::tcp_noise()).await;
    }

    #[tokio::test]
    #[ignore = "512 MiB: release mode, run by .ci/run"]
    async fn quic() {
        super::cases::message_512_mib(super::quic()).await;
    }
}

/// The suite is complete: this test binary lists every case for every pair.
#[test]
fn every_pair_runs_every_case() {
    let exe = std::env::current_exe().unwrap();
    let listed = std::process::Command::new(exe).args(["--list", "--format", "terse"]).output();
    let listed = String::from_utf8(listed.unwrap().stdout).unwrap();
    let mut missing = Vec::new();
    for pair in PAIRS {
        for case in CASES {
            let name = format!("conformance::{pair}::{case}: test");
            if !listed.lines().any(|line| line == name) {
                missing.push(name);
            }
        }
        let extra =
            listed.lines().filter(|l| l.starts_with(&format!("conformance::{pair}::"))).count();
        assert_eq!(extra, CASES.len(), "{pair} runs cases CASES does not name");
    }
    assert!(missing.is_empty(), "missing: {missing:?}");
    assert_eq!(PAIRS, ["tcp_noise", "tcp_tls", "ws_noise", "ws_tls", "wss_noise", "quic"]);
}

/// A peer known on QUIC and TCP is redialled over QUIC: the first connection goes over the TCP
/// address given, identify teaches the QUIC one, and the reconnection after the remote closes
/// the connection prefers QUIC.
#[tokio::test]
async fn redialling_prefers_quic_when_both_are_known() {
    let b = node_listening(tcp_noise(), &["tcp", "quic"], |_| {}).await;
    let a = node_on(tcp_noise(), |c| {
        c.peers.backoff.initial = Duration::from_millis(50);
    })
    .await;
    let mut events = a.events();
    a.add_peer(addr_on(&b, "tcp")).await.unwrap();
    let first = connected_over(&mut events, b.peer_id()).await;
    assert_eq!(first, "tcp");
    // Identify has taught a the QUIC address once it is in the network state.
    let learned = sinew_tests::eventually(|| async {
        let state = a.network_state().await.unwrap();
        state.peers.iter().any(|p| p.listen_addrs.iter().any(|l| l.scheme().as_str() == "quic"))
    })
    .await;
    assert!(learned, "identify taught the QUIC address");
    b.disconnect(a.peer_id(), sinew::DisconnectCode::SHUTDOWN).await.unwrap();
    disconnected(&mut events, b.peer_id()).await;
    assert_eq!(connected_over(&mut events, b.peer_id()).await, "quic");
}

async fn connected_over(events: &mut sinew::Events, peer: sinew::PeerId) -> String {
    events
        .wait_for(WAIT, |e| match e {
            Event::PeerConnected { peer: p, addr, .. } if *p == peer => {
                Some(addr.scheme().as_str().to_owned())
            }
            _ => None,
        })
        .await
        .expect("connected in time")
}
