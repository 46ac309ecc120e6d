//! The sans-IO host and the simulator, measured.
//!
//! - **Host frames per second**: 1 KiB application messages through one `sinew_host::Host` on
//!   one thread (routed to a protocol, outputs drained), against the baseline in the same run:
//!   1 KiB messages end to end between two nodes over loopback TCP (Noise, yamux). The issue's
//!   aim: the host at least 5 times the end-to-end rate.
//! - **The simulator at scale**: 10,000 hosts with 8 connections each over one virtual minute
//!   of liveness pings and keepalives: wall time and peak memory (VmHWM).
//!
//! `cargo bench -p sinew-benches --bench host_sim` (set `SINEW_BENCH_QUICK=1` for a short run);
//! results go to `benches/results/host_sim.json`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng as _;
use sinew::{Keypair, Node, Opcode};
use sinew_codec::{Frame, FrameKind};
use sinew_host::{Host, HostConfig};
use sinew_peers::{Established, PeerManager, PeersConfig};
use sinew_protocol::{Ctx, Handled, Message, Opcodes, Protocol};
use sinew_types::Direction;

fn quick() -> bool {
    std::env::var_os("SINEW_BENCH_QUICK").is_some()
}

fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Counts messages into a shared counter (a protocol: nothing between the wire and it drops).
struct Tally(std::sync::Arc<std::sync::atomic::AtomicUsize>, std::sync::Arc<tokio::sync::Notify>);
impl Protocol for Tally {
    fn opcodes(&self) -> Opcodes {
        Opcode::app(1000).unwrap().into()
    }
    fn on_message(&mut self, _ctx: &mut Ctx<'_>, _msg: Message) -> Handled {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.1.notify_one();
        Handled::Yes
    }
}

