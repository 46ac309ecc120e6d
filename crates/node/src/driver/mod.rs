//! The driver: one task owning the sans-IO [`Host`]. It reads the clock, feeds the host what
//! the connection tasks, listeners and `Node` handles report, and turns the host's outputs into
//! I/O on connection tasks (see `outputs.rs`).

mod conn_events;
mod convert;
mod dial;
mod outputs;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sinew_codec::messages::DisconnectCode;
use sinew_host::{Host, PingId};
use sinew_peers::{ConnId, DialTicket};
use sinew_protocol::{Protocol, ProtocolId};
use sinew_transport::{Incoming, MuxedConnection};
use sinew_types::{Addr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::conn::system::SystemQueue;
use crate::conn::{ConnCommand, ConnEvent};
use crate::error::{DialError, RegisterError};
use crate::feed::FeedQueue;
use crate::queue::PeerQueue;
use crate::shared::Shared;
use crate::state::NetworkState;
use crate::stats::ConnStats;

/// Refused sockets kept at once to deliver their refusal record (each for at most a second);
/// beyond that, refused sockets are closed without one.
pub(crate) use convert::dial_failure;

pub(crate) const REFUSALS_IN_FLIGHT: usize = 64;

/// From `Node` handles to the driver.
pub(crate) enum Command {
    Dial {
        addr: Addr,
        reply: oneshot::Sender<Result<PeerId, DialError>>,
    },
    /// Connect to a known peer using the address book (a send to a disconnected peer).
    Connect {
        peer: PeerId,
        reply: oneshot::Sender<Result<PeerId, DialError>>,
    },
    AddPeer {
        addr: Addr,
        reply: oneshot::Sender<Result<(), DialError>>,
    },
    RemovePeer {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    Authorize {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    Disconnect {
        peer: PeerId,
        code: DisconnectCode,
        reply: oneshot::Sender<bool>,
    },
    /// An application ping on the system lane.
    Ping {
        peer: PeerId,
        reply: oneshot::Sender<Result<Duration, crate::RequestError>>,
    },
    Register {
        protocol: Box<dyn Protocol>,
        /// Where its notices go (a protocol registered with a handle).
        feed: Option<Arc<FeedQueue>>,
        reply: oneshot::Sender<Result<ProtocolId, RegisterError>>,
    },
    /// An application command for a protocol (see `sinew_protocol::Commands`).
    Call {
        id: ProtocolId,
        command: sinew_protocol::Erased,
        reply: oneshot::Sender<Result<sinew_protocol::Erased, sinew_host::CallError>>,
    },
    Unregister {
        id: ProtocolId,
        reply: oneshot::Sender<bool>,
    },
    State {
        reply: oneshot::Sender<NetworkState>,
    },
    /// The advertised addresses changed: tell the protocols and the application.
    AddressesChanged,
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// An established connection: its task and what the driver hands it.
pub(crate) struct ConnEntry {
    pub(crate) commands: futures::channel::mpsc::Sender<ConnCommand>,
    pub(crate) stats: Arc<ConnStats>,
    pub(crate) muxer: MuxedConnection,
    /// Its system lane (which also holds protocol frames for its message lane).
    pub(crate) system: Arc<SystemQueue>,
    /// Its task, aborted if it outlives shutdown's grace period.
    pub(crate) task: tokio::task::AbortHandle,
    /// How its handshake secured it.
    pub(crate) security: sinew_transport::Security,
}

impl ConnEntry {
    /// Sends a command; if the channel is full, delivers it from a task (commands that must
    /// not be lost: close, drain, activate).
    pub(crate) fn command(&self, command: ConnCommand) {
        let mut tx = self.commands.clone();
        if let Err(error) = tx.try_send(command)
            && error.is_full()
        {
            let command = error.into_inner();
            tokio::spawn(async move {
                use futures::SinkExt as _;
                let _ = tx.send(command).await;
            });
        }
    }
}

pub(crate) struct Driver {
    host: Host,
    shared: Arc<Shared>,
    conns: BTreeMap<ConnId, Box<ConnEntry>>,
    /// Dials and upgrades in progress, to abort on shutdown.
    pending: BTreeMap<ConnId, tokio::task::AbortHandle>,
    dial_waiters: BTreeMap<ConnId, Vec<oneshot::Sender<Result<PeerId, DialError>>>>,
    dial_errors: BTreeMap<ConnId, DialError>,
    ping_waiters: BTreeMap<PingId, oneshot::Sender<Result<Duration, crate::RequestError>>>,
    /// Protocols' feeds to the application.
    feeds: BTreeMap<ProtocolId, Arc<FeedQueue>>,
    /// Peers' outbound queues; a persistent peer's survives its disconnection.
    queues: BTreeMap<PeerId, Arc<PeerQueue>>,
    /// Refused sockets being told why, at most [`REFUSALS_IN_FLIGHT`] at once.
    refusals: Arc<tokio::sync::Semaphore>,
    commands: mpsc::Receiver<Command>,
    conn_events: mpsc::Receiver<ConnEvent>,
    conn_events_tx: mpsc::Sender<ConnEvent>,
    incoming: mpsc::Receiver<Incoming>,
    shutdown: Option<(oneshot::Sender<()>, Instant)>,
}

/// The channels a driver is built from.
pub(crate) struct DriverChannels {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) conn_events: mpsc::Receiver<ConnEvent>,
    pub(crate) conn_events_tx: mpsc::Sender<ConnEvent>,
    pub(crate) incoming: mpsc::Receiver<Incoming>,
}

/// The clock: monotonic now, and unix time for the host.
fn now() -> Instant {
    Instant::now()
}

impl Driver {
    pub(crate) fn new(shared: Arc<Shared>, host: Host, channels: DriverChannels) -> Self {
        Self {
            host,
            shared,
            conns: BTreeMap::new(),
            pending: BTreeMap::new(),
            dial_waiters: BTreeMap::new(),
            dial_errors: BTreeMap::new(),
            ping_waiters: BTreeMap::new(),
            feeds: BTreeMap::new(),
            queues: BTreeMap::new(),
            refusals: Arc::new(tokio::sync::Semaphore::new(REFUSALS_IN_FLIGHT)),
            commands: channels.commands,
            conn_events: channels.conn_events,
            conn_events_tx: channels.conn_events_tx,
            incoming: channels.incoming,
            shutdown: None,
        }
    }

    /// Adds a protocol before the driver runs (no `on_start` yet).
    pub(crate) fn add_protocol(
        &mut self,
        protocol: Box<dyn Protocol>,
    ) -> Result<ProtocolId, RegisterError> {
        self.host.register(protocol)
    }

    pub(crate) async fn run(mut self) {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok();
        self.host.set_time(now(), unix);
        self.host.start(now());
        loop {
            self.apply_outputs();
            if let Some((_, deadline)) = &self.shutdown
                && (self.conns.is_empty() || Instant::now() >= *deadline)
            {
                break;
            }
            let deadline = self.host.poll_timeout();
            let shutdown_at = self.shutdown.as_ref().map(|(_, at)| *at);
            let wake = [deadline, shutdown_at].into_iter().flatten().min();
            tokio::select! {
                () = self.shared.stop.cancelled(), if self.shutdown.is_none() => {
                    // The last `Node` handle was dropped (the command queue may be full).
                    self.begin_shutdown(None);
                }
                command = self.commands.recv(), if self.shutdown.is_none() => match command {
                    Some(command) => self.handle_command(command),
                    None => self.begin_shutdown(None),
                },
                Some(event) = self.conn_events.recv() => self.handle_conn_event(event),
                Some(incoming) = self.incoming.recv(), if self.shutdown.is_none() => {
                    self.handle_incoming(incoming);
                }
                () = sleep_until(wake) => self.host.handle_timeout(now()),
            }
        }
        self.finish_shutdown();
    }

    fn handle_command(&mut self, command: Command) {
        let now = now();
        match command {
            Command::Dial { addr, reply } => {
                let ticket = self.host.dial(addr, now).map_err(DialError::Limit);
                self.answer_dial(ticket, reply);
            }
            Command::Connect { peer, reply } => {
                let ticket = self.host.dial_peer(peer, now).map_err(|refusal| match refusal {
                    sinew_host::DialRefusal::Limit(refusal) => DialError::Limit(refusal),
                    _ => DialError::NoAddress,
                });
                self.answer_dial(ticket, reply);
            }
            Command::AddPeer { addr, reply } => {
                let _ = reply.send(self.host.add_peer(addr, now).map_err(DialError::Limit));
            }
            Command::RemovePeer { peer, reply } => {
                let _ = reply.send(self.host.remove_peer(peer, now));
            }
            Command::Authorize { peer, reply } => {
                self.host.authorize(peer, now);
                let _ = reply.send(());
            }
            Command::Disconnect { peer, code, reply } => {
                let _ = reply.send(self.host.disconnect(peer, code, String::new()));
            }
            Command::Ping { peer, reply } => match self.host.ping(peer, now) {
                Ok(id) => {
                    self.ping_waiters.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(crate::RequestError::Send(e)));
                }
            },
            Command::Register { protocol, feed, reply } => {
                let result = self.host.register(protocol);
                if let (Ok(id), Some(feed)) = (&result, feed) {
                    self.feeds.insert(*id, feed);
                }
                let _ = reply.send(result);
            }
            Command::Call { id, command, reply } => {
                let _ = reply.send(self.host.call_protocol(id, command, now));
            }
            Command::Unregister { id, reply } => {
                let _ = reply.send(self.host.unregister(id));
            }
            Command::State { reply } => {
                let _ = reply.send(self.network_state());
            }
            Command::Shutdown { reply } => self.begin_shutdown(Some(reply)),
            Command::AddressesChanged => {
                self.host.set_advertised(self.shared.advertised_addrs(), now);
            }
        }
    }

    fn answer_dial(
        &mut self,
        ticket: Result<DialTicket, DialError>,
        reply: oneshot::Sender<Result<PeerId, DialError>>,
    ) {
        match ticket {
            Ok(DialTicket::Connected(peer)) => {
                let _ = reply.send(Ok(peer));
            }
            Ok(DialTicket::Pending(conn)) => self.dial_waiters.entry(conn).or_default().push(reply),
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    fn begin_shutdown(&mut self, reply: Option<oneshot::Sender<()>>) {
        if self.shutdown.is_some() {
            return;
        }
        let shared = self.shared.clone();
        shared.shutting_down.store(true, std::sync::atomic::Ordering::Relaxed);
        for handle in shared.listeners.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            handle.abort();
        }
        self.host.shutdown(now());
        let (tx, _) = oneshot::channel();
        let grace = shared.config.shutdown_grace;
        self.shutdown = Some((reply.unwrap_or(tx), Instant::now() + grace));
    }

    fn finish_shutdown(&mut self) {
        for (_, handle) in std::mem::take(&mut self.pending) {
            handle.abort();
        }
        // Connections still closing after the grace period are aborted; dropping their muxers
        // closes their sockets.
        for (_, entry) in std::mem::take(&mut self.conns) {
            entry.task.abort();
            entry.system.finish(None);
        }
        for (_, reply) in std::mem::take(&mut self.ping_waiters) {
            let _ = reply.send(Err(crate::RequestError::Disconnected));
        }
        for queue in self.queues.values() {
            queue.close();
        }
        for (_, feed) in std::mem::take(&mut self.feeds) {
            feed.close();
        }
        self.shared.peers.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.shared.stream_handlers.write().unwrap_or_else(|e| e.into_inner()).clear();
        let waiters =
            std::mem::take(&mut *self.shared.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, waiter) in waiters {
            let _ = waiter.tx.send(Err(crate::RequestError::Disconnected));
        }
        if let Some((reply, _)) = self.shutdown.take() {
            let _ = reply.send(());
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
