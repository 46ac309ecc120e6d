use std::time::Duration;

use rustls::pki_types::CertificateDer;
use sinew_transport::{CertificateError, HandshakeError};
use sinew_types::{Keypair, PeerId};

use super::certificate::forged;
use super::*;
use crate::preamble::Rewind;

const TIMEOUT: Duration = Duration::from_secs(10);

fn spki_of(certificate: &CertificateDer<'_>) -> Vec<u8> {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::prelude::X509Certificate::from_der(certificate.as_ref()).unwrap();
    cert.public_key().raw.to_vec()
}

#[test]
fn a_certificate_proves_its_identity_and_boot_nonce() {
    let key = Keypair::generate();
    let identity = TlsIdentity::new(&key, 0x0102_0304_0506_0708).unwrap();
    let certified = certified_identity(identity.certificate()).unwrap();
    assert_eq!(
        certified,
        CertifiedIdentity { peer: key.peer_id(), boot_nonce: 0x0102_0304_0506_0708 }
    );
    // Each identity gets its own certificate key.
    let again = TlsIdentity::new(&key, 1).unwrap();
    assert_ne!(spki_of(identity.certificate()), spki_of(again.certificate()));
}

#[test]
fn a_certificate_without_the_extension_is_refused() {
    let cert = forged::with_extension(None);
    assert!(matches!(
        certified_identity(&cert),
        Err(HandshakeError::Certificate(CertificateError::MissingExtension))
    ));
}

#[test]
fn a_signature_over_another_key_is_refused() {
    // The extension of a real identity, copied into a certificate with another key: the
    // signature covers the original certificate's key, not this one.
    let key = Keypair::generate();
    let real = TlsIdentity::new(&key, 5).unwrap();
    let content = forged::payload(&key, key.peer_id(), &spki_of(real.certificate()), 5);
    let cert = forged::with_extension(Some(content));
    assert!(matches!(certified_identity(&cert), Err(HandshakeError::BadSignature)));
}

#[test]
fn a_certificate_claiming_another_identity_is_refused() {
    // Signed by one key, claiming another's identity (the wrong key).
    let (signer, victim) = (Keypair::generate(), Keypair::generate());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let spki = {
        use rcgen::PublicKeyData as _;
        key.subject_public_key_info()
    };
    let content = forged::payload(&signer, victim.peer_id(), &spki, 9);
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()]).unwrap();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(EXTENSION_OID, content.clone()));
    let cert = params.self_signed(&key).unwrap().der().clone();
    assert!(matches!(certified_identity(&cert), Err(HandshakeError::BadSignature)));
    // The same payload signed by the claimed identity verifies: the test above fails only on
    // the key.
    let honest = forged::payload(&victim, victim.peer_id(), &spki, 9);
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()]).unwrap();
    params.custom_extensions.push(rcgen::CustomExtension::from_oid_content(EXTENSION_OID, honest));
    let cert = params.self_signed(&key).unwrap().der().clone();
    assert_eq!(certified_identity(&cert).unwrap().peer, victim.peer_id());
}

#[test]
fn malformed_extensions_and_certificates_are_refused() {
    let key = Keypair::generate();
    let good = forged::payload(&key, key.peer_id(), &[1, 2, 3], 1);
    let malformed = |content: Vec<u8>| {
        matches!(
            certified_identity(&forged::with_extension(Some(content))),
            Err(HandshakeError::Certificate(CertificateError::MalformedExtension))
        )
    };
    assert!(malformed(good[..good.len() - 1].to_vec()), "short");
    assert!(malformed([good.clone(), vec![0]].concat()), "long");
    let mut version = good.clone();
    version[2] = 2;
    assert!(malformed(version), "unknown version");
    let mut not_octets = good.clone();
    not_octets[0] = 0x30;
    assert!(malformed(not_octets), "not an OCTET STRING");
    let mut bad_key = good;
    bad_key[3..35].fill(0);
    bad_key[3] = 1; // the identity point, a weak key
    assert!(malformed(bad_key), "weak identity key");

    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    assert!(matches!(
        certified_identity(&garbage),
        Err(HandshakeError::Certificate(CertificateError::Unparseable))
    ));
    // An Ed25519-keyed certificate is not the shape.
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let cert = rcgen::CertificateParams::new(vec![]).unwrap().self_signed(&ed).unwrap();
    assert!(matches!(
        certified_identity(cert.der()),
        Err(HandshakeError::Certificate(CertificateError::KeyType))
    ));
}

#[test]
fn a_tampered_certificate_fails_its_self_signature() {
    let identity = TlsIdentity::new(&Keypair::generate(), 3).unwrap();
    let mut bytes = identity.certificate().to_vec();
    // Flip a bit in the subject common name ("sinew"), inside the signed part.
    let at = bytes.windows(5).position(|w| w == b"sinew").unwrap();
    bytes[at] ^= 0x20;
    assert!(matches!(
        certified_identity(&CertificateDer::from(bytes)),
        Err(HandshakeError::Certificate(CertificateError::SelfSignature))
    ));
}

async fn handshake(
    dialer: &TlsIdentity,
    listener: &TlsIdentity,
    expected: Option<PeerId>,
) -> (Result<HandshakeInfoOf, HandshakeError>, Result<HandshakeInfoOf, HandshakeError>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (out, inc) = tokio::join!(
        upgrade_outbound_tls(a, dialer, expected, TIMEOUT),
        upgrade_inbound_tls(Rewind::new(b, Default::default()), listener, TIMEOUT),
    );
    (out.map(|(_, info)| info), inc.map(|(_, info)| info))
}

