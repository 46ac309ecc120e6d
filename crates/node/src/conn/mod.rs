//! One task per connection: it owns the control stream (a reader and a writer running
//! concurrently, so neither side can deadlock the other) and accepts the streams the remote
//! opens. It talks to the driver through two bounded channels: frames and its end go up
//! ([`ConnEvent`], the sender waits when full: backpressure down to TCP), commands come down
//! ([`ConnCommand`], the driver uses `try_send`; a full channel drops a ping, which the ping
//! deadline then counts as missed). The command channel is a `futures` channel: it allocates
//! per message, not a block of slots up front, which keeps idle connections small.

mod control;
mod inbound;
pub(crate) mod outbound;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sinew_codec::Frame;
use sinew_codec::messages::DisconnectCode;
use sinew_peers::ConnId;
use sinew_protocol::Reason;
use sinew_transport::{Connection, MuxedConnection, Stream};
use sinew_types::{Direction, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::queue::PeerQueue;
use crate::shared::Shared;
use crate::stats::{ConnStats, RateLimiter};

/// Control protocol version sent in [`ControlHello`].
pub(crate) const CONTROL_VERSION: u16 = 1;
/// How long a closing connection waits for its goodbye to be written and the remote to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// From a connection task (or a dial/upgrade task) to the driver.
pub(crate) enum ConnEvent {
    /// An outbound dial finished.
    Dialed { conn: ConnId, result: Result<Box<Connection>, Arc<sinew_transport::DialError>> },
    /// An inbound upgrade finished.
    Upgraded { conn: ConnId, remote: std::net::SocketAddr, result: Result<Box<Connection>, String> },
    /// A frame arrived (control stream, or a large message on its own stream).
    Frame { conn: ConnId, frame: Frame },
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
    /// An application stream opened.
    StreamOpened,
    /// An application stream closed.
    StreamClosed,
}

/// From the driver to a connection task.
#[derive(Debug)]
pub(crate) enum ConnCommand {
    /// This connection now carries the peer's queue.
    Activate(Arc<PeerQueue>),
    /// Send a frame on this connection in particular (pings).
    Direct(Frame),
    /// A duplicate: say goodbye after what is queued, keep reading until the remote finishes.
    Drain,
    /// Close with a reason.
    Close(DisconnectCode, String),
}

/// Everything a connection task needs.
pub(crate) struct ConnTask {
    pub(crate) conn: ConnId,
    pub(crate) peer: PeerId,
    pub(crate) connection: Connection,
    pub(crate) shared: Arc<Shared>,
    pub(crate) stats: Arc<ConnStats>,
    pub(crate) to_driver: mpsc::Sender<ConnEvent>,
    pub(crate) commands: futures::channel::mpsc::Receiver<ConnCommand>,
}

/// Handed to each inbound stream's task.
#[derive(Clone)]
pub(crate) struct StreamCtx {
    pub(crate) conn: ConnId,
    pub(crate) peer: PeerId,
    pub(crate) shared: Arc<Shared>,
    pub(crate) stats: Arc<ConnStats>,
    pub(crate) to_driver: mpsc::Sender<ConnEvent>,
    pub(crate) limiter: Option<Arc<RateLimiter>>,
    /// Where the remote's control stream goes (inbound connections); taken once.
    pub(crate) control: Arc<Mutex<Option<oneshot::Sender<Stream>>>>,
}

impl ConnTask {
    /// Runs the connection to its end. One-off phases (setting up the control stream, closing)
    /// run as boxed futures so the long-lived state machine of an idle connection stays small.
    pub(crate) async fn run(self) {
        let Self { conn, peer, connection, shared, stats, to_driver, mut commands } = self;
        let Connection { muxer, info } = connection;
        let direction = info.direction;
        drop(info);
        let limiter = shared.config.recv_rate_limit.map(|rate| Arc::new(RateLimiter::new(rate)));
        let (control_tx, control_rx) = oneshot::channel();
        let ctx = StreamCtx {
            conn,
            peer,
            shared: shared.clone(),
            stats: stats.clone(),
            to_driver: to_driver.clone(),
            limiter: limiter.clone(),
            control: Arc::new(Mutex::new(Some(control_tx))),
        };
        let acceptor = inbound::accept_loop(muxer.clone(), ctx);
        tokio::pin!(acceptor);
        let setup_timeout = shared.config.tcp.noise.handshake_timeout;
        let control = Box::pin(control_stream(
            &muxer,
            direction,
            control_rx,
            setup_timeout,
            acceptor.as_mut(),
        ))
        .await;
        let reason = match control {
            Ok(stream) => {
                let (rd, wr) = tokio::io::split(stream);
                let hello = direction == Direction::Outbound;
                // Boxed: each is sized exactly, and the outer state machine holds two pointers.
                let mut reader =
                    Box::pin(control::read_loop(rd, conn, &shared, &stats, &to_driver, limiter));
                let mut writer = Box::pin(control::write_loop(wr, &mut commands, hello, &stats));
                let mut writer_done = false;
                loop {
                    tokio::select! {
                        reason = &mut reader => break reason,
                        exit = &mut writer, if !writer_done => match exit {
                            control::WriterExit::Drained => writer_done = true,
                            control::WriterExit::Closed(code) => {
                                // Give the remote a moment to read our goodbye and finish.
                                let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, &mut reader)).await;
                                break Reason::Local(code);
                            }
                            control::WriterExit::Failed => break Reason::ConnectionLost,
                        },
                        () = &mut acceptor => break Reason::ConnectionLost,
                    }
                }
            }
            Err(reason) => reason,
        };
        tracing::debug!(%conn, peer = %peer, %reason, "connection closed");
        Box::pin(async move {
            let _ = tokio::time::timeout(CLOSE_GRACE, muxer.close()).await;
            let _ = to_driver.send(ConnEvent::Closed { conn, reason }).await;
        })
        .await;
    }
}

/// Gets the control stream: the dialler opens it, the listener waits for the remote's.
async fn control_stream(
    muxer: &MuxedConnection,
    direction: Direction,
    control_rx: oneshot::Receiver<Stream>,
    setup_timeout: Duration,
    acceptor: Pin<&mut impl Future<Output = ()>>,
) -> Result<Stream, Reason> {
    match direction {
        Direction::Outbound => tokio::select! {
            stream = muxer.open_stream() => stream.map_err(|_| Reason::ConnectionLost),
            () = acceptor => Err(Reason::ConnectionLost),
        },
        Direction::Inbound => tokio::select! {
            stream = tokio::time::timeout(setup_timeout, control_rx) => match stream {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(_)) => Err(Reason::ConnectionLost),
                Err(_) => Err(Reason::ProtocolError("no control stream".into())),
            },
            () = acceptor => Err(Reason::ConnectionLost),
        },
    }
}
