//! [`WsTransport`]: TCP, optional TLS (wss), the WebSocket upgrade, the sinew security
//! handshake over [`WsStream`], then yamux.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use sinew_mux::YamuxConfig;
#[cfg(feature = "noise")]
use sinew_secure::NoiseIdentity;
use sinew_secure::{DialSecurity, HandshakeInfo, Identities, NoiseConfig};
use sinew_transport::resolve::{canonical, connect_tcp, resolve_listen};
use sinew_transport::{
    BoxFuture, Connection, ConnectionInfo, DialError, Direction, HandshakeError, Incoming,
    ListenError, Listener, PendingConnection, Refused, RefusedLimit, Transport, UpgradeError,
};
use sinew_types::{Addr, Host, PeerId, Scheme};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::stream::{WsStream, WsStreamConfig};
use crate::tls::{Socket, WssDial, WssListen};

/// The path a listener serves when its address has none.
pub const DEFAULT_PATH: &str = "/";

/// The HTTP header of a refusal (503) that names the limit: its [`RefusedLimit::code`].
pub const REFUSED_HEADER: &str = "sinew-refused";

/// How long a refused socket is kept to deliver its 503.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// The most of an HTTP request head a refusal reads before answering.
const REFUSAL_READ_LIMIT: usize = 8 * 1024;

/// WebSocket transport settings.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Whole-dial bound for resolving and connecting TCP. TLS, the WebSocket upgrade and the
    /// security handshake share the handshake timeout (`noise.handshake_timeout`).
    pub dial_timeout: Duration,
    /// Noise suite and the handshake timeout.
    pub noise: NoiseConfig,
    /// Dial with TLS 1.3 (inside the WebSocket) instead of Noise (false: Noise with
    /// `noise.suite`). A listener accepts both (TLS only with a TLS identity, see
    /// [`WsTransport::with_identities`]). False by default; true when built without the
    /// `noise` feature.
    pub dial_tls: bool,
    /// yamux settings.
    pub mux: YamuxConfig,
    /// Listen backlog.
    pub backlog: u32,
    /// WebSocket limits and write batching.
    pub stream: WsStreamConfig,
    /// The certificate and key a `wss://` listener presents. Without it, listening on a wss
    /// address fails.
    pub wss_listen: Option<WssListen>,
    /// The roots a `wss://` dial trusts. Without it, dialling a wss address fails.
    pub wss_dial: Option<WssDial>,
}

impl WsConfig {
    /// The security this configuration dials with.
    pub fn dial_security(&self) -> DialSecurity {
        if self.dial_tls { DialSecurity::Tls } else { DialSecurity::Noise(self.noise.suite) }
    }
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            dial_timeout: Duration::from_secs(10),
            noise: NoiseConfig::default(),
            dial_tls: !cfg!(feature = "noise"),
            mux: YamuxConfig::default(),
            backlog: 1024,
            stream: WsStreamConfig::default(),
            wss_listen: None,
            wss_dial: None,
        }
    }
}

/// The WebSocket transport, for `ws://host:port/path` and `wss://host:port/path`.
#[derive(Clone)]
pub struct WsTransport {
    identities: Identities,
    config: Arc<WsConfig>,
}

impl WsTransport {
    /// A transport authenticating with the Noise `identity`.
    #[cfg(feature = "noise")]
    pub fn new(identity: Arc<NoiseIdentity>, config: WsConfig) -> Self {
        Self::with_identities(Identities::noise(identity), config)
    }

    /// A transport authenticating with the securities `identities` has identities for.
    pub fn with_identities(identities: Identities, config: WsConfig) -> Self {
        Self { identities, config: Arc::new(config) }
    }

    /// The configuration.
    pub fn config(&self) -> &WsConfig {
        &self.config
    }
}

impl std::fmt::Debug for WsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTransport").field("config", &self.config).finish_non_exhaustive()
    }
}

// ---- The security step: one function per direction. ----

/// Runs the dialler's security handshake over the WebSocket.
async fn secure_outbound<S>(
    io: S,
    transport: &WsTransport,
    expected: Option<PeerId>,
    timeout: Duration,
) -> Result<(sinew_secure::SecuredStream<S>, HandshakeInfo), HandshakeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let security = transport.config.dial_security();
    sinew_secure::upgrade_outbound_any(io, &transport.identities, security, expected, timeout).await
}

/// Runs the listener's security handshake over the WebSocket (Noise or TLS, by the first bytes).
async fn secure_inbound<S>(
    io: S,
    transport: &WsTransport,
    timeout: Duration,
) -> Result<(sinew_secure::SecuredStream<S>, HandshakeInfo), HandshakeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    sinew_secure::upgrade_inbound_any(io, &transport.identities, timeout).await
}

// ---- Addresses. ----

