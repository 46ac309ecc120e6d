//! The encrypted stream after the handshake: Noise transport messages over a byte stream.

use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

use crate::{LENGTH_PREFIX, MAX_MESSAGE, MAX_PLAINTEXT, NoiseTransport, TAG_LEN};

/// Encrypted bytes are handed to the socket once this many are waiting (and on every flush):
/// four full Noise messages, so each socket write carries many messages.
pub const WRITE_BATCH: usize = 256 * 1024;
/// Reads from the socket ask for up to this many bytes at a time.
pub const READ_CHUNK: usize = 256 * 1024;
/// Below this much free space in the input buffer, it grows by [`READ_CHUNK`] before a read.
const MIN_READ_SPACE: usize = 16 * 1024;
/// A whole framed message at its largest.
const MAX_FRAME: usize = LENGTH_PREFIX + MAX_MESSAGE;
/// A waiting partial message's buffer is shrunk when it holds more than twice the message's
/// arrived bytes plus this much.
const COMPACT_SLACK: usize = 4 * 1024;
/// Pending plaintext at most this long is sealed on its own before a large write.
const SMALL_PENDING: usize = 4 * 1024;

/// The error inside the `io::Error`s a [`NoiseStream`] returns when the data, not the socket,
/// is at fault. Any of them means the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseError {
    /// A message did not authenticate: tampered with, reordered, or not from this session
    /// (kind `InvalidData`).
    #[error("Noise message failed to decrypt")]
    Decrypt,
    /// A message announced length 0 (kind `InvalidData`).
    #[error("Noise message of length 0")]
    ZeroLength,
    /// The stream ended in the middle of a message (kind `UnexpectedEof`).
    #[error("stream ended inside a Noise message")]
    Truncated,
    /// The cipher refused to encrypt (its nonce is exhausted).
    #[error("Noise message failed to encrypt")]
    Encrypt,
}

impl From<NoiseError> for io::Error {
    fn from(e: NoiseError) -> Self {
        let kind = match e {
            NoiseError::Decrypt | NoiseError::ZeroLength => io::ErrorKind::InvalidData,
            NoiseError::Truncated => io::ErrorKind::UnexpectedEof,
            NoiseError::Encrypt => io::ErrorKind::Other,
        };
        Self::new(kind, e)
    }
}

/// An encrypted stream: tokio `AsyncRead + AsyncWrite` over Noise transport messages, each
/// framed as `u16` big-endian length + message.
///
/// - **Writes** are buffered: plaintext is gathered into full messages of
///   [`MAX_PLAINTEXT`](crate::MAX_PLAINTEXT) bytes (encrypted straight from the caller's buffer
///   when it holds whole messages), and the encrypted output goes to the socket in one write
///   when [`WRITE_BATCH`] bytes are waiting, or on `poll_flush`. **Flush** to send what was
///   written; `poll_flush` with nothing buffered only flushes the socket. `poll_shutdown`
///   flushes, then shuts the socket's write half.
/// - **Reads** fetch up to [`READ_CHUNK`] bytes from the socket and decrypt each complete message
///   directly into the caller's buffer when it has room for the whole message, otherwise into an
///   internal buffer that later reads drain.
/// - **Memory.** Buffers are released when empty at idle points: the write buffers by a flush
///   that finds nothing written since the previous flush (a bulk writer flushing after every
///   chunk keeps them, instead of re-allocating and re-zeroing them each time), the read buffers
///   when a read finds nothing buffered and the socket has nothing either. An idle stream holds
///   only the cipher state. A partial message that has arrived stays buffered until the rest
///   comes, in a buffer shrunk to about its size: memory grows with the bytes that arrived,
///   not with the read chunk.
/// - **Errors**: see [`NoiseError`]. After a read error, every later read fails the same way.
pub struct NoiseStream<S> {
    io: S,
    transport: NoiseTransport,
    /// Plaintext written but not yet encrypted; less than one full message.
    pending: Vec<u8>,
    /// Encrypted frames; `out[out_start..out_end]` is not yet written to the socket. Bytes up to
    /// `out.len()` are initialized and reused, so zeroing happens once per allocation.
    out: Vec<u8>,
    out_start: usize,
    out_end: usize,
    /// Whether anything was written since the last flush. A flush after writes keeps the write
    /// buffers (a bulk sender flushes after every yamux frame: re-allocating and re-zeroing
    /// them each time cost 5 % of the CPU); the first flush with nothing new releases them, so
    /// an idle connection holds none.
    wrote_since_flush: bool,
    /// Received bytes not yet decrypted (complete messages first, then at most one partial).
    input: BytesMut,
    /// Decrypted bytes not yet read: `plain[plain_start..plain_end]`; initialized up to
    /// `plain.len()`.
    plain: Vec<u8>,
    plain_start: usize,
    plain_end: usize,
    read_state: ReadState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Open,
    /// The socket reported end of stream.
    Eof,
    /// A message failed; the stream cannot be read any more.
    Failed(NoiseError),
}

