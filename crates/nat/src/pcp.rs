//! PCP (RFC 6887) wire format, sans-IO: the ANNOUNCE and MAP opcodes.
//!
//! A client sends requests to UDP port 5351 of its gateway (the NAT-PMP port); integers are
//! big-endian. Every address field is 16 bytes: an IPv4 address travels IPv4-mapped
//! (`::ffff:a.b.c.d`), and decoding turns a mapped address back into [`IpAddr::V4`]. Messages
//! are a multiple of 4 bytes, at least 24 and at most 1100. [`Request::encode`] and
//! [`Response::decode`] are what a client needs; [`Request::decode`] and [`Response::encode`]
//! exist for tests, fuzzing and servers.
//!
//! # Request header, 24 bytes
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version = 2 |
//! | 1 | 1 | R = 0 (bit 7), opcode (bits 0-6): 0 ANNOUNCE, 1 MAP |
//! | 2 | 2 | reserved, 0 |
//! | 4 | 4 | requested lifetime in seconds (0 deletes; 0 for ANNOUNCE) |
//! | 8 | 16 | the client's own IP address (unlike the packet's source: ADDRESS_MISMATCH) |
//!
//! # Response header, 24 bytes
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version = 2 |
//! | 1 | 1 | R = 1 (bit 7), opcode (bits 0-6) |
//! | 2 | 1 | reserved |
//! | 3 | 1 | result code (0 = SUCCESS) |
//! | 4 | 4 | lifetime: granted seconds on success, or how long an error is expected to last |
//! | 8 | 4 | epoch time: seconds since the server's state began |
//! | 12 | 12 | reserved |
//!
//! # MAP opcode data, 36 bytes after either header
//!
//! | offset | size | field |
//! |---|---|---|
//! | 24 | 12 | mapping nonce (random; renewals and deletes must repeat it) |
//! | 36 | 1 | protocol: 6 TCP, 17 UDP |
//! | 37 | 3 | reserved |
//! | 40 | 2 | internal port |
//! | 42 | 2 | suggested (request) or assigned (response) external port |
//! | 44 | 16 | suggested or assigned external address (`::ffff:0.0.0.0`: no preference) |
//!
//! ANNOUNCE has no opcode data. A MAP error response may carry only the header; a MAP response
//! longer than 24 bytes must carry the 36 bytes of opcode data.
//!
//! # Options, after the opcode data
//!
//! | size | field |
//! |---|---|
//! | 1 | option code |
//! | 1 | reserved |
//! | 2 | option length (bytes of data, excluding padding) |
//! | n | data, then zero padding to a multiple of 4 |
//!
//! This client sends no options and keeps those it receives as [`PcpOption`]s.
//!
//! # Result codes
//!
//! 0 SUCCESS, 1 UNSUPP_VERSION, 2 NOT_AUTHORIZED, 3 MALFORMED_REQUEST, 4 UNSUPP_OPCODE,
//! 5 UNSUPP_OPTION, 6 MALFORMED_OPTION, 7 NETWORK_FAILURE, 8 NO_RESOURCES, 9 UNSUPP_PROTOCOL,
//! 10 USER_EX_QUOTA, 11 CANNOT_PROVIDE_EXTERNAL, 12 ADDRESS_MISMATCH,
//! 13 EXCESSIVE_REMOTE_PEERS; see [`PcpError`]. A NAT-PMP-only gateway answers a PCP request
//! with an 8-byte NAT-PMP "unsupported version" response (version byte 0), which
//! [`Response::decode`] reports as [`DecodeError::Version`]`(0)`.
//!
//! The decoders never panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::MapProtocol;

/// The PCP version number.
pub const VERSION: u8 = 2;
/// The size of the request and response headers.
pub const HEADER_LEN: usize = 24;
/// The size of MAP opcode data.
pub const MAP_DATA_LEN: usize = 36;
/// The largest PCP message (RFC 6887 §7).
pub const MAX_LEN: usize = 1100;

const RESPONSE_BIT: u8 = 0x80;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// The PCP opcodes this module speaks.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// 0: ANNOUNCE, used to probe for a server and read its epoch.
    Announce,
    /// 1: MAP, create, renew or delete an inbound mapping.
    Map,
}

