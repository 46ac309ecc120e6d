//! Interop with an implementation nobody here wrote: `openssl s_client` completes a TLS 1.3
//! handshake (ALPN `sinew/1`, with a sinew client certificate it reads from PEM files) with a
//! sinew TCP listener, and sees the identity extension in the server's certificate. Without a
//! client certificate, or offering only TLS 1.2, it is refused with a typed error.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sinew_secure::{Identities, NoiseIdentity, TlsIdentity, certified_identity};
use sinew_tcp::{TcpConfig, TcpTransport};
use sinew_transport::{CertificateError, Connection, HandshakeError, Transport as _, UpgradeError};
use sinew_types::{Addr, Keypair};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

fn openssl_available() -> bool {
    std::process::Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success())
}

async fn tls_listener(
    key: &Keypair,
) -> (Addr, mpsc::UnboundedReceiver<Result<Connection, UpgradeError>>) {
    let identities = Identities {
        noise: Some(Arc::new(NoiseIdentity::new(key, 7))),
        tls: Some(Arc::new(TlsIdentity::new(key, 7).unwrap())),
    };
    let transport = TcpTransport::with_identities(identities, TcpConfig::default());
    let mut listener = transport.listen("tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(incoming.upgrade().await) });
        }
    });
    (addr, rx)
}

/// Runs `openssl s_client` against `addr` with `args`; returns its stdout and its stderr.
/// Stdin is closed, so s_client ends after the handshake.
async fn s_client(addr: &Addr, args: &[&str]) -> String {
    let output = tokio::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{}", addr.port()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, output).await.expect("s_client ended").unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

/// The first PEM certificate in s_client's `-showcerts` output, as DER.
fn first_certificate(output: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    let start = output.find("-----BEGIN CERTIFICATE-----").expect("a certificate in the output");
    rustls::pki_types::CertificateDer::from_pem_slice(&output.as_bytes()[start..])
        .expect("a PEM certificate")
        .to_vec()
}

#[tokio::test]
async fn openssl_completes_a_tls13_handshake_with_a_sinew_client_certificate() {
    if sinew_tests::skip_unless(openssl_available(), "openssl (Debian package openssl)") {
        return;
    }
    let (server_key, client_key) = (Keypair::generate(), Keypair::generate());
    let (addr, mut upgrades) = tls_listener(&server_key).await;
    let client = TlsIdentity::new(&client_key, 42).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = client.pem();
    let (cert, key) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();

    let out = s_client(
        &addr,
        &[
            "-tls1_3",
            "-alpn",
            "sinew/1",
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
            "-showcerts",
        ],
    )
    .await;
    assert!(out.contains("Protocol  : TLSv1.3") || out.contains("TLSv1.3"), "{out}");
    assert!(out.contains("ALPN protocol: sinew/1"), "{out}");
    // The server certificate openssl received proves the listener's identity.
    let der = first_certificate(&out);
    let proven = certified_identity(&der.into()).unwrap();
    assert_eq!((proven.peer, proven.boot_nonce), (server_key.peer_id(), 7));

    // And the listener authenticated openssl as the client identity.
    let inbound = tokio::time::timeout(WAIT, upgrades.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(inbound.info.peer, client_key.peer_id());
    assert_eq!(inbound.info.boot_nonce, 42);
    assert_eq!(inbound.info.security, sinew_transport::Security::Tls);
}

#[tokio::test]
async fn openssl_shows_the_identity_extension() {
    if sinew_tests::skip_unless(openssl_available(), "openssl (Debian package openssl)") {
        return;
    }
    let server_key = Keypair::generate();
    let (addr, _upgrades) = tls_listener(&server_key).await;
    let out = s_client(&addr, &["-tls1_3", "-alpn", "sinew/1", "-showcerts"]).await;
    let der = first_certificate(&out);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.der");
    std::fs::write(&path, der).unwrap();
    let text = std::process::Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("2.25.7234711583433140489"), "{text}");
    assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
}

#[tokio::test]
async fn openssl_without_a_client_certificate_is_refused() {
    if sinew_tests::skip_unless(openssl_available(), "openssl (Debian package openssl)") {
        return;
    }
    let (addr, mut upgrades) = tls_listener(&Keypair::generate()).await;
    s_client(&addr, &["-tls1_3", "-alpn", "sinew/1"]).await;
    let refused = tokio::time::timeout(WAIT, upgrades.recv()).await.unwrap().unwrap();
    assert!(
        matches!(
            refused,
            Err(UpgradeError::Handshake(HandshakeError::Certificate(
                CertificateError::NotOneCertificate
            )))
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn openssl_offering_only_tls12_is_refused() {
    if sinew_tests::skip_unless(openssl_available(), "openssl (Debian package openssl)") {
        return;
    }
    let (addr, mut upgrades) = tls_listener(&Keypair::generate()).await;
    let out = s_client(&addr, &["-tls1_2", "-alpn", "sinew/1"]).await;
    assert!(!out.contains("TLSv1.2, Cipher is"), "{out}");
    // openssl reports the listener's alert.
    assert!(out.contains("alert protocol version"), "{out}");
    let refused = tokio::time::timeout(WAIT, upgrades.recv()).await.unwrap().unwrap();
    assert!(
        matches!(refused, Err(UpgradeError::Handshake(HandshakeError::TlsVersion))),
        "{refused:?}"
    );
}
