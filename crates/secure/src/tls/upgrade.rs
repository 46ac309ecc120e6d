//! Thin async drivers: a TLS 1.3 handshake over a tokio stream with tokio-rustls, bounded by a
//! timeout, ending with the remote's proven identity.

use std::time::Duration;

use rustls::pki_types::ServerName;
use sinew_transport::{HandshakeError, Security};
use sinew_types::PeerId;
use tokio::io::{AsyncRead, AsyncWrite};

use super::certificate::verified_identity;
use super::verifier::io_error;
use super::{ALPN, SERVER_NAME, SESSION_TAG_LABEL, TlsIdentity};
use crate::preamble::Rewind;
use crate::{DIALLER_MESSAGE_TIMEOUT, HandshakeInfo};

/// A TLS stream: the dialler's (client) or the listener's (server) side.
pub type TlsStream<S> = tokio_rustls::TlsStream<S>;

/// Dials: runs a TLS 1.3 handshake as the client over `io`, checking the server's identity
/// against `expected` (if set) in the certificate verifier, so that on a mismatch the client
/// never sends its certificate or its Finished.
///
/// Bounded by `timeout` (`HandshakeError::Timeout`); on any error `io` is dropped.
pub async fn upgrade_outbound_tls<S>(
    io: S,
    identity: &TlsIdentity,
    expected: Option<PeerId>,
    timeout: Duration,
) -> Result<(TlsStream<S>, HandshakeInfo), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (config, verdict) =
        identity.client_config(expected).map_err(|e| HandshakeError::Tls(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from(SERVER_NAME).map_err(|e| HandshakeError::Tls(e.to_string()))?;
    let connected = tokio::time::timeout(timeout, connector.connect(name, io))
        .await
        .map_err(|_| HandshakeError::Timeout)?;
    let stream = match connected {
        Ok(stream) => stream,
        Err(e) => return Err(verdict.take().unwrap_or_else(|| io_error(e))),
    };
    let info = finished(stream.get_ref().1)?;
    Ok((TlsStream::Client(stream), info))
}

/// Listens: runs a TLS 1.3 handshake as the server over `io` (whose replayed bytes are the
/// first bytes [`detect`](crate::detect) read). A client certificate is required.
///
/// Bounded by `timeout`, and by twice [`DIALLER_MESSAGE_TIMEOUT`] (the dialler sends two
/// flights: its ClientHello, then its certificate and Finished), so a socket that trickles its
/// handshake cannot hold a pending-handshake slot for long. On any error `io` is dropped.
pub async fn upgrade_inbound_tls<S>(
    io: Rewind<S>,
    identity: &TlsIdentity,
    timeout: Duration,
) -> Result<(TlsStream<Rewind<S>>, HandshakeInfo), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config());
    let bound = timeout.min(DIALLER_MESSAGE_TIMEOUT * 2);
    let stream = tokio::time::timeout(bound, acceptor.accept(io))
        .await
        .map_err(|_| HandshakeError::Timeout)?
        .map_err(io_error)?;
    let info = finished(stream.get_ref().1)?;
    Ok((TlsStream::Server(stream), info))
}

/// What a finished handshake established, from either side's connection.
fn finished<D>(connection: &rustls::ConnectionCommon<D>) -> Result<HandshakeInfo, HandshakeError> {
    if connection.alpn_protocol() != Some(ALPN) {
        return Err(HandshakeError::Alpn);
    }
    let Some([certificate]) = connection.peer_certificates() else {
        return Err(HandshakeError::Certificate(
            sinew_transport::CertificateError::NotOneCertificate,
        ));
    };
    // The verifier checked this certificate in this handshake; this reads the identity back.
    let identity = verified_identity(certificate)?;
    let session_tag = connection
        .export_keying_material([0u8; 32], SESSION_TAG_LABEL, Some(b""))
        .map_err(|e| HandshakeError::Tls(e.to_string()))?;
    Ok(HandshakeInfo {
        peer: identity.peer,
        boot_nonce: identity.boot_nonce,
        session_tag,
        security: Security::Tls,
    })
}
