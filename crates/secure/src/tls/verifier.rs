//! rustls verifiers that accept exactly sinew's certificate shape, and the mapping of rustls
//! errors to [`HandshakeError`].

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, OtherError, PeerIncompatible, SignatureScheme,
};
use sinew_transport::{CertificateError, HandshakeError};
use sinew_types::PeerId;

use super::certificate::{CertifiedIdentity, certified_identity};

/// The one signature scheme sinew certificates use: ECDSA P-256 with SHA-256.
const SCHEME: SignatureScheme = SignatureScheme::ECDSA_NISTP256_SHA256;

/// Why a verifier refused a certificate, carried through rustls inside its `OtherError`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
enum Rejection {
    #[error("{0}")]
    Certificate(CertificateError),
    #[error("identity signature does not verify")]
    BadSignature,
    #[error("expected peer {expected}, remote proved {actual}")]
    UnexpectedPeer { expected: PeerId, actual: PeerId },
    #[error("connected to ourselves")]
    SelfConnection,
}

impl From<Rejection> for HandshakeError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::Certificate(e) => Self::Certificate(e),
            Rejection::BadSignature => Self::BadSignature,
            Rejection::UnexpectedPeer { expected, actual } => {
                Self::UnexpectedPeer { expected, actual }
            }
            Rejection::SelfConnection => Self::SelfConnection,
        }
    }
}

impl From<Rejection> for rustls::Error {
    fn from(rejection: Rejection) -> Self {
        Self::InvalidCertificate(rustls::CertificateError::Other(OtherError(Arc::new(rejection))))
    }
}

/// The checks both verifiers make: one certificate of the right shape, not our own identity,
/// and (for a dialler) the identity expected.
fn check(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    local: PeerId,
    expected: Option<PeerId>,
) -> Result<CertifiedIdentity, Rejection> {
    if !intermediates.is_empty() {
        return Err(Rejection::Certificate(CertificateError::NotOneCertificate));
    }
    let identity = certified_identity(end_entity).map_err(|e| match e {
        HandshakeError::Certificate(e) => Rejection::Certificate(e),
        _ => Rejection::BadSignature,
    })?;
    if identity.peer == local {
        return Err(Rejection::SelfConnection);
    }
    if let Some(expected) = expected.filter(|expected| *expected != identity.peer) {
        return Err(Rejection::UnexpectedPeer { expected, actual: identity.peer });
    }
    Ok(identity)
}

fn verify_tls13(
    algorithms: &WebPkiSupportedAlgorithms,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SCHEME {
        return Err(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
}

fn refuse_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(PeerIncompatible::SupportedVersionsExtensionRequired))
}

/// What a verifier concluded about the remote's certificate in one handshake: the typed reason
/// it refused it, if it did. rustls reports a refusal to the remote as an alert, and QUIC passes
/// it on to us as text; this keeps the reason for our own error.
#[derive(Debug, Clone, Default)]
pub struct Verdict(Arc<Mutex<Option<Rejection>>>);

impl Verdict {
    /// The reason the remote's certificate was refused, once (later calls return `None`).
    pub fn take(&self) -> Option<HandshakeError> {
        self.0.lock().ok()?.take().map(HandshakeError::from)
    }

    fn record(&self, rejection: Rejection) -> Rejection {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(rejection);
        }
        rejection
    }
}

/// The dialler's verifier: the server's certificate must be sinew's shape, prove another
/// identity than ours, and the expected one if the dial names one.
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    pub(crate) local: PeerId,
    pub(crate) expected: Option<PeerId>,
    pub(crate) verdict: Verdict,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check(end_entity, intermediates, self.local, self.expected)
            .map_err(|rejection| self.verdict.record(rejection))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider.signature_verification_algorithms, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SCHEME]
    }
}

/// The listener's verifier: a client certificate is required, of sinew's shape, proving
/// another identity than ours.
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    pub(crate) local: PeerId,
    pub(crate) provider: Arc<CryptoProvider>,
    /// Where a configuration made for one connection keeps the reason of a refusal.
    pub(crate) verdict: Option<Verdict>,
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check(end_entity, intermediates, self.local, None).map_err(|rejection| {
            self.verdict.as_ref().map_or(rejection, |verdict| verdict.record(rejection))
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider.signature_verification_algorithms, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SCHEME]
    }
}

/// A rustls error as a typed [`HandshakeError`]: a verifier's refusal keeps its reason; version
/// and ALPN disagreements have their own variants; anything else is [`HandshakeError::Tls`].
pub fn tls_error(error: &rustls::Error) -> HandshakeError {
    use rustls::AlertDescription as Alert;
    match error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(OtherError(inner))) => {
            match inner.downcast_ref::<Rejection>() {
                Some(rejection) => (*rejection).into(),
                None => HandshakeError::Tls(error.to_string()),
            }
        }
        rustls::Error::NoCertificatesPresented => {
            HandshakeError::Certificate(CertificateError::NotOneCertificate)
        }
        rustls::Error::PeerIncompatible(
            PeerIncompatible::SupportedVersionsExtensionRequired
            | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
            | PeerIncompatible::Tls13RequiredForQuic,
        )
        | rustls::Error::AlertReceived(Alert::ProtocolVersion) => HandshakeError::TlsVersion,
        rustls::Error::NoApplicationProtocol
        | rustls::Error::AlertReceived(Alert::NoApplicationProtocol) => HandshakeError::Alpn,
        _ => HandshakeError::Tls(error.to_string()),
    }
}

/// An I/O error from a TLS stream as a [`HandshakeError`]: the rustls error inside, if any.
pub(crate) fn io_error(error: std::io::Error) -> HandshakeError {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => tls_error(tls),
        None => HandshakeError::Io(error),
    }
}
