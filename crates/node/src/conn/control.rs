//! The control stream: a reader decoding frames up to the driver and a writer batching the
//! peer's queue into large writes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use futures::StreamExt as _;
use sinew_codec::messages::{ControlHello, Disconnect, DisconnectCode, MessageBody as _};
use sinew_codec::{Frame, FrameDecoder, Opcode};
use sinew_peers::ConnId;
use sinew_protocol::Reason;
use sinew_transport::Stream;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::{CLOSE_GRACE, ConnCommand, ConnEvent};
use crate::queue::PeerQueue;
use crate::shared::Shared;
use crate::stats::{ConnStats, RateLimiter};

/// Bytes of frames gathered into one write.
const BATCH_BYTES: usize = 256 * 1024;
/// Receive buffer of an idle control stream.
const IDLE_READ: usize = 256;

/// Reads frames until the remote finishes, errs or breaks the protocol.
pub(super) async fn read_loop(
    mut rd: ReadHalf<Stream>,
    conn: ConnId,
    shared: &Shared,
    stats: &ConnStats,
    to_driver: &mpsc::Sender<ConnEvent>,
    limiter: Option<Arc<RateLimiter>>,
) -> Reason {
    let config = &shared.config;
    let mut decoder = FrameDecoder::new(config.control_frame_cap);
    let mut unauthorized_limiter: Option<Box<RateLimiter>> = None;
    let mut buf = BytesMut::new();
    let mut goodbye: Option<Disconnect> = None;
    loop {
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Reason::ProtocolError(e.to_string()),
            };
            if !stats.is_authorized() && frame.encoded_len() > config.unauthorized_frame_cap {
                return Reason::ProtocolError(format!(
                    "frame of {} bytes from an unauthorized peer (cap {})",
                    frame.encoded_len(),
                    config.unauthorized_frame_cap
                ));
            }
            stats.msgs_in.fetch_add(1, Ordering::Relaxed);
            if frame.opcode.is_app() {
                stats.app_activity();
            }
            if frame.opcode == Opcode::DISCONNECT {
                goodbye = Disconnect::decode(frame.payload).ok().or(Some(Disconnect {
                    code: DisconnectCode::PROTOCOL_ERROR,
                    message: "malformed disconnect".into(),
                }));
                continue;
            }
            if goodbye.is_some() {
                continue; // nothing after a goodbye counts
            }
            if to_driver.send(ConnEvent::Frame { conn, frame }).await.is_err() {
                return Reason::Local(DisconnectCode::SHUTDOWN);
            }
        }
        if buf.is_empty() {
            // Idle connections hold no receive buffer; the next read allocates one.
            buf = BytesMut::new();
        }
        let read = if buf.is_empty() {
            // Idle: a small buffer for the pings and small messages that usually come next;
            // it grows with what arrives.
            buf.reserve(IDLE_READ);
            Ok(rd.read_buf(&mut buf).await)
        } else {
            // A partial frame must make progress (slow-loris).
            buf.reserve(decoder.read_hint(&buf));
            Box::pin(tokio::time::timeout(config.frame_stall_timeout, rd.read_buf(&mut buf))).await
        };
        let n = match read {
            Err(_) => return Reason::ProtocolError("a partial frame made no progress".into()),
            Ok(Err(_)) => return goodbye.map_or(Reason::ConnectionLost, remote_reason),
            Ok(Ok(0)) => {
                return match goodbye {
                    Some(goodbye) => remote_reason(goodbye),
                    None if buf.is_empty() => Reason::ConnectionLost,
                    None => Reason::ProtocolError("stream ended inside a frame".into()),
                };
            }
            Ok(Ok(n)) => n,
        };
        stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(wait) = limiter.as_ref().and_then(|l| l.throttle(n)) {
            wait.await;
        }
        if !stats.is_authorized() {
            let limiter = unauthorized_limiter
                .get_or_insert_with(|| Box::new(RateLimiter::new(config.unauthorized_rate)));
            if let Some(wait) = limiter.throttle(n) {
                wait.await;
            }
        }
    }
}

