//! Real `sinew` processes talking to each other.

mod support;

use support::{NodeProcess, run};

#[tokio::test]
async fn two_processes_ping_and_transfer_a_file() {
    let mut node = NodeProcess::start(&["--listen", "tcp://127.0.0.1:0"]).await;
    let pinged = run(&["ping", &node.addr(), "--count", "2"]).await;
    assert_eq!(pinged.matches("pong from").count(), 2, "{pinged}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.bin");
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i.wrapping_mul(7) % 256) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let sent =
        run(&["send", &node.addr(), "--opcode", "1000", "--file", file.to_str().unwrap()]).await;
    let report: serde_json::Value = serde_json::from_str(sent.trim()).unwrap();
    let sha = report["sha256"].as_str().unwrap().to_owned();
    assert_eq!(report["bytes"], 5_000_000);
    // The receiving node logged the same digest: the file arrived intact.
    node.wait_for_line(&["message", "bytes=5000000", &sha]).await;
}

#[tokio::test]
async fn killing_a_process_gives_peer_disconnected_on_the_other() {
    let mut a = NodeProcess::start(&["--listen", "tcp://127.0.0.1:0"]).await;
    let mut b = NodeProcess::start(&["--listen", "tcp://127.0.0.1:0", "--peer", &a.addr()]).await;
    a.wait_for_line(&["peer connected", &b.peer_id]).await;
    b.child.start_kill().unwrap();
    b.child.wait().await.unwrap();
    a.wait_for_line(&["peer disconnected", &b.peer_id]).await;
}

/// `sinew perf` against a default node, with more setups at once than the node admits from one
/// address (32 against a per-IP limit of 16): refused setups learn why and wait their turn,
/// every connection is closed once measured, and the run succeeds. The node does not serve
/// throughput tests, and perf says so instead of failing.
#[tokio::test]
async fn perf_runs_more_concurrent_setups_than_the_per_ip_limit() {
    let node = NodeProcess::start(&["--listen", "tcp://127.0.0.1:0"]).await;
    let out = run(&["perf", &node.addr(), "--setups", "200", "--concurrent", "32", "--json"]).await;
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["setups"], 200);
    assert!(report["setups_per_sec_concurrent"].as_f64().unwrap() > 0.0, "{report}");
    let skipped = report["throughput_skipped"].as_str().expect("throughput skipped");
    assert!(skipped.contains("--serve-perf"), "{skipped}");
    assert!(report.get("bytes").is_none(), "{report}");
}

/// With `--serve-perf`, perf measures throughput too.
#[tokio::test]
async fn perf_measures_throughput_against_a_node_that_serves_it() {
    let node = NodeProcess::start(&["--listen", "tcp://127.0.0.1:0", "--serve-perf"]).await;
    let out = run(&["perf", &node.addr(), "--setups", "5", "--bytes", "16777216", "--json"]).await;
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["bytes"], 16_777_216);
    assert!(report["upload_mbps"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report.get("throughput_skipped").is_none(), "{report}");
}

/// One `sinew node` listening on TCP, QUIC and WebSocket answers `sinew ping` on each, and a
/// second node dialling it with `--tls` connects (that `dial_tls` selects TLS 1.3 is checked
/// by the conformance suite, through `network_state`).
#[tokio::test]
async fn one_node_answers_on_every_transport() {
    let mut node = NodeProcess::start(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--listen",
        "quic://127.0.0.1:0",
        "--listen",
        "ws://127.0.0.1:0/sinew",
    ])
    .await;
    assert_eq!(node.listen.len(), 3, "{:?}", node.listen);
    for addr in node.listen.clone() {
        let scheme = addr.split("://").next().unwrap().to_owned();
        let with_id = addr.replacen("://", &format!("://{}@", node.peer_id), 1);
        let pinged = run(&["ping", &with_id, "--count", "1"]).await;
        assert_eq!(pinged.matches("pong from").count(), 1, "{scheme}: {pinged}");
    }
    let tls = NodeProcess::start(&["--tls", "--peer", &node.addr()]).await;
    node.wait_for_line(&["peer connected", &tls.peer_id]).await;
}
