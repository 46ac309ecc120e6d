//! A QUIC listener's refusals of the dialler's certificate are typed, as over TCP: quinn passes
//! rustls's error on as text, so the listener reads its own verifier's verdict.

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
use sinew_secure::tls::{SERVER_NAME, provider};
use sinew_transport::{CertificateError, HandshakeError, Listener, UpgradeError};
use sinew_types::Keypair;

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
    within(sinew_transport::Transport::dial(&dialler.transport, addr)).await.unwrap();
    within(accept).await.unwrap().unwrap();
}
