//! An in-process transport: `memory://host:port` addresses, connected by in-memory pipes,
//! secured by Noise and multiplexed by yamux exactly as TCP is. Every node of a process shares
//! one hub, so nodes find each other by port; the host part of the address is not used.
//!
//! It exists so that the node's test suite runs over a second, real transport (the same
//! handshake, muxer and limits, no sockets), and for examples that need no network.
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use sinew_memory::MemoryTransport;
//! use sinew_secure::NoiseIdentity;
//! use sinew_transport::Transport as _;
//! use sinew_types::Keypair;
//!
//! let (a, b) = (Keypair::generate(), Keypair::generate());
//! let server = MemoryTransport::new(Arc::new(NoiseIdentity::new(&a, 1)), Default::default());
//! let client = MemoryTransport::new(Arc::new(NoiseIdentity::new(&b, 2)), Default::default());
//! let mut listener = server.listen("memory://local:0".parse()?).await?;
//! let target = listener.local_addr().with_peer(a.peer_id());
//! let (dialled, accepted) = tokio::join!(client.dial(target), async {
//!     listener.accept().await.unwrap().upgrade().await
//! });
//! assert_eq!(dialled?.info.peer, a.peer_id());
//! assert_eq!(accepted?.info.peer, b.peer_id());
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sinew_mux::YamuxConfig;
use sinew_secure::{HandshakeInfo, NoiseConfig, NoiseIdentity};
use sinew_transport::{
    BoxFuture, Connection, ConnectionInfo, DialError, Direction, Incoming, ListenError, Listener,
    PendingConnection, Refused, RefusedLimit, Transport, UpgradeError,
};
use sinew_types::{Addr, Host, Scheme};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

/// Bytes each direction of a pipe buffers (as a socket's buffers would).
const PIPE_BYTES: usize = 256 * 1024;
/// Connections waiting to be accepted per listener (as a listen backlog).
const BACKLOG: usize = 1024;
/// How long a refused pipe is kept to deliver its refusal record.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// The memory transport's settings: the same security and muxer settings as TCP's.
#[derive(Debug, Clone, Default)]
pub struct MemoryConfig {
    /// Noise settings.
    pub noise: NoiseConfig,
    /// yamux settings.
    pub mux: YamuxConfig,
}

/// A pipe on its way to a listener, with the dialler's made-up socket address.
struct Arrival {
    stream: DuplexStream,
    remote: SocketAddr,
}

/// Where listeners are found: one per process.
#[derive(Default)]
struct Hub {
    listeners: Mutex<BTreeMap<u16, mpsc::Sender<Arrival>>>,
    next_port: Mutex<u16>,
}

impl Hub {
    fn get() -> &'static Self {
        static HUB: OnceLock<Hub> = OnceLock::new();
        HUB.get_or_init(Self::default)
    }

    fn listeners(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, mpsc::Sender<Arrival>>> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A port no listener holds (port numbers from 1, wrapping), for listeners and for
    /// diallers' made-up addresses.
    fn free_port(&self, taken: &BTreeMap<u16, mpsc::Sender<Arrival>>) -> Option<u16> {
        let mut next = self.next_port.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..u16::MAX {
            *next = next.wrapping_add(1).max(1);
            if !taken.contains_key(&*next) {
                return Some(*next);
            }
        }
        None
    }
}

/// The in-process transport (see the crate docs).
#[derive(Clone)]
pub struct MemoryTransport {
    identity: Arc<NoiseIdentity>,
    config: Arc<MemoryConfig>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport").field("config", &self.config).finish_non_exhaustive()
    }
}

impl MemoryTransport {
    /// A transport that authenticates as `identity`.
    pub fn new(identity: Arc<NoiseIdentity>, config: MemoryConfig) -> Self {
        Self { identity, config: Arc::new(config) }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn memory_addr(port: u16) -> Addr {
    Addr::new(Scheme::Memory, Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)), port)
}

fn connection_info(
    handshake: HandshakeInfo,
    direction: Direction,
    local: u16,
    remote: u16,
) -> ConnectionInfo {
    ConnectionInfo {
        peer: handshake.peer,
        direction,
        local_addr: memory_addr(local),
        remote_addr: memory_addr(remote),
        security: handshake.security,
        boot_nonce: handshake.boot_nonce,
        session_tag: handshake.session_tag,
    }
}