/// MAP opcode data: the same 36 bytes in requests and responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapData {
    /// The mapping nonce; a renewal or delete must repeat the one used to create the mapping.
    pub nonce: [u8; 12],
    /// TCP or UDP.
    pub protocol: MapProtocol,
    /// The port on the client.
    pub internal_port: u16,
    /// Suggested (request) or assigned (response) external port; 0 for no preference.
    pub external_port: u16,
    /// Suggested (request) or assigned (response) external address;
    /// [`Ipv4Addr::UNSPECIFIED`] for no preference.
    pub external_address: IpAddr,
}

/// A PCP option: code and data, without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcpOption {
    /// The option code.
    pub code: u8,
    /// The option data, at most `u16::MAX` bytes (a message holds at most 1100).
    pub data: Vec<u8>,
}

/// A PCP request.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// ANNOUNCE with lifetime 0: asks the server to answer, giving its epoch.
    Announce {
        /// The client's own address.
        client: IpAddr,
    },
    /// MAP: create or renew (`lifetime` > 0) or delete (`lifetime` 0) a mapping.
    Map {
        /// Requested lifetime in seconds.
        lifetime: u32,
        /// The client's own address.
        client: IpAddr,
        /// The opcode data.
        map: MapData,
    },
}

/// A PCP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The opcode of the request this answers.
    pub opcode: Opcode,
    /// `Ok` for SUCCESS, otherwise the result code.
    pub result: Result<(), PcpError>,
    /// Granted lifetime in seconds on success; on error, how long the error may last.
    pub lifetime: u32,
    /// Seconds since the server's state began (RFC 6887 §8.5 uses it to notice lost state).
    pub epoch: u32,
    /// MAP opcode data: always there on a successful MAP, maybe on a failed one.
    pub map: Option<MapData>,
    /// Options after the opcode data.
    pub options: Vec<PcpOption>,
}

/// A PCP result code other than SUCCESS (RFC 6887 §7.4).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PcpError {
    /// 1: the server does not speak this version.
    #[error("PCP: UNSUPP_VERSION (1)")]
    UnsupportedVersion,
    /// 2: not authorized (e.g. mapping disabled or port not allowed).
    #[error("PCP: NOT_AUTHORIZED (2)")]
    NotAuthorized,
    /// 3: malformed request.
    #[error("PCP: MALFORMED_REQUEST (3)")]
    MalformedRequest,
    /// 4: unsupported opcode.
    #[error("PCP: UNSUPP_OPCODE (4)")]
    UnsupportedOpcode,
    /// 5: unsupported mandatory option.
    #[error("PCP: UNSUPP_OPTION (5)")]
    UnsupportedOption,
    /// 6: malformed option.
    #[error("PCP: MALFORMED_OPTION (6)")]
    MalformedOption,
    /// 7: network failure, e.g. no usable external address.
    #[error("PCP: NETWORK_FAILURE (7)")]
    NetworkFailure,
    /// 8: no resources for another mapping right now.
    #[error("PCP: NO_RESOURCES (8)")]
    NoResources,
    /// 9: unsupported protocol.
    #[error("PCP: UNSUPP_PROTOCOL (9)")]
    UnsupportedProtocol,
    /// 10: this user's quota of mappings is used up.
    #[error("PCP: USER_EX_QUOTA (10)")]
    UserExceededQuota,
    /// 11: the suggested external port or address cannot be provided.
    #[error("PCP: CANNOT_PROVIDE_EXTERNAL (11)")]
    CannotProvideExternal,
    /// 12: the client address in the request differs from the packet's source address.
    #[error("PCP: ADDRESS_MISMATCH (12)")]
    AddressMismatch,
    /// 13: too many remote peers (PEER opcode).
    #[error("PCP: EXCESSIVE_REMOTE_PEERS (13)")]
    ExcessiveRemotePeers,
    /// A result code RFC 6887 does not define (14 and up).
    #[error("PCP: unknown result code {0}")]
    Unknown(u8),
}

/// Why bytes are not a PCP message this module reads.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the message needs.
    #[error("PCP message of {len} bytes, needs {need}")]
    Truncated {
        /// Bytes received, or left for an option.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Longer than 1100 bytes or not a multiple of 4.
    #[error("PCP message of {0} bytes: not a multiple of 4 up to 1100")]
    Length(usize),
    /// The version byte is not 2; 0 means a NAT-PMP-only server answered.
    #[error("PCP version {0}, expected 2")]
    Version(u8),
    /// A request where a response was expected, or the other way round.
    #[error("PCP opcode byte {0:#04x} has the wrong direction")]
    Direction(u8),
    /// An opcode other than ANNOUNCE and MAP.
    #[error("unsupported PCP opcode {0}")]
    UnknownOpcode(u8),
    /// A protocol other than TCP and UDP in MAP data.
    #[error("unsupported protocol number {0} in PCP MAP data")]
    Protocol(u8),
    /// A successful MAP response without its opcode data.
    #[error("successful PCP MAP response without MAP data")]
    MissingMapData,
}

