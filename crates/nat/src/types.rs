//! The mapper's vocabulary: configuration, events and the state snapshot.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::Error;

/// A port-mapping protocol spoken with the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MappingMethod {
    /// Port Control Protocol (RFC 6887), UDP port 5351.
    Pcp,
    /// NAT Port Mapping Protocol (RFC 6886), UDP port 5351.
    NatPmp,
    /// UPnP Internet Gateway Device (SSDP discovery, SOAP over HTTP).
    Upnp,
}

/// The transport protocol of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for MappingMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pcp => "PCP",
            Self::NatPmp => "NAT-PMP",
            Self::Upnp => "UPnP",
        })
    }
}

impl fmt::Display for MapProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}

/// How the [`PortMapper`](crate::PortMapper) behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapperConfig {
    /// The methods to probe, most preferred first; the mapper maps with the first one that
    /// answers. Default: PCP, NAT-PMP, UPnP. A method not listed is never used (nor probed).
    pub preference: Vec<MappingMethod>,
    /// The lease (lifetime) asked for each mapping; mappings are renewed at half the lifetime
    /// the gateway grants. Default: 3600 s. Whole seconds; at least 1 s.
    pub lease: Duration,
    /// The gateway's address for NAT-PMP and PCP. `None` (default): the default route's
    /// gateway from `/proc/net/route`. UPnP finds its gateway by SSDP either way.
    pub gateway: Option<Ipv4Addr>,
    /// How long the probes may take together; when nothing answered by then the mapper
    /// reports [`NatEvent::NoGateway`]. Default: 3 s.
    pub probe_timeout: Duration,
    /// The bound of each later request (map, renew, query, delete), retransmissions
    /// included. Default: 3 s.
    pub request_timeout: Duration,
    /// The description of UPnP mappings. Default: `"sinew"`.
    pub description: String,
    /// The capacity of the event channel. Default: 64. When it is full, events are dropped
    /// and counted in [`NatState::events_dropped`]; the mapper never waits for the reader.
    pub event_capacity: usize,
}

impl Default for PortMapperConfig {
    fn default() -> Self {
        Self {
            preference: vec![MappingMethod::Pcp, MappingMethod::NatPmp, MappingMethod::Upnp],
            lease: Duration::from_secs(3600),
            gateway: None,
            probe_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(3),
            description: "sinew".to_owned(),
            event_capacity: 64,
        }
    }
}

