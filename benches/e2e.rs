//! End-to-end measurements over loopback, each against its baseline in the same run:
//!
//! - one stream, 1 GiB, 1 MiB writes: plain TCP, then sinew with Noise AES-GCM and ChaChaPoly
//!   (TCP + Noise + yamux + frames); MB/s, ratio to TCP, CPU seconds per GB (both processes);
//! - connection setup, dial to first response (a pong), over each transport and security
//!   (tcp+noise, tcp+tls, ws+noise, quic) against one server node listening on all of them, in
//!   interleaved rounds: median, ratio to tcp+noise, and connections per second, sequential
//!   and concurrent;
//! - memory per idle connection: VmHWM and VmRSS of a separate server process holding idle
//!   connections (1,000 over tcp+noise, 500 over QUIC), per connection;
//! - receiver peak RSS (VmHWM of a separate process) for one 512 MiB message.
//!
//! `cargo bench -p sinew-benches --bench e2e` (release). Prints a table and writes
//! `benches/results/e2e.json`. Set `SINEW_E2E_QUICK=1` for a short run. The server side runs
//! as a child process of this same binary (`SINEW_E2E_ROLE`).

use std::io::{BufRead as _, Write as _};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sinew::layers::quic::{QuicConfig, QuicTransport};
use sinew::{Keypair, Node, NodeConfig, NoiseSuite, Opcode};
use sinew_codec::Frame;
use sinew_codec::messages::{CONTROL_VERSION, ControlHello, MessageBody as _};
use sinew_secure::{NoiseIdentity, TlsIdentity};
use sinew_tcp::{TcpConfig, TcpTransport};
use sinew_transport::Transport as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[path = "delay_relay.rs"]
mod delay_relay;

const ROLE: &str = "SINEW_E2E_ROLE";
const MIB: usize = 1 << 20;

fn quick() -> bool {
    std::env::var_os("SINEW_E2E_QUICK").is_some()
}

/// Whether to run a section: all of them unless `SINEW_E2E_ONLY` names some
/// (`throughput,setup,idle,large`).
fn section(name: &str) -> bool {
    std::env::var("SINEW_E2E_ONLY").map_or(true, |only| only.split(',').any(|s| s == name))
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

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    #[allow(unsafe_code)]
    // SAFETY: sysconf with a valid name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // After the command name: state is field 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / hz
}

// ---------------------------------------------------------------- server roles

fn server_config() -> NodeConfig {
    let mut config = NodeConfig { perf_server: true, ..NodeConfig::default() };
    config.peers.limits.max_total = 4096;
    config.peers.limits.max_inbound = 4096;
    config.peers.limits.max_per_ip = 4096;
    config.peers.limits.max_pending_inbound = 512;
    config.peers.limits.max_pending_per_ip = 512;
    config.peers.limits.max_pending_outbound = 512;
    config.peers.idle_timeout = None;
    config.peers.ping_interval = Duration::from_secs(3600);
    config.peers.ping_timeout = Duration::from_secs(60);
    config.keepalive_interval = None;
    config
}

async fn serve(role: &str) {
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    });
    match role {
        "tcp-sink" => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            println!("tcp://{}", listener.local_addr().unwrap());
            tokio::spawn(async move {
                loop {
                    let (mut socket, _) = listener.accept().await.unwrap();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; MIB];
                        let mut total = 0u64;
                        loop {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => total += n as u64,
                            }
                        }
                        let _ = socket.write_all(&total.to_le_bytes()).await;
                    });
                }
            });
        }
        "node" | "large-receiver" => {
            let mut builder = Node::builder(Keypair::generate())
                .with_config(server_config())
                .listen("tcp://127.0.0.1:0".parse().unwrap());
            if role == "node" {
                for addr in ["quic://127.0.0.1:0", "ws://127.0.0.1:0"] {
                    builder = builder.listen(addr.parse().unwrap());
                }
            }
            let node = builder.start().await.unwrap();
            if role == "large-receiver" {
                let mut inbox = node.inbox(Opcode::app(1000).unwrap()).await.unwrap();
                let pid = std::process::id();
                tokio::spawn(async move {
                    while let Some(msg) = inbox.next().await {
                        println!(
                            "{{\"received\":{},\"vmhwm_kib\":{}}}",
                            msg.payload.len(),
                            status_kib(pid, "VmHWM:")
                        );
                    }
                });
            }
            // One line: every listen address with the peer id, the TCP one first.
            let addrs: Vec<String> = node
                .listen_addrs()
                .into_iter()
                .map(|addr| addr.with_peer(node.peer_id()).to_string())
                .collect();
            println!("{}", addrs.join(" "));
            std::mem::forget(node); // lives until the process exits
        }
        "idle-client" => {
            // Opens SINEW_E2E_COUNT idle connections to SINEW_E2E_TARGET (for profiling a server
            // by hand), then waits for stdin to close.
            let target: sinew::Addr = std::env::var("SINEW_E2E_TARGET").unwrap().parse().unwrap();
            let count: usize = std::env::var("SINEW_E2E_COUNT").map_or(200, |c| c.parse().unwrap());
            let mut conns = Vec::new();
            for _ in 0..count {
                conns.push(idle_connection(&target).await);
            }
            println!("opened {count}");
            let _ = stdin_closed.await;
            drop(conns);
            std::process::exit(0);
        }
        other => panic!("unknown role {other}"),
    }
    let _ = std::io::stdout().flush();
    let _ = stdin_closed.await;
    std::process::exit(0);
}

