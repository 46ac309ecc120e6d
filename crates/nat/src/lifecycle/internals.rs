//! The lifecycle core's internals: probing rounds, selection, requests, epochs, addresses.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::Rng;

use super::{
    Action, CHECK_INTERVAL, Core, Entry, ExternalReport, Grant, InFlight, Key, MIN_RENEW,
    REPROBE_INTERVAL, RETRY_INITIAL, RETRY_MAX, is_public,
};
use crate::types::{ActiveMapping, Phase};
use crate::{Error, MapProtocol, MappingMethod, NatEvent};

impl Core {
    pub(super) fn insert(&mut self, protocol: MapProtocol, port: u16) {
        let mut nonce = [0u8; 12];
        self.rng.fill_bytes(&mut nonce);
        self.mappings.insert(
            (protocol, port),
            Entry {
                nonce,
                mapped: None,
                last_external_port: None,
                in_flight: None,
                next_attempt: None,
                failures: 0,
                remap: false,
                removing: false,
                readd: false,
            },
        );
    }

    pub(super) fn begin_probe(&mut self, now: Instant) {
        self.phase = Phase::Probing;
        self.method = None;
        self.gateway = None;
        self.epoch = None;
        self.query_at = None;
        self.query_in_flight = false;
        self.reprobe_at = None;
        self.external_reported = false;
        self.probe_round = self.probe_round.wrapping_add(1);
        self.probe_deadline = Some(now + self.probe_timeout);
        self.probes = self.preference.iter().map(|&m| (m, None)).collect();
        for &method in &self.preference {
            self.actions.push_back(Action::Probe { method, round: self.probe_round });
        }
        if self.preference.is_empty() {
            self.no_gateway(now);
        }
    }

    /// Chooses the most preferred method that answered, once every more preferred one failed.
    pub(super) fn try_select(&mut self, now: Instant) {
        for method in self.preference.clone() {
            match self.probes.get(&method) {
                Some(Some(Ok(_))) => return self.select(method, now),
                Some(Some(Err(_))) => continue,
                _ => return,
            }
        }
        self.no_gateway(now);
    }

    pub(super) fn select(&mut self, method: MappingMethod, now: Instant) {
        let mut probes = std::mem::take(&mut self.probes);
        let Some(Some(Ok(info))) = probes.remove(&method) else { return };
        self.phase = Phase::Active;
        self.method = Some(method);
        self.gateway = Some(info.gateway);
        self.probe_deadline = None;
        self.events.push_back(NatEvent::GatewayFound { gateway: info.gateway, method });
        self.epoch = info.epoch.map(|epoch| (epoch, now));
        // The chosen method's report, else what another method said about the same gateway
        // (PCP's ANNOUNCE does not tell the external address; NAT-PMP's probe does).
        let others = self.preference.iter().filter_map(|m| match probes.get(m) {
            Some(Some(Ok(other))) => other.external,
            _ => None,
        });
        if let Some(report) = info.external.or(others.into_iter().next()) {
            self.observe_external(report);
        }
        for entry in self.mappings.values_mut().filter(|e| !e.removing) {
            entry.next_attempt = Some(now);
            entry.failures = 0;
            entry.remap = true;
        }
        self.query_at = Some(now + self.check_interval());
    }

    pub(super) fn no_gateway(&mut self, now: Instant) {
        let mut probes = std::mem::take(&mut self.probes);
        let failures = self
            .preference
            .iter()
            .filter_map(|m| match probes.remove(m) {
                Some(Some(Err(error))) => Some((*m, error)),
                _ => None,
            })
            .collect();
        self.phase = Phase::NoGateway;
        self.method = None;
        self.gateway = None;
        self.probe_deadline = None;
        self.reprobe_at = Some(now + REPROBE_INTERVAL);
        self.set_public(None);
        self.events.push_back(NatEvent::NoGateway { probes: failures });
    }

