//! State shared by `Node` handles, the driver and connection tasks. Everything here is small
//! and behind short critical sections; the driver owns everything else.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytes::Bytes;
use sinew_codec::Opcode;
use sinew_transport::{Incoming, MuxedConnection, Transport};
use sinew_types::{Addr, PeerId};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::RequestError;
use crate::budget::ByteBudget;
use crate::config::NodeConfig;
use crate::conn::system::SystemQueue;
use crate::driver::Command;
use crate::events::Event;
use crate::queue::PeerQueue;
use crate::stats::ConnStats;
use crate::stream::IncomingStream;

/// A connected peer as handles see it: where to queue frames, which connection carries them.
#[derive(Clone)]
pub(crate) struct PeerSlot {
    pub(crate) queue: Arc<PeerQueue>,
    pub(crate) muxer: MuxedConnection,
    pub(crate) stats: Arc<ConnStats>,
    /// The active connection's system lane.
    pub(crate) system: Arc<SystemQueue>,
}

/// The node's transports, by the schemes they serve.
#[derive(Default, Clone)]
pub(crate) struct Transports(BTreeMap<sinew_types::Scheme, Arc<dyn Transport>>);

impl Transports {
    /// Adds a transport for every scheme it names (replacing an earlier one).
    pub(crate) fn add(&mut self, transport: Arc<dyn Transport>) {
        for scheme in transport.schemes() {
            self.0.insert(*scheme, transport.clone());
        }
    }

    /// The transport for `scheme`.
    pub(crate) fn get(&self, scheme: sinew_types::Scheme) -> Option<Arc<dyn Transport>> {
        self.0.get(&scheme).cloned()
    }
}

/// Forgets a transfer when it ends, however it ends.
pub(crate) struct TransferGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        self.shared.transfers.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

/// Someone waiting for a response or an ack.
pub(crate) struct Waiter {
    pub(crate) peer: PeerId,
    pub(crate) tx: oneshot::Sender<Result<Bytes, RequestError>>,
}

pub(crate) struct Shared {
    pub(crate) local: PeerId,
    pub(crate) config: NodeConfig,
    pub(crate) epoch: Instant,
    pub(crate) peers: RwLock<BTreeMap<PeerId, PeerSlot>>,
    pub(crate) waiters: Mutex<BTreeMap<u64, Waiter>>,
    next_request: AtomicU64,
    pub(crate) stream_handlers: RwLock<BTreeMap<Opcode, mpsc::Sender<IncomingStream>>>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) large_out: Arc<Semaphore>,
    /// Large messages being received, charged as their bytes arrive.
    pub(crate) large_in: Arc<ByteBudget>,
    pub(crate) shutting_down: AtomicBool,
    /// Cancelled when the last `Node` handle is dropped: the driver shuts down.
    pub(crate) stop: CancellationToken,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) transports: Transports,
    /// Where listeners hand accepted sockets to the driver.
    pub(crate) incoming: mpsc::Sender<Incoming>,
    /// Accept loops, aborted at shutdown.
    pub(crate) listeners: Mutex<Vec<tokio::task::AbortHandle>>,
    listen_addrs: RwLock<Vec<Addr>>,
    /// Addresses others reach us at that are not listen addresses (port mappings).
    external_addrs: RwLock<Vec<Addr>>,
    /// The port mapper, when enabled.
    pub(crate) nat: Mutex<Option<Arc<sinew_nat::PortMapper>>>,
    /// Large transfers in progress that a protocol may cancel, by transfer id.
    transfers: Mutex<BTreeMap<u64, CancellationToken>>,
    /// Inbound transfer ids (outbound ones come from the host, with the top bit set).
    next_transfer: AtomicU64,
    /// RNG for handle-side randomness (broadcast_randomly).
    pub(crate) rng: Mutex<rand_chacha::ChaCha8Rng>,
}

/// What `Shared::new` needs beyond the config.
pub(crate) struct SharedParts {
    pub(crate) local: PeerId,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) transports: Transports,
    pub(crate) incoming: mpsc::Sender<Incoming>,
    pub(crate) rng: rand_chacha::ChaCha8Rng,
}

