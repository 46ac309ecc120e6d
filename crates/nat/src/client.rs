//! NAT-PMP and PCP over UDP (tokio): one request at a time, retransmitted, matched.
//!
//! A client owns a UDP socket connected to the gateway's port 5351, so the kernel drops
//! datagrams from any other address and reports ICMP port unreachable as
//! [`Error::Refused`]. A request is sent, then sent again after 250 ms, 500 ms, 1 s, ...
//! (RFC 6886 §3.1, RFC 6887 §8.1.1), until a matching response arrives or the total timeout
//! passes ([`Error::Timeout`]). Datagrams that do not decode or do not answer the request
//! (another opcode, another port, another PCP nonce) are ignored. Methods take `&mut self`:
//! one request in flight per socket, so responses are never taken by another request.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::natpmp::{self, NatPmpError};
use crate::pcp::{self, MapData, PcpError};
use crate::{Error, MapProtocol};

/// The first retransmission interval; each next one doubles.
pub const INITIAL_RETRANSMIT: Duration = Duration::from_millis(250);

/// Room for the largest PCP message and some.
const RECV_BUF: usize = 1536;

/// A UDP socket connected to the gateway's NAT-PMP/PCP port.
#[derive(Debug)]
struct Socket {
    socket: UdpSocket,
    local: Ipv4Addr,
}

impl Socket {
    async fn connect(gateway: SocketAddrV4) -> Result<Self, Error> {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await?;
        socket.connect(gateway).await?;
        let local = match socket.local_addr()? {
            SocketAddr::V4(addr) => *addr.ip(),
            SocketAddr::V6(_) => return Err(Error::UnexpectedResponse),
        };
        Ok(Self { socket, local })
    }

    /// Sends `request` on the retransmission schedule until `accept` returns `Some`.
    async fn exchange<T>(
        &self,
        request: &[u8],
        timeout: Duration,
        mut accept: impl FnMut(&[u8]) -> Option<Result<T, Error>>,
    ) -> Result<T, Error> {
        let deadline = Instant::now() + timeout;
        let mut wait = INITIAL_RETRANSMIT;
        let mut buf = [0u8; RECV_BUF];
        loop {
            if let Err(error) = self.socket.send(request).await {
                return Err(socket_error(error));
            }
            let resend_at = (Instant::now() + wait).min(deadline);
            loop {
                match tokio::time::timeout_at(resend_at, self.socket.recv(&mut buf)).await {
                    Err(_elapsed) if resend_at >= deadline => return Err(Error::Timeout(timeout)),
                    Err(_elapsed) => break,
                    Ok(Err(error)) => return Err(socket_error(error)),
                    Ok(Ok(len)) => {
                        if let Some(result) = accept(&buf[..len]) {
                            return result;
                        }
                        tracing::trace!(len, "ignoring a stray datagram from the gateway");
                    }
                }
            }
            wait = wait.saturating_mul(2);
        }
    }
}

fn socket_error(error: std::io::Error) -> Error {
    if error.kind() == std::io::ErrorKind::ConnectionRefused {
        Error::Refused
    } else {
        Error::Io(error)
    }
}

/// A NAT-PMP client for one gateway.
#[derive(Debug)]
pub struct NatPmpClient {
    socket: Socket,
}

impl NatPmpClient {
    /// Binds a UDP socket and connects it to `gateway` (normally port [`natpmp::PORT`]).
    pub async fn connect(gateway: SocketAddrV4) -> Result<Self, Error> {
        Ok(Self { socket: Socket::connect(gateway).await? })
    }

    /// This host's address on the route to the gateway.
    pub fn local_address(&self) -> Ipv4Addr {
        self.socket.local
    }

    /// Sends `request` and returns the gateway's answer to it: a success, or a
    /// [`natpmp::Response::Failure`] carrying the result code.
    ///
    /// A PCP-only gateway's PCP "unsupported version" answer becomes
    /// `Err(Error::NatPmp(NatPmpError::UnsupportedVersion))`.
    pub async fn request(
        &mut self,
        request: &natpmp::Request,
        timeout: Duration,
    ) -> Result<natpmp::Response, Error> {
        let opcode = request.opcode();
        let port = match *request {
            natpmp::Request::Map { internal_port, .. } => Some(internal_port),
            _ => None,
        };
        self.socket
            .exchange(&request.encode(), timeout, |data| match natpmp::Response::decode(data) {
                Ok(response) if response.request_opcode() != opcode => None,
                Ok(natpmp::Response::Map { internal_port, .. }) if Some(internal_port) != port => {
                    None
                }
                Ok(response) => Some(Ok(response)),
                // A PCP server's answer to a version-0 request: version 2, result 1.
                Err(natpmp::DecodeError::Version(pcp::VERSION))
                    if data.len() >= 4 && data[1] & 0x80 != 0 && data[3] == 1 =>
                {
                    Some(Err(Error::NatPmp(NatPmpError::UnsupportedVersion)))
                }
                Err(_) => None,
            })
            .await
    }

