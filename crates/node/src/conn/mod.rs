//! One task per connection. It owns the control stream (the system lane: a reader and a
//! writer of their own), the message stream it writes (its application lane, while the
//! connection carries the peer queue) and the one the remote writes, and it accepts the other
//! streams the remote opens. It talks to the driver through two bounded channels: frames and
//! its end go up ([`ConnEvent`], the sender waits when full: backpressure down to TCP),
//! commands come down ([`ConnCommand`]; a full channel makes the driver deliver from a task).
//! System frames reach it through its [`SystemQueue`], which the driver fills directly.
//!
//! # Closing
//!
//! Every close runs against a deadline, whatever the remote does:
//! - **Graceful** (shutdown, idle, removed, a duplicate drained, a remote `DISCONNECT`): the
//!   message writer stops at a batch boundary, finishes its stream and waits for the remote
//!   to confirm it read it (its FIN); then the control stream writes what the system queue
//!   holds, `DISCONNECT` (unless answering the remote's), and finishes. The task keeps
//!   reading until the remote has finished both of its lanes. So the remote reads every
//!   application frame sent before the goodbye, before the goodbye.
//! - **Fast** (a protocol error, flooding, a ping timeout, or a second close during a
//!   graceful one): the message writer is dropped and `DISCONNECT` with the code and reason
//!   is written at once.
//!
//! Then the muxer is closed (bounded too) and [`ConnEvent::Closed`] sent, exactly once.

mod control;
pub(crate) mod frames;
mod inbound;
mod message_slot;
mod messages;
pub(crate) mod outbound;
mod rate;
pub(crate) mod system;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt as _;
use sinew_codec::messages::{CONTROL_VERSION, DisconnectCode};
use sinew_codec::{Frame, SYSTEM_FRAME_CAP};
use sinew_peers::ConnId;
use sinew_protocol::Reason;
use sinew_transport::{Connection, MuxedConnection, Stream};
use sinew_types::{Direction, PeerId};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::frames::{FrameReader, ReadLimits};
use self::messages::LaneEnd;
use self::system::SystemQueue;
use crate::queue::PeerQueue;
use crate::shared::Shared;
use crate::stats::ConnStats;

/// From a connection task (or a dial/upgrade task) to the driver.
pub(crate) enum ConnEvent {
    /// An outbound dial finished.
    Dialed { conn: ConnId, result: Result<Box<Connection>, Arc<sinew_transport::DialError>> },
    /// An inbound upgrade finished.
    Upgraded {
        conn: ConnId,
        remote: std::net::SocketAddr,
        result: Result<Box<Connection>, Arc<sinew_transport::UpgradeError>>,
    },
    /// A frame arrived (on a lane, or a large message on its own stream).
    Frame { conn: ConnId, frame: Frame },
    /// An inbound large transfer started (its header arrived).
    TransferStarted { conn: ConnId, start: sinew_protocol::TransferStart },
    /// The remote said goodbye on the control stream.
    Goodbye { conn: ConnId, code: DisconnectCode },
    /// Application traffic or streams, for the idle deadline.
    Activity { conn: ConnId, kind: Activity },
    /// The connection ended.
    Closed { conn: ConnId, reason: Reason },
}

/// What kind of application activity a connection saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activity {
    /// Application frames were sent.
    Traffic,
    /// An application stream opened or closed: the driver reads the count.
    Streams,
    /// A writer wrote what the host handed it: the driver reads how much, for the host's
    /// write credit.
    Written,
}

/// From the driver to a connection task.
#[derive(Debug)]
pub(crate) enum ConnCommand {
    /// This connection now carries the peer's queue.
    Activate(Arc<PeerQueue>),
    /// A duplicate: close gracefully with `DUPLICATE`, after what was already written.
    Drain,
    /// Close with a reason; `graceful` as described in the module docs.
    Close { code: DisconnectCode, message: String, graceful: bool },
}

/// Everything a connection task needs.
pub(crate) struct ConnTask {
    pub(crate) conn: ConnId,
    pub(crate) peer: PeerId,
    pub(crate) connection: Connection,
    pub(crate) shared: Arc<Shared>,
    pub(crate) stats: Arc<ConnStats>,
    pub(crate) system: Arc<SystemQueue>,
    pub(crate) to_driver: mpsc::Sender<ConnEvent>,
    pub(crate) commands: futures::channel::mpsc::Receiver<ConnCommand>,
}

