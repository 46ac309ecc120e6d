//! The port mapper against a real gateway: miniupnpd between network namespaces
//! (sinew-testbed). Needs root and the packages miniupnpd, miniupnpd-nftables, nftables,
//! miniupnpc and natpmpc; skips without them, and fails instead when `CI=true`.
//!
//! Each test builds its own namespaces, so they run in parallel. Nothing sleeps to wait for
//! something: tests wait for events (or poll the gateway's nftables rules) with a timeout.
//! Run with `--nocapture` to see the time each protocol takes to map.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use sinew_nat::{
    MapProtocol, MappingMethod, NatEvent, NatState, Phase, PortMapper, PortMapperConfig,
};
use sinew_testbed::{Gateway, GatewayOptions, LAN_CLIENT, Mapping, Namespace, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::Receiver;

const WAIT: Duration = Duration::from_secs(10);

fn config(preference: &[MappingMethod]) -> PortMapperConfig {
    PortMapperConfig {
        preference: preference.to_vec(),
        lease: Duration::from_secs(120),
        probe_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        ..PortMapperConfig::default()
    }
}

/// Waits for the first event `pick` accepts (returning what it returns), failing after
/// `timeout` with every event seen.
async fn wait_for<T>(
    events: &mut Receiver<NatEvent>,
    timeout: Duration,
    mut pick: impl FnMut(&NatEvent) -> Option<T>,
) -> T {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => {
                if let Some(found) = pick(&event) {
                    return found;
                }
                seen.push(event);
            }
            Ok(None) => panic!("the event channel closed; events: {seen:#?}"),
            Err(_) => panic!("no such event within {timeout:?}; events: {seen:#?}"),
        }
    }
}

fn mapped(
    protocol: MapProtocol,
    port: u16,
) -> impl FnMut(&NatEvent) -> Option<(u16, Option<SocketAddrV4>)> {
    move |event| match *event {
        NatEvent::Mapped { protocol: p, internal_port, external_port, external, .. }
            if p == protocol && internal_port == port =>
        {
            Some((external_port, external))
        }
        _ => None,
    }
}

/// Waits until every port in `ports` was mapped, in any order.
async fn wait_all_mapped(events: &mut Receiver<NatEvent>, ports: &[(MapProtocol, u16)]) {
    let mut left = ports.to_vec();
    while !left.is_empty() {
        let key = wait_for(events, WAIT, |e| match *e {
            NatEvent::Mapped { protocol, internal_port, .. } => Some((protocol, internal_port)),
            _ => None,
        })
        .await;
        left.retain(|k| *k != key);
    }
}

fn rule(protocol: Protocol, external_port: u16, internal_port: u16) -> Mapping {
    Mapping { protocol, external_port, internal: SocketAddrV4::new(LAN_CLIENT, internal_port) }
}

