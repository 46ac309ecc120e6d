//! Address helpers every socket transport needs: resolving an [`Addr`]'s host at each call, and
//! reporting IPv4-mapped IPv6 socket addresses as plain IPv4.

use std::io;
use std::net::SocketAddr;

use sinew_types::{Addr, Host};

use crate::{DialError, ListenError};

/// Resolves `addr`'s host to socket addresses: an IP address as it is, a DNS name afresh at
/// every call.
pub async fn resolve(addr: &Addr) -> io::Result<Vec<SocketAddr>> {
    match addr.host() {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, addr.port())]),
        Host::Dns(name) => {
            Ok(tokio::net::lookup_host((name.as_str(), addr.port())).await?.collect())
        }
    }
}

/// The addresses to dial for `addr` ([`DialError::Resolve`] if the name does not resolve).
pub async fn resolve_dial(addr: &Addr) -> Result<Vec<SocketAddr>, DialError> {
    resolve(addr)
        .await
        .map_err(|source| DialError::Resolve { host: addr.host().to_string(), source })
}

/// The error of a dial whose host resolved to no address at all.
pub fn no_addresses() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "host resolved to no addresses")
}

/// Connects TCP to the first of `addr`'s resolved addresses that accepts, with `TCP_NODELAY`
/// (sinew batches its own writes).
pub async fn connect_tcp(addr: &Addr) -> Result<tokio::net::TcpStream, DialError> {
    let mut last_error = no_addresses();
    for candidate in resolve_dial(addr).await? {
        match tokio::net::TcpStream::connect(candidate).await {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(DialError::Connect)?;
                return Ok(stream);
            }
            Err(e) => last_error = e,
        }
    }
    Err(DialError::Connect(last_error))
}

/// The address to bind for `addr`: its first resolution ([`ListenError::Resolve`] if none).
pub async fn resolve_listen(addr: &Addr) -> Result<SocketAddr, ListenError> {
    let first = resolve(addr).await.map_err(ListenError::Resolve)?.first().copied();
    first.ok_or_else(|| ListenError::Resolve(io::Error::new(io::ErrorKind::NotFound, "no address")))
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) as plain IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_reported_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:4001".parse().unwrap();
        assert_eq!(canonical(mapped), "10.0.0.1:4001".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:4001".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[tokio::test]
    async fn ip_hosts_resolve_to_themselves_and_names_afresh() {
        let addr: Addr = "tcp://192.0.2.1:4001".parse().unwrap();
        assert_eq!(resolve_listen(&addr).await.unwrap(), "192.0.2.1:4001".parse().unwrap());
        let named: Addr = "tcp://localhost:4001".parse().unwrap();
        let all = resolve_dial(&named).await.unwrap();
        assert!(all.iter().all(|a| a.ip().is_loopback() && a.port() == 4001), "{all:?}");
    }
}
