//! Thin async drivers: run the sans-IO handshake over a tokio stream, bounded by a timeout.

use std::time::Duration;

use sinew_transport::{HandshakeError, NoiseSuite};
use sinew_types::PeerId;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::handshake::{HandshakeStep, NoiseHandshake, NoiseIdentity, message_len};
use crate::preamble::{Detected, Preamble, Rewind, detect};
use crate::stream::NoiseStream;
use crate::{DIALLER_MESSAGE_TIMEOUT, HandshakeInfo};

/// Dials: sends the preamble and runs Noise XX as the initiator over `io`, checking the
/// responder's identity against `expected` (if set) before message 3 is written.
///
/// The whole handshake is bounded by `timeout` (`HandshakeError::Timeout`). On any error `io` is
/// dropped, which closes a socket; on an identity mismatch message 3 is never sent.
pub async fn upgrade_outbound<S>(
    io: S,
    identity: &NoiseIdentity,
    suite: NoiseSuite,
    expected: Option<PeerId>,
    timeout: Duration,
) -> Result<(NoiseStream<S>, HandshakeInfo), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let handshake = NoiseHandshake::initiator(identity, suite, expected);
    with_timeout(timeout, run(io, handshake, true, None)).await
}

/// Listens: reads the first bytes ([`detect`]), refuses TLS (`TlsNotAccepted`: no TLS here yet)
/// and anything that is not a valid preamble, then runs Noise XX as the responder.
///
/// The whole handshake, detection included, is bounded by `timeout`, and the preamble, then
/// each of the dialler's messages, by [`DIALLER_MESSAGE_TIMEOUT`] (an honest dialler sends each at
/// once, the preamble with message 1 and message 3 as soon as message 2 arrives): a socket that
/// trickles them cannot hold a pending-handshake slot for long. On any error `io` is dropped.
pub async fn upgrade_inbound<S>(
    io: S,
    identity: &NoiseIdentity,
    timeout: Duration,
) -> Result<(NoiseStream<S>, HandshakeInfo), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    with_timeout(timeout, async {
        let first = DIALLER_MESSAGE_TIMEOUT.min(timeout);
        let detected = tokio::time::timeout(first, detect(io)).await;
        match detected.map_err(|_| HandshakeError::Timeout)?? {
            (Detected::Tls, _) => Err(HandshakeError::TlsNotAccepted),
            (Detected::Noise(_), rewind) => respond(rewind, identity, Some(first)).await,
        }
    })
    .await
}

/// The most a handshake read reserves ahead of the bytes that arrived.
const HANDSHAKE_READ: usize = 512;

/// Continues an inbound connection after the caller's own [`detect`] found
/// [`Detected::Noise`]: takes the preamble from `rewound`'s replay bytes and runs Noise XX as the
/// responder, bounded by `timeout`. A listener that also accepts TLS dispatches on [`detect`]'s
/// answer and calls this for Noise.
pub async fn upgrade_inbound_noise<S>(
    rewound: Rewind<S>,
    identity: &NoiseIdentity,
    timeout: Duration,
) -> Result<(NoiseStream<S>, HandshakeInfo), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    with_timeout(timeout, respond(rewound, identity, Some(DIALLER_MESSAGE_TIMEOUT.min(timeout))))
        .await
}

async fn respond<S>(
    rewound: Rewind<S>,
    identity: &NoiseIdentity,
    each_message: Option<Duration>,
) -> Result<(NoiseStream<S>, HandshakeInfo), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (io, prefix) = rewound.into_parts();
    // detect() leaves exactly the 8 preamble bytes for Noise; anything else is a caller error.
    let bytes: [u8; crate::PREAMBLE_LEN] =
        prefix[..].try_into().map_err(|_| HandshakeError::NotSinew)?;
    let preamble = Preamble::parse(bytes)?;
    run(io, NoiseHandshake::responder(identity, preamble), false, each_message).await
}

async fn with_timeout<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, HandshakeError>>,
) -> Result<T, HandshakeError> {
    tokio::time::timeout(timeout, fut).await.unwrap_or(Err(HandshakeError::Timeout))
}

/// Drives `handshake` to the end over `io`. The initiator's preamble goes out with message 1.
async fn run<S>(
    mut io: S,
    mut handshake: NoiseHandshake,
    send_preamble: bool,
    each_read_within: Option<Duration>,
) -> Result<(NoiseStream<S>, HandshakeInfo), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut out = Vec::with_capacity(256);
    if send_preamble {
        out.extend_from_slice(handshake.preamble().as_bytes());
    }
    let mut message = Vec::new();
    // A dialler's first read may be a listener's refusal record instead of message 2.
    let mut refusal_possible = send_preamble;
    loop {
        match handshake.step() {
            HandshakeStep::Write => {
                handshake.write_message(&mut out)?;
                io.write_all(&out).await?;
                io.flush().await?;
                out.clear();
            }
            HandshakeStep::Read => {
                let read =
                    read_message(&mut io, &mut message, std::mem::take(&mut refusal_possible));
                match each_read_within {
                    Some(within) => tokio::time::timeout(within, read)
                        .await
                        .map_err(|_| HandshakeError::Timeout)??,
                    None => read.await?,
                }
                handshake.read_message(&message)?;
            }
            HandshakeStep::Finished => break,
            // Unreachable: every failing call above returns its error first.
            HandshakeStep::Failed => return Err(HandshakeError::Protocol),
        }
    }
    let (transport, info) = handshake.finish()?;
    Ok((NoiseStream::new(io, transport), info))
}

/// Reads one framed handshake message into `buf`. The buffer grows with the bytes that arrive,
/// never with the claimed length alone.
async fn read_message<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    refusal_possible: bool,
) -> Result<(), HandshakeError> {
    let mut prefix = [0u8; 2];
    io.read_exact(&mut prefix).await?;
    if refusal_possible && prefix == [0, 0] {
        let mut record = [0u8; crate::REFUSAL_LEN];
        io.read_exact(&mut record[2..]).await?;
        return Err(crate::decode_refusal(&record)
            .map_or(HandshakeError::Protocol, HandshakeError::Refused));
    }
    let len = message_len(prefix)?;
    buf.clear();
    // Room for a usual handshake message (our size, at most 512 bytes, not the claim), so it
    // is read in one call rather than in small growing steps.
    buf.reserve(len.min(HANDSHAKE_READ));
    let read = (&mut *io).take(len as u64).read_to_end(buf).await?;
    if read < len {
        return Err(HandshakeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}