/// Maps a TCP and a UDP port with `method` only, checks the gateway's view (nftables,
/// `upnpc -l`, `natpmpc`), prints the time it took, shuts down and checks the rules are gone.
fn map_tcp_and_udp(method: MappingMethod) {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    let gw = gateway.clone();
    let (probe, total) = gateway.run_in(Namespace::Client, move || async move {
        let start = Instant::now();
        let (mapper, mut events) = PortMapper::start(
            config(&[method]),
            vec![(MapProtocol::Tcp, 4001), (MapProtocol::Udp, 4002)],
        );
        let found = wait_for(&mut events, WAIT, |e| match e {
            NatEvent::GatewayFound { gateway, method } => Some((*gateway, *method)),
            _ => None,
        })
        .await;
        let probe = start.elapsed();
        assert_eq!(found, (Ipv4Addr::new(10, 77, 0, 1), method));
        let mut ports = Vec::new();
        for _ in 0..2 {
            let (protocol, port, external) = wait_for(&mut events, WAIT, |e| match *e {
                NatEvent::Mapped { protocol, internal_port, external, method: m, .. } => {
                    assert_eq!(m, method);
                    Some((protocol, internal_port, external))
                }
                _ => None,
            })
            .await;
            let external = external.expect("a public external address is advertised");
            assert_eq!(*external.ip(), gw.wan_address());
            // Same external port as internal first: nothing else holds it here.
            assert_eq!(external.port(), port);
            ports.push((protocol, port));
        }
        let total = start.elapsed();
        ports.sort();
        assert_eq!(ports, [(MapProtocol::Tcp, 4001), (MapProtocol::Udp, 4002)]);

        let state = mapper.state();
        assert_eq!(state.method, Some(method));
        assert_eq!(state.phase, Phase::Active);
        assert_eq!(state.external_address, Some(gw.wan_address()));
        assert!(!state.double_nat);
        assert!(state.mappings.iter().all(|m| m.mapped.is_some()), "{state:?}");

        // The gateway's own view: exactly one rule per port (no second protocol's mapping).
        let expected = vec![rule(Protocol::Tcp, 4001, 4001), rule(Protocol::Udp, 4002, 4002)];
        assert_eq!(gw.mappings().unwrap(), expected, "nftables");
        let listed: Vec<Mapping> =
            gw.upnpc_list().unwrap().into_iter().map(|e| e.mapping).collect();
        assert_eq!(listed, expected, "upnpc -l");
        let (natpmpc_address, _) = gw.natpmpc_public_address().unwrap().expect("natpmpc answer");
        assert_eq!(natpmpc_address, gw.wan_address(), "natpmpc");

        mapper.shutdown().await;
        let removed = gw.mappings().unwrap();
        assert!(removed.is_empty(), "shutdown left {removed:?}");
        assert!(gw.upnpc_list().unwrap().is_empty());
        let mut removed_events = 0;
        while let Ok(event) = events.try_recv() {
            if let NatEvent::Removed { result, .. } = event {
                assert!(result.is_ok(), "{result:?}");
                removed_events += 1;
            }
        }
        assert_eq!(removed_events, 2);
        (probe, total)
    });
    println!(
        "time to map with {method}: gateway found after {} ms, TCP and UDP mapped after {} ms",
        probe.as_millis(),
        total.as_millis()
    );
}

#[test]
fn upnp_maps_tcp_and_udp() {
    map_tcp_and_udp(MappingMethod::Upnp);
}

#[test]
fn natpmp_maps_tcp_and_udp() {
    map_tcp_and_udp(MappingMethod::NatPmp);
}

#[test]
fn pcp_maps_tcp_and_udp() {
    map_tcp_and_udp(MappingMethod::Pcp);
}

/// With the default preference (PCP, NAT-PMP, UPnP) and all three answering, only PCP maps.
#[test]
fn default_preference_maps_with_pcp_only() {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    let gw = gateway.clone();
    gateway.run_in(Namespace::Client, move || async move {
        let (mapper, mut events) = PortMapper::start(
            PortMapperConfig {
                probe_timeout: Duration::from_secs(2),
                ..PortMapperConfig::default()
            },
            vec![(MapProtocol::Tcp, 4003)],
        );
        wait_for(&mut events, WAIT, mapped(MapProtocol::Tcp, 4003)).await;
        assert_eq!(mapper.state().method, Some(MappingMethod::Pcp));
        let listed = gw.upnpc_list().unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert!(listed[0].description.starts_with("PCP"), "{listed:?}");
        assert_eq!(gw.mappings().unwrap(), vec![rule(Protocol::Tcp, 4003, 4003)]);
        mapper.shutdown().await;
    });
}

/// A TCP listener behind the NAT answers a connection from the WAN side at the mapped address.
#[test]
fn mapped_tcp_port_is_reachable_from_the_wan() {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    let gw = gateway.clone();
    gateway.run_in(Namespace::Client, move || async move {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:4010").await.unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 5];
                if stream.read_exact(&mut buf).await.is_ok() && &buf == b"hello" {
                    let _ = stream.write_all(b"world").await;
                }
            }
        });
        let (mapper, mut events) =
            PortMapper::start(config(&[MappingMethod::Pcp]), vec![(MapProtocol::Tcp, 4010)]);
        let (_, external) = wait_for(&mut events, WAIT, mapped(MapProtocol::Tcp, 4010)).await;
        let external = external.expect("public address");
        let from_wan = gw.spawn_in(Namespace::Wan, move || async move {
            let mut stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(external))
                .await
                .expect("connect timed out")
                .expect("connect through the NAT");
            stream.write_all(b"hello").await.unwrap();
            let mut answer = [0u8; 5];
            tokio::time::timeout(WAIT, stream.read_exact(&mut answer)).await.unwrap().unwrap();
            (answer, stream.local_addr().unwrap())
        });
        let (answer, wan_side) = from_wan.await;
        assert_eq!(&answer, b"world");
        assert_eq!(wan_side.ip(), std::net::IpAddr::V4(gw.wan_peer()));
        mapper.shutdown().await;
    });
}

