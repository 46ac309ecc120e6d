//! Every transport and security pair through the `Transport` trait, with plain TCP and raw quinn
//! (the same QUIC settings, no sinew layers) in the same run: single-stream and 8-stream
//! throughput over loopback, connection setup (dial, open a stream, one byte there and back) as
//! a median and as connections per second, and the memory of idle connections (RSS growth per
//! connection endpoint, both ends in this process).
//!
//! Rounds are interleaved (each round runs every stack once) so that the machine's drift hits
//! them alike; the figures are medians over rounds, and each pair's ratio is against the plain
//! TCP of the same rounds and against tcp+noise. Results go to `benches/results/transports.json`
//! (`transports-quick.json` with `SINEW_BENCH_QUICK=1`).
//!
//! `cargo bench -p sinew-benches --bench transports`

use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use sinew::layers::quic::{QuicConfig, QuicTransport};
use sinew::layers::ws::{WsConfig, WsTransport, WssDial, WssListen};
use sinew_secure::{Identities, NoiseIdentity, TlsIdentity};
use sinew_tcp::{TcpConfig, TcpTransport};
use sinew_transport::{Connection, MuxedConnection, Transport};
use sinew_types::{Addr, Keypair};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const WRITE: usize = 256 << 10;
const READ_BUF: usize = 256 << 10;
const STREAMS: usize = 8;

fn quick() -> bool {
    std::env::var_os("SINEW_BENCH_QUICK").is_some()
}

/// glibc thresholds as the `sinew` binary sets them (docs/performance.md).
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: plain integer parameters, set before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024 * 1024);
    }
}

/// The sink protocol on every stream (and every plain TCP connection): the sender writes a
/// `u64` LE length and that many bytes; the receiver reads them and answers one byte.
async fn sink(mut io: impl AsyncRead + AsyncWrite + Unpin, buf: &mut [u8]) -> bool {
    let mut len = [0u8; 8];
    if io.read_exact(&mut len).await.is_err() {
        return false;
    }
    let mut left = u64::from_le_bytes(len);
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        match io.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => left -= n as u64,
        }
    }
    io.write_all(&[1]).await.is_ok() && io.flush().await.is_ok()
}

async fn source(io: &mut (impl AsyncRead + AsyncWrite + Unpin), data: &[u8], total: u64) {
    io.write_all(&total.to_le_bytes()).await.unwrap();
    let mut left = total;
    while left > 0 {
        let n = data.len().min(usize::try_from(left).unwrap());
        io.write_all(&data[..n]).await.unwrap();
        left -= n as u64;
    }
    io.flush().await.unwrap();
    let mut ack = [0u8];
    io.read_exact(&mut ack).await.unwrap();
}

/// A stack under test: how to dial it, and where.
struct Stack {
    name: &'static str,
    dialer: Dialer,
    addr: Addr,
}

enum Dialer {
    /// Plain TCP: one connection per stream.
    Plain,
    /// A sinew transport.
    Sinew(Arc<dyn Transport>),
    /// quinn itself, with the QUIC transport's settings.
    Quinn(Box<RawQuinn>),
}

struct RawQuinn {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
}

/// A raw quinn connection and its streams as byte streams.
struct QuinnConnection(quinn::Connection);

impl QuinnConnection {
    async fn open(&self) -> impl AsyncRead + AsyncWrite + Unpin + Send + 'static {
        let (send, recv) = self.0.open_bi().await.unwrap();
        tokio::io::join(recv, send)
    }
}

fn serve_connection(connection: MuxedConnection) {
    tokio::spawn(async move {
        while let Some(stream) = connection.accept_stream().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; READ_BUF];
                let mut stream = stream;
                if sink(&mut stream, &mut buf).await {
                    let _ = stream.finish().await;
                }
            });
        }
    });
}

async fn listen(transport: Arc<dyn Transport>, addr: &str) -> Addr {
    let mut listener = transport.listen(addr.parse().unwrap()).await.unwrap();
    let local = listener.local_addr();
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(Connection { muxer, .. }) = incoming.upgrade().await {
                    serve_connection(muxer);
                }
            });
        }
    });
    local
}

