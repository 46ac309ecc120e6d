//! A connection whose remote vanishes without a word: reads fail with `ConnectionReset` once
//! QUIC's idle timeout declares it lost, and the connection reports itself closed.

mod common;

use std::io::ErrorKind;
use std::time::Duration;

use common::{Node, addr_of};
use sinew_quic::QuicConfig;
use sinew_transport::Transport as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[test]
fn a_vanished_remote_is_a_connection_reset_after_the_idle_timeout() {
    let config =
        QuicConfig { max_idle_timeout: Duration::from_millis(500), ..QuicConfig::default() };
    // The remote runs on a runtime of its own, shut down without closing anything: its
    // endpoint stops answering, as if the host had gone.
    let remote_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let local_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let b = remote_rt.block_on(async { Node::new(config.clone()) });
    let mut listener = remote_rt.block_on(b.listen());
    let addr = addr_of(listener.as_ref(), &b);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    remote_rt.spawn(async move {
        let conn = listener.accept().await.unwrap().upgrade().await.unwrap();
        let mut s = conn.muxer.accept_stream().await.unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        ready_tx.send(()).unwrap();
        // Holds everything until the runtime is shut down.
        std::future::pending::<()>().await;
        drop((conn, s, listener));
    });
    local_rt.block_on(async move {
        let a = Node::new(config);
        let conn =
            tokio::time::timeout(common::STEP, a.transport.dial(addr)).await.unwrap().unwrap();
        let mut s = conn.muxer.open_stream().await.unwrap();
        s.write_all(b"x").await.unwrap();
        tokio::task::spawn_blocking(move || ready_rx.recv_timeout(common::STEP).unwrap())
            .await
            .unwrap();
        remote_rt.shutdown_background();

        let mut buf = [0u8; 8];
        let err = tokio::time::timeout(common::STEP, s.read(&mut buf)).await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<quinn::ReadError>());
        assert!(
            matches!(
                inner,
                Some(quinn::ReadError::ConnectionLost(quinn::ConnectionError::TimedOut))
            ),
            "{inner:?}"
        );
        assert!(conn.muxer.is_closed());
        assert!(
            tokio::time::timeout(common::STEP, conn.muxer.accept_stream()).await.unwrap().is_none()
        );
    });
}
