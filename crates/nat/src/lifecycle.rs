//! The mapping lifecycle, sans-IO: probing, the choice of one method, renewal at half the
//! granted lifetime, epoch tracking, external address tracking and double-NAT detection.
//!
//! No sockets, tasks or clock: every input carries `now`, nonces come from an RNG seeded at
//! construction. After every input the driver drains [`Core::poll_action`] (and performs each
//! action, reporting its result with the matching `*_done` call) and [`Core::poll_event`],
//! then arms one timer for [`Core::poll_timeout`] and calls [`Core::handle_timeout`] when it
//! fires.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::types::{ActiveMapping, MappingState, Phase};
use crate::{Error, MapProtocol, MappingMethod, NatEvent, NatState, PortMapperConfig};
use internals::{dedup, held};

mod internals;

/// How long to wait before probing again after no gateway answered.
pub(crate) const REPROBE_INTERVAL: Duration = Duration::from_secs(60);
/// The first retry delay after a failed mapping request; it doubles up to [`RETRY_MAX`].
pub(crate) const RETRY_INITIAL: Duration = Duration::from_secs(2);
/// The longest retry delay.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(300);
/// The shortest renewal interval, whatever lifetime the gateway grants.
pub(crate) const MIN_RENEW: Duration = Duration::from_millis(500);
/// The longest time between two checks of the gateway (external address and epoch), so a
/// restart or an address change is noticed within it even with long leases.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// A mapping's key: protocol and internal port.
pub(crate) type Key = (MapProtocol, u16);

/// I/O the driver performs, reporting each result back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Probe a method (bounded by the probe timeout); report with [`Core::probe_done`],
    /// giving back `round`.
    Probe { method: MappingMethod, round: u32 },
    /// Create or renew a mapping; report with [`Core::map_done`].
    Map {
        method: MappingMethod,
        protocol: MapProtocol,
        internal_port: u16,
        /// The external port to ask for.
        external_port: u16,
        lifetime: Duration,
        /// The PCP nonce of this mapping (the same for its whole life).
        nonce: [u8; 12],
    },
    /// Delete a mapping; report with [`Core::unmap_done`].
    Unmap {
        method: MappingMethod,
        protocol: MapProtocol,
        internal_port: u16,
        external_port: u16,
        nonce: [u8; 12],
    },
    /// Check the gateway: NAT-PMP and UPnP read the external address (NAT-PMP's answer
    /// carries the epoch too), PCP sends an ANNOUNCE for its epoch. Report with
    /// [`Core::query_done`].
    QueryExternal(MappingMethod),
}

/// What a gateway said about its external address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExternalReport {
    /// This address.
    Address(Ipv4Addr),
    /// It has none (NAT-PMP NETWORK_FAILURE, an empty UPnP answer).
    Missing,
}

/// A successful probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeInfo {
    pub(crate) gateway: Ipv4Addr,
    pub(crate) external: Option<ExternalReport>,
    pub(crate) epoch: Option<u32>,
}

/// A successful map request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) external_port: u16,
    /// PCP tells the external address with every mapping.
    pub(crate) external: Option<ExternalReport>,
    /// `None`: a permanent lease.
    pub(crate) lifetime: Option<Duration>,
    pub(crate) epoch: Option<u32>,
}

/// A successful check of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueryInfo {
    /// `None` from PCP (an ANNOUNCE tells no address).
    pub(crate) external: Option<ExternalReport>,
    pub(crate) epoch: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlight {
    Map,
    Unmap,
}

#[derive(Debug)]
struct Entry {
    nonce: [u8; 12],
    mapped: Option<ActiveMapping>,
    last_external_port: Option<u16>,
    in_flight: Option<InFlight>,
    /// When to send the next map request; `None` until a method is chosen.
    next_attempt: Option<Instant>,
    failures: u32,
    /// The next success is reported as `Mapped` even if the port is unchanged.
    remap: bool,
    removing: bool,
    /// `add` came while the delete was in flight: map it again afterwards.
    readd: bool,
}

