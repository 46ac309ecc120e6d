//! Harnesses for the fuzz targets in `fuzz/` (not part of the API).

use std::collections::{BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::lifecycle::{Action, Core, ExternalReport, Grant, ProbeInfo, QueryInfo};
use crate::{Error, MapProtocol, MappingMethod, NatEvent, PortMapperConfig, natpmp, pcp};

/// Decodes `data` as a NAT-PMP response (and request); whatever decodes must encode and
/// decode to the same value.
pub fn natpmp_response(data: &[u8]) {
    if let Ok(response) = natpmp::Response::decode(data) {
        let again = natpmp::Response::decode(&response.encode());
        assert_eq!(again, Ok(response), "NAT-PMP response: decode(encode(x)) differs");
    }
    if let Ok(request) = natpmp::Request::decode(data) {
        let again = natpmp::Request::decode(&request.encode());
        assert_eq!(again, Ok(request), "NAT-PMP request: decode(encode(x)) differs");
    }
}

/// Decodes `data` as a PCP response (and request); whatever decodes must encode and decode
/// to the same value.
pub fn pcp_response(data: &[u8]) {
    if let Ok(response) = pcp::Response::decode(data) {
        let encoded = response.encode();
        assert!(encoded.len() <= data.len(), "PCP response grew when re-encoded");
        let again = pcp::Response::decode(&encoded);
        assert_eq!(again, Ok(response), "PCP response: decode(encode(x)) differs");
    }
    if let Ok(request) = pcp::Request::decode(data) {
        let again = pcp::Request::decode(&request.encode());
        assert_eq!(again, Ok(request), "PCP request: decode(encode(x)) differs");
    }
}

/// Drives the mapping lifecycle with operations read from `data` (adds, removes, time
/// passing, probe and request results in any order, epochs going back, shutdown) on virtual
/// time, checking its invariants: never two requests in flight for one port, every map uses
/// the method in use, no private address advertised, no deadline left due after
/// `handle_timeout` (no busy loop), no panic.
pub fn lifecycle_operations(data: &[u8]) {
    let config = PortMapperConfig {
        lease: Duration::from_secs(8),
        probe_timeout: Duration::from_secs(1),
        ..PortMapperConfig::default()
    };
    let mut core = Core::new(&config, &[(MapProtocol::Tcp, 1)], [7; 32]);
    let mut now = Instant::now();
    let mut pending: VecDeque<Action> = VecDeque::new();
    let mut epoch = 0u32;
    core.start(now);
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        let protocol = if arg & 1 == 0 { MapProtocol::Tcp } else { MapProtocol::Udp };
        let port = u16::from(arg >> 5);
        match op % 8 {
            0 => core.add(protocol, port, now),
            1 => core.remove(protocol, port, now),
            2 => {
                now += Duration::from_millis(u64::from(arg) * 50);
                epoch = epoch.wrapping_add(u32::from(arg) / 20);
                core.handle_timeout(now);
                // Everything due was done: the next deadline is later (no busy loop).
                if let Some(next) = core.poll_timeout() {
                    assert!(next > now, "deadline {next:?} not after {now:?} once handled");
                }
            }
            3..=5 => {
                let Some(action) = take(&mut pending, usize::from(arg >> 4)) else { continue };
                let ok = op % 8 != 5;
                let reported_epoch = if arg & 2 == 0 { epoch } else { epoch / 2 };
                complete(&mut core, action, ok, arg, reported_epoch, now);
            }
            6 => epoch = 0,
            _ => core.shutdown(now),
        }
        drain(&mut core, &mut pending);
    }
}

fn take(pending: &mut VecDeque<Action>, index: usize) -> Option<Action> {
    if pending.is_empty() { None } else { pending.remove(index % pending.len()) }
}

fn complete(core: &mut Core, action: Action, ok: bool, arg: u8, epoch: u32, now: Instant) {
    let failure =
        || if arg & 4 == 0 { Error::Timeout(Duration::from_secs(1)) } else { Error::Refused };
    let external = if arg & 8 == 0 {
        ExternalReport::Address(Ipv4Addr::new(100, 128, 0, arg))
    } else {
        ExternalReport::Address(Ipv4Addr::new(10, 0, 0, arg))
    };
    match action {
        Action::Probe { method, round } => {
            let info = ProbeInfo {
                gateway: Ipv4Addr::new(10, 77, 0, 1),
                external: Some(external),
                epoch: (method != MappingMethod::Upnp).then_some(epoch),
            };
            core.probe_done(method, round, if ok { Ok(info) } else { Err(failure()) }, now);
        }
        Action::Map { method, protocol, internal_port, external_port, lifetime, .. } => {
            let grant = Grant {
                external_port: if arg & 16 == 0 { external_port } else { external_port ^ 1 },
                external: (method == MappingMethod::Pcp).then_some(external),
                lifetime: (arg & 32 == 0).then_some(lifetime),
                epoch: (method != MappingMethod::Upnp).then_some(epoch),
            };
            let result = if ok { Ok(grant) } else { Err(failure()) };
            core.map_done((protocol, internal_port), method, result, now);
        }
        Action::Unmap { protocol, internal_port, .. } => {
            let result = if ok { Ok(()) } else { Err(failure()) };
            core.unmap_done((protocol, internal_port), result, now);
        }
        Action::QueryExternal(method) => {
            let info = QueryInfo {
                external: (method != MappingMethod::Pcp).then_some(external),
                epoch: (method != MappingMethod::Upnp).then_some(epoch),
            };
            core.query_done(method, if ok { Ok(info) } else { Err(failure()) }, now);
        }
    }
}

fn drain(core: &mut Core, pending: &mut VecDeque<Action>) {
    while let Some(action) = core.poll_action() {
        let method = core.state().method;
        match &action {
            Action::Map { method: used, .. } => {
                assert_eq!(Some(*used), method, "map with another method")
            }
            Action::Unmap { .. } | Action::Probe { .. } | Action::QueryExternal(_) => {}
        }
        pending.push_back(action);
    }
    // At most one request in flight per port.
    let mut keys = BTreeSet::new();
    for action in pending.iter() {
        if let Action::Map { protocol, internal_port, .. }
        | Action::Unmap { protocol, internal_port, .. } = action
        {
            assert!(keys.insert((*protocol, *internal_port)), "two requests in flight for a port");
        }
    }
    while let Some(event) = core.poll_event() {
        if let NatEvent::Mapped { external: Some(address), .. } = event {
            assert!(crate::lifecycle::is_public(*address.ip()), "advertised a private address");
        }
    }
}
