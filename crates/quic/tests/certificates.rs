//! Certificates over QUIC: a listener's refusals of the dialler's certificate are typed, as over
//! TCP (quinn passes rustls's error on as text, so the listener reads its own verifier's
//! verdict), and a forged identity signature is refused on either side.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{Node, within};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::ResolvesClientCert;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{SignatureScheme, pki_types::PrivateKeyDer};
use sinew_quic::QuicConfig;
use sinew_secure::TlsIdentity;
use sinew_secure::tls::{
    ALPN, EXTENSION_OID, EXTENSION_PAYLOAD_LEN, EXTENSION_VERSION, SERVER_NAME, provider,
};
use sinew_transport::{
    CertificateError, DialError, HandshakeError, Listener, Transport as _, UpgradeError,
};
use sinew_types::{Addr, Keypair, PeerId};

/// A resolver that offers no client certificate.
#[derive(Debug)]
struct NoCertificate;

impl ResolvesClientCert for NoCertificate {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// A plain self-signed ECDSA P-256 certificate, without sinew's identity extension.
fn plain_certificate() -> Arc<CertifiedKey> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert =
        rcgen::CertificateParams::new(vec![SERVER_NAME.into()]).unwrap().self_signed(&key).unwrap();
    let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    Arc::new(CertifiedKey::from_der(vec![cert.der().clone()], der, &provider()).unwrap())
}

/// A certificate of sinew's shape claiming `claimed`, whose identity signature is forged
/// (zeros): everything checks but the signature.
fn forged_certificate(claimed: PeerId) -> Arc<CertifiedKey> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut content = vec![0x04, EXTENSION_PAYLOAD_LEN as u8, EXTENSION_VERSION];
    content.extend_from_slice(claimed.as_bytes());
    content.extend_from_slice(&[0u8; 64]);
    content.extend_from_slice(&7u64.to_le_bytes());
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.into()]).unwrap();
    params.custom_extensions.push(rcgen::CustomExtension::from_oid_content(EXTENSION_OID, content));
    let cert = params.self_signed(&key).unwrap();
    let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    Arc::new(CertifiedKey::from_der(vec![cert.der().clone()], der, &provider()).unwrap())
}

/// Dials `listener` with a raw quinn client: sinew's client configuration (which checks the
/// listener properly), its certificate replaced by what `resolver` offers. Returns the
/// listener's result for that connection.
async fn listener_result(
    listener: &mut Box<dyn Listener>,
    resolver: Arc<dyn ResolvesClientCert>,
) -> Result<sinew_transport::Connection, UpgradeError> {
    let client = TlsIdentity::new(&Keypair::generate(), 1).unwrap();
    let (tls, _) = client.client_config(None).unwrap();
    let mut tls = (*tls).clone();
    tls.client_auth_cert_resolver = resolver;
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let to = SocketAddr::from(([127, 0, 0, 1], listener.local_addr().port()));
    let dial = endpoint.connect_with(config, to, SERVER_NAME).unwrap();
    let dialler = tokio::spawn(async move {
        // The dialler's side ends in an error too (the listener's alert); only the listener's
        // reading matters here.
        let _ = dial.await;
        endpoint
    });
    let incoming = within(listener.accept()).await.unwrap();
    let result = within(incoming.upgrade()).await;
    let _ = within(dialler).await;
    result
}

#[tokio::test]
async fn a_certificate_without_the_identity_extension_is_a_typed_refusal() {
    let node = Node::new(QuicConfig::default());
    let mut listener = node.listen().await;
    let resolver = Arc::new(SingleCertAndKey::from(plain_certificate()));
    match listener_result(&mut listener, resolver).await {
        Err(UpgradeError::Handshake(HandshakeError::Certificate(
            CertificateError::MissingExtension,
        ))) => {}
        other => panic!("expected Certificate(MissingExtension), got {:?}", other.map(|c| c.info)),
    }
}

#[tokio::test]
async fn no_client_certificate_is_a_typed_refusal() {
    let node = Node::new(QuicConfig::default());
    let mut listener = node.listen().await;
    match listener_result(&mut listener, Arc::new(NoCertificate)).await {
        Err(UpgradeError::Handshake(HandshakeError::Certificate(
            CertificateError::NotOneCertificate,
        ))) => {}
        other => panic!("expected Certificate(NotOneCertificate), got {:?}", other.map(|c| c.info)),
    }
    // The listener goes on serving: a proper dialler gets through.
    let dialler = Node::new(QuicConfig::default());
    let addr = common::addr_of(listener.as_ref(), &node);
    let accept = tokio::spawn(async move { listener.accept().await.unwrap().upgrade().await });
    within(dialler.transport.dial(addr)).await.unwrap();
    within(accept).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_forged_identity_signature_is_refused_by_the_listener() {
    let node = Node::new(QuicConfig::default());
    let mut listener = node.listen().await;
    let victim = Keypair::generate().peer_id();
    let resolver = Arc::new(SingleCertAndKey::from(forged_certificate(victim)));
    match listener_result(&mut listener, resolver).await {
        Err(UpgradeError::Handshake(HandshakeError::BadSignature)) => {}
        other => panic!("expected BadSignature, got {:?}", other.map(|c| c.info)),
    }
}

#[tokio::test]
async fn a_forged_identity_signature_is_refused_by_the_dialler() {
    // A raw quinn listener presenting a forged certificate that claims the victim's identity.
    let victim = Keypair::generate().peer_id();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(forged_certificate(victim))));
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let port = endpoint.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        if let Some(incoming) = endpoint.accept().await {
            let _ = incoming.await;
        }
        endpoint
    });
    let dialler = Node::new(QuicConfig::default());
    let addr: Addr = format!("quic://127.0.0.1:{port}").parse().unwrap();
    match within(dialler.transport.dial(addr.with_peer(victim))).await {
        Err(DialError::Handshake(HandshakeError::BadSignature)) => {}
        other => panic!("expected BadSignature, got {:?}", other.map(|c| c.info)),
    }
    let _ = within(accept).await;
}
