//! Memory bounded by bytes that arrived, never by bytes claimed, measured on a real `sinew node`
//! process (its VmHWM, from /proc) with its limits raised:
//! - 64 connections x 63 streams, each sending a 9-byte header that claims 1 MiB;
//! - 1,000 connections each holding 1 byte of a Noise message;
//! - two peers trickling 512 MiB claims do not hold up a third peer's 64 MiB message;
//! - three fast 512 MiB senders against the default budget (two largest messages): each completes or is reset, typed.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sinew::layers::codec::messages::{CONTROL_VERSION, ControlHello, MessageBody as _};
use sinew::layers::codec::{Frame, Opcode};
use sinew::layers::secure::NoiseIdentity;
use sinew::layers::tcp::{TcpConfig, TcpTransport};
use sinew::layers::transport::{Connection, Stream, Transport as _};
use sinew::{Addr, Keypair, Node, NodeConfig, SendError};
use support::NodeProcess;
use tokio::io::AsyncWriteExt as _;

/// The node's peak resident memory so far.
fn vm_hwm(pid: i32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

/// Waits until the node's peak memory has stopped growing: unchanged over 20 samples 25 ms
/// apart (or 10 s in all). Returns it.
async fn settled_hwm(pid: i32) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut last, mut same) = (vm_hwm(pid), 0);
    while same < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = vm_hwm(pid);
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

fn raised_limits(n: usize) -> Vec<String> {
    let n = n.to_string();
    ["--listen", "tcp://127.0.0.1:0", "--max-per-ip", &n, "--max-inbound", &n, "--max-total", &n]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

async fn start(args: &[String]) -> NodeProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    NodeProcess::start(&args).await
}

/// A hand-driven connection with its control stream open.
async fn raw_connection(target: &Addr) -> (Connection, Stream) {
    let key = Keypair::generate();
    let transport = TcpTransport::new(Arc::new(NoiseIdentity::new(&key, 1)), TcpConfig::default());
    let connection = transport.dial(target.clone()).await.expect("raw dial");
    let mut control = connection.muxer.open_stream().await.unwrap();
    let hello = ControlHello { version: CONTROL_VERSION };
    control
        .write_all(&Frame::message(Opcode::CONTROL_STREAM, hello.encode()).to_bytes())
        .await
        .unwrap();
    control.flush().await.unwrap();
    (connection, control)
}

/// The 9 bytes of a stream's first frame claiming `payload` bytes: a large message's, or a
/// plain stream header's.
fn claiming_header(payload: usize, large: bool) -> Vec<u8> {
    let opcode = if large { Opcode::app(1000).unwrap() } else { Opcode::OPEN_STREAM };
    let mut frame = Frame::message(opcode, Bytes::new());
    frame.large = large;
    let mut header = frame.encode_header().as_bytes().to_vec();
    header[0..4].copy_from_slice(&u32::try_from(payload + 5).unwrap().to_le_bytes());
    header
}

#[tokio::test]
async fn stream_headers_claiming_a_mebibyte_cost_what_arrived() {
    const CONNECTIONS: usize = 64;
    const STREAMS: usize = 63;
    let node = start(&raised_limits(CONNECTIONS + 8)).await;
    let target: Addr = node.addr().parse().unwrap();
    // Warm up: one connection that does real work, then let go.
    drop(raw_connection(&target).await);
    let before = settled_hwm(node.pid()).await;
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let (connection, control) = raw_connection(&target).await;
        let mut streams = Vec::new();
        for i in 0..STREAMS {
            let mut stream = connection.muxer.open_stream().await.unwrap();
            // Every other one a large message's header; the rest plain stream headers.
            stream.write_all(&claiming_header(1 << 20, i % 2 == 0)).await.unwrap();
            stream.flush().await.unwrap();
            streams.push(stream);
        }
        held.push((connection, control, streams));
    }
    let after = settled_hwm(node.pid()).await;
    let elapsed = started.elapsed();
    let grew = after.saturating_sub(before);
    let streams = CONNECTIONS * STREAMS;
    let bound = 2 * 1024 * streams + (16 << 20);
    eprintln!(
        "{streams} streams claiming 1 MiB each: VmHWM {before} -> {after} (+{grew} bytes, {} per \
         stream; bound {bound}) in {elapsed:?}",
        grew / streams
    );
    assert!(elapsed < Duration::from_secs(10), "measured before the stall timeout");
    assert!(grew < bound, "grew {grew} bytes, bound {bound}");
}