impl<S> NoiseStream<S> {
    /// Wraps `io` with the ciphers of a finished handshake. Nothing may have been read from `io`
    /// past the handshake.
    pub fn new(io: S, transport: NoiseTransport) -> Self {
        Self {
            io,
            transport,
            pending: Vec::new(),
            out: Vec::new(),
            out_start: 0,
            out_end: 0,
            wrote_since_flush: false,
            input: BytesMut::new(),
            plain: Vec::new(),
            plain_start: 0,
            plain_end: 0,
            read_state: ReadState::Open,
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The underlying stream, mutably. Reading or writing it directly corrupts the session.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Bytes of heap held by this stream's buffers (capacities), excluding the cipher state:
    /// zero when idle.
    pub fn buffered_capacity(&self) -> usize {
        self.pending.capacity()
            + self.out.capacity()
            + self.input.capacity()
            + self.plain.capacity()
    }

    fn out_len(&self) -> usize {
        self.out_end - self.out_start
    }

    /// Takes as much of `buf` as fits before the output reaches [`WRITE_BATCH`]: whole messages
    /// are encrypted straight from `buf` when nothing is pending, the rest is gathered in
    /// `pending` until a message is full.
    fn accept(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wrote_since_flush = true;
        if !self.pending.is_empty()
            && self.pending.len() <= SMALL_PENDING
            && buf.len() >= MAX_PLAINTEXT
        {
            // A few pending bytes (yamux writes each frame's 12-byte header on its own) before a
            // large write: seal them as a message of their own, so the large write is encrypted
            // straight from the caller's buffer instead of being copied into `pending` first
            // (and the receiver does not copy it through its plaintext buffer either).
            self.seal_pending()?;
        }
        if self.out.capacity() == 0 && self.pending.len() + buf.len() >= MAX_PLAINTEXT {
            // Size the output for this write (up to a batch) at once rather than growing it
            // message by message, which would copy it on every reallocation.
            let messages = (self.pending.len() + buf.len()).div_ceil(MAX_PLAINTEXT);
            let framed = messages * MAX_FRAME;
            self.out.reserve_exact(framed.min(WRITE_BATCH + MAX_FRAME));
        }
        let mut accepted = 0;
        while accepted < buf.len() && self.out_len() < WRITE_BATCH {
            let rest = &buf[accepted..];
            if self.pending.is_empty() && rest.len() >= MAX_PLAINTEXT {
                let whole = &rest[..MAX_PLAINTEXT];
                seal(&mut self.transport, whole, &mut self.out, &mut self.out_end)?;
                accepted += MAX_PLAINTEXT;
            } else {
                let take = rest.len().min(MAX_PLAINTEXT - self.pending.len());
                self.pending.extend_from_slice(&rest[..take]);
                accepted += take;
                if self.pending.len() == MAX_PLAINTEXT {
                    self.seal_pending()?;
                }
            }
        }
        Ok(accepted)
    }

    /// Encrypts the pending plaintext (if any) into the output.
    fn seal_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        seal(&mut self.transport, &self.pending, &mut self.out, &mut self.out_end)?;
        self.pending.clear();
        Ok(())
    }

    /// Releases the read buffers if they hold nothing.
    fn release_read_buffers(&mut self) {
        if self.input.is_empty() && self.input.capacity() != 0 {
            self.input = BytesMut::new();
        }
        if self.plain_start == self.plain_end && self.plain.capacity() != 0 {
            self.plain = Vec::new();
            self.plain_start = 0;
            self.plain_end = 0;
        }
    }

    /// While waiting for the rest of a partial message, keeps only about what has arrived: a
    /// peer that sends a byte of a message and stops holds a buffer the size of that byte, not
    /// of a read chunk.
    fn compact_input(&mut self) {
        let len = self.input.len();
        if len > 0 && self.input.capacity() > 2 * len + COMPACT_SLACK {
            let mut compact = BytesMut::with_capacity(len);
            compact.extend_from_slice(&self.input);
            self.input = compact;
        }
    }

    /// Releases the write buffers if they hold nothing.
    fn release_write_buffers(&mut self) {
        if self.out_start == self.out_end && self.out.capacity() != 0 {
            self.out = Vec::new();
            self.out_start = 0;
            self.out_end = 0;
        }
        if self.pending.is_empty() && self.pending.capacity() != 0 {
            self.pending = Vec::new();
        }
    }

    /// Decrypts complete messages from `input` into `buf` (directly when it has room for a
    /// whole message, else through `plain`). Returns whether any plaintext was produced.
    fn decrypt_into(&mut self, buf: &mut ReadBuf<'_>, mut produced: bool) -> io::Result<bool> {
        while buf.remaining() > 0 && self.plain_start == self.plain_end {
            let Some(&[hi, lo]) = self.input.get(..LENGTH_PREFIX) else { break };
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            if len == 0 {
                return Err(self.fail(NoiseError::ZeroLength));
            }
            let Some(message) = self.input.get(LENGTH_PREFIX..LENGTH_PREFIX + len) else { break };
            let n = if buf.remaining() >= len {
                // Room for the whole message: snow copies it there and decrypts in place.
                let dst = buf.initialize_unfilled_to(len);
                let n = self.transport.decrypt(message, dst);
                let n = n.map_err(|e| self.fail(e))?;
                buf.advance(n);
                n
            } else if produced {
                // The caller has data already; keep this message for the next read.
                break;
            } else {
                if self.plain.len() < len {
                    self.plain.resize(len, 0);
                }
                let n = self.transport.decrypt(message, &mut self.plain[..len]);
                let n = n.map_err(|e| self.fail(e))?;
                let take = n.min(buf.remaining());
                buf.put_slice(&self.plain[..take]);
                (self.plain_start, self.plain_end) = if take == n { (0, 0) } else { (take, n) };
                n
            };
            self.input.advance(LENGTH_PREFIX + len);
            produced |= n > 0;
        }
        Ok(produced)
    }

    fn fail(&mut self, e: NoiseError) -> io::Error {
        self.read_state = ReadState::Failed(e);
        e.into()
    }
}

/// Appends one framed message with `plaintext` to `out` at `end`.
fn seal(
    transport: &mut NoiseTransport,
    plaintext: &[u8],
    out: &mut Vec<u8>,
    end: &mut usize,
) -> io::Result<()> {
    let frame = LENGTH_PREFIX + plaintext.len() + TAG_LEN;
    if out.len() < *end + frame {
        out.resize(*end + frame, 0);
    }
    let n = transport.encrypt(plaintext, &mut out[*end + LENGTH_PREFIX..*end + frame])?;
    // Invariant: callers pass at most MAX_PLAINTEXT bytes, so n <= MAX_MESSAGE = u16::MAX.
    let len = u16::try_from(n).map_err(|_| NoiseError::Encrypt)?;
    out[*end..*end + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    *end += LENGTH_PREFIX + n;
    Ok(())
}

impl<S: AsyncWrite + Unpin> NoiseStream<S> {
    /// Writes the encrypted output to the socket until it is empty.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_start < self.out_end {
            let chunk = &self.out[self.out_start..self.out_end];
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, chunk))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_start += n;
        }
        self.out_start = 0;
        self.out_end = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoiseStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if bufs.iter().all(|buf| buf.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        if this.out_len() >= WRITE_BATCH {
            ready!(this.poll_write_out(cx))?;
        }
        // The output is below WRITE_BATCH now, so at least one byte is accepted.
        let mut total = 0;
        for buf in bufs {
            let accepted = this.accept(buf)?;
            total += accepted;
            if accepted < buf.len() {
                break;
            }
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.out.capacity() != 0 || this.pending.capacity() != 0 {
            this.seal_pending()?;
            ready!(this.poll_write_out(cx))?;
            if !std::mem::take(&mut this.wrote_since_flush) {
                this.release_write_buffers();
            }
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NoiseStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let ReadState::Failed(e) = this.read_state {
            return Poll::Ready(Err(e.into()));
        }
        let mut produced = false;
        if this.plain_start < this.plain_end {
            let take = (this.plain_end - this.plain_start).min(buf.remaining());
            buf.put_slice(&this.plain[this.plain_start..this.plain_start + take]);
            this.plain_start += take;
            if this.plain_start == this.plain_end {
                (this.plain_start, this.plain_end) = (0, 0);
            }
            produced = true;
        }
        loop {
            if this.decrypt_into(buf, produced)? {
                return Poll::Ready(Ok(()));
            }
            if this.read_state == ReadState::Eof {
                if this.input.is_empty() {
                    this.release_read_buffers();
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(this.fail(NoiseError::Truncated)));
            }
            if this.input.capacity() - this.input.len() < MIN_READ_SPACE {
                this.input.reserve(READ_CHUNK.max(MAX_FRAME));
            }
            let read = pin!(this.io.read_buf(&mut this.input)).poll(cx);
            match read {
                Poll::Pending => {
                    this.release_read_buffers();
                    this.compact_input();
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => this.read_state = ReadState::Eof,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for NoiseStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseStream")
            .field("io", &self.io)
            .field("pending", &self.pending.len())
            .field("out", &self.out_len())
            .field("input", &self.input.len())
            .field("plain", &(self.plain_end - self.plain_start))
            .finish_non_exhaustive()
    }
}
