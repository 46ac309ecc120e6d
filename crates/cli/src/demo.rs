//! `sinew demo`: four nodes in one process, on loopback: alice listens on TCP, QUIC and
//! WebSocket and is reached over each.

use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use sinew::{Bytes, Event, Keypair, Node, NodeConfig, Opcode};

use crate::run::BoxError;

const CHAT: u32 = 1000;
const BLOB: u32 = 1001;
const ECHO: u32 = 1002;

async fn start(name: &str, schemes: &[&str]) -> Result<Node, BoxError> {
    let config = NodeConfig {
        perf_server: true,
        role: name.to_owned(),
        request_timeout: Duration::from_secs(120),
        ..NodeConfig::default()
    };
    let mut builder = Node::builder(Keypair::generate()).with_config(config);
    for scheme in schemes {
        builder = builder.listen(format!("{scheme}://127.0.0.1:0").parse()?);
    }
    let node = builder.start().await?;
    let listening: Vec<String> = node.listen_addrs().iter().map(ToString::to_string).collect();
    let listening =
        if listening.is_empty() { "nothing (dials only)".to_owned() } else { listening.join(", ") };
    println!("  {name:<6} {}  listening on {listening}", node.peer_id());
    Ok(node)
}

/// `node`'s listen address on `scheme`, naming its peer id.
fn addr_on(node: &Node, scheme: &str) -> Result<sinew::Addr, BoxError> {
    let addr = node.listen_addrs().into_iter().find(|a| a.scheme().as_str() == scheme);
    Ok(addr.ok_or_else(|| format!("no {scheme} listener"))?.with_peer(node.peer_id()))
}