impl Transport for MemoryTransport {
    fn schemes(&self) -> &'static [Scheme] {
        &[Scheme::Memory]
    }

    fn listen(&self, addr: Addr) -> BoxFuture<'static, Result<Box<dyn Listener>, ListenError>> {
        let this = self.clone();
        Box::pin(async move {
            if addr.scheme() != Scheme::Memory {
                return Err(ListenError::UnsupportedScheme(addr.scheme()));
            }
            let hub = Hub::get();
            let mut listeners = hub.listeners();
            let port = match addr.port() {
                0 => hub
                    .free_port(&listeners)
                    .ok_or_else(|| ListenError::Bind(io::Error::from(io::ErrorKind::AddrInUse)))?,
                port if listeners.contains_key(&port) => {
                    return Err(ListenError::Bind(io::Error::from(io::ErrorKind::AddrInUse)));
                }
                port => port,
            };
            let (tx, rx) = mpsc::channel(BACKLOG);
            listeners.insert(port, tx);
            Ok(Box::new(MemoryListener { port, arrivals: rx, transport: this })
                as Box<dyn Listener>)
        })
    }

    fn dial(&self, addr: Addr) -> BoxFuture<'static, Result<Connection, DialError>> {
        let this = self.clone();
        Box::pin(async move {
            if addr.scheme() != Scheme::Memory {
                return Err(DialError::UnsupportedScheme(addr.scheme()));
            }
            let hub = Hub::get();
            let (listener, local_port) = {
                let listeners = hub.listeners();
                let listener = listeners.get(&addr.port()).cloned();
                (listener, hub.free_port(&listeners).unwrap_or(u16::MAX))
            };
            let refused = || DialError::Connect(io::Error::from(io::ErrorKind::ConnectionRefused));
            let listener = listener.ok_or_else(refused)?;
            let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
            let arrival = Arrival { stream: theirs, remote: loopback(local_port) };
            listener.try_send(arrival).map_err(|_| refused())?;
            let config = &this.config;
            let (secured, handshake) = sinew_secure::upgrade_outbound(
                ours,
                &this.identity,
                config.noise.suite,
                addr.peer(),
                config.noise.handshake_timeout,
            )
            .await?;
            let info = connection_info(handshake, Direction::Outbound, local_port, addr.port());
            let muxer = sinew_mux::yamux(secured, Direction::Outbound, &config.mux);
            Ok(Connection { muxer, info })
        })
    }
}

struct MemoryListener {
    port: u16,
    arrivals: mpsc::Receiver<Arrival>,
    transport: MemoryTransport,
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        Hub::get().listeners().remove(&self.port);
    }
}

impl Listener for MemoryListener {
    fn local_addr(&self) -> Addr {
        memory_addr(self.port)
    }

    fn accept(&mut self) -> BoxFuture<'_, Result<Incoming, io::Error>> {
        Box::pin(async move {
            let Arrival { stream, remote } = self
                .arrivals
                .recv()
                .await
                .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))?;
            let local = loopback(self.port);
            let pending = PendingMemory {
                stream,
                local: self.port,
                remote,
                transport: self.transport.clone(),
            };
            Ok(Incoming::new(remote, local, pending))
        })
    }
}

/// An accepted pipe before its handshake.
struct PendingMemory {
    stream: DuplexStream,
    local: u16,
    remote: SocketAddr,
    transport: MemoryTransport,
}

impl PendingConnection for PendingMemory {
    fn upgrade(self: Box<Self>) -> BoxFuture<'static, Result<Connection, UpgradeError>> {
        let Self { stream, local, remote, transport } = *self;
        Box::pin(async move {
            let config = &transport.config;
            let (secured, handshake) = sinew_secure::upgrade_inbound(
                stream,
                &transport.identity,
                config.noise.handshake_timeout,
            )
            .await
            .map_err(UpgradeError::Handshake)?;
            let info = connection_info(handshake, Direction::Inbound, local, remote.port());
            let muxer = sinew_mux::yamux(secured, Direction::Inbound, &config.mux);
            Ok(Connection { muxer, info })
        })
    }

    fn refuse(self: Box<Self>, limit: RefusedLimit) -> BoxFuture<'static, ()> {
        let refused = Refused { limit, retry_after: None };
        Box::pin(sinew_secure::refuse_inbound(self.stream, refused, REFUSAL_TIMEOUT))
    }
}
