//! The sans-IO handshake, driven in memory.

use sinew_types::Signature;

use super::*;
use crate::payload::PAYLOAD_FIXED_LEN;

fn identity(seed: u8, boot_nonce: u64) -> NoiseIdentity {
    NoiseIdentity::new(&Keypair::from_secret_bytes([seed; 32]), boot_nonce)
}

/// Strips the length prefix of one framed message, checking it.
fn body(frame: &[u8]) -> &[u8] {
    let len = message_len([frame[0], frame[1]]).unwrap();
    assert_eq!(frame.len(), LENGTH_PREFIX + len, "one whole frame");
    &frame[LENGTH_PREFIX..]
}

/// Writes the next message of `from` and hands it to `to`.
fn relay(from: &mut NoiseHandshake, to: &mut NoiseHandshake) -> Result<(), HandshakeError> {
    assert_eq!(from.step(), HandshakeStep::Write);
    assert_eq!(to.step(), HandshakeStep::Read);
    let mut frame = Vec::new();
    from.write_message(&mut frame)?;
    to.read_message(body(&frame))
}

fn pair(
    dialer: &NoiseIdentity,
    listener: &NoiseIdentity,
    suite: NoiseSuite,
    expected: Option<PeerId>,
) -> (NoiseHandshake, NoiseHandshake) {
    let initiator = NoiseHandshake::initiator(dialer, suite, expected);
    let responder = NoiseHandshake::responder(listener, initiator.preamble());
    (initiator, responder)
}

#[test]
fn full_handshake_both_suites() {
    let (a, b) = (identity(1, 11), identity(2, 22));
    for suite in [NoiseSuite::ChaChaPoly, NoiseSuite::AesGcm] {
        let (mut i, mut r) = pair(&a, &b, suite, Some(b.peer_id()));
        relay(&mut i, &mut r).unwrap();
        relay(&mut r, &mut i).unwrap();
        assert_eq!(i.remote(), Some(b.peer_id()));
        assert_eq!(r.remote(), None, "the responder learns the dialer from message 3");
        relay(&mut i, &mut r).unwrap();
        assert_eq!((i.step(), r.step()), (HandshakeStep::Finished, HandshakeStep::Finished));

        let (mut ti, info_i) = i.finish().unwrap();
        let (mut tr, info_r) = r.finish().unwrap();
        assert_eq!(
            (info_i.peer, info_i.boot_nonce, info_i.security),
            (b.peer_id(), 22, Security::Noise(suite))
        );
        assert_eq!(
            (info_r.peer, info_r.boot_nonce, info_r.security),
            (a.peer_id(), 11, Security::Noise(suite))
        );
        assert_eq!(info_i.session_tag, info_r.session_tag);
        assert_ne!(info_i.session_tag, [0; 32]);

        let mut msg = [0u8; 64];
        let n = ti.encrypt(b"ping", &mut msg).unwrap();
        assert_eq!(n, 4 + TAG_LEN);
        let mut plain = [0u8; 64];
        assert_eq!(tr.decrypt(&msg[..n], &mut plain).unwrap(), 4);
        assert_eq!(&plain[..4], b"ping");
        // Replaying the same message fails: the receiving nonce moved on.
        assert_eq!(tr.decrypt(&msg[..n], &mut plain), Err(NoiseError::Decrypt));
    }
}

#[test]
fn message_sizes_match_the_documented_layout() {
    let (a, b) = (identity(1, 1), identity(2, 2));
    let (mut i, mut r) = pair(&a, &b, NoiseSuite::AesGcm, None);
    let mut frames = Vec::new();
    for _ in 0..3 {
        let (from, to) =
            if i.step() == HandshakeStep::Write { (&mut i, &mut r) } else { (&mut r, &mut i) };
        let mut frame = Vec::new();
        from.write_message(&mut frame).unwrap();
        to.read_message(body(&frame)).unwrap();
        frames.push(frame.len());
    }
    assert_eq!(
        frames,
        [2 + 32, 2 + 32 + 48 + PAYLOAD_FIXED_LEN + 16, 2 + 48 + PAYLOAD_FIXED_LEN + 16]
    );
}

