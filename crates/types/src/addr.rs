//! Peer addresses: `scheme://[peer-id@]host:port[/path]`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::{PeerId, PeerIdError};

/// Longest DNS name accepted (RFC 1035).
const MAX_DNS_NAME: usize = 253;
/// Longest WebSocket path accepted.
const MAX_PATH: usize = 1024;

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// The remote dialled us.
    Inbound,
    /// We dialled the remote.
    Outbound,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        })
    }
}

/// The transport an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// TCP, secured by Noise (default) or TLS, multiplexed by yamux.
    Tcp,
    /// WebSocket over TCP.
    Ws,
    /// WebSocket over TLS.
    Wss,
    /// QUIC (TLS 1.3 built in, native streams).
    Quic,
    /// In-process pipes (tests and simulations): `memory://host:port`, where only the port
    /// names the listener.
    Memory,
}

impl Scheme {
    /// The scheme's text, as in `tcp://`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Ws => "ws",
            Self::Wss => "wss",
            Self::Quic => "quic",
            Self::Memory => "memory",
        }
    }

    fn allows_path(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
    }
}

/// An address's host: an IP address or a DNS name (resolved at every dial).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Host {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name, lowercase, validated as letters, digits and hyphens in dot-separated labels.
    Dns(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Dns(name) => f.write_str(name),
        }
    }
}

/// A peer address such as `tcp://127.0.0.1:4001`, `tcp://[::1]:4001`,
/// `tcp://node.example:4001` or `tcp://sn1...@10.0.0.2:4001` (with the peer id the dialer
/// expects; the handshake fails if the remote proves a different identity).
///
/// WebSocket addresses may carry a path: `ws://host:80/sinew`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr {
    scheme: Scheme,
    host: Host,
    port: u16,
    path: Option<String>,
    peer: Option<PeerId>,
}

/// Why a string is not an [`Addr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// No `scheme://` prefix.
    #[error("address needs a scheme, as in tcp://host:port")]
    MissingScheme,
    /// The scheme is not one sinew knows.
    #[error("unknown address scheme `{0}` (expected tcp, ws, wss or quic)")]
    UnknownScheme(String),
    /// No `:port` after the host.
    #[error("address needs a port, as in tcp://host:4001")]
    MissingPort,
    /// The port is not a number from 0 to 65535.
    #[error("invalid port `{0}`")]
    InvalidPort(String),
    /// The host is neither an IP address nor a valid DNS name.
    #[error("invalid host `{0}`")]
    InvalidHost(String),
    /// The expected peer id before `@` is invalid.
    #[error("invalid peer id in address: {0}")]
    InvalidPeerId(#[from] PeerIdError),
    /// A path was given for a scheme that has none, or the path is invalid.
    #[error("invalid path `{0}` (only ws and wss addresses have a path)")]
    InvalidPath(String),
}

impl Addr {
    /// An address from its parts. `path` is ignored for schemes without paths.
    pub fn new(scheme: Scheme, host: Host, port: u16) -> Self {
        Self { scheme, host, port, path: None, peer: None }
    }

    /// A `tcp://` address for a socket address.
    pub fn tcp(socket: SocketAddr) -> Self {
        Self::new(Scheme::Tcp, Host::Ip(socket.ip()), socket.port())
    }

    /// This address with an expected peer id.
    #[must_use]
    pub fn with_peer(mut self, peer: PeerId) -> Self {
        self.peer = Some(peer);
        self
    }

    /// This address without an expected peer id.
    #[must_use]
    pub fn without_peer(mut self) -> Self {
        self.peer = None;
        self
    }

    /// This address with another port (e.g. the one the OS chose for port 0).
    #[must_use]
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// This address with a path (WebSocket only).
    pub fn with_path(mut self, path: &str) -> Result<Self, AddrError> {
        if !self.scheme.allows_path() || !valid_path(path) {
            return Err(AddrError::InvalidPath(path.to_owned()));
        }
        self.path = Some(path.to_owned());
        Ok(self)
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The WebSocket path, if any.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The peer id the dialer expects, if given.
    pub fn peer(&self) -> Option<PeerId> {
        self.peer
    }

    /// The socket address, if the host is an IP address (DNS names need resolving).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Dns(_) => None,
        }
    }
}

fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_DNS_NAME
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn valid_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= MAX_PATH
        && path.bytes().all(|b| b.is_ascii_graphic() && b != b'@' && b != b'#')
}

