//! The async handshake over real sockets and in-memory pipes: success, identity checks,
//! tampering, detection errors, truncation and timeouts.
#![cfg(feature = "noise")]

mod common;

use std::time::Duration;

use common::{SUITES, TIMEOUT, WAIT, identity, pump, read_frame, tcp_pair};
use sinew_secure::{
    Detected, HandshakeStep, NoiseHandshake, Preamble, detect, upgrade_inbound,
    upgrade_inbound_noise, upgrade_outbound,
};
use sinew_transport::{HandshakeError, NoiseSuite, Security};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, duplex};
use tokio::time::timeout;

#[tokio::test]
async fn handshake_over_tcp_both_suites() {
    let (ka, a) = identity(1, 111);
    let (kb, b) = identity(2, 222);
    for suite in SUITES {
        let (dialed, accepted) = tcp_pair().await;
        let (out, inb) = tokio::join!(
            upgrade_outbound(dialed, &a, suite, Some(kb.peer_id()), TIMEOUT),
            upgrade_inbound(accepted, &b, TIMEOUT),
        );
        let (mut sa, ia) = out.unwrap();
        let (mut sb, ib) = inb.unwrap();
        assert_eq!(
            (ia.peer, ia.boot_nonce, ia.security),
            (kb.peer_id(), 222, Security::Noise(suite))
        );
        assert_eq!(
            (ib.peer, ib.boot_nonce, ib.security),
            (ka.peer_id(), 111, Security::Noise(suite))
        );
        assert_eq!(ia.session_tag, ib.session_tag);

        sa.write_all(b"from the dialer").await.unwrap();
        sa.flush().await.unwrap();
        let mut buf = [0u8; 15];
        timeout(WAIT, sb.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"from the dialer");

        sb.write_all(b"from the listener").await.unwrap();
        sb.flush().await.unwrap();
        let mut buf = [0u8; 17];
        timeout(WAIT, sa.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"from the listener");
    }
}

#[tokio::test]
async fn handshake_without_expected_peer() {
    let (_, a) = identity(1, 1);
    let (kb, b) = identity(2, 2);
    let (x, y) = duplex(4096);
    let (out, inb) = tokio::join!(
        upgrade_outbound(x, &a, NoiseSuite::ChaChaPoly, None, TIMEOUT),
        upgrade_inbound(y, &b, TIMEOUT),
    );
    assert_eq!(out.unwrap().1.peer, kb.peer_id());
    assert_eq!(inb.unwrap().1.peer, a.peer_id());
}

