//! A real browser: headless Chromium loads a page from a tiny HTTP server here; the page's
//! WebSocket talks to a sinew `WsStream` listener that echoes, sends binary messages of 1 byte
//! to 1 MiB, checks they come back intact, checks a close with 1000 and an oversize message
//! closed with 1009, and reports by fetching `/report`. Skipped (failed under `CI=true`)
//! without a `chromium` binary (Debian package `chromium`; `CHROMIUM` overrides the path).

mod common;

use std::io::ErrorKind;
use std::process::Stdio;
use std::time::Duration;

use common::{End, serve, skip_or_fail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::sync::mpsc;

/// Chromium's start and the page's work: generous, the machine is shared.
const BROWSER_WAIT: Duration = Duration::from_secs(90);

const PAGE: &str = r#"<!doctype html>
<html><body><pre id="log"></pre><script>
const WS_URL = "ws://127.0.0.1:WS_PORT/echo";
const SIZES = [1, 2, 1000, 65536, 1 << 20];
const log = (s) => { document.getElementById("log").textContent += s + "\n"; };

function open() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(WS_URL);
    ws.binaryType = "arraybuffer";
    const state = { chunks: [], waiters: [], closed: null };
    ws.onmessage = (e) => { state.chunks.push(new Uint8Array(e.data)); wake(state); };
    ws.onclose = (e) => { state.closed = e; wake(state); };
    ws.onopen = () => resolve({ ws, state });
    ws.onerror = () => reject(new Error("websocket error"));
  });
}
function wake(state) { const w = state.waiters; state.waiters = []; w.forEach((f) => f()); }
function changed(state) { return new Promise((r) => state.waiters.push(r)); }

async function receive(state, n) {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    if (state.chunks.length === 0) {
      if (state.closed) throw new Error("closed after " + got + " of " + n + " bytes");
      await changed(state);
      continue;
    }
    const c = state.chunks.shift();
    if (got + c.length > n) throw new Error("too many bytes");
    out.set(c, got);
    got += c.length;
  }
  return out;
}
async function closed(state) { while (!state.closed) await changed(state); return state.closed; }
function pattern(n, seed) {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) a[i] = (i * 31 + seed + (i >> 8)) & 255;
  return a;
}

async function run() {
  const results = [];
  const { ws, state } = await open();
  for (const [i, size] of SIZES.entries()) {
    const data = pattern(size, i);
    ws.send(data);
    const back = await receive(state, size);
    const same = back.every((b, j) => b === data[j]);
    results.push((same ? "ok" : "bad") + ":" + size);
  }
  ws.close(1000, "done");
  const c1 = await closed(state);
  results.push((c1.code === 1000 && c1.wasClean ? "ok" : "bad") + ":close" + c1.code);

  const big = await open();
  big.ws.send(pattern((1 << 20) + 1, 9));
  const c2 = await closed(big.state);
  results.push((c2.code === 1009 ? "ok" : "bad") + ":oversize" + c2.code);
  return results.join(",");
}

run().then(
  (r) => { log(r); fetch("/report?" + encodeURIComponent(r)); },
  (e) => { log("error " + e); fetch("/report?" + encodeURIComponent("error:" + e)); });
</script></body></html>
"#;

/// Serves the page and forwards each `/report?...` query.
async fn http_server(ws_port: u16) -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let page = PAGE.replace("WS_PORT", &ws_port.to_string());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (page, tx) = (page.clone(), tx.clone());
            tokio::spawn(async move { answer(tcp, &page, &tx).await });
        }
    });
    (port, rx)
}

async fn answer(mut tcp: TcpStream, page: &str, reports: &mpsc::UnboundedSender<String>) {
    let mut head = Vec::new();
    let mut chunk = [0; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, kind, body) = if target == "/" || target == "/index.html" {
        ("200 OK", "text/html", page.to_owned())
    } else if let Some(query) = target.strip_prefix("/report?") {
        let _ = reports.send(percent_decode(query));
        ("200 OK", "text/plain", "thanks".to_owned())
    } else {
        ("404 Not Found", "text/plain", "not here".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.write_all(response.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn chromium() -> Option<String> {
    let candidates = std::env::var("CHROMIUM")
        .into_iter()
        .chain(["chromium", "chromium-browser", "google-chrome"].into_iter().map(str::to_owned));
    candidates.into_iter().find(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[tokio::test]
async fn chromium_talks_to_a_sinew_listener() {
    let Some(chromium) = chromium() else {
        skip_or_fail("no chromium binary (apt-get install chromium)");
        return;
    };
    let (ws_port, mut ends) = serve("/echo", None).await;
    let (http_port, mut reports) = http_server(ws_port).await;
    let profile = tempfile::tempdir().unwrap();
    let _browser = Command::new(&chromium)
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://127.0.0.1:{http_port}/index.html"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let report = tokio::time::timeout(BROWSER_WAIT, reports.recv())
        .await
        .expect("the page reports in time")
        .unwrap();
    println!("chromium reports: {report}");
    assert_eq!(
        report, "ok:1,ok:2,ok:1000,ok:65536,ok:1048576,ok:close1000,ok:oversize1009",
        "what the page saw"
    );
    let next = async |rx: &mut mpsc::UnboundedReceiver<End>| {
        tokio::time::timeout(BROWSER_WAIT, rx.recv()).await.unwrap().unwrap()
    };
    assert_eq!(next(&mut ends).await, End::Clean, "the browser's close");
    assert_eq!(next(&mut ends).await, End::Error(ErrorKind::InvalidData), "oversize");
}