#[test]
fn session_tags_differ_between_sessions() {
    let (a, b) = (identity(1, 1), identity(2, 2));
    let mut tags = Vec::new();
    for _ in 0..2 {
        let (mut i, mut r) = pair(&a, &b, NoiseSuite::ChaChaPoly, None);
        relay(&mut i, &mut r).unwrap();
        relay(&mut r, &mut i).unwrap();
        relay(&mut i, &mut r).unwrap();
        tags.push(i.finish().unwrap().1.session_tag);
    }
    assert_ne!(tags[0], tags[1]);
}

#[test]
fn unexpected_peer_stops_before_message_three() {
    let (a, b, c) = (identity(1, 1), identity(2, 2), identity(3, 3));
    let (mut i, mut r) = pair(&a, &b, NoiseSuite::AesGcm, Some(c.peer_id()));
    relay(&mut i, &mut r).unwrap();
    let err = relay(&mut r, &mut i).unwrap_err();
    assert!(
        matches!(err, HandshakeError::UnexpectedPeer { expected, actual }
            if expected == c.peer_id() && actual == b.peer_id()),
        "{err:?}"
    );
    assert_eq!(i.step(), HandshakeStep::Failed);
    let mut out = Vec::new();
    assert!(matches!(i.write_message(&mut out), Err(HandshakeError::Protocol)));
    assert!(out.is_empty(), "no message 3 after a mismatch");
}

#[test]
fn self_connection_is_refused() {
    let a = identity(1, 1);
    let (mut i, mut r) = pair(&a, &a, NoiseSuite::ChaChaPoly, Some(a.peer_id()));
    relay(&mut i, &mut r).unwrap();
    assert!(matches!(relay(&mut r, &mut i), Err(HandshakeError::SelfConnection)));
}

/// A responder whose identity payload was altered after signing.
fn tampered(listener: &NoiseIdentity, edit: impl FnOnce(&mut Vec<u8>)) -> NoiseIdentity {
    let mut inner = IdentityInner {
        peer_id: listener.inner.peer_id,
        boot_nonce: listener.inner.boot_nonce,
        static_private: listener.inner.static_private.clone(),
        static_public: listener.inner.static_public,
        payload: listener.inner.payload.clone(),
    };
    edit(&mut inner.payload);
    NoiseIdentity { inner: Arc::new(inner) }
}

fn responder_error(listener: &NoiseIdentity) -> HandshakeError {
    let dialer = identity(1, 1);
    let (mut i, mut r) = pair(&dialer, listener, NoiseSuite::AesGcm, None);
    relay(&mut i, &mut r).unwrap();
    relay(&mut r, &mut i).unwrap_err()
}

#[test]
fn corrupted_signature_is_bad_signature() {
    let b = identity(2, 2);
    let bad = tampered(&b, |payload| payload[40] ^= 0x01);
    assert!(matches!(responder_error(&bad), HandshakeError::BadSignature));
}

#[test]
fn signature_over_another_static_key_is_bad_signature() {
    // The same Ed25519 identity in another process (another static key): its valid payload
    // does not bind this process's static key.
    let key = Keypair::from_secret_bytes([2; 32]);
    let (b, b_elsewhere) = (NoiseIdentity::new(&key, 2), NoiseIdentity::new(&key, 2));
    assert_ne!(b.static_public_key(), b_elsewhere.static_public_key());
    let replayed = tampered(&b, |payload| payload.clone_from(&b_elsewhere.inner.payload));
    assert!(matches!(responder_error(&replayed), HandshakeError::BadSignature));

    // And a signature by another identity over the right key does not verify either.
    let other = Keypair::from_secret_bytes([3; 32]);
    let sig: Signature = other.sign(SigningDomain::NOISE_HANDSHAKE, b.static_public_key());
    let forged = tampered(&b, |payload| payload[33..97].copy_from_slice(&sig.0));
    assert!(matches!(responder_error(&forged), HandshakeError::BadSignature));
}

