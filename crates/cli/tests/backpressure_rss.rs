//! A peer that never reads: `send` waits, `try_send` returns `Full`, and after 1 GiB of
//! attempts the sender's memory grew by less than twice its configured queue budget.
//!
//! Its own test binary (one test), so that the process's RSS is this test's alone. The peer is
//! a real `sinew node` process, frozen with SIGSTOP after the connection is up: the kernel still
//! holds the connection, but nothing reads it.

mod support;

use std::time::Duration;

use bytes::Bytes;
use sinew::{Keypair, Node, NodeConfig, Opcode, SendError};
use support::NodeProcess;

const BUDGET: usize = 8 << 20;
const ATTEMPTS_BYTES: usize = 1 << 30;
const MESSAGE: usize = 64 << 10;

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

#[tokio::test]
async fn a_peer_that_never_reads_bounds_the_senders_memory() {
    let receiver = NodeProcess::start(&["--listen", "tcp://127.0.0.1:0"]).await;
    let config = NodeConfig { peer_queue_bytes: BUDGET, ..NodeConfig::default() };
    let sender = Node::builder(Keypair::generate()).with_config(config).start().await.unwrap();
    let peer = sender.dial(receiver.addr().parse().unwrap()).await.unwrap();
    sender.ping(peer).await.unwrap();
    let op = Opcode::app(1000).unwrap();
    let payload = Bytes::from(vec![0xab_u8; MESSAGE]);
    // Warm up allocator pools with a little traffic the receiver still reads.
    for _ in 0..64 {
        sender.send(peer, op, payload.clone()).await.unwrap();
    }
    sender.ping(peer).await.unwrap();

    #[allow(unsafe_code)]
    // SAFETY: kill(2) with a child pid we own and a valid signal.
    let stopped = unsafe { libc::kill(receiver.pid(), libc::SIGSTOP) };
    assert_eq!(stopped, 0);
    let before = rss_bytes();

    let (mut queued, mut full) = (0usize, 0usize);
    let mut attempted = 0usize;
    while attempted < ATTEMPTS_BYTES {
        // A fresh buffer per message, as an application would make: what is queued costs real
        // memory, what is refused is freed.
        let fresh = Bytes::from(vec![(attempted >> 16) as u8; MESSAGE]);
        match sender.try_send(peer, op, fresh) {
            Ok(()) => queued += 1,
            Err(SendError::Full) => full += 1,
            Err(other) => panic!("unexpected {other}"),
        }
        attempted += MESSAGE;
        if attempted.is_multiple_of(64 << 20) {
            // Let the connection task run: it drains into the socket until the kernel is full.
            tokio::task::yield_now().await;
        }
    }
    let waited =
        tokio::time::timeout(Duration::from_millis(500), sender.send(peer, op, payload.clone()))
            .await;
    assert!(waited.is_err(), "send waits while the queue is full");
    let after = rss_bytes();
    let grew = after.saturating_sub(before);
    eprintln!(
        "queued {queued}, full {full}, RSS {before} -> {after} (+{grew} bytes, budget {BUDGET})"
    );
    assert!(full > 0, "try_send reported Full");
    assert!(
        grew < 2 * BUDGET,
        "RSS grew by {grew} bytes, more than twice the {BUDGET}-byte budget"
    );

    #[allow(unsafe_code)]
    // SAFETY: as above.
    unsafe {
        libc::kill(receiver.pid(), libc::SIGCONT);
    }
}
