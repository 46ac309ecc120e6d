//! Message streams: the application lane, one per sender per connection.
//!
//! A side opens its message stream when it first has application frames for a connection
//! that carries its peer queue, writes `MESSAGE_STREAM` and then frames, and finishes it when
//! the connection stops carrying the queue (a duplicate swap, a close). The receiver reads it
//! to its end and then finishes its own half: that FIN tells the sender that every frame it
//! wrote there was read. Only then does the sender's next connection start writing the queue
//! (the queue's lane lease), so a sender's messages arrive in the order they were sent, even
//! across a duplicate swap, whatever the order the two connections' bytes arrive in.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sinew_codec::messages::DisconnectCode;
use sinew_codec::{DEFAULT_CONTROL_CAP, Frame, Opcode};
use sinew_protocol::Reason;
use sinew_transport::{MuxedConnection, Stream};
use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;

use super::frames::{FrameReader, WriteFault, finish_timed, write_paced};
use super::rate::RateWindow;
use super::{ConnEvent, StreamCtx};
use crate::queue::PeerQueue;
use crate::stats::ConnStats;

/// Bytes of frames gathered into one write.
pub(crate) const BATCH_BYTES: usize = 256 * 1024;
/// What each source of the message lane may add to a batch per round (deficit round-robin).
const QUANTUM: usize = BATCH_BYTES / 2;

/// Protocol frames popped and waiting for their turn, and their deficit.
#[derive(Default)]
struct ProtocolTurn {
    frames: std::collections::VecDeque<Frame>,
    deficit: usize,
}

impl ProtocolTurn {
    /// Moves this round's protocol frames into `batch`: the deficit grows by a quantum while
    /// frames wait, and frames go while they fit in it. Returns their encoded bytes.
    fn take(&mut self, queue: &PeerQueue, batch: &mut Vec<Frame>) -> usize {
        queue.pop_protocol(&mut self.frames);
        if self.frames.is_empty() {
            self.deficit = 0;
            return 0;
        }
        self.deficit += QUANTUM;
        let mut taken = 0;
        while let Some(front) = self.frames.front() {
            let len = front.encoded_len();
            if len > self.deficit {
                break;
            }
            self.deficit -= len;
            taken += len;
            batch.extend(self.frames.pop_front());
        }
        taken
    }
}

/// How a message lane ended.
#[derive(Debug)]
pub(super) enum LaneEnd {
    /// Done: the writer finished its stream and the remote confirmed (or it never opened
    /// one); the reader read the remote's stream to its end and finished its half.
    Finished,
    /// A write failed or stalled.
    WriteFailed(WriteFault),
    /// The stream failed or the remote broke the protocol.
    Failed(Reason),
}