async fn plain_tcp() -> Addr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            socket.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; READ_BUF];
                let mut socket = socket;
                while sink(&mut socket, &mut buf).await {}
            });
        }
    });
    format!("tcp://127.0.0.1:{port}").parse().unwrap()
}

fn identities(key: &Keypair) -> Identities {
    Identities {
        noise: Some(Arc::new(NoiseIdentity::new(key, 1))),
        tls: Some(Arc::new(TlsIdentity::new(key, 1).unwrap())),
    }
}

fn tcp_transport(key: &Keypair, dial_tls: bool) -> Arc<dyn Transport> {
    let config = TcpConfig { dial_tls, ..TcpConfig::default() };
    Arc::new(TcpTransport::with_identities(identities(key), config))
}

/// The web certificate of the wss listener (127.0.0.1) and the roots its dialler trusts.
fn web_certificate() -> (WssListen, WssDial) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let der = made.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    (WssListen::new(vec![der.clone()], key).unwrap(), WssDial::new([der]).unwrap())
}

fn ws_transport(key: &Keypair, dial_tls: bool, web: &(WssListen, WssDial)) -> Arc<dyn Transport> {
    let config = WsConfig {
        dial_tls,
        wss_listen: Some(web.0.clone()),
        wss_dial: Some(web.1.clone()),
        ..WsConfig::default()
    };
    Arc::new(WsTransport::with_identities(identities(key), config))
}

fn quic_transport(key: &Keypair) -> Arc<dyn Transport> {
    Arc::new(QuicTransport::new(Arc::new(TlsIdentity::new(key, 1).unwrap()), QuicConfig::default()))
}

/// A raw quinn endpoint with the QUIC transport's socket buffers.
fn quinn_endpoint(config: &QuicConfig, server: Option<quinn::ServerConfig>) -> quinn::Endpoint {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let state = quinn::udp::UdpSocketState::new((&socket).into()).unwrap();
    if let Some(bytes) = config.socket_send_buffer {
        state.set_send_buffer_size((&socket).into(), bytes).unwrap();
    }
    if let Some(bytes) = config.socket_recv_buffer {
        state.set_recv_buffer_size((&socket).into(), bytes).unwrap();
    }
    let runtime = Arc::new(quinn::TokioRuntime);
    quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime).unwrap()
}

/// Raw quinn with the same TLS (sinew's certificates and verifiers), transport settings and
/// socket buffers as the QUIC transport; the listener serves the sink on every stream.
fn raw_quinn(server: &Keypair, client: &Keypair) -> (Dialer, Addr) {
    let config = QuicConfig::default();
    let transport = config.transport_config();
    let server_tls = TlsIdentity::new(server, 1).unwrap().server_config();
    let crypto = QuicServerConfig::try_from(server_tls).unwrap();
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server_config.transport_config(Arc::clone(&transport));
    let listener = quinn_endpoint(&config, Some(server_config));
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Some(incoming) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else { return };
                while let Ok((send, recv)) = connection.accept_bi().await {
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; READ_BUF];
                        let mut stream = tokio::io::join(recv, send);
                        if sink(&mut stream, &mut buf).await {
                            let _ = stream.shutdown().await;
                        }
                    });
                }
            });
        }
    });
    let (crypto, _) = TlsIdentity::new(client, 2).unwrap().client_config(None).unwrap();
    let mut client_config =
        quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(crypto).unwrap()));
    client_config.transport_config(transport);
    let endpoint = quinn_endpoint(&config, None);
    let addr = format!("quic://127.0.0.1:{port}").parse().unwrap();
    (Dialer::Quinn(Box::new(RawQuinn { endpoint, client: client_config })), addr)
}