/// A 4 s lease (miniupnpd's min_lifetime is 1 s) is renewed at half its lifetime and is still
/// on the gateway after more than one lifetime.
fn short_lease_is_renewed(method: MappingMethod) {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    let gw = gateway.clone();
    gateway.run_in(Namespace::Client, move || async move {
        let config = PortMapperConfig { lease: Duration::from_secs(4), ..config(&[method]) };
        let (mapper, mut events) = PortMapper::start(config, vec![(MapProtocol::Udp, 4020)]);
        wait_for(&mut events, WAIT, mapped(MapProtocol::Udp, 4020)).await;
        let mapped_at = Instant::now();
        let state = mapper.state();
        let active = state.mappings[0].mapped.expect("mapped");
        assert_eq!(active.lifetime, Some(Duration::from_secs(4)));
        let renew_in = active.renew_at.saturating_duration_since(mapped_at);
        assert!(renew_in <= Duration::from_secs(2), "renews at half the lifetime: {renew_in:?}");
        for round in 1..=2 {
            let lifetime = wait_for(&mut events, Duration::from_secs(4), |e| match *e {
                NatEvent::Renewed { internal_port: 4020, lifetime, .. } => Some(lifetime),
                _ => None,
            })
            .await;
            assert_eq!(lifetime, Some(Duration::from_secs(4)), "renewal {round}");
        }
        let after = mapped_at.elapsed();
        assert!(after > Duration::from_secs(4), "more than one lifetime passed: {after:?}");
        assert_eq!(gw.mappings().unwrap(), vec![rule(Protocol::Udp, 4020, 4020)]);
        mapper.shutdown().await;
    });
}

#[test]
fn pcp_short_lease_is_renewed() {
    short_lease_is_renewed(MappingMethod::Pcp);
}

#[test]
fn natpmp_short_lease_is_renewed() {
    short_lease_is_renewed(MappingMethod::NatPmp);
}

#[test]
fn upnp_short_lease_is_renewed() {
    short_lease_is_renewed(MappingMethod::Upnp);
}

/// miniupnpd restarts and loses its rules (system_uptime=no: a new epoch). The mapper maps
/// again within twice the renewal interval: NAT-PMP and PCP notice the epoch going back
/// (GatewayRestarted); UPnP has no epoch, its next renewal re-adds.
fn restart_is_noticed(method: MappingMethod) {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    let gw = gateway.clone();
    gateway.run_in(Namespace::Client, move || async move {
        let lease = Duration::from_secs(4);
        let renewal_interval = lease / 2;
        let config = PortMapperConfig { lease, ..config(&[method]) };
        let (mapper, mut events) =
            PortMapper::start(config, vec![(MapProtocol::Tcp, 4030), (MapProtocol::Udp, 4031)]);
        wait_all_mapped(&mut events, &[(MapProtocol::Tcp, 4030), (MapProtocol::Udp, 4031)]).await;
        // Let the epoch grow past the RFC's two-second slack before the restart.
        for _ in 0..4 {
            wait_for(&mut events, Duration::from_secs(4), |e| {
                matches!(e, NatEvent::Renewed { .. }).then_some(())
            })
            .await;
        }
        let restarted_at = Instant::now();
        gw.restart_miniupnpd().unwrap();
        assert!(gw.mappings().unwrap().is_empty(), "the restart lost the rules");
        let bound = renewal_interval * 2;
        let deadline = restarted_at + bound;
        let mut restart_noticed = method == MappingMethod::Upnp;
        let mut remapped = Vec::new();
        while remapped.len() < 2 {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let event = wait_for(&mut events, remaining, |e| match *e {
                NatEvent::GatewayRestarted { method: m } => Some((true, None, m)),
                // NAT-PMP and PCP make the mappings again (Mapped); UPnP's renewal is an
                // AddPortMapping that re-creates them (Renewed: the port is the same).
                NatEvent::Mapped { internal_port, .. } if restart_noticed => {
                    Some((false, Some(internal_port), method))
                }
                NatEvent::Renewed { internal_port, .. } if method == MappingMethod::Upnp => {
                    Some((false, Some(internal_port), method))
                }
                _ => None,
            })
            .await;
            match event {
                (true, _, m) => {
                    assert_eq!(m, method);
                    restart_noticed = true;
                }
                (false, Some(port), _) => remapped.push(port),
                _ => unreachable!(),
            }
        }
        let took = restarted_at.elapsed();
        assert!(took <= bound, "mapped again after {took:?}, bound {bound:?}");
        remapped.sort();
        assert_eq!(remapped, [4030, 4031]);
        let expected = vec![rule(Protocol::Tcp, 4030, 4030), rule(Protocol::Udp, 4031, 4031)];
        assert_eq!(gw.mappings().unwrap(), expected, "the gateway has them again");
        println!("{method}: mapped again {} ms after the gateway restart", took.as_millis());
        mapper.shutdown().await;
        assert!(gw.mappings().unwrap().is_empty());
    });
}