impl PcpError {
    /// The error for a result code; `None` for 0 (SUCCESS).
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => return None,
            1 => Self::UnsupportedVersion,
            2 => Self::NotAuthorized,
            3 => Self::MalformedRequest,
            4 => Self::UnsupportedOpcode,
            5 => Self::UnsupportedOption,
            6 => Self::MalformedOption,
            7 => Self::NetworkFailure,
            8 => Self::NoResources,
            9 => Self::UnsupportedProtocol,
            10 => Self::UserExceededQuota,
            11 => Self::CannotProvideExternal,
            12 => Self::AddressMismatch,
            13 => Self::ExcessiveRemotePeers,
            other => Self::Unknown(other),
        })
    }

    /// The result code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::UnsupportedVersion => 1,
            Self::NotAuthorized => 2,
            Self::MalformedRequest => 3,
            Self::UnsupportedOpcode => 4,
            Self::UnsupportedOption => 5,
            Self::MalformedOption => 6,
            Self::NetworkFailure => 7,
            Self::NoResources => 8,
            Self::UnsupportedProtocol => 9,
            Self::UserExceededQuota => 10,
            Self::CannotProvideExternal => 11,
            Self::AddressMismatch => 12,
            Self::ExcessiveRemotePeers => 13,
            Self::Unknown(code) => code,
        }
    }

    /// Whether the error is expected to last (RFC 6887 §7.4 "long lifetime" errors):
    /// retrying soon will not help.
    pub fn is_long_lived(self) -> bool {
        matches!(
            self,
            Self::UnsupportedVersion
                | Self::NotAuthorized
                | Self::MalformedRequest
                | Self::UnsupportedOpcode
                | Self::UnsupportedOption
                | Self::MalformedOption
                | Self::UnsupportedProtocol
                | Self::AddressMismatch
        )
    }
}

impl Opcode {
    fn code(self) -> u8 {
        match self {
            Self::Announce => 0,
            Self::Map => 1,
        }
    }

    fn from_code(code: u8) -> Result<Self, DecodeError> {
        match code {
            0 => Ok(Self::Announce),
            1 => Ok(Self::Map),
            other => Err(DecodeError::UnknownOpcode(other)),
        }
    }
}

/// The 16-byte form of an address: IPv4 as IPv4-mapped IPv6.
fn address_bytes(address: IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn address_from(bytes: &[u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(*bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Takes `N` bytes at `at`; the caller checked the length.
fn array<const N: usize>(data: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&data[at..at + N]);
    out
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(array(data, at))
}

/// Checks the length, version and direction; returns the opcode.
fn check_header(data: &[u8], response: bool) -> Result<Opcode, DecodeError> {
    let Some(&version) = data.first() else {
        return Err(DecodeError::Truncated { len: 0, need: HEADER_LEN });
    };
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    if data.len() < HEADER_LEN {
        return Err(DecodeError::Truncated { len: data.len(), need: HEADER_LEN });
    }
    if data.len() > MAX_LEN || !data.len().is_multiple_of(4) {
        return Err(DecodeError::Length(data.len()));
    }
    if (data[1] & RESPONSE_BIT != 0) != response {
        return Err(DecodeError::Direction(data[1]));
    }
    Opcode::from_code(data[1] & !RESPONSE_BIT)
}

impl MapData {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.nonce);
        out.push(match self.protocol {
            MapProtocol::Tcp => PROTO_TCP,
            MapProtocol::Udp => PROTO_UDP,
        });
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&self.internal_port.to_be_bytes());
        out.extend_from_slice(&self.external_port.to_be_bytes());
        out.extend_from_slice(&address_bytes(self.external_address));
    }

    /// Reads 36 bytes; the caller checked the length.
    fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let protocol = match data[12] {
            PROTO_TCP => MapProtocol::Tcp,
            PROTO_UDP => MapProtocol::Udp,
            other => return Err(DecodeError::Protocol(other)),
        };
        Ok(Self {
            nonce: array(data, 0),
            protocol,
            internal_port: u16::from_be_bytes(array(data, 16)),
            external_port: u16::from_be_bytes(array(data, 18)),
            external_address: address_from(&array(data, 20)),
        })
    }
}