/// The lifecycle state machine.
#[derive(Debug)]
pub(crate) struct Core {
    preference: Vec<MappingMethod>,
    lease: Duration,
    probe_timeout: Duration,
    phase: Phase,
    stopping: bool,
    probe_deadline: Option<Instant>,
    /// Probe results of the current round, `None` while pending.
    probes: BTreeMap<MappingMethod, Option<Result<ProbeInfo, Error>>>,
    /// The current probe round; results of older rounds are ignored.
    probe_round: u32,
    /// Whether any report about the external address came since probing began.
    external_reported: bool,
    reprobe_at: Option<Instant>,
    method: Option<MappingMethod>,
    gateway: Option<Ipv4Addr>,
    /// The last epoch seen and when: (server seconds, client time).
    epoch: Option<(u32, Instant)>,
    gateway_external: Option<Ipv4Addr>,
    public_external: Option<Ipv4Addr>,
    double_nat: bool,
    mappings: BTreeMap<Key, Entry>,
    query_at: Option<Instant>,
    query_in_flight: bool,
    rng: StdRng,
    actions: VecDeque<Action>,
    events: VecDeque<NatEvent>,
}

/// Whether an external address can be advertised: not private (RFC 1918), shared (CGNAT
/// 100.64/10), loopback, link-local, unspecified, "this network" (0/8), multicast, reserved
/// (240/4) or broadcast.
pub(crate) fn is_public(address: Ipv4Addr) -> bool {
    let [a, b, ..] = address.octets();
    let shared = a == 100 && (b & 0xc0) == 64;
    !(address.is_private()
        || shared
        || address.is_loopback()
        || address.is_link_local()
        || address.is_unspecified()
        || address.is_multicast()
        || address.is_broadcast()
        || a == 0
        || a >= 240)
}

impl Core {
    pub(crate) fn new(config: &PortMapperConfig, requests: &[Key], seed: [u8; 32]) -> Self {
        let mut core = Self {
            preference: dedup(&config.preference),
            lease: config.lease.max(Duration::from_secs(1)),
            probe_timeout: config.probe_timeout,
            phase: Phase::Probing,
            stopping: false,
            probe_deadline: None,
            probes: BTreeMap::new(),
            probe_round: 0,
            external_reported: false,
            reprobe_at: None,
            method: None,
            gateway: None,
            epoch: None,
            gateway_external: None,
            public_external: None,
            double_nat: false,
            mappings: BTreeMap::new(),
            query_at: None,
            query_in_flight: false,
            rng: StdRng::from_seed(seed),
            actions: VecDeque::new(),
            events: VecDeque::new(),
        };
        for &(protocol, port) in requests {
            core.insert(protocol, port);
        }
        core
    }

    // ---- getters ----

    /// A snapshot (with `events_dropped` 0: the driver counts those).
    pub(crate) fn state(&self) -> NatState {
        NatState {
            phase: self.phase,
            method: self.method,
            gateway: self.gateway,
            external_address: self.public_external,
            gateway_external: self.gateway_external,
            double_nat: self.double_nat,
            mappings: self
                .mappings
                .iter()
                .map(|(&(protocol, internal_port), entry)| MappingState {
                    protocol,
                    internal_port,
                    mapped: entry.mapped,
                })
                .collect(),
            events_dropped: 0,
        }
    }

    /// Shutdown finished: every mapping deleted (or its delete failed).
    pub(crate) fn is_finished(&self) -> bool {
        self.stopping && self.mappings.is_empty()
    }

    // ---- outputs ----

    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<NatEvent> {
        self.events.pop_front()
    }