#[test]
fn pcp_notices_gateway_restart() {
    restart_is_noticed(MappingMethod::Pcp);
}

#[test]
fn natpmp_notices_gateway_restart() {
    restart_is_noticed(MappingMethod::NatPmp);
}

#[test]
fn upnp_readds_after_gateway_restart() {
    restart_is_noticed(MappingMethod::Upnp);
}

/// Ports added and removed while running are mapped and deleted.
#[test]
fn add_and_remove_while_running() {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    let gw = gateway.clone();
    gateway.run_in(Namespace::Client, move || async move {
        let (mapper, mut events) = PortMapper::start(config(&[MappingMethod::NatPmp]), vec![]);
        wait_for(&mut events, WAIT, |e| matches!(e, NatEvent::GatewayFound { .. }).then_some(()))
            .await;
        mapper.add(MapProtocol::Tcp, 4040).await.unwrap();
        mapper.add(MapProtocol::Udp, 4041).await.unwrap();
        wait_all_mapped(&mut events, &[(MapProtocol::Tcp, 4040), (MapProtocol::Udp, 4041)]).await;
        mapper.remove(MapProtocol::Tcp, 4040).await.unwrap();
        let result = wait_for(&mut events, WAIT, |e| match e {
            NatEvent::Removed { internal_port: 4040, external_port, result, .. } => {
                Some((*external_port, result.is_ok()))
            }
            _ => None,
        })
        .await;
        assert_eq!(result, (Some(4040), true));
        assert_eq!(gw.mappings().unwrap(), vec![rule(Protocol::Udp, 4041, 4041)]);
        assert_eq!(mapper.state().mappings.len(), 1);
        mapper.shutdown().await;
        assert!(gw.mappings().unwrap().is_empty());
    });
}

/// Probes for the no-gateway tests; returns how long NoGateway took and the final state.
async fn expect_no_gateway(config: PortMapperConfig) -> (Duration, NatState) {
    let bound = config.probe_timeout;
    let start = Instant::now();
    let (mapper, mut events) = PortMapper::start(config, vec![(MapProtocol::Tcp, 4050)]);
    let probes = wait_for(&mut events, bound + Duration::from_secs(2), |e| match e {
        NatEvent::NoGateway { probes } => Some(probes.len()),
        NatEvent::GatewayFound { .. } | NatEvent::Mapped { .. } => panic!("unexpected {e:?}"),
        _ => None,
    })
    .await;
    let took = start.elapsed();
    assert!(probes > 0);
    // Within the probe bound (plus scheduling slack).
    assert!(
        took <= bound + Duration::from_millis(300),
        "NoGateway after {took:?}, bound {bound:?}"
    );
    let state = mapper.state();
    mapper.shutdown().await;
    (took, state)
}

/// miniupnpd is not running: ICMP port unreachable for NAT-PMP and PCP, no SSDP answer.
#[test]
fn no_gateway_when_miniupnpd_is_down() {
    let options = GatewayOptions { start_miniupnpd: false, ..GatewayOptions::default() };
    let Some(gateway) = Gateway::start_or_skip(options) else { return };
    let (took, state) = gateway.run_in(Namespace::Client, || async {
        let config = PortMapperConfig {
            probe_timeout: Duration::from_secs(1),
            ..PortMapperConfig::default()
        };
        expect_no_gateway(config).await
    });
    assert_eq!(state.phase, Phase::NoGateway);
    assert_eq!(state.external_address, None);
    println!("no gateway (miniupnpd down): NoGateway after {} ms", took.as_millis());
}

