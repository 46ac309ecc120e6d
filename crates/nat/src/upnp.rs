//! UPnP IGD through igd-next (tokio), every call bounded by our own timeout.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use igd_next::aio::Gateway;
use igd_next::aio::tokio::Tokio;
use igd_next::{
    AddAnyPortError, AddPortError, GetExternalIpError, PortMappingProtocol, RequestError,
    SearchOptions,
};

use crate::lifecycle::ExternalReport;
use crate::{Error, MapProtocol, UpnpError};

/// A UPnP IGD gateway found by SSDP.
#[derive(Debug)]
pub(crate) struct Upnp {
    gateway: Gateway<Tokio>,
    address: Ipv4Addr,
    local: Ipv4Addr,
    /// The gateway answered 725 (OnlyPermanentLeasesSupported): ask for lease 0 from now on.
    permanent_only: AtomicBool,
}

/// Runs `future` bounded by `timeout`.
async fn bounded<T, E: Into<Error>>(
    timeout: Duration,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

impl From<igd_next::SearchError> for Error {
    fn from(error: igd_next::SearchError) -> Self {
        Self::Upnp(UpnpError::Search(error))
    }
}

impl From<AddPortError> for Error {
    fn from(error: AddPortError) -> Self {
        Self::Upnp(UpnpError::AddPort(error))
    }
}

impl From<AddAnyPortError> for Error {
    fn from(error: AddAnyPortError) -> Self {
        Self::Upnp(UpnpError::AddAnyPort(error))
    }
}

impl From<igd_next::RemovePortError> for Error {
    fn from(error: igd_next::RemovePortError) -> Self {
        Self::Upnp(UpnpError::RemovePort(error))
    }
}

fn protocol(protocol: MapProtocol) -> PortMappingProtocol {
    match protocol {
        MapProtocol::Tcp => PortMappingProtocol::TCP,
        MapProtocol::Udp => PortMappingProtocol::UDP,
    }
}

fn is_725(error: &AddAnyPortError) -> bool {
    matches!(
        error,
        AddAnyPortError::OnlyPermanentLeasesSupported
            | AddAnyPortError::RequestError(RequestError::ErrorCode(725, _))
    )
}

impl Upnp {
    /// Searches by SSDP (igd-next's own search timeout is not honoured, so ours bounds it),
    /// then finds this host's address towards the gateway.
    pub(crate) async fn search(timeout: Duration) -> Result<Self, Error> {
        let mut options = SearchOptions::default();
        options.timeout = Some(timeout);
        options.single_search_timeout = Some(timeout);
        let gateway = bounded(timeout, igd_next::aio::tokio::search_gateway(options)).await?;
        let SocketAddr::V4(control) = gateway.addr else {
            return Err(Error::Upnp(UpnpError::Ipv6Gateway));
        };
        let address = *control.ip();
        let local = local_address_towards(address).await?;
        Ok(Self { gateway, address, local, permanent_only: AtomicBool::new(false) })
    }

    /// The gateway's address (of its control URL).
    pub(crate) fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// GetExternalIPAddress. A gateway that answers with an error or an empty address (as
    /// miniupnpd does when its WAN address is private) has none: [`ExternalReport::Missing`].
    pub(crate) async fn external(&self, timeout: Duration) -> Result<ExternalReport, Error> {
        let result = tokio::time::timeout(timeout, self.gateway.get_external_ip()).await;
        match result {
            Err(_) => Err(Error::Timeout(timeout)),
            Ok(Ok(IpAddr::V4(address))) => Ok(ExternalReport::Address(address)),
            Ok(Ok(IpAddr::V6(_))) => Ok(ExternalReport::Missing),
            Ok(Err(
                GetExternalIpError::ActionNotAuthorized
                | GetExternalIpError::RequestError(
                    RequestError::InvalidResponse(_) | RequestError::ErrorCode(..),
                ),
            )) => Ok(ExternalReport::Missing),
            Ok(Err(error)) => Err(Error::Upnp(UpnpError::ExternalIp(error))),
        }
    }

    /// Maps `internal_port` asking for `external_port` first (AddPortMapping); if another host
    /// holds that port (718 ConflictInMappingEntry), AddAnyPortMapping (igd-next falls back to
    /// AddPortMapping with random ports where the gateway lacks it). A gateway refusing
    /// non-zero leases (725) gets a permanent one from then on. Returns the external port and
    /// the lifetime (`None`: permanent).
    ///
    /// A renewal is the same call with the port already granted. Known quirk: miniupnpd 2.3.1
    /// answers an AddPortMapping for an external port that this same host already maps to
    /// *another* internal port with success, but keeps the old internal port ("updating
    /// existing port mapping"); UPnP gives no way to notice that short of listing the table.
    pub(crate) async fn map(
        &self,
        map_protocol: MapProtocol,
        internal_port: u16,
        external_port: u16,
        lease: Duration,
        description: &str,
        timeout: Duration,
    ) -> Result<(u16, Option<Duration>), Error> {
        let proto = protocol(map_protocol);
        let local = SocketAddr::V4(SocketAddrV4::new(self.local, internal_port));
        let external_port = if external_port == 0 { internal_port } else { external_port };
        let mut seconds = if self.permanent_only.load(Ordering::Relaxed) {
            0
        } else {
            u32::try_from(lease.as_secs()).unwrap_or(u32::MAX).max(1)
        };
        let add = |seconds| {
            bounded(
                timeout,
                self.gateway.add_port(proto, external_port, local, seconds, description),
            )
        };
        let mut result = add(seconds).await;
        if let Err(Error::Upnp(UpnpError::AddPort(AddPortError::OnlyPermanentLeasesSupported))) =
            result
        {
            self.permanent_only.store(true, Ordering::Relaxed);
            seconds = 0;
            result = add(seconds).await;
        }
        let port = match result {
            Ok(()) => external_port,
            Err(Error::Upnp(UpnpError::AddPort(
                AddPortError::PortInUse | AddPortError::SamePortValuesRequired,
            ))) => {
                let any = |seconds| self.gateway.add_any_port(proto, local, seconds, description);
                match tokio::time::timeout(timeout, any(seconds)).await {
                    Err(_) => return Err(Error::Timeout(timeout)),
                    Ok(Ok(port)) => port,
                    Ok(Err(error)) if is_725(&error) && seconds != 0 => {
                        self.permanent_only.store(true, Ordering::Relaxed);
                        seconds = 0;
                        bounded(timeout, any(seconds)).await?
                    }
                    Ok(Err(error)) => return Err(error.into()),
                }
            }
            Err(error) => return Err(error),
        };
        let lifetime = (seconds != 0).then(|| Duration::from_secs(u64::from(seconds)));
        Ok((port, lifetime))
    }

    /// DeletePortMapping.
    pub(crate) async fn unmap(
        &self,
        map_protocol: MapProtocol,
        external_port: u16,
        timeout: Duration,
    ) -> Result<(), Error> {
        bounded(timeout, self.gateway.remove_port(protocol(map_protocol), external_port)).await
    }
}

/// This host's address on the route to `gateway` (a connected UDP socket; nothing is sent).
pub(crate) async fn local_address_towards(gateway: Ipv4Addr) -> Result<Ipv4Addr, Error> {
    let socket = tokio::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await?;
    socket.connect(SocketAddrV4::new(gateway, crate::natpmp::PORT)).await?;
    match socket.local_addr()? {
        SocketAddr::V4(addr) => Ok(*addr.ip()),
        SocketAddr::V6(_) => Err(Error::UnexpectedResponse),
    }
}
