//! `Node`, the cheap cloneable handle applications hold, and its builder.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use sinew_codec::messages::DisconnectCode;
use sinew_codec::{Frame, FrameKind, MAX_MESSAGE, Opcode, Status};
use sinew_mux::WindowBudget;
use sinew_peers::PeerManager;
use sinew_protocol::{BroadcastReport, Commands, Message, Opcodes, Protocol, ProtocolId};
#[cfg(any(feature = "tcp", feature = "ws"))]
use sinew_secure::Identities;
#[cfg(feature = "noise")]
use sinew_secure::NoiseIdentity;
#[cfg(feature = "tls")]
use sinew_secure::TlsIdentity;
#[cfg(feature = "tcp")]
use sinew_tcp::TcpTransport;
use sinew_transport::{ListenError, Transport};
use sinew_types::{Addr, Keypair, PeerId};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::SendError;
use crate::builtin::{Inbox, InboxProtocol};
use crate::config::NodeConfig;
use crate::conn::outbound::{self, PerfReport};
use crate::driver::{Command, Driver, DriverChannels};
use crate::error::{
    DialError, PeerError, RegisterError, RequestError, StartError, Stopped, StreamError,
};
use crate::events::{Event, Events};
use crate::feed::{Feed, FeedQueue};
use crate::shared::{PeerSlot, Shared, SharedParts, Transports, Waiter};
use crate::state::NetworkState;
use crate::stream::{AppStream, StreamInbox};
use sinew_host::CallError;

/// Builds and starts a [`Node`].
pub struct NodeBuilder {
    keypair: Keypair,
    config: NodeConfig,
    protocols: Vec<Box<dyn Protocol>>,
    transports: Vec<MakeTransport>,
}

/// Builds a transport once the node's identity is known (see [`NodeBuilder::transport`]).
type MakeTransport = Box<dyn FnOnce(&TransportParts) -> Arc<dyn Transport> + Send>;