/// `scheme://ip:port/path`.
fn ws_addr(scheme: Scheme, socket: SocketAddr, path: &str) -> Addr {
    let addr = Addr::new(scheme, Host::Ip(socket.ip()), socket.port());
    addr.clone().with_path(path).unwrap_or(addr)
}

fn connection_info(
    handshake: HandshakeInfo,
    direction: Direction,
    local_addr: Addr,
    remote_addr: Addr,
) -> ConnectionInfo {
    ConnectionInfo {
        peer: handshake.peer,
        direction,
        local_addr,
        remote_addr,
        security: handshake.security,
        boot_nonce: handshake.boot_nonce,
        session_tag: handshake.session_tag,
    }
}

// ---- Dialling. ----

/// TLS (for wss) and the WebSocket client handshake.
async fn open_websocket(
    tcp: TcpStream,
    addr: &Addr,
    config: &WsConfig,
) -> Result<WsStream<Socket>, DialError> {
    let socket = match addr.scheme() {
        Scheme::Wss => {
            let Some(wss) = &config.wss_dial else {
                return Err(DialError::Connect(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "wss dial without trusted roots (WsConfig::wss_dial)",
                )));
            };
            let name = match addr.host() {
                Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
                Host::Dns(name) => ServerName::try_from(name.clone()).map_err(|e| {
                    DialError::Connect(io::Error::new(io::ErrorKind::InvalidInput, e))
                })?,
            };
            let tls = wss.connector().connect(name, tcp).await.map_err(DialError::Connect)?;
            Socket::Tls(Box::new(tls.into()))
        }
        _ => Socket::Plain(tcp),
    };
    let scheme = addr.scheme().as_str();
    let path = addr.path().unwrap_or(DEFAULT_PATH);
    let uri = format!("{scheme}://{}:{}{path}", addr.host(), addr.port());
    match WsStream::connect(socket, &uri, &config.stream).await {
        Ok((stream, _response)) => Ok(stream),
        Err(error) => Err(upgrade_refused(error)),
    }
}

/// A failed WebSocket client handshake as a dial error: a listener's 503 with
/// [`REFUSED_HEADER`] is a typed refusal; other HTTP answers and protocol errors are connect
/// errors.
fn upgrade_refused(error: WsError) -> DialError {
    match error {
        WsError::Http(response) => {
            let header = |name: &str| {
                let value = response.headers().get(name)?.to_str().ok()?;
                Some(value.trim().to_owned())
            };
            if let Some(code) = header(REFUSED_HEADER).and_then(|v| v.parse::<u8>().ok()) {
                let retry_after = header("retry-after")
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let refused = Refused { limit: RefusedLimit::from_code(code), retry_after };
                return DialError::Handshake(HandshakeError::Refused(refused));
            }
            DialError::Connect(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("WebSocket upgrade refused: HTTP {}", response.status()),
            ))
        }
        WsError::Io(e) => DialError::Connect(e),
        other => DialError::Connect(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket upgrade failed: {other}"),
        )),
    }
}

impl Transport for WsTransport {
    fn schemes(&self) -> &'static [Scheme] {
        &[Scheme::Ws, Scheme::Wss]
    }

    fn listen(&self, addr: Addr) -> BoxFuture<'static, Result<Box<dyn Listener>, ListenError>> {
        let this = self.clone();
        Box::pin(async move {
            let scheme = addr.scheme();
            let tls = match scheme {
                Scheme::Ws => None,
                Scheme::Wss => Some(this.config.wss_listen.clone().ok_or_else(|| {
                    ListenError::Bind(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a wss listener needs a certificate and key (WsConfig::wss_listen)",
                    ))
                })?),
                other => return Err(ListenError::UnsupportedScheme(other)),
            };
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
            let path: Arc<str> = addr.path().unwrap_or(DEFAULT_PATH).into();
            let local_addr = Addr::new(scheme, addr.host().clone(), local.port());
            let local_addr = local_addr.clone().with_path(&path).unwrap_or(local_addr);
            Ok(Box::new(WsListener { listener, local_addr, path, tls, transport: this })
                as Box<dyn Listener>)
        })
    }

    fn dial(&self, addr: Addr) -> BoxFuture<'static, Result<Connection, DialError>> {
        let this = self.clone();
        Box::pin(async move {
            if !matches!(addr.scheme(), Scheme::Ws | Scheme::Wss) {
                return Err(DialError::UnsupportedScheme(addr.scheme()));
            }
            let config = &this.config;
            let tcp = tokio::time::timeout(config.dial_timeout, connect_tcp(&addr))
                .await
                .map_err(|_| DialError::Timeout)??;
            let local = tcp.local_addr().map_err(DialError::Connect)?;
            let timeout = config.noise.handshake_timeout;
            let deadline = Instant::now() + timeout;
            let ws = tokio::time::timeout_at(deadline, open_websocket(tcp, &addr, config))
                .await
                .map_err(|_| HandshakeError::Timeout)??;
            let left = deadline.saturating_duration_since(Instant::now());
            let (secured, handshake) = secure_outbound(ws, &this, addr.peer(), left).await?;
            let path = addr.path().unwrap_or(DEFAULT_PATH);
            let local_addr = ws_addr(addr.scheme(), canonical(local), path);
            let remote_addr = addr.clone().without_peer();
            let remote_addr = match remote_addr.path() {
                Some(_) => remote_addr,
                None => remote_addr.clone().with_path(path).unwrap_or(remote_addr),
            };
            let info = connection_info(handshake, Direction::Outbound, local_addr, remote_addr);
            let muxer = sinew_mux::yamux(secured, Direction::Outbound, &config.mux);
            Ok(Connection { muxer, info })
        })
    }
}

