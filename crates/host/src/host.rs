//! [`Host`]: the protocols, their registry and the application's commands.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use sinew_codec::OpcodeRange;
use sinew_codec::messages::DisconnectCode;
use sinew_peers::{ConnId, DialTicket, PeerManager, Refusal};
use sinew_protocol::{Ctx, PeerInfo, Protocol, ProtocolId, SendError};
use sinew_types::{Addr, PeerId};

use crate::builtin::{Keepalive, Ping};
use crate::config::HostConfig;
use crate::core::Core;
use crate::identify::IDENTIFY_ROUTE;
use crate::output::{HostEvent, Output, PingId};

/// Why a protocol could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// Another protocol already handles opcodes in this range.
    #[error("opcodes {range} are already handled by {owner}")]
    Overlap {
        /// The range asked for.
        range: OpcodeRange,
        /// The protocol that has it.
        owner: &'static str,
    },
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}

/// Why [`Host::call`] got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The protocol is not registered (any more).
    #[error("the protocol is not registered")]
    Unregistered,
    /// The protocol does not take this command.
    #[error("the protocol does not take this command")]
    Unsupported,
    /// The protocol panicked handling it (it was removed).
    #[error("the protocol panicked")]
    Panicked,
    /// The node running the host has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// Why [`Host::dial_peer`] dialled nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialRefusal {
    /// The address book has no address for the peer.
    #[error("no known address")]
    NoAddress,
    /// A connection limit.
    #[error(transparent)]
    Limit(#[from] Refusal),
}

/// A registered protocol.
struct Slot {
    protocol: Box<dyn Protocol>,
    name: &'static str,
}

/// The protocol host, sans-IO. See the crate docs for the order of calls.
pub struct Host {
    pub(crate) core: Core,
    protocols: BTreeMap<ProtocolId, Slot>,
    next_protocol: u32,
    started: bool,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("local", &self.core.config.local)
            .field("connected", &self.core.connected.len())
            .field("protocols", &self.protocols.len())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A host with the built-in protocols (ping, keepalive, identify), at `now`. `rng` is
    /// its only randomness.
    pub fn new(config: HostConfig, peers: PeerManager, rng: ChaCha8Rng, now: Instant) -> Self {
        let keepalive = Keepalive { interval: config.keepalive_interval };
        let mut host = Self {
            core: Core::new(config, peers, rng, now),
            protocols: BTreeMap::new(),
            next_protocol: 0,
            started: false,
        };
        host.core.routes.push((OpcodeRange::single(sinew_codec::Opcode::IDENTIFY), IDENTIFY_ROUTE));
        // Built-in opcodes never overlap.
        let _ = host.register(Box::new(Ping));
        let _ = host.register(Box::new(keepalive));
        host
    }

    /// Starts the protocols registered so far (`on_start`), at `now`. Protocols registered
    /// later start when they are registered.
    pub fn start(&mut self, now: Instant) {
        self.core.now = now;
        if self.started {
            return;
        }
        self.started = true;
        let ids: Vec<ProtocolId> = self.protocols.keys().copied().collect();
        for id in ids {
            self.call(id, |p, ctx| p.on_start(ctx));
        }
        self.settle();
    }