/// What a transport is built from: the node's handshake identities (those of the securities
/// it is built with) and its configuration.
#[derive(Debug)]
pub struct TransportParts {
    /// The Noise identity the transport's handshake proves (the node's key and boot nonce).
    #[cfg(feature = "noise")]
    pub identity: Arc<NoiseIdentity>,
    /// The node's TLS identity: its certificate for this process, for TLS 1.3 and QUIC.
    #[cfg(feature = "tls")]
    pub tls: Arc<TlsIdentity>,
    /// The node's configuration. With the `tcp` feature, `tcp` holds the security and muxer
    /// settings the memory transport borrows; every transport's `mux.window_budget` is set to
    /// the node's.
    pub config: NodeConfig,
    /// The node-wide yamux window budget, for transports whose settings name none.
    #[cfg_attr(not(feature = "noise"), allow(dead_code))]
    window_budget: WindowBudget,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("peer_id", &self.keypair.peer_id())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NodeBuilder {
    /// Listen on `addr` at start (port 0 picks a free port).
    #[must_use]
    pub fn listen(mut self, addr: Addr) -> Self {
        self.config.listen.push(addr);
        self
    }

    /// Replace the whole configuration (listen addresses given so far are kept).
    #[must_use]
    pub fn with_config(mut self, config: NodeConfig) -> Self {
        let listen = std::mem::take(&mut self.config.listen);
        self.config = config;
        self.config.listen.extend(listen);
        self
    }

    /// Adjust the configuration.
    #[must_use]
    pub fn configure(mut self, f: impl FnOnce(&mut NodeConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// The role announced in identify.
    #[must_use]
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.config.role = role.into();
        self
    }

    /// Map the TCP listen ports on the local gateway (PCP, NAT-PMP or UPnP IGD) and advertise
    /// the external addresses (see `docs/nat.md`).
    #[must_use]
    pub fn nat(mut self, config: sinew_nat::PortMapperConfig) -> Self {
        self.config.nat = Some(config);
        self
    }

    /// Seed the node's RNG (deterministic protocol randomness and backoff jitter).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Adds a transport, built at start from the node's identity: it dials and listens for
    /// the schemes it names ([`Transport::schemes`]), replacing the built-in TCP transport for
    /// `tcp`. Addresses of a scheme no transport serves fail to dial and to listen with
    /// `UnsupportedScheme`.
    #[must_use]
    pub fn transport<T: Transport>(
        mut self,
        make: impl FnOnce(&TransportParts) -> T + Send + 'static,
    ) -> Self {
        self.transports.push(Box::new(move |parts| Arc::new(make(parts))));
        self
    }

    /// Adds the in-process transport (`memory://host:port`, see [`sinew_memory`]): nodes of
    /// one process reach each other without sockets, through the same handshake and muxer.
    /// It takes its Noise and yamux settings from `NodeConfig::tcp` (without the `tcp` feature,
    /// the defaults; [`NodeBuilder::memory_with`] names them).
    #[cfg(feature = "noise")]
    #[must_use]
    pub fn memory(self) -> Self {
        self.transport(|parts| {
            #[cfg(feature = "tcp")]
            let config = sinew_memory::MemoryConfig {
                noise: parts.config.tcp.noise,
                mux: parts.config.tcp.mux.clone(),
            };
            #[cfg(not(feature = "tcp"))]
            let config = sinew_memory::MemoryConfig::default();
            memory_transport(parts, config)
        })
    }

    /// Adds the in-process transport as [`NodeBuilder::memory`] does, with these Noise and
    /// yamux settings (the node's window budget unless `config.mux.window_budget` is set).
    #[cfg(feature = "noise")]
    #[must_use]
    pub fn memory_with(self, config: sinew_memory::MemoryConfig) -> Self {
        self.transport(move |parts| memory_transport(parts, config))
    }

    /// Register a protocol at start.
    #[must_use]
    pub fn protocol(mut self, protocol: impl Protocol) -> Self {
        self.protocols.push(Box::new(protocol));
        self
    }

    /// Binds the listen addresses and starts the node's tasks. Needs a tokio runtime.
    pub async fn start(self) -> Result<Node, StartError> {
        let Self { keypair, mut config, protocols, transports: extra } = self;
        config.validate()?;
        let window_budget = share_window_budget(&mut config);
        let seed = config.seed.unwrap_or_else(|| rand::rng().random());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let boot_nonce: u64 = rand::rng().random();
        #[cfg(feature = "noise")]
        let identity = Arc::new(NoiseIdentity::new(&keypair, boot_nonce));
        // The certificate is made only when the node runs TLS (TCP, WebSocket or QUIC).
        #[cfg(feature = "tls")]
        let tls = Arc::new(TlsIdentity::new(&keypair, boot_nonce)?);
        #[cfg(any(feature = "tcp", feature = "ws"))]
        let identities = {
            let identities = Identities::default();
            #[cfg(feature = "noise")]
            let identities = identities.with_noise(Arc::clone(&identity));
            #[cfg(feature = "tls")]
            let identities = identities.with_tls(Arc::clone(&tls));
            identities
        };
        let mut transports = Transports::default();
        #[cfg(feature = "tcp")]
        transports
            .add(Arc::new(TcpTransport::with_identities(identities.clone(), config.tcp.clone())));
        #[cfg(feature = "ws")]
        transports.add(Arc::new(sinew_ws::WsTransport::with_identities(
            identities.clone(),
            config.ws.clone(),
        )));
        #[cfg(feature = "quic")]
        transports
            .add(Arc::new(sinew_quic::QuicTransport::new(Arc::clone(&tls), config.quic.clone())));
        let parts = TransportParts {
            #[cfg(feature = "noise")]
            identity,
            #[cfg(feature = "tls")]
            tls,
            config: config.clone(),
            window_budget,
        };
        for make in extra {
            transports.add(make(&parts));
        }
        let (commands_tx, commands_rx) = mpsc::channel(config.command_capacity.max(1));
        let (conn_tx, conn_rx) = mpsc::channel(config.inbound_frame_capacity.max(1));
        let (incoming_tx, incoming_rx) = mpsc::channel(64);
        let (events_tx, _) = broadcast::channel(config.event_capacity.max(1));
        let peers = PeerManager::new(keypair.peer_id(), config.peers.clone(), rng.random())
            .map_err(|e| StartError::Config(e.into()))?;
        let handle_rng = ChaCha8Rng::seed_from_u64(rng.random());
        let host_rng = ChaCha8Rng::seed_from_u64(rng.random());
        let host_config = host_config(keypair.peer_id(), &config, boot_nonce);
        let listen = config.listen.clone();
        let shared = Arc::new(Shared::new(
            config,
            SharedParts {
                local: keypair.peer_id(),
                events: events_tx,
                commands: commands_tx,
                transports,
                incoming: incoming_tx,
                rng: handle_rng,
            },
        ));
        let channels = DriverChannels {
            commands: commands_rx,
            conn_events: conn_rx,
            conn_events_tx: conn_tx,
            incoming: incoming_rx,
        };
        let host = sinew_host::Host::new(host_config, peers, host_rng, std::time::Instant::now());
        let mut driver = Driver::new(shared.clone(), host, channels);
        for protocol in protocols {
            driver.add_protocol(protocol)?;
        }
        let node = Node { shared: shared.clone(), _alive: Arc::new(Alive(shared.clone())) };
        for addr in listen {
            node.listen(addr).await?;
        }
        if let Some(nat) = shared.config.nat.clone() {
            crate::nat::start(&shared, nat);
        }
        tokio::spawn(driver.run());
        Ok(node)
    }
}

/// Gives every transport whose settings name no yamux window budget the node's one (TCP's, if
/// it names one), and returns it.
fn share_window_budget(config: &mut NodeConfig) -> WindowBudget {
    let bytes = config.mux_window_budget;
    #[cfg(feature = "tcp")]
    let budget =
        config.tcp.mux.window_budget.get_or_insert_with(|| WindowBudget::new(bytes)).clone();
    #[cfg(not(feature = "tcp"))]
    let budget = WindowBudget::new(bytes);
    #[cfg(feature = "ws")]
    if config.ws.mux.window_budget.is_none() {
        config.ws.mux.window_budget = Some(budget.clone());
    }
    budget
}

/// The memory transport with `config`, on the node's window budget unless it names its own.
#[cfg(feature = "noise")]
fn memory_transport(
    parts: &TransportParts,
    mut config: sinew_memory::MemoryConfig,
) -> sinew_memory::MemoryTransport {
    if config.mux.window_budget.is_none() {
        config.mux.window_budget = Some(parts.window_budget.clone());
    }
    sinew_memory::MemoryTransport::new(Arc::clone(&parts.identity), config)
}

/// What the host needs of the node's configuration.
fn host_config(local: PeerId, config: &NodeConfig, boot_nonce: u64) -> sinew_host::HostConfig {
    sinew_host::HostConfig {
        local,
        agent: config.agent.clone(),
        role: config.role.clone(),
        boot_nonce,
        access: config.access.clone(),
        request_timeout: config.request_timeout,
        keepalive_interval: config.keepalive_interval,
        system_lane_bytes: config.system_lane_bytes,
        protocol_queue_bytes: config.peer_queue_bytes,
        protocol_credit_bytes: sinew_host::HostConfig::new(local).protocol_credit_bytes,
        control_frame_cap: config.control_frame_cap,
    }
}

/// Shuts the node down when the last handle is dropped.
struct Alive(Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        // A signal, not a command: it reaches the driver even when the command queue is full.
        self.0.stop.cancel();
        // Stop accepting now, so the listen ports are released at once.
        for handle in self.0.listeners.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            handle.abort();
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shared = self.0.clone();
            runtime.spawn(async move { crate::nat::stop(&shared).await });
        }
    }
}