fn decode_options(mut data: &[u8]) -> Result<Vec<PcpOption>, DecodeError> {
    let mut options = Vec::new();
    while !data.is_empty() {
        if data.len() < 4 {
            return Err(DecodeError::Truncated { len: data.len(), need: 4 });
        }
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        let padded = 4 + len.div_ceil(4) * 4;
        if data.len() < padded {
            return Err(DecodeError::Truncated { len: data.len(), need: padded });
        }
        options.push(PcpOption { code: data[0], data: data[4..4 + len].to_vec() });
        data = &data[padded..];
    }
    Ok(options)
}

fn encode_options(options: &[PcpOption], out: &mut Vec<u8>) {
    for option in options {
        // Lengths above u16::MAX cannot be expressed; such an option is cut (documented on
        // `PcpOption::data`, and never produced by the decoder).
        let len = option.data.len().min(usize::from(u16::MAX));
        out.extend_from_slice(&[option.code, 0]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&option.data[..len]);
        out.resize(out.len() + (4 - len % 4) % 4, 0);
    }
}

impl Request {
    /// The request's bytes: 24 (ANNOUNCE) or 60 (MAP).
    pub fn encode(&self) -> Vec<u8> {
        let (opcode, lifetime, client) = match *self {
            Self::Announce { client } => (Opcode::Announce, 0, client),
            Self::Map { lifetime, client, .. } => (Opcode::Map, lifetime, client),
        };
        let mut out = Vec::with_capacity(HEADER_LEN + MAP_DATA_LEN);
        out.extend_from_slice(&[VERSION, opcode.code(), 0, 0]);
        out.extend_from_slice(&lifetime.to_be_bytes());
        out.extend_from_slice(&address_bytes(client));
        if let Self::Map { map, .. } = self {
            map.encode(&mut out);
        }
        out
    }

    /// Reads a request (as a server would); options are skipped.
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let opcode = check_header(data, false)?;
        let client = address_from(&array(data, 8));
        match opcode {
            Opcode::Announce => Ok(Self::Announce { client }),
            Opcode::Map => {
                let need = HEADER_LEN + MAP_DATA_LEN;
                if data.len() < need {
                    return Err(DecodeError::Truncated { len: data.len(), need });
                }
                let map = MapData::decode(&data[HEADER_LEN..need])?;
                Ok(Self::Map { lifetime: u32_at(data, 4), client, map })
            }
        }
    }
}

impl Response {
    /// Reads a response. Never panics.
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let opcode = check_header(data, true)?;
        let result = match PcpError::from_code(data[3]) {
            None => Ok(()),
            Some(error) => Err(error),
        };
        let mut rest = &data[HEADER_LEN..];
        let map = match opcode {
            Opcode::Announce => None,
            Opcode::Map if rest.is_empty() && result.is_err() => None,
            Opcode::Map if rest.is_empty() => return Err(DecodeError::MissingMapData),
            Opcode::Map => {
                if rest.len() < MAP_DATA_LEN {
                    let need = HEADER_LEN + MAP_DATA_LEN;
                    return Err(DecodeError::Truncated { len: data.len(), need });
                }
                let map = MapData::decode(&rest[..MAP_DATA_LEN])?;
                rest = &rest[MAP_DATA_LEN..];
                Some(map)
            }
        };
        Ok(Self {
            opcode,
            result,
            lifetime: u32_at(data, 4),
            epoch: u32_at(data, 8),
            map,
            options: decode_options(rest)?,
        })
    }

    /// The response's bytes, as a server would send them. MAP data is written only when
    /// `map` is set (and ignored for ANNOUNCE).
    pub fn encode(&self) -> Vec<u8> {
        let code = match self.result {
            Ok(()) => 0,
            Err(error) => error.code(),
        };
        let mut out = Vec::with_capacity(HEADER_LEN + MAP_DATA_LEN);
        out.extend_from_slice(&[VERSION, self.opcode.code() | RESPONSE_BIT, 0, code]);
        out.extend_from_slice(&self.lifetime.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&[0; 12]);
        if let (Opcode::Map, Some(map)) = (self.opcode, &self.map) {
            map.encode(&mut out);
        }
        encode_options(&self.options, &mut out);
        out
    }
}

/// The "no preference" external address of a MAP request for IPv4.
pub const ANY_IPV4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests;