    /// Registers a protocol. On a started host it starts at once and learns every connected
    /// peer.
    pub fn register(&mut self, protocol: Box<dyn Protocol>) -> Result<ProtocolId, RegisterError> {
        if self.core.shutting_down {
            return Err(RegisterError::ShuttingDown);
        }
        let opcodes = protocol.opcodes();
        for range in opcodes.as_slice() {
            if let Some((_, owner)) = self.core.routes.iter().find(|(r, _)| r.overlaps(range)) {
                let owner = match *owner {
                    IDENTIFY_ROUTE => "identify",
                    owner => self.protocols.get(&owner).map_or("?", |s| s.name),
                };
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
        if self.started {
            self.call(id, |p, ctx| p.on_start(ctx));
            let peers: Vec<_> = self.core.info.values().map(|i| (**i).clone()).collect();
            for info in peers {
                self.call(id, |p, ctx| p.on_peer_connected(ctx, &info));
            }
            self.settle();
        }
        Ok(id)
    }

    /// Stops (`on_stop`) and removes a protocol; its opcodes are unhandled from now on.
    /// Whether it was registered.
    pub fn unregister(&mut self, id: ProtocolId) -> bool {
        self.call(id, |p, ctx| p.on_stop(ctx));
        let removed = self.protocols.remove(&id).is_some();
        self.core.routes.retain(|(_, owner)| *owner != id);
        self.settle();
        if removed {
            self.core.outputs.push_back(Output::ProtocolGone { protocol: id });
        }
        removed
    }

    /// Hands a registered protocol an application command (its type erased; see
    /// [`sinew_protocol::Commands`]) and returns its answer.
    pub fn call_protocol(
        &mut self,
        id: ProtocolId,
        command: sinew_protocol::Erased,
        now: Instant,
    ) -> Result<sinew_protocol::Erased, CallError> {
        self.core.now = now;
        if !self.protocols.contains_key(&id) {
            return Err(CallError::Unregistered);
        }
        let mut answer = Err(CallError::Panicked);
        self.call(id, |p, ctx| {
            answer = p.on_erased_command(ctx, command).map_err(|_| CallError::Unsupported);
        });
        self.settle();
        answer
    }

    /// Calls one protocol with a context. A panic inside it is caught here: that protocol is
    /// removed and reported ([`HostEvent::ProtocolPanicked`]); the host and the others go on.
    pub(crate) fn call(&mut self, id: ProtocolId, f: impl FnOnce(&mut dyn Protocol, &mut Ctx<'_>)) {
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

    /// Calls every protocol, in registration order (see [`Host::call`] for panics).
    pub(crate) fn call_all(&mut self, mut f: impl FnMut(&mut dyn Protocol, &mut Ctx<'_>)) {
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
        tracing::error!(protocol = slot.name, %message, "protocol panicked; removed");
        let event = HostEvent::ProtocolPanicked { protocol: slot.name, message };
        self.core.outputs.push_back(Output::Event(event));
        self.core.outputs.push_back(Output::ProtocolGone { protocol: id });
    }

    /// Applies everything the peer manager and the protocols asked for until nothing is left.
    pub(crate) fn settle(&mut self) {
        for _ in 0..10_000 {
            let peer_work = self.process_peer_actions();
            let protocol_work = self.process_protocol_commands();
            let flood_work = self.close_flooded();
            let writable_work = self.call_writable();
            if !peer_work && !protocol_work && !flood_work && !writable_work {
                return;
            }
        }
        tracing::warn!("host did not settle after 10,000 rounds");
    }

    fn process_protocol_commands(&mut self) -> bool {
        use sinew_protocol::Command;
        let commands = std::mem::take(&mut self.core.pending_commands);
        let any = !commands.is_empty();
        for (protocol, command) in commands {
            match command {
                Command::Authorize(peer) => self.authorize_now(peer),
                Command::Disconnect(peer, code, message) => {
                    let _ = self.disconnect(peer, code, message);
                }
                Command::Dial(addr) => self.protocol_dial(protocol, addr),
                Command::AddPeer(addr) => {
                    let now = self.core.now;
                    let _ = self.core.peers.add_peer(addr, now);
                }
                Command::Emit(event) => {
                    self.core.outputs.push_back(Output::Event(HostEvent::Protocol(event)))
                }
                Command::CancelTransfer(transfer) => {
                    self.core.outputs.push_back(Output::CancelTransfer { transfer })
                }
                Command::Notify(notice) => {
                    self.core.outputs.push_back(Output::Notice { protocol, notice })
                }
                _ => {}
            }
        }
        any
    }

    /// A dial a protocol asked for: it learns the outcome in `on_dial_outcome`.
    fn protocol_dial(&mut self, protocol: ProtocolId, addr: Addr) {
        let now = self.core.now;
        let result = match self.core.peers.dial(addr.clone(), now) {
            Ok(DialTicket::Pending(conn)) => {
                let owners =
                    self.core.dial_owners.entry(conn).or_insert_with(|| (addr, Vec::new()));
                owners.1.push(protocol);
                return;
            }
            Ok(DialTicket::Connected(peer)) => Ok(peer),
            Err(_) => Err(sinew_protocol::DialFailure::Limit),
        };
        let outcome = sinew_protocol::DialOutcome { addr, result };
        self.call(protocol, |p, ctx| p.on_dial_outcome(ctx, &outcome));
    }

    /// Tells the protocols that asked for dial `conn` how it ended.
    pub(crate) fn dial_ended(&mut self, conn: ConnId, result: Result<PeerId, ()>) {
        let failure = self.core.dial_failures.remove(&conn);
        let Some((addr, owners)) = self.core.dial_owners.remove(&conn) else { return };
        let result =
            result.map_err(|()| failure.map_or(sinew_protocol::DialFailure::Closed, dial_failure));
        let outcome = sinew_protocol::DialOutcome { addr, result };
        for protocol in owners {
            self.call(protocol, |p, ctx| p.on_dial_outcome(ctx, &outcome));
        }
    }

    /// Calls `on_writable` of the protocols waiting for peers whose connection can take more
    /// (each ask is answered once). Returns whether there were any.
    fn call_writable(&mut self) -> bool {
        let ready = std::mem::take(&mut self.core.writable_ready);
        let any = !ready.is_empty();
        for peer in ready {
            let Some(protocols) = self.core.writable_wanted.remove(&peer) else { continue };
            for protocol in protocols {
                self.call(protocol, |p, ctx| p.on_writable(ctx, &peer));
            }
        }
        any
    }

    /// Closes the connections whose remote asked faster than it read the answers.
    fn close_flooded(&mut self) -> bool {
        let flooded = std::mem::take(&mut self.core.flooded);
        let any = !flooded.is_empty();
        for conn in flooded {
            if self.core.conns.contains_key(&conn) {
                tracing::debug!(%conn, "system lane overflowed: closing for flooding");
                self.core.outputs.push_back(Output::Close {
                    conn,
                    code: DisconnectCode::FLOODING,
                    message: "requests came faster than their answers were read".into(),
                    graceful: false,
                });
            }
        }
        any
    }

    fn authorize_now(&mut self, peer: PeerId) {
        let now = self.core.now;
        self.core.peers.authorize(&peer, now);
        if let Some(info) = self.core.info.get_mut(&peer) {
            info.authorized = true;
        }
        let conns: Vec<ConnId> =
            self.core.conns.iter().filter(|(_, c)| c.peer == peer).map(|(id, _)| *id).collect();
        for conn in conns {
            self.core.outputs.push_back(Output::Authorized { conn });
        }
    }

    /// Closes `peer`'s active connection with `code` and `message`. A protocol error closes
    /// at once; any other reason delivers what was sent first. Whether it was connected.
    pub fn disconnect(&mut self, peer: PeerId, code: DisconnectCode, message: String) -> bool {
        match self.core.peers.active_connection(&peer) {
            Some(conn) if self.core.conns.contains_key(&conn) => {
                let graceful = code != DisconnectCode::PROTOCOL_ERROR;
                self.core.outputs.push_back(Output::Close { conn, code, message, graceful });
                true
            }
            _ => false,
        }
    }

    // --- The application's commands. ---

    /// Sets the clock: `now` (monotonic) and, optionally, the unix time at `now`.
    pub fn set_time(&mut self, now: Instant, unix: Option<Duration>) {
        self.core.now = now;
        if let Some(unix) = unix {
            self.core.unix = unix;
            self.core.unix_at = now;
        }
    }

    /// Dials `addr` once (or joins the dial in progress to its peer).
    pub fn dial(&mut self, addr: Addr, now: Instant) -> Result<DialTicket, Refusal> {
        self.core.now = now;
        let ticket = self.core.peers.dial(addr, now);
        self.settle();
        ticket
    }

    /// Connects to a known peer through the address book's most recent address.
    pub fn dial_peer(&mut self, peer: PeerId, now: Instant) -> Result<DialTicket, DialRefusal> {
        if self.core.info.contains_key(&peer) {
            return Ok(DialTicket::Connected(peer));
        }
        let addr = self.core.address_book.get(&peer).and_then(|a| a.first()).cloned();
        let addr = addr.ok_or(DialRefusal::NoAddress)?;
        Ok(self.dial(addr.with_peer(peer), now)?)
    }

    /// Keeps a peer connected, redialling with backoff.
    pub fn add_peer(&mut self, addr: Addr, now: Instant) -> Result<(), Refusal> {
        self.core.now = now;
        if let Some(peer) = addr.peer() {
            // A send to this peer while its first dial is in flight joins that dial.
            self.core.remember_addr(peer, addr.clone());
        }
        let result = self.core.peers.add_peer(addr, now);
        self.settle();
        result
    }

    /// Stops keeping a peer connected, and disconnects it. Whether it was kept or connected.
    pub fn remove_peer(&mut self, peer: PeerId, now: Instant) -> bool {
        self.core.now = now;
        let known = self.core.info.contains_key(&peer)
            || self.core.peers.persistent_peers().contains(&peer);
        self.core.peers.remove_peer(&peer, now);
        if !self.core.info.contains_key(&peer) {
            self.core.waiting.remove(&peer);
            self.core.outputs.push_back(Output::PeerGone { peer, keep_queue: false });
        }
        self.settle();
        known
    }

    /// Authorizes a peer.
    pub fn authorize(&mut self, peer: PeerId, now: Instant) {
        self.core.now = now;
        self.authorize_now(peer);
        self.settle();
    }

    /// Sends an application ping; [`Output::PingDone`] tells its round trip.
    pub fn ping(&mut self, peer: PeerId, now: Instant) -> Result<PingId, SendError> {
        self.core.now = now;
        let result = self.core.user_ping(&peer);
        self.settle();
        result
    }

    /// The addresses this node advertises changed: identify re-announces, protocols and the
    /// application hear of it.
    pub fn set_advertised(&mut self, addrs: Vec<Addr>, now: Instant) {
        self.core.now = now;
        self.core.advertised = addrs.clone();
        let peers = self.core.connected.clone();
        for peer in peers {
            self.send_identify(&peer);
        }
        self.call_all(|p, ctx| p.on_addresses_changed(ctx, &addrs));
        self.core.outputs.push_back(Output::Event(HostEvent::AddressesChanged { addrs }));
        self.settle();
    }

    /// Starts shutting down: protocols stop, every connection is closed with `SHUTDOWN`.
    pub fn shutdown(&mut self, now: Instant) {
        self.core.now = now;
        if self.core.shutting_down {
            return;
        }
        self.call_all(|p, ctx| p.on_stop(ctx));
        self.core.shutting_down = true;
        self.core.peers.shutdown(now);
        self.settle();
    }

    // --- What the driver and the application read. ---

    /// This node's identity.
    pub fn local_peer(&self) -> PeerId {
        self.core.config.local
    }

    /// The settings.
    pub fn config(&self) -> &HostConfig {
        &self.core.config
    }

    /// The peer manager (connection states, counts, round trips).
    pub fn manager(&self) -> &PeerManager {
        &self.core.peers
    }

    /// Connected peers, sorted.
    pub fn connected_peers(&self) -> &[PeerId] {
        &self.core.connected
    }

    /// Whether `peer` is connected.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.core.info.contains_key(peer)
    }

    /// What is known about a connected peer.
    pub fn peer_info(&self, peer: &PeerId) -> Option<&PeerInfo> {
        self.core.info.get(peer).map(|i| &**i)
    }

    /// Every connected peer's info, sorted by peer.
    pub fn peer_infos(&self) -> impl Iterator<Item = &PeerInfo> {
        self.core.info.values().map(|i| &**i)
    }

    /// The peer an established connection belongs to.
    pub fn conn_peer(&self, conn: ConnId) -> Option<PeerId> {
        self.core.conns.get(&conn).map(|c| c.peer)
    }

    /// Requests and pings the host waits on.
    pub fn pending_requests(&self) -> usize {
        self.core.requests.len() + self.core.user_pings.len()
    }

    /// The opcode ranges this host's protocols handle (identify announces them).
    pub fn local_opcodes(&self) -> Vec<OpcodeRange> {
        self.core.routes.iter().map(|(r, _)| *r).collect()
    }

    /// Whether [`Host::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.core.shutting_down
    }

    /// Unix time now, from what the host was last told ([`Host::set_time`]).
    pub fn unix_time(&self) -> Duration {
        sinew_protocol::Host::unix_time(&self.core)
    }

    /// The next thing the driver must do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.core.outputs.pop_front()
    }

    /// When the driver must call [`Host::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.next_deadline()
    }
}

/// The peer manager's dial failure as protocols learn it.
fn dial_failure(failure: sinew_peers::DialFailure) -> sinew_protocol::DialFailure {
    use sinew_peers::DialFailure as F;
    use sinew_protocol::DialFailure as P;
    match failure {
        F::Unreachable => P::Unreachable,
        F::Timeout => P::Timeout,
        F::Handshake => P::Handshake,
        F::UnexpectedPeer => P::UnexpectedPeer,
        F::SelfConnection => P::SelfConnection,
        F::UnsupportedScheme => P::UnsupportedScheme,
        F::Refused => P::Refused,
        _ => P::Closed,
    }
}