fn hex(data: &[u8]) -> String {
    data.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

pub(crate) async fn run(large_mib: usize, throughput_mib: u64) -> Result<(), BoxError> {
    let t0 = Instant::now();
    println!("sinew demo: four nodes on loopback; alice listens on TCP, QUIC and WebSocket\n");
    println!("1. start");
    let alice = start("alice", &["tcp", "quic", "ws"]).await?;
    let (bob, carol, dave) =
        (start("bob", &["tcp"]).await?, start("carol", &["tcp"]).await?, start("dave", &[]).await?);

    println!(
        "\n2. connect (bob keeps alice as a persistent peer over QUIC, carol over WebSocket, \
         dave dials her once over TCP with Noise XX; bob dials carol over TCP)"
    );
    let mut alice_events = alice.events();
    bob.add_peer(addr_on(&alice, "quic")?).await?;
    carol.add_peer(addr_on(&alice, "ws")?).await?;
    dave.dial(addr_on(&alice, "tcp")?).await?;
    let carol_id = bob.dial(carol.listen_addrs()[0].clone()).await?;
    let mut connected = 0;
    while connected < 3 {
        match tokio::time::timeout(Duration::from_secs(10), alice_events.next()).await? {
            Some(Event::PeerConnected { peer, direction, addr }) => {
                connected += 1;
                println!(
                    "  alice <- {} ({direction}) over {}",
                    peer.short(),
                    addr.scheme().as_str()
                );
            }
            Some(_) => {}
            None => return Err("alice stopped".into()),
        }
    }

    println!("\n3. ping");
    for (from, name, to) in [
        (&bob, "bob", alice.peer_id()),
        (&carol, "carol", alice.peer_id()),
        (&dave, "dave", alice.peer_id()),
        (&bob, "bob", carol_id),
    ] {
        let rtt = from.ping(to).await?;
        println!("  {name} -> {}: {:.3} ms", to.short(), rtt.as_secs_f64() * 1e3);
    }

    println!("\n4. messages");
    let mut alice_chat = alice.inbox(Opcode::app(CHAT)?).await?;
    let mut carol_chat = carol.inbox(Opcode::app(CHAT)?).await?;
    let mut bob_chat = bob.inbox(Opcode::app(CHAT)?).await?;
    let mut echo = alice.inbox(Opcode::app(ECHO)?).await?;
    let echo_node = alice.clone();
    tokio::spawn(async move {
        while let Some(msg) = echo.next().await {
            let _ = echo_node.reply(&msg, msg.payload.clone()).await;
        }
    });
    bob.send_acked(alice.peer_id(), Opcode::app(CHAT)?, Bytes::from_static(b"hello alice")).await?;
    let msg = alice_chat.next().await.ok_or("no message")?;
    println!(
        "  alice got {:?} from {} (acked)",
        String::from_utf8_lossy(&msg.payload),
        msg.peer.short()
    );
    let answer =
        carol.request(alice.peer_id(), Opcode::app(ECHO)?, Bytes::from_static(b"echo?")).await?;
    println!("  carol asked alice to echo: {:?}", String::from_utf8_lossy(&answer));
    let report = alice.broadcast(Opcode::app(CHAT)?, Bytes::from_static(b"hi everyone"));
    let (b, c) =
        (bob_chat.next().await.ok_or("no message")?, carol_chat.next().await.ok_or("no message")?);
    println!(
        "  alice broadcast to {} peers: bob got {:?}, carol got {:?}",
        report.sent.len(),
        String::from_utf8_lossy(&b.payload),
        String::from_utf8_lossy(&c.payload)
    );
    match bob.request(alice.peer_id(), Opcode::app(4242)?, Bytes::new()).await {
        Err(error) => println!("  a request for an opcode nobody handles: {error}"),
        Ok(_) => println!("  unexpected answer for an unhandled opcode"),
    }

    println!("\n5. a {large_mib} MiB message, bob -> carol, on a stream of its own");
    let mut blobs = carol.inbox(Opcode::app(BLOB)?).await?;
    let payload: Vec<u8> = (0..large_mib * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let digest = Sha256::digest(&payload);
    let start = Instant::now();
    bob.send(carol_id, Opcode::app(BLOB)?, Bytes::from(payload)).await?;
    let got = blobs.next().await.ok_or("no blob")?;
    let elapsed = start.elapsed();
    let intact = Sha256::digest(&got.payload) == digest;
    println!(
        "  carol received {} bytes in {:.0} ms ({:.0} MB/s), sha256 {}... {}",
        got.payload.len(),
        elapsed.as_secs_f64() * 1e3,
        got.payload.len() as f64 / elapsed.as_secs_f64() / 1e6,
        hex(&digest),
        if intact { "intact" } else { "MISMATCH" }
    );
    if !intact {
        return Err("the large message arrived corrupted".into());
    }

    println!("\n6. throughput: {throughput_mib} MiB on one stream, bob -> alice");
    let perf = bob.perf(alice.peer_id(), throughput_mib * 1024 * 1024, 0, 1 << 20).await?;
    println!("  {:.0} MB/s", perf.upload_mbps());

    println!("\n7. alice's network state");
    let state = alice.network_state().await?;
    for p in &state.peers {
        println!(
            "  {} {:<6} {:<4} {:<8} rtt {:>8} in {:>12} B out {:>10} B msgs {}/{} age {:.1}s",
            p.peer.short(),
            p.role,
            p.addr.scheme().as_str(),
            p.direction.to_string(),
            p.rtt.map_or("-".into(), |r| format!("{:.3}ms", r.as_secs_f64() * 1e3)),
            p.bytes_in,
            p.bytes_out,
            p.msgs_in,
            p.msgs_out,
            p.age.as_secs_f64()
        );
    }

    println!("\n8. shutdown (each node tells its peers why it leaves)");
    let mut bob_events = bob.events();
    carol.shutdown().await;
    if let Some(reason) = bob_events
        .wait_for(Duration::from_secs(5), |e| match e {
            Event::PeerDisconnected { peer, reason } if *peer == carol_id => Some(reason.clone()),
            _ => None,
        })
        .await
    {
        println!("  bob saw carol leave: {reason}");
    }
    bob.shutdown().await;
    dave.shutdown().await;
    alice.shutdown().await;
    println!(
        "\ndone in {:.1} s: connect, ping, messages, a {large_mib} MiB message intact, {:.0} MB/s on one stream.",
        t0.elapsed().as_secs_f64(),
        perf.upload_mbps()
    );
    Ok(())
}
