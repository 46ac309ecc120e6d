//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::Duration;

use sinew_ws::{WsStream, WsStreamConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The bound on every wait in the tests.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A throwaway ECDSA P-256 certificate for `localhost` and 127.0.0.1, as PEM files.
pub(crate) struct TestCert {
    _dir: tempfile::TempDir,
    /// The certificate (also the root the dialler trusts).
    pub(crate) cert: PathBuf,
    /// Its private key.
    pub(crate) key: PathBuf,
}

impl TestCert {
    pub(crate) fn new() -> Self {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let certified = rcgen::generate_simple_self_signed(names).expect("rcgen");
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        Self { _dir: dir, cert, key }
    }
}

/// Whether a missing tool must fail the test (CI) or only skip it.
pub(crate) fn skip_or_fail(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} (required when CI=true)");
    }
    eprintln!("SKIPPED: {what}");
}

/// A deterministic pattern of `len` bytes.
pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed ^ (i >> 8) as u8)).collect()
}

/// How one served connection ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// A clean end of stream.
    Clean,
    /// An error of this kind.
    Error(ErrorKind),
}

/// Serves `path` on a fresh port: echoes (or, `close_after` bytes in, closes) each connection,
/// reporting how it ended.
pub(crate) async fn serve(
    path: &'static str,
    close_after: Option<usize>,
) -> (u16, mpsc::UnboundedReceiver<End>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = WsStream::accept(tcp, path, &WsStreamConfig::default()).await
                else {
                    return;
                };
                let _ = tx.send(echo(&mut ws, close_after).await);
                // Let the client read our close frame before the socket goes: drain to its end.
                let mut tcp = ws.into_inner();
                let _ =
                    tokio::time::timeout(WAIT, tokio::io::copy(&mut tcp, &mut tokio::io::sink()))
                        .await;
            });
        }
    });
    (port, rx)
}

async fn echo(ws: &mut WsStream<TcpStream>, close_after: Option<usize>) -> End {
    let mut buf = vec![0; 64 * 1024];
    let mut echoed = 0;
    loop {
        let room = close_after.map_or(buf.len(), |n| n - echoed).min(buf.len());
        if room == 0
            && let Err(e) = ws.shutdown().await
        {
            return End::Error(e.kind());
        }
        let n = match ws.read(&mut buf[..room.max(1)]).await {
            Ok(0) => return End::Clean,
            Ok(n) => n,
            Err(e) => return End::Error(e.kind()),
        };
        if let Err(e) = async {
            ws.write_all(&buf[..n]).await?;
            ws.flush().await
        }
        .await
        {
            return End::Error(e.kind());
        }
        echoed += n;
    }
}
