//! One stream, one way: MB/s through `QuicTransport` and through raw quinn with the same
//! settings (TLS configuration, transport configuration, UDP socket buffers), in the same run.
//!
//! ```text
//! cargo run --release -p sinew-quic --example quic_throughput [MiB] [rounds]
//! ```
//! Defaults: 1024 MiB, 3 rounds of each, alternating; prints each round and the medians.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, EndpointConfig, TokioRuntime};
use sinew_quic::{QuicConfig, QuicTransport};
use sinew_secure::TlsIdentity;
use sinew_transport::Transport as _;
use sinew_types::Keypair;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const CHUNK: usize = 1 << 20;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let bytes = mib * CHUNK;
    let config = QuicConfig::default();
    let (server_key, client_key) = (Keypair::generate(), Keypair::generate());
    let server_id = Arc::new(TlsIdentity::new(&server_key, 1)?);
    let client_id = Arc::new(TlsIdentity::new(&client_key, 2)?);

    let (mut sinew, mut raw) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let s = sinew_round(&server_id, &client_id, &config, bytes).await?;
        let r = raw_round(&server_id, &client_id, &config, bytes).await?;
        println!("round {round}: sinew-quic {s:8.1} MB/s   raw quinn {r:8.1} MB/s");
        sinew.push(s);
        raw.push(r);
    }
    // Each round's pair ran back to back, so the median of the paired ratios is steadier than
    // the ratio of the medians on a noisy machine.
    let mut ratios: Vec<f64> = sinew.iter().zip(&raw).map(|(s, r)| s / r).collect();
    let (s, r, ratio) = (median(&mut sinew), median(&mut raw), median(&mut ratios));
    println!(
        "{mib} MiB x {rounds}: median sinew-quic {s:.1} MB/s, raw quinn {r:.1} MB/s, \
         median paired ratio {ratio:.3}"
    );
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn mb_per_s(bytes: usize, started: Instant) -> f64 {
    bytes as f64 / started.elapsed().as_secs_f64() / 1e6
}

async fn sinew_round(
    server_id: &Arc<TlsIdentity>,
    client_id: &Arc<TlsIdentity>,
    config: &QuicConfig,
    bytes: usize,
) -> Result<f64, Error> {
    let server = QuicTransport::new(Arc::clone(server_id), config.clone());
    let client = QuicTransport::new(Arc::clone(client_id), config.clone());
    let mut listener = server.listen("quic://127.0.0.1:0".parse()?).await?;
    let addr = listener.local_addr();
    let receiver = tokio::spawn(async move {
        let conn = listener.accept().await?.upgrade().await?;
        let mut stream = conn.muxer.accept_stream().await.ok_or("no stream")?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0;
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        Ok::<_, Error>((total, conn))
    });
    let conn = client.dial(addr).await?;
    let mut stream = conn.muxer.open_stream().await?;
    let chunk = vec![0x5au8; CHUNK];
    let started = Instant::now();
    for _ in 0..bytes / CHUNK {
        stream.write_all(&chunk).await?;
    }
    stream.finish().await?;
    let (total, _server_conn) = receiver.await??;
    let rate = mb_per_s(total, started);
    assert_eq!(total, bytes);
    conn.muxer.close().await;
    Ok(rate)
}

/// An endpoint on 127.0.0.1 with the same socket buffers as the transport's.
fn raw_endpoint(
    config: &QuicConfig,
    server: Option<quinn::ServerConfig>,
) -> Result<Endpoint, Error> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    if let Some(b) = config.socket_send_buffer {
        state.set_send_buffer_size((&socket).into(), b)?;
    }
    if let Some(b) = config.socket_recv_buffer {
        state.set_recv_buffer_size((&socket).into(), b)?;
    }
    Ok(Endpoint::new(EndpointConfig::default(), server, socket, Arc::new(TokioRuntime))?)
}

async fn raw_round(
    server_id: &Arc<TlsIdentity>,
    client_id: &Arc<TlsIdentity>,
    config: &QuicConfig,
    bytes: usize,
) -> Result<f64, Error> {
    let transport = config.transport_config();
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(
        server_id.server_config(),
    )?));
    server_config.transport_config(Arc::clone(&transport));
    let server = raw_endpoint(config, Some(server_config))?;
    let server_addr: SocketAddr = server.local_addr()?;
    let (crypto, _verdict) = client_id.client_config(None)?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(crypto)?));
    client_config.transport_config(transport);
    let client = raw_endpoint(config, None)?;
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.ok_or("no connection")?.await?;
        let (_send, mut recv) = conn.accept_bi().await?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0;
        while let Some(n) = recv.read(&mut buf).await? {
            total += n;
        }
        Ok::<_, Error>((total, conn))
    });
    let conn =
        client.connect_with(client_config, server_addr, sinew_secure::tls::SERVER_NAME)?.await?;
    let (mut send, _recv) = conn.open_bi().await?;
    let chunk = vec![0x5au8; CHUNK];
    let started = Instant::now();
    for _ in 0..bytes / CHUNK {
        send.write_all(&chunk).await?;
    }
    send.finish()?;
    let (total, _server_conn) = receiver.await??;
    let rate = mb_per_s(total, started);
    assert_eq!(total, bytes);
    conn.close(0u32.into(), b"done");
    Ok(rate)
}
