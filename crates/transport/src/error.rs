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
    /// The remote started a TLS handshake and this listener has no TLS configured (built
    /// without `sinew-secure`'s `tls` feature, or given no TLS identity); for a dialler, TLS was
    /// asked for and this endpoint has no TLS identity.
    #[error("the remote speaks TLS, which this endpoint does not accept")]
    TlsNotAccepted,
    /// The remote sent sinew's Noise preamble and this listener has no Noise configured (built
    /// without `sinew-secure`'s `noise` feature, or given no Noise identity); for a dialler,
    /// Noise was asked for and this endpoint cannot run it.
    #[error("the remote speaks Noise, which this endpoint does not accept")]
    NoiseNotAccepted,
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
    /// The remote's TLS certificate is not the shape sinew accepts.
    #[error("certificate refused: {0}")]
    Certificate(CertificateError),
    /// The remote offered no TLS version we accept (sinew speaks TLS 1.3 only).
    #[error("the remote does not speak TLS 1.3")]
    TlsVersion,
    /// The remote did not agree on the application protocol (ALPN `sinew/1`).
    #[error("the remote did not agree on ALPN sinew/1")]
    Alpn,
    /// Another TLS failure (an alert from the remote, a malformed message, a failed signature
    /// over the handshake), as rustls reports it.
    #[error("TLS: {0}")]
    Tls(String),
}

/// How a TLS certificate differs from the one shape sinew accepts: one self-signed ECDSA P-256
/// certificate carrying the sinew identity extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The remote sent no certificate, or a chain of more than one.
    #[error("expected exactly one certificate")]
    NotOneCertificate,
    /// The certificate is not valid DER X.509.
    #[error("not a parseable X.509 certificate")]
    Unparseable,
    /// The certificate's key is not ECDSA P-256.
    #[error("the certificate key is not ECDSA P-256")]
    KeyType,
    /// The certificate's own signature (self-signed) does not verify.
    #[error("the certificate's self-signature does not verify")]
    SelfSignature,
    /// The certificate has no sinew identity extension.
    #[error("no sinew identity extension")]
    MissingExtension,
    /// The sinew identity extension is malformed (wrong length, version, or key).
    #[error("malformed sinew identity extension")]
    MalformedExtension,
    /// The certificate carries an unknown critical extension.
    #[error("unknown critical extension")]
    UnknownCriticalExtension,
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