/// Handed to each inbound stream's task, and to the lanes' readers.
#[derive(Clone)]
pub(crate) struct StreamCtx {
    pub(crate) conn: ConnId,
    pub(crate) peer: PeerId,
    pub(crate) shared: Arc<Shared>,
    pub(crate) stats: Arc<ConnStats>,
    pub(crate) to_driver: mpsc::Sender<ConnEvent>,
    pub(crate) limits: Arc<ReadLimits>,
    /// This connection's share of the node's large-message receive budget.
    pub(crate) large_share: Arc<crate::budget::ByteBudget>,
    /// Where the remote's message stream goes.
    /// Where the remote's message stream goes.
    pub(crate) messages: Arc<message_slot::MessageSlot>,
}

impl ConnTask {
    /// Runs the connection to its end. The task is taken apart before the future is made, so
    /// the future keeps only what the connection needs (not the handshake's connection info);
    /// one-off phases (setting up the control stream, closing) run as boxed futures, so the
    /// long-lived state machine of an idle connection stays small.
    pub(crate) fn run(self) -> impl Future<Output = ()> + Send + 'static {
        let Self { conn, peer, connection, shared, stats, system, to_driver, commands } = self;
        let Connection { muxer, info } = connection;
        let direction = info.direction;
        drop(info);
        let ctx = StreamCtx {
            conn,
            peer,
            limits: Arc::new(ReadLimits::new(&shared.config)),
            large_share: Arc::new(crate::budget::ByteBudget::new(
                shared.config.large_message_share,
            )),
            shared,
            stats,
            to_driver,
            messages: Arc::default(),
        };
        run_connection(ctx, muxer, direction, system, commands)
    }
}

async fn run_connection(
    ctx: StreamCtx,
    muxer: MuxedConnection,
    direction: Direction,
    system: Arc<SystemQueue>,
    mut commands: futures::channel::mpsc::Receiver<ConnCommand>,
) {
    let setup = Box::pin(control_stream(&muxer, direction, &ctx));
    let reason = match setup.await {
        Ok(stream) => {
            // The remote's other streams, from now on.
            let acceptor = inbound::accept_loop(&muxer, &ctx);
            tokio::pin!(acceptor);
            let lanes = Lanes { ctx: &ctx, muxer: &muxer, system: &system, direction };
            lanes.run(stream, acceptor.as_mut(), &mut commands).await
        }
        Err(reason) => reason,
    };
    system.finish(None);
    let (conn, grace) = (ctx.conn, ctx.shared.config.close_grace);
    tracing::debug!(%conn, peer = %ctx.peer, %reason, "connection closed");
    Box::pin(async move {
        // Reported first: the lanes are done, and closing the muxer (flushing yamux's
        // GoAway) may take its whole grace period on a peer that stopped reading.
        let _ = ctx.to_driver.send(ConnEvent::Closed { conn, reason }).await;
        let _ = tokio::time::timeout(grace, muxer.close()).await;
    })
    .await;
}

/// Gets the control stream: the dialler opens it (its writer sends the hello), the listener
/// accepts the remote's (taking any other stream that comes first to its own task) and checks
/// its version.
async fn control_stream(
    muxer: &MuxedConnection,
    direction: Direction,
    ctx: &StreamCtx,
) -> Result<Stream, Reason> {
    let setup_timeout = ctx.shared.config.setup_timeout;
    match direction {
        Direction::Outbound => match tokio::time::timeout(setup_timeout, muxer.open_stream()).await
        {
            Ok(Ok(mut stream)) => {
                // The system lane: its frames never wait behind other streams' data.
                stream.set_priority(true);
                Ok(stream)
            }
            Ok(Err(_)) => Err(Reason::ConnectionLost),
            Err(_) => Err(Reason::ProtocolError("could not open the control stream".into())),
        },
        Direction::Inbound => {
            let (mut stream, version) =
                tokio::time::timeout(setup_timeout, inbound::control_stream(muxer, ctx))
                    .await
                    .map_err(|_| Reason::ProtocolError("no control stream".into()))??;
            stream.set_priority(true);
            if version != CONTROL_VERSION {
                let message =
                    format!("control stream version {version}; this node speaks {CONTROL_VERSION}");
                let goodbye = control::goodbye(DisconnectCode::UNSUPPORTED_VERSION, &message);
                let stall = ctx.shared.config.close_grace;
                let _ = tokio::time::timeout(stall, async {
                    stream.write_all(&goodbye.to_bytes()).await?;
                    stream.shutdown().await
                })
                .await;
                return Err(Reason::ProtocolError(message));
            }
            Ok(stream)
        }
    }
}