    /// The next time [`Core::handle_timeout`] has work.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.stopping {
            return None;
        }
        let mut times: Vec<Option<Instant>> = Vec::new();
        match self.phase {
            Phase::Probing => times.push(self.probe_deadline),
            Phase::NoGateway => times.push(self.reprobe_at),
            Phase::Active => {
                if !self.query_in_flight {
                    times.push(self.query_at);
                }
                for entry in self.mappings.values() {
                    if entry.in_flight.is_none() && !entry.removing {
                        times.push(entry.next_attempt);
                        times.push(entry.mapped.and_then(|m| m.expires_at));
                    }
                }
            }
            Phase::Stopped => {}
        }
        times.into_iter().flatten().min()
    }

    // ---- inputs ----

    /// Begins: probes every method in the preference list.
    pub(crate) fn start(&mut self, now: Instant) {
        self.begin_probe(now);
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        match self.phase {
            Phase::Probing if self.probe_deadline.is_some_and(|d| d <= now) => {
                for result in self.probes.values_mut().filter(|r| r.is_none()) {
                    *result = Some(Err(Error::Timeout(self.probe_timeout)));
                }
                self.try_select(now);
            }
            Phase::NoGateway if self.reprobe_at.is_some_and(|t| t <= now) => self.begin_probe(now),
            Phase::Active => {
                self.expire(now);
                if let Some(method) = self.method
                    && !self.query_in_flight
                    && self.query_at.is_some_and(|t| t <= now)
                {
                    self.query_in_flight = true;
                    self.actions.push_back(Action::QueryExternal(method));
                }
            }
            _ => {}
        }
        self.pump(now);
    }

    /// Asks for a mapping of `port`; nothing happens if it is already requested.
    pub(crate) fn add(&mut self, protocol: MapProtocol, port: u16, now: Instant) {
        if self.stopping {
            return;
        }
        if let Some(entry) = self.mappings.get_mut(&(protocol, port)) {
            if entry.removing {
                match entry.in_flight {
                    Some(InFlight::Unmap) => entry.readd = true,
                    _ => entry.removing = false,
                }
            }
        } else {
            self.insert(protocol, port);
            if self.phase == Phase::Active
                && let Some(entry) = self.mappings.get_mut(&(protocol, port))
            {
                entry.next_attempt = Some(now);
            }
        }
        self.pump(now);
    }

    /// Removes a mapping: deletes it on the gateway, then reports `Removed`.
    pub(crate) fn remove(&mut self, protocol: MapProtocol, port: u16, now: Instant) {
        self.begin_remove((protocol, port), now);
        self.pump(now);
    }

    /// Stops: cancels probing and deletes every mapping. [`Core::is_finished`] says when done.
    pub(crate) fn shutdown(&mut self, now: Instant) {
        self.stopping = true;
        self.phase = Phase::Stopped;
        self.probes.clear();
        let keys: Vec<Key> = self.mappings.keys().copied().collect();
        for key in keys {
            self.begin_remove(key, now);
        }
        self.pump(now);
    }

    /// A probe's result. After the method was chosen, a late probe of another method still
    /// tells the external address if nothing else did yet (PCP's ANNOUNCE does not; NAT-PMP's
    /// probe of the same gateway does, which is how a double NAT shows with PCP).
    pub(crate) fn probe_done(
        &mut self,
        method: MappingMethod,
        round: u32,
        result: Result<ProbeInfo, Error>,
        now: Instant,
    ) {
        if round != self.probe_round || self.stopping {
            return;
        }
        if self.phase == Phase::Active {
            if let Ok(ProbeInfo { gateway, external: Some(report), .. }) = result
                && !self.external_reported
                && self.gateway == Some(gateway)
            {
                self.observe_external(report);
            }
            return;
        }
        if self.phase != Phase::Probing {
            return;
        }
        match self.probes.get_mut(&method) {
            Some(slot @ None) => *slot = Some(result),
            _ => return,
        }
        self.try_select(now);
        self.pump(now);
    }

    pub(crate) fn map_done(
        &mut self,
        key: Key,
        method: MappingMethod,
        result: Result<Grant, Error>,
        now: Instant,
    ) {
        let Some(entry) = self.mappings.get_mut(&key) else { return };
        if entry.in_flight != Some(InFlight::Map) {
            return;
        }
        entry.in_flight = None;
        if entry.removing {
            match result {
                Ok(grant) => {
                    entry.mapped = Some(held(now, grant.external_port, grant.lifetime, self.lease));
                    self.start_unmap(key, method);
                }
                Err(_) => self.finish_remove(key, Ok(()), now),
            }
            return;
        }
        if self.method != Some(method) {
            // A result from before the method changed: map again with the current one.
            entry.next_attempt = Some(now);
            self.pump(now);
            return;
        }
        match result {
            Ok(grant) => self.granted(key, method, grant, now),
            Err(error) => self.map_failed(key, error, now),
        }
        self.pump(now);
    }

    pub(crate) fn unmap_done(&mut self, key: Key, result: Result<(), Error>, now: Instant) {
        if self.mappings.get(&key).is_some_and(|e| e.in_flight == Some(InFlight::Unmap)) {
            self.finish_remove(key, result, now);
        }
        self.pump(now);
    }

    pub(crate) fn query_done(
        &mut self,
        method: MappingMethod,
        result: Result<QueryInfo, Error>,
        now: Instant,
    ) {
        if !self.query_in_flight || self.method != Some(method) || self.stopping {
            return;
        }
        self.query_in_flight = false;
        self.query_at = Some(now + self.check_interval());
        match result {
            Ok(info) => {
                if let Some(epoch) = info.epoch
                    && self.observe_epoch(epoch, now)
                {
                    self.restarted(now, None);
                }
                if let Some(report) = info.external {
                    self.observe_external(report);
                }
            }
            Err(error) => {
                let unreachable = error.is_unreachable();
                self.events.push_back(NatEvent::QueryFailed { method, error });
                if unreachable && !self.has_live_mapping(now) {
                    self.begin_probe(now);
                }
            }
        }
        self.pump(now);
    }
}

#[cfg(test)]
mod tests;
