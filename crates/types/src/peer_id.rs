//! Peer identities, signatures and the domains they are made in.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;

use crate::base32;

/// The prefix of version 1 of the peer id text form.
const TEXT_PREFIX_V1: &str = "sn1";
/// Length of the checksum appended to the key bytes in the text form.
const CHECKSUM_LEN: usize = 4;

/// A peer's identity: its 32-byte Ed25519 public key.
///
/// Every `PeerId` holds a valid, non-weak Ed25519 point: the constructors refuse anything else,
/// so a peer id from the network can always be used to verify. Ordering is by the key bytes
/// (this is the "lower peer id" the connection rules speak of).
///
/// Text form, version 1: `sn1` followed by lowercase base32 (RFC 4648, no padding) of the 32 key
/// bytes and a 4-byte CRC32C of them (little-endian), 61 characters in all. The checksum catches
/// typing mistakes; the prefix leaves room for other key types later.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId([u8; 32]);

/// Why bytes or text are not a valid [`PeerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerIdError {
    /// The text does not start with a known version prefix.
    #[error("peer id has an unknown version prefix (expected `{TEXT_PREFIX_V1}`)")]
    UnknownVersion,
    /// The text is not base32 of the expected length.
    #[error("peer id text is not valid base32 of 36 bytes")]
    Malformed,
    /// The checksum in the text does not match the key.
    #[error("peer id checksum mismatch (mistyped?)")]
    Checksum,
    /// The bytes are not a point on the Ed25519 curve.
    #[error("peer id is not a valid Ed25519 public key")]
    InvalidKey,
    /// The key is of small order, which would let anyone forge signatures.
    #[error("peer id is a weak (small-order) Ed25519 key")]
    WeakKey,
    /// The slice is not 32 bytes long.
    #[error("peer id must be 32 bytes, got {0}")]
    Length(usize),
}

/// A signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signature does not verify")]
pub struct SignatureError;

/// A 64-byte Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Signature({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// The purpose a signature is made for.
///
/// The signed bytes are `"sinew-sig:" || domain || 0x00 || message`, so a signature made in one
/// domain never verifies in another. The domain strings are part of the wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningDomain(&'static str);

impl SigningDomain {
    /// Binds a Noise static key to an identity during the handshake.
    pub const NOISE_HANDSHAKE: Self = Self("noise-handshake/v1");
    /// Binds a TLS certificate's public key to an identity.
    pub const TLS_CERTIFICATE: Self = Self("tls-certificate/v1");
    /// Signs a peer record (a peer's addresses).
    pub const PEER_RECORD: Self = Self("peer-record/v1");

    /// A domain of your own, for application-level signatures. It must not contain a NUL byte.
    pub const fn custom(name: &'static str) -> Self {
        Self(name)
    }

    /// The domain string.
    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// The exact bytes that are signed for `message` in this domain.
    pub fn message(&self, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + self.0.len() + 1 + message.len());
        out.extend_from_slice(b"sinew-sig:");
        out.extend_from_slice(self.0.as_bytes());
        out.push(0);
        out.extend_from_slice(message);
        out
    }
}

impl PeerId {
    /// Validates 32 key bytes as a peer id: a valid, non-weak Ed25519 point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, PeerIdError> {
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| PeerIdError::InvalidKey)?;
        if key.is_weak() {
            return Err(PeerIdError::WeakKey);
        }
        Ok(Self(bytes))
    }

    /// Like [`PeerId::from_bytes`], for a slice that must be 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, PeerIdError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| PeerIdError::Length(bytes.len()))?;
        Self::from_bytes(array)
    }

    /// The 32 key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The 32 key bytes, borrowed.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Verifies `signature` over `message` in `domain` with this key (strict verification:
    /// non-canonical signatures and small-order components are refused).
    pub fn verify(
        &self,
        domain: SigningDomain,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        // Invariant: the constructors only admit bytes that decompress to a valid point.
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError)?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(&domain.message(message), &sig).map_err(|_| SignatureError)
    }

    /// A short form for logs: the first 10 characters after the prefix.
    pub fn short(&self) -> String {
        let text = self.to_string();
        text[TEXT_PREFIX_V1.len()..TEXT_PREFIX_V1.len() + 10].to_owned()
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; 32 + CHECKSUM_LEN];
        raw[..32].copy_from_slice(&self.0);
        raw[32..].copy_from_slice(&crc32c::crc32c(&self.0).to_le_bytes());
        write!(f, "{TEXT_PREFIX_V1}{}", base32::encode(&raw))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

