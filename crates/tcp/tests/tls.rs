//! TCP with TLS 1.3: one listener serves Noise and TLS diallers, tells them apart by the first
//! byte, and refuses TLS when it has no TLS identity.
#![cfg(all(feature = "noise", feature = "tls"))]

use std::sync::Arc;
use std::time::Duration;

use sinew_secure::{Identities, NoiseIdentity, TlsIdentity};
use sinew_tcp::{TcpConfig, TcpTransport};
use sinew_transport::{
    Connection, DialError, HandshakeError, NoiseSuite, Security, Transport as _, UpgradeError,
};
use sinew_types::{Addr, Keypair};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn transport(key: &Keypair, nonce: u64, tls: bool, dial_tls: bool) -> TcpTransport {
    let identities = Identities {
        noise: Some(Arc::new(NoiseIdentity::new(key, nonce))),
        tls: tls.then(|| Arc::new(TlsIdentity::new(key, nonce).unwrap())),
    };
    TcpTransport::with_identities(identities, TcpConfig { dial_tls, ..TcpConfig::default() })
}

/// Listens and reports every upgrade's outcome.
async fn listen(
    transport: &TcpTransport,
) -> (Addr, mpsc::UnboundedReceiver<Result<Connection, UpgradeError>>) {
    let mut listener = transport.listen("tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(incoming.upgrade().await) });
        }
    });
    (addr, rx)
}

async fn echo_once(a: &Connection, b: &Connection) {
    let mut out = a.muxer.open_stream().await.unwrap();
    out.write_all(b"over tls").await.unwrap();
    out.finish().await.unwrap();
    let mut inc = tokio::time::timeout(WAIT, b.muxer.accept_stream()).await.unwrap().unwrap();
    let mut got = Vec::new();
    inc.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"over tls");
}

#[tokio::test]
async fn one_listener_serves_noise_and_tls_diallers() {
    let (server_key, tls_key, noise_key) =
        (Keypair::generate(), Keypair::generate(), Keypair::generate());
    let server = transport(&server_key, 1, true, false);
    let (addr, mut upgrades) = listen(&server).await;
    let addr = addr.with_peer(server_key.peer_id());

    let tls_dialler = transport(&tls_key, 2, true, true);
    let out = tls_dialler.dial(addr.clone()).await.unwrap();
    let inc = tokio::time::timeout(WAIT, upgrades.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!((out.info.peer, out.info.security), (server_key.peer_id(), Security::Tls));
    assert_eq!((inc.info.peer, inc.info.security), (tls_key.peer_id(), Security::Tls));
    assert_eq!((out.info.boot_nonce, inc.info.boot_nonce), (1, 2));
    assert_eq!(out.info.session_tag, inc.info.session_tag);
    echo_once(&out, &inc).await;
    echo_once(&inc, &out).await;

    let noise_dialler = transport(&noise_key, 3, false, false);
    let out = noise_dialler.dial(addr).await.unwrap();
    let inc = tokio::time::timeout(WAIT, upgrades.recv()).await.unwrap().unwrap().unwrap();
    assert!(matches!(
        out.info.security,
        Security::Noise(NoiseSuite::AesGcm | NoiseSuite::ChaChaPoly)
    ));
    assert_eq!((inc.info.peer, inc.info.security), (noise_key.peer_id(), out.info.security));
    echo_once(&out, &inc).await;
}

#[tokio::test]
async fn a_listener_without_tls_refuses_it_by_name() {
    let server_key = Keypair::generate();
    let server = transport(&server_key, 1, false, false);
    let (addr, mut upgrades) = listen(&server).await;
    let dialler = transport(&Keypair::generate(), 2, true, true);
    assert!(dialler.dial(addr).await.is_err());
    let refused = tokio::time::timeout(WAIT, upgrades.recv()).await.unwrap().unwrap();
    assert!(
        matches!(refused, Err(UpgradeError::Handshake(HandshakeError::TlsNotAccepted))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_tls_dial_to_the_wrong_peer_fails_typed_and_the_listener_keeps_serving() {
    let server_key = Keypair::generate();
    let server = transport(&server_key, 1, true, false);
    let (addr, mut upgrades) = listen(&server).await;
    let dialler = transport(&Keypair::generate(), 2, true, true);
    let other = Keypair::generate().peer_id();
    let failed = dialler.dial(addr.clone().with_peer(other)).await;
    match failed {
        Err(DialError::Handshake(HandshakeError::UnexpectedPeer { expected, actual })) => {
            assert_eq!((expected, actual), (other, server_key.peer_id()));
        }
        other => panic!("expected UnexpectedPeer, got {other:?}"),
    }
    // The listener saw the dialler give up, and serves the next one.
    let first = tokio::time::timeout(WAIT, upgrades.recv()).await.unwrap().unwrap();
    assert!(first.is_err());
    let ok = dialler.dial(addr.with_peer(server_key.peer_id())).await.unwrap();
    assert_eq!(ok.info.peer, server_key.peer_id());
    let inc = tokio::time::timeout(WAIT, upgrades.recv()).await.unwrap().unwrap().unwrap();
    echo_once(&ok, &inc).await;
}

#[tokio::test]
async fn a_large_transfer_over_tls_arrives_intact() {
    let server_key = Keypair::generate();
    let server = transport(&server_key, 1, true, false);
    let (addr, mut upgrades) = listen(&server).await;
    let dialler = transport(&Keypair::generate(), 2, true, true);
    let out = dialler.dial(addr).await.unwrap();
    let inc = tokio::time::timeout(WAIT, upgrades.recv()).await.unwrap().unwrap().unwrap();
    let data: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut stream = out.muxer.open_stream().await.unwrap();
    let send = {
        let data = data.clone();
        tokio::spawn(async move {
            stream.write_all(&data).await.unwrap();
            stream.finish().await.unwrap();
            stream
        })
    };
    let mut remote = tokio::time::timeout(WAIT, inc.muxer.accept_stream()).await.unwrap().unwrap();
    let mut got = Vec::with_capacity(data.len());
    tokio::time::timeout(Duration::from_secs(60), remote.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(got == data, "16 MiB differ");
    send.await.unwrap();
}