#[tokio::test]
async fn unexpected_peer_never_sends_message_three() {
    let (_, a) = identity(1, 1);
    let (kb, b) = identity(2, 2);
    let (kc, _) = identity(3, 3);
    let c = kc.peer_id();
    let (dialer_io, mut listener_io) = duplex(64 * 1024);

    let dial = tokio::spawn(async move {
        upgrade_outbound(dialer_io, &a, NoiseSuite::AesGcm, Some(c), TIMEOUT).await.map(|_| ())
    });

    // The listener's side, by hand: preamble, message 1, then message 2.
    let mut preamble = [0u8; 8];
    listener_io.read_exact(&mut preamble).await.unwrap();
    let mut responder = NoiseHandshake::responder(&b, Preamble::parse(preamble).unwrap());
    let msg1 = read_frame(&mut listener_io).await.unwrap();
    responder.read_message(&msg1).unwrap();
    let mut msg2 = Vec::new();
    responder.write_message(&mut msg2).unwrap();
    listener_io.write_all(&msg2).await.unwrap();

    let err = timeout(WAIT, dial).await.unwrap().unwrap().unwrap_err();
    match err {
        HandshakeError::UnexpectedPeer { expected, actual } => {
            assert_eq!(expected, c);
            assert_eq!(actual, kb.peer_id());
        }
        other => panic!("expected UnexpectedPeer, got {other:?}"),
    }
    // The dialer closed the connection without a third message.
    let mut rest = Vec::new();
    let read = timeout(WAIT, listener_io.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(read, 0, "message 3 must never be sent, got {rest:?}");
    assert_eq!(responder.step(), HandshakeStep::Read);
}

/// Runs a dialer and a listener through a relay that flips one byte of the dialer's stream.
async fn through_relay(
    flip: Option<(usize, u8)>,
) -> (Result<(), HandshakeError>, Result<(), HandshakeError>) {
    let (_, a) = identity(1, 1);
    let (_, b) = identity(2, 2);
    let (dialer_io, relay_a) = duplex(64 * 1024);
    let (relay_b, listener_io) = duplex(64 * 1024);
    let (a_read, a_write) = tokio::io::split(relay_a);
    let (b_read, b_write) = tokio::io::split(relay_b);
    tokio::spawn(pump(a_read, b_write, flip));
    tokio::spawn(pump(b_read, a_write, None));
    let (out, inb) = tokio::join!(
        upgrade_outbound(dialer_io, &a, NoiseSuite::AesGcm, None, TIMEOUT),
        upgrade_inbound(listener_io, &b, TIMEOUT),
    );
    (out.map(|_| ()), inb.map(|_| ()))
}

#[tokio::test]
async fn untouched_relay_succeeds() {
    let (out, inb) = through_relay(None).await;
    out.unwrap();
    inb.unwrap();
}

#[tokio::test]
async fn flipped_flags_byte_fails_the_handshake() {
    // The flags byte (offset 7) is ignored by the parser but is part of the prologue.
    let (out, inb) = through_relay(Some((7, 0x01))).await;
    assert!(matches!(out, Err(HandshakeError::Protocol)), "{out:?}");
    assert!(matches!(inb, Err(HandshakeError::Io(_))), "{inb:?}");
}

#[tokio::test]
async fn changed_suite_id_fails_the_handshake() {
    // Suite 2 (AES-GCM) becomes 1 (ChaChaPoly), a valid suite: only the prologue catches it.
    let (out, inb) = through_relay(Some((6, 0x03))).await;
    assert!(matches!(out, Err(HandshakeError::Protocol)), "{out:?}");
    assert!(matches!(inb, Err(HandshakeError::Io(_))), "{inb:?}");
}

#[tokio::test]
async fn tampered_message_two_fails() {
    // A byte inside the listener's encrypted static key.
    let (_, a) = identity(1, 1);
    let (_, b) = identity(2, 2);
    let (dialer_io, relay_a) = duplex(64 * 1024);
    let (relay_b, listener_io) = duplex(64 * 1024);
    let (a_read, a_write) = tokio::io::split(relay_a);
    let (b_read, b_write) = tokio::io::split(relay_b);
    tokio::spawn(pump(a_read, b_write, None));
    tokio::spawn(pump(b_read, a_write, Some((2 + 40, 0x80))));
    let (out, inb) = tokio::join!(
        upgrade_outbound(dialer_io, &a, NoiseSuite::ChaChaPoly, None, TIMEOUT),
        upgrade_inbound(listener_io, &b, TIMEOUT),
    );
    assert!(matches!(out, Err(HandshakeError::Protocol)), "{out:?}");
    assert!(inb.is_err());
}

/// The listener's error for a connection that starts with `bytes` (and stays open).
async fn inbound_error(bytes: &[u8]) -> HandshakeError {
    let (_, b) = identity(2, 2);
    let (mut x, y) = duplex(4096);
    x.write_all(bytes).await.unwrap();
    let result = upgrade_inbound(y, &b, TIMEOUT).await;
    drop(x);
    result.map(|_| ()).unwrap_err()
}

#[tokio::test]
async fn detection_errors() {
    assert!(matches!(inbound_error(b"GET / HTTP/1.1\r\n\r\n").await, HandshakeError::NotSinew));
    assert!(matches!(inbound_error(b"SINEX\x01\x01\x00").await, HandshakeError::NotSinew));
    // The first bytes of a TLS 1.3 ClientHello record.
    let hello = [0x16, 0x03, 0x01, 0x00, 0xf8, 0x01, 0x00, 0x00, 0xf4, 0x03, 0x03];
    assert!(matches!(inbound_error(&hello).await, HandshakeError::TlsNotAccepted));
    assert!(matches!(inbound_error(b"SINEW\x02\x01\x00").await, HandshakeError::UnknownVersion(2)));
    assert!(matches!(inbound_error(b"SINEW\x01\x09\x00").await, HandshakeError::UnknownSuite(9)));
    // A zero-length message 1.
    assert!(matches!(inbound_error(b"SINEW\x01\x01\x00\x00\x00").await, HandshakeError::Protocol));
}

#[tokio::test]
async fn manual_detection_then_noise() {
    let (ka, a) = identity(1, 1);
    let (kb, b) = identity(2, 2);
    let (x, y) = duplex(64 * 1024);
    let listener = async {
        let (detected, rewound) = detect(y).await?;
        assert_eq!(detected, Detected::Noise(NoiseSuite::ChaChaPoly));
        upgrade_inbound_noise(rewound, &b, TIMEOUT).await
    };
    let (out, inb) = tokio::join!(
        upgrade_outbound(x, &a, NoiseSuite::ChaChaPoly, Some(kb.peer_id()), TIMEOUT),
        listener,
    );
    assert_eq!(out.unwrap().1.peer, kb.peer_id());
    assert_eq!(inb.unwrap().1.peer, ka.peer_id());
}

#[tokio::test]
async fn truncated_message_one_is_io_error() {
    let (_, a) = identity(1, 1);
    let (_, b) = identity(2, 2);
    // Capture a real preamble and message 1, then send only part of it.
    let mut initiator = NoiseHandshake::initiator(&a, NoiseSuite::AesGcm, None);
    let mut bytes = initiator.preamble().as_bytes().to_vec();
    initiator.write_message(&mut bytes).unwrap();
    let (mut x, y) = duplex(4096);
    x.write_all(&bytes[..bytes.len() - 10]).await.unwrap();
    drop(x);
    let err = upgrade_inbound(y, &b, TIMEOUT).await.map(|_| ()).unwrap_err();
    assert!(matches!(err, HandshakeError::Io(_)), "{err:?}");
}

#[tokio::test]
async fn listener_closing_mid_handshake_is_io_error() {
    let (_, a) = identity(1, 1);
    let (dialed, mut accepted) = tcp_pair().await;
    let dial = tokio::spawn(async move {
        upgrade_outbound(dialed, &a, NoiseSuite::ChaChaPoly, None, TIMEOUT).await.map(|_| ())
    });
    let mut first = [0u8; 8 + 2 + 32];
    accepted.read_exact(&mut first).await.unwrap();
    // Half a message 2, then close.
    accepted.write_all(&[0, 200, 1, 2, 3]).await.unwrap();
    drop(accepted);
    let err = timeout(WAIT, dial).await.unwrap().unwrap().unwrap_err();
    assert!(matches!(err, HandshakeError::Io(_)), "{err:?}");
}

#[tokio::test]
async fn garbage_message_two_is_protocol() {
    let (_, a) = identity(1, 1);
    let (x, mut y) = duplex(4096);
    let dial = tokio::spawn(async move {
        upgrade_outbound(x, &a, NoiseSuite::AesGcm, None, TIMEOUT).await.map(|_| ())
    });
    let mut first = [0u8; 8 + 2 + 32];
    y.read_exact(&mut first).await.unwrap();
    let mut garbage = vec![0, 200];
    garbage.extend_from_slice(&[0x5a; 200]);
    y.write_all(&garbage).await.unwrap();
    let err = timeout(WAIT, dial).await.unwrap().unwrap().unwrap_err();
    assert!(matches!(err, HandshakeError::Protocol), "{err:?}");
}

#[tokio::test]
async fn silence_times_out() {
    let short = Duration::from_millis(200);
    let (_, a) = identity(1, 1);
    let (_, b) = identity(2, 2);

    // A listener that never hears a byte.
    let (_x, y) = duplex(4096);
    let err = timeout(WAIT, upgrade_inbound(y, &b, short)).await.unwrap().map(|_| ()).unwrap_err();
    assert!(matches!(err, HandshakeError::Timeout), "{err:?}");

    // A dialer whose listener never answers.
    let (x, _y) = duplex(4096);
    let result = timeout(WAIT, upgrade_outbound(x, &a, NoiseSuite::AesGcm, None, short)).await;
    let err = result.unwrap().map(|_| ()).unwrap_err();
    assert!(matches!(err, HandshakeError::Timeout), "{err:?}");

    // A listener that hears half a preamble.
    let (mut x, y) = duplex(4096);
    x.write_all(b"SINE").await.unwrap();
    let err = timeout(WAIT, upgrade_inbound(y, &b, short)).await.unwrap().map(|_| ()).unwrap_err();
    assert!(matches!(err, HandshakeError::Timeout), "{err:?}");
}

#[tokio::test]
async fn self_connection_is_refused() {
    let (ka, a) = identity(1, 1);
    let (dialed, accepted) = tcp_pair().await;
    let (out, inb) = tokio::join!(
        upgrade_outbound(dialed, &a, NoiseSuite::AesGcm, Some(ka.peer_id()), TIMEOUT),
        upgrade_inbound(accepted, &a, TIMEOUT),
    );
    assert!(matches!(out.map(|_| ()), Err(HandshakeError::SelfConnection)));
    assert!(matches!(inb.map(|_| ()), Err(HandshakeError::Io(_))));
}

#[tokio::test]
async fn concurrent_handshakes() {
    let (_, b) = identity(2, 2);
    let mut tasks = Vec::new();
    for seed in 10..30u8 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let (ka, a) = identity(seed, u64::from(seed));
            let (x, y) = duplex(4096);
            let (out, inb) = tokio::join!(
                upgrade_outbound(x, &a, NoiseSuite::AesGcm, Some(b.peer_id()), TIMEOUT),
                upgrade_inbound(y, &b, TIMEOUT),
            );
            let (out, inb) = (out.unwrap().1, inb.unwrap().1);
            assert_eq!(inb.peer, ka.peer_id());
            assert_eq!(inb.boot_nonce, u64::from(seed));
            out.session_tag
        }));
    }
    let mut tags = Vec::new();
    for task in tasks {
        tags.push(timeout(WAIT, task).await.unwrap().unwrap());
    }
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), 20, "every session has its own tag");
}