async fn stacks() -> Vec<Stack> {
    let (server, client) = (Keypair::generate(), Keypair::generate());
    let web = web_certificate();
    let tcp_addr = listen(tcp_transport(&server, false), "tcp://127.0.0.1:0").await;
    let ws_listener = ws_transport(&server, false, &web);
    let ws_addr = listen(Arc::clone(&ws_listener), "ws://127.0.0.1:0").await;
    let wss_addr = listen(ws_listener, "wss://127.0.0.1:0").await;
    let quic_addr = listen(quic_transport(&server), "quic://127.0.0.1:0").await;
    let peer = |addr: &Addr| addr.clone().with_peer(server.peer_id());
    let (quinn, quinn_addr) = raw_quinn(&server, &client);
    let sinew = Dialer::Sinew;
    vec![
        Stack { name: "tcp", dialer: Dialer::Plain, addr: plain_tcp().await },
        Stack {
            name: "tcp+noise",
            dialer: sinew(tcp_transport(&client, false)),
            addr: peer(&tcp_addr),
        },
        Stack {
            name: "tcp+tls",
            dialer: sinew(tcp_transport(&client, true)),
            addr: peer(&tcp_addr),
        },
        Stack {
            name: "ws+noise",
            dialer: sinew(ws_transport(&client, false, &web)),
            addr: peer(&ws_addr),
        },
        Stack {
            name: "ws+tls",
            dialer: sinew(ws_transport(&client, true, &web)),
            addr: peer(&ws_addr),
        },
        Stack {
            name: "wss+noise",
            dialer: sinew(ws_transport(&client, false, &web)),
            addr: peer(&wss_addr),
        },
        Stack { name: "quinn", dialer: quinn, addr: quinn_addr },
        Stack { name: "quic", dialer: sinew(quic_transport(&client)), addr: peer(&quic_addr) },
    ]
}

async fn quinn_connect(raw: &RawQuinn, addr: &Addr) -> QuinnConnection {
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()));
    let connecting =
        raw.endpoint.connect_with(raw.client.clone(), to, sinew_secure::tls::SERVER_NAME).unwrap();
    QuinnConnection(connecting.await.unwrap())
}

async fn tcp_connect(addr: &Addr) -> TcpStream {
    let socket = TcpStream::connect(("127.0.0.1", addr.port())).await.unwrap();
    socket.set_nodelay(true).unwrap();
    socket
}

/// MB/s moving `total` bytes on one stream (one connection for plain TCP).
async fn single(stack: &Stack, data: &[u8], total: u64) -> f64 {
    let seconds = match &stack.dialer {
        Dialer::Plain => {
            let mut socket = tcp_connect(&stack.addr).await;
            let start = Instant::now();
            source(&mut socket, data, total).await;
            start.elapsed()
        }
        Dialer::Quinn(raw) => {
            let connection = quinn_connect(raw, &stack.addr).await;
            let mut stream = connection.open().await;
            let start = Instant::now();
            source(&mut stream, data, total).await;
            let took = start.elapsed();
            connection.0.close(0u32.into(), b"done");
            took
        }
        Dialer::Sinew(dialer) => {
            let connection = dialer.dial(stack.addr.clone()).await.unwrap();
            let mut stream = connection.muxer.open_stream().await.unwrap();
            let start = Instant::now();
            source(&mut stream, data, total).await;
            let took = start.elapsed();
            connection.muxer.close().await;
            took
        }
    };
    total as f64 / 1e6 / seconds.as_secs_f64()
}

