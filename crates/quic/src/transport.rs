//! [`QuicTransport`]: quinn endpoints that both dial and accept.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, Endpoint, EndpointConfig, TokioRuntime, VarInt};
use rustls::pki_types::CertificateDer;
use sinew_secure::tls::verified_identity;
use sinew_secure::{DIALLER_MESSAGE_TIMEOUT, SESSION_TAG_LABEL, TlsIdentity, Verdict};
use sinew_transport::resolve::{canonical, no_addresses, resolve_dial, resolve_listen};
use sinew_transport::{
    BoxFuture, CertificateError, Connection, ConnectionInfo, DialError, Direction, HandshakeError,
    Incoming, ListenError, Listener, PendingConnection, Refused, RefusedLimit, Security, Transport,
    UpgradeError,
};
use sinew_types::{Addr, Host, PeerId, Scheme};

use crate::config::QuicConfig;
use crate::muxer::muxed;

/// The UDP socket buffer sizes the kernel granted an endpoint, as it reports them (`SO_SNDBUF`
/// and `SO_RCVBUF` read back; Linux reports twice the bytes it accounts for the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketBuffers {
    /// The send buffer, in bytes.
    pub send: usize,
    /// The receive buffer, in bytes.
    pub recv: usize,
}

/// The QUIC error code (`CONNECTION_REFUSED`, RFC 9000 section 20.1) the dialler sees when a
/// listener refuses its connection before the handshake.
const CONNECTION_REFUSED: u64 = 0x2;

/// The QUIC error codes of TLS alerts (`0x100 + alert`, RFC 9001 section 4.8).
const CRYPTO_ERROR_BASE: u64 = 0x100;
const ALERT_PROTOCOL_VERSION: u64 = 70;
const ALERT_CERTIFICATE_REQUIRED: u64 = 116;
const ALERT_NO_APPLICATION_PROTOCOL: u64 = 120;

/// The QUIC transport: `quic://host:port` addresses, TLS 1.3 bound to the node's identity
/// (`sinew-secure`), QUIC's own streams behind [`MuxedConnection`](sinew_transport::MuxedConnection).
///
/// Cheap to clone; clones share the endpoints.
#[derive(Clone)]
pub struct QuicTransport {
    inner: Arc<Inner>,
}

struct Inner {
    identity: Arc<TlsIdentity>,
    config: QuicConfig,
    transport_config: Arc<quinn::TransportConfig>,
    endpoints: Mutex<Endpoints>,
}

/// The endpoints this transport made.
#[derive(Default)]
struct Endpoints {
    /// Listening endpoints by bound address; they also dial.
    listening: BTreeMap<SocketAddr, Endpoint>,
    /// The client-only endpoints (unspecified address, port 0), one per IP family, made on
    /// first use.
    client_v4: Option<Endpoint>,
    client_v6: Option<Endpoint>,
    /// What the kernel granted each endpoint's socket, by bound address.
    buffers: BTreeMap<SocketAddr, SocketBuffers>,
}

