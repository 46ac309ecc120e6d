//! Every transport and security pair through the `Transport` trait, with plain TCP in the same
//! run: single-stream and 8-stream throughput over loopback, and connection setup (dial, open a
//! stream, one byte there and back) as a median and as connections per second.
//!
//! Rounds are interleaved (each round runs every stack once) so that the machine's drift hits
//! them alike; the figures are medians over rounds, and each pair's ratio is against the plain
//! TCP of the same rounds and against tcp+noise. Results go to `benches/results/transports.json`
//! (`transports-quick.json` with `SINEW_BENCH_QUICK=1`).
//!
//! `cargo bench -p sinew-benches --bench transports`

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    dialer: Option<Arc<dyn Transport>>,
    addr: Addr,
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

fn tcp_transport(key: &Keypair, dial_tls: bool) -> Arc<dyn Transport> {
    let identities = Identities {
        noise: Arc::new(NoiseIdentity::new(key, 1)),
        tls: Some(Arc::new(TlsIdentity::new(key, 1).unwrap())),
    };
    let config = TcpConfig { dial_tls, ..TcpConfig::default() };
    Arc::new(TcpTransport::with_identities(identities, config))
}

async fn stacks() -> Vec<Stack> {
    let (server, client) = (Keypair::generate(), Keypair::generate());
    let tcp_listener = tcp_transport(&server, false);
    let tcp_addr = listen(tcp_listener, "tcp://127.0.0.1:0").await.with_peer(server.peer_id());
    vec![
        Stack { name: "tcp", dialer: None, addr: plain_tcp().await },
        Stack {
            name: "tcp+noise",
            dialer: Some(tcp_transport(&client, false)),
            addr: tcp_addr.clone(),
        },
        Stack { name: "tcp+tls", dialer: Some(tcp_transport(&client, true)), addr: tcp_addr },
    ]
}

async fn tcp_connect(addr: &Addr) -> TcpStream {
    let socket = TcpStream::connect(("127.0.0.1", addr.port())).await.unwrap();
    socket.set_nodelay(true).unwrap();
    socket
}

/// MB/s moving `total` bytes on one stream (one connection for plain TCP).
async fn single(stack: &Stack, data: &[u8], total: u64) -> f64 {
    let seconds = match &stack.dialer {
        None => {
            let mut socket = tcp_connect(&stack.addr).await;
            let start = Instant::now();
            source(&mut socket, data, total).await;
            start.elapsed()
        }
        Some(dialer) => {
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
        None => {
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
        Some(dialer) => {
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
        None => {
            let mut socket = tcp_connect(&stack.addr).await;
            source(&mut socket, &[7], 1).await;
        }
        Some(dialer) => {
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
            }),
        );
    }
    serde_json::Value::Object(out)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list`
    }
    tune_allocator();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
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