    /// Asks for the external address; returns the address and the epoch.
    pub async fn external_address(&mut self, timeout: Duration) -> Result<(Ipv4Addr, u32), Error> {
        match self.request(&natpmp::Request::ExternalAddress, timeout).await? {
            natpmp::Response::ExternalAddress { epoch, address } => Ok((address, epoch)),
            natpmp::Response::Failure { error, .. } => Err(Error::NatPmp(error)),
            _ => Err(Error::UnexpectedResponse),
        }
    }

    /// Creates or renews (`lifetime` > 0) or deletes (`lifetime` 0) a mapping; returns the
    /// external port, the granted lifetime in seconds, and the epoch.
    pub async fn map(
        &mut self,
        protocol: MapProtocol,
        internal_port: u16,
        external_port: u16,
        lifetime: u32,
        timeout: Duration,
    ) -> Result<(u16, u32, u32), Error> {
        let request = natpmp::Request::Map { protocol, internal_port, external_port, lifetime };
        match self.request(&request, timeout).await? {
            natpmp::Response::Map { external_port, lifetime, epoch, .. } => {
                Ok((external_port, lifetime, epoch))
            }
            natpmp::Response::Failure { error, .. } => Err(Error::NatPmp(error)),
            _ => Err(Error::UnexpectedResponse),
        }
    }
}

/// A PCP client for one server.
#[derive(Debug)]
pub struct PcpClient {
    socket: Socket,
}

impl PcpClient {
    /// Binds a UDP socket and connects it to `server` (normally the gateway's port 5351).
    pub async fn connect(server: SocketAddrV4) -> Result<Self, Error> {
        Ok(Self { socket: Socket::connect(server).await? })
    }

    /// This host's address on the route to the server: the client address of requests.
    pub fn local_address(&self) -> Ipv4Addr {
        self.socket.local
    }

    /// Sends `request` and returns the server's answer, whatever its result code.
    ///
    /// A MAP response must repeat the request's nonce, protocol and internal port; a MAP error
    /// response without opcode data is accepted too. A NAT-PMP-only gateway's "unsupported
    /// version" answer becomes `Err(Error::Pcp(PcpError::UnsupportedVersion))`.
    pub async fn request(
        &mut self,
        request: &pcp::Request,
        timeout: Duration,
    ) -> Result<pcp::Response, Error> {
        let (opcode, wanted) = match request {
            pcp::Request::Announce { .. } => (pcp::Opcode::Announce, None),
            pcp::Request::Map { map, .. } => (pcp::Opcode::Map, Some(*map)),
        };
        self.socket
            .exchange(&request.encode(), timeout, |data| match pcp::Response::decode(data) {
                Ok(response) if response.opcode != opcode => None,
                Ok(response) => match (&response.map, wanted) {
                    (Some(got), Some(want))
                        if got.nonce != want.nonce
                            || got.protocol != want.protocol
                            || got.internal_port != want.internal_port =>
                    {
                        None
                    }
                    _ => Some(Ok(response)),
                },
                // A NAT-PMP gateway's answer: version 0, opcode 128 + ours, result 1.
                Err(pcp::DecodeError::Version(natpmp::VERSION))
                    if data.len() >= 4 && data[1] & 0x80 != 0 && data[2..4] == [0, 1] =>
                {
                    Some(Err(Error::Pcp(PcpError::UnsupportedVersion)))
                }
                Err(_) => None,
            })
            .await
    }

    /// ANNOUNCE: returns the server's epoch, or its error result.
    pub async fn announce(&mut self, timeout: Duration) -> Result<u32, Error> {
        let request = pcp::Request::Announce { client: IpAddr::V4(self.local_address()) };
        let response = self.request(&request, timeout).await?;
        response.result.map(|()| response.epoch).map_err(Error::Pcp)
    }

    /// MAP: creates, renews (`lifetime` > 0) or deletes (`lifetime` 0) the mapping that
    /// `nonce` names. Returns the assigned external address and port, the granted lifetime in
    /// seconds and the epoch.
    pub async fn map(
        &mut self,
        nonce: [u8; 12],
        protocol: MapProtocol,
        internal_port: u16,
        external_port: u16,
        lifetime: u32,
        timeout: Duration,
    ) -> Result<PcpGrant, Error> {
        let map = MapData {
            nonce,
            protocol,
            internal_port,
            external_port,
            external_address: pcp::ANY_IPV4,
        };
        let request = pcp::Request::Map { lifetime, client: IpAddr::V4(self.local_address()), map };
        let response = self.request(&request, timeout).await?;
        response.result.map_err(Error::Pcp)?;
        let map = response.map.ok_or(Error::UnexpectedResponse)?;
        let external_address = match map.external_address {
            IpAddr::V4(address) => address,
            IpAddr::V6(_) => return Err(Error::UnexpectedResponse),
        };
        Ok(PcpGrant {
            external: SocketAddrV4::new(external_address, map.external_port),
            lifetime: response.lifetime,
            epoch: response.epoch,
        })
    }
}

/// What a successful PCP MAP granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcpGrant {
    /// The assigned external address and port.
    pub external: SocketAddrV4,
    /// The granted lifetime in seconds.
    pub lifetime: u32,
    /// The server's epoch time.
    pub epoch: u32,
}

#[cfg(test)]
mod tests;
