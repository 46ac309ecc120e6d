//! What both securities share: the result of a handshake ([`HandshakeInfo`]), and one entry
//! point per direction ([`upgrade_outbound_any`], [`upgrade_inbound_any`]). A listener tells
//! Noise and TLS apart by the first bytes; a dialler uses the security it was configured with.
//! Each works with the securities this crate was built with, and refuses the others with
//! `NoiseNotAccepted` or `TlsNotAccepted`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use sinew_transport::{HandshakeError, NoiseSuite, Security};
use sinew_types::PeerId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[cfg(feature = "noise")]
use crate::handshake::NoiseIdentity;
#[cfg(feature = "tls")]
use crate::preamble::Rewind;
use crate::preamble::{Detected, detect};
#[cfg(feature = "noise")]
use crate::stream::NoiseStream;
#[cfg(feature = "tls")]
use crate::tls::{TlsIdentity, TlsStream, upgrade_inbound_tls, upgrade_outbound_tls};
#[cfg(feature = "noise")]
use crate::upgrade::{upgrade_inbound_noise, upgrade_outbound};

/// How long a listener waits for each of the dialler's messages: the preamble, Noise message 1,
/// and message 3 from when message 2 was sent (2 s: a round trip and the dialler's checks).
pub const DIALLER_MESSAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a finished handshake established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeInfo {
    /// The identity the remote proved.
    pub peer: PeerId,
    /// The remote process's boot nonce.
    pub boot_nonce: u64,
    /// A value identical on both sides and known to nobody else: the Noise handshake hash, or
    /// 32 bytes of the TLS exporter.
    pub session_tag: [u8; 32],
    /// The security protocol (and for Noise the suite) the handshake used.
    pub security: Security,
}

/// The identities a transport authenticates with, one per security it runs. Cheap to clone.
///
/// Each field exists when its feature is on; a security without an identity is refused
/// (`NoiseNotAccepted`, `TlsNotAccepted`) by a listener and cannot be dialled. Build it with
/// `Identities::noise`, `Identities::tls` or `Identities::default()` and the `with_` methods,
/// which compile the same whichever features other crates turn on.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    /// The Noise identity (per-process X25519 static key and the signed binding).
    #[cfg(feature = "noise")]
    pub noise: Option<Arc<NoiseIdentity>>,
    /// The TLS identity (the per-process certificate).
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<TlsIdentity>>,
}

impl Identities {
    /// Noise only.
    #[cfg(feature = "noise")]
    pub fn noise(noise: Arc<NoiseIdentity>) -> Self {
        Self::default().with_noise(noise)
    }

    /// TLS only.
    #[cfg(feature = "tls")]
    pub fn tls(tls: Arc<TlsIdentity>) -> Self {
        Self::default().with_tls(tls)
    }

    /// These identities, authenticating with Noise as `noise`.
    #[cfg(feature = "noise")]
    #[must_use]
    pub fn with_noise(mut self, noise: Arc<NoiseIdentity>) -> Self {
        self.noise = Some(noise);
        self
    }

    /// These identities, authenticating with TLS as `tls`.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn with_tls(mut self, tls: Arc<TlsIdentity>) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// The security a dialler asks for (a listener accepts both). Both variants exist whatever the
/// features; dialling with one this crate was built without fails (`NoiseNotAccepted`,
/// `TlsNotAccepted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialSecurity {
    /// Noise XX with this suite (after the preamble).
    Noise(NoiseSuite),
    /// TLS 1.3.
    Tls,
}

impl Default for DialSecurity {
    /// Noise with the suite that is fastest on this CPU; TLS when built without Noise.
    fn default() -> Self {
        if cfg!(feature = "noise") {
            Self::Noise(crate::NoiseConfig::preferred_suite())
        } else {
            Self::Tls
        }
    }
}

/// A secured byte stream, Noise or TLS: tokio `AsyncRead + AsyncWrite`. Like `NoiseStream`,
/// writes may be buffered until `poll_flush`.
#[derive(Debug)]
pub enum SecuredStream<S> {
    /// Noise transport messages.
    #[cfg(feature = "noise")]
    Noise(NoiseStream<S>),
    /// TLS records, as the client.
    #[cfg(feature = "tls")]
    TlsClient(TlsStream<S>),
    /// TLS records, as the server (the first byte was replayed from detection).
    #[cfg(feature = "tls")]
    TlsServer(TlsStream<Rewind<S>>),
}

/// Dials with `security` over `io`, checking the remote against `expected` (if set) before our
/// side finishes the handshake. Bounded by `timeout`; on any error `io` is dropped.
pub async fn upgrade_outbound_any<S>(
    io: S,
    identities: &Identities,
    security: DialSecurity,
    expected: Option<PeerId>,
    timeout: Duration,
) -> Result<(SecuredStream<S>, HandshakeInfo), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    match security {
        #[cfg(feature = "noise")]
        DialSecurity::Noise(suite) => {
            let noise = identities.noise.as_deref().ok_or(HandshakeError::NoiseNotAccepted)?;
            let (stream, info) = upgrade_outbound(io, noise, suite, expected, timeout).await?;
            Ok((SecuredStream::Noise(stream), info))
        }
        #[cfg(not(feature = "noise"))]
        DialSecurity::Noise(_) => Err(HandshakeError::NoiseNotAccepted),
        #[cfg(feature = "tls")]
        DialSecurity::Tls => {
            let tls = identities.tls.as_deref().ok_or(HandshakeError::TlsNotAccepted)?;
            let (stream, info) = upgrade_outbound_tls(io, tls, expected, timeout).await?;
            Ok((SecuredStream::TlsClient(stream), info))
        }
        #[cfg(not(feature = "tls"))]
        DialSecurity::Tls => Err(HandshakeError::TlsNotAccepted),
    }
}

