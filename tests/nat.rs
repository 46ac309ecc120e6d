//! Port mapping against a real gateway: miniupnpd between network namespaces
//! (`sinew-testbed`). A sinew node behind the NAT maps its listen port, advertises the external
//! address, and a node on the WAN side reaches it there. Needs root and miniupnpd: skips on a
//! bare machine, fails under CI=true.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use sinew::layers::nat::{MappingMethod, NatEvent, PortMapperConfig};
use sinew::{Addr, Event, Keypair, Node, NodeConfig};
use sinew_testbed::{Gateway, GatewayOptions, Namespace};
use sinew_tests::WAIT;

fn nat_config(method: MappingMethod) -> NodeConfig {
    let nat = PortMapperConfig {
        preference: vec![method],
        lease: Duration::from_secs(60),
        ..PortMapperConfig::default()
    };
    NodeConfig { nat: Some(nat), ..NodeConfig::default() }
}

fn is_on(addr: &Addr, ip: Ipv4Addr) -> bool {
    addr.socket_addr().is_some_and(|s| s.ip() == IpAddr::V4(ip))
}

/// A node behind the NAT maps its port with `method`; a node on the WAN dials the advertised
/// external address, pings, and learns that address from identify; the gateway holds exactly
/// one mapping meanwhile and none after the inside node shuts down.
fn reach_through_the_nat(method: MappingMethod) {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    let wan_ip = gateway.wan_address();
    let (found_tx, found_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let inside = gateway.spawn_in(Namespace::Client, move || async move {
        let node = Node::builder(Keypair::generate())
            .with_config(nat_config(method))
            .listen("tcp://0.0.0.0:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let mut events = node.events();
        let external = events
            .wait_for(WAIT, |e| match e {
                Event::AddressesChanged { addrs } => {
                    addrs.iter().find(|a| is_on(a, wan_ip)).cloned()
                }
                _ => None,
            })
            .await
            .expect("the external address is advertised");
        let port = node.listen_addrs()[0].port();
        found_tx.send((node.peer_id(), external.clone(), port)).unwrap();
        let state =
            node.network_state().await.unwrap().nat.expect("network_state shows the mapping");
        let _ = done_rx.await;
        node.shutdown().await; // deletes the mapping at the gateway
        (state, external)
    });
    let (peer, external, internal_port) =
        found_rx.recv_timeout(WAIT).expect("the inside node found its address");
    let mappings = gateway.mappings().unwrap();
    assert_eq!(mappings.len(), 1, "exactly one mapping: {mappings:?}\n{}", gateway.log());
    assert_eq!(mappings[0].internal.port(), internal_port);
    assert_eq!(mappings[0].external_port, external.port());

    let target = external.clone().with_peer(peer);
    let outside = gateway.spawn_in(Namespace::Wan, move || async move {
        let node = Node::builder(Keypair::generate()).start().await.unwrap();
        let mut events = node.events();
        let id = node.dial(target).await.expect("the node behind the NAT is reachable");
        let rtt = node.ping(id).await.expect("and answers");
        let advertised = events
            .wait_for(WAIT, |e| match e {
                Event::PeerIdentified { listen_addrs, .. } => Some(listen_addrs.clone()),
                _ => None,
            })
            .await
            .expect("identify arrives");
        node.shutdown().await;
        (id, rtt, advertised)
    });
    let (id, rtt, advertised) = outside.join();
    let _ = done_tx.send(());
    let (state, external) = inside.join();
    assert_eq!(id, peer);
    assert!(advertised.contains(&external), "identify advertises {external}: {advertised:?}");
    assert_eq!(state.method, Some(method));
    assert_eq!(state.external_address, Some(wan_ip));
    eprintln!("{method:?}: reached {external} through the NAT, rtt {rtt:?}");
    let left = gateway.mappings().unwrap();
    assert!(left.is_empty(), "shutdown deleted the mapping: {left:?}");
}

#[test]
fn a_node_behind_the_nat_is_reached_at_its_pcp_mapping() {
    reach_through_the_nat(MappingMethod::Pcp);
}

#[test]
fn a_node_behind_the_nat_is_reached_at_its_natpmp_mapping() {
    reach_through_the_nat(MappingMethod::NatPmp);
}

#[test]
fn a_node_behind_the_nat_is_reached_at_its_upnp_mapping() {
    reach_through_the_nat(MappingMethod::Upnp);
}

/// Behind a gateway whose WAN address is private, the node reports a double NAT and does not
/// advertise that private address.
#[test]
fn a_double_nat_is_reported_and_not_advertised() {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::double_nat()) else { return };
    let private = gateway.wan_address();
    let (reported, advertised) = gateway.run_in(Namespace::Client, move || async move {
        let node = Node::builder(Keypair::generate())
            .with_config(NodeConfig {
                nat: Some(PortMapperConfig::default()),
                ..NodeConfig::default()
            })
            .listen("tcp://0.0.0.0:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let mut events = node.events();
        let reported = events
            .wait_for(WAIT, |e| match e {
                Event::Nat(event) => match &**event {
                    NatEvent::DoubleNat { gateway_external } => Some(*gateway_external),
                    _ => None,
                },
                _ => None,
            })
            .await;
        let advertised = node.advertised_addrs();
        node.shutdown().await;
        (reported, advertised)
    });
    assert!(reported.is_some(), "a double NAT is reported\n{}", gateway.log());
    assert!(
        !advertised.iter().any(|a| is_on(a, private)),
        "{private} is not advertised: {advertised:?}"
    );
}

/// A QUIC listener behind the NAT gets a UDP mapping beside its TCP one, advertises a quic://
/// external address, and a node on the WAN reaches it there over QUIC.
#[test]
fn a_quic_listener_behind_the_nat_is_reached_at_its_udp_mapping() {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    let wan_ip = gateway.wan_address();
    let (found_tx, found_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let inside = gateway.spawn_in(Namespace::Client, move || async move {
        let node = Node::builder(Keypair::generate())
            .with_config(nat_config(MappingMethod::Pcp))
            .listen("quic://0.0.0.0:0".parse().unwrap())
            .listen("tcp://0.0.0.0:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let mut events = node.events();
        let external = events
            .wait_for(WAIT, |e| match e {
                Event::AddressesChanged { addrs } => addrs
                    .iter()
                    .find(|a| is_on(a, wan_ip) && a.scheme() == sinew::layers::types::Scheme::Quic)
                    .cloned(),
                _ => None,
            })
            .await
            .expect("the external quic address is advertised");
        found_tx.send((node.peer_id(), external, node.listen_addrs()[0].port())).unwrap();
        let _ = done_rx.await;
        node.shutdown().await;
    });
    let (peer, external, quic_port) =
        found_rx.recv_timeout(WAIT).expect("the inside node found its address");
    let mappings = gateway.mappings().unwrap();
    let udp: Vec<_> =
        mappings.iter().filter(|m| m.protocol == sinew_testbed::Protocol::Udp).collect();
    assert_eq!(udp.len(), 1, "one UDP mapping: {mappings:?}\n{}", gateway.log());
    assert_eq!((udp[0].internal.port(), udp[0].external_port), (quic_port, external.port()));

    let target = external.clone().with_peer(peer);
    let outside = gateway.spawn_in(Namespace::Wan, move || async move {
        let node = Node::builder(Keypair::generate()).start().await.unwrap();
        let mut events = node.events();
        let id = node.dial(target).await.expect("reachable over QUIC through the NAT");
        let rtt = node.ping(id).await.expect("and answers");
        let scheme = events
            .wait_for(WAIT, |e| match e {
                Event::PeerConnected { addr, .. } => Some(addr.scheme()),
                _ => None,
            })
            .await;
        node.shutdown().await;
        (id, rtt, scheme)
    });
    let (id, rtt, scheme) = outside.join();
    let _ = done_tx.send(());
    inside.join();
    assert_eq!(id, peer);
    assert_eq!(scheme, Some(sinew::layers::types::Scheme::Quic));
    eprintln!("reached {external} over QUIC through the NAT, rtt {rtt:?}");
}
