//! Harnesses for the fuzz targets in `fuzz/` (not part of the API).

#[cfg(feature = "noise")]
use std::sync::OnceLock;

#[cfg(any(feature = "noise", feature = "tls"))]
use sinew_types::Keypair;

#[cfg(feature = "noise")]
use crate::handshake::{HandshakeStep, NoiseHandshake, NoiseIdentity, message_len};
#[cfg(feature = "noise")]
use crate::payload::IdentityPayload;
#[cfg(feature = "noise")]
use crate::preamble::{PREAMBLE_LEN, Preamble};

/// Decodes `data` as an identity payload; if it decodes, its encoding must be `data` again and
/// decode to the same payload.
#[cfg(feature = "noise")]
pub fn handshake_payload(data: &[u8]) {
    let Ok(payload) = IdentityPayload::decode(data) else { return };
    let mut encoded = Vec::new();
    payload.encode(&mut encoded);
    assert_eq!(encoded, data, "the payload encoding is not canonical");
    let again = IdentityPayload::decode(&encoded);
    assert_eq!(again.ok(), Some(payload), "decode(encode(decode(x))) differs");
}

/// Decodes `data` as a refusal record (what a dialler reads instead of message 2); a record that
/// decodes must encode to the same bytes.
pub fn refusal_record(data: &[u8]) {
    let Some(record) = data.first_chunk::<{ crate::REFUSAL_LEN }>() else { return };
    if let Some(refused) = crate::decode_refusal(record) {
        assert_eq!(&crate::encode_refusal(refused), record, "the record encoding is not canonical");
    }
}

/// Feeds `data` to a sans-IO responder as a preamble followed by framed Noise messages
/// (`u16` big-endian length + message), writing its replies when it is its turn. Never panics.
#[cfg(feature = "noise")]
pub fn responder(data: &[u8]) {
    let _ = drive_responder(data);
}

/// The responder harness; returns where the handshake stopped and how many messages it wrote.
#[cfg(feature = "noise")]
fn drive_responder(data: &[u8]) -> Option<(HandshakeStep, usize)> {
    static IDENTITY: OnceLock<NoiseIdentity> = OnceLock::new();
    let identity =
        IDENTITY.get_or_init(|| NoiseIdentity::new(&Keypair::from_secret_bytes([1; 32]), 1));

    let (preamble, mut rest) = data.split_first_chunk::<PREAMBLE_LEN>()?;
    let preamble = Preamble::parse(*preamble).ok()?;
    let mut handshake = NoiseHandshake::responder(identity, preamble);
    let mut out = Vec::new();
    let mut written = 0;
    loop {
        match handshake.step() {
            HandshakeStep::Write => {
                handshake.write_message(&mut out).ok()?;
                written += 1;
            }
            HandshakeStep::Read => {
                let Some((prefix, tail)) = rest.split_first_chunk::<2>() else { break };
                let Ok(len) = message_len(*prefix) else { break };
                let Some((message, tail)) = tail.split_at_checked(len) else { break };
                rest = tail;
                if handshake.read_message(message).is_err() {
                    assert_eq!(
                        handshake.step(),
                        HandshakeStep::Failed,
                        "a failed read ends the handshake"
                    );
                }
            }
            HandshakeStep::Finished => {
                let step = handshake.step();
                handshake.finish().ok()?;
                return Some((step, written));
            }
            HandshakeStep::Failed => break,
        }
    }
    Some((handshake.step(), written))
}

/// Checks `data` as a TLS certificate the way both verifiers do: it never panics, and a
/// certificate that passes names a valid identity whose own check passes again.
#[cfg(feature = "tls")]
pub fn tls_certificate(data: &[u8]) {
    let certificate = rustls::pki_types::CertificateDer::from(data);
    if let Ok(identity) = crate::tls::certified_identity(&certificate) {
        let again = crate::tls::certified_identity(&certificate).ok();
        assert_eq!(again, Some(identity), "the check is not deterministic");
    }
}

/// A valid sinew certificate, as a seed for the `tls_certificate` target.
#[cfg(feature = "tls")]
pub fn tls_certificate_seed() -> Vec<u8> {
    let key = Keypair::from_secret_bytes([7; 32]);
    crate::tls::TlsIdentity::new(&key, 1).map(|id| id.certificate().to_vec()).unwrap_or_default()
}

#[cfg(all(test, feature = "noise"))]
mod tests {
    use sinew_transport::NoiseSuite;

    use super::*;

    #[test]
    fn harnesses_survive_samples() {
        handshake_payload(&[]);
        handshake_payload(&[1; 107]);
        responder(&[]);
        responder(b"SINEW\x01\x02\x00");
        responder(b"SINEW\x01\x02\x00\x00\x20");
        let mut data = b"SINEW\x01\x01\x00\x00\x20".to_vec();
        data.extend_from_slice(&[9; 32]);
        data.extend_from_slice(&[0, 80]);
        data.extend_from_slice(&[3; 80]);
        responder(&data);
    }

    #[test]
    fn responder_harness_reaches_message_two() {
        // A real message 1 gets the harness to write message 2 and wait for message 3.
        let dialer = NoiseIdentity::new(&Keypair::from_secret_bytes([2; 32]), 2);
        let mut initiator = NoiseHandshake::initiator(&dialer, NoiseSuite::AesGcm, None);
        let mut data = initiator.preamble().as_bytes().to_vec();
        initiator.write_message(&mut data).unwrap();
        assert_eq!(data.len(), PREAMBLE_LEN + 2 + 32);
        assert_eq!(drive_responder(&data), Some((HandshakeStep::Read, 1)));
        // Garbage as message 3 fails the handshake.
        data.extend_from_slice(&[0, 4, 1, 2, 3, 4]);
        assert_eq!(drive_responder(&data), Some((HandshakeStep::Failed, 1)));
        // A message 1 with a payload is refused.
        let mut long = b"SINEW\x01\x01\x00\x00\x21".to_vec();
        long.extend_from_slice(&[9; 33]);
        assert_eq!(drive_responder(&long), Some((HandshakeStep::Failed, 0)));
    }
}