impl QuicTransport {
    /// A transport authenticating as `identity`.
    pub fn new(identity: Arc<TlsIdentity>, config: QuicConfig) -> Self {
        let transport_config = config.transport_config();
        Self {
            inner: Arc::new(Inner {
                identity,
                config,
                transport_config,
                endpoints: Mutex::new(Endpoints::default()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &QuicConfig {
        &self.inner.config
    }

    /// The socket buffer sizes the kernel granted the endpoint bound to `local` (a listener's
    /// address, or the unspecified address with the port of a client-only endpoint), if this
    /// transport made one there.
    pub fn socket_buffers(&self, local: SocketAddr) -> Option<SocketBuffers> {
        self.endpoints().buffers.get(&local).copied()
    }

    /// The local addresses of every endpoint this transport has bound (listeners and the
    /// client-only ones).
    pub fn endpoint_addrs(&self) -> Vec<SocketAddr> {
        self.endpoints().buffers.keys().copied().collect()
    }

    fn endpoints(&self) -> std::sync::MutexGuard<'_, Endpoints> {
        // A panic while holding the lock leaves the maps consistent (single inserts/removals).
        self.inner.endpoints.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn server_config(&self) -> Result<quinn::ServerConfig, io::Error> {
        let crypto = QuicServerConfig::try_from(self.inner.identity.server_config())
            .map_err(io::Error::other)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::clone(&self.inner.transport_config));
        // quinn's queue of connection attempts not yet accepted or refused: bounded near the
        // node's own pending-handshake limit, not quinn's 65,536 attempts and 100 MiB.
        server
            .max_incoming(MAX_INCOMING)
            .incoming_buffer_size(INCOMING_BUFFER)
            .incoming_buffer_size_total(MAX_INCOMING as u64 * INCOMING_BUFFER);
        Ok(server)
    }

    /// Binds a UDP socket with the configured buffers and makes an endpoint on it.
    fn bind(
        &self,
        addr: SocketAddr,
        server: Option<quinn::ServerConfig>,
    ) -> io::Result<(Endpoint, SocketAddr, SocketBuffers)> {
        let socket = std::net::UdpSocket::bind(addr)?;
        let buffers = set_buffers(&socket, &self.inner.config)?;
        let local = socket.local_addr()?;
        tracing::debug!(%local, send = buffers.send, recv = buffers.recv, "QUIC socket buffers");
        let endpoint =
            Endpoint::new(EndpointConfig::default(), server, socket, Arc::new(TokioRuntime))?;
        Ok((endpoint, local, buffers))
    }

    /// The endpoint to dial `remote` from: a listening endpoint that can reach it (so that the
    /// remote sees our listening port), else the client-only endpoint of its IP family.
    fn dial_endpoint(&self, remote: SocketAddr) -> io::Result<Endpoint> {
        {
            let endpoints = self.endpoints();
            let reachable = |local: &SocketAddr| {
                local.is_ipv4() == remote.is_ipv4()
                    && (local.ip().is_unspecified()
                        || local.ip().is_loopback() == remote.ip().is_loopback())
            };
            if let Some((_, endpoint)) = endpoints.listening.iter().find(|(l, _)| reachable(l)) {
                return Ok(endpoint.clone());
            }
            let slot = if remote.is_ipv4() { &endpoints.client_v4 } else { &endpoints.client_v6 };
            if let Some(endpoint) = slot {
                return Ok(endpoint.clone());
            }
        }
        let unspecified = if remote.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        let (endpoint, local, buffers) = self.bind(SocketAddr::new(unspecified, 0), None)?;
        let mut endpoints = self.endpoints();
        let slot =
            if remote.is_ipv4() { &mut endpoints.client_v4 } else { &mut endpoints.client_v6 };
        // Two first dials may race: keep the first endpoint made, drop the other.
        if let Some(first) = slot {
            return Ok(first.clone());
        }
        *slot = Some(endpoint.clone());
        endpoints.buffers.insert(local, buffers);
        Ok(endpoint)
    }

    /// Dials one resolved address, bounded by the handshake timeout.
    async fn dial_one(&self, addr: &Addr, remote: SocketAddr) -> Result<Connection, DialError> {
        let endpoint = self.dial_endpoint(remote).map_err(DialError::Connect)?;
        let (crypto, verdict) = self
            .inner
            .identity
            .client_config(addr.peer())
            .map_err(|e| DialError::Connect(io::Error::other(e)))?;
        let crypto = QuicClientConfig::try_from(crypto)
            .map_err(|e| DialError::Connect(io::Error::other(e)))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(Arc::clone(&self.inner.transport_config));
        let connecting = endpoint
            .connect_with(client, remote, sinew_secure::tls::SERVER_NAME)
            .map_err(|e| DialError::Connect(io::Error::other(e)))?;
        let connection =
            match tokio::time::timeout(self.inner.config.handshake_timeout, connecting).await {
                Err(_) => return Err(HandshakeError::Timeout.into()),
                Ok(Err(e)) => return Err(dial_error(e, &verdict)),
                Ok(Ok(connection)) => connection,
            };
        let info = connection_info(
            &connection,
            Direction::Outbound,
            self.inner.identity.peer_id(),
            addr.peer(),
            &endpoint,
        )?;
        Ok(Connection { muxer: self.muxed(connection), info })
    }

    fn muxed(&self, connection: quinn::Connection) -> sinew_transport::MuxedConnection {
        muxed(connection, self.inner.config.limits, self.inner.config.close_timeout)
    }
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport")
            .field("peer", &self.inner.identity.peer_id())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Sets the socket's buffers as configured and reads back what the kernel granted.
fn set_buffers(socket: &std::net::UdpSocket, config: &QuicConfig) -> io::Result<SocketBuffers> {
    let state = quinn::udp::UdpSocketState::new(socket.into())?;
    if let Some(bytes) = config.socket_send_buffer
        && let Err(e) = state.set_send_buffer_size(socket.into(), bytes)
    {
        tracing::warn!(bytes, error = %e, "could not set the UDP send buffer");
    }
    if let Some(bytes) = config.socket_recv_buffer
        && let Err(e) = state.set_recv_buffer_size(socket.into(), bytes)
    {
        tracing::warn!(bytes, error = %e, "could not set the UDP receive buffer");
    }
    Ok(SocketBuffers {
        send: state.send_buffer_size(socket.into())?,
        recv: state.recv_buffer_size(socket.into())?,
    })
}

fn quic_addr(socket: SocketAddr) -> Addr {
    let socket = canonical(socket);
    Addr::new(Scheme::Quic, Host::Ip(socket.ip()), socket.port())
}

/// Our address on `connection`: the local IP the packets arrived on if quinn knows it, else the
/// endpoint's bound address.
fn local_socket(connection: &quinn::Connection, endpoint: &Endpoint) -> io::Result<SocketAddr> {
    let bound = endpoint.local_addr()?;
    Ok(match connection.local_ip() {
        Some(ip) => SocketAddr::new(ip, bound.port()),
        None => bound,
    })
}

/// What the handshake established: the remote's certificate (which our verifier accepted in
/// this handshake, so its signatures are not verified again) names the identity, checked once
/// more against ours and the expected one; the exporter gives the session tag.
fn connection_info(
    connection: &quinn::Connection,
    direction: Direction,
    local_peer: PeerId,
    expected: Option<PeerId>,
    endpoint: &Endpoint,
) -> Result<ConnectionInfo, HandshakeError> {
    let fail = |e: HandshakeError| {
        connection.close(VarInt::from_u32(crate::CLOSE_CODE), b"handshake");
        e
    };
    let not_one = || fail(HandshakeError::Certificate(CertificateError::NotOneCertificate));
    let certificates = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(not_one)?;
    let [certificate] = certificates.as_slice() else {
        return Err(not_one());
    };
    let identity = verified_identity(certificate).map_err(fail)?;
    if identity.peer == local_peer {
        return Err(fail(HandshakeError::SelfConnection));
    }
    if let Some(expected) = expected.filter(|expected| *expected != identity.peer) {
        return Err(fail(HandshakeError::UnexpectedPeer { expected, actual: identity.peer }));
    }
    let mut session_tag = [0u8; 32];
    connection
        .export_keying_material(&mut session_tag, SESSION_TAG_LABEL, b"")
        .map_err(|_| fail(HandshakeError::MalformedPayload("TLS exporter unavailable")))?;
    let local = local_socket(connection, endpoint).map_err(|e| fail(HandshakeError::Io(e)))?;
    Ok(ConnectionInfo {
        peer: identity.peer,
        direction,
        local_addr: quic_addr(local),
        remote_addr: quic_addr(connection.remote_address()),
        security: Security::Tls,
        boot_nonce: identity.boot_nonce,
        session_tag,
    })
}

/// A failed QUIC handshake as a [`HandshakeError`]: the remote's refusal, a TLS alert, a
/// timeout, or the connection's failure.
fn handshake_error(error: ConnectionError) -> HandshakeError {
    let code = match &error {
        ConnectionError::ConnectionClosed(close) => Some(close.error_code),
        ConnectionError::TransportError(e) => Some(e.code),
        ConnectionError::TimedOut => return HandshakeError::Timeout,
        _ => None,
    };
    match code.map(u64::from) {
        Some(CONNECTION_REFUSED) => HandshakeError::Refused(Refused {
            // QUIC's refusal carries no reason: the limit is unknown.
            limit: RefusedLimit::Other(0),
            retry_after: None,
        }),
        Some(code) if code == CRYPTO_ERROR_BASE + ALERT_PROTOCOL_VERSION => {
            HandshakeError::TlsVersion
        }
        Some(code) if code == CRYPTO_ERROR_BASE + ALERT_NO_APPLICATION_PROTOCOL => {
            HandshakeError::Alpn
        }
        // NO_ERROR (0) is a plain close; anything else failed the handshake.
        Some(code) if code != 0 => HandshakeError::Tls(error.to_string()),
        _ => HandshakeError::Io(io::Error::new(io::ErrorKind::ConnectionAborted, error)),
    }
}

/// A failed handshake: our verifier's typed reason if it refused the remote's certificate,
/// else what quinn reported.
fn checked_error(error: ConnectionError, verdict: &Verdict) -> HandshakeError {
    verdict.take().unwrap_or_else(|| handshake_error(error))
}

/// A failed inbound handshake (see [`checked_error`]). Our own rustls, as a listener, raises
/// `certificate_required` when the dialler sent no certificate: the same typed reason as over
/// TCP. (The same alert received from the remote names no fault of its certificate.)
fn inbound_error(error: ConnectionError, verdict: &Verdict) -> HandshakeError {
    if let Some(reason) = verdict.take() {
        return reason;
    }
    match &error {
        ConnectionError::TransportError(e)
            if u64::from(e.code) == CRYPTO_ERROR_BASE + ALERT_CERTIFICATE_REQUIRED =>
        {
            HandshakeError::Certificate(CertificateError::NotOneCertificate)
        }
        _ => handshake_error(error),
    }
}

/// A failed dial (see [`checked_error`]).
fn dial_error(error: ConnectionError, verdict: &Verdict) -> DialError {
    DialError::Handshake(checked_error(error, verdict))
}

impl Transport for QuicTransport {
    fn schemes(&self) -> &'static [Scheme] {
        &[Scheme::Quic]
    }

    fn listen(&self, addr: Addr) -> BoxFuture<'static, Result<Box<dyn Listener>, ListenError>> {
        let this = self.clone();
        Box::pin(async move {
            if addr.scheme() != Scheme::Quic {
                return Err(ListenError::UnsupportedScheme(addr.scheme()));
            }
            let socket_addr = resolve_listen(&addr).await?;
            let server = this.server_config().map_err(ListenError::Bind)?;
            let (endpoint, local, buffers) =
                this.bind(socket_addr, Some(server.clone())).map_err(ListenError::Bind)?;
            let mut endpoints = this.endpoints();
            endpoints.listening.insert(local, endpoint.clone());
            endpoints.buffers.insert(local, buffers);
            drop(endpoints);
            let local_addr = Addr::new(Scheme::Quic, addr.host().clone(), local.port());
            let pending = Arc::new(AtomicUsize::new(0));
            let server = Arc::new(server);
            Ok(Box::new(QuicListener {
                endpoint,
                local,
                local_addr,
                transport: this,
                pending,
                server,
            }) as Box<dyn Listener>)
        })
    }

    fn dial(&self, addr: Addr) -> BoxFuture<'static, Result<Connection, DialError>> {
        let this = self.clone();
        Box::pin(async move {
            if addr.scheme() != Scheme::Quic {
                return Err(DialError::UnsupportedScheme(addr.scheme()));
            }
            let attempt = async {
                let candidates = resolve_dial(&addr).await?;
                let mut last = DialError::Connect(no_addresses());
                for candidate in candidates {
                    match this.dial_one(&addr, candidate).await {
                        Ok(connection) => return Ok(connection),
                        // The remote proved who it is: another address will not change that.
                        Err(
                            e @ DialError::Handshake(
                                HandshakeError::UnexpectedPeer { .. }
                                | HandshakeError::SelfConnection,
                            ),
                        ) => return Err(e),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            };
            tokio::time::timeout(this.inner.config.dial_timeout, attempt)
                .await
                .map_err(|_| DialError::Timeout)?
        })
    }
}

/// A listening endpoint. Dropping it stops accepting new connections; established ones go on.
struct QuicListener {
    endpoint: Endpoint,
    local: SocketAddr,
    local_addr: Addr,
    transport: QuicTransport,
    /// Attempts handed out whose handshake has not ended.
    pending: Arc<AtomicUsize>,
    /// The endpoint's server configuration, the base of each connection's own.
    server: Arc<quinn::ServerConfig>,
}

impl Listener for QuicListener {
    fn local_addr(&self) -> Addr {
        self.local_addr.clone()
    }

    fn accept(&mut self) -> BoxFuture<'_, Result<Incoming, io::Error>> {
        Box::pin(async move {
            let incoming = loop {
                let incoming = self.endpoint.accept().await.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotConnected, "the QUIC endpoint is closed")
                })?;
                // Under load, a first Initial from an address not yet validated gets a stateless
                // Retry: a spoofed source never answers it, so spoofed datagrams (each would
                // otherwise hold a slot for the inbound handshake bound) take at most
                // `validate_addresses_above` slots. Costs an honest dialler one round trip.
                let busy = self.pending.load(Ordering::Acquire)
                    >= self.transport.inner.config.validate_addresses_above;
                if busy && !incoming.remote_address_validated() && incoming.may_retry() {
                    let _ = incoming.retry();
                    continue;
                }
                break incoming;
            };
            let remote = canonical(incoming.remote_address());
            let local = canonical(match incoming.local_ip() {
                Some(ip) => SocketAddr::new(ip, self.local.port()),
                None => self.local,
            });
            let pending = PendingQuic {
                incoming,
                endpoint: self.endpoint.clone(),
                transport: self.transport.clone(),
                server: Arc::clone(&self.server),
                slot: PendingSlot::take(&self.pending),
            };
            Ok(Incoming::new(remote, local, pending))
        })
    }
}