// ---- Listening. ----

struct WsListener {
    listener: TcpListener,
    local_addr: Addr,
    path: Arc<str>,
    tls: Option<WssListen>,
    transport: WsTransport,
}

impl Listener for WsListener {
    fn local_addr(&self) -> Addr {
        self.local_addr.clone()
    }

    fn accept(&mut self) -> BoxFuture<'_, Result<Incoming, io::Error>> {
        Box::pin(async move {
            let (stream, remote) = self.listener.accept().await?;
            stream.set_nodelay(true)?;
            let local = stream.local_addr()?;
            let pending = PendingWs {
                stream,
                local: canonical(local),
                remote: canonical(remote),
                path: self.path.clone(),
                tls: self.tls.clone(),
                transport: self.transport.clone(),
            };
            Ok(Incoming::new(canonical(remote), canonical(local), pending))
        })
    }
}

/// An accepted TCP socket before TLS, the WebSocket upgrade and the security handshake.
struct PendingWs {
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    path: Arc<str>,
    tls: Option<WssListen>,
    transport: WsTransport,
}

/// TLS (for wss) and the WebSocket server handshake, as handshake errors.
async fn accept_websocket(
    tcp: TcpStream,
    tls: Option<&WssListen>,
    path: &str,
    config: &WsStreamConfig,
) -> Result<WsStream<Socket>, HandshakeError> {
    let socket = match tls {
        Some(tls) => Socket::Tls(Box::new(tls.acceptor().accept(tcp).await?.into())),
        None => Socket::Plain(tcp),
    };
    WsStream::accept(socket, path, config).await.map_err(|error| {
        HandshakeError::Io(match error {
            WsError::Io(e) => e,
            WsError::Http(response) => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("WebSocket upgrade refused: HTTP {}", response.status()),
            ),
            other => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("WebSocket upgrade failed: {other}"),
            ),
        })
    })
}

impl PendingConnection for PendingWs {
    fn upgrade(self: Box<Self>) -> BoxFuture<'static, Result<Connection, UpgradeError>> {
        let Self { stream, local, remote, path, tls, transport } = *self;
        Box::pin(async move {
            let config = &transport.config;
            let timeout = config.noise.handshake_timeout;
            let deadline = Instant::now() + timeout;
            // Web TLS and the HTTP upgrade are each one flight from an honest dialler: bounded
            // as TLS over TCP is, so a trickled request cannot hold a pending slot for long.
            let upgraded_by =
                Instant::now() + timeout.min(sinew_secure::DIALLER_MESSAGE_TIMEOUT * 2);
            let ws = tokio::time::timeout_at(
                upgraded_by,
                accept_websocket(stream, tls.as_ref(), &path, &config.stream),
            )
            .await
            .map_err(|_| HandshakeError::Timeout)??;
            let left = deadline.saturating_duration_since(Instant::now());
            let (secured, handshake) = secure_inbound(ws, &transport, left).await?;
            let scheme = if tls.is_some() { Scheme::Wss } else { Scheme::Ws };
            let info = connection_info(
                handshake,
                Direction::Inbound,
                ws_addr(scheme, local, &path),
                ws_addr(scheme, remote, &path),
            );
            let muxer = sinew_mux::yamux(secured, Direction::Inbound, &config.mux);
            Ok(Connection { muxer, info })
        })
    }

    fn refuse(self: Box<Self>, limit: RefusedLimit) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // wss: closing is all we can say without paying for a TLS handshake.
            if self.tls.is_some() {
                return;
            }
            let _ = tokio::time::timeout(REFUSAL_TIMEOUT, refuse_http(self.stream, limit)).await;
        })
    }
}

/// Reads the request head (so that closing does not reset the connection under our answer),
/// answers 503 with the limit in [`REFUSED_HEADER`], and closes.
async fn refuse_http(mut stream: TcpStream, limit: RefusedLimit) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REFUSAL_READ_LIMIT {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\n{REFUSED_HEADER}: {}\r\nconnection: close\r\n\
         content-length: 0\r\n\r\n",
        limit.code()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}