/// A configured gateway address where nothing answers at all (no host: no ICMP either).
#[test]
fn no_gateway_at_a_silent_address() {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    let (took, state) = gateway.run_in(Namespace::Client, || async {
        let config = PortMapperConfig {
            preference: vec![MappingMethod::Pcp, MappingMethod::NatPmp],
            gateway: Some(Ipv4Addr::new(10, 77, 0, 99)),
            probe_timeout: Duration::from_millis(800),
            ..PortMapperConfig::default()
        };
        expect_no_gateway(config).await
    });
    assert_eq!(state.phase, Phase::NoGateway);
    println!("no gateway (silent address): NoGateway after {} ms", took.as_millis());
}

/// A private WAN address (10.99.0.1): DoubleNat, and the private address is never advertised.
fn double_nat(preference: &[MappingMethod]) {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::double_nat()) else { return };
    let methods = preference.to_vec();
    let gw = gateway.clone();
    let log = gateway.run_in(Namespace::Client, move || async move {
        let (mapper, mut events) =
            PortMapper::start(config(&methods), vec![(MapProtocol::Tcp, 4060)]);
        let mut seen = Vec::new();
        let gateway_external = wait_for(&mut events, WAIT, |e| {
            if let NatEvent::ExternalAddressChanged { new: Some(address), .. } = e {
                panic!("advertised {address}");
            }
            if let NatEvent::Mapped { external: Some(address), .. } = e {
                panic!("advertised {address}");
            }
            seen.push(format!("{e:?}"));
            match e {
                NatEvent::DoubleNat { gateway_external } => Some(*gateway_external),
                _ => None,
            }
        })
        .await;
        // miniupnpd does not tell a private address: NAT-PMP says "network failure", UPnP
        // gives an empty one.
        assert_eq!(gateway_external, None);
        // Its mapping attempt fails (miniupnpd refuses to forward without a public address)
        // and nothing is advertised.
        let failed = wait_for(&mut events, WAIT, |e| match e {
            NatEvent::MappingFailed { error, .. } => Some(error.to_string()),
            NatEvent::Mapped { external: Some(address), .. } => panic!("advertised {address}"),
            _ => None,
        })
        .await;
        let state = mapper.state();
        assert!(state.double_nat);
        assert_eq!(state.external_address, None);
        assert!(gw.mappings().unwrap().is_empty());
        mapper.shutdown().await;
        let method = state.method;
        format!("{method:?}: DoubleNat {{ gateway_external: {gateway_external:?} }}, {failed}")
    });
    println!("double NAT ({}) with {preference:?}: {log}", gateway.wan_address());
}

#[test]
fn double_nat_is_reported_by_default() {
    double_nat(&[MappingMethod::Pcp, MappingMethod::NatPmp, MappingMethod::Upnp]);
}

#[test]
fn double_nat_is_reported_by_upnp() {
    double_nat(&[MappingMethod::Upnp]);
}

#[test]
fn double_nat_is_reported_by_natpmp() {
    double_nat(&[MappingMethod::NatPmp]);
}

/// Another LAN host (10.77.0.3, made with upnpc) holds the external port: the mapper gets a
/// different one (UPnP: ConflictInMappingEntry, then AddAnyPortMapping; NAT-PMP and PCP: the
/// gateway picks another).
fn taken_port_gets_another(method: MappingMethod, port: u16) {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    let other_host = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 3), port);
    let ip = |args: &[&str]| {
        let mut full = vec!["ip"];
        full.extend_from_slice(args);
        gateway.exec_ok(Namespace::Client, &full).unwrap();
    };
    // upnpc speaks from 10.77.0.3 while this route exists (miniupnpd's secure mode maps only
    // to the requester's own address).
    ip(&["addr", "add", "10.77.0.3/24", "dev", "lan1"]);
    ip(&["route", "add", "10.77.0.1/32", "dev", "lan1", "src", "10.77.0.3"]);
    let url = "http://10.77.0.1:5000/rootDesc.xml";
    let taken = port.to_string();
    let args = ["upnpc", "-u", url, "-e", "other", "-a", "10.77.0.3", &taken, &taken, "TCP"];
    gateway.exec_ok(Namespace::Client, &args).unwrap();
    ip(&["route", "del", "10.77.0.1/32", "dev", "lan1", "src", "10.77.0.3"]);
    let theirs = Mapping { protocol: Protocol::Tcp, external_port: port, internal: other_host };
    assert_eq!(gateway.mappings().unwrap(), vec![theirs]);
    let gw = gateway.clone();
    let external_port = gateway.run_in(Namespace::Client, move || async move {
        let (mapper, mut events) =
            PortMapper::start(config(&[method]), vec![(MapProtocol::Tcp, port)]);
        let (external_port, _) = wait_for(&mut events, WAIT, mapped(MapProtocol::Tcp, port)).await;
        assert_ne!(external_port, port);
        let mut expected = vec![theirs, rule(Protocol::Tcp, external_port, port)];
        expected.sort();
        assert_eq!(gw.mappings().unwrap(), expected);
        mapper.shutdown().await;
        assert_eq!(gw.mappings().unwrap(), vec![theirs], "ours deleted, theirs kept");
        external_port
    });
    let any = gateway.log().contains("#AddAnyPortMapping");
    println!(
        "{method}: port {port} was taken, got {external_port} (AddAnyPortMapping used: {any})"
    );
}

