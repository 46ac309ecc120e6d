//! `sinew keygen`, `node`, `ping` and `send`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use sinew::{Addr, Bytes, Event, Keypair, Node, NodeConfig, Opcode, OpcodeRange};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `sinew node` options.
#[derive(clap::Args)]
pub(crate) struct NodeArgs {
    /// Addresses to listen on, e.g. tcp://0.0.0.0:4001 (repeatable).
    #[arg(long = "listen")]
    listen: Vec<Addr>,
    /// Peers to keep connected, e.g. tcp://10.0.0.2:4001 (repeatable).
    #[arg(long = "peer")]
    peers: Vec<Addr>,
    /// Identity key file (made by `sinew keygen`); a fresh identity if omitted.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Role announced in identify.
    #[arg(long, default_value = "node")]
    role: String,
    /// Idle timeout in seconds (0: never).
    #[arg(long, default_value_t = 60)]
    idle_timeout: u64,
    /// Log as JSON lines.
    #[arg(long)]
    json_logs: bool,
    /// Map the TCP listen ports on the local gateway (UPnP IGD, NAT-PMP or PCP) and advertise
    /// the external addresses.
    #[arg(long)]
    nat: bool,
    /// Lease of each port mapping, in seconds (renewed at half of it).
    #[arg(long, default_value_t = 3600)]
    nat_lease: u64,
    /// Serve `sinew perf` throughput tests (each bounded to 4 GiB each way and 60 s).
    #[arg(long)]
    serve_perf: bool,
    /// Dial peers with TLS 1.3 instead of Noise (a listener accepts both).
    #[arg(long)]
    tls: bool,
    /// Inbound connections accepted from one IP address.
    #[arg(long, default_value_t = sinew::PeersConfig::default().limits.max_per_ip)]
    max_per_ip: usize,
    /// Inbound handshakes in progress from one IP address (an IPv6 address by its /64).
    #[arg(long, default_value_t = sinew::PeersConfig::default().limits.max_pending_per_ip)]
    max_pending_per_ip: usize,
    /// Inbound connections accepted in all.
    #[arg(long, default_value_t = sinew::PeersConfig::default().limits.max_inbound)]
    max_inbound: usize,
    /// Connections in all, both directions.
    #[arg(long, default_value_t = sinew::PeersConfig::default().limits.max_total)]
    max_total: usize,
}

pub(crate) fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stdout);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