impl Shared {
    pub(crate) fn new(config: NodeConfig, parts: SharedParts) -> Self {
        let SharedParts { local, events, commands, transports, incoming, rng } = parts;
        let budget = config.large_message_budget.min(Semaphore::MAX_PERMITS);
        Self {
            local,
            transports,
            incoming,
            listeners: Mutex::new(Vec::new()),
            listen_addrs: RwLock::new(Vec::new()),
            external_addrs: RwLock::new(Vec::new()),
            rng: Mutex::new(rng),
            transfers: Mutex::new(BTreeMap::new()),
            next_transfer: AtomicU64::new(1),
            nat: Mutex::new(None),
            epoch: Instant::now(),
            peers: RwLock::new(BTreeMap::new()),
            waiters: Mutex::new(BTreeMap::new()),
            next_request: AtomicU64::new(1),
            stream_handlers: RwLock::new(BTreeMap::new()),
            events,
            large_out: Arc::new(Semaphore::new(budget)),
            large_in: Arc::new(ByteBudget::new(config.large_message_budget)),
            shutting_down: AtomicBool::new(false),
            stop: CancellationToken::new(),
            commands,
            config,
        }
    }

    /// Registers a transfer that can be cancelled; the guard forgets it when the transfer ends.
    /// `None` names a fresh inbound id.
    pub(crate) fn start_transfer(
        self: &Arc<Self>,
        id: Option<u64>,
    ) -> (u64, CancellationToken, TransferGuard) {
        let id = id.unwrap_or_else(|| self.next_transfer.fetch_add(1, Ordering::Relaxed));
        let token = CancellationToken::new();
        self.transfers.lock().unwrap_or_else(|e| e.into_inner()).insert(id, token.clone());
        (id, token, TransferGuard { shared: Arc::clone(self), id })
    }

    /// Cancels a transfer in progress (nothing if it ended).
    pub(crate) fn cancel_transfer(&self, id: u64) {
        if let Some(token) = self.transfers.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
            token.cancel();
        }
    }

    /// A fresh request id (shared by the driver and handles; never 0).
    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn peer(&self, peer: &PeerId) -> Option<PeerSlot> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).get(peer).cloned()
    }

    pub(crate) fn connected_peers(&self) -> Vec<PeerId> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).keys().copied().collect()
    }

    pub(crate) fn add_waiter(&self, id: u64, waiter: Waiter) {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).insert(id, waiter);
    }

    /// Waiters for responses and acks now.
    pub(crate) fn waiter_count(&self) -> usize {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub(crate) fn take_waiter(&self, id: u64) -> Option<Waiter> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
    }

    /// Fails every waiter for `peer` with `Disconnected`.
    pub(crate) fn fail_waiters(&self, peer: &PeerId) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let ids: Vec<u64> =
            waiters.iter().filter(|(_, w)| w.peer == *peer).map(|(id, _)| *id).collect();
        for id in ids {
            if let Some(w) = waiters.remove(&id) {
                let _ = w.tx.send(Err(RequestError::Disconnected));
            }
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        // No subscribers is fine: events are for whoever listens.
        let _ = self.events.send(event);
    }

    pub(crate) fn listen_addrs(&self) -> Vec<Addr> {
        self.listen_addrs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn add_listen_addr(&self, addr: Addr) {
        self.listen_addrs.write().unwrap_or_else(|e| e.into_inner()).push(addr);
    }

    /// Replaces the external addresses; returns whether they changed.
    pub(crate) fn set_external_addrs(&self, addrs: Vec<Addr>) -> bool {
        let mut current = self.external_addrs.write().unwrap_or_else(|e| e.into_inner());
        let changed = *current != addrs;
        *current = addrs;
        changed
    }

    /// The port mapper's state, if port mapping is on.
    pub(crate) fn nat_state(&self) -> Option<sinew_nat::NatState> {
        self.nat.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|m| m.state())
    }

    /// What the node tells others to dial: external (mapped) addresses first, then listen
    /// addresses that name a specific IP (a wildcard such as 0.0.0.0 reaches nobody).
    pub(crate) fn advertised_addrs(&self) -> Vec<Addr> {
        let mut addrs = self.external_addrs.read().unwrap_or_else(|e| e.into_inner()).clone();
        for addr in self.listen_addrs() {
            let wildcard = addr.socket_addr().is_some_and(|s| s.ip().is_unspecified());
            if !wildcard && !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        addrs
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Bytes available to a large message: budget permits are bytes, capped to the semaphore's
    /// maximum.
    pub(crate) fn large_cost(&self, len: usize) -> u32 {
        u32::try_from(len.min(self.config.large_message_budget).max(1)).unwrap_or(u32::MAX)
    }
}
