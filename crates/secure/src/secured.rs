//! One entry point per direction for both securities: a listener tells Noise and TLS apart by
//! the first bytes; a dialler uses the security it was configured with.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use sinew_transport::{HandshakeError, NoiseSuite};
use sinew_types::PeerId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::handshake::{HandshakeInfo, NoiseIdentity};
use crate::preamble::{Detected, Rewind, detect};
use crate::stream::NoiseStream;
use crate::tls::{TlsIdentity, TlsStream, upgrade_inbound_tls, upgrade_outbound_tls};
use crate::upgrade::{DIALLER_MESSAGE_TIMEOUT, upgrade_inbound_noise, upgrade_outbound};

/// The identities a transport authenticates with: Noise always, TLS when configured. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Identities {
    /// The Noise identity (per-process X25519 static key and the signed binding).
    pub noise: Arc<NoiseIdentity>,
    /// The TLS identity (the per-process certificate). Without it a listener refuses TLS
    /// (`TlsNotAccepted`) and a dialler cannot use TLS.
    pub tls: Option<Arc<TlsIdentity>>,
}

impl Identities {
    /// Noise only.
    pub fn noise(noise: Arc<NoiseIdentity>) -> Self {
        Self { noise, tls: None }
    }
}

/// The security a dialler asks for (a listener accepts both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialSecurity {
    /// Noise XX with this suite (after the preamble).
    Noise(NoiseSuite),
    /// TLS 1.3.
    Tls,
}

impl Default for DialSecurity {
    /// Noise with the suite that is fastest on this CPU.
    fn default() -> Self {
        Self::Noise(crate::NoiseConfig::preferred_suite())
    }
}

/// A secured byte stream, Noise or TLS: tokio `AsyncRead + AsyncWrite`. Like [`NoiseStream`],
/// writes may be buffered until `poll_flush`.
#[derive(Debug)]
pub enum SecuredStream<S> {
    /// Noise transport messages.
    Noise(NoiseStream<S>),
    /// TLS records, as the client.
    TlsClient(TlsStream<S>),
    /// TLS records, as the server (the first byte was replayed from detection).
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
        DialSecurity::Noise(suite) => {
            let (stream, info) =
                upgrade_outbound(io, &identities.noise, suite, expected, timeout).await?;
            Ok((SecuredStream::Noise(stream), info))
        }
        DialSecurity::Tls => {
            let tls = identities.tls.as_deref().ok_or(HandshakeError::TlsNotAccepted)?;
            let (stream, info) = upgrade_outbound_tls(io, tls, expected, timeout).await?;
            Ok((SecuredStream::TlsClient(stream), info))
        }
    }
}

/// Listens: reads the first bytes ([`detect`]) and continues with Noise (a preamble) or TLS (a
/// ClientHello; `TlsNotAccepted` without a TLS identity). Bounded by `timeout`, the first bytes
/// by [`DIALLER_MESSAGE_TIMEOUT`]; on any error `io` is dropped.
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
        Detected::Noise(_) => {
            let (stream, info) = upgrade_inbound_noise(rewound, &identities.noise, left).await?;
            Ok((SecuredStream::Noise(stream), info))
        }
        Detected::Tls => {
            let tls = identities.tls.as_deref().ok_or(HandshakeError::TlsNotAccepted)?;
            let (stream, info) = upgrade_inbound_tls(rewound, tls, left).await?;
            Ok((SecuredStream::TlsServer(stream), info))
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $body:expr) => {
        match $self.get_mut() {
            SecuredStream::Noise($s) => $body,
            SecuredStream::TlsClient($s) => $body,
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
            Self::Noise(s) => s.is_write_vectored(),
            Self::TlsClient(s) => s.is_write_vectored(),
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