struct Server {
    child: Child,
    stdout: std::io::BufReader<ChildStdout>,
    /// The first listen address (TCP).
    addr: String,
    /// Every listen address.
    addrs: Vec<String>,
}

impl Server {
    fn start(role: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addrs: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        Self { child, stdout, addr: addrs[0].clone(), addrs }
    }

    /// The listen address of `scheme`.
    fn addr_of(&self, scheme: &str) -> sinew::Addr {
        let prefix = format!("{scheme}://");
        self.addrs.iter().find(|a| a.starts_with(&prefix)).unwrap().parse().unwrap()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- measurements

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Plain TCP: 1 MiB writes, the sink answers with the count.
async fn tcp_run(addr: &str, bytes: u64) -> (f64, f64) {
    let mut socket =
        tokio::net::TcpStream::connect(addr.trim_start_matches("tcp://")).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let buf = vec![0x5au8; MIB];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = (left as usize).min(MIB);
        socket.write_all(&buf[..n]).await.unwrap();
        left -= n as u64;
    }
    socket.shutdown().await.unwrap();
    let mut count = [0u8; 8];
    socket.read_exact(&mut count).await.unwrap();
    assert_eq!(u64::from_le_bytes(count), bytes);
    let secs = start.elapsed().as_secs_f64();
    (bytes as f64 / secs / 1e6, secs)
}

async fn client(suite: NoiseSuite) -> Node {
    let mut config = NodeConfig::default();
    if let Ok(split) = std::env::var("SINEW_E2E_SPLIT") {
        config.tcp.mux.split_send_size = split.parse().unwrap();
    }
    config.tcp.noise.suite = suite;
    config.request_timeout = Duration::from_secs(600);
    Node::builder(Keypair::generate()).with_config(config).start().await.unwrap()
}

async fn sinew_run(addr: &str, suite: NoiseSuite, bytes: u64) -> (f64, f64) {
    let node = client(suite).await;
    let peer = node.dial(addr.parse().unwrap()).await.unwrap();
    let report = node.perf(peer, bytes, 0, MIB).await.unwrap();
    node.shutdown().await;
    (report.upload_mbps(), report.upload_time.as_secs_f64())
}

/// The transport and security pairs whose setup is measured, and the scheme each dials.
///
/// `quic` is a client node that listens on QUIC too, so that its endpoint (UDP socket, quinn's
/// 3 MB receive buffer, driver task) exists before the dial, as in any node that already
/// dialled or listens over QUIC; `quic-first-dial` is a client-only node whose dial binds its
/// endpoint first.
const SETUP_PAIRS: [(&str, &str); 5] = [
    ("tcp+noise", "tcp"),
    ("tcp+tls", "tcp"),
    ("ws+noise", "ws"),
    ("quic", "quic"),
    ("quic-first-dial", "quic"),
];

/// A client node for one setup over `pair` (TLS pairs dial with TLS).
async fn setup_client(pair: &str) -> Node {
    let mut config = NodeConfig::default();
    config.tcp.noise.suite = NoiseSuite::AesGcm;
    config.tcp.dial_tls = pair == "tcp+tls";
    let mut builder = Node::builder(Keypair::generate()).with_config(config);
    if pair == "quic" {
        builder = builder.listen("quic://127.0.0.1:0".parse().unwrap());
    }
    builder.start().await.unwrap()
}

/// One fresh client node dials `addr` over `pair` and pings: (dial, dial to first pong).
async fn one_setup(pair: &str, addr: &sinew::Addr) -> (Duration, Duration) {
    let node = setup_client(pair).await;
    let start = Instant::now();
    let peer = node.dial(addr.clone()).await.unwrap();
    let dialled = start.elapsed();
    node.ping(peer).await.unwrap();
    let elapsed = start.elapsed();
    drop(node);
    (dialled, elapsed)
}

/// Opens an idle connection the way a minimal peer would: handshake, control stream, hello.
async fn idle_connection(
    target: &sinew::Addr,
) -> (sinew_transport::Connection, sinew_transport::Stream) {
    let key = Keypair::generate();
    let transport = TcpTransport::new(Arc::new(NoiseIdentity::new(&key, 1)), TcpConfig::default());
    with_control(transport.dial(target.clone()).await.unwrap()).await
}

/// The same over QUIC: a fresh identity (and so a fresh endpoint) per connection.
async fn idle_connection_quic(
    target: &sinew::Addr,
) -> (sinew_transport::Connection, sinew_transport::Stream) {
    let identity = Arc::new(TlsIdentity::new(&Keypair::generate(), 1).unwrap());
    let transport = QuicTransport::new(identity, QuicConfig::default());
    with_control(transport.dial(target.clone()).await.unwrap()).await
}

/// Opens `connection`'s control stream and sends the hello.
async fn with_control(
    connection: sinew_transport::Connection,
) -> (sinew_transport::Connection, sinew_transport::Stream) {
    let mut control = connection.muxer.open_stream().await.unwrap();
    let hello =
        Frame::message(Opcode::CONTROL_STREAM, ControlHello { version: CONTROL_VERSION }.encode())
            .to_bytes();
    control.write_all(&hello).await.unwrap();
    control.flush().await.unwrap();
    (connection, control)
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        tune_allocator();
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(serve(&role));
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list`
    }
    tune_allocator();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let results = runtime.block_on(measure());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir).unwrap();
    let name = if quick() { "e2e-quick.json" } else { "e2e.json" };
    std::fs::write(dir.join(name), serde_json::to_string_pretty(&results).unwrap() + "\n").unwrap();
    println!("\nwritten to benches/results/{name}");
}

async fn measure() -> serde_json::Value {
    let bytes: u64 = if quick() { 256 << 20 } else { 1 << 30 };
    let rounds = if quick() { 1 } else { 5 };

    let mut results = serde_json::Map::new();
    results.insert("machine".into(), serde_json::json!({ "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) }));
    if section("throughput") {
        results.insert("throughput".into(), throughput(bytes, rounds).await);
    }
    if section("setup") {
        results.insert("setup".into(), setup().await);
    }
    if section("idle") {
        results.insert("idle".into(), idle().await);
    }
    if section("large") {
        results.insert("large_message".into(), large().await);
    }
    serde_json::Value::Object(results)
}

async fn throughput(bytes: u64, rounds: usize) -> serde_json::Value {
    // Interleaved so drift affects every stack alike.
    let tcp = Server::start("tcp-sink");
    let node = Server::start("node");
    let (mut tcp_mbps, mut aes_mbps, mut chacha_mbps) = (Vec::new(), Vec::new(), Vec::new());
    let (mut aes_cpu, mut chacha_cpu, mut tcp_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let me = std::process::id();
    for _ in 0..rounds {
        let c0 = cpu_seconds(me) + cpu_seconds(tcp.pid());
        tcp_mbps.push(tcp_run(&tcp.addr, bytes).await.0);
        tcp_cpu.push((cpu_seconds(me) + cpu_seconds(tcp.pid()) - c0) / (bytes as f64 / 1e9));
        for (suite, mbps, cpu) in [
            (NoiseSuite::AesGcm, &mut aes_mbps, &mut aes_cpu),
            (NoiseSuite::ChaChaPoly, &mut chacha_mbps, &mut chacha_cpu),
        ] {
            let c0 = cpu_seconds(me) + cpu_seconds(node.pid());
            mbps.push(sinew_run(&node.addr, suite, bytes).await.0);
            cpu.push((cpu_seconds(me) + cpu_seconds(node.pid()) - c0) / (bytes as f64 / 1e9));
        }
    }
    drop(tcp);
    let (tcp_m, aes_m, chacha_m) =
        (median(tcp_mbps.clone()), median(aes_mbps.clone()), median(chacha_mbps.clone()));
    println!("throughput, one stream, {} MiB, 1 MiB writes (median of {rounds})", bytes >> 20);
    println!("  plain TCP          {tcp_m:>7.0} MB/s   {:.2} CPU-s/GB", median(tcp_cpu.clone()));
    println!(
        "  sinew AES-GCM      {aes_m:>7.0} MB/s   {:.2} CPU-s/GB   x{:.2} of TCP",
        median(aes_cpu.clone()),
        aes_m / tcp_m
    );
    println!(
        "  sinew ChaChaPoly   {chacha_m:>7.0} MB/s   {:.2} CPU-s/GB   x{:.2} of TCP",
        median(chacha_cpu.clone()),
        chacha_m / tcp_m
    );
    drop(node);
    serde_json::json!({
        "bytes": bytes, "rounds": rounds, "write_size": MIB,
        "tcp_mbps": tcp_mbps, "aesgcm_mbps": aes_mbps, "chachapoly_mbps": chacha_mbps,
        "tcp_cpu_s_per_gb": tcp_cpu, "aesgcm_cpu_s_per_gb": aes_cpu, "chachapoly_cpu_s_per_gb": chacha_cpu,
        "median": { "tcp": tcp_m, "aesgcm": aes_m, "chachapoly": chacha_m,
                    "aesgcm_ratio": aes_m / tcp_m, "chachapoly_ratio": chacha_m / tcp_m },
    })
}

/// Connection setup: dial to first pong, a fresh client node each time, over every pair in
/// [`SETUP_PAIRS`], in interleaved rounds (so that the machine's noise falls on all alike):
/// over loopback, then through [`delay_relay`] with 2 and 20 ms of round trip.
async fn setup() -> serde_json::Value {
    let node = Server::start("node");
    let n = if quick() { 100 } else { 500 };
    for (pair, scheme) in SETUP_PAIRS {
        let _ = one_setup(pair, &node.addr_of(scheme)).await; // warm up
    }
    let direct: Vec<_> = SETUP_PAIRS.iter().map(|(p, s)| (*p, node.addr_of(s))).collect();
    println!("connection setup (dial to first pong, a fresh client node each time), loopback");
    let mut figures = setup_pass(&direct, n, 5, true).await;
    for rtt_ms in [2u64, 20] {
        let delay = Duration::from_micros(rtt_ms * 500);
        let mut relayed = Vec::new();
        for (pair, scheme) in SETUP_PAIRS {
            let target = node.addr_of(scheme);
            let port = target.port();
            let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let relay = if scheme == "quic" {
                delay_relay::udp(to, delay).await
            } else {
                delay_relay::tcp(to, delay).await
            };
            let addr =
                target.to_string().replacen(&format!(":{port}"), &format!(":{}", relay.port()), 1);
            relayed.push((pair, addr.parse().unwrap()));
        }
        println!("  through a relay adding {rtt_ms} ms of round trip");
        let count = if quick() { 20 } else { 60 };
        let pass = setup_pass(&relayed, count, 2, false).await;
        figures.insert(format!("rtt_{rtt_ms}ms"), serde_json::Value::Object(pass));
    }
    drop(node);
    serde_json::Value::Object(figures)
}

/// `n` setups over each of `targets` in `rounds` interleaved rounds: median, ratio to the
/// first (tcp+noise), sequential rate and, with `concurrent`, the rate with
/// [`CONCURRENCY`] at once.
async fn setup_pass(
    targets: &[(&'static str, sinew::Addr)],
    n: usize,
    rounds: usize,
    concurrent: bool,
) -> serde_json::Map<String, serde_json::Value> {
    let mut samples: Vec<(Vec<f64>, Vec<f64>, Duration)> =
        targets.iter().map(|_| (Vec::new(), Vec::new(), Duration::ZERO)).collect();
    for _ in 0..rounds {
        for (i, (pair, target)) in targets.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..n / rounds {
                let (dial, total) = one_setup(pair, target).await;
                samples[i].0.push(total.as_secs_f64() * 1e3);
                samples[i].1.push(dial.as_secs_f64() * 1e3);
            }
            samples[i].2 += start.elapsed();
        }
    }
    let mut figures = serde_json::Map::new();
    let baseline = median(samples[0].0.clone());
    for (i, (pair, target)) in targets.iter().enumerate() {
        let (setups, dials, took) = &samples[i];
        let count = setups.len();
        let sequential_rate = count as f64 / took.as_secs_f64();
        let setup_median = median(setups.clone());
        let dial_median = median(dials.clone());
        let ratio = setup_median / baseline;
        let concurrent_rate =
            if concurrent { Some(concurrent_setups(pair, target, n).await) } else { None };
        let at_once = concurrent_rate
            .map(|r| format!("; concurrent ({CONCURRENCY} at once) {r:.0}/s"))
            .unwrap_or_default();
        println!(
            "  {pair:<15} median {setup_median:7.3} ms (x{ratio:.2} of tcp+noise; the dial {dial_median:.3} ms); sequential {sequential_rate:.0}/s{at_once}"
        );
        figures.insert((*pair).into(), serde_json::json!({
            "count": count, "median_ms": setup_median, "dial_median_ms": dial_median,
            "vs_tcp_noise": ratio, "sequential_per_sec": sequential_rate,
            "concurrency": CONCURRENCY, "concurrent_per_sec": concurrent_rate, "samples_ms": setups,
        }));
    }
    figures
}

/// Setups running at once in the concurrent measurement.
const CONCURRENCY: usize = 32;

/// Setups per second with [`CONCURRENCY`] of them running at once.
async fn concurrent_setups(pair: &'static str, target: &sinew::Addr, n: usize) -> f64 {
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..CONCURRENCY {
        let target = target.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..n / CONCURRENCY {
                one_setup(pair, &target).await;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    (n / CONCURRENCY * CONCURRENCY) as f64 / start.elapsed().as_secs_f64()
}

/// Idle connections: memory of a separate server process, per connection, over tcp+noise and
/// over QUIC.
async fn idle() -> serde_json::Value {
    let tcp = idle_over("tcp", 1000).await;
    let quic = idle_over("quic", 500).await;
    serde_json::json!({ "tcp+noise": tcp, "quic": quic })
}

/// `count` idle connections to a fresh server node over `scheme` (`tcp` with Noise, or `quic`):
/// the growth of the server's VmHWM and VmRSS, per connection.
async fn idle_over(scheme: &str, count: usize) -> serde_json::Value {
    let idle = Server::start("node");
    let target = idle.addr_of(scheme);
    let connect = |target: sinew::Addr| async move {
        if scheme == "quic" {
            idle_connection_quic(&target).await
        } else {
            idle_connection(&target).await
        }
    };
    let warm = connect(target.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (hwm0, rss0) = (status_kib(idle.pid(), "VmHWM:"), status_kib(idle.pid(), "VmRSS:"));
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        conns.push(connect(target.clone()).await);
    }
    // Let the server settle: identify and pings exchanged, handshake buffers freed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (hwm1, rss1) = (status_kib(idle.pid(), "VmHWM:"), status_kib(idle.pid(), "VmRSS:"));
    let per_hwm = (hwm1.saturating_sub(hwm0) * 1024) as f64 / count as f64;
    let per_rss = (rss1.saturating_sub(rss0) * 1024) as f64 / count as f64;
    println!(
        "idle connections over {scheme}: {count} open, server process VmHWM {hwm0} -> {hwm1} KiB, VmRSS {rss0} -> {rss1} KiB"
    );
    println!("  per connection endpoint: {per_hwm:.0} B (VmHWM), {per_rss:.0} B (VmRSS)");
    drop(conns);
    drop(warm);
    drop(idle);
    serde_json::json!({ "connections": count, "server_vmhwm_kib": [hwm0, hwm1], "server_vmrss_kib": [rss0, rss1],
                        "bytes_per_connection_hwm": per_hwm, "bytes_per_connection_rss": per_rss })
}

/// Receiver peak RSS for one 512 MiB message.
async fn large() -> serde_json::Value {
    let size = if quick() { 128 * MIB } else { 512 * MIB };
    let mut receiver = Server::start("large-receiver");
    let base = status_kib(receiver.pid(), "VmHWM:");
    let sender = client(NoiseSuite::AesGcm).await;
    let peer = sender.dial(receiver.addr.parse().unwrap()).await.unwrap();
    let payload = Bytes::from(vec![0x42u8; size]);
    let start = Instant::now();
    sender.send(peer, Opcode::app(1000).unwrap(), payload).await.unwrap();
    let line = tokio::task::spawn_blocking(move || receiver.line()).await.unwrap();
    let elapsed = start.elapsed();
    let report: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let hwm = report["vmhwm_kib"].as_u64().unwrap();
    let ratio = (hwm * 1024) as f64 / size as f64;
    println!(
        "large message: {} MiB received in {:.2} s; receiver VmHWM {base} -> {hwm} KiB = x{ratio:.2} of the message",
        size >> 20,
        elapsed.as_secs_f64()
    );
    sender.shutdown().await;
    serde_json::json!({ "bytes": size, "receiver_vmhwm_kib_before": base, "receiver_vmhwm_kib": hwm,
                        "ratio_to_message": ratio, "seconds": elapsed.as_secs_f64() })
}
