//! Interop with Python's `websockets` (tests/py, version pinned in requirements.txt), at the
//! `WsStream` layer: websockets as the server of a sinew dialler, and as the client of a sinew
//! listener. Skipped (failed under `CI=true`) when `python3` or `websockets` is missing and
//! cannot be installed.

mod common;

use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::Stdio;

use bytes::Bytes;
use common::{End, WAIT, pattern, serve, skip_or_fail};
use sinew_ws::{WsStream, WsStreamConfig};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;

fn py_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py")
}

/// Whether `python3` can import `websockets`, installing the pinned version if it cannot.
fn python_ready() -> bool {
    let imports = || {
        std::process::Command::new("python3")
            .args(["-c", "import websockets.asyncio.server, websockets.asyncio.client"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if imports() {
        return true;
    }
    let requirements = py_dir().join("requirements.txt");
    eprintln!("installing websockets: python3 -m pip install -q -r {}", requirements.display());
    let _ = std::process::Command::new("python3")
        .args(["-m", "pip", "install", "-q", "-r"])
        .arg(&requirements)
        .status();
    if imports() {
        return true;
    }
    skip_or_fail("python3 with the websockets package is not available");
    false
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a line from python in time")
        .unwrap()
        .expect("python ended early")
}

/// Starts echo_server.py and returns it, its output lines and its port.
async fn start_server() -> (Child, Lines<BufReader<ChildStdout>>, u16) {
    let mut child = Command::new("python3")
        .arg(py_dir().join("echo_server.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = next_line(&mut lines).await;
    let port = line.strip_prefix("PORT ").and_then(|p| p.parse().ok()).expect(&line);
    (child, lines, port)
}

async fn dial(port: u16, config: &WsStreamConfig) -> WsStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let uri = format!("ws://127.0.0.1:{port}/");
    tokio::time::timeout(WAIT, WsStream::connect(tcp, &uri, config)).await.unwrap().unwrap().0
}

#[tokio::test]
async fn websockets_server_and_sinew_dialler() {
    if !python_ready() {
        return;
    }
    let (mut child, mut lines, port) = start_server().await;
    let config = WsStreamConfig::default();

    // Bytes both ways in chunks of 1 byte to 1 MiB; our ping gets websockets' pong; our close
    // ends cleanly with 1000 on both sides.
    let mut ws = dial(port, &config).await;
    for (i, size) in [1, 2, 1000, 65536, 1 << 20].into_iter().enumerate() {
        let data = pattern(size, i as u8);
        ws.write_all(&data).await.unwrap();
        ws.flush().await.unwrap();
        let mut back = vec![0; size];
        tokio::time::timeout(WAIT, ws.read_exact(&mut back)).await.unwrap().unwrap();
        assert!(back == data, "{size} bytes came back different");
    }
    ws.ping(Bytes::from_static(b"sinew")).await.unwrap();
    ws.write_all(b"x").await.unwrap();
    ws.flush().await.unwrap();
    let mut x = [0; 1];
    tokio::time::timeout(WAIT, ws.read_exact(&mut x)).await.unwrap().unwrap();
    assert_eq!(ws.pongs_received(), 1, "websockets answered our ping before the echo");
    ws.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, ws.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty());
    assert_eq!(next_line(&mut lines).await, "CLOSED rcvd=1000 sent=1000");

    // websockets closes: a clean end here.
    let mut ws = dial(port, &config).await;
    ws.write_all(b"please-close").await.unwrap();
    ws.flush().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, ws.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty());
    assert_eq!(next_line(&mut lines).await, "CLOSED rcvd=1000 sent=1000");

    // A message over websockets' 1 MiB limit: it closes with 1009.
    let big = WsStreamConfig { write_batch: 2 << 20, ..WsStreamConfig::default() };
    let mut ws = dial(port, &big).await;
    ws.write_all(&pattern((1 << 20) + 1, 3)).await.unwrap();
    let _ = ws.flush().await; // websockets may close while we send
    let mut rest = Vec::new();
    let end = tokio::time::timeout(WAIT, ws.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty(), "no echo of an oversize message");
    if let Err(e) = end {
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    }
    // websockets fails the connection: it sends 1009 and closes TCP without waiting for ours.
    let line = next_line(&mut lines).await;
    assert!(line.starts_with("CLOSED ") && line.ends_with(" sent=1009"), "{line}");

    drop(child.stdin.take());
    let status = tokio::time::timeout(WAIT, child.wait()).await.unwrap().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn websockets_client_and_sinew_listener() {
    if !python_ready() {
        return;
    }
    let (echo_port, mut echo_ends) = serve("/echo", None).await;
    let (close_port, mut close_ends) = serve("/close", Some(5)).await;
    let output = tokio::time::timeout(
        2 * WAIT,
        Command::new("python3")
            .arg(py_dir().join("client.py"))
            .arg(format!("ws://127.0.0.1:{echo_port}/echo"))
            .arg(format!("ws://127.0.0.1:{close_port}/close"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "client.py failed:\n{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("OK ")).count(), 10, "{stdout}");

    let next = async |rx: &mut mpsc::UnboundedReceiver<End>| {
        tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap()
    };
    assert_eq!(next(&mut echo_ends).await, End::Clean, "the client's close");
    assert_eq!(next(&mut echo_ends).await, End::Error(ErrorKind::InvalidData), "oversize");
    assert_eq!(next(&mut echo_ends).await, End::Error(ErrorKind::InvalidData), "text");
    assert_eq!(next(&mut close_ends).await, End::Clean, "our close");
}
