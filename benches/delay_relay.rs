//! A relay that adds a fixed delay each way, for measuring connection setup over a path with a
//! round trip (this kernel has no netem). TCP connections and UDP datagrams are forwarded to a
//! target on loopback, each chunk or datagram held for `delay` before it is passed on, in
//! order.
//!
//! A TCP client's connect completes against the relay at once, so the relay holds the client's
//! first bytes one round trip longer than the rest: they arrive when they would have over a
//! real path, after SYN and SYN-ACK (sinew's dialler speaks first on TCP, as on every
//! transport).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Chunks or datagrams in flight per direction before the reader waits.
const QUEUE: usize = 1024;

/// Forwards TCP connections made to the returned address to `target`, `delay` each way.
pub(crate) async fn tcp(target: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else { return };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                // The client's first bytes also wait out the handshake the relay answered.
                tokio::spawn(pump(client_read, server_write, delay, 2 * delay));
                tokio::spawn(pump(server_read, client_write, delay, Duration::ZERO));
            });
        }
    });
    local
}

/// Reads chunks from `from` and writes each to `to` `delay` after it was read (the first
/// `first_extra` later still).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    first_extra: Duration,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut extra = first_extra;
    while let Ok(n) = from.read(&mut buf).await {
        let due = Instant::now() + delay + std::mem::take(&mut extra);
        if n == 0 || tx.send((due, buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Forwards UDP datagrams sent to the returned address to `target`, `delay` each way: each
/// client address gets its own upstream socket, so the target sees one address per client.
pub(crate) async fn udp(target: SocketAddr, delay: Duration) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let local = front.local_addr().unwrap();
    tokio::spawn(async move {
        let mut upstreams: HashMap<SocketAddr, mpsc::Sender<(Instant, Vec<u8>)>> = HashMap::new();
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, client)) = front.recv_from(&mut buf).await {
            let tx =
                upstreams.entry(client).or_insert_with(|| upstream(&front, client, target, delay));
            let _ = tx.try_send((Instant::now() + delay, buf[..n].to_vec()));
        }
    });
    local
}

/// The upstream socket for one client: datagrams queued on the returned sender go to `target`
/// when due; what `target` answers goes back to `client` through `front`, `delay` later.
fn upstream(
    front: &Arc<UdpSocket>,
    client: SocketAddr,
    target: SocketAddr,
    delay: Duration,
) -> mpsc::Sender<(Instant, Vec<u8>)> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let front = Arc::clone(front);
    tokio::spawn(async move {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        socket.connect(target).await.unwrap();
        let back = Arc::clone(&socket);
        let (back_tx, mut back_rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
        tokio::spawn(async move {
            while let Some((due, datagram)) = back_rx.recv().await {
                tokio::time::sleep_until(due).await;
                let _ = front.send_to(&datagram, client).await;
            }
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = back.recv(&mut buf).await {
                if back_tx.try_send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        });
        while let Some((due, datagram)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let _ = socket.send(&datagram).await;
        }
    });
    tx
}
