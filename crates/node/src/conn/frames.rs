//! Reading frames off a lane, and writing with a progress deadline.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sinew_codec::{Frame, FrameDecoder};
use sinew_protocol::Reason;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::rate::RateWindow;
use crate::config::NodeConfig;
use crate::stats::{ConnStats, RateLimiter};

/// Receive buffer of an idle lane: the pings and small messages that usually come next fit.
const IDLE_READ: usize = 256;
/// Payloads shorter than this are copied out of a receive buffer more than [`PIN_RATIO`] times
/// their size, so that keeping a message does not keep the buffer.
const COPY_BELOW: usize = 64 * 1024;
const PIN_RATIO: usize = 16;

/// The read rate limits of one connection, shared by all its readers.
#[derive(Debug)]
pub(crate) struct ReadLimits {
    /// `NodeConfig::recv_rate_limit`, for shaping.
    recv: Option<RateLimiter>,
    /// The unauthorized read rate, made the first time an unauthorized peer's bytes arrive.
    unauthorized: OnceLock<RateLimiter>,
    unauthorized_rate: u64,
}

impl ReadLimits {
    pub(crate) fn new(config: &NodeConfig) -> Self {
        Self {
            recv: config.recv_rate_limit.map(RateLimiter::new),
            unauthorized: OnceLock::new(),
            unauthorized_rate: config.unauthorized_rate,
        }
    }

    /// Charges `n` bytes read and waits as long as the limits require; returns how long it
    /// waited (time that minimum-rate checks do not hold against the remote).
    pub(crate) async fn charge(&self, n: usize, stats: &ConnStats) -> Duration {
        stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        let mut waited = Duration::ZERO;
        if let Some(wait) = self.recv.as_ref().and_then(|l| l.throttle(n)) {
            waited += wait.deadline().saturating_duration_since(tokio::time::Instant::now());
            wait.await;
        }
        if !stats.is_authorized() {
            let limiter =
                self.unauthorized.get_or_init(|| RateLimiter::new(self.unauthorized_rate));
            if let Some(wait) = limiter.throttle(n) {
                waited += wait.deadline().saturating_duration_since(tokio::time::Instant::now());
                wait.await;
            }
        }
        waited
    }
}

/// Why a write ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteFault {
    /// The stream failed (reset, connection closed).
    Io,
    /// No byte was accepted for the write-stall timeout: the remote stopped reading.
    Stalled,
}

/// Writes all of `buf`, each write making progress within `stall`, then flushes.
pub(crate) async fn write_all_timed<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &[u8],
    stall: Duration,
) -> Result<(), WriteFault> {
    write_checked(w, buf, stall, |_| false).await
}

/// Writes all of `buf` like [`write_all_timed`], checking the minimum rate after every write
/// the stream accepts (yamux takes up to one frame per write, so frames stay large), not only
/// after the whole buffer: a reader that returns window a byte at a time cannot stretch one
/// buffer past the rate.
pub(crate) async fn write_paced<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &[u8],
    stall: Duration,
    rate: &mut RateWindow,
    written: &mut u64,
    total: u64,
) -> Result<(), WriteFault> {
    write_checked(w, buf, stall, |n| {
        *written += n as u64;
        rate.too_slow(tokio::time::Instant::now(), *written, total)
    })
    .await
}

/// Writes all of `buf`, each write within `stall`, then flushes; `too_slow` is told each
/// write's size and ends the write as stalled when it says so.
async fn write_checked<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut buf: &[u8],
    stall: Duration,
    mut too_slow: impl FnMut(usize) -> bool,
) -> Result<(), WriteFault> {
    while !buf.is_empty() {
        let n = tokio::time::timeout(stall, w.write(buf))
            .await
            .map_err(|_| WriteFault::Stalled)?
            .map_err(|_| WriteFault::Io)?;
        if n == 0 {
            return Err(WriteFault::Io);
        }
        buf = &buf[n..];
        if too_slow(n) {
            return Err(WriteFault::Stalled);
        }
    }
    tokio::time::timeout(stall, w.flush())
        .await
        .map_err(|_| WriteFault::Stalled)?
        .map_err(|_| WriteFault::Io)
}

/// Finishes the sending half within `stall`.
pub(crate) async fn finish_timed<W: AsyncWrite + Unpin>(
    w: &mut W,
    stall: Duration,
) -> Result<(), WriteFault> {
    tokio::time::timeout(stall, w.shutdown())
        .await
        .map_err(|_| WriteFault::Stalled)?
        .map_err(|_| WriteFault::Io)
}

