//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use sinew_secure::{HandshakeStep, NoiseHandshake, NoiseIdentity, NoiseTransport, message_len};
use sinew_transport::NoiseSuite;
use sinew_types::Keypair;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// The handshake timeout for tests that expect success.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits for an event before failing.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) const SUITES: [NoiseSuite; 2] = [NoiseSuite::ChaChaPoly, NoiseSuite::AesGcm];

/// A deterministic identity.
pub(crate) fn identity(seed: u8, boot_nonce: u64) -> (Keypair, NoiseIdentity) {
    let key = Keypair::from_secret_bytes([seed; 32]);
    let identity = NoiseIdentity::new(&key, boot_nonce);
    (key, identity)
}

/// Two ends of a loopback TCP connection.
pub(crate) async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (dialed.unwrap(), accepted.unwrap().0)
}

/// The transport ciphers of an in-memory handshake: (initiator's, responder's).
pub(crate) fn transport_pair(suite: NoiseSuite) -> (NoiseTransport, NoiseTransport) {
    let (_, a) = identity(1, 1);
    let (_, b) = identity(2, 2);
    let mut i = NoiseHandshake::initiator(&a, suite, None);
    let mut r = NoiseHandshake::responder(&b, i.preamble());
    while i.step() != HandshakeStep::Finished || r.step() != HandshakeStep::Finished {
        let (from, to) =
            if i.step() == HandshakeStep::Write { (&mut i, &mut r) } else { (&mut r, &mut i) };
        let mut frame = Vec::new();
        from.write_message(&mut frame).unwrap();
        to.read_message(&frame[2..]).unwrap();
    }
    (i.finish().unwrap().0, r.finish().unwrap().0)
}

/// Reads one framed Noise message (u16 big-endian length + body) by hand.
pub(crate) async fn read_frame<S: AsyncRead + Unpin>(io: &mut S) -> std::io::Result<Vec<u8>> {
    let mut prefix = [0u8; 2];
    io.read_exact(&mut prefix).await?;
    let len = message_len(prefix).map_err(|_| std::io::ErrorKind::InvalidData)?;
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

/// Encrypts `plaintext` with `transport` and frames it by hand.
pub(crate) fn frame(transport: &mut NoiseTransport, plaintext: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 2 + plaintext.len() + 16];
    let n = transport.encrypt(plaintext, &mut out[2..]).unwrap();
    out[..2].copy_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
    out
}

/// Copies `from` to `to`, XOR-ing the byte at stream offset `flip.0` with `flip.1`; shuts `to`
/// down at the end of `from`.
pub(crate) async fn pump<R, W>(mut from: R, mut to: W, flip: Option<(usize, u8)>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut offset = 0;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((at, mask)) = flip
            && (offset..offset + n).contains(&at)
        {
            buf[at - offset] ^= mask;
        }
        offset += n;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
