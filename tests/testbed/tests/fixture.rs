//! The gateway fixture itself, checked with the independent clients (natpmpc, upnpc).
//! Needs root and the packages; skips without them (fails when `CI=true`).

use std::net::{IpAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use sinew_testbed::{
    Gateway, GatewayOptions, LAN_CLIENT, Mapping, Namespace, Protocol, cleanup_stale,
    require_root_and_packages, skip_or_fail,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

#[test]
fn builds_maps_and_cleans_up() {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    let names: Vec<String> = [Namespace::Client, Namespace::Gateway, Namespace::Wan]
        .iter()
        .map(|ns| gateway.namespace_name(*ns).to_owned())
        .collect();
    assert!(names.iter().all(|n| exists(n)), "{names:?}");
    assert!(gateway.miniupnpd_running());
    assert!(gateway.mappings().unwrap().is_empty());

    // natpmpc, an independent client, maps public port 4100 to local port 4101; the
    // gateway's view shows it.
    let out = gateway
        .exec_ok(
            Namespace::Client,
            &["natpmpc", "-g", "10.77.0.1", "-a", "4100", "4101", "tcp", "30"],
        )
        .unwrap();
    assert!(out.contains("Mapped public port 4100"), "{out}");
    let expected = Mapping {
        protocol: Protocol::Tcp,
        external_port: 4100,
        internal: SocketAddrV4::new(LAN_CLIENT, 4101),
    };
    assert_eq!(gateway.mappings().unwrap(), vec![expected]);
    let listed = gateway.upnpc_list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].mapping, expected);
    assert_eq!(listed[0].description, "NAT-PMP 4100 tcp");
    let (address, _) = gateway.natpmpc_public_address().unwrap().unwrap();
    assert_eq!(address, gateway.wan_address());

    let pid = std::fs::read_to_string(gateway.dir().join("miniupnpd.pid")).unwrap();
    let pid = pid.trim().to_owned();
    drop(gateway);
    assert!(names.iter().all(|n| !exists(n)), "namespaces left: {names:?}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(status.is_empty(), "miniupnpd {pid} is still there (not reaped): {status}");
}

#[test]
fn restart_starts_a_new_epoch_and_loses_the_rules() {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    gateway
        .exec_ok(
            Namespace::Client,
            &["natpmpc", "-g", "10.77.0.1", "-a", "4110", "4110", "udp", "60"],
        )
        .unwrap();
    assert_eq!(gateway.mappings().unwrap().len(), 1);
    gateway.restart_miniupnpd().unwrap();
    assert!(gateway.miniupnpd_running());
    assert!(gateway.mappings().unwrap().is_empty());
    let (_, epoch) = gateway.natpmpc_public_address().unwrap().unwrap();
    assert!(epoch <= 1, "epoch {epoch} after a restart");
    gateway.stop_miniupnpd().unwrap();
    assert!(!gateway.miniupnpd_running());
    assert!(gateway.natpmpc_public_address().unwrap().is_none());
}

#[test]
fn code_runs_inside_the_namespaces_and_through_the_nat() {
    let Some(gateway) = Gateway::start_or_skip(GatewayOptions::default()) else { return };
    // Outbound through the NAT: the WAN side sees the gateway's WAN address (masquerade).
    let wan = gateway.runtime(Namespace::Wan).unwrap();
    let listener = wan.spawn(async {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:4120").await.unwrap();
        let (mut stream, peer) = listener.accept().await.unwrap();
        stream.write_all(b"hi").await.unwrap();
        peer
    });
    let wan_peer = gateway.wan_peer();
    let local = gateway.run_in(Namespace::Client, move || async move {
        let connect = async {
            loop {
                // The WAN listener may not be bound yet.
                match tokio::net::TcpStream::connect((wan_peer, 4120)).await {
                    Ok(stream) => return stream,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        };
        let mut stream = tokio::time::timeout(Duration::from_secs(5), connect).await.unwrap();
        let mut buf = [0u8; 2];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        stream.local_addr().unwrap()
    });
    assert_eq!(local.ip(), IpAddr::V4(LAN_CLIENT));
    let seen = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(listener)
        .unwrap();
    assert_eq!(seen.ip(), IpAddr::V4(gateway.wan_address()), "masqueraded");
}

#[test]
fn stale_namespaces_of_dead_processes_are_removed() {
    if let Err(reason) = require_root_and_packages() {
        return skip_or_fail(&reason);
    }
    // A pid above the kernel's maximum (4194304) never exists.
    let name = "swtb4194399x0c";
    let _ = std::process::Command::new("ip").args(["netns", "add", name]).status();
    assert!(exists(name));
    assert!(cleanup_stale() >= 1);
    assert!(!exists(name));
}