    /// Sends the map requests that are due.
    pub(super) fn pump(&mut self, now: Instant) {
        let Some(method) = self.method.filter(|_| self.phase == Phase::Active && !self.stopping)
        else {
            return;
        };
        for (&(protocol, internal_port), entry) in &mut self.mappings {
            let due = entry.next_attempt.is_some_and(|t| t <= now);
            if entry.in_flight.is_some() || entry.removing || !due {
                continue;
            }
            entry.in_flight = Some(InFlight::Map);
            let external_port = entry
                .mapped
                .map(|m| m.external_port)
                .or(entry.last_external_port)
                .unwrap_or(internal_port);
            self.actions.push_back(Action::Map {
                method,
                protocol,
                internal_port,
                external_port,
                lifetime: self.lease,
                nonce: entry.nonce,
            });
        }
    }

    pub(super) fn granted(&mut self, key: Key, method: MappingMethod, grant: Grant, now: Instant) {
        let restarted = grant.epoch.is_some_and(|epoch| self.observe_epoch(epoch, now));
        if restarted {
            self.restarted(now, Some(key));
        }
        if let Some(report) = grant.external {
            self.observe_external(report);
        }
        let interval = self.renew_interval(grant.lifetime);
        let external = self.public_external;
        let lease = self.lease;
        let Some(entry) = self.mappings.get_mut(&key) else { return };
        let same_port = entry.mapped.is_some_and(|m| m.external_port == grant.external_port);
        let renewal = same_port && !entry.remap && !restarted;
        entry.mapped = Some(held(now, grant.external_port, grant.lifetime, lease));
        entry.last_external_port = Some(grant.external_port);
        entry.failures = 0;
        entry.remap = false;
        entry.next_attempt = Some(now + interval);
        let (protocol, internal_port) = key;
        let external_port = grant.external_port;
        self.events.push_back(if renewal {
            NatEvent::Renewed { protocol, internal_port, external_port, lifetime: grant.lifetime }
        } else {
            NatEvent::Mapped {
                protocol,
                internal_port,
                external_port,
                external: external.map(|a| SocketAddrV4::new(a, external_port)),
                lifetime: grant.lifetime,
                method,
            }
        });
    }

    pub(super) fn map_failed(&mut self, key: Key, error: Error, now: Instant) {
        let unreachable = error.is_unreachable();
        let (protocol, internal_port) = key;
        self.events.push_back(NatEvent::MappingFailed { protocol, internal_port, error });
        let Some(entry) = self.mappings.get_mut(&key) else { return };
        entry.failures = entry.failures.saturating_add(1);
        let backoff =
            RETRY_INITIAL.saturating_mul(1 << (entry.failures - 1).min(16)).min(RETRY_MAX);
        let retry = match entry.mapped.and_then(|m| m.expires_at) {
            // Renewal failed but the mapping still holds: retry before it ends.
            Some(expires) if expires > now => backoff.min((expires - now) / 2).max(MIN_RENEW),
            _ => backoff,
        };
        entry.next_attempt = Some(now + retry);
        self.expire(now);
        if unreachable && !self.has_live_mapping(now) {
            self.begin_probe(now);
        }
    }

    /// Reports mappings whose lifetime ended as lost.
    pub(super) fn expire(&mut self, now: Instant) {
        for (&(protocol, internal_port), entry) in &mut self.mappings {
            let Some(mapped) = entry.mapped else { continue };
            if entry.in_flight.is_some() || mapped.expires_at.is_none_or(|t| t > now) {
                continue;
            }
            entry.mapped = None;
            entry.remap = true;
            let external_port = mapped.external_port;
            self.events.push_back(NatEvent::Lost { protocol, internal_port, external_port });
        }
    }

    pub(super) fn has_live_mapping(&self, now: Instant) -> bool {
        self.mappings.values().any(|e| {
            e.mapped.is_some_and(|m| m.expires_at.is_none_or(|t| t > now))
                || e.in_flight == Some(InFlight::Unmap)
        })
    }

    pub(super) fn begin_remove(&mut self, key: Key, now: Instant) {
        let Some(entry) = self.mappings.get_mut(&key) else { return };
        if entry.removing {
            entry.readd = false;
            return;
        }
        entry.removing = true;
        entry.readd = false;
        match (entry.in_flight, entry.mapped, self.method) {
            (Some(_), _, _) => {} // map_done finishes it
            (None, Some(_), Some(method)) => self.start_unmap(key, method),
            (None, _, _) => self.finish_remove(key, Ok(()), now),
        }
    }

