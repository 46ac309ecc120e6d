//! Streams the remote opens. The first frame says what a stream is: the control stream, a large
//! message, a raw application stream, or a throughput test.

use std::sync::atomic::Ordering;

use bytes::BytesMut;
use sinew_codec::messages::{ControlHello, MessageBody as _, OpenStream, Perf};
use sinew_codec::{
    Frame, FrameDecoder, FrameKind, LENGTH_FIELD, MAX_MESSAGE, MIN_BODY, Opcode, flags,
};
use sinew_transport::{MuxedConnection, Stream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{ConnEvent, StreamCtx};
use crate::budget::Charge;
use crate::events::{DropReason, Event};
use crate::stats::StreamGuard;
use crate::stream::{AppStream, IncomingStream};

/// Accepts the remote's streams until the connection closes; each gets its own short task.
pub(super) async fn accept_loop(muxer: MuxedConnection, ctx: StreamCtx) {
    while let Some(stream) = muxer.accept_stream().await {
        tokio::spawn(handle_stream(stream, ctx.clone()));
    }
}

/// What went wrong with a stream (the stream is reset; the connection goes on).
#[derive(Debug)]
enum StreamFault {
    Io,
    Stalled,
    Malformed,
    /// A stream kind the peer's authorization does not allow (raw, perf, large).
    Unauthorized,
}

async fn read_timed(
    stream: &mut Stream,
    buf: &mut BytesMut,
    ctx: &StreamCtx,
) -> Result<usize, StreamFault> {
    let n = tokio::time::timeout(ctx.shared.config.frame_stall_timeout, stream.read_buf(buf))
        .await
        .map_err(|_| StreamFault::Stalled)?
        .map_err(|_| StreamFault::Io)?;
    ctx.limits.charge(n, &ctx.stats).await;
    Ok(n)
}

/// Reads exactly `buf.len()` bytes, each read making progress within the stall timeout. Never
/// reads past them: what follows belongs to whoever takes the stream next.
async fn read_exact_timed(
    stream: &mut Stream,
    buf: &mut [u8],
    ctx: &StreamCtx,
) -> Result<(), StreamFault> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = tokio::time::timeout(
            ctx.shared.config.frame_stall_timeout,
            stream.read(&mut buf[filled..]),
        )
        .await
        .map_err(|_| StreamFault::Stalled)?
        .map_err(|_| StreamFault::Io)?;
        if n == 0 {
            return Err(StreamFault::Io);
        }
        ctx.limits.charge(n, &ctx.stats).await;
        filled += n;
    }
    Ok(())
}

/// What to do with a stream once its first frame is read.
enum Disposition {
    /// Handled here (large message, perf): drop it.
    Done,
    /// The remote's control stream, with its version: hand it to the connection task.
    Control(u16),
    /// The remote's message stream: hand it to the connection task.
    Messages,
    /// A raw application stream for this opcode's handler.
    Handler(Opcode),
}

async fn handle_stream(mut stream: Stream, ctx: StreamCtx) {
    match dispatch(&mut stream, &ctx).await {
        Ok(Disposition::Control(version)) => {
            let slot = ctx.control.lock().unwrap_or_else(|e| e.into_inner()).take();
            // A second control stream is a protocol error: dropping it resets it.
            if let Some(tx) = slot {
                let _ = tx.send((stream, version));
            }
        }
        Ok(Disposition::Messages) => {
            // At most one from the remote per connection; the connection task refuses more.
            let _ = ctx.messages.send(stream).await;
        }
        Ok(Disposition::Handler(opcode)) => hand_to_handler(stream, opcode, &ctx),
        // Returning drops the stream: finished streams close, anything else is reset.
        Ok(Disposition::Done) | Err(_) => {}
    }
}

/// The largest body (length field) of a stream's first frame when it is not a large message:
/// stream headers are a few bytes.
const MAX_STREAM_HEADER_BODY: usize = 64;