/// A running node: a cheap, cloneable handle. When the last clone is dropped the node shuts
/// down.
#[cfg_attr(
    feature = "tcp",
    doc = r#"
```
# async fn demo() -> Result<(), Box<dyn std::error::Error>> {
use bytes::Bytes;
use sinew::{Keypair, Node, Opcode};

let a = Node::builder(Keypair::generate()).listen("tcp://127.0.0.1:0".parse()?).start().await?;
let b = Node::builder(Keypair::generate()).start().await?;
let mut inbox = a.inbox(Opcode::app(1000)?).await?;

let peer = b.dial(a.listen_addrs()[0].clone()).await?; // authenticated, multiplexed
b.send(peer, Opcode::app(1000)?, Bytes::from_static(b"hello")).await?;
let msg = inbox.next().await.unwrap();
assert_eq!((msg.peer, &msg.payload[..]), (b.peer_id(), &b"hello"[..]));
# Ok(()) }
# tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
```
"#
)]
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
    _alive: Arc<Alive>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("peer_id", &self.shared.local).finish_non_exhaustive()
    }
}

impl Node {
    /// A builder for a node with this identity.
    pub fn builder(keypair: Keypair) -> NodeBuilder {
        NodeBuilder {
            keypair,
            config: NodeConfig::default(),
            protocols: Vec::new(),
            transports: Vec::new(),
        }
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.shared.local
    }

