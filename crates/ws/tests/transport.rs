//! Two `WsTransport`s over ws and wss: identities, session tags, streams, a 16 MiB transfer,
//! typed failures, and a listener that keeps serving through bad connections.
#![cfg(all(feature = "noise", feature = "tls"))]

mod common;

use std::sync::Arc;

use common::{TestCert, WAIT, pattern};
use sinew_secure::{Identities, NoiseIdentity, TlsIdentity};
use sinew_transport::{
    Connection, DialError, HandshakeError, ListenError, RefusedLimit, Security, Transport as _,
    UpgradeError,
};
use sinew_types::{Addr, Keypair, Scheme};
use sinew_ws::{WsConfig, WsStream, WsStreamConfig, WsTransport, WssDial, WssListen};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

struct Node {
    key: Keypair,
    transport: WsTransport,
}

fn node(nonce: u64, config: WsConfig) -> Node {
    let key = Keypair::generate();
    let transport = WsTransport::new(Arc::new(NoiseIdentity::new(&key, nonce)), config);
    Node { key, transport }
}

fn wss_config(cert: &TestCert) -> WsConfig {
    WsConfig {
        wss_listen: Some(WssListen::from_pem_files(&cert.cert, &cert.key).unwrap()),
        wss_dial: Some(WssDial::from_pem_file(&cert.cert).unwrap()),
        ..WsConfig::default()
    }
}

type Upgrades = mpsc::UnboundedReceiver<Result<Connection, UpgradeError>>;

/// Listens on `addr` and reports every upgrade's outcome.
async fn listen(node: &Node, addr: &str) -> (Addr, Upgrades) {
    let mut listener = node.transport.listen(addr.parse().unwrap()).await.unwrap();
    let local = listener.local_addr();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(incoming.upgrade().await) });
        }
    });
    (local, rx)
}

async fn next_upgrade(upgrades: &mut Upgrades) -> Result<Connection, UpgradeError> {
    tokio::time::timeout(WAIT, upgrades.recv()).await.expect("an upgrade in time").unwrap()
}

/// A stream from `a` to `b` carries `data`, and `b` echoes it back.
async fn echo(a: &Connection, b: &Connection, data: &[u8]) {
    let mut out = a.muxer.open_stream().await.unwrap();
    let writer = {
        let data = data.to_vec();
        async move {
            out.write_all(&data).await.unwrap();
            out.finish().await.unwrap();
            let mut back = Vec::new();
            out.read_to_end(&mut back).await.unwrap();
            back
        }
    };
    let echoer = async {
        let mut inc = tokio::time::timeout(WAIT, b.muxer.accept_stream()).await.unwrap().unwrap();
        let mut got = Vec::new();
        inc.read_to_end(&mut got).await.unwrap();
        inc.write_all(&got).await.unwrap();
        inc.finish().await.unwrap();
        got
    };
    let (back, got) = tokio::time::timeout(WAIT, async { tokio::join!(writer, echoer) })
        .await
        .expect("echo in time");
    assert!(got == data, "the far side got other bytes ({} of {})", got.len(), data.len());
    assert!(back == data, "the echo differs ({} of {})", back.len(), data.len());
}

/// Dials `addr`, checks both ends' identities, tags and addresses, and moves data both ways.
async fn connect_and_exchange(server: &Node, client: &Node, addr: Addr, upgrades: &mut Upgrades) {
    let scheme = addr.scheme();
    let out = client.transport.dial(addr.clone().with_peer(server.key.peer_id())).await.unwrap();
    let inc = next_upgrade(upgrades).await.unwrap();
    assert_eq!(out.info.peer, server.key.peer_id());
    assert_eq!(inc.info.peer, client.key.peer_id());
    assert_eq!(out.info.session_tag, inc.info.session_tag);
    assert_eq!((out.info.boot_nonce, inc.info.boot_nonce), (1, 2));
    assert!(matches!(out.info.security, Security::Noise(_)));
    assert_eq!(inc.info.security, out.info.security);
    for a in
        [&out.info.local_addr, &out.info.remote_addr, &inc.info.local_addr, &inc.info.remote_addr]
    {
        assert_eq!(a.scheme(), scheme);
        assert_eq!(a.path(), addr.path());
        assert_eq!(a.peer(), None);
    }
    assert_eq!(out.info.remote_addr, addr);
    assert_eq!(inc.info.local_addr.port(), addr.port());
    assert_eq!(inc.info.remote_addr.port(), out.info.local_addr.port());

    echo(&out, &inc, b"hello over a websocket").await;
    echo(&inc, &out, b"and back").await;
    echo(&out, &inc, &pattern(16 << 20, 7)).await;
}