/// The lanes of an established connection.
struct Lanes<'a> {
    ctx: &'a StreamCtx,
    muxer: &'a MuxedConnection,
    system: &'a Arc<SystemQueue>,
    direction: Direction,
}

/// A close in progress.
struct Closing {
    reason: Reason,
    deadline: Instant,
    /// The frame to write after the message lane is done (`None`: answering a goodbye).
    goodbye: Option<Frame>,
    /// Whether the system queue was finished (the goodbye handed to its writer).
    finished: bool,
    /// A fast close ends once the goodbye is written; a graceful one also waits for the
    /// remote to finish its lanes.
    fast: bool,
    /// The muxer ended: only buffered data can still be read.
    ended: bool,
}

/// Polls an optional future; pending while there is none.
async fn optional<F: Future + Unpin>(future: &mut Option<F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`; pending while there is none. The timer is boxed, so the lanes'
/// state machine does not carry one while no close is under way.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => Box::pin(tokio::time::sleep_until(at)).await,
        None => std::future::pending().await,
    }
}

/// Wakes the peer queue's next writer when a connection that carried it ends, if frames wait
/// (a wake-up taken by this connection's writer, or missed, is not lost for the next one).
struct WakeNext(Arc<PeerQueue>);

impl Drop for WakeNext {
    fn drop(&mut self) {
        self.0.wake_if_pending();
    }
}

/// Waits until `queue` may have frames (or protocol frames arrived: they wake it too);
/// pending while there is none.
async fn queue_ready(queue: Option<Arc<PeerQueue>>) {
    match queue {
        Some(queue) => queue.ready().await,
        None => std::future::pending().await,
    }
}

impl Lanes<'_> {
    /// Runs the lanes until the connection ends; returns why.
    async fn run(
        &self,
        stream: Stream,
        mut acceptor: Pin<&mut impl Future<Output = ()>>,
        commands: &mut futures::channel::mpsc::Receiver<ConnCommand>,
    ) -> Reason {
        let ctx = self.ctx;
        let config = &ctx.shared.config;
        let stall = config.write_stall_timeout;
        let (rd, wr) = tokio::io::split(stream);
        let first = if self.direction == Direction::Outbound {
            control::hello(&ctx.stats)
        } else {
            BytesMut::new()
        };
        // Boxed: each is sized exactly, and the outer state machine holds pointers.
        let mut sys_rd =
            Some(Box::pin(control::read_system(FrameReader::new(rd, SYSTEM_FRAME_CAP), ctx)));
        let mut sys_wr =
            Some(Box::pin(control::write_system(wr, self.system, &ctx.stats, stall, first)));
        let mut sys_drain = None;
        let mut msg_wr = None;
        let mut msg_stop = CancellationToken::new();
        let mut activated = false;
        // The queue this connection carries while its writer has not started.
        let mut idle_queue: Option<Arc<PeerQueue>> = None;
        let mut _wake_next: Option<WakeNext> = None;
        let mut msg_rd = None;
        let mut closing: Option<Closing> = None;
        let mut commands_done = false;
        let mut accepting_done = false;
        loop {
            tokio::select! {
                command = commands.next(), if !commands_done => match command {
                    Some(ConnCommand::Activate(queue)) => {
                        if closing.is_none() && !activated {
                            activated = true;
                            // Whatever happens to this connection, the peer's next writer is
                            // woken at its end if frames wait.
                            _wake_next = Some(WakeNext(queue.clone()));
                            if queue.has_pending() {
                                // Frames already wait (their wake-up may have gone to another
                                // connection's writer): start writing now.
                                msg_stop = CancellationToken::new();
                                msg_wr = Some(Box::pin(self.message_writer(queue, msg_stop.clone())));
                            } else {
                                // The writer starts with the first frame: until then an idle
                                // connection holds a wait on the queue, not a writer.
                                idle_queue = Some(queue);
                            }
                        }
                    }
                    Some(ConnCommand::Drain) => {
                        let deadline = config.peers.drain_timeout + config.close_grace;
                        self.close(&mut closing, &mut msg_wr, Reason::Local(DisconnectCode::DUPLICATE),
                            Some(control::goodbye(DisconnectCode::DUPLICATE, "")), Some(deadline));
                    }
                    Some(ConnCommand::Close { code, message, graceful }) => {
                        let goodbye = Some(control::goodbye(code, &message));
                        let grace = graceful.then_some(config.close_grace);
                        self.close(&mut closing, &mut msg_wr, Reason::Local(code), goodbye, grace);
                    }
                    None => {
                        // The driver is gone.
                        commands_done = true;
                        let goodbye = Some(control::goodbye(DisconnectCode::SHUTDOWN, ""));
                        self.close(&mut closing, &mut msg_wr, Reason::Local(DisconnectCode::SHUTDOWN), goodbye, None);
                    }
                },
                end = optional(&mut sys_rd) => {
                    sys_rd = None;
                    match end {
                        control::ReadEnd::Goodbye(goodbye, reader) => {
                            sys_drain = Some(Box::pin(control::drain(reader, ctx)));
                            let code = goodbye.code;
                            if send_to_driver(ctx, ConnEvent::Goodbye { conn: ctx.conn, code }).await.is_err() {
                                return Reason::Local(DisconnectCode::SHUTDOWN);
                            }
                            // Answered by finishing our lanes (no goodbye of our own). During a
                            // close of our own (both sides closing at once) ours goes on.
                            let reason = Reason::Remote { code, message: goodbye.message };
                            match &mut closing {
                                None => self.close(&mut closing, &mut msg_wr, reason, None, Some(config.close_grace)),
                                // The muxer ended with the goodbye still buffered: that is why.
                                Some(c) if c.ended => c.reason = reason,
                                Some(_) => {}
                            }
                        }
                        control::ReadEnd::Eof if closing.is_some() => {}
                        control::ReadEnd::Eof => return Reason::ConnectionLost,
                        control::ReadEnd::Failed(reason) => {
                            if let Some(reason) = self.fail(&mut closing, &mut msg_wr, reason) {
                                return reason;
                            }
                        }
                    }
                }
                () = optional(&mut sys_drain) => sys_drain = None,
                end = optional(&mut sys_wr) => {
                    sys_wr = None;
                    match end {
                        control::WriteEnd::Finished => {}
                        control::WriteEnd::Failed(_) if closing.as_ref().is_some_and(|c| c.ended) => {}
                        control::WriteEnd::Failed(fault) => {
                            return closing.map_or_else(|| write_fault(fault), |c| c.reason);
                        }
                    }
                }
                end = optional(&mut msg_wr) => {
                    msg_wr = None;
                    match end {
                        LaneEnd::Finished => {}
                        LaneEnd::WriteFailed(_) if closing.as_ref().is_some_and(|c| c.ended) => {}
                        LaneEnd::WriteFailed(frames::WriteFault::Stalled) if closing.is_none() && sys_wr.is_some() => {
                            // Only the message lane stalled: say so on the control stream.
                            let code = DisconnectCode::STALLED;
                            let goodbye = control::goodbye(code, "our message stream made no progress");
                            self.close(&mut closing, &mut msg_wr, Reason::Local(code), Some(goodbye), None);
                        }
                        LaneEnd::WriteFailed(fault) => {
                            return closing.map_or_else(|| write_fault(fault), |c| c.reason);
                        }
                        LaneEnd::Failed(reason) => {
                            if let Some(reason) = self.fail(&mut closing, &mut msg_wr, reason) {
                                return reason;
                            }
                        }
                    }
                }
                end = optional(&mut msg_rd) => {
                    msg_rd = None;
                    match end {
                        LaneEnd::Finished => {}
                        LaneEnd::WriteFailed(_) => {
                            if let Some(c) = closing { return c.reason }
                        }
                        LaneEnd::Failed(reason) => {
                            if let Some(reason) = self.fail(&mut closing, &mut msg_wr, reason) {
                                return reason;
                            }
                        }
                    }
                }
                () = queue_ready(idle_queue.clone()), if closing.is_none() => {
                    let Some(queue) = idle_queue.take() else { continue };
                    msg_stop = CancellationToken::new();
                    msg_wr = Some(Box::pin(self.message_writer(queue, msg_stop.clone())));
                }
                stream = ctx.messages.take() => match stream {
                    Ok(stream) => msg_rd = Some(Box::pin(messages::read_messages(*stream, ctx))),
                    Err(message_slot::SecondStream) => {
                        let reason = Reason::ProtocolError("a second message stream".into());
                        if let Some(reason) = self.fail(&mut closing, &mut msg_wr, reason) {
                            return reason;
                        }
                    }
                },
                () = &mut acceptor, if !accepting_done => {
                    // The muxer ended (the remote closed it, or it failed). What arrived before
                    // stays readable: let the readers drain it (a goodbye may be in there),
                    // briefly; nothing can be written any more.
                    accepting_done = true;
                    msg_wr = None;
                    let deadline = Instant::now() + config.close_grace;
                    match &mut closing {
                        Some(c) => {
                            c.ended = true;
                            c.deadline = c.deadline.min(deadline);
                        }
                        None => {
                            closing = Some(Closing {
                                reason: Reason::ConnectionLost,
                                deadline,
                                goodbye: None,
                                finished: false,
                                fast: false,
                                ended: true,
                            });
                        }
                    }
                }
                () = sleep_until(closing.as_ref().map(|c| c.deadline)) => {
                    return closing.map_or(Reason::ConnectionLost, |c| c.reason);
                }
            }
            if let Some(c) = &mut closing {
                msg_stop.cancel();
                if msg_wr.is_none() && !c.finished {
                    c.finished = true;
                    if c.fast {
                        self.system.finish_now(c.goodbye.take());
                    } else {
                        self.system.finish(c.goodbye.take());
                    }
                }
                let lanes_done = sys_rd.is_none() && sys_drain.is_none() && msg_rd.is_none();
                if sys_wr.is_none() && (c.fast || lanes_done) {
                    return c.reason.clone();
                }
            }
        }
    }

    /// The message lane's writer for `queue` (see `messages::write_messages`).
    fn message_writer(
        &self,
        queue: Arc<PeerQueue>,
        stop: CancellationToken,
    ) -> impl Future<Output = LaneEnd> + '_ {
        let config = &self.ctx.shared.config;
        let pace = messages::Pace {
            stall: config.write_stall_timeout,
            min_rate: config.lane_min_rate,
            window: config.frame_stall_timeout,
        };
        messages::write_messages(self.muxer.clone(), queue, stop, &self.ctx.stats, pace)
    }

    /// Starts closing, or speeds up a close in progress. `grace: Some` is a graceful close
    /// within that time; `None` a fast one.
    fn close<F>(
        &self,
        closing: &mut Option<Closing>,
        msg_wr: &mut Option<F>,
        reason: Reason,
        goodbye: Option<Frame>,
        grace: Option<Duration>,
    ) {
        let fast_deadline = Instant::now() + self.ctx.shared.config.close_grace;
        match closing {
            Some(c) if grace.is_some() => {
                // Another graceful close (the manager drains what the remote already closes):
                // the close in progress goes on, within the earlier deadline.
                if let Some(grace) = grace {
                    c.deadline = c.deadline.min(Instant::now() + grace);
                }
            }
            Some(c) => {
                // A fast close during a graceful one: stop waiting for the message lane.
                *msg_wr = None;
                c.deadline = c.deadline.min(fast_deadline);
                c.fast = true;
            }
            None => {
                let deadline = match grace {
                    Some(grace) => Instant::now() + grace,
                    None => {
                        *msg_wr = None;
                        fast_deadline
                    }
                };
                let fast = grace.is_none();
                *closing = Some(Closing {
                    reason,
                    deadline,
                    goodbye,
                    finished: false,
                    fast,
                    ended: false,
                });
            }
        }
    }

    /// A lane failed: a protocol error closes fast with `DISCONNECT` (returns `None`);
    /// anything else (the connection broke, the node is stopping) ends at once (`Some`).
    fn fail<F>(
        &self,
        closing: &mut Option<Closing>,
        msg_wr: &mut Option<F>,
        reason: Reason,
    ) -> Option<Reason> {
        let Reason::ProtocolError(detail) = &reason else {
            return Some(closing.take().map_or(reason, |c| c.reason));
        };
        tracing::debug!(conn = %self.ctx.conn, %detail, "protocol error");
        // Already closing: the first reason stays, and the close speeds up.
        let goodbye = control::goodbye(DisconnectCode::PROTOCOL_ERROR, detail);
        self.close(closing, msg_wr, reason, Some(goodbye), None);
        None
    }
}

fn write_fault(fault: frames::WriteFault) -> Reason {
    match fault {
        frames::WriteFault::Io => Reason::ConnectionLost,
        frames::WriteFault::Stalled => Reason::Local(DisconnectCode::STALLED),
    }
}

/// Sends `event` to the driver: at once when there is room, else waiting (boxed, so that the
/// readers' state machines do not carry a send in progress while they wait for bytes).
async fn send_to_driver(
    ctx: &StreamCtx,
    event: ConnEvent,
) -> Result<(), mpsc::error::SendError<ConnEvent>> {
    match ctx.to_driver.try_send(event) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(event)) => Box::pin(ctx.to_driver.send(event)).await,
        Err(mpsc::error::TrySendError::Closed(event)) => Err(mpsc::error::SendError(event)),
    }
}