impl Drop for QuicListener {
    fn drop(&mut self) {
        self.endpoint.set_server_config(None);
        let mut endpoints = self.transport.endpoints();
        endpoints.listening.remove(&self.local);
        endpoints.buffers.remove(&self.local);
    }
}

/// Connection attempts quinn holds for one endpoint before the node accepts or refuses them.
const MAX_INCOMING: usize = 256;
/// Bytes of early datagrams quinn buffers per attempt not yet accepted.
const INCOMING_BUFFER: u64 = 64 * 1024;

/// A connection attempt that reached a listener, before its handshake.
struct PendingQuic {
    incoming: quinn::Incoming,
    endpoint: Endpoint,
    transport: QuicTransport,
    /// The listener's server configuration.
    server: Arc<quinn::ServerConfig>,
    /// Counted among the listener's handshakes in progress until dropped.
    slot: PendingSlot,
}

/// One of a listener's handshakes in progress, counted until dropped.
struct PendingSlot(Arc<AtomicUsize>);

impl PendingSlot {
    fn take(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PendingConnection for PendingQuic {
    fn upgrade(self: Box<Self>) -> BoxFuture<'static, Result<Connection, UpgradeError>> {
        let Self { incoming, endpoint, transport, server, slot } = *self;
        Box::pin(async move {
            let _slot = slot;
            let config = &transport.inner.config;
            // The listener's configuration with TLS of its own, so that our verifier's reason
            // for refusing the dialler's certificate reaches us typed (quinn passes rustls's
            // error on as text). Everything else, token key included, is shared.
            let (tls, verdict) = transport
                .inner
                .identity
                .server_config_with_verdict()
                .map_err(|e| HandshakeError::Tls(e.to_string()))?;
            let crypto =
                QuicServerConfig::try_from(tls).map_err(|e| HandshakeError::Tls(e.to_string()))?;
            let mut server = (*server).clone();
            server.crypto = Arc::new(crypto);
            let handshake = async {
                let connecting = incoming
                    .accept_with(Arc::new(server))
                    .map_err(|e| inbound_error(e, &verdict))?;
                connecting.await.map_err(|e| inbound_error(e, &verdict))
            };
            // The dialler sends two flights (its Initial, then its certificate and Finished),
            // each due at once: bounded as TLS over TCP is.
            let bound = config.handshake_timeout.min(DIALLER_MESSAGE_TIMEOUT * 2);
            let connection = tokio::time::timeout(bound, handshake)
                .await
                .map_err(|_| HandshakeError::Timeout)??;
            let info = connection_info(
                &connection,
                Direction::Inbound,
                transport.inner.identity.peer_id(),
                None,
                &endpoint,
            )?;
            Ok(Connection { muxer: transport.muxed(connection), info })
        })
    }

    fn refuse(self: Box<Self>, limit: RefusedLimit) -> BoxFuture<'static, ()> {
        // QUIC's CONNECTION_REFUSED carries no reason, so the limit stays ours to log.
        tracing::debug!(remote = %self.incoming.remote_address(), %limit, "refusing a QUIC connection");
        self.incoming.refuse();
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::{ConnectionClose, TransportErrorCode};

    fn closed(code: TransportErrorCode) -> ConnectionError {
        ConnectionError::ConnectionClosed(ConnectionClose {
            error_code: code,
            frame_type: None,
            reason: bytes::Bytes::from_static(b"test"),
        })
    }

    #[test]
    fn quic_refusal_is_a_refused_handshake() {
        match handshake_error(closed(TransportErrorCode::CONNECTION_REFUSED)) {
            HandshakeError::Refused(refused) => {
                assert_eq!(refused.limit, RefusedLimit::Other(0));
                assert_eq!(refused.retry_after, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tls_alerts_map_to_typed_errors() {
        let alert = |code| handshake_error(closed(TransportErrorCode::crypto(code)));
        assert!(matches!(alert(70), HandshakeError::TlsVersion));
        assert!(matches!(alert(120), HandshakeError::Alpn));
        assert!(matches!(alert(42), HandshakeError::Tls(_)));
    }

    #[test]
    fn timeouts_and_local_closes() {
        assert!(matches!(handshake_error(ConnectionError::TimedOut), HandshakeError::Timeout));
        assert!(matches!(handshake_error(ConnectionError::LocallyClosed), HandshakeError::Io(_)));
        assert!(matches!(
            handshake_error(closed(TransportErrorCode::NO_ERROR)),
            HandshakeError::Io(_)
        ));
    }

    #[test]
    fn mapped_addresses_are_reported_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:4001".parse().unwrap();
        assert_eq!(quic_addr(mapped).to_string(), "quic://10.0.0.1:4001");
    }
}