#[tokio::test]
async fn ws_connects_authenticates_and_carries_16_mib() {
    let (server, client) = (node(1, WsConfig::default()), node(2, WsConfig::default()));
    let (addr, mut upgrades) = listen(&server, "ws://127.0.0.1:0/sinew").await;
    assert_eq!(addr.to_string(), format!("ws://127.0.0.1:{}/sinew", addr.port()));
    connect_and_exchange(&server, &client, addr, &mut upgrades).await;
}

#[tokio::test]
async fn ws_default_path_is_slash() {
    let (server, client) = (node(1, WsConfig::default()), node(2, WsConfig::default()));
    let (addr, mut upgrades) = listen(&server, "ws://127.0.0.1:0").await;
    assert_eq!(addr.path(), Some("/"));
    connect_and_exchange(&server, &client, addr, &mut upgrades).await;
}

#[tokio::test]
async fn wss_connects_authenticates_and_carries_16_mib() {
    let cert = TestCert::new();
    let (server, client) = (node(1, wss_config(&cert)), node(2, wss_config(&cert)));
    let (addr, mut upgrades) = listen(&server, "wss://127.0.0.1:0/p2p").await;
    assert_eq!(addr.scheme(), Scheme::Wss);
    connect_and_exchange(&server, &client, addr, &mut upgrades).await;
}

#[tokio::test]
async fn wss_by_dns_name_checks_the_name() {
    let cert = TestCert::new();
    let (server, client) = (node(1, wss_config(&cert)), node(2, wss_config(&cert)));
    let (addr, mut upgrades) = listen(&server, "wss://127.0.0.1:0/").await;
    let by_name: Addr = format!("wss://localhost:{}/", addr.port()).parse().unwrap();
    let out = client.transport.dial(by_name.clone()).await.unwrap();
    let inc = next_upgrade(&mut upgrades).await.unwrap();
    assert_eq!(out.info.remote_addr, by_name);
    echo(&out, &inc, b"named").await;
}

#[tokio::test]
async fn tls_inside_the_websocket() {
    let identities = |key: &Keypair, nonce| Identities {
        noise: Some(Arc::new(NoiseIdentity::new(key, nonce))),
        tls: Some(Arc::new(TlsIdentity::new(key, nonce).unwrap())),
    };
    let (server_key, client_key) = (Keypair::generate(), Keypair::generate());
    let server = WsTransport::with_identities(identities(&server_key, 1), WsConfig::default());
    let config = WsConfig { dial_tls: true, ..WsConfig::default() };
    let client = WsTransport::with_identities(identities(&client_key, 2), config);
    let server = Node { key: server_key, transport: server };
    let (addr, mut upgrades) = listen(&server, "ws://127.0.0.1:0/").await;
    let out = client.dial(addr.with_peer(server.key.peer_id())).await.unwrap();
    let inc = next_upgrade(&mut upgrades).await.unwrap();
    assert_eq!((out.info.security, inc.info.security), (Security::Tls, Security::Tls));
    assert_eq!((out.info.peer, inc.info.peer), (server.key.peer_id(), client_key.peer_id()));
    assert_eq!(out.info.session_tag, inc.info.session_tag);
    echo(&out, &inc, &pattern(1 << 20, 3)).await;
}

