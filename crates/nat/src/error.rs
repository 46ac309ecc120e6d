//! Errors of requests to the gateway.

use std::io;
use std::time::Duration;

use crate::natpmp::NatPmpError;
use crate::pcp::PcpError;

/// Why a request to the gateway (a probe, a mapping, a query or a delete) failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answered within the time bound (retransmissions included).
    #[error("no answer from the gateway within {0:?}")]
    Timeout(Duration),
    /// The gateway's host answered with ICMP port unreachable: nothing listens on the port.
    #[error("the gateway refused the request: nothing listens on its port")]
    Refused,
    /// A socket error.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The NAT-PMP gateway answered with an error result code.
    #[error(transparent)]
    NatPmp(#[from] NatPmpError),
    /// The PCP server answered with an error result code.
    #[error(transparent)]
    Pcp(#[from] PcpError),
    /// The UPnP gateway failed or refused.
    #[error(transparent)]
    Upnp(#[from] UpnpError),
    /// No gateway to ask: for NAT-PMP and PCP none configured and no IPv4 default route in
    /// `/proc/net/route`; for UPnP none found.
    #[error("no gateway (none configured, no IPv4 default route, or none found)")]
    NoGateway,
    /// The task performing the request panicked (a bug); reported instead of crashing.
    #[error("the request's task failed")]
    TaskFailed,
    /// The gateway answered, but not as the protocol requires (e.g. a successful NAT-PMP map
    /// response for another port, or a PCP MAP response without an external address).
    #[error("the gateway's answer does not fit the request")]
    UnexpectedResponse,
}

/// A failure of the UPnP IGD gateway, as igd-next reports it.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum UpnpError {
    /// SSDP search or reading the device description failed.
    #[error("UPnP search: {0}")]
    Search(#[from] igd_next::SearchError),
    /// GetExternalIPAddress failed.
    #[error("UPnP GetExternalIPAddress: {0}")]
    ExternalIp(#[from] igd_next::GetExternalIpError),
    /// AddPortMapping failed.
    #[error("UPnP AddPortMapping: {0}")]
    AddPort(#[from] igd_next::AddPortError),
    /// AddAnyPortMapping (or igd-next's fallback to AddPortMapping with random ports) failed.
    #[error("UPnP AddAnyPortMapping: {0}")]
    AddAnyPort(#[from] igd_next::AddAnyPortError),
    /// DeletePortMapping failed.
    #[error("UPnP DeletePortMapping: {0}")]
    RemovePort(#[from] igd_next::RemovePortError),
    /// The gateway's control URL is at an IPv6 address; this crate maps IPv4 only.
    #[error("UPnP gateway at an IPv6 address")]
    Ipv6Gateway,
}

impl Error {
    /// Whether the gateway did not answer at all (timeout, port unreachable, no route), as
    /// opposed to answering with an error.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Refused | Self::NoGateway => true,
            Self::Io(error) => matches!(
                error.kind(),
                io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::AddrNotAvailable
            ),
            Self::Upnp(error) => error.is_unreachable(),
            _ => false,
        }
    }
}

impl UpnpError {
    /// Whether the gateway did not answer: no SSDP answer, or its HTTP server unreachable
    /// (connection refused, reset, timed out), as opposed to a UPnP error answer.
    pub fn is_unreachable(&self) -> bool {
        use igd_next::{AddAnyPortError, AddPortError, GetExternalIpError, RemovePortError};
        let request = match self {
            Self::Search(_) => return true,
            Self::ExternalIp(GetExternalIpError::RequestError(request))
            | Self::AddPort(AddPortError::RequestError(request))
            | Self::AddAnyPort(AddAnyPortError::RequestError(request))
            | Self::RemovePort(RemovePortError::RequestError(request)) => request,
            _ => return false,
        };
        matches!(
            request,
            igd_next::RequestError::IoError(_)
                | igd_next::RequestError::HyperError(_)
                | igd_next::RequestError::HyperClientError(_)
        )
    }
}