/// 1 KiB messages per second, node to node over loopback (`Node::send` into a protocol).
async fn e2e_rate(count: usize) -> f64 {
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    let server = Node::builder(Keypair::generate())
        .listen("tcp://127.0.0.1:0".parse().unwrap())
        .protocol(Tally(received.clone(), notify.clone()))
        .start()
        .await
        .unwrap();
    let client = Node::builder(Keypair::generate()).start().await.unwrap();
    let peer = client.dial(server.listen_addrs()[0].clone()).await.unwrap();
    let payload = Bytes::from(vec![7u8; 1024]);
    let op = Opcode::app(1000).unwrap();
    let start = Instant::now();
    let sender = tokio::spawn({
        let client = client.clone();
        async move {
            for _ in 0..count {
                client.send(peer, op, payload.clone()).await.unwrap();
            }
        }
    });
    while received.load(std::sync::atomic::Ordering::Relaxed) < count {
        let _ = tokio::time::timeout(Duration::from_millis(50), notify.notified()).await;
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    sender.await.unwrap();
    client.shutdown().await;
    server.shutdown().await;
    rate
}

/// Counts messages.
struct Count(u64);
impl Protocol for Count {
    fn opcodes(&self) -> Opcodes {
        Opcode::app(1000).unwrap().into()
    }
    fn on_message(&mut self, _ctx: &mut Ctx<'_>, _msg: Message) -> Handled {
        self.0 += 1;
        Handled::Yes
    }
}

/// 1 KiB frames per second through one host on this thread.
#[allow(clippy::disallowed_methods)]
fn host_rate(count: usize) -> f64 {
    let now = Instant::now();
    let local = Keypair::generate().peer_id();
    let peers = PeerManager::new(local, PeersConfig::default(), 1).unwrap();
    let mut host = Host::new(HostConfig::new(local), peers, ChaCha8Rng::seed_from_u64(2), now);
    host.register(Box::new(Count(0))).unwrap();
    host.start(now);
    let conn = host.handle_inbound("127.0.0.1:5000".parse().unwrap(), now).unwrap();
    let established = Established {
        peer: Keypair::generate().peer_id(),
        direction: Direction::Inbound,
        remote_addr: "tcp://127.0.0.1:5000".parse().unwrap(),
        boot_nonce: 1,
        session_tag: [0; 32],
    };
    assert!(host.handle_established(conn, established, now));
    while host.poll_output().is_some() {}
    let frame =
        Frame::new(Opcode::app(1000).unwrap(), FrameKind::Message, Bytes::from(vec![7u8; 1024]));
    let start = Instant::now();
    let mut outputs = 0usize;
    for _ in 0..count {
        host.handle_frame(conn, frame.clone(), now);
        while host.poll_output().is_some() {
            outputs += 1;
        }
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    assert_eq!(outputs, 0, "plain messages need no answer");
    rate
}

/// 10,000 hosts, each dialling its next four on a ring (8 connections each), for one virtual
/// minute. Returns (hosts, connections, wall seconds to build, wall seconds to run, VmHWM KiB
/// before, after).
fn sim_scale(hosts: usize) -> serde_json::Value {
    let hwm0 = vm_kib("VmHWM:");
    let start = Instant::now();
    let mut sim = sinew_sim::Sim::new(42);
    sim.set_logging(false);
    sim.set_latency(Duration::from_millis(1), Duration::from_millis(50));
    // A minute of liveness: pings every 15 s, keepalives every 20 s; no idle close.
    sim.set_peers_config(PeersConfig { idle_timeout: None, ..PeersConfig::default() });
    for _ in 0..hosts {
        sim.add_host();
    }
    for i in 0..hosts {
        for k in 1..=4 {
            sim.dial(i, (i + k) % hosts);
        }
    }
    sim.run_for(Duration::from_secs(1));
    let built = start.elapsed().as_secs_f64();
    let connected: usize = (0..hosts).map(|i| sim.host(i).connected_peers().len()).sum();
    let run = Instant::now();
    sim.run_for(Duration::from_secs(60));
    let ran = run.elapsed().as_secs_f64();
    let after: usize = (0..hosts).map(|i| sim.host(i).connected_peers().len()).sum();
    let hwm1 = vm_kib("VmHWM:");
    println!(
        "sim: {hosts} hosts, {} connections per host after setup ({} after the minute); setup {built:.2} s, one virtual minute in {ran:.2} s wall; VmHWM {hwm0} -> {hwm1} KiB ({:.1} KiB per host)",
        connected as f64 / hosts as f64,
        after as f64 / hosts as f64,
        (hwm1 - hwm0) as f64 / hosts as f64
    );
    serde_json::json!({
        "hosts": hosts,
        "connections_per_host": connected as f64 / hosts as f64,
        "connections_per_host_after_minute": after as f64 / hosts as f64,
        "setup_wall_seconds": built,
        "virtual_minute_wall_seconds": ran,
        "vmhwm_kib": [hwm0, hwm1],
        "kib_per_host": (hwm1 - hwm0) as f64 / hosts as f64,
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds = if quick() { 1 } else { 5 };
    let count = if quick() { 20_000 } else { 100_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (mut e2e, mut host) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternated, so drift affects both alike.
        let e = runtime.block_on(e2e_rate(count));
        let h = host_rate(count * 5);
        println!("round {round}: e2e {e:.0} msgs/s, host {h:.0} frames/s, x{:.1}", h / e);
        e2e.push(e);
        host.push(h);
    }
    let (e, h) = (median(e2e.clone()), median(host.clone()));
    println!("median: e2e {e:.0} msgs/s (1 KiB), host {h:.0} frames/s: x{:.1} (aim x5)", h / e);
    let scale = sim_scale(if quick() { 1000 } else { 10_000 });
    let results = serde_json::json!({
        "host_frames": {
            "payload_bytes": 1024,
            "e2e_msgs_per_sec": e2e,
            "host_frames_per_sec": host,
            "median_ratio": h / e,
        },
        "sim": scale,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir).unwrap();
    let name = if quick() { "host_sim-quick.json" } else { "host_sim.json" };
    std::fs::write(dir.join(name), serde_json::to_string_pretty(&results).unwrap() + "\n").unwrap();
    println!("\nwritten to benches/results/{name}");
}
