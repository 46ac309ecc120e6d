//! Port mapping: the node maps its listen ports with `sinew-nat` (TCP for `tcp://`, `ws://` and
//! `wss://` listeners, UDP for `quic://` ones) and advertises the external addresses it gets,
//! following the mapper's events.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use sinew_nat::{MapProtocol, NatEvent, NatState, PortMapper, PortMapperConfig};
use sinew_types::{Addr, Scheme};
use tokio::sync::mpsc;

use crate::driver::Command;
use crate::events::Event;
use crate::shared::Shared;

/// The protocol a listener of this scheme receives on, if it can be mapped.
fn protocol_of(scheme: Scheme) -> Option<MapProtocol> {
    match scheme {
        Scheme::Tcp | Scheme::Ws | Scheme::Wss => Some(MapProtocol::Tcp),
        Scheme::Quic => Some(MapProtocol::Udp),
        _ => None,
    }
}

/// The listen addresses worth mapping, and how: IPv4, not loopback (the gateway cannot reach
/// those), on a transport that listens on a port.
pub(crate) fn mappable(addr: &Addr) -> Option<(MapProtocol, u16)> {
    let socket = addr.socket_addr()?;
    match socket.ip() {
        IpAddr::V4(ip) if !ip.is_loopback() => Some((protocol_of(addr.scheme())?, socket.port())),
        _ => None,
    }
}

/// Starts the mapper for the node's current listen addresses and the task that follows it.
pub(crate) fn start(shared: &Arc<Shared>, config: PortMapperConfig) {
    let mut requests: Vec<(MapProtocol, u16)> =
        shared.listen_addrs().iter().filter_map(mappable).collect();
    requests.sort_unstable_by_key(|(_, port)| *port);
    requests.dedup();
    let (mapper, events) = PortMapper::start(config, requests);
    *shared.nat.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(mapper));
    tokio::spawn(follow(shared.clone(), events));
}

/// The external addresses a mapper state gives: for each listener whose port is mapped, its
/// address (scheme and path kept) on the gateway's external address and port; none behind a
/// double NAT (that address would be private).
pub(crate) fn external_addrs(state: &NatState, listen: &[Addr]) -> Vec<Addr> {
    let Some(ip) = state.external_address.filter(|_| !state.double_nat) else { return Vec::new() };
    let mut out = Vec::new();
    for listener in listen {
        let Some((protocol, port)) = mappable(listener) else { continue };
        let mapped = state
            .mappings
            .iter()
            .find(|m| m.protocol == protocol && m.internal_port == port)
            .and_then(|m| m.mapped);
        if let Some(mapped) = mapped {
            let external = SocketAddr::new(IpAddr::V4(ip), mapped.external_port);
            let addr =
                Addr::new(listener.scheme(), sinew_types::Host::Ip(external.ip()), external.port());
            out.push(match listener.path() {
                Some(path) => addr.with_path(path).unwrap_or_else(|_| listener.clone()),
                None => addr,
            });
        }
    }
    out
}

/// Deletes the mappings at the gateway and stops the mapper (bounded in time).
pub(crate) async fn stop(shared: &Shared) {
    let mapper = shared.nat.lock().unwrap_or_else(|e| e.into_inner()).take();
    // A clone lives only while an `add` is in flight; then the mapper stops with its last
    // handle and its task removes the mappings itself.
    if let Some(mapper) = mapper.and_then(Arc::into_inner) {
        mapper.shutdown().await;
    }
}

/// Follows the mapper: each event is passed on to the application, and a change of external
/// addresses updates what identify advertises.
async fn follow(shared: Arc<Shared>, mut events: mpsc::Receiver<NatEvent>) {
    while let Some(event) = events.recv().await {
        let state = shared.nat_state();
        let listen = shared.listen_addrs();
        let external = state.as_ref().map(|s| external_addrs(s, &listen)).unwrap_or_default();
        if shared.set_external_addrs(external) {
            let _ = shared.commands.send(Command::AddressesChanged).await;
        }
        shared.emit(Event::Nat(Arc::new(event)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_ipv4_listeners_are_mapped_by_their_protocol() {
        let port = |s: &str| mappable(&s.parse().unwrap());
        assert_eq!(port("tcp://0.0.0.0:4001"), Some((MapProtocol::Tcp, 4001)));
        assert_eq!(port("tcp://10.77.0.2:4002"), Some((MapProtocol::Tcp, 4002)));
        assert_eq!(port("quic://0.0.0.0:4001"), Some((MapProtocol::Udp, 4001)));
        assert_eq!(port("ws://0.0.0.0:80/sinew"), Some((MapProtocol::Tcp, 80)));
        assert_eq!(port("wss://0.0.0.0:443/sinew"), Some((MapProtocol::Tcp, 443)));
        assert_eq!(port("tcp://127.0.0.1:4003"), None);
        assert_eq!(port("quic://127.0.0.1:4003"), None);
        assert_eq!(port("tcp://[::]:4004"), None);
        assert_eq!(port("tcp://example.org:4005"), None);
        assert_eq!(port("memory://0.0.0.0:4006"), None);
    }

    #[test]
    fn each_mapped_listener_is_advertised_with_its_scheme_and_path() {
        use sinew_nat::{ActiveMapping, MappingState};
        let mapped = |protocol, internal_port, external_port| MappingState {
            protocol,
            internal_port,
            mapped: Some(ActiveMapping {
                external_port,
                lifetime: None,
                renew_at: std::time::Instant::now(),
                expires_at: None,
            }),
        };
        let state = NatState {
            external_address: Some("203.0.113.5".parse().unwrap()),
            mappings: vec![
                mapped(MapProtocol::Tcp, 4001, 40001),
                mapped(MapProtocol::Tcp, 8080, 48080),
                mapped(MapProtocol::Udp, 4001, 50001),
            ],
            ..NatState::default()
        };
        let listen: Vec<Addr> = [
            "tcp://0.0.0.0:4001",
            "quic://0.0.0.0:4001",
            "ws://0.0.0.0:8080/p",
            "tcp://127.0.0.1:9",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let got: Vec<String> =
            external_addrs(&state, &listen).iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            ["tcp://203.0.113.5:40001", "quic://203.0.113.5:50001", "ws://203.0.113.5:48080/p"]
        );
    }

    #[test]
    fn no_external_address_behind_a_double_nat() {
        let state = NatState {
            external_address: Some("100.64.0.7".parse().unwrap()),
            double_nat: true,
            ..NatState::default()
        };
        let listen = vec!["tcp://0.0.0.0:4001".parse().unwrap()];
        assert!(external_addrs(&state, &listen).is_empty());
    }
}
