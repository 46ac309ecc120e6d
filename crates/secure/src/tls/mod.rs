//! TLS 1.3 bound to Ed25519 identities (rustls, with ring as the one crypto provider).
//!
//! Each process makes an ephemeral self-signed ECDSA P-256 certificate ([`TlsIdentity::new`]).
//! Its identity extension ([`EXTENSION_OID`], not critical) holds the DER OCTET STRING of:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 1 | version, `01` |
//! | 1 | 32 | Ed25519 identity public key (the `PeerId`) |
//! | 33 | 64 | Ed25519 signature, see below |
//! | 97 | 8 | boot nonce, `u64` little-endian |
//!
//! The signature is `Keypair::sign(SigningDomain::TLS_CERTIFICATE, spki || boot_nonce)`, that is
//! Ed25519 over `"sinew-sig:tls-certificate/v1" || 00 || spki || boot_nonce (u64 LE)`, where
//! `spki` is the certificate's DER SubjectPublicKeyInfo. The identity key is never the
//! certificate's key: the handshake proves possession of the certificate's key, the extension
//! binds that key to the identity.
//!
//! Both sides present a certificate (mutual authentication) and run the same checks
//! ([`certified_identity`]): exactly one certificate, ECDSA P-256, a valid self-signature, no
//! unknown critical extension, one well-formed extension whose signature verifies strictly, an
//! identity other than our own, and for a dialler the expected identity if it has one. The
//! handshake signature must be ECDSA P-256 SHA-256. TLS 1.3 only; ALPN [`ALPN`] (`sinew/1`) is
//! required; the server name sent is [`SERVER_NAME`] and is not checked.
//!
//! Cipher suites, in order of preference: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305
//! (AES-128-GCM is the fastest here, and QUIC needs it for its initial keys).
//!
//! The session tag (used to break ties between duplicate connections the same way on both
//! sides) is 32 bytes of the TLS exporter ([RFC 8446 section 7.5]) with label
//! [`SESSION_TAG_LABEL`] and an empty context. The boot nonce travels in the certificate.
//!
//! [RFC 8446 section 7.5]: https://www.rfc-editor.org/rfc/rfc8446#section-7.5
//!
//! ```
//! use std::time::Duration;
//! use sinew_secure::{TlsIdentity, upgrade_inbound_tls, upgrade_outbound_tls};
//! use sinew_types::Keypair;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (dialer_key, listener_key) = (Keypair::generate(), Keypair::generate());
//! let dialer = TlsIdentity::new(&dialer_key, 1)?;
//! let listener = TlsIdentity::new(&listener_key, 2)?;
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let timeout = Duration::from_secs(10);
//! let (outbound, inbound) = tokio::join!(
//!     upgrade_outbound_tls(a, &dialer, Some(listener_key.peer_id()), timeout),
//!     upgrade_inbound_tls(sinew_secure::Rewind::new(b, Default::default()), &listener, timeout),
//! );
//! let (_a, a_info) = outbound?;
//! let (_b, b_info) = inbound?;
//! assert_eq!((a_info.peer, a_info.boot_nonce), (listener_key.peer_id(), 2));
//! assert_eq!((b_info.peer, b_info.boot_nonce), (dialer_key.peer_id(), 1));
//! assert_eq!(a_info.session_tag, b_info.session_tag);
//! # Ok(())
//! # }
//! ```

mod certificate;
mod upgrade;
mod verifier;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use sinew_types::{Keypair, PeerId};

pub use certificate::{
    CertifiedIdentity, EXTENSION_OID, EXTENSION_PAYLOAD_LEN, EXTENSION_VERSION, SERVER_NAME,
    certified_identity, verified_identity,
};
pub use upgrade::{TlsStream, upgrade_inbound_tls, upgrade_outbound_tls};
pub use verifier::{Verdict, tls_error};

/// The application protocol both sides must agree on.
pub const ALPN: &[u8] = b"sinew/1";

/// The TLS exporter label of the session tag (32 bytes, empty context).
pub const SESSION_TAG_LABEL: &[u8] = b"EXPORTER-sinew-session-tag";