#[tokio::test]
async fn a_wrong_expected_peer_is_a_typed_error() {
    let (server, client) = (node(1, WsConfig::default()), node(2, WsConfig::default()));
    let (addr, mut upgrades) = listen(&server, "ws://127.0.0.1:0/").await;
    let stranger = Keypair::generate().peer_id();
    let error = client.transport.dial(addr.with_peer(stranger)).await.unwrap_err();
    match error {
        DialError::Handshake(HandshakeError::UnexpectedPeer { expected, actual }) => {
            assert_eq!((expected, actual), (stranger, server.key.peer_id()));
        }
        other => panic!("expected UnexpectedPeer, got {other:?}"),
    }
    assert!(next_upgrade(&mut upgrades).await.is_err());
}

#[tokio::test]
async fn a_wrong_path_fails_and_the_listener_goes_on() {
    let (server, client) = (node(1, WsConfig::default()), node(2, WsConfig::default()));
    let (addr, mut upgrades) = listen(&server, "ws://127.0.0.1:0/right").await;
    let wrong =
        Addr::new(Scheme::Ws, addr.host().clone(), addr.port()).with_path("/wrong").unwrap();
    let error = client.transport.dial(wrong).await.unwrap_err();
    assert!(
        matches!(&error, DialError::Connect(e) if e.to_string().contains("404")),
        "expected a 404, got {error:?}"
    );
    let refused = next_upgrade(&mut upgrades).await.unwrap_err();
    assert!(refused.to_string().contains("404"), "{refused}");
    connect_and_exchange(&server, &client, addr, &mut upgrades).await;
}

#[tokio::test]
async fn garbage_instead_of_an_upgrade_is_refused_while_a_good_dial_is_served() {
    let (server, client) = (node(1, WsConfig::default()), node(2, WsConfig::default()));
    let (addr, mut upgrades) = listen(&server, "ws://127.0.0.1:0/").await;
    let mut garbage = tokio::net::TcpStream::connect(addr.socket_addr().unwrap()).await.unwrap();
    garbage.write_all(b"\x16\x03\x01\x00\xffnot http at all\r\n\r\n").await.unwrap();
    let error = next_upgrade(&mut upgrades).await.unwrap_err();
    assert!(matches!(error, UpgradeError::Handshake(_)), "{error:?}");
    // The listener closed the garbage connection.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, garbage.read_to_end(&mut rest)).await.unwrap();
    connect_and_exchange(&server, &client, addr, &mut upgrades).await;
}

#[tokio::test]
async fn an_oversize_message_closes_that_connection_only() {
    let (server, client) = (node(1, WsConfig::default()), node(2, WsConfig::default()));
    let (addr, mut upgrades) = listen(&server, "ws://127.0.0.1:0/").await;
    let good = client.transport.dial(addr.clone()).await.unwrap();
    let good_inbound = next_upgrade(&mut upgrades).await.unwrap();

    // A raw WebSocket that sends one 2 MiB message (the listener accepts 1 MiB).
    let tcp = tokio::net::TcpStream::connect(addr.socket_addr().unwrap()).await.unwrap();
    let big =
        WsStreamConfig { write_batch: 2 << 20, max_message_size: 4 << 20, ..Default::default() };
    let uri = format!("ws://127.0.0.1:{}/", addr.port());
    let (mut raw, _) = WsStream::connect(tcp, &uri, &big).await.unwrap();
    raw.write_all(&pattern(2 << 20, 1)).await.unwrap();
    raw.flush().await.unwrap();
    let error = next_upgrade(&mut upgrades).await.unwrap_err();
    assert!(error.to_string().to_lowercase().contains("too long"), "{error}");
    // The listener closed it with 1009: the raw side reads the close as the end.
    let mut rest = Vec::new();
    let end = tokio::time::timeout(WAIT, raw.read_to_end(&mut rest)).await.unwrap();
    assert!(end.is_ok() && rest.is_empty(), "{end:?}");

    echo(&good, &good_inbound, b"still here").await;
    echo(&good_inbound, &good, &pattern(3 << 20, 9)).await;
}

