//! The ephemeral certificate that carries a sinew identity, and its check.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sinew_transport::{CertificateError, HandshakeError};
use sinew_types::{Keypair, PeerId, Signature, SigningDomain};
use x509_parser::prelude::{FromDer as _, ParsedExtension, X509Certificate};

/// The identity extension's OID: `2.25.7234711583433140489`, in the `2.25` arc, whose arcs are
/// UUIDs read as integers (ITU-T X.667) and need no registration. rcgen takes OID arcs as
/// `u64`, so the UUID is one with its first 64 bits zero and its last 64 random.
pub const EXTENSION_OID: &[u64] = &[2, 25, 7_234_711_583_433_140_489];

/// The identity extension's layout version.
pub const EXTENSION_VERSION: u8 = 1;

/// The identity payload's length inside the extension: version, key, signature, boot nonce.
pub const EXTENSION_PAYLOAD_LEN: usize = 1 + 32 + 64 + 8;

/// id-ecPublicKey (RFC 5480).
const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
/// The P-256 curve, prime256v1 / secp256r1 (RFC 5480).
const P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];

/// The name every sinew certificate carries and every sinew client asks for. Verifiers ignore
/// it: the identity is the extension's key.
pub const SERVER_NAME: &str = "sinew";

/// What a valid certificate proves: the identity, and the process's boot nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertifiedIdentity {
    /// The Ed25519 identity that signed the certificate's key.
    pub peer: PeerId,
    /// The remote process's boot nonce.
    pub boot_nonce: u64,
}

/// A certificate and its private key, made for one process.
pub(crate) struct IdentityCertificate {
    pub(crate) certificate: CertificateDer<'static>,
    pub(crate) key: PrivatePkcs8KeyDer<'static>,
    /// The certificate and the key as PEM, for tools (openssl) and tests.
    pub(crate) pem: (String, String),
}

impl IdentityCertificate {
    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// Makes a fresh self-signed ECDSA P-256 certificate whose identity extension is signed by
/// `keypair`.
pub(crate) fn make_certificate(
    keypair: &Keypair,
    boot_nonce: u64,
) -> Result<IdentityCertificate, rcgen::Error> {
    use rcgen::PublicKeyData as _;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let signature = keypair.sign(
        SigningDomain::TLS_CERTIFICATE,
        &signed_bytes(&key.subject_public_key_info(), boot_nonce),
    );
    let mut content = Vec::with_capacity(2 + EXTENSION_PAYLOAD_LEN);
    // A DER OCTET STRING of the payload: the extension's value is DER, as X.509 wants.
    content.extend_from_slice(&[0x04, EXTENSION_PAYLOAD_LEN as u8]);
    content.push(EXTENSION_VERSION);
    content.extend_from_slice(keypair.peer_id().as_bytes());
    content.extend_from_slice(&signature.0);
    content.extend_from_slice(&boot_nonce.to_le_bytes());
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, SERVER_NAME);
    params.custom_extensions.push(rcgen::CustomExtension::from_oid_content(EXTENSION_OID, content));
    let certificate = params.self_signed(&key)?;
    Ok(IdentityCertificate {
        certificate: certificate.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        pem: (certificate.pem(), key.serialize_pem()),
    })
}

/// The bytes the identity key signs: the certificate's SubjectPublicKeyInfo (DER) and the boot
/// nonce (`u64` little-endian), in [`SigningDomain::TLS_CERTIFICATE`].
fn signed_bytes(spki: &[u8], boot_nonce: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(spki.len() + 8);
    out.extend_from_slice(spki);
    out.extend_from_slice(&boot_nonce.to_le_bytes());
    out
}

/// Checks that `certificate` is the one shape sinew accepts and returns the identity it proves:
/// parseable X.509, an ECDSA P-256 key, a valid self-signature, no unknown critical extension,
/// and exactly one identity extension whose Ed25519 signature over the certificate's
/// SubjectPublicKeyInfo and boot nonce verifies (strictly). The TLS handshake separately proves
/// that the remote holds the certificate's private key.
pub fn certified_identity(
    certificate: &CertificateDer<'_>,
) -> Result<CertifiedIdentity, HandshakeError> {
    check(certificate, true)
}