/// Decodes frames from one lane. Its buffer grows with the bytes that arrived (never with a
/// claimed length: see [`FrameDecoder::read_hint`]) and is released whenever it is empty; a
/// partial frame must make progress within the stall timeout.
pub(crate) struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
    decoder: FrameDecoder,
    /// The payload cap for an authorized peer.
    cap: usize,
    /// While a frame is partial: the minimum rate it must arrive at.
    partial: Option<RateWindow>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader of frames with payloads up to `cap` (an unauthorized peer's cap is lower).
    pub(crate) fn new(rd: R, cap: usize) -> Self {
        Self { rd, buf: BytesMut::new(), decoder: FrameDecoder::new(cap), cap, partial: None }
    }

    /// The stream being read.
    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.rd
    }

    /// The next frame; `None` at a clean end of the stream.
    pub(crate) async fn next(
        &mut self,
        config: &NodeConfig,
        stats: &ConnStats,
        limits: &ReadLimits,
    ) -> Result<Option<Frame>, Reason> {
        loop {
            // The unauthorized cap applies in the decoder: an oversize header is refused
            // before anything is buffered for it.
            let cap = if stats.is_authorized() {
                self.cap
            } else {
                self.cap.min(config.unauthorized_frame_cap)
            };
            if self.decoder.max_payload() != cap {
                self.decoder.set_max_payload(cap);
            }
            let capacity = self.buf.capacity();
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(mut frame)) => {
                    self.partial = None;
                    // A small payload would keep the whole receive buffer alive for as long as
                    // the application keeps it: copy it out instead.
                    let len = frame.payload.len();
                    if len < COPY_BELOW && capacity > PIN_RATIO * len.max(1) {
                        frame.payload = Bytes::copy_from_slice(&frame.payload);
                    }
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(e) => return Err(Reason::ProtocolError(e.to_string())),
            }
            if self.buf.is_empty() {
                // Idle lanes hold no receive buffer; this read allocates a small one.
                self.buf = BytesMut::new();
                self.buf.reserve(IDLE_READ);
                let n = match self.rd.read_buf(&mut self.buf).await {
                    Ok(n) => n,
                    // A reset between two frames ends a lane as its end would: each lane's
                    // reader has its meaning (a remote's fast close drops its message writer,
                    // and its `DISCONNECT` on the control stream says why). A reset inside a
                    // frame is a loss.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                    Err(_) => return Err(Reason::ConnectionLost),
                };
                if n == 0 {
                    self.buf = BytesMut::new();
                    return Ok(None);
                }
                limits.charge(n, stats).await;
            } else {
                self.buf.reserve(self.decoder.read_hint(&self.buf));
                // Boxed: a reader waiting for its next frame holds no timer.
                let read = Box::pin(tokio::time::timeout(
                    config.frame_stall_timeout,
                    self.rd.read_buf(&mut self.buf),
                ))
                .await;
                let n = match read {
                    Err(_) => {
                        return Err(Reason::ProtocolError(
                            "a partial frame made no progress".into(),
                        ));
                    }
                    Ok(Err(_)) => return Err(Reason::ConnectionLost),
                    Ok(Ok(0)) => {
                        return Err(Reason::ProtocolError("stream ended inside a frame".into()));
                    }
                    Ok(Ok(n)) => n,
                };
                // A partial frame must keep up the lanes' minimum rate, not just move a byte
                // within each stall timeout. Judged from its first read: what was already
                // buffered earns nothing, and our own throttling is not held against it.
                let now = tokio::time::Instant::now();
                let buffered = self.buf.len() as u64;
                let rate = self.partial.get_or_insert_with(|| {
                    RateWindow::new(
                        config.lane_min_rate,
                        config.frame_stall_timeout,
                        now,
                        buffered - n as u64,
                    )
                });
                // The frame's whole length, once its length field is in: a frame needs only
                // to deliver what is left of it.
                let total = match self.buf.get(..sinew_codec::LENGTH_FIELD) {
                    Some(&[a, b, c, d]) => {
                        (sinew_codec::LENGTH_FIELD as u64)
                            + u64::from(u32::from_le_bytes([a, b, c, d]))
                    }
                    _ => u64::MAX,
                };
                if rate.too_slow(now, buffered, total) {
                    return Err(Reason::ProtocolError("a partial frame arrived too slowly".into()));
                }
                let waited = limits.charge(n, stats).await;
                rate.excuse(waited);
            }
        }
    }
}
