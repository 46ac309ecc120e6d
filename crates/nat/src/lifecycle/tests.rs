//! The lifecycle core on virtual time.

use proptest::prelude::*;

use super::*;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PUBLIC: Ipv4Addr = Ipv4Addr::new(100, 128, 0, 1);
const TCP: Key = (MapProtocol::Tcp, 4001);
const UDP: Key = (MapProtocol::Udp, 4002);

struct Harness {
    core: Core,
    now: Instant,
    actions: Vec<Action>,
    events: Vec<NatEvent>,
}

impl Harness {
    fn new(preference: &[MappingMethod], requests: &[Key]) -> Self {
        let config = PortMapperConfig {
            preference: preference.to_vec(),
            lease: Duration::from_secs(120),
            probe_timeout: Duration::from_secs(3),
            ..PortMapperConfig::default()
        };
        let mut harness = Self {
            core: Core::new(&config, requests, [1; 32]),
            now: Instant::now(),
            actions: Vec::new(),
            events: Vec::new(),
        };
        harness.core.start(harness.now);
        harness.drain();
        harness
    }

    fn drain(&mut self) {
        while let Some(action) = self.core.poll_action() {
            self.actions.push(action);
        }
        while let Some(event) = self.core.poll_event() {
            self.events.push(event);
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.core.handle_timeout(self.now);
        self.drain();
    }

    /// Jumps to the next deadline; returns how far it was.
    fn step(&mut self) -> Duration {
        let at = self.core.poll_timeout().expect("a deadline");
        let by = at.saturating_duration_since(self.now);
        self.advance(by);
        by
    }

    fn actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    fn events(&mut self) -> Vec<NatEvent> {
        std::mem::take(&mut self.events)
    }

    fn probe(&mut self, method: MappingMethod, result: Result<ProbeInfo, Error>) {
        self.core.probe_done(method, 1, result, self.now);
        self.drain();
    }

    fn map(&mut self, key: Key, method: MappingMethod, result: Result<Grant, Error>) {
        self.core.map_done(key, method, result, self.now);
        self.drain();
    }

    /// Answers every pending map request with its suggested port and `lifetime`.
    fn grant_all(&mut self, lifetime: Option<Duration>, epoch: Option<u32>) {
        for action in self.actions() {
            if let Action::Map { method, protocol, internal_port, external_port, .. } = action {
                let grant = Grant { external_port, external: None, lifetime, epoch };
                self.map((protocol, internal_port), method, Ok(grant));
            }
        }
    }
}

fn info(external: Option<ExternalReport>, epoch: Option<u32>) -> ProbeInfo {
    ProbeInfo { gateway: GATEWAY, external, epoch }
}

fn public() -> Option<ExternalReport> {
    Some(ExternalReport::Address(PUBLIC))
}

fn maps(actions: &[Action]) -> Vec<(MappingMethod, Key)> {
    actions
        .iter()
        .filter_map(|a| match *a {
            Action::Map { method, protocol, internal_port, .. } => {
                Some((method, (protocol, internal_port)))
            }
            _ => None,
        })
        .collect()
}

const ALL: [MappingMethod; 3] = [MappingMethod::Pcp, MappingMethod::NatPmp, MappingMethod::Upnp];

#[test]
fn probes_every_method_then_maps_with_the_preferred_one_only() {
    let mut h = Harness::new(&ALL, &[TCP, UDP]);
    let probes: Vec<Action> = h.actions();
    assert_eq!(
        probes,
        ALL.map(|method| Action::Probe { method, round: 1 }).to_vec(),
        "all three probed at once"
    );
    // NAT-PMP and UPnP answer first: PCP is preferred, so wait for it.
    h.probe(MappingMethod::NatPmp, Ok(info(public(), Some(5))));
    h.probe(MappingMethod::Upnp, Ok(info(public(), None)));
    assert!(h.actions().is_empty());
    assert!(h.events().is_empty());
    h.probe(MappingMethod::Pcp, Ok(info(None, Some(5))));
    let events = h.events();
    assert!(matches!(
        events[0],
        NatEvent::GatewayFound { gateway: GATEWAY, method: MappingMethod::Pcp }
    ));
    // NAT-PMP's probe told the external address.
    assert!(matches!(events[1], NatEvent::ExternalAddressChanged { old: None, new: Some(PUBLIC) }));
    let actions = h.actions();
    assert_eq!(maps(&actions), [(MappingMethod::Pcp, TCP), (MappingMethod::Pcp, UDP)]);
    let Action::Map { external_port, lifetime, .. } = actions[0] else { unreachable!() };
    assert_eq!(external_port, 4001, "asks for the internal port first");
    assert_eq!(lifetime, Duration::from_secs(120));
}

#[test]
fn preference_order_is_the_configured_one() {
    let preference = [MappingMethod::Upnp, MappingMethod::NatPmp, MappingMethod::Pcp];
    let mut h = Harness::new(&preference, &[TCP]);
    h.actions();
    h.probe(MappingMethod::Pcp, Ok(info(None, Some(1))));
    h.probe(MappingMethod::NatPmp, Ok(info(public(), Some(1))));
    assert!(h.actions().is_empty(), "UPnP is preferred and still probing");
    h.probe(MappingMethod::Upnp, Err(Error::Timeout(Duration::from_secs(3))));
    assert_eq!(maps(&h.actions()), [(MappingMethod::NatPmp, TCP)]);
    assert_eq!(h.core.state().method, Some(MappingMethod::NatPmp));
}

#[test]
fn only_listed_methods_are_probed() {
    let mut h = Harness::new(&[MappingMethod::Upnp, MappingMethod::Upnp], &[TCP]);
    assert_eq!(h.actions(), [Action::Probe { method: MappingMethod::Upnp, round: 1 }]);
}

#[test]
fn renews_at_half_the_granted_lifetime_with_the_same_nonce() {
    let mut h = Harness::new(&[MappingMethod::Pcp], &[TCP]);
    h.actions();
    h.probe(MappingMethod::Pcp, Ok(info(None, Some(100))));
    let first = h.actions();
    let Action::Map { nonce, .. } = first[0] else { panic!("{first:?}") };
    h.actions = first;
    h.events();
    // The gateway grants 60 s of the 120 asked.
    h.grant_all(Some(Duration::from_secs(60)), Some(100));
    assert!(matches!(h.events()[..], [NatEvent::Mapped { external_port: 4001, .. }]));
    let state = h.core.state();
    let mapped = state.mappings[0].mapped.unwrap();
    assert_eq!(mapped.renew_at, h.now + Duration::from_secs(30));
    assert_eq!(mapped.expires_at, Some(h.now + Duration::from_secs(60)));
    assert_eq!(h.step(), Duration::from_secs(30));
    let renewal = h.actions();
    assert!(
        matches!(renewal[..], [Action::Map { nonce: n, external_port: 4001, .. }] if n == nonce),
        "{renewal:?}"
    );
    h.actions = renewal;
    h.grant_all(Some(Duration::from_secs(60)), Some(130));
    assert!(matches!(h.events()[..], [NatEvent::Renewed { internal_port: 4001, .. }]));
}

fn active(method: MappingMethod, requests: &[Key]) -> Harness {
    let mut h = Harness::new(&[method], requests);
    h.actions();
    let epoch = (method != MappingMethod::Upnp).then_some(1000);
    h.probe(method, Ok(info(public(), epoch)));
    h.grant_all(Some(Duration::from_secs(120)), epoch);
    h.events();
    h
}

#[test]
fn epoch_going_back_remaps_everything() {
    let mut h = active(MappingMethod::NatPmp, &[TCP, UDP]);
    h.advance(Duration::from_secs(60));
    let renewals = h.actions();
    assert_eq!(renewals.len(), 3, "two renewals and the external address check: {renewals:?}");
    // The TCP renewal's answer shows epoch 3: the gateway restarted.
    let grant = Grant {
        external_port: 4001,
        external: None,
        lifetime: Some(Duration::from_secs(120)),
        epoch: Some(3),
    };
    h.map(TCP, MappingMethod::NatPmp, Ok(grant));
    let events = h.events();
    assert!(matches!(events[0], NatEvent::GatewayRestarted { method: MappingMethod::NatPmp }));
    assert!(matches!(events[1], NatEvent::Mapped { internal_port: 4001, .. }), "{events:?}");
    // UDP's renewal is still in flight; its answer counts as a new mapping.
    let grant = Grant { epoch: Some(3), external_port: 4002, ..grant };
    h.map(UDP, MappingMethod::NatPmp, Ok(grant));
    assert!(matches!(h.events()[..], [NatEvent::Mapped { internal_port: 4002, .. }]));
}

#[test]
fn restart_noticed_by_a_check_remaps_the_others() {
    let mut h = active(MappingMethod::Pcp, &[TCP, UDP]);
    // Checks come every minute at most, before the renewals (at 60 s).
    let by = h.step();
    assert_eq!(by, Duration::from_secs(60));
    let actions = h.actions();
    assert!(actions.contains(&Action::QueryExternal(MappingMethod::Pcp)), "{actions:?}");
    // Answer the renewals normally, then the check shows a much smaller epoch.
    h.actions = actions.iter().filter(|a| matches!(a, Action::Map { .. })).cloned().collect();
    h.grant_all(Some(Duration::from_secs(120)), Some(1060));
    assert_eq!(h.events().len(), 2);
    h.advance(Duration::from_secs(1));
    h.core.query_done(MappingMethod::Pcp, Ok(QueryInfo { external: None, epoch: Some(0) }), h.now);
    h.drain();
    assert!(matches!(h.events()[..], [NatEvent::GatewayRestarted { .. }]));
    assert_eq!(maps(&h.actions()).len(), 2, "both mapped again");
}

#[test]
fn epoch_rules_of_rfc_6887() {
    let mut h = active(MappingMethod::Pcp, &[]);
    let t0 = h.now;
    h.core.epoch = Some((1000, t0));
    // Consistent: 60 s on both sides.
    assert!(!h.core.observe_epoch(1060, t0 + Duration::from_secs(60)));
    // Backwards by one second (reordering): fine; by two: lost state.
    assert!(!h.core.observe_epoch(1059, t0 + Duration::from_secs(60)));
    assert!(h.core.observe_epoch(1057, t0 + Duration::from_secs(60)));
    // Advancing much less than the client's clock: lost state.
    h.core.epoch = Some((1000, t0));
    assert!(h.core.observe_epoch(1010, t0 + Duration::from_secs(60)));
    // Much more than the client's clock: also invalid.
    h.core.epoch = Some((1000, t0));
    assert!(h.core.observe_epoch(1200, t0 + Duration::from_secs(60)));
    // Within the slack (2 s plus 1/16).
    h.core.epoch = Some((1000, t0));
    assert!(!h.core.observe_epoch(1058, t0 + Duration::from_secs(60)));
}

#[test]
fn double_nat_classification() {
    for (address, public) in [
        ([10, 0, 0, 1], false),
        ([172, 16, 0, 1], false),
        ([172, 31, 255, 255], false),
        ([192, 168, 1, 1], false),
        ([100, 64, 0, 1], false),
        ([100, 127, 255, 255], false),
        ([169, 254, 1, 1], false),
        ([127, 0, 0, 1], false),
        ([0, 0, 0, 0], false),
        ([255, 255, 255, 255], false),
        ([224, 0, 0, 1], false),
        ([100, 128, 0, 1], true),
        ([100, 63, 255, 255], true),
        ([172, 32, 0, 1], true),
        ([8, 8, 8, 8], true),
    ] {
        assert_eq!(is_public(Ipv4Addr::from(address)), public, "{address:?}");
    }
}

#[test]
fn private_external_address_is_double_nat_and_never_advertised() {
    let mut h = Harness::new(&[MappingMethod::NatPmp], &[TCP]);
    h.actions();
    let private = Ipv4Addr::new(10, 99, 0, 1);
    h.probe(MappingMethod::NatPmp, Ok(info(Some(ExternalReport::Address(private)), Some(1))));
    let events = h.events();
    assert!(matches!(events[1], NatEvent::DoubleNat { gateway_external: Some(a) } if a == private));
    assert_eq!(events.len(), 2, "no ExternalAddressChanged to a private address: {events:?}");
    h.grant_all(Some(Duration::from_secs(120)), Some(1));
    assert!(matches!(h.events()[..], [NatEvent::Mapped { external: None, .. }]));
    let state = h.core.state();
    assert!(state.double_nat);
    assert_eq!(state.external_address, None);
    assert_eq!(state.gateway_external, Some(private));
}

#[test]
fn missing_external_address_is_double_nat() {
    let mut h = Harness::new(&ALL, &[TCP]);
    h.actions();
    h.probe(MappingMethod::Pcp, Ok(info(None, Some(1))));
    assert!(matches!(h.events()[..], [NatEvent::GatewayFound { .. }]));
    // NAT-PMP's probe answers later: "network failure", no external address.
    h.probe(MappingMethod::NatPmp, Ok(info(Some(ExternalReport::Missing), Some(1))));
    assert!(matches!(h.events()[..], [NatEvent::DoubleNat { gateway_external: None }]));
    assert!(h.core.state().double_nat);
}

#[test]
fn external_address_changes_are_reported() {
    let mut h = active(MappingMethod::Upnp, &[TCP]);
    let new = Ipv4Addr::new(100, 128, 0, 9);
    h.step();
    h.actions();
    let info = QueryInfo { external: Some(ExternalReport::Address(new)), epoch: None };
    h.core.query_done(MappingMethod::Upnp, Ok(info), h.now);
    h.drain();
    assert!(matches!(
        h.events()[..],
        [NatEvent::ExternalAddressChanged { old: Some(PUBLIC), new: Some(n) }] if n == new
    ));
}

#[test]
fn no_gateway_within_the_probe_bound_then_probes_again() {
    let mut h = Harness::new(&ALL, &[TCP]);
    h.actions();
    h.probe(MappingMethod::Pcp, Err(Error::Refused));
    h.probe(MappingMethod::NatPmp, Err(Error::Refused));
    assert!(h.events().is_empty(), "UPnP still probing");
    assert_eq!(h.step(), Duration::from_secs(3), "the probe bound");
    let events = h.events();
    let [NatEvent::NoGateway { probes }] = &events[..] else { panic!("{events:?}") };
    assert_eq!(probes.len(), 3);
    assert!(matches!(probes[2], (MappingMethod::Upnp, Error::Timeout(_))));
    assert_eq!(h.core.state().phase, Phase::NoGateway);
    // Late answers of that round change nothing.
    h.probe(MappingMethod::Upnp, Ok(info(public(), None)));
    assert!(h.events().is_empty());
    assert_eq!(h.step(), REPROBE_INTERVAL);
    assert_eq!(h.actions().len(), 3, "probes again");
}

#[test]
fn failures_back_off_and_expired_mappings_are_lost() {
    let mut h = active(MappingMethod::Pcp, &[TCP]);
    h.advance(Duration::from_secs(60));
    h.actions();
    h.map(TCP, MappingMethod::Pcp, Err(Error::Pcp(crate::PcpError::NoResources)));
    assert!(matches!(h.events()[..], [NatEvent::MappingFailed { .. }]));
    // The renewal is retried soon (2 s), well before the mapping expires at 120 s.
    assert_eq!(h.step(), RETRY_INITIAL);
    assert_eq!(maps(&h.actions()).len(), 1);
    let mut failures = 1;
    loop {
        h.map(TCP, MappingMethod::Pcp, Err(Error::Pcp(crate::PcpError::NoResources)));
        failures += 1;
        let events = h.events();
        if events.iter().any(|e| matches!(e, NatEvent::Lost { .. })) {
            break;
        }
        assert!(failures < 20, "never lost: {events:?}");
        h.step();
        h.actions();
    }
    assert!(h.core.state().mappings[0].mapped.is_none());
    // Then mapping attempts continue with backoff, up to RETRY_MAX.
    let mut last = Duration::ZERO;
    for _ in 0..12 {
        last = h.step();
        h.actions();
        h.map(TCP, MappingMethod::Pcp, Err(Error::Pcp(crate::PcpError::NoResources)));
    }
    assert_eq!(last, RETRY_MAX);
}

#[test]
fn unreachable_gateway_without_live_mappings_is_probed_again() {
    let mut h = Harness::new(&[MappingMethod::NatPmp], &[TCP]);
    h.actions();
    h.probe(MappingMethod::NatPmp, Ok(info(public(), Some(1))));
    h.actions();
    h.events();
    h.map(TCP, MappingMethod::NatPmp, Err(Error::Timeout(Duration::from_secs(3))));
    assert_eq!(h.core.state().phase, Phase::Probing);
    assert_eq!(h.actions(), [Action::Probe { method: MappingMethod::NatPmp, round: 2 }]);
}

#[test]
fn permanent_leases_are_readded_at_half_the_lease() {
    let mut h = Harness::new(&[MappingMethod::Upnp], &[TCP]);
    h.actions();
    h.probe(MappingMethod::Upnp, Ok(info(public(), None)));
    h.grant_all(None, None);
    let mapped = h.core.state().mappings[0].mapped.unwrap();
    assert_eq!(mapped.expires_at, None);
    assert_eq!(mapped.renew_at, h.now + Duration::from_secs(60));
    assert_eq!(h.step(), Duration::from_secs(60));
    assert_eq!(maps(&h.actions()), [(MappingMethod::Upnp, TCP)]);
}

#[test]
fn remove_and_shutdown_delete_with_the_mapping_nonce() {
    let mut h = active(MappingMethod::Pcp, &[TCP, UDP]);
    h.core.remove(TCP.0, TCP.1, h.now);
    h.drain();
    let actions = h.actions();
    let [Action::Unmap { method: MappingMethod::Pcp, external_port: 4001, .. }] = actions[..]
    else {
        panic!("{actions:?}")
    };
    h.core.unmap_done(TCP, Ok(()), h.now);
    h.drain();
    assert!(matches!(
        h.events()[..],
        [NatEvent::Removed { internal_port: 4001, external_port: Some(4001), result: Ok(()), .. }]
    ));
    h.core.shutdown(h.now);
    h.drain();
    assert!(!h.core.is_finished());
    assert!(matches!(h.actions()[..], [Action::Unmap { internal_port: 4002, .. }]));
    h.core.unmap_done(UDP, Err(Error::Refused), h.now);
    h.drain();
    assert!(h.core.is_finished());
    assert!(matches!(h.events()[..], [NatEvent::Removed { result: Err(Error::Refused), .. }]));
    assert_eq!(h.core.poll_timeout(), None);
}

#[test]
fn remove_while_mapping_deletes_after_the_answer() {
    let mut h = Harness::new(&[MappingMethod::NatPmp], &[]);
    h.actions();
    h.probe(MappingMethod::NatPmp, Ok(info(public(), Some(1))));
    h.events();
    h.core.add(TCP.0, TCP.1, h.now);
    h.drain();
    let pending = h.actions();
    assert_eq!(maps(&pending).len(), 1);
    h.core.remove(TCP.0, TCP.1, h.now);
    // Added again before the map answer: it stays.
    h.core.add(TCP.0, TCP.1, h.now);
    h.core.remove(TCP.0, TCP.1, h.now);
    h.drain();
    assert!(h.actions().is_empty());
    h.actions = pending;
    h.grant_all(Some(Duration::from_secs(120)), Some(2));
    assert!(matches!(h.actions()[..], [Action::Unmap { .. }]));
    h.core.unmap_done(TCP, Ok(()), h.now);
    h.drain();
    assert!(matches!(h.events()[..], [NatEvent::Removed { external_port: Some(4001), .. }]));
    assert!(h.core.state().mappings.is_empty());
}

proptest! {
    #[test]
    fn operation_sequences_keep_the_invariants(
        data in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        crate::fuzzing::lifecycle_operations(&data);
    }
}