pub(crate) fn keygen(out: &Path) -> Result<(), BoxError> {
    let key = Keypair::generate();
    key.save(out)?;
    println!(
        "{}",
        serde_json::json!({ "peer_id": key.peer_id().to_string(), "path": out.display().to_string() })
    );
    Ok(())
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A client node for the one-shot tools.
pub(crate) async fn client(config: NodeConfig) -> Result<Node, BoxError> {
    Ok(Node::builder(Keypair::generate()).with_config(config).start().await?)
}

pub(crate) async fn node(args: NodeArgs) -> Result<(), BoxError> {
    let key = match &args.key {
        Some(path) => Keypair::load(path)?,
        None => Keypair::generate(),
    };
    let mut config = NodeConfig {
        perf_server: args.serve_perf,
        role: args.role.clone(),
        ..NodeConfig::default()
    };
    config.tcp.dial_tls = args.tls;
    config.peers.limits.max_per_ip = args.max_per_ip;
    config.peers.limits.max_pending_per_ip = args.max_pending_per_ip;
    config.peers.limits.max_inbound = args.max_inbound;
    config.peers.limits.max_total = args.max_total;
    config.peers.idle_timeout =
        (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout));
    config.request_timeout = Duration::from_secs(600);
    if args.nat {
        config.nat = Some(sinew::layers::nat::PortMapperConfig {
            lease: Duration::from_secs(args.nat_lease),
            ..Default::default()
        });
    }
    let mut builder = Node::builder(key).with_config(config);
    for addr in &args.listen {
        builder = builder.listen(addr.clone());
    }
    let node = builder.start().await?;
    let mut events = node.events();
    let listen: Vec<String> = node.listen_addrs().iter().map(ToString::to_string).collect();
    println!("{}", serde_json::json!({ "peer_id": node.peer_id().to_string(), "listen": listen }));
    init_logging(args.json_logs);

    // The reference node takes every application message: it logs it (size and SHA-256) and
    // echoes requests.
    let all_apps = OpcodeRange::new(Opcode::app(Opcode::APP_START)?, Opcode::from_u32(u32::MAX))
        .ok_or("empty application range")?;
    let mut inbox = node.inbox(all_apps).await?;
    let echo = node.clone();
    tokio::spawn(async move {
        while let Some(msg) = inbox.next().await {
            tracing::info!(peer = %msg.peer, opcode = %msg.opcode, bytes = msg.payload.len(), sha256 = %sha256_hex(&msg.payload), "message");
            if msg.request_id().is_some() {
                let _ = echo.reply(&msg, msg.payload.clone()).await;
            }
        }
    });
    for addr in args.peers {
        node.add_peer(addr).await?;
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(event) => log_event(&event),
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

fn log_event(event: &Event) {
    match event {
        Event::PeerConnected { peer, addr, direction } => {
            tracing::info!(%peer, %addr, %direction, "peer connected");
        }
        Event::PeerDisconnected { peer, reason } => {
            tracing::info!(%peer, %reason, "peer disconnected")
        }
        Event::PeerIdentified { peer, role, agent, .. } => {
            tracing::info!(%peer, role, agent, "peer identified")
        }
        Event::DialFailed { addr, error } => tracing::warn!(%addr, %error, "dial failed"),
        Event::HandshakeFailed { remote, error } => {
            tracing::warn!(%remote, %error, "handshake failed")
        }
        Event::InboundRefused { remote, refusal } => {
            tracing::warn!(%remote, %refusal, "inbound refused")
        }
        Event::AddressesChanged { addrs } => {
            let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            tracing::info!(addrs = %addrs.join(","), "addresses changed");
        }
        Event::Nat(event) => tracing::info!(event = ?event, "port mapping"),
        Event::MessageDropped { peer, opcode, reason } => {
            tracing::warn!(%peer, %opcode, reason = ?reason, "message dropped")
        }
        other => tracing::debug!(event = ?other, "event"),
    }
}

pub(crate) async fn ping(addr: Addr, count: u32) -> Result<(), BoxError> {
    let node = client(NodeConfig::default()).await?;
    let start = Instant::now();
    let peer = node.dial(addr.clone()).await?;
    println!("connected to {peer} at {addr} in {:.2} ms", start.elapsed().as_secs_f64() * 1e3);
    for _ in 0..count.max(1) {
        let rtt = node.ping(peer).await?;
        println!("pong from {}: {:.3} ms", peer.short(), rtt.as_secs_f64() * 1e3);
    }
    node.shutdown().await;
    Ok(())
}

pub(crate) async fn send(addr: Addr, opcode: u32, file: &Path) -> Result<(), BoxError> {
    let data = Bytes::from(tokio::fs::read(file).await?);
    let opcode = Opcode::app(opcode)?;
    let config = NodeConfig { request_timeout: Duration::from_secs(600), ..NodeConfig::default() };
    let node = client(config).await?;
    let peer = node.dial(addr).await?;
    let start = Instant::now();
    node.send_acked(peer, opcode, data.clone()).await?;
    let elapsed = start.elapsed();
    println!(
        "{}",
        serde_json::json!({
            "peer_id": peer.to_string(),
            "bytes": data.len(),
            "sha256": sha256_hex(&data),
            "elapsed_ms": elapsed.as_secs_f64() * 1e3,
        })
    );
    node.shutdown().await;
    Ok(())
}