/// Why a TLS identity could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// Making the certificate failed.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider of every sinew TLS configuration: ring, TLS 1.3 suites only, AES-128-GCM
/// first, X25519 key exchange first.
// rustls 0.23.48 deprecates ring's provider for its lack of post-quantum key exchange; ring is
// still the one provider the design picks (aws-lc-rs would be a second C crypto library here).
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, default_provider, kx_group};
    Arc::new(CryptoProvider {
        // X25519 first: ring's default list starts with P-384, whose key exchange took half
        // of a handshake's CPU here (1.7 ms for both sides of a handshake; 0.55 ms with X25519).
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..default_provider()
    })
}

/// A process's TLS identity: its certificate and key, and the configurations built from them.
/// Make one per process (the certificate is ephemeral) and share it.
pub struct TlsIdentity {
    peer: PeerId,
    boot_nonce: u64,
    certificate: certificate::IdentityCertificate,
    provider: Arc<CryptoProvider>,
    /// The certificate with its parsed signing key.
    certified: Arc<CertifiedKey>,
    server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("peer", &self.peer)
            .field("boot_nonce", &self.boot_nonce)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Makes a fresh certificate for `keypair`'s identity and this process's `boot_nonce`.
    pub fn new(keypair: &Keypair, boot_nonce: u64) -> Result<Self, TlsSetupError> {
        let certificate = certificate::make_certificate(keypair, boot_nonce)?;
        let provider = provider();
        // The certificate and its parsed signing key, made once and shared by every
        // configuration (parsing the key costs a scalar multiplication).
        let certified = Arc::new(CertifiedKey::from_der(
            vec![certificate.certificate.clone()],
            certificate.key(),
            &provider,
        )?);
        let peer = keypair.peer_id();
        let server = server_config(peer, &provider, &certified, None)?;
        Ok(Self { peer, boot_nonce, certificate, provider, certified, server })
    }

    /// The identity the certificate proves.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// The boot nonce the certificate carries.
    pub fn boot_nonce(&self) -> u64 {
        self.boot_nonce
    }

    /// The certificate (DER).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate.certificate
    }

    /// The certificate and its private key as PEM, for tools that take files (`openssl
    /// s_client -cert -key`) and for tests. The key is this process's ephemeral TLS key, not
    /// the identity key.
    pub fn pem(&self) -> (&str, &str) {
        (&self.certificate.pem.0, &self.certificate.pem.1)
    }

    /// The listener's configuration: TLS 1.3, ALPN `sinew/1`, a client certificate required and
    /// verified, no session resumption. Shared by every connection; a refusal's reason reaches
    /// the caller inside rustls's error ([`tls_error`]).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server)
    }

    /// The listener's configuration for one connection, and the verdict its verifier leaves
    /// when it refuses the client's certificate: for transports that pass rustls's error on as
    /// text (QUIC). Cheap: the certificate and key are shared.
    pub fn server_config_with_verdict(
        &self,
    ) -> Result<(Arc<rustls::ServerConfig>, Verdict), TlsSetupError> {
        let verdict = Verdict::default();
        let config =
            server_config(self.peer, &self.provider, &self.certified, Some(verdict.clone()))?;
        Ok((config, verdict))
    }

    /// A dialler's configuration for one dial, expecting `expected` if given, and the verdict
    /// its verifier leaves when it refuses the server (see [`Verdict`]).
    pub fn client_config(
        &self,
        expected: Option<PeerId>,
    ) -> Result<(Arc<rustls::ClientConfig>, Verdict), TlsSetupError> {
        let verdict = Verdict::default();
        let verifier = Arc::new(verifier::ServerVerifier {
            local: self.peer,
            expected,
            verdict: verdict.clone(),
            provider: Arc::clone(&self.provider),
        });
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(
                &self.certified,
            ))));
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.resumption = rustls::client::Resumption::disabled();
        Ok((Arc::new(client), verdict))
    }
}

/// A listener's configuration for `local`, whose verifier records its refusals in `verdict` if
/// set.
fn server_config(
    local: PeerId,
    provider: &Arc<CryptoProvider>,
    certified: &Arc<CertifiedKey>,
    verdict: Option<Verdict>,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let verifier =
        Arc::new(verifier::ClientVerifier { local, provider: Arc::clone(provider), verdict });
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(certified))));
    server.alpn_protocols = vec![ALPN.to_vec()];
    // No resumption: every connection proves its identity afresh.
    server.send_tls13_tickets = 0;
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(server))
}

#[cfg(test)]
mod tests;
