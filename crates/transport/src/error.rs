//! Transport errors, split by operation.

use std::io;

use sinew_types::{PeerId, Scheme};

/// Why a security handshake failed. Shared by Noise and TLS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The socket failed or closed during the handshake.
    #[error("I/O during handshake: {0}")]
    Io(#[from] io::Error),
    /// The handshake did not finish within the handshake timeout.
    #[error("handshake timed out")]
    Timeout,
    /// The first bytes are neither sinew's preamble nor a TLS ClientHello.
    #[error("not a sinew connection (unknown preamble)")]
    NotSinew,
    /// The preamble names a protocol version we do not speak.
    #[error("unknown preamble version {0}")]
    UnknownVersion(u8),
    /// The preamble names a Noise suite we do not know.
    #[error("unknown Noise suite id {0}")]
    UnknownSuite(u8),
    /// The remote started a TLS handshake and this listener has no TLS configured.
    #[error("the remote speaks TLS, which this endpoint does not accept")]
    TlsNotAccepted,
    /// The handshake payload (identity key and signature) is malformed.
    #[error("malformed handshake payload: {0}")]
    MalformedPayload(&'static str),
    /// The identity signature over the session key does not verify.
    #[error("identity signature does not verify")]
    BadSignature,
    /// The remote proved an identity other than the one expected.
    #[error("expected peer {expected}, remote proved {actual}")]
    UnexpectedPeer {
        /// The peer id the dialler asked for.
        expected: PeerId,
        /// The peer id the remote proved.
        actual: PeerId,
    },
    /// The remote proved our own identity (we dialled ourselves).
    #[error("connected to ourselves")]
    SelfConnection,
    /// A handshake message failed to decrypt or was out of order (tampering, or not Noise).
    #[error("handshake message rejected by the Noise state machine")]
    Protocol,
    /// A handshake message is larger than the protocol allows.
    #[error("handshake message too large ({0} bytes)")]
    MessageTooLarge(usize),
    /// The listener refused the connection before the handshake, for a limit (its advisory,
    /// unauthenticated refusal record).
    #[error("{0}")]
    Refused(crate::Refused),
}

/// Why listening failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// No transport handles this scheme.
    #[error("no transport for scheme {0:?}")]
    UnsupportedScheme(Scheme),
    /// The host name did not resolve.
    #[error("could not resolve listen address: {0}")]
    Resolve(io::Error),
    /// Binding the socket failed.
    #[error("bind failed: {0}")]
    Bind(io::Error),
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// No transport handles this scheme.
    #[error("no transport for scheme {0:?}")]
    UnsupportedScheme(Scheme),
    /// The host name did not resolve, or resolved to nothing.
    #[error("could not resolve {host}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// Why.
        source: io::Error,
    },
    /// The connection attempt failed (refused, unreachable, ...).
    #[error("connect failed: {0}")]
    Connect(io::Error),
    /// Connecting did not finish within the dial timeout.
    #[error("dial timed out")]
    Timeout,
    /// The security handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
}

/// Why an inbound connection's upgrade failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The security handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
}

/// Why opening a stream failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The connection is closed.
    #[error("connection closed")]
    ConnectionClosed,
    /// The muxer refused the stream.
    #[error("stream I/O: {0}")]
    Io(#[from] io::Error),
}