impl FromStr for Addr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme_text, rest) = s.split_once("://").ok_or(AddrError::MissingScheme)?;
        let scheme = match scheme_text {
            "tcp" => Scheme::Tcp,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            "quic" => Scheme::Quic,
            "memory" => Scheme::Memory,
            other => return Err(AddrError::UnknownScheme(other.to_owned())),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let (peer, host_port) = match authority.rsplit_once('@') {
            Some((peer, host_port)) => (Some(peer.parse::<PeerId>()?), host_port),
            None => (None, authority),
        };
        let (host_text, port_text) = if let Some(inner) = host_port.strip_prefix('[') {
            let (ip, after) = inner
                .split_once(']')
                .ok_or_else(|| AddrError::InvalidHost(host_port.to_owned()))?;
            let port = after.strip_prefix(':').ok_or(AddrError::MissingPort)?;
            (ip, port)
        } else {
            host_port.rsplit_once(':').ok_or(AddrError::MissingPort)?
        };
        let port = port_text.parse().map_err(|_| AddrError::InvalidPort(port_text.to_owned()))?;
        let host = if host_port.starts_with('[') {
            match host_text.parse::<IpAddr>() {
                Ok(ip @ IpAddr::V6(_)) => Host::Ip(ip),
                _ => return Err(AddrError::InvalidHost(host_text.to_owned())),
            }
        } else if let Ok(ip) = host_text.parse::<std::net::Ipv4Addr>() {
            Host::Ip(IpAddr::V4(ip))
        } else if valid_dns_name(host_text)
            && !host_text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        {
            Host::Dns(host_text.to_ascii_lowercase())
        } else {
            return Err(AddrError::InvalidHost(host_text.to_owned()));
        };
        let mut addr = Self { scheme, host, port, path: None, peer };
        if let Some(path) = path {
            addr = addr.with_path(path)?;
        }
        Ok(addr)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        if let Some(peer) = &self.peer {
            write!(f, "{peer}@")?;
        }
        write!(f, "{}:{}", self.host, self.port)?;
        if let Some(path) = &self.path {
            f.write_str(path)?;
        }
        Ok(())
    }
}

impl serde::Serialize for Addr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Addr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints_each_host_kind() {
        for text in [
            "tcp://127.0.0.1:4001",
            "tcp://[::1]:4001",
            "tcp://[fe80::1]:0",
            "tcp://node-1.example.org:65535",
            "ws://example.org:80/sinew/v1",
            "quic://10.0.0.1:443",
        ] {
            let addr: Addr = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
        let addr: Addr = "tcp://[::1]:4001".parse().unwrap();
        assert_eq!(addr.socket_addr(), Some("[::1]:4001".parse().unwrap()));
        let addr: Addr = "tcp://Example.ORG:1".parse().unwrap();
        assert_eq!(addr.host(), &Host::Dns("example.org".into()));
        assert_eq!(addr.socket_addr(), None);
    }

    #[test]
    fn carries_an_expected_peer_id() {
        let id = Keypair::generate().peer_id();
        let addr: Addr = format!("tcp://{id}@[::1]:9").parse().unwrap();
        assert_eq!(addr.peer(), Some(id));
        assert_eq!(addr.to_string(), format!("tcp://{id}@[::1]:9"));
        assert_eq!(addr.clone().without_peer().peer(), None);
    }

    #[test]
    fn errors_are_typed() {
        let cases: [(&str, AddrError); 9] = [
            ("127.0.0.1:1", AddrError::MissingScheme),
            ("udp://1.2.3.4:1", AddrError::UnknownScheme("udp".into())),
            ("tcp://1.2.3.4", AddrError::MissingPort),
            ("tcp://1.2.3.4:99999", AddrError::InvalidPort("99999".into())),
            ("tcp://[::1:1", AddrError::InvalidHost("[::1:1".into())),
            ("tcp://[1.2.3.4]:1", AddrError::InvalidHost("1.2.3.4".into())),
            ("tcp://bad_host:1", AddrError::InvalidHost("bad_host".into())),
            ("tcp://1.2.3.4:1/path", AddrError::InvalidPath("/path".into())),
            ("tcp://999.1.1.1:1", AddrError::InvalidHost("999.1.1.1".into())),
        ];
        for (text, err) in cases {
            assert_eq!(text.parse::<Addr>(), Err(err), "{text}");
        }
        assert!(matches!("tcp://nope@1.2.3.4:1".parse::<Addr>(), Err(AddrError::InvalidPeerId(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,100}") {
            if let Ok(addr) = s.parse::<Addr>() {
                prop_assert_eq!(addr.to_string().parse::<Addr>().unwrap(), addr);
            }
        }

        #[test]
        fn socket_addresses_round_trip(ip in any::<IpAddr>(), port in any::<u16>()) {
            let addr = Addr::tcp(SocketAddr::new(ip, port));
            prop_assert_eq!(addr.to_string().parse::<Addr>().unwrap(), addr);
        }
    }
}
