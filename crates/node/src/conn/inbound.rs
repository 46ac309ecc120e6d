//! Streams the remote opens. The first frame says what a stream is: the control stream, a large
//! message, a raw application stream, or a throughput test.

use std::sync::atomic::Ordering;

use bytes::BytesMut;
use sinew_codec::messages::{MessageBody as _, OpenStream, Perf};
use sinew_codec::{Frame, FrameDecoder, LENGTH_FIELD, MAX_MESSAGE, MIN_BODY, Opcode, flags};
use sinew_transport::{MuxedConnection, Stream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{ConnEvent, StreamCtx};
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
    if let Some(wait) = ctx.limiter.as_ref().and_then(|l| l.throttle(n)) {
        wait.await;
    }
    ctx.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    Ok(n)
}

/// Reads exactly up to `len` bytes in `buf`, never past them: what follows the first frame
/// belongs to whoever takes the stream next. `len` is at most the control cap here.
async fn fill_exact(
    stream: &mut Stream,
    buf: &mut BytesMut,
    len: usize,
    ctx: &StreamCtx,
) -> Result<(), StreamFault> {
    let start = buf.len();
    buf.resize(len, 0);
    tokio::time::timeout(
        ctx.shared.config.frame_stall_timeout,
        stream.read_exact(&mut buf[start..]),
    )
    .await
    .map_err(|_| StreamFault::Stalled)?
    .map_err(|_| StreamFault::Io)?;
    ctx.stats.bytes_in.fetch_add((len - start) as u64, Ordering::Relaxed);
    Ok(())
}

/// What to do with a stream once its first frame is read.
enum Disposition {
    /// Handled here (large message, perf): drop it.
    Done,
    /// The remote's control stream: hand it to the connection task.
    Control,
    /// A raw application stream for this opcode's handler.
    Handler(Opcode),
}

async fn handle_stream(mut stream: Stream, ctx: StreamCtx) {
    match dispatch(&mut stream, &ctx).await {
        Ok(Disposition::Control) => {
            let slot = ctx.control.lock().unwrap_or_else(|e| e.into_inner()).take();
            // A second control stream is a protocol error: dropping it resets it.
            if let Some(tx) = slot {
                let _ = tx.send(stream);
            }
        }
        Ok(Disposition::Handler(opcode)) => hand_to_handler(stream, opcode, &ctx),
        // Returning drops the stream: finished streams close, anything else is reset.
        Ok(Disposition::Done) | Err(_) => {}
    }
}

async fn dispatch(stream: &mut Stream, ctx: &StreamCtx) -> Result<Disposition, StreamFault> {
    let config = &ctx.shared.config;
    // The fixed part of the header: length, opcode, flags. Read exactly, never more.
    let mut buf = BytesMut::with_capacity(LENGTH_FIELD + MIN_BODY);
    while buf.len() < LENGTH_FIELD + MIN_BODY {
        let mut byte = [0u8; LENGTH_FIELD + MIN_BODY];
        let want = LENGTH_FIELD + MIN_BODY - buf.len();
        let n = tokio::time::timeout(config.frame_stall_timeout, stream.read(&mut byte[..want]))
            .await
            .map_err(|_| StreamFault::Stalled)?
            .map_err(|_| StreamFault::Io)?;
        if n == 0 {
            return Err(StreamFault::Io);
        }
        buf.extend_from_slice(&byte[..n]);
    }
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let opcode = Opcode::from_u32(u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]));
    let large = buf[8] & flags::LARGE != 0;
    let total = LENGTH_FIELD + body_len;

    if large {
        if !ctx.stats.is_authorized() {
            return Err(StreamFault::Malformed);
        }
        receive_large(stream, buf, total, opcode, ctx).await?;
        return Ok(Disposition::Done);
    }
    if body_len > config.control_frame_cap {
        return Err(StreamFault::Malformed);
    }
    fill_exact(stream, &mut buf, total, ctx).await?;
    let frame = FrameDecoder::new(config.control_frame_cap)
        .decode(&mut buf)
        .map_err(|_| StreamFault::Malformed)?
        .ok_or(StreamFault::Malformed)?;
    match frame.opcode {
        Opcode::CONTROL_STREAM => Ok(Disposition::Control),
        Opcode::OPEN_STREAM => {
            let open = OpenStream::decode(frame.payload).map_err(|_| StreamFault::Malformed)?;
            Ok(Disposition::Handler(open.opcode))
        }
        Opcode::PERF if config.perf_server => {
            let perf = Perf::decode(frame.payload).map_err(|_| StreamFault::Malformed)?;
            serve_perf(stream, perf, ctx).await?;
            Ok(Disposition::Done)
        }
        _ => Err(StreamFault::Malformed),
    }
}

/// A large message: its whole claimed size must fit the node's budget, then the body is read
/// into a buffer that grows with the bytes that arrive.
async fn receive_large(
    stream: &mut Stream,
    mut buf: BytesMut,
    total: usize,
    opcode: Opcode,
    ctx: &StreamCtx,
) -> Result<(), StreamFault> {
    let shared = &ctx.shared;
    let decoder = FrameDecoder::new(MAX_MESSAGE);
    if total - LENGTH_FIELD > decoder.max_body() || total > shared.config.large_message_budget {
        shared.emit(Event::MessageDropped { peer: ctx.peer, opcode, reason: DropReason::TooLarge });
        return Err(StreamFault::Malformed);
    }
    let permits = shared.large_cost(total);
    let budget =
        shared.large_in.clone().acquire_many_owned(permits).await.map_err(|_| StreamFault::Io)?;
    let _guard = StreamGuard::new(ctx.stats.clone());
    while buf.len() < total {
        buf.reserve(decoder.read_hint(&buf));
        if read_timed(stream, &mut buf, ctx).await? == 0 {
            return Err(StreamFault::Io);
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
    drop(budget);
    Ok(())
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
/// then send the download and finish.
async fn serve_perf(stream: &mut Stream, perf: Perf, ctx: &StreamCtx) -> Result<(), StreamFault> {
    let _guard = StreamGuard::new(ctx.stats.clone());
    let mut buf = vec![0u8; 256 * 1024];
    let mut received = 0u64;
    loop {
        let n = stream.read(&mut buf).await.map_err(|_| StreamFault::Io)?;
        if n == 0 {
            break;
        }
        received += n as u64;
        ctx.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
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
}