#[tokio::test]
async fn a_refusal_reaches_the_dialler_typed() {
    let (server, client) = (node(1, WsConfig::default()), node(2, WsConfig::default()));
    let mut listener = server.transport.listen("ws://127.0.0.1:0/".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr();
    let refuser = tokio::spawn(async move {
        let incoming = listener.accept().await.unwrap();
        incoming.refuse(RefusedLimit::PerIp).await;
    });
    let error = client.transport.dial(addr).await.unwrap_err();
    match error {
        DialError::Handshake(HandshakeError::Refused(refused)) => {
            assert_eq!(refused.limit, RefusedLimit::PerIp);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    tokio::time::timeout(WAIT, refuser).await.unwrap().unwrap();
}

#[tokio::test]
async fn wss_needs_a_certificate_to_listen_and_roots_to_dial() {
    let plain = node(1, WsConfig::default());
    let error = plain.transport.listen("wss://127.0.0.1:0/".parse().unwrap()).await.err().unwrap();
    assert!(
        matches!(&error, ListenError::Bind(e) if e.to_string().contains("wss_listen")),
        "{error}"
    );

    let cert = TestCert::new();
    let server = node(2, wss_config(&cert));
    let (addr, mut upgrades) = listen(&server, "wss://127.0.0.1:0/").await;
    let error = plain.transport.dial(addr.clone()).await.unwrap_err();
    assert!(error.to_string().contains("wss_dial"), "{error}");

    // Trusting another certificate: the server's is refused.
    let other = TestCert::new();
    let stranger = node(
        3,
        WsConfig {
            wss_dial: Some(WssDial::from_pem_file(&other.cert).unwrap()),
            ..WsConfig::default()
        },
    );
    let error = stranger.transport.dial(addr).await.unwrap_err();
    assert!(
        matches!(&error, DialError::Connect(e) if e.to_string().to_lowercase().contains("certificate")),
        "{error:?}"
    );
    assert!(next_upgrade(&mut upgrades).await.is_err());
}

#[tokio::test]
async fn ipv6_loopback() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback on this machine");
        return;
    }
    let (server, client) = (node(1, WsConfig::default()), node(2, WsConfig::default()));
    let (addr, mut upgrades) = listen(&server, "ws://[::1]:0/v6").await;
    assert_eq!(addr.to_string(), format!("ws://[::1]:{}/v6", addr.port()));
    connect_and_exchange(&server, &client, addr, &mut upgrades).await;
}

#[tokio::test]
async fn a_silent_socket_times_out_in_the_handshake() {
    let mut config = WsConfig::default();
    config.noise.handshake_timeout = std::time::Duration::from_millis(300);
    let server = node(1, config);
    let (addr, mut upgrades) = listen(&server, "ws://127.0.0.1:0/").await;
    let _silent = tokio::net::TcpStream::connect(addr.socket_addr().unwrap()).await.unwrap();
    let error = next_upgrade(&mut upgrades).await.unwrap_err();
    assert!(matches!(error, UpgradeError::Handshake(HandshakeError::Timeout)), "{error:?}");
}

/// A dialler that trickles its HTTP upgrade (half a request, then nothing) is dropped after
/// twice the per-message bound (4 s), not after the whole 10 s handshake timeout.
#[tokio::test]
async fn a_trickled_upgrade_is_dropped_after_the_per_message_bound() {
    use tokio::io::AsyncWriteExt as _;
    let server = node(1, WsConfig::default());
    let (addr, mut upgrades) = listen(&server, "ws://127.0.0.1:0/").await;
    let mut trickle = tokio::net::TcpStream::connect(addr.socket_addr().unwrap()).await.unwrap();
    let started = std::time::Instant::now();
    trickle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n").await.unwrap();
    let error = next_upgrade(&mut upgrades).await.unwrap_err();
    assert!(matches!(error, UpgradeError::Handshake(HandshakeError::Timeout)), "{error:?}");
    let bound = sinew_secure::DIALLER_MESSAGE_TIMEOUT * 2;
    let took = started.elapsed();
    assert!(took >= bound && took < WsConfig::default().noise.handshake_timeout, "{took:?}");
}