#[test]
fn upnp_taken_port_gets_another() {
    taken_port_gets_another(MappingMethod::Upnp, 4070);
}

#[test]
fn natpmp_taken_port_gets_another() {
    taken_port_gets_another(MappingMethod::NatPmp, 4071);
}

#[test]
fn pcp_taken_port_gets_another() {
    taken_port_gets_another(MappingMethod::Pcp, 4072);
}

/// Nobody reads the events (capacity 1): events are dropped and counted, the mapper goes on.
#[test]
fn a_full_event_channel_never_blocks_the_mapper() {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    let gw = gateway.clone();
    gateway.run_in(Namespace::Client, move || async move {
        let config = PortMapperConfig { event_capacity: 1, ..config(&[MappingMethod::Pcp]) };
        let ports: Vec<(MapProtocol, u16)> = (4080..4084).map(|p| (MapProtocol::Udp, p)).collect();
        let (mut mapper, _events) = PortMapper::start(config, ports);
        let state = tokio::time::timeout(WAIT, async {
            loop {
                let state = mapper.changed().await.expect("running");
                if state.mappings.iter().all(|m| m.mapped.is_some()) {
                    return state;
                }
            }
        })
        .await
        .expect("all mapped although nobody reads the events");
        // GatewayFound took the one slot; ExternalAddressChanged and four Mapped were dropped.
        assert!(state.events_dropped >= 4, "{state:?}");
        assert_eq!(gw.mappings().unwrap().len(), 4);
        mapper.shutdown().await;
        assert!(gw.mappings().unwrap().is_empty());
    });
}

/// Time to map one TCP port with each method, from `PortMapper::start` (probing included) to
/// the `Mapped` event, and the time shutdown takes to delete it: five rounds each against the
/// same miniupnpd. Printed with `--nocapture`.
#[test]
fn map_timings_per_method() {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    let gw = gateway.clone();
    let report = gateway.run_in(Namespace::Client, move || async move {
        let mut report = String::new();
        for method in [MappingMethod::Pcp, MappingMethod::NatPmp, MappingMethod::Upnp] {
            let mut map_times = Vec::new();
            let mut found_times = Vec::new();
            let mut shutdown_times = Vec::new();
            for _ in 0..5 {
                let start = Instant::now();
                let (mapper, mut events) =
                    PortMapper::start(config(&[method]), vec![(MapProtocol::Tcp, 4090)]);
                wait_for(&mut events, WAIT, |e| {
                    matches!(e, NatEvent::GatewayFound { .. }).then_some(())
                })
                .await;
                found_times.push(start.elapsed());
                wait_for(&mut events, WAIT, mapped(MapProtocol::Tcp, 4090)).await;
                map_times.push(start.elapsed());
                let stop = Instant::now();
                mapper.shutdown().await;
                shutdown_times.push(stop.elapsed());
                assert!(gw.mappings().unwrap().is_empty());
            }
            let median = |times: &mut Vec<Duration>| {
                times.sort();
                format!(
                    "median {:.1} ms (min {:.1}, max {:.1})",
                    times[2].as_secs_f64() * 1e3,
                    times[0].as_secs_f64() * 1e3,
                    times[4].as_secs_f64() * 1e3
                )
            };
            report.push_str(&format!(
                "{method:>8}: gateway found {}; mapped {}; shutdown {}\n",
                median(&mut found_times),
                median(&mut map_times),
                median(&mut shutdown_times)
            ));
        }
        report
    });
    println!("time to map one TCP port against miniupnpd, from start (5 rounds):\n{report}");
}