/// The identity in a certificate this handshake's verifier already checked with
/// [`certified_identity`] (read back after the handshake: `peer_certificates`, quinn's
/// `peer_identity`): the same parsing, without verifying the two signatures again (they cost
/// about 100 us a side). Never use it on a certificate no verifier of ours accepted.
pub fn verified_identity(
    certificate: &CertificateDer<'_>,
) -> Result<CertifiedIdentity, HandshakeError> {
    check(certificate, false)
}

fn check(
    certificate: &CertificateDer<'_>,
    verify_signatures: bool,
) -> Result<CertifiedIdentity, HandshakeError> {
    let bad = HandshakeError::Certificate;
    let (rest, cert) = X509Certificate::from_der(certificate.as_ref())
        .map_err(|_| bad(CertificateError::Unparseable))?;
    if !rest.is_empty() {
        return Err(bad(CertificateError::Unparseable));
    }
    let spki = cert.public_key();
    let is_p256 = oid_is(&spki.algorithm.algorithm, EC_PUBLIC_KEY)
        && spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|curve| oid_is(&curve, P256));
    if !is_p256 {
        return Err(bad(CertificateError::KeyType));
    }
    if verify_signatures {
        cert.verify_signature(None).map_err(|_| bad(CertificateError::SelfSignature))?;
    }
    let mut payload = None;
    for extension in cert.extensions() {
        if oid_is(&extension.oid, EXTENSION_OID) {
            if payload.replace(extension.value).is_some() {
                return Err(bad(CertificateError::MalformedExtension));
            }
        } else if extension.critical
            && matches!(
                extension.parsed_extension(),
                ParsedExtension::UnsupportedExtension { .. } | ParsedExtension::ParseError { .. }
            )
        {
            return Err(bad(CertificateError::UnknownCriticalExtension));
        }
    }
    let value = payload.ok_or(bad(CertificateError::MissingExtension))?;
    let payload = match value {
        [0x04, len, payload @ ..]
            if usize::from(*len) == EXTENSION_PAYLOAD_LEN
                && payload.len() == EXTENSION_PAYLOAD_LEN =>
        {
            payload
        }
        _ => return Err(bad(CertificateError::MalformedExtension)),
    };
    if payload[0] != EXTENSION_VERSION {
        return Err(bad(CertificateError::MalformedExtension));
    }
    let peer = PeerId::from_slice(&payload[1..33])
        .map_err(|_| bad(CertificateError::MalformedExtension))?;
    let mut signature = [0u8; 64];
    signature.copy_from_slice(&payload[33..97]);
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&payload[97..105]);
    let boot_nonce = u64::from_le_bytes(nonce);
    if !verify_signatures {
        return Ok(CertifiedIdentity { peer, boot_nonce });
    }
    peer.verify(
        SigningDomain::TLS_CERTIFICATE,
        &signed_bytes(spki.raw, boot_nonce),
        &Signature(signature),
    )
    .map_err(|_| HandshakeError::BadSignature)?;
    Ok(CertifiedIdentity { peer, boot_nonce })
}

fn oid_is(oid: &x509_parser::oid_registry::Oid<'_>, components: &[u64]) -> bool {
    oid.iter().is_some_and(|arcs| arcs.eq(components.iter().copied()))
}

/// Test-only certificate makers: the shapes a verifier must refuse.
#[cfg(test)]
pub(crate) mod forged {
    use super::*;

    /// A certificate like ours, with the extension's content replaced (or left out with `None`).
    pub(crate) fn with_extension(content: Option<Vec<u8>>) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()]).unwrap();
        if let Some(content) = content {
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(EXTENSION_OID, content));
        }
        params.self_signed(&key).unwrap().der().clone()
    }

    /// A payload signed by `signer` over `spki` (maybe another certificate's key).
    pub(crate) fn payload(signer: &Keypair, claimed: PeerId, spki: &[u8], nonce: u64) -> Vec<u8> {
        let signature = signer.sign(SigningDomain::TLS_CERTIFICATE, &signed_bytes(spki, nonce));
        let mut content = vec![0x04, EXTENSION_PAYLOAD_LEN as u8, EXTENSION_VERSION];
        content.extend_from_slice(claimed.as_bytes());
        content.extend_from_slice(&signature.0);
        content.extend_from_slice(&nonce.to_le_bytes());
        content
    }
}
