//! The 8-byte preamble, and telling it apart from a TLS ClientHello.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes};
use sinew_transport::{HandshakeError, NoiseSuite};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

/// The preamble's length in bytes.
pub const PREAMBLE_LEN: usize = 8;
/// The preamble's first five bytes: `"SINEW"`.
pub const MAGIC: [u8; 5] = *b"SINEW";
/// The preamble version this crate speaks.
pub const PREAMBLE_VERSION: u8 = 1;
/// The first byte of a TLS handshake record (a ClientHello starts with it).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What the first bytes of an inbound connection announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// sinew's preamble, asking for Noise with this suite.
    Noise(NoiseSuite),
    /// A TLS handshake record (a ClientHello).
    Tls,
}

/// A valid preamble: the exact 8 bytes sent or received, which are also the Noise prologue.
///
/// The bytes are kept as they came (including the flags byte, which is otherwise ignored), so a
/// preamble changed in transit gives the two sides different prologues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    bytes: [u8; PREAMBLE_LEN],
    suite: NoiseSuite,
}

impl Preamble {
    /// The preamble a dialer sends for `suite` (flags 0).
    pub fn new(suite: NoiseSuite) -> Self {
        let mut bytes = [0u8; PREAMBLE_LEN];
        bytes[..5].copy_from_slice(&MAGIC);
        bytes[5] = PREAMBLE_VERSION;
        bytes[6] = suite.id();
        Self { bytes, suite }
    }

    /// Parses received bytes: `NotSinew` for a wrong magic, `UnknownVersion` for a version other
    /// than [`PREAMBLE_VERSION`], `UnknownSuite` for an unknown suite id. Flags are not checked.
    pub fn parse(bytes: [u8; PREAMBLE_LEN]) -> Result<Self, HandshakeError> {
        if bytes[..5] != MAGIC {
            return Err(HandshakeError::NotSinew);
        }
        if bytes[5] != PREAMBLE_VERSION {
            return Err(HandshakeError::UnknownVersion(bytes[5]));
        }
        let suite = NoiseSuite::from_id(bytes[6]).ok_or(HandshakeError::UnknownSuite(bytes[6]))?;
        Ok(Self { bytes, suite })
    }

    /// The Noise suite asked for.
    pub fn suite(&self) -> NoiseSuite {
        self.suite
    }

    /// The flags byte (reserved; ignored by this version).
    pub fn flags(&self) -> u8 {
        self.bytes[7]
    }

    /// The 8 bytes, as sent or received.
    pub fn as_bytes(&self) -> &[u8; PREAMBLE_LEN] {
        &self.bytes
    }
}

/// Sans-IO detection on the first bytes of an inbound connection.
///
/// `Ok(None)` means more bytes are needed (at most [`PREAMBLE_LEN`] are ever looked at). A first
/// byte of [`TLS_HANDSHAKE_RECORD`] is [`Detected::Tls`]; otherwise the bytes must be a valid
/// [`Preamble`] (see [`Preamble::parse`] for the errors). A first byte that cannot start a
/// preamble is refused at once.
pub fn detect_prefix(bytes: &[u8]) -> Result<Option<Detected>, HandshakeError> {
    match bytes.first() {
        None => Ok(None),
        Some(&TLS_HANDSHAKE_RECORD) => Ok(Some(Detected::Tls)),
        Some(_) if bytes.len() < PREAMBLE_LEN => {
            // Refuse as soon as the magic cannot match.
            let seen = bytes.len().min(MAGIC.len());
            if bytes[..seen] != MAGIC[..seen] { Err(HandshakeError::NotSinew) } else { Ok(None) }
        }
        Some(_) => {
            let mut preamble = [0u8; PREAMBLE_LEN];
            preamble.copy_from_slice(&bytes[..PREAMBLE_LEN]);
            Preamble::parse(preamble).map(|p| Some(Detected::Noise(p.suite())))
        }
    }
}

/// Reads the first bytes of an inbound connection and says what they announce.
///
/// It reads one byte, and the other seven of a preamble only if the first can start one. The
/// bytes read are not lost: the returned [`Rewind`] replays them, so a TLS acceptor (or
/// [`upgrade_inbound_noise`](crate::upgrade_inbound_noise)) can take over the stream. There is
/// no timeout here; the caller bounds it (as [`upgrade_inbound`](crate::upgrade_inbound) does).
pub async fn detect<S: AsyncRead + Unpin>(
    mut io: S,
) -> Result<(Detected, Rewind<S>), HandshakeError> {
    let mut buf = [0u8; PREAMBLE_LEN];
    let mut filled = 0;
    loop {
        if let Some(detected) = detect_prefix(&buf[..filled])? {
            let len = match detected {
                Detected::Tls => 1,
                Detected::Noise(_) => PREAMBLE_LEN,
            };
            return Ok((detected, Rewind::new(io, Bytes::copy_from_slice(&buf[..len]))));
        }
        // One byte first (TLS is decided by it), then the rest of the preamble.
        let want = if filled == 0 { 1 } else { PREAMBLE_LEN };
        io.read_exact(&mut buf[filled..want]).await?;
        filled = want;
    }
}