/// Listens: reads the first bytes ([`detect`]) and continues with Noise (a preamble;
/// `NoiseNotAccepted` without a Noise identity) or TLS (a ClientHello; `TlsNotAccepted` without
/// a TLS identity). Bounded by `timeout`, the first bytes by [`DIALLER_MESSAGE_TIMEOUT`]; on any
/// error `io` is dropped.
pub async fn upgrade_inbound_any<S>(
    io: S,
    identities: &Identities,
    timeout: Duration,
) -> Result<(SecuredStream<S>, HandshakeInfo), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = tokio::time::Instant::now();
    let first = DIALLER_MESSAGE_TIMEOUT.min(timeout);
    let (detected, rewound) =
        tokio::time::timeout(first, detect(io)).await.map_err(|_| HandshakeError::Timeout)??;
    let left = timeout.saturating_sub(started.elapsed());
    match detected {
        #[cfg(feature = "noise")]
        Detected::Noise(_) => {
            let noise = identities.noise.as_deref().ok_or(HandshakeError::NoiseNotAccepted)?;
            let (stream, info) = upgrade_inbound_noise(rewound, noise, left).await?;
            Ok((SecuredStream::Noise(stream), info))
        }
        #[cfg(not(feature = "noise"))]
        Detected::Noise(_) => Err(HandshakeError::NoiseNotAccepted),
        #[cfg(feature = "tls")]
        Detected::Tls => {
            let tls = identities.tls.as_deref().ok_or(HandshakeError::TlsNotAccepted)?;
            let (stream, info) = upgrade_inbound_tls(rewound, tls, left).await?;
            Ok((SecuredStream::TlsServer(stream), info))
        }
        #[cfg(not(feature = "tls"))]
        Detected::Tls => Err(HandshakeError::TlsNotAccepted),
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $body:expr) => {
        match $self.get_mut() {
            #[cfg(feature = "noise")]
            SecuredStream::Noise($s) => $body,
            #[cfg(feature = "tls")]
            SecuredStream::TlsClient($s) => $body,
            #[cfg(feature = "tls")]
            SecuredStream::TlsServer($s) => $body,
        }
    };
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for SecuredStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for SecuredStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            #[cfg(feature = "noise")]
            Self::Noise(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Self::TlsClient(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Self::TlsServer(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use sinew_transport::NoiseSuite;
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);
    const PREAMBLE: &[u8] = b"SINEW\x01\x02\x00";
    const CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0xf8];

    async fn inbound_error(identities: &Identities, first: &[u8]) -> HandshakeError {
        let (mut a, b) = tokio::io::duplex(1024);
        a.write_all(first).await.unwrap();
        let result = upgrade_inbound_any(b, identities, TIMEOUT).await;
        drop(a);
        result.map(|_| ()).unwrap_err()
    }

    async fn outbound_error(identities: &Identities, security: DialSecurity) -> HandshakeError {
        let (a, _b) = tokio::io::duplex(1024);
        let result = upgrade_outbound_any(a, identities, security, None, TIMEOUT).await;
        result.map(|_| ()).unwrap_err()
    }

    /// A security without an identity (or built without its feature) is refused with its own
    /// error, on both sides, before anything else is read or written.
    #[tokio::test]
    async fn securities_without_identities_are_refused() {
        let none = Identities::default();
        assert!(matches!(inbound_error(&none, PREAMBLE).await, HandshakeError::NoiseNotAccepted));
        assert!(matches!(inbound_error(&none, CLIENT_HELLO).await, HandshakeError::TlsNotAccepted));
        let noise = DialSecurity::Noise(NoiseSuite::AesGcm);
        assert!(matches!(outbound_error(&none, noise).await, HandshakeError::NoiseNotAccepted));
        let tls = DialSecurity::Tls;
        assert!(matches!(outbound_error(&none, tls).await, HandshakeError::TlsNotAccepted));
    }

    /// Built with TLS alone, a listener with its TLS identity refuses a Noise preamble, and a
    /// dialler dials TLS by default.
    #[cfg(all(feature = "tls", not(feature = "noise")))]
    #[tokio::test]
    async fn tls_alone_refuses_noise() {
        let key = sinew_types::Keypair::generate();
        let identities = Identities::tls(Arc::new(TlsIdentity::new(&key, 1).unwrap()));
        assert!(matches!(
            inbound_error(&identities, PREAMBLE).await,
            HandshakeError::NoiseNotAccepted
        ));
        assert_eq!(DialSecurity::default(), DialSecurity::Tls);
    }

    /// Built with Noise alone, a listener with its Noise identity refuses a ClientHello.
    #[cfg(all(feature = "noise", not(feature = "tls")))]
    #[tokio::test]
    async fn noise_alone_refuses_tls() {
        let key = sinew_types::Keypair::generate();
        let identities = Identities::noise(Arc::new(NoiseIdentity::new(&key, 1)));
        assert!(matches!(
            inbound_error(&identities, CLIENT_HELLO).await,
            HandshakeError::TlsNotAccepted
        ));
    }
}