fn remote_reason(goodbye: Disconnect) -> Reason {
    Reason::Remote { code: goodbye.code, message: goodbye.message }
}

/// How the writer ended.
pub(super) enum WriterExit {
    /// Said goodbye as a duplicate; the reader goes on until the remote finishes.
    Drained,
    /// Said goodbye and closed.
    Closed(DisconnectCode),
    /// The stream failed.
    Failed,
}

struct Writer<'a> {
    wr: WriteHalf<Stream>,
    out: BytesMut,
    stats: &'a ConnStats,
}

impl Writer<'_> {
    fn encode(&mut self, frame: &Frame) {
        frame.encode(&mut self.out);
        self.stats.msgs_out.fetch_add(1, Ordering::Relaxed);
        if frame.opcode.is_app() {
            self.stats.app_activity();
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.wr.write_all(&self.out).await?;
        self.wr.flush().await?;
        self.stats.bytes_out.fetch_add(self.out.len() as u64, Ordering::Relaxed);
        // Idle connections hold no write buffer; the next batch allocates one.
        self.out = BytesMut::new();
        Ok(())
    }

    async fn goodbye(&mut self, code: DisconnectCode, message: String) -> std::io::Result<()> {
        let goodbye = Disconnect { code, message };
        self.encode(&Frame::message(Opcode::DISCONNECT, goodbye.encode()));
        tokio::time::timeout(CLOSE_GRACE, async {
            self.flush().await?;
            self.wr.shutdown().await
        })
        .await
        .unwrap_or(Ok(()))
    }
}

async fn queue_ready(queue: Option<&Arc<PeerQueue>>) {
    match queue {
        Some(queue) => queue.ready().await,
        None => std::future::pending().await,
    }
}

/// Writes frames: commands for this connection first, then the peer's queue when this
/// connection is the active one, in batches of up to 256 KiB per write.
pub(super) async fn write_loop(
    wr: WriteHalf<Stream>,
    commands: &mut futures::channel::mpsc::Receiver<ConnCommand>,
    hello: bool,
    stats: &ConnStats,
) -> WriterExit {
    let mut w = Writer { wr, out: BytesMut::new(), stats };
    let mut queue: Option<Arc<PeerQueue>> = None;
    let mut batch = Vec::new();
    if hello {
        let hello = ControlHello { version: super::CONTROL_VERSION };
        w.encode(&Frame::message(Opcode::CONTROL_STREAM, hello.encode()));
    }
    loop {
        if let Some(q) = &queue {
            q.pop_batch(BATCH_BYTES, &mut batch);
            for frame in batch.drain(..) {
                w.encode(&frame);
            }
        }
        if !w.out.is_empty() {
            if w.flush().await.is_err() {
                return WriterExit::Failed;
            }
            batch = Vec::new();
            continue; // more may have been queued meanwhile
        }
        tokio::select! {
            biased;
            command = commands.next() => match command {
                Some(ConnCommand::Activate(q)) => queue = Some(q),
                Some(ConnCommand::Direct(frame)) => w.encode(&frame),
                Some(ConnCommand::Drain) => {
                    return match Box::pin(w.goodbye(DisconnectCode::DUPLICATE, String::new())).await {
                        Ok(()) => WriterExit::Drained,
                        Err(_) => WriterExit::Failed,
                    };
                }
                Some(ConnCommand::Close(code, message)) => {
                    let _ = Box::pin(w.goodbye(code, message)).await;
                    return WriterExit::Closed(code);
                }
                None => {
                    let _ = Box::pin(w.goodbye(DisconnectCode::SHUTDOWN, String::new())).await;
                    return WriterExit::Closed(DisconnectCode::SHUTDOWN);
                }
            },
            () = queue_ready(queue.as_ref()) => {}
        }
    }
}
