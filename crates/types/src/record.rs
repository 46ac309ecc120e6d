//! Signed peer records: a peer's addresses, signed by its key.

use crate::{Addr, Keypair, PeerId, Signature, SigningDomain};

/// Most addresses a record may carry.
pub const MAX_RECORD_ADDRS: usize = 32;
/// Longest address text in a record, in bytes.
pub const MAX_RECORD_ADDR_LEN: usize = 255;

/// A peer's addresses at a point in time. `seq` is the unix time in milliseconds when the record
/// was made, so a newer record always supersedes an older one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// Whose addresses these are.
    pub peer: PeerId,
    /// Sequence number: unix time in milliseconds at signing.
    pub seq: u64,
    /// The addresses (at most [`MAX_RECORD_ADDRS`]), without expected peer ids.
    pub addrs: Vec<Addr>,
}

/// A [`PeerRecord`] with a valid signature by its peer's key. Only constructible by signing or by
/// verifying, so holding one means the signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPeerRecord {
    record: PeerRecord,
    signature: Signature,
}

/// Why a record could not be made, decoded or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// More than [`MAX_RECORD_ADDRS`] addresses, or one longer than [`MAX_RECORD_ADDR_LEN`].
    #[error("peer record too large")]
    TooLarge,
    /// The encoding is truncated or malformed.
    #[error("malformed peer record")]
    Malformed,
    /// The signature does not verify with the record's peer id.
    #[error("peer record signature does not verify")]
    BadSignature,
}

impl PeerRecord {
    /// The canonical encoding that is signed:
    /// `peer (32) || seq (u64 LE) || count (u8) || count x (len (u8) || address text)`.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        if self.addrs.len() > MAX_RECORD_ADDRS {
            return Err(RecordError::TooLarge);
        }
        let mut out = Vec::with_capacity(41 + self.addrs.len() * 32);
        out.extend_from_slice(self.peer.as_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        // Bounded by MAX_RECORD_ADDRS above.
        out.push(self.addrs.len() as u8);
        for addr in &self.addrs {
            let text = addr.clone().without_peer().to_string();
            if text.len() > MAX_RECORD_ADDR_LEN {
                return Err(RecordError::TooLarge);
            }
            // Bounded by MAX_RECORD_ADDR_LEN (255) just above.
            out.push(text.len() as u8);
            out.extend_from_slice(text.as_bytes());
        }
        Ok(out)
    }

    /// Decodes [`PeerRecord::encode`]'s output, returning the record and the bytes after it.
    pub fn decode(bytes: &[u8]) -> Result<(Self, &[u8]), RecordError> {
        let take = |bytes: &mut &[u8], n: usize| -> Result<Vec<u8>, RecordError> {
            if bytes.len() < n {
                return Err(RecordError::Malformed);
            }
            let (head, tail) = bytes.split_at(n);
            *bytes = tail;
            Ok(head.to_vec())
        };
        let mut rest = bytes;
        let peer = PeerId::from_slice(&take(&mut rest, 32)?).map_err(|_| RecordError::Malformed)?;
        let seq_bytes: [u8; 8] =
            take(&mut rest, 8)?.try_into().map_err(|_| RecordError::Malformed)?;
        let count = usize::from(take(&mut rest, 1)?[0]);
        if count > MAX_RECORD_ADDRS {
            return Err(RecordError::TooLarge);
        }
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(take(&mut rest, 1)?[0]);
            let text =
                String::from_utf8(take(&mut rest, len)?).map_err(|_| RecordError::Malformed)?;
            let addr: Addr = text.parse().map_err(|_| RecordError::Malformed)?;
            if addr.peer().is_some() {
                return Err(RecordError::Malformed);
            }
            addrs.push(addr);
        }
        Ok((Self { peer, seq: u64::from_le_bytes(seq_bytes), addrs }, rest))
    }
}

impl SignedPeerRecord {
    /// Makes and signs a record of `addrs` for `keypair`'s peer, with `seq` = `unix_ms`.
    /// Expected peer ids in the addresses are dropped.
    pub fn sign(keypair: &Keypair, addrs: Vec<Addr>, unix_ms: u64) -> Result<Self, RecordError> {
        let addrs = addrs.into_iter().map(Addr::without_peer).collect();
        let record = PeerRecord { peer: keypair.peer_id(), seq: unix_ms, addrs };
        let signature = keypair.sign(SigningDomain::PEER_RECORD, &record.encode()?);
        Ok(Self { record, signature })
    }

    /// Checks `signature` over `record` and returns the signed record.
    pub fn verify(record: PeerRecord, signature: Signature) -> Result<Self, RecordError> {
        let encoded = record.encode()?;
        record
            .peer
            .verify(SigningDomain::PEER_RECORD, &encoded, &signature)
            .map_err(|_| RecordError::BadSignature)?;
        Ok(Self { record, signature })
    }

    /// The record.
    pub fn record(&self) -> &PeerRecord {
        &self.record
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Wire form: the record's encoding followed by the 64-byte signature.
    pub fn encode(&self) -> Vec<u8> {
        // Invariant: a SignedPeerRecord was built from a record that encoded successfully.
        let mut out = self.record.encode().expect("signed records are within limits");
        out.extend_from_slice(&self.signature.0);
        out
    }

    /// Decodes and verifies the wire form; the input must contain exactly one record.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let (record, rest) = PeerRecord::decode(bytes)?;
        let signature: [u8; 64] = rest.try_into().map_err(|_| RecordError::Malformed)?;
        Self::verify(record, Signature(signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addrs() -> Vec<Addr> {
        vec!["tcp://127.0.0.1:4001".parse().unwrap(), "tcp://[::1]:4001".parse().unwrap()]
    }

    #[test]
    fn sign_encode_decode_verify() {
        let key = Keypair::generate();
        let signed = SignedPeerRecord::sign(&key, addrs(), 1_700_000_000_000).unwrap();
        let decoded = SignedPeerRecord::decode(&signed.encode()).unwrap();
        assert_eq!(decoded, signed);
        assert_eq!(decoded.record().peer, key.peer_id());
        assert_eq!(decoded.record().seq, 1_700_000_000_000);
    }

    #[test]
    fn tampering_is_detected() {
        let key = Keypair::generate();
        let signed = SignedPeerRecord::sign(&key, addrs(), 5).unwrap();
        let mut bytes = signed.encode();
        bytes[33] ^= 1; // the sequence number
        assert_eq!(SignedPeerRecord::decode(&bytes), Err(RecordError::BadSignature));
        let mut other = signed.record().clone();
        other.peer = Keypair::generate().peer_id();
        assert_eq!(
            SignedPeerRecord::verify(other, *signed.signature()),
            Err(RecordError::BadSignature)
        );
    }

    #[test]
    fn limits_are_enforced() {
        let key = Keypair::generate();
        let many = vec![addrs()[0].clone(); MAX_RECORD_ADDRS + 1];
        assert_eq!(SignedPeerRecord::sign(&key, many, 1), Err(RecordError::TooLarge));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = SignedPeerRecord::decode(&bytes);
        }
    }
}
