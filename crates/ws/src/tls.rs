//! wss: TLS under the WebSocket (rustls with the ring provider), and the socket type that is
//! either plain TCP or TLS over TCP.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// ALPN for a WebSocket over TLS: HTTP/1.1 carries the upgrade.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// ring's default provider (TLS 1.2 and 1.3: a wss listener also serves browsers and proxies).
// rustls 0.23.48 deprecates ring's provider for its lack of post-quantum key exchange; ring is
// still the one provider the design picks (as in sinew-secure).
#[allow(deprecated)]
fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(what: &str, error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {error}"))
}

/// The certificate chain and private key a wss listener presents (a rustls server
/// configuration, ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`).
#[derive(Debug, Clone)]
pub struct WssListen {
    config: Arc<rustls::ServerConfig>,
}

impl WssListen {
    /// From a certificate chain (leaf first) and its private key.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> io::Result<Self> {
        let mut config = rustls::ServerConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS versions", e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| invalid("wss certificate or key", e))?;
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(Self { config: Arc::new(config) })
    }

    /// From PEM files: the certificate chain (leaf first) and the private key (PKCS#8, PKCS#1 or
    /// SEC1).
    pub fn from_pem_files(chain: impl AsRef<Path>, key: impl AsRef<Path>) -> io::Result<Self> {
        let (chain, key) = (chain.as_ref(), key.as_ref());
        let certs = CertificateDer::pem_file_iter(chain)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| invalid(&format!("certificate file {}", chain.display()), e))?;
        if certs.is_empty() {
            return Err(invalid(
                &format!("certificate file {}", chain.display()),
                "no certificate",
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| invalid(&format!("key file {}", key.display()), e))?;
        Self::new(certs, key)
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

/// The roots a wss dialler trusts (a rustls client configuration, ring provider, ALPN
/// `http/1.1`). The server name checked is the dialled address's host.
#[derive(Debug, Clone)]
pub struct WssDial {
    config: Arc<rustls::ClientConfig>,
}

impl WssDial {
    /// Trusting `roots`.
    pub fn new(roots: impl IntoIterator<Item = CertificateDer<'static>>) -> io::Result<Self> {
        let mut store = rustls::RootCertStore::empty();
        for root in roots {
            store.add(root).map_err(|e| invalid("trusted root", e))?;
        }
        if store.is_empty() {
            return Err(invalid("trusted roots", "none given"));
        }
        let mut config = rustls::ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS versions", e))?
            .with_root_certificates(store)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(Self { config: Arc::new(config) })
    }

    /// Trusting the certificates in a PEM file.
    pub fn from_pem_file(roots: impl AsRef<Path>) -> io::Result<Self> {
        let path = roots.as_ref();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| invalid(&format!("roots file {}", path.display()), e))?;
        Self::new(certs)
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }
}

/// The socket under a WebSocket: TCP, or TLS over TCP.
pub(crate) enum Socket {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain(_) => f.write_str("Socket::Plain"),
            Self::Tls(_) => f.write_str("Socket::Tls"),
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