/// Something the mapper did or noticed, in the order it happened.
#[non_exhaustive]
#[derive(Debug)]
pub enum NatEvent {
    /// Probing found a gateway; every mapping is made with `method` from now on.
    GatewayFound {
        /// The gateway's LAN address.
        gateway: Ipv4Addr,
        /// The method in use.
        method: MappingMethod,
    },
    /// No method answered within the probe timeout. The mapper probes again later
    /// (every minute) and reports this after every round that finds nothing.
    NoGateway {
        /// Why each method failed, in preference order.
        probes: Vec<(MappingMethod, Error)>,
    },
    /// The public external address changed. `None` means there is no public address to
    /// advertise (lost, or a double NAT).
    ExternalAddressChanged {
        /// The previous address.
        old: Option<Ipv4Addr>,
        /// The new address.
        new: Option<Ipv4Addr>,
    },
    /// The gateway's external address is private, shared (CGNAT), link-local, loopback or
    /// unspecified, or the gateway has none: there is another NAT beyond it. The address is
    /// not advertised; mappings may still exist on this gateway but are not reachable from
    /// the internet.
    DoubleNat {
        /// What the gateway reported as its external address, if anything.
        gateway_external: Option<Ipv4Addr>,
    },
    /// A mapping was created (or re-created after a gateway restart, a loss, or a change of
    /// external port).
    Mapped {
        /// TCP or UDP.
        protocol: MapProtocol,
        /// The port on this host.
        internal_port: u16,
        /// The external port on the gateway.
        external_port: u16,
        /// The address to advertise: the public external address and the external port.
        /// `None` while the external address is unknown, or private (double NAT).
        external: Option<SocketAddrV4>,
        /// The granted lifetime; `None` for a permanent lease (a UPnP gateway that takes only
        /// those), which the mapper still re-adds at half the configured lease.
        lifetime: Option<Duration>,
        /// The method that made it.
        method: MappingMethod,
    },
    /// A mapping was renewed with the same external port.
    Renewed {
        /// TCP or UDP.
        protocol: MapProtocol,
        /// The port on this host.
        internal_port: u16,
        /// The external port on the gateway.
        external_port: u16,
        /// The granted lifetime (`None`: permanent).
        lifetime: Option<Duration>,
    },
    /// A request to create or renew a mapping failed. An existing mapping stays until its
    /// lifetime ends ([`NatEvent::Lost`]); the mapper retries with backoff.
    MappingFailed {
        /// TCP or UDP.
        protocol: MapProtocol,
        /// The port on this host.
        internal_port: u16,
        /// Why.
        error: Error,
    },
    /// A mapping expired before it could be renewed. The mapper keeps trying to map it.
    Lost {
        /// TCP or UDP.
        protocol: MapProtocol,
        /// The port on this host.
        internal_port: u16,
        /// The external port it had.
        external_port: u16,
    },
    /// The gateway lost its state (its NAT-PMP/PCP epoch went back, or advanced much less
    /// than the time that passed; RFC 6887 §8.5): every mapping is made again. Noticed at the
    /// next renewal or check of the gateway, so within a minute. UPnP has no epoch: there a
    /// lost mapping comes back at its next renewal, which re-adds it.
    GatewayRestarted {
        /// The method that noticed.
        method: MappingMethod,
    },
    /// A check of the gateway (external address or PCP ANNOUNCE) failed; the mapper checks
    /// again at the next interval.
    QueryFailed {
        /// The method in use.
        method: MappingMethod,
        /// Why.
        error: Error,
    },
    /// A mapping was removed ([`PortMapper::remove`](crate::PortMapper::remove) or
    /// shutdown). `result` is the gateway's answer to the delete; a mapping whose delete
    /// failed ends with its lifetime.
    Removed {
        /// TCP or UDP.
        protocol: MapProtocol,
        /// The port on this host.
        internal_port: u16,
        /// The external port it had, if it was mapped.
        external_port: Option<u16>,
        /// The delete's outcome (`Ok` also when there was nothing to delete).
        result: Result<(), Error>,
    },
}

/// Where the mapper is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Probing the methods.
    #[default]
    Probing,
    /// A method was chosen; mapping.
    Active,
    /// No gateway answered; waiting to probe again.
    NoGateway,
    /// Shutting down or stopped.
    Stopped,
}

/// A cheap snapshot of the mapper ([`PortMapper::state`](crate::PortMapper::state)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatState {
    /// Where the mapper is.
    pub phase: Phase,
    /// The method in use.
    pub method: Option<MappingMethod>,
    /// The gateway in use.
    pub gateway: Option<Ipv4Addr>,
    /// The public external address to advertise (never a private one).
    pub external_address: Option<Ipv4Addr>,
    /// What the gateway reports as its external address, even when it is private.
    pub gateway_external: Option<Ipv4Addr>,
    /// The gateway has no public external address: another NAT is beyond it.
    pub double_nat: bool,
    /// Every requested port, in (protocol, port) order.
    pub mappings: Vec<MappingState>,
    /// Events dropped because the event channel was full.
    pub events_dropped: u64,
}

/// One requested port in a [`NatState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingState {
    /// TCP or UDP.
    pub protocol: MapProtocol,
    /// The port on this host.
    pub internal_port: u16,
    /// Present while the gateway holds the mapping.
    pub mapped: Option<ActiveMapping>,
}

/// A mapping the gateway holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveMapping {
    /// The external port.
    pub external_port: u16,
    /// The granted lifetime (`None`: permanent).
    pub lifetime: Option<Duration>,
    /// When the mapper renews it.
    pub renew_at: Instant,
    /// When it expires unless renewed (`None`: permanent).
    pub expires_at: Option<Instant>,
}