    /// The addresses this node listens on (with real ports).
    pub fn listen_addrs(&self) -> Vec<Addr> {
        self.shared.listen_addrs()
    }

    /// The addresses this node tells others to dial (sent in identify): external addresses
    /// found by port mapping first, then listen addresses that name a specific IP.
    pub fn advertised_addrs(&self) -> Vec<Addr> {
        self.shared.advertised_addrs()
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    async fn command<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.shared.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Starts listening on `addr`; returns the bound address (with the real port).
    pub async fn listen(&self, addr: Addr) -> Result<Addr, ListenError> {
        let transport = self
            .shared
            .transports
            .get(addr.scheme())
            .ok_or(ListenError::UnsupportedScheme(addr.scheme()))?;
        let mut listener = transport.listen(addr).await?;
        let bound = listener.local_addr();
        self.shared.add_listen_addr(bound.clone());
        self.shared.emit(Event::Listening { addr: bound.clone() });
        // Queued for the driver (it may not run yet); a full channel only delays identify
        // updates until the next change.
        let _ = self.shared.commands.try_send(Command::AddressesChanged);
        let incoming = self.shared.incoming.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    // Waits when the driver is busy: the kernel's backlog takes the overflow.
                    Ok(socket) => {
                        if incoming.send(socket).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: back off briefly, keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        self.shared.listeners.lock().unwrap_or_else(|e| e.into_inner()).push(task.abort_handle());
        if let Some((protocol, port)) = crate::nat::mappable(&bound) {
            let mapper = self.shared.nat.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(mapper) = mapper {
                let _ = mapper.add(protocol, port).await;
            }
        }
        Ok(bound)
    }

    /// Connects to `addr` once (no reconnection) and returns the peer's id. Concurrent dials
    /// to the same peer share one attempt; a connected peer returns at once.
    pub async fn dial(&self, addr: Addr) -> Result<PeerId, DialError> {
        self.command(|reply| Command::Dial { addr, reply })
            .await
            .unwrap_or(Err(DialError::ShuttingDown))
    }

    /// Keeps a peer connected: dials now and reconnects with backoff after every disconnect.
    pub async fn add_peer(&self, addr: Addr) -> Result<(), DialError> {
        self.command(|reply| Command::AddPeer { addr, reply })
            .await
            .unwrap_or(Err(DialError::ShuttingDown))
    }

    /// Forgets a peer (no more reconnection) and closes its connection. `Unknown` if it was
    /// neither kept nor connected.
    pub async fn remove_peer(&self, peer: PeerId) -> Result<(), PeerError> {
        match self.command(|reply| Command::RemovePeer { peer, reply }).await {
            Some(true) => Ok(()),
            Some(false) => Err(PeerError::Unknown),
            None => Err(PeerError::Stopped),
        }
    }

    /// Closes the connection to a peer with a reason (a persistent peer will reconnect).
    /// `NotConnected` if there was no connection.
    pub async fn disconnect(&self, peer: PeerId, code: DisconnectCode) -> Result<(), PeerError> {
        match self.command(|reply| Command::Disconnect { peer, code, reply }).await {
            Some(true) => Ok(()),
            Some(false) => Err(PeerError::NotConnected),
            None => Err(PeerError::Stopped),
        }
    }

    /// Marks a peer authorized (a peer not connected yet is authorized when it connects).
    pub async fn authorize(&self, peer: PeerId) -> Result<(), PeerError> {
        self.command(|reply| Command::Authorize { peer, reply }).await.ok_or(PeerError::Stopped)
    }

    /// Whether `peer` is connected now (no round trip to the driver).
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.shared.peer(peer).is_some()
    }

    /// The peers connected now, sorted (no round trip to the driver).
    pub fn connected_peers(&self) -> Vec<PeerId> {
        self.shared.connected_peers()
    }

    /// The peer's slot, connecting first if it is known but not connected.
    async fn slot(&self, peer: PeerId) -> Result<PeerSlot, SendError> {
        if self.shared.is_shutting_down() {
            return Err(SendError::ShuttingDown);
        }
        if let Some(slot) = self.shared.peer(&peer) {
            return Ok(slot);
        }
        match self.command(|reply| Command::Connect { peer, reply }).await {
            Some(Ok(_)) => self.shared.peer(&peer).ok_or(SendError::NotConnected),
            Some(Err(DialError::ShuttingDown)) | None => Err(SendError::ShuttingDown),
            // Nothing known to dial: not connected, as for any stranger.
            Some(Err(DialError::NoAddress)) => Err(SendError::NotConnected),
            Some(Err(error)) => Err(SendError::Dial(error.failure())),
        }
    }

    async fn send_frame(&self, peer: PeerId, frame: Frame) -> Result<(), SendError> {
        if frame.payload.len() > MAX_MESSAGE {
            return Err(SendError::TooLarge);
        }
        let slot = self.slot(peer).await?;
        if !slot.stats.is_authorized()
            && !self.shared.config.access.allows_unauthorized(frame.opcode)
        {
            return Err(SendError::Unauthorized);
        }
        if frame.is_system() {
            // The system lane never waits: `Full` when its bytes are in use. (Not charged to
            // the host's credit: the host's own frames are.)
            return slot.system.try_push_untracked(frame);
        }
        if frame.payload.len() > self.shared.config.control_frame_cap {
            return outbound::send_large(&self.shared, slot, frame).await;
        }
        slot.queue.push(frame).await
    }

    fn try_send_frame(&self, peer: PeerId, frame: Frame) -> Result<(), SendError> {
        if self.shared.is_shutting_down() {
            return Err(SendError::ShuttingDown);
        }
        if frame.payload.len() > MAX_MESSAGE {
            return Err(SendError::TooLarge);
        }
        let slot = self.shared.peer(&peer).ok_or(SendError::NotConnected)?;
        if !slot.stats.is_authorized()
            && !self.shared.config.access.allows_unauthorized(frame.opcode)
        {
            return Err(SendError::Unauthorized);
        }
        if frame.is_system() {
            return slot.system.try_push_untracked(frame);
        }
        if frame.payload.len() > self.shared.config.control_frame_cap {
            return outbound::try_send_large(&self.shared, slot, frame, None);
        }
        slot.queue.try_push(frame)
    }

    /// Sends a one-way message, waiting while the peer's queue is full. A peer that is known
    /// but not connected is dialled first. Messages up to the control cap (1 MiB) keep their
    /// order; larger ones (up to 512 MiB) travel on a stream of their own and may overtake.
    pub async fn send(
        &self,
        peer: PeerId,
        opcode: Opcode,
        payload: Bytes,
    ) -> Result<(), SendError> {
        self.send_frame(peer, Frame::message(opcode, payload)).await
    }

    /// Sends without waiting: [`SendError::Full`] when the peer's queue (or, for a large
    /// message, the node's large-message budget) has no room now.
    pub fn try_send(&self, peer: PeerId, opcode: Opcode, payload: Bytes) -> Result<(), SendError> {
        self.try_send_frame(peer, Frame::message(opcode, payload))
    }

    async fn round_trip(
        &self,
        peer: PeerId,
        opcode: Opcode,
        kind: impl FnOnce(u64) -> FrameKind,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RequestError> {
        let id = self.shared.next_request_id();
        let (tx, rx) = oneshot::channel();
        self.shared.add_waiter(id, Waiter { peer, tx });
        // Frees the waiter however this future ends: answered, failed, timed out or dropped.
        let _guard = WaiterGuard { shared: &self.shared, id };
        // The timeout covers the send too: a full queue waits within it.
        let exchange = async {
            self.send_frame(peer, Frame::new(opcode, kind(id), payload))
                .await
                .map_err(RequestError::Send)?;
            rx.await.unwrap_or(Err(RequestError::Disconnected))
        };
        tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(RequestError::Timeout))
    }

    /// Sends a message and waits until the remote node has handed it to a handler (its
    /// acknowledgement), within the request timeout.
    pub async fn send_acked(
        &self,
        peer: PeerId,
        opcode: Opcode,
        payload: Bytes,
    ) -> Result<(), RequestError> {
        let timeout = self.shared.config.request_timeout;
        self.round_trip(peer, opcode, |id| FrameKind::Acked { id }, payload, timeout)
            .await
            .map(drop)
    }

    /// Sends a request and waits for its response, within the request timeout.
    pub async fn request(
        &self,
        peer: PeerId,
        opcode: Opcode,
        payload: Bytes,
    ) -> Result<Bytes, RequestError> {
        self.request_with_timeout(peer, opcode, payload, self.shared.config.request_timeout).await
    }

    /// Sends a request and waits for its response, within `timeout`.
    pub async fn request_with_timeout(
        &self,
        peer: PeerId,
        opcode: Opcode,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RequestError> {
        self.round_trip(peer, opcode, |id| FrameKind::Request { id }, payload, timeout).await
    }

    /// Answers a request received in an [`Inbox`].
    pub async fn reply(&self, to: &Message, payload: Bytes) -> Result<(), SendError> {
        let Some(id) = to.request_id() else { return Ok(()) };
        self.send_frame(to.peer, Frame::new(to.opcode, FrameKind::Response { id }, payload)).await
    }

    /// Answers a request (or an acked message) received in an [`Inbox`] with an error status.
    pub async fn reply_error(&self, to: &Message, status: Status) -> Result<(), SendError> {
        let (FrameKind::Request { id } | FrameKind::Acked { id }) = to.kind else { return Ok(()) };
        self.send_frame(
            to.peer,
            Frame::new(to.opcode, FrameKind::Error { id, status }, Bytes::new()),
        )
        .await
    }

    /// Measures the round-trip time to a peer with a ping on its active connection's system
    /// lane (it never waits behind application messages). The pong must come back on that
    /// connection and echo the ping's random payload. Fails after the request timeout.
    pub async fn ping(&self, peer: PeerId) -> Result<Duration, RequestError> {
        if self.shared.is_shutting_down() {
            return Err(RequestError::Send(SendError::ShuttingDown));
        }
        if self.shared.peer(&peer).is_none() {
            self.slot(peer).await?;
        }
        self.command(|reply| Command::Ping { peer, reply })
            .await
            .unwrap_or(Err(RequestError::Send(SendError::ShuttingDown)))
    }

    /// Queues a message for every connected peer without waiting; full queues are skipped and
    /// reported.
    pub fn broadcast(&self, opcode: Opcode, payload: Bytes) -> BroadcastReport {
        self.broadcast_to(&self.shared.connected_peers(), opcode, payload)
    }

    /// Queues a message for each of `peers` without waiting.
    pub fn broadcast_to(
        &self,
        peers: &[PeerId],
        opcode: Opcode,
        payload: Bytes,
    ) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        for peer in peers {
            match self.try_send(*peer, opcode, payload.clone()) {
                Ok(()) => report.sent.push(*peer),
                Err(SendError::Full) => {
                    report.full.push(*peer);
                    self.shared.emit(Event::MessageDropped {
                        peer: *peer,
                        opcode,
                        reason: crate::DropReason::QueueFull,
                    });
                }
                Err(_) => {}
            }
        }
        report
    }

    /// Queues a message for `n` connected peers picked at random (all if fewer).
    pub fn broadcast_randomly(&self, n: usize, opcode: Opcode, payload: Bytes) -> BroadcastReport {
        let mut peers = self.shared.connected_peers();
        let n = n.min(peers.len());
        {
            let mut rng = self.shared.rng.lock().unwrap_or_else(|e| e.into_inner());
            for i in 0..n {
                let j = rng.random_range(i..peers.len());
                peers.swap(i, j);
            }
        }
        peers.truncate(n);
        self.broadcast_to(&peers, opcode, payload)
    }

    /// Opens a raw stream to a peer for `opcode` (the peer needs a [`Node::stream_handler`]).
    pub async fn open_stream(
        &self,
        peer: PeerId,
        opcode: Opcode,
    ) -> Result<AppStream, StreamError> {
        let slot = self.slot(peer).await.map_err(|_| StreamError::NotConnected)?;
        outbound::open_app_stream(slot, peer, opcode).await
    }

    /// Receives the streams peers open for `opcode`.
    pub async fn stream_handler(&self, opcode: Opcode) -> Result<StreamInbox, RegisterError> {
        let mut handlers = self.shared.stream_handlers.write().unwrap_or_else(|e| e.into_inner());
        if handlers.get(&opcode).is_some_and(|h| !h.is_closed()) {
            return Err(RegisterError::Overlap {
                range: sinew_codec::OpcodeRange::single(opcode),
                owner: "stream handler",
            });
        }
        let (tx, rx) = mpsc::channel(self.shared.config.inbox_capacity.max(1));
        handlers.insert(opcode, tx);
        Ok(StreamInbox { rx })
    }

    /// Receives messages, acked messages and requests for `opcodes` (answer requests with
    /// [`Node::reply`]).
    pub async fn inbox(&self, opcodes: impl Into<Opcodes>) -> Result<Inbox, RegisterError> {
        let (tx, rx) = mpsc::channel(self.shared.config.inbox_capacity.max(1));
        let bytes = Arc::default();
        let protocol = InboxProtocol {
            opcodes: opcodes.into(),
            tx,
            shared: self.shared.clone(),
            bytes: Arc::clone(&bytes),
        };
        self.register(protocol).await?;
        Ok(Inbox { rx, bytes })
    }

    /// Registers a protocol on the running node (its `on_start` runs, then `on_peer_connected`
    /// for each connected peer).
    pub async fn register(&self, protocol: impl Protocol) -> Result<ProtocolHandle, RegisterError> {
        let protocol = Box::new(protocol);
        let id = self
            .command(|reply| Command::Register { protocol, feed: None, reply })
            .await
            .unwrap_or(Err(RegisterError::ShuttingDown))?;
        Ok(ProtocolHandle(id))
    }

    /// Registers a protocol the application talks to (see [`Commands`]): the [`Handle`] sends
    /// it typed commands and reads its notices.
    ///
    /// ```
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use sinew::{Commands, Ctx, Keypair, Node, Opcodes, Protocol};
    ///
    /// struct Counter(u64);
    /// impl Protocol for Counter {
    ///     fn opcodes(&self) -> Opcodes {
    ///         Opcodes::none()
    ///     }
    /// }
    /// impl Commands for Counter {
    ///     type Command = u64;
    ///     type Answer = u64;
    ///     type Notice = String;
    ///     fn on_command(&mut self, ctx: &mut Ctx<'_>, add: u64) -> u64 {
    ///         self.0 += add;
    ///         ctx.notify(format!("now {}", self.0));
    ///         self.0
    ///     }
    /// }
    ///
    /// let node = Node::builder(Keypair::generate()).start().await?;
    /// let mut counter = node.register_with_handle(Counter(0)).await?;
    /// assert_eq!(counter.call(2).await?, 2);
    /// assert_eq!(counter.call(3).await?, 5);
    /// assert_eq!(counter.notices().next().await, Some(Ok("now 2".to_string())));
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    pub async fn register_with_handle<P: Commands>(
        &self,
        protocol: P,
    ) -> Result<Handle<P>, RegisterError> {
        let protocol = Box::new(sinew_protocol::WithCommands(protocol));
        let queue = Arc::new(FeedQueue::new(self.shared.config.feed_capacity));
        let feed = Some(queue.clone());
        let id = self
            .command(|reply| Command::Register { protocol, feed, reply })
            .await
            .unwrap_or(Err(RegisterError::ShuttingDown))?;
        Ok(Handle { node: self.clone(), id: ProtocolHandle(id), feed: Feed::new(queue) })
    }

    /// Unregisters a protocol (its `on_stop` runs). Returns whether it was registered.
    pub async fn unregister(&self, handle: ProtocolHandle) -> bool {
        self.command(|reply| Command::Unregister { id: handle.0, reply }).await.unwrap_or(false)
    }

    /// A snapshot of peers, addresses, traffic and round-trip times; [`Stopped`] once the
    /// node has stopped.
    pub async fn network_state(&self) -> Result<NetworkState, Stopped> {
        self.command(|reply| Command::State { reply }).await.ok_or(Stopped)
    }

    /// Subscribes to the node's events.
    pub fn events(&self) -> Events {
        Events::new(self.shared.events.subscribe())
    }

    /// Runs a throughput test against a peer serving `sinew perf` (see
    /// [`NodeConfig::perf_server`]): one stream, `upload` bytes in `chunk`-byte writes, then
    /// `download` bytes back.
    pub async fn perf(
        &self,
        peer: PeerId,
        upload: u64,
        download: u64,
        chunk: usize,
    ) -> std::io::Result<PerfReport> {
        let slot = self.slot(peer).await.map_err(std::io::Error::other)?;
        outbound::perf(slot, upload, download, chunk, self.shared.config.write_stall_timeout).await
    }

    /// Stops the node: protocols' `on_stop`, a Disconnect frame to every peer, listeners
    /// closed. Returns when connections have closed (or after a few seconds).
    pub async fn shutdown(&self) {
        let _ = self.command(|reply| Command::Shutdown { reply }).await;
        // Port mappings are deleted at the gateway (bounded in time).
        crate::nat::stop(&self.shared).await;
    }
}

/// Removes a request's waiter when the request's future ends, whichever way.
struct WaiterGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.shared.take_waiter(self.id);
    }
}

