//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::future::{Future, poll_fn};
use std::task::Poll;
use std::time::Duration;

use sinew_mux::{YamuxConfig, YamuxStats, yamux_with_stats};
use sinew_transport::{Direction, MuxedConnection};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::TokioAsyncReadCompatExt as _;

/// Bound on every wait for an event in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A connected pair of loopback TCP sockets.
pub async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (dialed.unwrap(), accepted.unwrap().0)
}

/// Two sinew yamux ends over loopback TCP: (dialer, listener), each with its stats.
pub async fn pair(
    config: &YamuxConfig,
) -> ((MuxedConnection, YamuxStats), (MuxedConnection, YamuxStats)) {
    let (a, b) = tcp_pair().await;
    (
        yamux_with_stats(a, Direction::Outbound, config),
        yamux_with_stats(b, Direction::Inbound, config),
    )
}

/// Deterministic test data: `len` bytes depending on `seed` and the offset.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A raw yamux connection driven by a test task: plays a remote that does what sinew's driver
/// would never do (open streams without limits).
pub struct RawYamux {
    opens: mpsc::Sender<oneshot::Sender<yamux::Stream>>,
    inbound: mpsc::Receiver<yamux::Stream>,
}

impl RawYamux {
    /// Spawns the task that polls the connection until it ends.
    pub fn spawn<S>(io: S, mode: yamux::Mode) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let mut conn = yamux::Connection::new(io.compat(), yamux::Config::default(), mode);
        let (opens_tx, mut opens) = mpsc::channel::<oneshot::Sender<yamux::Stream>>(16);
        let (inbound_tx, inbound) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut pending: Option<oneshot::Sender<yamux::Stream>> = None;
            poll_fn(|cx| {
                loop {
                    match conn.poll_next_inbound(cx) {
                        Poll::Ready(Some(Ok(stream))) => {
                            let _ = inbound_tx.try_send(stream);
                            continue;
                        }
                        Poll::Ready(_) => return Poll::Ready(()),
                        Poll::Pending => {}
                    }
                    if pending.is_none() {
                        match opens.poll_recv(cx) {
                            Poll::Ready(Some(reply)) => pending = Some(reply),
                            Poll::Ready(None) => return Poll::Ready(()),
                            Poll::Pending => {}
                        }
                    }
                    if let Some(reply) = pending.take() {
                        match conn.poll_new_outbound(cx) {
                            Poll::Ready(Ok(stream)) => {
                                let _ = reply.send(stream);
                                continue;
                            }
                            Poll::Ready(Err(_)) => return Poll::Ready(()),
                            Poll::Pending => pending = Some(reply),
                        }
                    }
                    return Poll::Pending;
                }
            })
            .await;
        });
        Self { opens: opens_tx, inbound }
    }

    /// Opens a stream (announced to the remote by its first write).
    pub async fn open(&self) -> yamux::Stream {
        let (reply, stream) = oneshot::channel();
        self.opens.send(reply).await.expect("raw yamux driver alive");
        stream.await.expect("raw yamux opened a stream")
    }

    /// The next stream the remote opened.
    pub async fn accept(&mut self) -> Option<yamux::Stream> {
        self.inbound.recv().await
    }
}
