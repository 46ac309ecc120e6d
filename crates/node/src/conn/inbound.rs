//! Streams the remote opens. The first frame says what a stream is: the control stream, a large
//! message, a raw application stream, or a throughput test.

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use sinew_codec::messages::{ControlHello, LARGE_TAKEN, MessageBody as _, OpenStream, Perf};
use sinew_codec::{
    Frame, FrameDecoder, FrameKind, LENGTH_FIELD, MAX_MESSAGE, MIN_BODY, Opcode, flags,
};
use sinew_transport::{MuxedConnection, Stream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::rate::RateWindow;
use super::{ConnEvent, StreamCtx};
use crate::budget::Charge;
use crate::events::{DropReason, Event};
use crate::stats::StreamGuard;
use crate::stream::{AppStream, IncomingStream};

/// Accepts the remote's streams until the connection closes; each gets its own short task.
pub(super) async fn accept_loop(muxer: &MuxedConnection, ctx: &StreamCtx) {
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

/// Reads what is there into `buf` within the stall timeout; the time our own read limits then
/// wait is excused from `rate`.
async fn read_timed(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    ctx: &StreamCtx,
    rate: &mut RateWindow,
) -> Result<usize, StreamFault> {
    let n = tokio::time::timeout(ctx.shared.config.frame_stall_timeout, stream.read_buf(buf))
        .await
        .map_err(|_| StreamFault::Stalled)?
        .map_err(|_| StreamFault::Io)?;
    rate.excuse(ctx.limits.charge(n, &ctx.stats).await);
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
    /// A control stream after the one taken at setup: reset.
    Control,
    /// The remote's message stream: hand it to the connection task.
    Messages,
    /// A raw application stream for this opcode's handler.
    Handler(Opcode),
}

async fn handle_stream(mut stream: Stream, ctx: StreamCtx) {
    if let Ok(header) = read_header(&mut stream, &ctx).await {
        handle_with_header(stream, header, ctx).await;
    }
    // Otherwise dropping the stream resets it.
}

async fn handle_with_header(mut stream: Stream, header: Header, ctx: StreamCtx) {
    match dispatch(&mut stream, header, &ctx).await {
        // The control stream was taken while the connection was set up: a second one is
        // reset (dropping it does that).
        Ok(Disposition::Control) => {}
        Ok(Disposition::Messages) => {
            // At most one from the remote per connection; the connection task refuses more.
            ctx.messages.offer(stream);
        }
        Ok(Disposition::Handler(opcode)) => hand_to_handler(stream, opcode, &ctx),
        // Returning drops the stream: finished streams close, anything else is reset.
        Ok(Disposition::Done) | Err(_) => {}
    }
}

/// Accepts the dialler's streams until its control stream, and returns it with its version.
/// Run by the connection task itself, before its acceptor starts, so the control stream takes
/// no task hop. Other streams that arrive first (yamux opens streams lazily, so a stream the
/// dialler opened later may arrive first) get their own tasks, as the acceptor would give them.
pub(super) async fn control_stream(
    muxer: &MuxedConnection,
    ctx: &StreamCtx,
) -> Result<(Stream, u16), sinew_protocol::Reason> {
    loop {
        let mut stream =
            muxer.accept_stream().await.ok_or(sinew_protocol::Reason::ConnectionLost)?;
        match read_header(&mut stream, ctx).await {
            Ok(Header::Small(frame)) if frame.opcode == Opcode::CONTROL_STREAM => {
                match ControlHello::decode(frame.payload) {
                    Ok(hello) => return Ok((stream, hello.version)),
                    Err(_) => {
                        return Err(sinew_protocol::Reason::ProtocolError(
                            "a malformed control stream hello".into(),
                        ));
                    }
                }
            }
            Ok(header) => {
                tokio::spawn(handle_with_header(stream, header, ctx.clone()));
            }
            // A stream whose first frame is bad is reset; the connection goes on.
            Err(_) => {}
        }
    }
}

/// The first frame of a stream: a small header frame, read whole, or the start of a large
/// message (its fixed header only).
enum Header {
    Small(Frame),
    Large { head: [u8; LENGTH_FIELD + MIN_BODY], total: usize, opcode: Opcode },
}

/// Reads a stream's first frame: exactly its bytes, into a buffer of our own size (never the
/// claimed one).
async fn dispatch_header(stream: &mut Stream, ctx: &StreamCtx) -> Result<Header, StreamFault> {
    let mut head = [0u8; LENGTH_FIELD + MAX_STREAM_HEADER_BODY];
    read_exact_timed(stream, &mut head[..LENGTH_FIELD + MIN_BODY], ctx).await?;
    let body_len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let opcode = Opcode::from_u32(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
    let total = LENGTH_FIELD + body_len;
    if head[8] & flags::LARGE != 0 {
        let mut fixed = [0u8; LENGTH_FIELD + MIN_BODY];
        fixed.copy_from_slice(&head[..LENGTH_FIELD + MIN_BODY]);
        return Ok(Header::Large { head: fixed, total, opcode });
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
    Ok(Header::Small(frame))
}

/// The largest body (length field) of a stream's first frame when it is not a large message:
/// stream headers are a few bytes.
const MAX_STREAM_HEADER_BODY: usize = 64;

/// Reads a stream's first frame, all of it within one stall timeout (not a byte per timeout).
async fn read_header(stream: &mut Stream, ctx: &StreamCtx) -> Result<Header, StreamFault> {
    let stall = ctx.shared.config.frame_stall_timeout;
    tokio::time::timeout(stall, dispatch_header(stream, ctx))
        .await
        .map_err(|_| StreamFault::Stalled)?
}

async fn dispatch(
    stream: &mut Stream,
    header: Header,
    ctx: &StreamCtx,
) -> Result<Disposition, StreamFault> {
    let config = &ctx.shared.config;
    let authorized = ctx.stats.is_authorized() || config.access.unauthorized_streams;
    let frame = match header {
        Header::Large { head, total, opcode } => {
            if !authorized {
                return Err(StreamFault::Unauthorized);
            }
            // Large messages are application messages: the system lane has its own small cap.
            if !opcode.is_app() {
                return Err(StreamFault::Malformed);
            }
            receive_large(stream, &head, total, opcode, ctx).await?;
            return Ok(Disposition::Done);
        }
        Header::Small(frame) => frame,
    };
    match frame.opcode {
        Opcode::CONTROL_STREAM => Ok(Disposition::Control),
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

/// The first buffer of a large message (then it doubles, up to [`LARGE_GROWTH`]).
const LARGE_FIRST_BUFFER: usize = 4096;
/// The most a large message's buffer grows by at once: past it, the buffer is at most this much
/// bigger than what arrived (allocations this large are mapped, and realloc moves no bytes).
const LARGE_GROWTH: usize = 32 << 20;

/// A large message. Nothing is reserved from its claim: its buffer grows with the bytes that
/// arrived (it doubles when full, by at most 32 MiB at a time, so it holds at most what arrived
/// plus the smaller of that and 32 MiB, and never more than the claim), each growth is charged to the connection's share and to the node-wide budget
/// first (by the buffer's capacity), and the transfer must keep up the minimum rate. A message
/// whose next bytes do not fit, or that is too slow, is reset and dropped with its reason;
/// other transfers are unaffected.
async fn receive_large(
    stream: &mut Stream,
    head: &[u8],
    total: usize,
    opcode: Opcode,
    ctx: &StreamCtx,
) -> Result<(), StreamFault> {
    let shared = &ctx.shared;
    let config = &shared.config;
    let drop_with = |reason| dropped(ctx, opcode, reason);
    // The header alone says whether the payload is within 512 MiB, exactly (its flags say
    // how long the rest of the header is).
    match FrameDecoder::new(MAX_MESSAGE).decode(&mut BytesMut::from(head)) {
        Ok(_) => {}
        Err(sinew_codec::FrameError::TooLarge { .. }) => {
            return Err(drop_with(DropReason::TooLarge));
        }
        Err(_) => return Err(StreamFault::Malformed),
    }
    if total > config.large_message_budget || total > config.large_message_share {
        return Err(drop_with(DropReason::TooLarge));
    }
    // The protocol owning the opcode hears of it before the body comes, and may cancel it.
    let (id, cancel, _transfer) = shared.start_transfer(None);
    let start = sinew_protocol::TransferStart {
        peer: ctx.peer,
        id: sinew_protocol::TransferId(id),
        opcode,
        claimed: total as u64,
    };
    if super::send_to_driver(ctx, ConnEvent::TransferStarted { conn: ctx.conn, start })
        .await
        .is_err()
    {
        return Err(StreamFault::Io);
    }
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(drop_with(DropReason::Cancelled)),
        result = receive_body(stream, head, total, opcode, ctx) => result,
    }
}

/// A large message dropped for `reason`: the event, and the fault that resets its stream.
fn dropped(ctx: &StreamCtx, opcode: Opcode, reason: DropReason) -> StreamFault {
    ctx.shared.emit(Event::MessageDropped { peer: ctx.peer, opcode, reason });
    StreamFault::Malformed
}

/// The body of a large message (see [`receive_large`]).
async fn receive_body(
    stream: &mut Stream,
    head: &[u8],
    total: usize,
    opcode: Opcode,
    ctx: &StreamCtx,
) -> Result<(), StreamFault> {
    let shared = &ctx.shared;
    let config = &shared.config;
    let decoder = FrameDecoder::new(MAX_MESSAGE);
    let drop_with = |reason| dropped(ctx, opcode, reason);
    let mut charge = Charge::new(shared.large_in.clone(), ctx.large_share.clone());
    let exhausted = |_| drop_with(DropReason::BudgetExhausted);
    // A Vec, not a BytesMut: its growth is ours to choose (`reserve_exact`), so its capacity,
    // which is what is charged, never runs past the claim.
    let mut buf: Vec<u8> = Vec::new();
    buf.reserve_exact(LARGE_FIRST_BUFFER.min(total));
    buf.extend_from_slice(head);
    let mut charged = buf.capacity();
    charge.grow(charged).map_err(exhausted)?;
    let _guard = StreamGuard::new(ctx.stats.clone());
    let now = tokio::time::Instant::now();
    let mut rate = RateWindow::new(config.large_min_rate, config.frame_stall_timeout, now, 0);
    while buf.len() < total {
        if buf.capacity() == buf.len() {
            let target = (buf.len() + buf.len().min(LARGE_GROWTH)).min(total);
            buf.reserve_exact(target - buf.len());
            charge.grow(buf.capacity() - charged).map_err(exhausted)?;
            charged = buf.capacity();
        }
        if read_timed(stream, &mut buf, ctx, &mut rate).await? == 0 {
            return Err(StreamFault::Io);
        }
        if rate.too_slow(tokio::time::Instant::now(), buf.len() as u64, total as u64) {
            return Err(drop_with(DropReason::TooSlow));
        }
    }
    let mut buf = BytesMut::from(Bytes::from(buf));
    let mut frame = {
        let mut decoder = decoder;
        decoder
            .decode(&mut buf)
            .map_err(|_| StreamFault::Malformed)?
            .ok_or(StreamFault::Malformed)?
    };
    // The budget stays charged for as long as the payload lives (in the driver's channel, an
    // inbox, the application's hands): it bounds the bytes of large messages held, not only
    // those in flight.
    frame.payload = Bytes::from_owner(ChargedPayload { payload: frame.payload, _charge: charge });
    ctx.stats.msgs_in.fetch_add(1, Ordering::Relaxed);
    deliver(frame, ctx).await;
    // Taken: say so, then close the stream cleanly.
    finish_after_end(stream, ctx).await
}

/// A large message's payload, holding its share of the receive budget until dropped.
struct ChargedPayload {
    payload: Bytes,
    _charge: Charge,
}

impl AsRef<[u8]> for ChargedPayload {
    fn as_ref(&self) -> &[u8] {
        &self.payload
    }
}

/// Waits for the sender's FIN after the one frame a large stream carries (more bytes are an
/// error), then writes [`LARGE_TAKEN`] and finishes our half: the sender's proof that the
/// message was taken.
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
    tokio::time::timeout(stall, stream.write_all(&[LARGE_TAKEN]))
        .await
        .map_err(|_| StreamFault::Stalled)?
        .map_err(|_| StreamFault::Io)?;
    tokio::time::timeout(stall, stream.finish())
        .await
        .map_err(|_| StreamFault::Stalled)?
        .map_err(|_| StreamFault::Io)
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