/// A protocol registered with [`Node::register_with_handle`]: typed commands to it, and its
/// notices back. Holding it keeps the node running, as a [`Node`] does.
pub struct Handle<P: Commands> {
    node: Node,
    id: ProtocolHandle,
    feed: Feed<P::Notice>,
}

impl<P: Commands> std::fmt::Debug for Handle<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("id", &self.id).finish_non_exhaustive()
    }
}

impl<P: Commands> Handle<P> {
    /// Runs `command` in the protocol (inside the node's driver, like any callback) and
    /// returns its answer. `Unregistered` once the protocol was unregistered (or removed after
    /// a panic), `Stopped` once the node has stopped.
    pub async fn call(&self, command: P::Command) -> Result<P::Answer, CallError> {
        let command: sinew_protocol::Erased = Box::new(command);
        let answer = self
            .node
            .command(|reply| Command::Call { id: self.id.0, command, reply })
            .await
            .ok_or(CallError::Stopped)??;
        answer.downcast::<P::Answer>().map(|a| *a).map_err(|_| CallError::Unsupported)
    }

    /// The protocol's notices (see [`Feed`]).
    pub fn notices(&mut self) -> &mut Feed<P::Notice> {
        &mut self.feed
    }

    /// The protocol's id, for [`Node::unregister`].
    pub fn id(&self) -> ProtocolHandle {
        self.id
    }
}