async fn dispatch(stream: &mut Stream, ctx: &StreamCtx) -> Result<Disposition, StreamFault> {
    let config = &ctx.shared.config;
    // The fixed part of the header: length, opcode, flags. Read exactly, never more, into a
    // buffer of our own size, not the claimed one.
    let mut head = [0u8; LENGTH_FIELD + MAX_STREAM_HEADER_BODY];
    read_exact_timed(stream, &mut head[..LENGTH_FIELD + MIN_BODY], ctx).await?;
    let body_len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let opcode = Opcode::from_u32(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
    let large = head[8] & flags::LARGE != 0;
    let total = LENGTH_FIELD + body_len;
    let authorized = ctx.stats.is_authorized() || config.access.unauthorized_streams;

    if large {
        if !authorized {
            return Err(StreamFault::Unauthorized);
        }
        // Large messages are application messages: the system lane has its own small cap.
        if !opcode.is_app() {
            return Err(StreamFault::Malformed);
        }
        let buf = BytesMut::from(&head[..LENGTH_FIELD + MIN_BODY]);
        receive_large(stream, buf, total, opcode, ctx).await?;
        return Ok(Disposition::Done);
    }
    if !(MIN_BODY..=MAX_STREAM_HEADER_BODY).contains(&body_len) {
        return Err(StreamFault::Malformed);
    }
    read_exact_timed(stream, &mut head[LENGTH_FIELD + MIN_BODY..total], ctx).await?;
    let mut buf = BytesMut::from(&head[..total]);
    let frame = FrameDecoder::new(MAX_STREAM_HEADER_BODY)
        .decode(&mut buf)
        .map_err(|_| StreamFault::Malformed)?
        .ok_or(StreamFault::Malformed)?;
    if frame.kind != FrameKind::Message {
        return Err(StreamFault::Malformed);
    }
    match frame.opcode {
        Opcode::CONTROL_STREAM => {
            let hello = ControlHello::decode(frame.payload).map_err(|_| StreamFault::Malformed)?;
            Ok(Disposition::Control(hello.version))
        }
        Opcode::MESSAGE_STREAM => Ok(Disposition::Messages),
        Opcode::OPEN_STREAM if authorized => {
            let open = OpenStream::decode(frame.payload).map_err(|_| StreamFault::Malformed)?;
            Ok(Disposition::Handler(open.opcode))
        }
        Opcode::PERF if authorized && config.perf_server => {
            let perf = Perf::decode(frame.payload).map_err(|_| StreamFault::Malformed)?;
            serve_perf(stream, perf, ctx).await?;
            Ok(Disposition::Done)
        }
        Opcode::OPEN_STREAM | Opcode::PERF => Err(StreamFault::Unauthorized),
        _ => Err(StreamFault::Malformed),
    }
}

/// Most bytes one read of a large message reserves.
const LARGE_READ: usize = 256 * 1024;
/// Least bytes one read of a large message reserves.
const LARGE_MIN_READ: usize = 1024;

/// A large message. Nothing is reserved from its claim: its buffer grows with the bytes that
/// arrived (each read reserves at most what already arrived), each reservation is charged to
/// the connection's share and to the node-wide budget first, and the transfer must keep up the
/// minimum rate. A message whose next bytes do not fit, or that is too slow, is reset and
/// dropped with its reason; other transfers are unaffected.
async fn receive_large(
    stream: &mut Stream,
    mut buf: BytesMut,
    total: usize,
    opcode: Opcode,
    ctx: &StreamCtx,
) -> Result<(), StreamFault> {
    let shared = &ctx.shared;
    let config = &shared.config;
    let decoder = FrameDecoder::new(MAX_MESSAGE);
    let drop_with = |reason| {
        shared.emit(Event::MessageDropped { peer: ctx.peer, opcode, reason });
        StreamFault::Malformed
    };
    let claim = total - LENGTH_FIELD;
    if claim > decoder.max_body()
        || total > config.large_message_budget
        || total > config.large_message_share
    {
        return Err(drop_with(DropReason::TooLarge));
    }
    let mut charge = Charge::new(shared.large_in.clone(), ctx.large_share.clone());
    let exhausted = |_| drop_with(DropReason::BudgetExhausted);
    charge.grow(buf.len()).map_err(exhausted)?;
    let _guard = StreamGuard::new(ctx.stats.clone());
    let started = tokio::time::Instant::now();
    while buf.len() < total {
        let want = (total - buf.len()).min(buf.len().max(LARGE_MIN_READ)).min(LARGE_READ);
        if buf.capacity() - buf.len() < want {
            charge.grow(want).map_err(exhausted)?;
            buf.reserve(want);
        }
        if read_timed(stream, &mut buf, ctx).await? == 0 {
            return Err(StreamFault::Io);
        }
        if too_slow(started, buf.len(), config) {
            return Err(drop_with(DropReason::TooSlow));
        }
    }
    let frame = {
        let mut decoder = decoder;
        decoder
            .decode(&mut buf)
            .map_err(|_| StreamFault::Malformed)?
            .ok_or(StreamFault::Malformed)?
    };
    ctx.stats.msgs_in.fetch_add(1, Ordering::Relaxed);
    deliver(frame, ctx).await;
    drop(charge);
    // Taken: close the stream cleanly (a reset would read as a refusal to the sender).
    finish_after_end(stream, ctx).await
}

/// Waits for the sender's FIN after the one frame a stream carries (more bytes are an error),
/// then finishes our half, so the stream ends cleanly instead of being reset.
async fn finish_after_end(stream: &mut Stream, ctx: &StreamCtx) -> Result<(), StreamFault> {
    let stall = ctx.shared.config.frame_stall_timeout;
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(stall, stream.read(&mut byte))
        .await
        .map_err(|_| StreamFault::Stalled)?
        .map_err(|_| StreamFault::Io)?;
    if n != 0 {
        return Err(StreamFault::Malformed);
    }
    tokio::time::timeout(stall, stream.finish())
        .await
        .map_err(|_| StreamFault::Stalled)?
        .map_err(|_| StreamFault::Io)
}

/// Whether a large transfer that started at `started` and moved `moved` bytes is slower than
/// the minimum rate, once the grace period (the stall timeout) has passed.
pub(crate) fn too_slow(
    started: tokio::time::Instant,
    moved: usize,
    config: &crate::config::NodeConfig,
) -> bool {
    let elapsed = started.elapsed();
    let Some(over) = elapsed.checked_sub(config.frame_stall_timeout) else { return false };
    (moved as f64) < over.as_secs_f64() * config.large_min_rate as f64
}

async fn deliver(frame: Frame, ctx: &StreamCtx) {
    let _ = ctx.to_driver.send(ConnEvent::Frame { conn: ctx.conn, frame }).await;
}

fn hand_to_handler(stream: Stream, opcode: Opcode, ctx: &StreamCtx) {
    let handler =
        ctx.shared.stream_handlers.read().unwrap_or_else(|e| e.into_inner()).get(&opcode).cloned();
    let Some(handler) = handler else {
        ctx.shared.emit(Event::MessageDropped {
            peer: ctx.peer,
            opcode,
            reason: DropReason::NoStreamHandler,
        });
        return;
    };
    let Ok(permit) = handler.try_reserve() else {
        ctx.shared.emit(Event::MessageDropped {
            peer: ctx.peer,
            opcode,
            reason: DropReason::NoStreamHandler,
        });
        return;
    };
    let app = AppStream::new(stream, StreamGuard::new(ctx.stats.clone()), ctx.peer, opcode);
    permit.send(IncomingStream { peer: ctx.peer, stream: app });
}

/// The server side of `sinew perf`: read the upload to its end, answer with the byte count,
/// then send the download and finish. Bounded: each length by `perf_limits.max_bytes` (a larger
/// request is refused), the whole test by `perf_limits.max_duration`, and every read by the
/// stall timeout.
async fn serve_perf(stream: &mut Stream, perf: Perf, ctx: &StreamCtx) -> Result<(), StreamFault> {
    let limits = ctx.shared.config.perf_limits;
    if perf.upload > limits.max_bytes || perf.download > limits.max_bytes {
        return Err(StreamFault::Malformed);
    }
    let _guard = StreamGuard::new(ctx.stats.clone());
    tokio::time::timeout(limits.max_duration, async {
        let mut buf = vec![0u8; 256 * 1024];
        let mut received = 0u64;
        loop {
            let n =
                tokio::time::timeout(ctx.shared.config.frame_stall_timeout, stream.read(&mut buf))
                    .await
                    .map_err(|_| StreamFault::Stalled)?
                    .map_err(|_| StreamFault::Io)?;
            if n == 0 {
                break;
            }
            received += n as u64;
            if received > perf.upload {
                return Err(StreamFault::Malformed);
            }
            ctx.limits.charge(n, &ctx.stats).await;
        }
        stream.write_all(&received.to_le_bytes()).await.map_err(|_| StreamFault::Io)?;
        let mut left = perf.download;
        buf.fill(0);
        while left > 0 {
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            stream.write_all(&buf[..n]).await.map_err(|_| StreamFault::Io)?;
            left -= n as u64;
        }
        stream.finish().await.map_err(|_| StreamFault::Io)
    })
    .await
    .map_err(|_| StreamFault::Stalled)?
}