#[tokio::test]
async fn a_thousand_partial_noise_messages_cost_what_arrived() {
    const CONNECTIONS: usize = 1000;
    let node = start(&raised_limits(CONNECTIONS + 8)).await;
    let target: Addr = node.addr().parse().unwrap();
    let socket = target.socket_addr().unwrap();
    let peer = target.peer();
    let handshake = |key: Keypair| async move {
        let tcp = tokio::net::TcpStream::connect(socket).await.unwrap();
        let identity = NoiseIdentity::new(&key, 1);
        let suite = sinew::NoiseSuite::AesGcm;
        let timeout = Duration::from_secs(10);
        sinew::layers::secure::upgrade_outbound(tcp, &identity, suite, peer, timeout)
            .await
            .unwrap()
            .0
    };
    drop(handshake(Keypair::generate()).await);
    let before = settled_hwm(node.pid()).await;
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut noise = handshake(Keypair::generate()).await;
        // One byte of the next Noise message (its length prefix), under the cipher.
        noise.get_mut().write_all(&[0x01]).await.unwrap();
        held.push(noise);
    }
    let after = settled_hwm(node.pid()).await;
    let grew = after.saturating_sub(before);
    let bound = 16 << 20;
    eprintln!(
        "{CONNECTIONS} connections holding 1 byte of a Noise message: VmHWM {before} -> {after} \
         (+{grew} bytes, {} per connection; bound {bound}) in {:?}",
        grew / CONNECTIONS,
        started.elapsed()
    );
    assert!(grew < bound, "grew {grew} bytes");
}

#[tokio::test]
async fn trickled_claims_do_not_hold_up_other_large_messages() {
    let mut node = start(&raised_limits(16)).await;
    let target: Addr = node.addr().parse().unwrap();
    // Two peers claim 512 MiB each and trickle a byte every two seconds.
    let mut tricklers = Vec::new();
    for _ in 0..2 {
        let (connection, control) = raw_connection(&target).await;
        let mut stream = connection.muxer.open_stream().await.unwrap();
        stream.write_all(&claiming_header(512 << 20, true)).await.unwrap();
        stream.flush().await.unwrap();
        tricklers.push(tokio::spawn(async move {
            let _keep = (connection, control);
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if stream.write_all(&[0]).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
        }));
    }
    // A third peer's 64 MiB message arrives within 2 s.
    let sender = Node::builder(Keypair::generate()).start().await.unwrap();
    let peer = sender.dial(target.clone()).await.unwrap();
    let started = Instant::now();
    sender
        .send_acked(peer, Opcode::app(1000).unwrap(), Bytes::from(vec![3u8; 64 << 20]))
        .await
        .expect("the 64 MiB message is delivered and acknowledged");
    let took = started.elapsed();
    eprintln!("64 MiB delivered in {took:?} beside two trickled 512 MiB claims");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The tricklers fall below the minimum rate once the grace period is over: both reset.
    for _ in 0..2 {
        node.wait_for_line(&["message dropped", "TooSlow"]).await;
    }
    for trickler in tricklers {
        trickler.abort();
    }
}

#[tokio::test]
#[ignore = "long: 1.5 GiB through a budget of two largest messages; CI runs it in release mode"]
async fn three_fast_senders_against_the_budget_complete_or_are_reset() {
    let mut node = start(&raised_limits(16)).await;
    let target: Addr = node.addr().parse().unwrap();
    let mut sends = Vec::new();
    for i in 0..3u8 {
        let target = target.clone();
        sends.push(tokio::spawn(async move {
            let config = NodeConfig::default();
            let sender =
                Node::builder(Keypair::generate()).with_config(config).start().await.unwrap();
            let peer = sender.dial(target).await.unwrap();
            let payload = Bytes::from(vec![i; 512 << 20]);
            let started = Instant::now();
            let result = sender.send(peer, Opcode::app(1000).unwrap(), payload).await;
            (result, started.elapsed(), sender)
        }));
    }
    let mut outcomes = Vec::new();
    for send in sends {
        let (result, took, _sender) = tokio::time::timeout(Duration::from_secs(300), send)
            .await
            .expect("no sender stalls")
            .unwrap();
        eprintln!("512 MiB send: {result:?} after {took:?}");
        assert!(matches!(result, Ok(()) | Err(SendError::Reset)), "{result:?}");
        outcomes.push(result);
    }
    let reset = outcomes.iter().filter(|r| r.is_err()).count();
    assert!(reset < 3, "at least one completes");
    // The node logs each outcome, in whatever order they happened.
    let delivered = 3 - reset;
    let (mut dropped_lines, mut delivered_lines) = (0, 0);
    while dropped_lines < reset || delivered_lines < delivered {
        let line = node.wait_for_line(&["message"]).await;
        eprintln!("node: {line}");
        if line.contains("message dropped") && line.contains("BudgetExhausted") {
            dropped_lines += 1;
        } else if line.contains("bytes=536870912") {
            delivered_lines += 1;
        }
    }
    assert_eq!((dropped_lines, delivered_lines), (reset, delivered));
}