/// MB/s moving `total` bytes split over [`STREAMS`] concurrent streams of one connection (eight
/// connections for plain TCP).
async fn eight(stack: &Stack, data: &Arc<Vec<u8>>, total: u64) -> f64 {
    let each = total / STREAMS as u64;
    let start;
    let mut tasks = Vec::new();
    match &stack.dialer {
        Dialer::Quinn(raw) => {
            let connection = Arc::new(quinn_connect(raw, &stack.addr).await);
            start = Instant::now();
            for _ in 0..STREAMS {
                let connection = Arc::clone(&connection);
                let data = Arc::clone(data);
                tasks.push(tokio::spawn(async move {
                    let mut stream = connection.open().await;
                    source(&mut stream, &data, each).await;
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            connection.0.close(0u32.into(), b"done");
        }
        Dialer::Plain => {
            let mut sockets = Vec::new();
            for _ in 0..STREAMS {
                sockets.push(tcp_connect(&stack.addr).await);
            }
            start = Instant::now();
            for mut socket in sockets {
                let data = Arc::clone(data);
                tasks.push(tokio::spawn(async move { source(&mut socket, &data, each).await }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        }
        Dialer::Sinew(dialer) => {
            let connection = dialer.dial(stack.addr.clone()).await.unwrap();
            start = Instant::now();
            for _ in 0..STREAMS {
                let muxer = connection.muxer.clone();
                let data = Arc::clone(data);
                tasks.push(tokio::spawn(async move {
                    let mut stream = muxer.open_stream().await.unwrap();
                    source(&mut stream, &data, each).await;
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            connection.muxer.close().await;
        }
    }
    (each * STREAMS as u64) as f64 / 1e6 / start.elapsed().as_secs_f64()
}

/// One connection set up and used: dial, open a stream, one byte there and back.
async fn setup_once(stack: &Stack) -> Duration {
    let start = Instant::now();
    match &stack.dialer {
        Dialer::Plain => {
            let mut socket = tcp_connect(&stack.addr).await;
            source(&mut socket, &[7], 1).await;
        }
        Dialer::Quinn(raw) => {
            let connection = quinn_connect(raw, &stack.addr).await;
            let mut stream = connection.open().await;
            source(&mut stream, &[7], 1).await;
            let took = start.elapsed();
            connection.0.close(0u32.into(), b"done");
            return took;
        }
        Dialer::Sinew(dialer) => {
            let connection = dialer.dial(stack.addr.clone()).await.unwrap();
            let mut stream = connection.muxer.open_stream().await.unwrap();
            source(&mut stream, &[7], 1).await;
            let took = start.elapsed();
            connection.muxer.close().await;
            return took;
        }
    }
    start.elapsed()
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

/// KiB of RSS per idle connection endpoint: `n` connections dialled and used once (a stream,
/// one byte there and back, the stream finished), both ends in this process, then the growth
/// divided by `2 n`. One connection is made first so that one-time allocations are not counted.
async fn idle_kib(stack: &Stack, n: usize) -> Option<f64> {
    let Dialer::Sinew(dialer) = &stack.dialer else { return None };
    let mut kept = Vec::with_capacity(n + 1);
    let used = |connection: Connection| async move {
        let mut stream = connection.muxer.open_stream().await.unwrap();
        source(&mut stream, &[7], 1).await;
        // QUIC's finish waits for the remote's acknowledgement and fails if the remote already
        // dropped its end (it has answered): either way the stream is done.
        let _ = stream.finish().await;
        connection
    };
    kept.push(used(dialer.dial(stack.addr.clone()).await.unwrap()).await);
    let before = rss_bytes();
    for _ in 0..n {
        kept.push(used(dialer.dial(stack.addr.clone()).await.unwrap()).await);
    }
    let grown = rss_bytes().saturating_sub(before);
    for connection in kept {
        connection.muxer.close().await;
    }
    Some(grown as f64 / 1024.0 / (2 * n) as f64)
}

/// The environment variable that makes this binary measure one stack's idle memory and exit.
const IDLE_CHILD: &str = "SINEW_BENCH_IDLE_STACK";

fn idle_in_child(name: &str, n: usize) -> Option<f64> {
    let output = std::process::Command::new(std::env::current_exe().ok()?)
        .env(IDLE_CHILD, name)
        .env("SINEW_BENCH_IDLE_N", n.to_string())
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout).lines().last()?.trim().parse().ok()
}

/// In the child: one stack's idle memory, printed as the last line.
async fn idle_child(name: &str) {
    let n = std::env::var("SINEW_BENCH_IDLE_N").ok().and_then(|n| n.parse().ok()).unwrap_or(200);
    let stacks = stacks().await;
    let Some(stack) = stacks.iter().find(|s| s.name == name) else { return };
    if let Some(kib) = idle_kib(stack, n).await {
        println!("{kib}");
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[derive(Default)]
struct Figures {
    single: Vec<f64>,
    eight: Vec<f64>,
    setup_ms: Vec<f64>,
    setup_per_second: Vec<f64>,
}

async fn measure() -> serde_json::Value {
    let (total, rounds, setups) = if quick() { (64 << 20, 2, 50) } else { (512 << 20, 5, 200) };
    let stacks = stacks().await;
    let data = Arc::new(vec![0xa5u8; WRITE]);
    // Idle memory, each stack in a fresh process of this binary: in one process, memory freed
    // by one stack's connections is reused by the next and hides its cost.
    let idle_n = if quick() { 50 } else { 200 };
    let mut idle = serde_json::Map::new();
    for stack in &stacks {
        if let Some(kib) = idle_in_child(stack.name, idle_n) {
            println!("idle {:<10} {kib:.1} KiB per connection endpoint", stack.name);
            idle.insert(stack.name.into(), serde_json::json!((kib * 10.0).round() / 10.0));
        }
    }
    let mut figures: Vec<Figures> = stacks.iter().map(|_| Figures::default()).collect();
    for round in 0..rounds {
        for (stack, figures) in stacks.iter().zip(&mut figures) {
            figures.single.push(single(stack, &data, total).await);
            figures.eight.push(eight(stack, &data, total).await);
            let mut times = Vec::with_capacity(setups);
            let start = Instant::now();
            for _ in 0..setups {
                times.push(setup_once(stack).await.as_secs_f64() * 1e3);
            }
            figures.setup_per_second.push(setups as f64 / start.elapsed().as_secs_f64());
            figures.setup_ms.push(median(&mut times));
            println!(
                "round {round} {:<10} single {:>7.0} MB/s  8 streams {:>7.0} MB/s  setup {:.3} ms, {:.0}/s",
                stack.name,
                figures.single.last().unwrap(),
                figures.eight.last().unwrap(),
                figures.setup_ms.last().unwrap(),
                figures.setup_per_second.last().unwrap(),
            );
        }
    }
    let mut medians: Vec<(f64, f64, f64, f64)> = figures
        .iter_mut()
        .map(|f| {
            (
                median(&mut f.single),
                median(&mut f.eight),
                median(&mut f.setup_ms),
                median(&mut f.setup_per_second),
            )
        })
        .collect();
    let tcp = medians[0];
    let noise = medians[1];
    let quinn = stacks.iter().position(|s| s.name == "quinn").map(|i| medians[i]);
    let mut out = serde_json::Map::new();
    out.insert(
        "config".into(),
        serde_json::json!({
            "bytes_per_run": total, "streams": STREAMS, "rounds": rounds,
            "setups_per_round": setups, "write_size": WRITE,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        }),
    );
    for (stack, m) in stacks.iter().zip(medians.iter_mut()) {
        out.insert(
            stack.name.into(),
            serde_json::json!({
                "single_stream_mbps": m.0.round(),
                "eight_streams_mbps": m.1.round(),
                "setup_median_ms": (m.2 * 1000.0).round() / 1000.0,
                "setups_per_second": m.3.round(),
                "single_vs_tcp": (m.0 / tcp.0 * 1000.0).round() / 1000.0,
                "single_vs_tcp_noise": (m.0 / noise.0 * 1000.0).round() / 1000.0,
                "eight_vs_tcp_noise": (m.1 / noise.1 * 1000.0).round() / 1000.0,
                "setup_vs_tcp_noise": (m.2 / noise.2 * 1000.0).round() / 1000.0,
                "single_vs_quinn": quinn.map(|q| (m.0 / q.0 * 1000.0).round() / 1000.0),
                "eight_vs_quinn": quinn.map(|q| (m.1 / q.1 * 1000.0).round() / 1000.0),
            }),
        );
    }
    out.insert(
        "idle_kib_per_connection_endpoint".into(),
        serde_json::json!({ "connections": idle_n, "kib": idle }),
    );
    serde_json::Value::Object(out)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list`
    }
    tune_allocator();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if let Ok(name) = std::env::var(IDLE_CHILD) {
        runtime.block_on(idle_child(&name));
        return;
    }
    let results = runtime.block_on(measure());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir).unwrap();
    let name = if quick() { "transports-quick.json" } else { "transports.json" };
    std::fs::write(dir.join(name), serde_json::to_string_pretty(&results).unwrap() + "\n").unwrap();
    println!(
        "{}\nwritten to benches/results/{name}",
        serde_json::to_string_pretty(&results).unwrap()
    );
}