#[test]
fn malformed_payloads_are_refused() {
    let b = identity(2, 2);
    let version = tampered(&b, |payload| payload[0] = 2);
    assert!(matches!(responder_error(&version), HandshakeError::MalformedPayload(_)));
    let trailing = tampered(&b, |payload| payload.push(0));
    assert!(matches!(responder_error(&trailing), HandshakeError::MalformedPayload(_)));
    let weak = tampered(&b, |payload| {
        payload[1..33].fill(0);
        payload[1] = 1;
    });
    assert!(matches!(responder_error(&weak), HandshakeError::MalformedPayload(_)));
    // An extension is accepted and ignored.
    let extended = tampered(&b, |payload| {
        payload[105..107].copy_from_slice(&3u16.to_le_bytes());
        payload.extend_from_slice(b"new");
    });
    let dialer = identity(1, 1);
    let (mut i, mut r) = pair(&dialer, &extended, NoiseSuite::AesGcm, Some(b.peer_id()));
    relay(&mut i, &mut r).unwrap();
    relay(&mut r, &mut i).unwrap();
    relay(&mut i, &mut r).unwrap();
    assert_eq!(i.finish().unwrap().1.peer, b.peer_id());
}

#[test]
fn dialer_payload_is_checked_too() {
    let (a, b) = (identity(1, 1), identity(2, 2));
    let bad = tampered(&a, |payload| payload[90] ^= 0x80);
    let (mut i, mut r) = pair(&bad, &b, NoiseSuite::ChaChaPoly, None);
    relay(&mut i, &mut r).unwrap();
    relay(&mut r, &mut i).unwrap();
    assert!(matches!(relay(&mut i, &mut r), Err(HandshakeError::BadSignature)));
    assert!(matches!(r.finish(), Err(HandshakeError::Protocol)));
}

#[test]
fn changed_prologue_fails_message_two() {
    let (a, b) = (identity(1, 1), identity(2, 2));
    let i = NoiseHandshake::initiator(&a, NoiseSuite::AesGcm, None);
    let mut flags = *i.preamble().as_bytes();
    flags[7] = 1;
    let mut i = i;
    let mut r = NoiseHandshake::responder(&b, Preamble::parse(flags).unwrap());
    relay(&mut i, &mut r).unwrap();
    assert!(matches!(relay(&mut r, &mut i), Err(HandshakeError::Protocol)));
}

#[test]
fn out_of_turn_and_garbage() {
    let (a, b) = (identity(1, 1), identity(2, 2));
    let (mut i, mut r) = pair(&a, &b, NoiseSuite::AesGcm, None);
    assert!(matches!(i.read_message(&[0; 32]), Err(HandshakeError::Protocol)));
    assert_eq!(i.step(), HandshakeStep::Failed);
    let mut out = Vec::new();
    assert!(matches!(r.write_message(&mut out), Err(HandshakeError::Protocol)));
    assert!(out.is_empty());

    let (mut i, mut r) = pair(&a, &b, NoiseSuite::AesGcm, None);
    assert!(matches!(r.read_message(&[0; 10]), Err(HandshakeError::Protocol)), "too short");
    let mut frame = Vec::new();
    i.write_message(&mut frame).unwrap();
    let (mut _i2, mut r2) = pair(&a, &b, NoiseSuite::AesGcm, None);
    let mut with_payload = body(&frame).to_vec();
    with_payload.push(7);
    assert!(matches!(r2.read_message(&with_payload), Err(HandshakeError::MalformedPayload(_))));
    assert!(matches!(message_len([0, 0]), Err(HandshakeError::Protocol)));
    assert_eq!(message_len([1, 2]).unwrap(), 258, "big-endian");
}

#[test]
fn finish_before_the_end_is_protocol() {
    let (a, b) = (identity(1, 1), identity(2, 2));
    let (mut i, mut r) = pair(&a, &b, NoiseSuite::AesGcm, None);
    relay(&mut i, &mut r).unwrap();
    relay(&mut r, &mut i).unwrap();
    assert!(matches!(i.finish(), Err(HandshakeError::Protocol)));
}

#[test]
fn identity_debug_hides_keys() {
    let a = identity(1, 1);
    let text = format!("{a:?}");
    assert!(text.contains("peer_id"));
    assert!(!text.contains("static_private"));
}