/// Identifies a protocol registered with [`Node::register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProtocolHandle(ProtocolId);

#[cfg(all(test, feature = "tcp"))]
mod tests {
    use super::*;

    /// `Alive::drop` used `try_send` of a shutdown command, which a full queue refused: the
    /// node then ran on with no handle left. The stop signal always gets through.
    #[tokio::test(flavor = "current_thread")]
    async fn dropping_the_last_handle_with_a_full_command_queue() {
        let node = Node::builder(Keypair::generate())
            .configure(|c| c.command_capacity = 2)
            .listen("tcp://127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let port = node.listen_addrs()[0].port();
        let mut events = node.events();
        // The driver has not run yet (one thread, no yield): the queue fills.
        while node.shared.commands.try_send(Command::State { reply: oneshot::channel().0 }).is_ok()
        {
        }
        drop(node);
        let closed = tokio::time::timeout(Duration::from_secs(2), async {
            // The event stream ends when the driver has stopped and dropped its sender.
            while events.next().await.is_some() {}
        })
        .await;
        assert!(closed.is_ok(), "the node stopped");
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "port released");
    }

    /// With the default settings, two nodes connect over TCP with a security they are built
    /// with: Noise when they have it, TLS when built without it.
    #[tokio::test]
    async fn default_settings_dial_with_a_security_the_node_has() {
        let a = Node::builder(Keypair::generate())
            .listen("tcp://127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let b = Node::builder(Keypair::generate()).start().await.unwrap();
        assert_eq!(b.dial(a.listen_addrs()[0].clone()).await.unwrap(), a.peer_id());
        let state = b.network_state().await.unwrap();
        let security = state.peers.iter().find(|p| p.peer == a.peer_id()).unwrap().security;
        if cfg!(feature = "noise") {
            assert!(matches!(security, Some(sinew_transport::Security::Noise(_))), "{security:?}");
        } else {
            assert_eq!(security, Some(sinew_transport::Security::Tls));
        }
    }
}
