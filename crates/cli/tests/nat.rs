//! `sinew node --nat` behind a real gateway (miniupnpd between network namespaces): it maps its
//! port, logs the external address, answers `sinew ping` from the WAN side, and deletes the
//! mapping when stopped. Needs root and miniupnpd: skips on a bare machine, fails under CI=true.

mod support;

use sinew_testbed::{Gateway, GatewayOptions, Namespace};
use support::{NodeProcess, run_in};

#[tokio::test]
async fn sinew_node_with_nat_is_reached_through_the_gateway() {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    let wan = gateway.wan_address().to_string();
    let client_ns = gateway.namespace_name(Namespace::Client).to_owned();
    let mut node =
        NodeProcess::start_in(&client_ns, &["--listen", "tcp://0.0.0.0:0", "--nat"]).await;
    let line = node.wait_for_line(&["addresses changed", &wan]).await;
    let external = line
        .split(|c: char| c == ',' || c.is_whitespace() || c == '=')
        .find(|word| word.starts_with(&format!("tcp://{wan}:")))
        .unwrap_or_else(|| panic!("no external address in {line}"))
        .to_owned();
    let target = external.replacen("tcp://", &format!("tcp://{}@", node.peer_id), 1);
    let wan_ns = gateway.namespace_name(Namespace::Wan).to_owned();
    let pinged = run_in(&wan_ns, &["ping", &target, "--count", "2"]).await;
    assert_eq!(pinged.matches("pong from").count(), 2, "{pinged}");
    assert_eq!(gateway.mappings().unwrap().len(), 1, "one mapping while it runs");

    #[allow(unsafe_code)]
    // SAFETY: kill(2) with the pid of a child we own and a valid signal.
    let signalled = unsafe { libc::kill(node.pid(), libc::SIGTERM) };
    assert_eq!(signalled, 0);
    node.child.wait().await.unwrap();
    assert!(gateway.mappings().unwrap().is_empty(), "stopping the node deleted its mapping");
}