/// Writes the peer queue on this connection until `stop`: waits for the queue's lane lease
/// (the previous connection's writer holds it until the remote confirmed its last frames),
/// opens the message stream at the first frame, writes batches of up to 256 KiB, and checks
/// `stop` between batches. Then it finishes the stream and waits for the remote's FIN; the
/// caller bounds that wait.
pub(super) async fn write_messages(
    muxer: MuxedConnection,
    queue: Arc<PeerQueue>,
    stop: CancellationToken,
    stats: &Arc<ConnStats>,
    pace: Pace,
) -> LaneEnd {
    let Pace { stall, min_rate, window } = pace;
    let mut turn = ProtocolTurn::default();
    let lease = tokio::select! {
        biased;
        () = stop.cancelled() => return LaneEnd::Finished,
        lease = queue.lease() => match lease {
            Some(lease) => lease,
            None => return LaneEnd::Finished, // the queue was closed: the peer is gone
        },
    };
    let mut stream: Option<Stream> = None;
    let mut batch = Vec::new();
    let mut out = BytesMut::new();
    // While frames wait, the remote must take them at the lanes' minimum rate: a reader that
    // keeps our queue full by taking a little now and then is closed as stalled.
    let mut rate = RateWindow::new(min_rate, stall.min(window), tokio::time::Instant::now(), 0);
    let mut written = 0u64;
    loop {
        if stop.is_cancelled() {
            break;
        }
        // Protocol frames and the application queue take turns (deficit round-robin).
        let protocol_bytes = turn.take(&queue, &mut batch);
        if protocol_bytes < BATCH_BYTES {
            queue.pop_batch((BATCH_BYTES - protocol_bytes).max(QUANTUM), &mut batch);
        }
        if batch.is_empty() && !turn.frames.is_empty() {
            // A protocol frame larger than the deficit so far: the next round adds a quantum.
            continue;
        }
        if batch.is_empty() {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                () = queue.ready() => {
                    // Idle by choice, not slow: the rate is judged from here.
                    rate.restart(tokio::time::Instant::now(), written);
                    continue;
                }
            }
        }
        if stream.is_none() {
            match tokio::time::timeout(stall, muxer.open_stream()).await {
                Ok(Ok(s)) => stream = Some(s),
                Ok(Err(_)) => return LaneEnd::WriteFailed(WriteFault::Io),
                Err(_) => return LaneEnd::WriteFailed(WriteFault::Stalled),
            }
            Frame::message(Opcode::MESSAGE_STREAM, Bytes::new()).encode(&mut out);
        }
        for frame in batch.drain(..) {
            frame.encode(&mut out);
            stats.msgs_out.fetch_add(1, Ordering::Relaxed);
            if frame.opcode.is_app() {
                stats.app_activity();
            }
        }
        let Some(s) = stream.as_mut() else { unreachable!("opened above") };
        if let Err(fault) = write_paced(s, &out, stall, &mut rate, &mut written, u64::MAX).await {
            return LaneEnd::WriteFailed(fault);
        }
        stats.bytes_out.fetch_add(out.len() as u64, Ordering::Relaxed);
        if protocol_bytes > 0 {
            stats.wrote(false, protocol_bytes);
        }
        out = BytesMut::new();
        batch = Vec::new();
    }
    // Protocol frames taken but not written (waiting for their deficit) go back to the peer's
    // queue, ahead of the rest, for its next writer.
    queue.unpop_protocol(std::mem::take(&mut turn.frames));
    if let Some(mut s) = stream {
        if let Err(fault) = finish_timed(&mut s, stall).await {
            return LaneEnd::WriteFailed(fault);
        }
        // The remote finishes its half once it has read ours to the end.
        let mut scratch = [0u8; 16];
        match s.read(&mut scratch).await {
            Ok(0) => {}
            Ok(_) => {
                return LaneEnd::Failed(Reason::ProtocolError(
                    "data on the receiving half of a message stream".into(),
                ));
            }
            Err(_) => return LaneEnd::WriteFailed(WriteFault::Io),
        }
    }
    drop(lease);
    queue.wake_if_pending();
    LaneEnd::Finished
}

/// How a lane writer must progress: each write within `stall`, and `min_rate` bytes per second
/// over every `window` while it has frames to write.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    pub(super) stall: Duration,
    pub(super) min_rate: u64,
    pub(super) window: Duration,
}

/// Reads the remote's message stream (its first frame already read) to its end, handing
/// application frames to the driver, then finishes our half to confirm.
pub(super) async fn read_messages(stream: Stream, ctx: &StreamCtx) -> LaneEnd {
    let config = &ctx.shared.config;
    let mut reader = FrameReader::new(stream, DEFAULT_CONTROL_CAP);
    loop {
        let frame = match reader.next(config, &ctx.stats, &ctx.limits).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(reason) => return LaneEnd::Failed(reason),
        };
        if frame.is_system() || frame.large {
            return LaneEnd::Failed(Reason::ProtocolError(format!(
                "system or large frame (opcode {}) on a message stream",
                frame.opcode
            )));
        }
        ctx.stats.msgs_in.fetch_add(1, Ordering::Relaxed);
        ctx.stats.app_activity();
        if super::send_to_driver(ctx, ConnEvent::Frame { conn: ctx.conn, frame }).await.is_err() {
            return LaneEnd::Failed(Reason::Local(DisconnectCode::SHUTDOWN));
        }
    }
    match finish_timed(reader.get_mut(), config.write_stall_timeout).await {
        Ok(()) => LaneEnd::Finished,
        Err(fault) => LaneEnd::WriteFailed(fault),
    }
}