    pub(super) fn start_unmap(&mut self, key: Key, method: MappingMethod) {
        let Some(entry) = self.mappings.get_mut(&key) else { return };
        let Some(mapped) = entry.mapped else { return };
        entry.in_flight = Some(InFlight::Unmap);
        self.actions.push_back(Action::Unmap {
            method,
            protocol: key.0,
            internal_port: key.1,
            external_port: mapped.external_port,
            nonce: entry.nonce,
        });
    }

    pub(super) fn finish_remove(&mut self, key: Key, result: Result<(), Error>, now: Instant) {
        let Some(entry) = self.mappings.remove(&key) else { return };
        let (protocol, internal_port) = key;
        let external_port = entry.mapped.map(|m| m.external_port);
        self.events.push_back(NatEvent::Removed { protocol, internal_port, external_port, result });
        if entry.readd && !self.stopping {
            self.insert(protocol, internal_port);
            if self.phase == Phase::Active
                && let Some(entry) = self.mappings.get_mut(&key)
            {
                entry.next_attempt = Some(now);
            }
        }
    }

    /// RFC 6887 §8.5 (also used for NAT-PMP, RFC 6886 §3.6): whether the server lost state.
    pub(super) fn observe_epoch(&mut self, server: u32, now: Instant) -> bool {
        let restarted = self.epoch.is_some_and(|(previous, at)| {
            let client_delta = now.saturating_duration_since(at).as_secs_f64();
            let server_delta = f64::from(server) - f64::from(previous);
            server_delta < -1.0
                || client_delta + 2.0 < server_delta - server_delta / 16.0
                || server_delta + 2.0 < client_delta - client_delta / 16.0
        });
        self.epoch = Some((server, now));
        restarted
    }

    /// The gateway lost its mappings: make them all again (except `except`, which the
    /// response that told us has just made).
    pub(super) fn restarted(&mut self, now: Instant, except: Option<Key>) {
        let Some(method) = self.method else { return };
        self.events.push_back(NatEvent::GatewayRestarted { method });
        for (key, entry) in &mut self.mappings {
            if Some(*key) == except || entry.removing {
                continue;
            }
            entry.remap = true;
            entry.failures = 0;
            if entry.in_flight.is_none() {
                entry.next_attempt = Some(now);
            }
        }
        if method != MappingMethod::Pcp && !self.query_in_flight {
            self.query_at = Some(now);
        }
    }

    pub(super) fn observe_external(&mut self, report: ExternalReport) {
        let gateway_external = match report {
            ExternalReport::Address(address) => Some(address),
            ExternalReport::Missing => None,
        };
        self.gateway_external = gateway_external;
        self.external_reported = true;
        let public = gateway_external.filter(|a| is_public(*a));
        if public.is_none() && !self.double_nat {
            self.events.push_back(NatEvent::DoubleNat { gateway_external });
        }
        self.double_nat = public.is_none();
        self.set_public(public);
    }

    pub(super) fn set_public(&mut self, new: Option<Ipv4Addr>) {
        if new != self.public_external {
            let old = std::mem::replace(&mut self.public_external, new);
            self.events.push_back(NatEvent::ExternalAddressChanged { old, new });
        }
    }

    /// How often the gateway is checked: like renewals, but at least every [`CHECK_INTERVAL`].
    pub(super) fn check_interval(&self) -> Duration {
        self.renew_interval(None).min(CHECK_INTERVAL)
    }

    /// Half the granted lifetime (half the lease for a permanent one), at least [`MIN_RENEW`].
    pub(super) fn renew_interval(&self, lifetime: Option<Duration>) -> Duration {
        (lifetime.unwrap_or(self.lease) / 2).max(MIN_RENEW)
    }
}

pub(super) fn held(
    now: Instant,
    external_port: u16,
    lifetime: Option<Duration>,
    lease: Duration,
) -> ActiveMapping {
    let renew = (lifetime.unwrap_or(lease) / 2).max(MIN_RENEW);
    ActiveMapping {
        external_port,
        lifetime,
        renew_at: now + renew,
        expires_at: lifetime.map(|l| now + l),
    }
}

pub(super) fn dedup(methods: &[MappingMethod]) -> Vec<MappingMethod> {
    let mut out: Vec<MappingMethod> = Vec::new();
    for &method in methods {
        if !out.contains(&method) {
            out.push(method);
        }
    }
    out
}
