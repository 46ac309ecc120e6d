//! Interop with a QUIC implementation nobody here wrote: aioquic (`tests/interop/quic_ping.py`)
//! connects to a sinew node's `quic://` listener with ALPN `sinew/1` and a sinew client
//! certificate, checks the server's certificate as docs/protocol.md section 2a describes (the
//! identity key is the node's peer id, the Ed25519 signature over the SubjectPublicKeyInfo and
//! boot nonce verifies), opens the control stream as a dialler does, and gets the pong to its
//! ping. The node, for its part, sees that peer connect over QUIC. Without a client
//! certificate, aioquic is refused during the handshake.
//!
//! Needs python3 with the pinned packages of `tests/interop/requirements.txt` (aioquic among
//! them): the test installs them with pip if they are missing, and skips (fails under CI) if
//! that does not work.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use sinew::{Addr, Direction, Event, Events, Keypair, Node, PeerId};
use sinew_secure::TlsIdentity;
use sinew_tests::WAIT;
use sinew_transport::{CertificateError, HandshakeError, UpgradeError};
use sinew_types::Scheme;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/quic_ping.py");
const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/requirements.txt");

/// The client's own bound on everything it does (`--timeout`), in seconds.
const CLIENT_TIMEOUT: u64 = 15;

/// Whether python3 can import what `quic_ping.py` needs: aioquic, cryptography, and noise (for the
/// frame code it shares with `sinew_peer.py`).
fn aioquic_importable() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import aioquic, cryptography, noise"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `python3 -m pip install -q -r requirements.txt` with `extra` arguments; whether it worked.
fn pip_install(extra: &[&str]) -> bool {
    let output = std::process::Command::new("python3")
        .args(["-m", "pip", "install", "-q", "-r", REQUIREMENTS])
        .args(extra)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            eprintln!("pip install {extra:?} failed: {}", String::from_utf8_lossy(&output.stderr));
            false
        }
        Err(e) => {
            eprintln!("python3 -m pip could not run: {e}");
            false
        }
    }
}

/// aioquic importable, installing the pinned requirements first if need be (once per process;
/// Debian's python may want `--break-system-packages`).
fn aioquic_ready_blocking() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        aioquic_importable()
            || (pip_install(&[]) && aioquic_importable())
            || (pip_install(&["--break-system-packages"]) && aioquic_importable())
    })
}

/// True when the test can run; false (after a message) when it skips; panics under CI.
async fn aioquic_ready() -> bool {
    let ready = tokio::task::spawn_blocking(aioquic_ready_blocking).await.expect("the check ran");
    !sinew_tests::skip_unless(
        ready,
        "python3 with aioquic (python3 -m pip install -r tests/interop/requirements.txt)",
    )
}

/// A node listening on QUIC only, on 127.0.0.1 port 0.
async fn quic_node() -> Node {
    Node::builder(Keypair::generate())
        .listen("quic://127.0.0.1:0".parse().expect("a valid address"))
        .start()
        .await
        .expect("the node starts")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the client printed and how it ended.
struct ClientRun {
    success: bool,
    report: Value,
    stderr: String,
}

/// Runs the aioquic client against `node`'s QUIC listener with `args` added, bounded in time.
async fn run_client(node: &Node, args: &[&str]) -> ClientRun {
    let listen: Addr = node.listen_addrs()[0].clone();
    assert_eq!(listen.scheme(), Scheme::Quic, "{listen}");
    let output = tokio::process::Command::new("python3")
        .arg(SCRIPT)
        .args(["--host", "127.0.0.1", "--port", &listen.port().to_string()])
        .args(["--peer-id", &hex(node.peer_id().as_bytes())])
        .args(["--timeout", &CLIENT_TIMEOUT.to_string()])
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(CLIENT_TIMEOUT + 15), output)
        .await
        .expect("the aioquic client ended in time")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| {
        panic!("no JSON line from the client\nstdout: {stdout}\nstderr: {stderr}")
    });
    let report = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("bad JSON from the client ({e}): {line}\nstderr: {stderr}"));
    ClientRun { success: output.status.success(), report, stderr }
}