type HandshakeInfoOf = crate::HandshakeInfo;

#[tokio::test]
async fn both_sides_prove_their_identities_and_share_a_tag() {
    let (ka, kb) = (Keypair::generate(), Keypair::generate());
    let (a, b) = (TlsIdentity::new(&ka, 11).unwrap(), TlsIdentity::new(&kb, 22).unwrap());
    let (out, inc) = handshake(&a, &b, Some(kb.peer_id())).await;
    let (out, inc) = (out.unwrap(), inc.unwrap());
    assert_eq!((out.peer, out.boot_nonce), (kb.peer_id(), 22));
    assert_eq!((inc.peer, inc.boot_nonce), (ka.peer_id(), 11));
    assert_eq!(out.security, sinew_transport::Security::Tls);
    assert_eq!(out.session_tag, inc.session_tag);
    // Another connection between the same two has another tag.
    let (again, _) = handshake(&a, &b, None).await;
    assert_ne!(again.unwrap().session_tag, out.session_tag);
}

#[tokio::test]
async fn a_dialler_expecting_someone_else_stops_with_a_typed_error() {
    let (a, b) = (
        TlsIdentity::new(&Keypair::generate(), 1).unwrap(),
        TlsIdentity::new(&Keypair::generate(), 2).unwrap(),
    );
    let other = Keypair::generate().peer_id();
    let (out, inc) = handshake(&a, &b, Some(other)).await;
    match out {
        Err(HandshakeError::UnexpectedPeer { expected, actual }) => {
            assert_eq!((expected, actual), (other, b.peer_id()));
        }
        other => panic!("expected UnexpectedPeer, got {other:?}"),
    }
    // The dialler stopped before sending its certificate: the listener never learns who it is.
    assert!(inc.is_err());
}

#[tokio::test]
async fn dialling_ourselves_is_refused() {
    let key = Keypair::generate();
    let (a, b) = (TlsIdentity::new(&key, 1).unwrap(), TlsIdentity::new(&key, 1).unwrap());
    let (out, _) = handshake(&a, &b, None).await;
    assert!(matches!(out, Err(HandshakeError::SelfConnection)), "{out:?}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let listener = TlsIdentity::new(&Keypair::generate(), 2).unwrap();
    let verifier = Arc::new(verifier::ServerVerifier {
        local: Keypair::generate().peer_id(),
        expected: None,
        verdict: Verdict::default(),
        provider: provider(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let (a, b) = tokio::io::duplex(64 * 1024);
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
    let (_, inc) = tokio::join!(
        async {
            // TLS 1.3 clients finish before the server's verdict arrives; read to see it.
            let mut stream = connector.connect(name, a).await?;
            tokio::io::AsyncReadExt::read(&mut stream, &mut [0u8; 1]).await
        },
        upgrade_inbound_tls(Rewind::new(b, Default::default()), &listener, TIMEOUT),
    );
    assert!(
        matches!(inc, Err(HandshakeError::Certificate(CertificateError::NotOneCertificate))),
        "{inc:?}"
    );
}

#[tokio::test]
async fn a_client_without_alpn_is_refused() {
    let (a_key, listener) =
        (Keypair::generate(), TlsIdentity::new(&Keypair::generate(), 2).unwrap());
    let dialer = TlsIdentity::new(&a_key, 1).unwrap();
    let (config, _) = dialer.client_config(None).unwrap();
    let mut config = (*config).clone();
    config.alpn_protocols.clear();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let (a, b) = tokio::io::duplex(64 * 1024);
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
    let (_, inc) = tokio::join!(
        connector.connect(name, a),
        upgrade_inbound_tls(Rewind::new(b, Default::default()), &listener, TIMEOUT),
    );
    assert!(matches!(inc, Err(HandshakeError::Alpn)), "{inc:?}");
}

#[tokio::test]
async fn the_key_exchange_is_x25519() {
    // ring's default order starts with P-384, three times the handshake's CPU.
    let (a, b) = (
        TlsIdentity::new(&Keypair::generate(), 1).unwrap(),
        TlsIdentity::new(&Keypair::generate(), 2).unwrap(),
    );
    let (x, y) = tokio::io::duplex(64 * 1024);
    let (out, inc) = tokio::join!(
        upgrade_outbound_tls(x, &a, None, TIMEOUT),
        upgrade_inbound_tls(Rewind::new(y, Default::default()), &b, TIMEOUT),
    );
    let (out, _) = out.unwrap();
    inc.unwrap();
    let group = out.get_ref().1.negotiated_key_exchange_group().map(|g| g.name());
    assert_eq!(group, Some(rustls::NamedGroup::X25519));
}

#[test]
fn a_critical_extension_that_does_not_parse_is_refused() {
    let identity = Keypair::generate();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let spki = {
        use rcgen::PublicKeyData as _;
        key.subject_public_key_info()
    };
    let make = |critical: bool| {
        let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()]).unwrap();
        let content = forged::payload(&identity, identity.peer_id(), &spki, 1);
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(EXTENSION_OID, content));
        // keyUsage (2.5.29.15), a known extension, with content that is not its DER.
        let mut garbled =
            rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 15], vec![0xff, 0x01]);
        garbled.set_criticality(critical);
        params.custom_extensions.push(garbled);
        params.self_signed(&key).unwrap().der().clone()
    };
    assert!(matches!(
        certified_identity(&make(true)),
        Err(HandshakeError::Certificate(CertificateError::UnknownCriticalExtension))
    ));
    // Not critical, it is ignored: the refusal above is for the criticality.
    assert_eq!(certified_identity(&make(false)).unwrap().peer, identity.peer_id());
}
