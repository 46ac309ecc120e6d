//! The TCP transport: TCP, then a security handshake (`sinew-secure`: the preamble and Noise XX,
//! or TLS 1.3), then yamux (`sinew-mux`).
//!
//! - The dialler picks the security: Noise by default, TLS with [`TcpConfig::dial_tls`] (and a
//!   TLS identity, [`TcpTransport::with_identities`]). A listener accepts both and tells them
//!   apart by the first byte; without a TLS identity it refuses TLS (`TlsNotAccepted`).
//! - Listening binds with port 0 support, IPv4 or IPv6 (an IPv6 wildcard also accepts IPv4 on
//!   Linux; such remotes are reported with their IPv4 address).
//! - Dialling resolves a DNS host at every dial and tries each resolved address in turn, all
//!   within the dial timeout; the handshake has its own timeout. `TCP_NODELAY` is on: sinew
//!   batches its own writes.
//! - An accepted socket is handed to the node as an [`Incoming`] before its handshake, so the
//!   node can refuse it (connection limits) without spending a handshake on it.
//!
//! Features `noise` and `tls` (both default; at least one is needed) choose the securities it
//! is built with. Without `noise` a listener refuses a Noise preamble (`NoiseNotAccepted`) and a
//! dialler uses TLS by default; without `tls` a listener refuses TLS.
//!
#![cfg_attr(
    feature = "noise",
    doc = r#"
```
# async fn demo() -> Result<(), Box<dyn std::error::Error>> {
use std::sync::Arc;
use sinew_secure::NoiseIdentity;
use sinew_tcp::{TcpConfig, TcpTransport};
use sinew_transport::Transport as _;
use sinew_types::Keypair;

let (server_key, client_key) = (Keypair::generate(), Keypair::generate());
let server = TcpTransport::new(Arc::new(NoiseIdentity::new(&server_key, 1)), TcpConfig::default());
let client = TcpTransport::new(Arc::new(NoiseIdentity::new(&client_key, 2)), TcpConfig::default());
let mut listener = server.listen("tcp://127.0.0.1:0".parse()?).await?;
let addr = listener.local_addr().with_peer(server_key.peer_id());
let accept = tokio::spawn(async move { listener.accept().await.unwrap().upgrade().await });
let outbound = client.dial(addr).await?;
let inbound = accept.await??;
assert_eq!(outbound.info.peer, server_key.peer_id());
assert_eq!(inbound.info.peer, client_key.peer_id());
assert_eq!(inbound.info.session_tag, outbound.info.session_tag);
# Ok(()) }
# tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
```
"#
)]
#![deny(unsafe_code)] // one setsockopt call, see `set_notsent_lowat`

#[cfg(not(any(feature = "noise", feature = "tls")))]
compile_error!(
    "sinew-tcp needs a security: turn on its feature `noise`, `tls` or both (the defaults)"
);

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sinew_mux::YamuxConfig;
#[cfg(feature = "noise")]
use sinew_secure::NoiseIdentity;
use sinew_secure::{DialSecurity, HandshakeInfo, Identities, NoiseConfig};
use sinew_transport::resolve::{canonical, connect_tcp, resolve_listen};
use sinew_transport::{
    BoxFuture, Connection, ConnectionInfo, DialError, Direction, Incoming, ListenError, Listener,
    PendingConnection, Refused, RefusedLimit, Transport, UpgradeError,
};
use sinew_types::{Addr, Scheme};
use tokio::net::{TcpListener, TcpStream};

/// TCP transport settings.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Whole-dial bound for resolving and connecting (the handshake has its own timeout).
    pub dial_timeout: Duration,
    /// Noise suite and handshake timeout.
    pub noise: NoiseConfig,
    /// yamux settings.
    pub mux: YamuxConfig,
    /// Listen backlog.
    pub backlog: u32,
    /// `TCP_NOTSENT_LOWAT`: at most this many bytes wait unsent in the kernel's send buffer
    /// (128 KiB). What the kernel holds unsent, a pong written later waits behind on a slow
    /// link; with the limit, the backlog stays in sinew's queues, where system frames go
    /// first. `None` leaves the system default (unlimited).
    pub notsent_lowat: Option<u32>,
    /// Dial with TLS 1.3 instead of Noise (false: Noise with `noise.suite`). The handshake
    /// timeout is `noise.handshake_timeout` either way. False by default; true when built
    /// without the `noise` feature.
    pub dial_tls: bool,
}

impl TcpConfig {
    /// The security this configuration dials with.
    pub fn dial_security(&self) -> DialSecurity {
        if self.dial_tls { DialSecurity::Tls } else { DialSecurity::Noise(self.noise.suite) }
    }
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            dial_timeout: Duration::from_secs(10),
            noise: NoiseConfig::default(),
            mux: YamuxConfig::default(),
            backlog: 1024,
            notsent_lowat: Some(128 * 1024),
            dial_tls: !cfg!(feature = "noise"),
        }
    }
}

/// The TCP transport.
#[derive(Clone)]
pub struct TcpTransport {
    identities: Identities,
    config: Arc<TcpConfig>,
}

impl TcpTransport {
    /// A transport authenticating as `identity`, with Noise only.
    #[cfg(feature = "noise")]
    pub fn new(identity: Arc<NoiseIdentity>, config: TcpConfig) -> Self {
        Self::with_identities(Identities::noise(identity), config)
    }