/// A stream that first replays bytes already read from it (by [`detect`]), then reads on.
/// Writes go straight to the inner stream.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Bytes,
    io: S,
}

impl<S> Rewind<S> {
    /// Wraps `io`, replaying `prefix` before anything else is read.
    pub fn new(io: S, prefix: Bytes) -> Self {
        Self { prefix, io }
    }

    /// The bytes still to be replayed.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The inner stream, mutably. Reading from it directly skips the replayed bytes.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// The inner stream and the bytes not replayed yet.
    pub fn into_parts(self) -> (S, Bytes) {
        (self.io, self.prefix)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() && buf.remaining() > 0 {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[test]
    fn encode_is_byte_exact() {
        assert_eq!(Preamble::new(NoiseSuite::ChaChaPoly).as_bytes(), b"SINEW\x01\x01\x00");
        assert_eq!(Preamble::new(NoiseSuite::AesGcm).as_bytes(), b"SINEW\x01\x02\x00");
    }

    #[test]
    fn parse_round_trips_and_keeps_flags() {
        for suite in [NoiseSuite::ChaChaPoly, NoiseSuite::AesGcm] {
            let p = Preamble::new(suite);
            assert_eq!(Preamble::parse(*p.as_bytes()).unwrap(), p);
        }
        let p = Preamble::parse(*b"SINEW\x01\x02\xff").unwrap();
        assert_eq!(p.flags(), 0xff);
        assert_eq!(p.suite(), NoiseSuite::AesGcm);
        assert_eq!(p.as_bytes(), b"SINEW\x01\x02\xff");
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(Preamble::parse(*b"SINEX\x01\x01\x00"), Err(HandshakeError::NotSinew)));
        assert!(matches!(
            Preamble::parse(*b"SINEW\x02\x01\x00"),
            Err(HandshakeError::UnknownVersion(2))
        ));
        assert!(matches!(
            Preamble::parse(*b"SINEW\x01\x09\x00"),
            Err(HandshakeError::UnknownSuite(9))
        ));
        assert!(matches!(
            Preamble::parse(*b"SINEW\x01\x00\x00"),
            Err(HandshakeError::UnknownSuite(0))
        ));
    }

    #[test]
    fn detect_prefix_needs_and_refuses() {
        assert_eq!(detect_prefix(b"").unwrap(), None);
        assert_eq!(detect_prefix(b"SIN").unwrap(), None);
        assert_eq!(detect_prefix(b"SINEW\x01\x01").unwrap(), None);
        assert_eq!(detect_prefix(&[0x16]).unwrap(), Some(Detected::Tls));
        assert_eq!(
            detect_prefix(b"SINEW\x01\x01\x00extra").unwrap(),
            Some(Detected::Noise(NoiseSuite::ChaChaPoly))
        );
        assert!(matches!(detect_prefix(b"G"), Err(HandshakeError::NotSinew)));
        assert!(matches!(detect_prefix(b"SIX"), Err(HandshakeError::NotSinew)));
    }

    #[tokio::test]
    async fn detect_tls_replays_what_it_read() {
        let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
        let (mut a, b) = tokio::io::duplex(1024);
        a.write_all(&hello).await.unwrap();
        drop(a);
        let (detected, mut rewind) = detect(b).await.unwrap();
        assert_eq!(detected, Detected::Tls);
        assert_eq!(rewind.prefix(), &[0x16]);
        let mut replayed = Vec::new();
        rewind.read_to_end(&mut replayed).await.unwrap();
        assert_eq!(replayed, hello);
    }

    #[tokio::test]
    async fn detect_noise_keeps_the_preamble() {
        let (mut a, b) = tokio::io::duplex(1024);
        a.write_all(b"SINEW\x01\x02\x07rest").await.unwrap();
        drop(a);
        let (detected, rewind) = detect(b).await.unwrap();
        assert_eq!(detected, Detected::Noise(NoiseSuite::AesGcm));
        let (mut io, prefix) = rewind.into_parts();
        assert_eq!(&prefix[..], b"SINEW\x01\x02\x07");
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"rest");
    }

    #[tokio::test]
    async fn detect_garbage_reads_one_byte() {
        let (mut a, b) = tokio::io::duplex(1024);
        // Only one byte is available: detection must decide without waiting for more.
        a.write_all(b"G").await.unwrap();
        assert!(matches!(detect(b).await, Err(HandshakeError::NotSinew)));
    }
}
