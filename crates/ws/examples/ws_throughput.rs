//! Moves bytes through `WsStream` over loopback TCP, and through plain TCP in the same run, and
//! prints MB/s for each and their ratio.
//!
//! `cargo run --release -p sinew-ws --example ws_throughput [MiB] [read buffer KiB]` (1024 MiB and
//! the default read buffer by default).

use std::time::{Duration, Instant};

use sinew_ws::{WsStream, WsStreamConfig};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const CHUNK: usize = 256 * 1024;

/// Writes `total` bytes in `CHUNK`s, then shuts down.
async fn send(mut io: impl AsyncWrite + Unpin, total: usize) -> std::io::Result<()> {
    let chunk = vec![0x5a; CHUNK];
    let mut sent = 0;
    while sent < total {
        let n = CHUNK.min(total - sent);
        io.write_all(&chunk[..n]).await?;
        sent += n;
    }
    io.shutdown().await
}

/// Reads to the end, returning the byte count.
async fn receive(mut io: impl AsyncRead + Unpin) -> std::io::Result<usize> {
    let mut buf = vec![0; CHUNK];
    let mut total = 0;
    loop {
        match io.read(&mut buf).await? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

async fn tcp_pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (client, server) = tokio::join!(TcpStream::connect(("127.0.0.1", port)), listener.accept());
    let (client, server) = (client?, server?.0);
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

async fn run<A, B>(total: usize, a: A, b: B) -> std::io::Result<Duration>
where
    A: AsyncWrite + Unpin + Send + 'static,
    B: AsyncRead + Unpin + Send + 'static,
{
    let started = Instant::now();
    let sender = tokio::spawn(send(a, total));
    let received = receive(b).await?;
    sender.await.map_err(std::io::Error::other)??;
    assert_eq!(received, total);
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = std::env::args().nth(1).map_or(Ok(1024), |a| a.parse())?;
    let total = mib << 20;
    let mut config = WsStreamConfig::default();
    if let Some(kib) = std::env::args().nth(2) {
        config.read_buffer_size = kib.parse::<usize>()? * 1024;
    }

    let (client, server) = tcp_pair().await?;
    let tcp = run(total, client, server).await?;

    let (client, server) = tcp_pair().await?;
    let (client, server) = tokio::join!(
        WsStream::connect(client, "ws://127.0.0.1/", &config),
        WsStream::accept(server, "/", &config)
    );
    let ws = run(total, client?.0, server?).await?;

    let rate = |d: Duration| total as f64 / 1e6 / d.as_secs_f64();
    println!("moved {mib} MiB over loopback, writes of {} KiB", CHUNK / 1024);
    println!("plain TCP:      {:>8.0} MB/s", rate(tcp));
    println!("WsStream (ws):  {:>8.0} MB/s (client to server: masked frames)", rate(ws));
    println!("ratio ws / tcp: {:>8.2}", rate(ws) / rate(tcp));
    Ok(())
}
