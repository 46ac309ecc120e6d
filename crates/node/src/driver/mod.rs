//! The driver: one task owning the peer manager and every protocol. It reads the clock,
//! feeds the sans-IO cores, and turns their actions into I/O on connection tasks.

mod actions;
mod convert;
mod core;
mod dispatch;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use sinew_codec::messages::DisconnectCode;
use sinew_peers::{DialTicket, PeerManager};
use sinew_protocol::{Ctx, Protocol, ProtocolId};
use sinew_transport::Incoming;
use sinew_types::{Addr, PeerId};
use tokio::sync::{mpsc, oneshot};

pub(crate) use self::core::Core;
use crate::conn::ConnEvent;
use crate::error::{DialError, RegisterError};
use crate::events::Event;
use crate::shared::Shared;
use crate::state::NetworkState;

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
    },
    Authorize {
        peer: PeerId,
    },
    Disconnect {
        peer: PeerId,
        code: DisconnectCode,
    },
    /// An application ping on the system lane.
    Ping {
        peer: PeerId,
        reply: oneshot::Sender<Result<Duration, crate::RequestError>>,
    },
    Register {
        protocol: Box<dyn Protocol>,
        reply: oneshot::Sender<Result<ProtocolId, RegisterError>>,
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

/// A registered protocol.
pub(crate) struct Slot {
    pub(crate) protocol: Box<dyn Protocol>,
    pub(crate) name: &'static str,
}

pub(crate) struct Driver {
    core: Core,
    protocols: BTreeMap<ProtocolId, Slot>,
    next_protocol: u32,
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

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        peers: PeerManager,
        rng: ChaCha8Rng,
        channels: DriverChannels,
    ) -> Self {
        Self {
            core: Core::new(shared, peers, rng),
            protocols: BTreeMap::new(),
            next_protocol: 0,
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
        let opcodes = protocol.opcodes();
        for range in opcodes.as_slice() {
            if let Some((_, owner)) = self.core.routes.iter().find(|(r, _)| r.overlaps(range)) {
                let owner = self.protocols.get(owner).map_or("?", |s| s.name);
                return Err(RegisterError::Overlap { range: *range, owner });
            }
        }
        let id = ProtocolId(self.next_protocol);
        self.next_protocol += 1;
        for range in opcodes.as_slice() {
            self.core.routes.push((*range, id));
        }
        self.core.routes.sort();
        let name = protocol.name();
        self.protocols.insert(id, Slot { protocol, name });
        self.refresh_local_opcodes();
        Ok(id)
    }

    fn refresh_local_opcodes(&self) {
        let ranges = self.core.routes.iter().map(|(r, _)| *r).collect();
        *self.core.shared.local_opcodes.write().unwrap_or_else(|e| e.into_inner()) = ranges;
    }

    /// Calls one protocol with a context. A panic inside it is caught here: that protocol is
    /// removed and reported ([`Event::ProtocolPanicked`]); the node and the others go on.
    fn call(&mut self, id: ProtocolId, f: impl FnOnce(&mut dyn Protocol, &mut Ctx<'_>)) {
        let panicked = match self.protocols.get_mut(&id) {
            Some(slot) => {
                let mut ctx = Ctx::new(&mut self.core, id, slot.name);
                let protocol = slot.protocol.as_mut();
                std::panic::catch_unwind(AssertUnwindSafe(|| f(protocol, &mut ctx))).err()
            }
            None => None,
        };
        if let Some(payload) = panicked {
            self.remove_panicked(id, payload.as_ref());
        }
    }

    /// Calls every protocol, in registration order (see [`Driver::call`] for panics).
    fn call_all(&mut self, mut f: impl FnMut(&mut dyn Protocol, &mut Ctx<'_>)) {
        let ids: Vec<ProtocolId> = self.protocols.keys().copied().collect();
        for id in ids {
            self.call(id, &mut f);
        }
    }

    /// Removes a protocol that panicked: its opcodes are unhandled from now on (their frames
    /// get `UNKNOWN_OPCODE`), and its `on_stop` is not called (its state may be broken).
    fn remove_panicked(&mut self, id: ProtocolId, payload: &(dyn std::any::Any + Send)) {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with a non-string payload".into());
        let Some(slot) = self.protocols.remove(&id) else { return };
        self.core.routes.retain(|(_, owner)| *owner != id);
        self.refresh_local_opcodes();
        tracing::error!(protocol = slot.name, %message, "protocol panicked; removed");
        self.core.shared.emit(Event::ProtocolPanicked { protocol: slot.name, message });
    }

    pub(crate) async fn run(mut self) {
        self.core.now = Instant::now();
        let ids: Vec<ProtocolId> = self.protocols.keys().copied().collect();
        for id in ids {
            self.call(id, |p, ctx| p.on_start(ctx));
        }
        loop {
            self.settle();
            if let Some((_, deadline)) = &self.shutdown
                && (self.core.conns.is_empty() || Instant::now() >= *deadline)
            {
                break;
            }
            let deadline = self.core.next_deadline();
            let shutdown_at = self.shutdown.as_ref().map(|(_, at)| *at);
            let wake = [deadline, shutdown_at].into_iter().flatten().min();
            tokio::select! {
                () = self.core.shared.stop.cancelled(), if self.shutdown.is_none() => {
                    // The last `Node` handle was dropped (the command queue may be full).
                    self.core.now = Instant::now();
                    self.begin_shutdown(None);
                }
                command = self.commands.recv(), if self.shutdown.is_none() => match command {
                    Some(command) => {
                        self.core.now = Instant::now();
                        self.handle_command(command);
                    }
                    None => self.begin_shutdown(None),
                },
                Some(event) = self.conn_events.recv() => {
                    self.core.now = Instant::now();
                    self.handle_conn_event(event);
                }
                Some(incoming) = self.incoming.recv(), if self.shutdown.is_none() => {
                    self.core.now = Instant::now();
                    self.handle_incoming(incoming);
                }
                () = sleep_until(wake) => {
                    self.core.now = Instant::now();
                    self.handle_timeouts();
                }
            }
        }
        self.finish_shutdown();
    }

    /// Applies everything the cores asked for until nothing is left.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let peer_work = self.process_peer_actions();
            let protocol_work = self.process_protocol_commands();
            let flood_work = self.close_flooded();
            if !peer_work && !protocol_work && !flood_work {
                return;
            }
        }
        tracing::warn!("driver did not settle after 10,000 rounds");
    }

    fn handle_command(&mut self, command: Command) {
        let now = self.core.now;
        match command {
            Command::Dial { addr, reply } => self.dial(addr, reply),
            Command::Connect { peer, reply } => {
                if self.core.info.contains_key(&peer) {
                    let _ = reply.send(Ok(peer));
                    return;
                }
                match self.core.address_book.get(&peer).and_then(|a| a.first()).cloned() {
                    Some(addr) => self.dial(addr.with_peer(peer), reply),
                    None => {
                        let _ = reply.send(Err(DialError::NoAddress));
                    }
                }
            }
            Command::AddPeer { addr, reply } => {
                if let Some(peer) = addr.peer() {
                    // A send to this peer while its first dial is in flight joins that dial.
                    self.core.remember_addr(peer, addr.clone());
                }
                let _ = reply.send(self.core.peers.add_peer(addr, now).map_err(DialError::Limit));
            }
            Command::RemovePeer { peer } => {
                self.core.peers.remove_peer(&peer, now);
                if !self.core.info.contains_key(&peer)
                    && let Some(queue) = self.core.queues.remove(&peer)
                {
                    queue.close();
                }
            }
            Command::Authorize { peer } => self.authorize(peer),
            Command::Disconnect { peer, code } => self.disconnect(peer, code, String::new()),
            Command::Ping { peer, reply } => self.user_ping(peer, reply),
            Command::Register { protocol, reply } => {
                let result = self.add_protocol(protocol);
                if let Ok(id) = result {
                    self.call(id, |p, ctx| p.on_start(ctx));
                    let peers: Vec<_> = self.core.info.values().cloned().collect();
                    for info in peers {
                        self.call(id, |p, ctx| p.on_peer_connected(ctx, &info));
                    }
                }
                let _ = reply.send(result);
            }
            Command::Unregister { id, reply } => {
                self.call(id, |p, ctx| p.on_stop(ctx));
                let removed = self.protocols.remove(&id).is_some();
                self.core.routes.retain(|(_, owner)| *owner != id);
                self.refresh_local_opcodes();
                let _ = reply.send(removed);
            }
            Command::State { reply } => {
                let _ = reply.send(self.network_state());
            }
            Command::Shutdown { reply } => self.begin_shutdown(Some(reply)),
            Command::AddressesChanged => {
                let addrs = self.core.shared.advertised_addrs();
                self.call_all(|p, ctx| p.on_addresses_changed(ctx, &addrs));
                self.core.shared.emit(Event::AddressesChanged { addrs });
            }
        }
    }

    fn dial(&mut self, addr: Addr, reply: oneshot::Sender<Result<PeerId, DialError>>) {
        match self.core.peers.dial(addr, self.core.now) {
            Ok(DialTicket::Connected(peer)) => {
                let _ = reply.send(Ok(peer));
            }
            Ok(DialTicket::Pending(conn)) => {
                self.core.dial_waiters.entry(conn).or_default().push(reply)
            }
            Err(refusal) => {
                let _ = reply.send(Err(DialError::Limit(refusal)));
            }
        }
    }

    fn authorize(&mut self, peer: PeerId) {
        self.core.peers.authorize(&peer, self.core.now);
        if let Some(info) = self.core.info.get_mut(&peer) {
            info.authorized = true;
        }
        for entry in self.core.conns.values().filter(|c| c.peer == peer) {
            entry.stats.authorized.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn disconnect(&mut self, peer: PeerId, code: DisconnectCode, message: String) {
        if let Some(conn) = self.core.peers.active_connection(&peer)
            && let Some(entry) = self.core.conns.get(&conn)
        {
            // A protocol error closes at once; any other reason delivers what was sent first.
            let graceful = code != DisconnectCode::PROTOCOL_ERROR;
            entry.command(crate::conn::ConnCommand::Close { code, message, graceful });
        }
    }

    fn begin_shutdown(&mut self, reply: Option<oneshot::Sender<()>>) {
        if self.shutdown.is_some() {
            return;
        }
        let shared = self.core.shared.clone();
        shared.shutting_down.store(true, std::sync::atomic::Ordering::Relaxed);
        for handle in shared.listeners.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            handle.abort();
        }
        self.call_all(|p, ctx| p.on_stop(ctx));
        self.core.peers.shutdown(self.core.now);
        let (tx, _) = oneshot::channel();
        let grace = shared.config.shutdown_grace;
        self.shutdown = Some((reply.unwrap_or(tx), Instant::now() + grace));
    }

    fn finish_shutdown(&mut self) {
        for (_, handle) in std::mem::take(&mut self.core.pending) {
            handle.abort();
        }
        // Connections still closing after the grace period are aborted; dropping their muxers
        // closes their sockets.
        for (_, entry) in std::mem::take(&mut self.core.conns) {
            entry.task.abort();
            entry.system.finish(None);
        }
        self.fail_user_pings(|_| true);
        for queue in self.core.queues.values() {
            queue.close();
        }
        self.core.shared.peers.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.core.shared.stream_handlers.write().unwrap_or_else(|e| e.into_inner()).clear();
        let waiters = std::mem::take(
            &mut *self.core.shared.waiters.lock().unwrap_or_else(|e| e.into_inner()),
        );
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
