//! What is known about an established connection.

use std::fmt;

pub use sinew_types::Direction;
use sinew_types::{Addr, PeerId};

use crate::MuxedConnection;

/// A Noise cipher suite; the id is the byte sent in the preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NoiseSuite {
    /// `Noise_XX_25519_ChaChaPoly_BLAKE2s` (preamble id 1).
    ChaChaPoly,
    /// `Noise_XX_25519_AESGCM_SHA256` (preamble id 2).
    AesGcm,
}

impl NoiseSuite {
    /// The suite's id in the preamble.
    pub fn id(self) -> u8 {
        match self {
            Self::ChaChaPoly => 1,
            Self::AesGcm => 2,
        }
    }

    /// The suite for a preamble id.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Self::ChaChaPoly),
            2 => Some(Self::AesGcm),
            _ => None,
        }
    }

    /// The Noise protocol name.
    pub fn noise_name(self) -> &'static str {
        match self {
            Self::ChaChaPoly => "Noise_XX_25519_ChaChaPoly_BLAKE2s",
            Self::AesGcm => "Noise_XX_25519_AESGCM_SHA256",
        }
    }
}

/// The security protocol that authenticated a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Security {
    /// Noise XX with the given suite.
    Noise(NoiseSuite),
    /// TLS 1.3.
    Tls,
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Noise(NoiseSuite::ChaChaPoly) => f.write_str("noise-chachapoly"),
            Self::Noise(NoiseSuite::AesGcm) => f.write_str("noise-aesgcm"),
            Self::Tls => f.write_str("tls13"),
        }
    }
}

/// Facts about an established connection, fixed at the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The identity the remote proved.
    pub peer: PeerId,
    /// Who dialled.
    pub direction: Direction,
    /// Our address on this connection.
    pub local_addr: Addr,
    /// The remote's address: the socket address we see (for outbound, the one dialled).
    pub remote_addr: Addr,
    /// How the connection is secured.
    pub security: Security,
    /// The remote process's boot nonce (random per process start), from the handshake.
    /// A new nonce from a known peer means it restarted.
    pub boot_nonce: u64,
    /// A value both ends compute identically and nobody else knows (the Noise handshake hash),
    /// used to break ties between duplicate connections the same way on both sides.
    pub session_tag: [u8; 32],
}

/// An established, authenticated, multiplexed connection.
pub struct Connection {
    /// Stream multiplexing.
    pub muxer: MuxedConnection,
    /// What the handshake established.
    pub info: ConnectionInfo,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("info", &self.info).finish_non_exhaustive()
    }
}