impl FromStr for PeerId {
    type Err = PeerIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let body = s.strip_prefix(TEXT_PREFIX_V1).ok_or(PeerIdError::UnknownVersion)?;
        let raw = base32::decode(body).ok_or(PeerIdError::Malformed)?;
        if raw.len() != 32 + CHECKSUM_LEN {
            return Err(PeerIdError::Malformed);
        }
        let (key, checksum) = raw.split_at(32);
        if crc32c::crc32c(key).to_le_bytes() != checksum {
            return Err(PeerIdError::Checksum);
        }
        Self::from_slice(key)
    }
}

impl serde::Serialize for PeerId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PeerId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;
    use proptest::prelude::*;

    #[test]
    fn text_round_trip_and_length() {
        let id = Keypair::generate().peer_id();
        let text = id.to_string();
        assert!(text.starts_with("sn1"));
        assert_eq!(text.len(), 61);
        assert_eq!(text.parse::<PeerId>().unwrap(), id);
        assert_eq!(text.to_uppercase().replace("SN1", "sn1").parse::<PeerId>().unwrap(), id);
    }

    #[test]
    fn text_errors_are_typed() {
        let text = Keypair::generate().peer_id().to_string();
        assert_eq!("xx1abc".parse::<PeerId>(), Err(PeerIdError::UnknownVersion));
        assert_eq!("sn1abc".parse::<PeerId>(), Err(PeerIdError::Malformed));
        assert_eq!(format!("{text}a").parse::<PeerId>(), Err(PeerIdError::Malformed));
        // Change one character of the key part: the checksum catches it.
        let mut chars: Vec<char> = text.chars().collect();
        chars[5] = if chars[5] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(typo.parse::<PeerId>(), Err(PeerIdError::Checksum));
    }

    #[test]
    fn weak_keys_are_refused() {
        // The identity point (small order) encoded as y = 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PeerId::from_bytes(identity), Err(PeerIdError::WeakKey));
        // A weak key also fails through the text form, with a valid checksum.
        let mut raw = identity.to_vec();
        raw.extend_from_slice(&crc32c::crc32c(&identity).to_le_bytes());
        let text = format!("sn1{}", base32::encode(&raw));
        assert_eq!(text.parse::<PeerId>(), Err(PeerIdError::WeakKey));
        assert_eq!(PeerId::from_slice(&[1, 2, 3]), Err(PeerIdError::Length(3)));
    }

    #[test]
    fn signatures_are_domain_separated() {
        let key = Keypair::generate();
        let id = key.peer_id();
        let sig = key.sign(SigningDomain::NOISE_HANDSHAKE, b"static key");
        assert!(id.verify(SigningDomain::NOISE_HANDSHAKE, b"static key", &sig).is_ok());
        assert!(id.verify(SigningDomain::PEER_RECORD, b"static key", &sig).is_err());
        assert!(id.verify(SigningDomain::NOISE_HANDSHAKE, b"static kez", &sig).is_err());
        let other = Keypair::generate().peer_id();
        assert!(other.verify(SigningDomain::NOISE_HANDSHAKE, b"static key", &sig).is_err());
    }

    #[test]
    fn serde_uses_text_form() {
        let id = Keypair::generate().peer_id();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<PeerId>(&json).unwrap(), id);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<PeerId>();
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in any::<[u8; 32]>()) {
            if let Ok(id) = PeerId::from_bytes(bytes) {
                prop_assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
            }
        }
    }
}
