//! The identity payload carried by Noise messages 2 and 3.
//!
//! `u8 version = 1 | [32] Ed25519 key | [64] signature | u64 LE boot nonce | u16 LE n | [n]
//! extension`; nothing may follow.

use sinew_transport::HandshakeError;
use sinew_types::{PeerId, Signature};

/// The payload version this crate writes and accepts.
pub(crate) const PAYLOAD_VERSION: u8 = 1;
/// The payload's size without extension bytes.
pub(crate) const PAYLOAD_FIXED_LEN: usize = 1 + 32 + 64 + 8 + 2;

/// A decoded identity payload. The key is already checked to be a valid, non-weak Ed25519 key;
/// the signature is not verified here (that needs the Noise static key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdentityPayload<'a> {
    pub(crate) identity: PeerId,
    pub(crate) signature: Signature,
    pub(crate) boot_nonce: u64,
    /// Bytes for future use, ignored; at most `u16::MAX` long.
    pub(crate) extension: &'a [u8],
}

impl<'a> IdentityPayload<'a> {
    /// Appends the encoded payload to `out`.
    ///
    /// The extension must be at most `u16::MAX` bytes: decoded payloads always are, and the
    /// payloads this crate makes have none.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        // Invariant (documented above): every IdentityPayload has an extension of at most
        // u16::MAX bytes, so clamping never changes the length in practice.
        let ext_len = u16::try_from(self.extension.len()).unwrap_or(u16::MAX);
        out.reserve(PAYLOAD_FIXED_LEN + usize::from(ext_len));
        out.push(PAYLOAD_VERSION);
        out.extend_from_slice(self.identity.as_bytes());
        out.extend_from_slice(&self.signature.0);
        out.extend_from_slice(&self.boot_nonce.to_le_bytes());
        out.extend_from_slice(&ext_len.to_le_bytes());
        out.extend_from_slice(&self.extension[..usize::from(ext_len)]);
    }

    /// Decodes a payload; every problem is `MalformedPayload`.
    pub(crate) fn decode(bytes: &'a [u8]) -> Result<Self, HandshakeError> {
        let (&version, rest) = bytes
            .split_first()
            .ok_or(HandshakeError::MalformedPayload("empty identity payload"))?;
        if version != PAYLOAD_VERSION {
            return Err(HandshakeError::MalformedPayload("unknown identity payload version"));
        }
        if bytes.len() < PAYLOAD_FIXED_LEN {
            return Err(HandshakeError::MalformedPayload("identity payload is truncated"));
        }
        let (key, rest) = rest.split_at(32);
        let (signature, rest) = rest.split_at(64);
        let (nonce, rest) = rest.split_at(8);
        let (ext_len, extension) = rest.split_at(2);
        let ext_len = usize::from(u16::from_le_bytes([ext_len[0], ext_len[1]]));
        if extension.len() < ext_len {
            return Err(HandshakeError::MalformedPayload(
                "identity payload extension is truncated",
            ));
        }
        if extension.len() > ext_len {
            return Err(HandshakeError::MalformedPayload(
                "trailing bytes after the identity payload extension",
            ));
        }
        let identity = PeerId::from_slice(key).map_err(|_| {
            HandshakeError::MalformedPayload("identity key is not a valid Ed25519 public key")
        })?;
        let mut sig = [0u8; 64];
        sig.copy_from_slice(signature);
        let mut boot_nonce = [0u8; 8];
        boot_nonce.copy_from_slice(nonce);
        Ok(Self {
            identity,
            signature: Signature(sig),
            boot_nonce: u64::from_le_bytes(boot_nonce),
            extension,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use sinew_types::Keypair;

    use super::*;

    fn malformed(bytes: &[u8]) -> &'static str {
        match IdentityPayload::decode(bytes) {
            Err(HandshakeError::MalformedPayload(why)) => why,
            other => panic!("expected MalformedPayload, got {other:?}"),
        }
    }

    fn sample(extension: &[u8]) -> Vec<u8> {
        let key = Keypair::from_secret_bytes([7; 32]);
        let payload = IdentityPayload {
            identity: key.peer_id(),
            signature: Signature([0xab; 64]),
            boot_nonce: 0x0102_0304_0506_0708,
            extension,
        };
        let mut out = Vec::new();
        payload.encode(&mut out);
        out
    }

    #[test]
    fn layout_is_byte_exact() {
        let key = Keypair::from_secret_bytes([7; 32]);
        let out = sample(b"xyz");
        assert_eq!(out.len(), PAYLOAD_FIXED_LEN + 3);
        assert_eq!(out[0], 1);
        assert_eq!(&out[1..33], key.peer_id().as_bytes());
        assert_eq!(&out[33..97], &[0xab; 64]);
        assert_eq!(&out[97..105], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&out[105..107], &[3, 0]);
        assert_eq!(&out[107..], b"xyz");
    }

    #[test]
    fn refuses_malformed() {
        let good = sample(b"");
        assert!(IdentityPayload::decode(&good).is_ok());
        assert_eq!(malformed(&[]), "empty identity payload");

        let mut v2 = good.clone();
        v2[0] = 2;
        assert_eq!(malformed(&v2), "unknown identity payload version");
        assert_eq!(malformed(&good[..PAYLOAD_FIXED_LEN - 1]), "identity payload is truncated");

        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(malformed(&trailing), "trailing bytes after the identity payload extension");

        let mut short_ext = good.clone();
        short_ext[105] = 5;
        short_ext.extend_from_slice(b"abcd");
        assert_eq!(malformed(&short_ext), "identity payload extension is truncated");

        // The identity element (a small-order point) is a weak key.
        let mut weak = good.clone();
        weak[1..33].copy_from_slice(&[0; 32]);
        weak[1] = 1;
        assert_eq!(malformed(&weak), "identity key is not a valid Ed25519 public key");
    }

    #[test]
    fn extension_is_kept_and_ignored() {
        let bytes = sample(b"future");
        let decoded = IdentityPayload::decode(&bytes).unwrap();
        assert_eq!(decoded.extension, b"future");
        assert_eq!(decoded.boot_nonce, 0x0102_0304_0506_0708);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = IdentityPayload::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_near_valid(
            ext in proptest::collection::vec(any::<u8>(), 0..40),
            flip in any::<(usize, u8)>(),
            cut in any::<usize>(),
        ) {
            let mut bytes = sample(&ext);
            let i = flip.0 % bytes.len();
            bytes[i] ^= flip.1;
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = IdentityPayload::decode(&bytes);
        }

        #[test]
        fn round_trip(
            secret in any::<[u8; 32]>(),
            sig in proptest::collection::vec(any::<u8>(), 64),
            boot_nonce in any::<u64>(),
            extension in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&sig);
            let payload = IdentityPayload {
                identity: Keypair::from_secret_bytes(secret).peer_id(),
                signature: Signature(signature),
                boot_nonce,
                extension: &extension,
            };
            let mut out = Vec::new();
            payload.encode(&mut out);
            prop_assert_eq!(out.len(), PAYLOAD_FIXED_LEN + extension.len());
            prop_assert_eq!(IdentityPayload::decode(&out).unwrap(), payload);
        }
    }
}