/// Writes the client's certificate and key as PEM files into `dir`.
fn write_pem(dir: &Path, identity: &TlsIdentity) -> (PathBuf, PathBuf) {
    let (cert_pem, key_pem) = identity.pem();
    let (cert, key) = (dir.join("client.pem"), dir.join("client.key"));
    std::fs::write(&cert, cert_pem).expect("the certificate is written");
    std::fs::write(&key, key_pem).expect("the key is written");
    (cert, key)
}

/// The node's events about `peer` until it disconnects.
async fn events_until_disconnected(events: &mut Events, peer: PeerId) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let event = events
            .wait_for(WAIT, |e| match e {
                Event::PeerConnected { peer: p, .. }
                | Event::PeerIdentified { peer: p, .. }
                | Event::PeerDisconnected { peer: p, .. }
                    if *p == peer =>
                {
                    Some(e.clone())
                }
                _ => None,
            })
            .await
            .unwrap_or_else(|| panic!("the node's events about the client stopped at {seen:?}"));
        let done = matches!(event, Event::PeerDisconnected { .. });
        seen.push(event);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn aioquic_pings_a_sinew_quic_listener_with_a_client_certificate() {
    if !aioquic_ready().await {
        return;
    }
    let node = quic_node().await;
    let mut events = node.events();
    let client_key = Keypair::generate();
    let client = TlsIdentity::new(&client_key, 42).expect("a client certificate");
    let dir = tempfile::tempdir().expect("a temp dir");
    let (cert, key) = write_pem(dir.path(), &client);

    let run = run_client(
        &node,
        &["--cert", cert.to_str().expect("utf-8"), "--key", key.to_str().expect("utf-8")],
    )
    .await;
    let r = &run.report;
    println!("aioquic: {r}");
    assert!(run.success && r["ok"] == true, "the client failed: {r}\n{}", run.stderr);

    // What aioquic saw: the handshake, the certificate, the identity, the pong.
    assert_eq!(r["alpn"], "sinew/1", "{r}");
    assert_eq!(r["client_certificate"], true, "{r}");
    assert_eq!(r["server_certificates"], 1, "{r}");
    let server = &r["server"];
    assert_eq!(server["peer_id"], hex(node.peer_id().as_bytes()), "{r}");
    assert_eq!(r["peer_id_matches"], true, "{r}");
    assert_eq!(server["signature_verified"], true, "{r}");
    assert_eq!(server["self_signature"], true, "{r}");
    assert_eq!(server["key"], "ecdsa-p256", "{r}");
    assert_eq!(server["extension_critical"], false, "{r}");
    assert_eq!(server["spki_reencoded_identical"], true, "{r}");
    // The client read its own certificate the same way: the identity it presented.
    assert_eq!(r["client_peer_id"], hex(client_key.peer_id().as_bytes()), "{r}");
    assert_eq!(r["client_boot_nonce"], 42, "{r}");
    // The control stream is the client's first bidirectional stream.
    assert_eq!(r["control_stream_id"], 0, "{r}");
    let (ping, pong) = (&r["ping"], &r["pong"]);
    assert_eq!(pong["opcode"], 11, "{r}");
    assert_eq!(pong["flags"], 0x02, "a RESPONSE: {r}");
    assert_eq!(pong["request_id"], ping["request_id"], "{r}");
    assert_eq!(pong["payload"], ping["payload"], "{r}");
    assert_eq!(ping["payload"].as_str().map(str::len), Some(16), "8 bytes: {r}");
    // The node's identify came over the control stream, repeating the certificate's nonce
    // (the client checks that they agree).
    let identify = &r["server_identify"];
    assert_eq!(identify["boot_nonce"], server["boot_nonce"], "{r}");
    // The graceful close of section 3.2: the node finished its half of the control stream.
    assert_eq!(r["remote_fin"], true, "{r}");

    // What the node saw: the client's identity, over QUIC, from the client's own UDP port.
    let seen = events_until_disconnected(&mut events, client_key.peer_id()).await;
    let local_port = r["local_port"].as_u64().expect("the client's port");
    let connected = seen
        .iter()
        .find_map(|e| match e {
            Event::PeerConnected { addr, direction, .. } => Some((addr.clone(), *direction)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no PeerConnected for the client: {seen:?}"));
    let (addr, direction) = connected;
    assert_eq!(addr.scheme(), Scheme::Quic, "{addr}");
    assert_eq!(u64::from(addr.port()), local_port, "{addr}");
    assert_eq!(addr.host().to_string(), "127.0.0.1", "{addr}");
    assert_eq!(direction, Direction::Inbound);
    // The client's identify reached the node.
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::PeerIdentified { agent, role, .. }
                if agent.starts_with("sinew-quic-aioquic/") && role == "node"
        )),
        "{seen:?}"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn aioquic_without_a_client_certificate_is_refused() {
    if !aioquic_ready().await {
        return;
    }
    let node = quic_node().await;
    let mut events = node.events();

    let run = run_client(&node, &["--no-client-cert"]).await;
    let r = &run.report;
    println!("aioquic: {r}");
    assert!(run.success && r["ok"] == true, "the client was not refused: {r}\n{}", run.stderr);
    assert_eq!(r["expect_refusal"], true, "{r}");
    assert_eq!(r["client_certificate"], false, "{r}");
    assert_eq!(r["refused"], true, "{r}");
    // The refusal is the TLS alert certificate_required (116), as QUIC error 0x100 + 116.
    let termination = &r["termination"];
    assert_eq!(termination["tls_alert"], 116, "{r}");
    assert_eq!(termination["error_code"], 0x100 + 116, "{r}");
    assert!(r.get("pong").is_none(), "{r}");

    // The node reports the failed handshake, and no peer.
    let (remote, error) = events
        .wait_for(WAIT, |e| match e {
            Event::PeerConnected { peer, .. } => panic!("a peer connected: {peer}"),
            Event::HandshakeFailed { remote, error } => Some((*remote, error.clone())),
            _ => None,
        })
        .await
        .expect("the node reports the failed handshake");
    if let Some(port) = r["local_port"].as_u64() {
        assert_eq!(u64::from(remote.port()), port, "{remote}");
    }
    // The same typed reason a TCP listener gives.
    assert!(
        matches!(
            &*error,
            UpgradeError::Handshake(HandshakeError::Certificate(
                CertificateError::NotOneCertificate,
            ))
        ),
        "{error:?}"
    );
    assert!(node.connected_peers().is_empty());
    node.shutdown().await;
}

/// The client's identity check is live: told to expect another peer id, it fails (and says why)
/// instead of pinging.
#[tokio::test]
async fn aioquic_client_fails_when_the_listener_proves_another_peer_id() {
    if !aioquic_ready().await {
        return;
    }
    let node = quic_node().await;
    let client = TlsIdentity::new(&Keypair::generate(), 7).expect("a client certificate");
    let dir = tempfile::tempdir().expect("a temp dir");
    let (cert, key) = write_pem(dir.path(), &client);
    let other = hex(Keypair::generate().peer_id().as_bytes());
    // The last --peer-id wins over the node's, which run_client passes first.
    let run = run_client(
        &node,
        &[
            "--cert",
            cert.to_str().expect("utf-8"),
            "--key",
            key.to_str().expect("utf-8"),
            "--peer-id",
            &other,
        ],
    )
    .await;
    let r = &run.report;
    println!("aioquic: {r}");
    assert!(!run.success && r["ok"] == false, "{r}");
    let error = r["error"].as_str().expect("an error message");
    assert!(error.contains(&other) && error.contains("proves"), "{error}");
    assert!(run.stderr.contains("FAILED"), "{}", run.stderr);
    assert!(r.get("pong").is_none(), "{r}");
    node.shutdown().await;
}