    /// A transport authenticating with the securities `identities` has identities for.
    pub fn with_identities(identities: Identities, config: TcpConfig) -> Self {
        Self { identities, config: Arc::new(config) }
    }

    /// The configuration.
    pub fn config(&self) -> &TcpConfig {
        &self.config
    }
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport").field("config", &self.config).finish_non_exhaustive()
    }
}

fn connection_info(
    handshake: HandshakeInfo,
    direction: Direction,
    local: SocketAddr,
    remote: SocketAddr,
) -> ConnectionInfo {
    ConnectionInfo {
        peer: handshake.peer,
        direction,
        local_addr: Addr::tcp(canonical(local)),
        remote_addr: Addr::tcp(canonical(remote)),
        security: handshake.security,
        boot_nonce: handshake.boot_nonce,
        session_tag: handshake.session_tag,
    }
}

impl Transport for TcpTransport {
    fn schemes(&self) -> &'static [Scheme] {
        &[Scheme::Tcp]
    }

    fn listen(&self, addr: Addr) -> BoxFuture<'static, Result<Box<dyn Listener>, ListenError>> {
        let this = self.clone();
        Box::pin(async move {
            if addr.scheme() != Scheme::Tcp {
                return Err(ListenError::UnsupportedScheme(addr.scheme()));
            }
            let socket_addr = resolve_listen(&addr).await?;
            let socket = if socket_addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
            .map_err(ListenError::Bind)?;
            socket.set_reuseaddr(true).map_err(ListenError::Bind)?;
            socket.bind(socket_addr).map_err(ListenError::Bind)?;
            let listener = socket.listen(this.config.backlog).map_err(ListenError::Bind)?;
            let local = listener.local_addr().map_err(ListenError::Bind)?;
            let local_addr = Addr::new(Scheme::Tcp, addr.host().clone(), local.port());
            Ok(Box::new(TcpListenerImpl { listener, local_addr, transport: this })
                as Box<dyn Listener>)
        })
    }

    fn dial(&self, addr: Addr) -> BoxFuture<'static, Result<Connection, DialError>> {
        let this = self.clone();
        Box::pin(async move {
            if addr.scheme() != Scheme::Tcp {
                return Err(DialError::UnsupportedScheme(addr.scheme()));
            }
            let config = &this.config;
            let stream = tokio::time::timeout(config.dial_timeout, connect_tcp(&addr))
                .await
                .map_err(|_| DialError::Timeout)??;
            set_notsent_lowat(&stream, config.notsent_lowat).map_err(DialError::Connect)?;
            let local = stream.local_addr().map_err(DialError::Connect)?;
            let remote = stream.peer_addr().map_err(DialError::Connect)?;
            let (secured, handshake) = sinew_secure::upgrade_outbound_any(
                stream,
                &this.identities,
                config.dial_security(),
                addr.peer(),
                config.noise.handshake_timeout,
            )
            .await?;
            let info = connection_info(handshake, Direction::Outbound, local, remote);
            let muxer = sinew_mux::yamux(secured, Direction::Outbound, &config.mux);
            Ok(Connection { muxer, info })
        })
    }
}

/// Sets `TCP_NOTSENT_LOWAT` (Linux; elsewhere nothing).
#[allow(unsafe_code)]
fn set_notsent_lowat(stream: &TcpStream, bytes: Option<u32>) -> io::Result<()> {
    let Some(bytes) = bytes else { return Ok(()) };
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        let value: libc::c_int = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: the descriptor is the open socket `stream` owns for the whole call, and the
        // option value points to a c_int of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (stream, bytes);
    Ok(())
}

struct TcpListenerImpl {
    listener: TcpListener,
    local_addr: Addr,
    transport: TcpTransport,
}

impl Listener for TcpListenerImpl {
    fn local_addr(&self) -> Addr {
        self.local_addr.clone()
    }

    fn accept(&mut self) -> BoxFuture<'_, Result<Incoming, io::Error>> {
        Box::pin(async move {
            let (stream, remote) = self.listener.accept().await?;
            stream.set_nodelay(true)?;
            set_notsent_lowat(&stream, self.transport.config.notsent_lowat)?;
            let local = stream.local_addr()?;
            let pending = PendingTcp { stream, local, remote, transport: self.transport.clone() };
            Ok(Incoming::new(canonical(remote), canonical(local), pending))
        })
    }
}

/// How long a refused socket is kept to deliver its refusal record.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// An accepted TCP socket before its handshake.
struct PendingTcp {
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    transport: TcpTransport,
}

impl PendingConnection for PendingTcp {
    fn upgrade(self: Box<Self>) -> BoxFuture<'static, Result<Connection, UpgradeError>> {
        let Self { stream, local, remote, transport } = *self;
        Box::pin(async move {
            let config = &transport.config;
            let (secured, handshake) = sinew_secure::upgrade_inbound_any(
                stream,
                &transport.identities,
                config.noise.handshake_timeout,
            )
            .await
            .map_err(UpgradeError::Handshake)?;
            let info = connection_info(handshake, Direction::Inbound, local, remote);
            let muxer = sinew_mux::yamux(secured, Direction::Inbound, &config.mux);
            Ok(Connection { muxer, info })
        })
    }

    fn refuse(self: Box<Self>, limit: RefusedLimit) -> BoxFuture<'static, ()> {
        let refused = Refused { limit, retry_after: None };
        Box::pin(sinew_secure::refuse_inbound(self.stream, refused, REFUSAL_TIMEOUT))
    }
}
