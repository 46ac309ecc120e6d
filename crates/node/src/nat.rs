//! Port mapping: the node maps its TCP listen ports with `sinew-nat` and advertises the external
//! addresses it gets, following the mapper's events.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use sinew_nat::{MapProtocol, NatEvent, NatState, PortMapper, PortMapperConfig};
use sinew_types::Addr;
use tokio::sync::mpsc;

use crate::driver::Command;
use crate::events::Event;
use crate::shared::Shared;

/// The listen addresses worth mapping: TCP on IPv4, not loopback (the gateway cannot reach
/// those).
pub(crate) fn mappable(addr: &Addr) -> Option<u16> {
    let socket = addr.socket_addr()?;
    match socket.ip() {
        IpAddr::V4(ip) if !ip.is_loopback() && addr.scheme() == sinew_types::Scheme::Tcp => {
            Some(socket.port())
        }
        _ => None,
    }
}

/// Starts the mapper for the node's current listen addresses and the task that follows it.
pub(crate) fn start(shared: &Arc<Shared>, config: PortMapperConfig) {
    let mut requests: Vec<(MapProtocol, u16)> = shared
        .listen_addrs()
        .iter()
        .filter_map(mappable)
        .map(|port| (MapProtocol::Tcp, port))
        .collect();
    requests.sort_unstable_by_key(|(_, port)| *port);
    requests.dedup();
    let (mapper, events) = PortMapper::start(config, requests);
    *shared.nat.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(mapper));
    tokio::spawn(follow(shared.clone(), events));
}

/// The external addresses a mapper state gives: one per mapped TCP port, on the gateway's
/// external address; none behind a double NAT (that address would be private).
pub(crate) fn external_addrs(state: &NatState) -> Vec<Addr> {
    let Some(ip) = state.external_address.filter(|_| !state.double_nat) else { return Vec::new() };
    state
        .mappings
        .iter()
        .filter(|m| m.protocol == MapProtocol::Tcp)
        .filter_map(|m| {
            m.mapped.map(|a| Addr::tcp(SocketAddr::new(IpAddr::V4(ip), a.external_port)))
        })
        .collect()
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
        let external = state.as_ref().map(external_addrs).unwrap_or_default();
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
    fn only_non_loopback_ipv4_tcp_listeners_are_mapped() {
        let port = |s: &str| mappable(&s.parse().unwrap());
        assert_eq!(port("tcp://0.0.0.0:4001"), Some(4001));
        assert_eq!(port("tcp://10.77.0.2:4002"), Some(4002));
        assert_eq!(port("tcp://127.0.0.1:4003"), None);
        assert_eq!(port("tcp://[::]:4004"), None);
        assert_eq!(port("tcp://example.org:4005"), None);
    }

    #[test]
    fn no_external_address_behind_a_double_nat() {
        let state = NatState {
            external_address: Some("100.64.0.7".parse().unwrap()),
            double_nat: true,
            ..NatState::default()
        };
        assert!(external_addrs(&state).is_empty());
    }
}
