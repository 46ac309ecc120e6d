//! The control stream: the system lane of one connection, in both directions.
//!
//! It carries system frames only (every opcode below 1000 and every `ERROR` frame, see
//! [`Frame::is_system`]), each with at most 64 KiB of payload. Application frames on it are a
//! protocol error. The writer writes the connection's [`SystemQueue`], so a pong never waits
//! behind application traffic; `DISCONNECT` is the last frame it writes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use sinew_codec::messages::{
    CONTROL_VERSION, ControlHello, Disconnect, DisconnectCode, MessageBody as _,
};
use sinew_codec::{Frame, Opcode};
use sinew_protocol::Reason;
use sinew_transport::Stream;
use tokio::io::{ReadHalf, WriteHalf};

use super::frames::{FrameReader, WriteFault, finish_timed, write_all_timed};
use super::system::{Next, SystemQueue};
use super::{ConnEvent, StreamCtx};
use crate::stats::ConnStats;

/// How the control stream's reader ended.
pub(super) enum ReadEnd {
    /// The remote said goodbye (nothing after a `DISCONNECT` counts); the reader is handed
    /// back so the rest can be read to the remote's FIN ([`drain`]).
    Goodbye(Disconnect, Box<FrameReader<ReadHalf<Stream>>>),
    /// The remote finished the stream.
    Eof,
    /// The stream failed or the remote broke the protocol.
    Failed(Reason),
}

/// Reads system frames and hands them to the driver until the remote says goodbye.
pub(super) async fn read_system(
    mut reader: FrameReader<ReadHalf<Stream>>,
    ctx: &StreamCtx,
) -> ReadEnd {
    let config = &ctx.shared.config;
    loop {
        let frame = match reader.next(config, &ctx.stats, &ctx.limits).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return ReadEnd::Eof,
            Err(reason) => return ReadEnd::Failed(reason),
        };
        if !frame.is_system() || frame.large {
            return ReadEnd::Failed(Reason::ProtocolError(format!(
                "application or large frame (opcode {}) on the control stream",
                frame.opcode
            )));
        }
        ctx.stats.msgs_in.fetch_add(1, Ordering::Relaxed);
        if frame.opcode == Opcode::DISCONNECT {
            let goodbye = Disconnect::decode(frame.payload).unwrap_or(Disconnect {
                code: DisconnectCode::PROTOCOL_ERROR,
                message: "malformed disconnect".into(),
            });
            return ReadEnd::Goodbye(goodbye, Box::new(reader));
        }
        if super::send_to_driver(ctx, ConnEvent::Frame { conn: ctx.conn, frame }).await.is_err() {
            return ReadEnd::Failed(Reason::Local(DisconnectCode::SHUTDOWN));
        }
    }
}

/// After a goodbye: reads (and ignores) what still comes until the remote finishes the stream,
/// so that its FIN does not meet a closed socket.
pub(super) async fn drain(mut reader: Box<FrameReader<ReadHalf<Stream>>>, ctx: &StreamCtx) {
    let config = &ctx.shared.config;
    while let Ok(Some(_)) = reader.next(config, &ctx.stats, &ctx.limits).await {}
}

/// How the control stream's writer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteEnd {
    /// The queue was finished: its last frame was written and the stream finished.
    Finished,
    /// The stream failed or stopped making progress.
    Failed(WriteFault),
}

/// Writes the system queue until it is finished: all queued frames in one write, then its last
/// frame (the goodbye), then FIN. `out` may hold bytes to write first (the dialler's hello).
pub(super) async fn write_system(
    mut wr: WriteHalf<Stream>,
    queue: &SystemQueue,
    stats: &Arc<ConnStats>,
    stall: Duration,
    mut out: BytesMut,
) -> WriteEnd {
    let mut batch = Vec::new();
    loop {
        let next = queue.pop_all(&mut batch);
        let mut popped = 0;
        for frame in batch.drain(..) {
            popped += frame.encoded_len();
            encode(&frame, &mut out, stats);
        }
        let finished = match next {
            Next::Open => false,
            Next::Finished(goodbye) => {
                if let Some(goodbye) = goodbye {
                    encode(&goodbye, &mut out, stats);
                }
                true
            }
        };
        if !out.is_empty() {
            // Boxed, as the finish below: an idle writer's state machine holds no write timer.
            if let Err(fault) = Box::pin(write_all_timed(&mut wr, &out, stall)).await {
                return WriteEnd::Failed(fault);
            }
            stats.bytes_out.fetch_add(out.len() as u64, Ordering::Relaxed);
            let charged = queue.written(popped);
            stats.wrote(true, charged);
            // Idle connections hold no write buffer or batch; the next round allocates.
            out = BytesMut::new();
            batch = Vec::new();
        }
        if finished {
            return match Box::pin(finish_timed(&mut wr, stall)).await {
                Ok(()) => WriteEnd::Finished,
                Err(fault) => WriteEnd::Failed(fault),
            };
        }
        queue.ready().await;
    }
}

/// The dialler's hello, encoded: the first bytes its control stream writer writes.
pub(super) fn hello(stats: &ConnStats) -> BytesMut {
    let mut out = BytesMut::new();
    let hello = ControlHello { version: CONTROL_VERSION };
    encode(&Frame::message(Opcode::CONTROL_STREAM, hello.encode()), &mut out, stats);
    out
}

fn encode(frame: &Frame, out: &mut BytesMut, stats: &ConnStats) {
    frame.encode(out);
    stats.msgs_out.fetch_add(1, Ordering::Relaxed);
}

/// The goodbye frame.
pub(super) fn goodbye(code: DisconnectCode, message: &str) -> Frame {
    // Bounded as the decoder bounds it, so peers never refuse our goodbye.
    let mut message = message.to_owned();
    truncate_utf8(&mut message, sinew_codec::messages::MAX_DISCONNECT_MESSAGE);
    Frame::message(Opcode::DISCONNECT, Disconnect { code, message }.encode())
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}
