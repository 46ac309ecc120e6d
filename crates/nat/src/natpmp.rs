//! NAT-PMP (RFC 6886) wire format, sans-IO.
//!
//! A client sends requests to UDP port [`PORT`] (5351) of its default gateway; all integers are
//! big-endian (network byte order). Version is always 0. A response's opcode is the request's
//! plus 128. [`Request::encode`] and [`Response::decode`] are what a client needs;
//! [`Request::decode`] and [`Response::encode`] exist for tests, fuzzing and servers.
//!
//! # External address request (opcode 0), 2 bytes
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version = 0 |
//! | 1 | 1 | opcode = 0 |
//!
//! # External address response (opcode 128), 12 bytes
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version = 0 |
//! | 1 | 1 | opcode = 128 |
//! | 2 | 2 | result code (0 = success) |
//! | 4 | 4 | seconds since start of epoch |
//! | 8 | 4 | external IPv4 address |
//!
//! # Map request (opcode 1 = UDP, 2 = TCP), 12 bytes
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version = 0 |
//! | 1 | 1 | opcode: 1 UDP, 2 TCP |
//! | 2 | 2 | reserved, 0 |
//! | 4 | 2 | internal port |
//! | 6 | 2 | suggested external port (0: no preference; 0 when deleting) |
//! | 8 | 4 | requested lifetime in seconds (0 deletes the mapping) |
//!
//! # Map response (opcode 129 = UDP, 130 = TCP), 16 bytes
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version = 0 |
//! | 1 | 1 | opcode: 129 UDP, 130 TCP |
//! | 2 | 2 | result code (0 = success) |
//! | 4 | 4 | seconds since start of epoch |
//! | 8 | 2 | internal port |
//! | 10 | 2 | mapped external port |
//! | 12 | 4 | granted lifetime in seconds |
//!
//! # Error responses, 8 bytes or more
//!
//! A non-zero result code makes the fields after the epoch undefined: only the first 8 bytes
//! (version, `128 + request opcode`, result code, epoch) are read, and a gateway may send just
//! those (RFC 6886 §3.5 for unsupported versions and opcodes). Result codes: 1 unsupported
//! version, 2 not authorized/refused, 3 network failure (e.g. the gateway has no external
//! address), 4 out of resources, 5 unsupported opcode. A PCP server answers a version-0
//! request with result 1 (RFC 6887 §9), which is how probing tells the two apart.
//!
//! The decoders never panic; trailing bytes after a complete message are ignored.

use std::net::Ipv4Addr;

use crate::MapProtocol;

/// The gateway's NAT-PMP (and PCP) server port.
pub const PORT: u16 = 5351;
/// The NAT-PMP version number.
pub const VERSION: u8 = 0;

const OP_EXTERNAL: u8 = 0;
const OP_MAP_UDP: u8 = 1;
const OP_MAP_TCP: u8 = 2;
const RESPONSE_BIT: u8 = 0x80;

/// A NAT-PMP request.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Ask for the gateway's external IPv4 address (opcode 0).
    ExternalAddress,
    /// Create, renew (same internal port) or delete (`lifetime` 0) a mapping.
    Map {
        /// TCP (opcode 2) or UDP (opcode 1).
        protocol: MapProtocol,
        /// The port on this host.
        internal_port: u16,
        /// The external port asked for; 0 for no preference.
        external_port: u16,
        /// Requested lifetime in seconds; 0 deletes.
        lifetime: u32,
    },
}

/// A NAT-PMP response.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// A successful answer to [`Request::ExternalAddress`].
    ExternalAddress {
        /// Seconds since the gateway's epoch started (its restart or address change).
        epoch: u32,
        /// The gateway's external address.
        address: Ipv4Addr,
    },
    /// A successful answer to [`Request::Map`].
    Map {
        /// Seconds since the gateway's epoch started.
        epoch: u32,
        /// TCP (opcode 130) or UDP (opcode 129).
        protocol: MapProtocol,
        /// The internal port the mapping is for.
        internal_port: u16,
        /// The external port the gateway chose (0 after a delete).
        external_port: u16,
        /// Granted lifetime in seconds (0 after a delete).
        lifetime: u32,
    },
    /// A non-zero result code.
    Failure {
        /// The opcode of the request this answers (the response opcode minus 128).
        opcode: u8,
        /// Seconds since the gateway's epoch started.
        epoch: u32,
        /// What the result code says.
        error: NatPmpError,
    },
}

/// A NAT-PMP result code other than success (RFC 6886 §3.5).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum NatPmpError {
    /// 1: the gateway does not speak this version (a PCP-only server says this too).
    #[error("NAT-PMP: unsupported version (result 1)")]
    UnsupportedVersion,
    /// 2: not authorized or refused (e.g. mapping disabled, port outside the allowed range).
    #[error("NAT-PMP: not authorized or refused (result 2)")]
    NotAuthorized,
    /// 3: network failure, e.g. the gateway has no usable external address.
    #[error("NAT-PMP: network failure (result 3)")]
    NetworkFailure,
    /// 4: out of resources (no more mappings).
    #[error("NAT-PMP: out of resources (result 4)")]
    OutOfResources,
    /// 5: unsupported opcode.
    #[error("NAT-PMP: unsupported opcode (result 5)")]
    UnsupportedOpcode,
    /// A result code RFC 6886 does not define (6 and up).
    #[error("NAT-PMP: unknown result code {0}")]
    Unknown(u16),
}

/// Why bytes are not a NAT-PMP message.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the message needs.
    #[error("NAT-PMP message of {len} bytes, needs {need}")]
    Truncated {
        /// Bytes received.
        len: usize,
        /// Bytes this message needs.
        need: usize,
    },
    /// The version byte is not 0 (a PCP message has version 2).
    #[error("NAT-PMP version {0}, expected 0")]
    Version(u8),
    /// A request where a response was expected, or the other way round.
    #[error("NAT-PMP opcode {0:#04x} has the wrong direction")]
    Direction(u8),
    /// An opcode this module does not know.
    #[error("unknown NAT-PMP opcode {0}")]
    UnknownOpcode(u8),
}

impl NatPmpError {
    /// The error for a result code; `None` for 0 (success).
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            0 => return None,
            1 => Self::UnsupportedVersion,
            2 => Self::NotAuthorized,
            3 => Self::NetworkFailure,
            4 => Self::OutOfResources,
            5 => Self::UnsupportedOpcode,
            other => Self::Unknown(other),
        })
    }

    /// The result code on the wire.
    pub fn code(self) -> u16 {
        match self {
            Self::UnsupportedVersion => 1,
            Self::NotAuthorized => 2,
            Self::NetworkFailure => 3,
            Self::OutOfResources => 4,
            Self::UnsupportedOpcode => 5,
            Self::Unknown(code) => code,
        }
    }
}

fn map_opcode(protocol: MapProtocol) -> u8 {
    match protocol {
        MapProtocol::Udp => OP_MAP_UDP,
        MapProtocol::Tcp => OP_MAP_TCP,
    }
}

fn need(data: &[u8], need: usize) -> Result<(), DecodeError> {
    if data.len() < need { Err(DecodeError::Truncated { len: data.len(), need }) } else { Ok(()) }
}

fn u16_at(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Checks the version and returns the opcode byte.
fn header(data: &[u8]) -> Result<u8, DecodeError> {
    need(data, 2)?;
    if data[0] != VERSION {
        return Err(DecodeError::Version(data[0]));
    }
    Ok(data[1])
}

impl Request {
    /// The request's opcode (0, 1 or 2).
    pub fn opcode(&self) -> u8 {
        match self {
            Self::ExternalAddress => OP_EXTERNAL,
            Self::Map { protocol, .. } => map_opcode(*protocol),
        }
    }

    /// The request's bytes (2 or 12).
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            Self::ExternalAddress => vec![VERSION, OP_EXTERNAL],
            Self::Map { protocol, internal_port, external_port, lifetime } => {
                let mut out = Vec::with_capacity(12);
                out.extend_from_slice(&[VERSION, map_opcode(protocol), 0, 0]);
                out.extend_from_slice(&internal_port.to_be_bytes());
                out.extend_from_slice(&external_port.to_be_bytes());
                out.extend_from_slice(&lifetime.to_be_bytes());
                out
            }
        }
    }

    /// Reads a request (as a gateway would). The reserved field is ignored.
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let opcode = header(data)?;
        let protocol = match opcode {
            OP_EXTERNAL => return Ok(Self::ExternalAddress),
            OP_MAP_UDP => MapProtocol::Udp,
            OP_MAP_TCP => MapProtocol::Tcp,
            op if op & RESPONSE_BIT != 0 => return Err(DecodeError::Direction(op)),
            op => return Err(DecodeError::UnknownOpcode(op)),
        };
        need(data, 12)?;
        Ok(Self::Map {
            protocol,
            internal_port: u16_at(data, 4),
            external_port: u16_at(data, 6),
            lifetime: u32_at(data, 8),
        })
    }
}

impl Response {
    /// Seconds since the start of the gateway's epoch.
    pub fn epoch(&self) -> u32 {
        match *self {
            Self::ExternalAddress { epoch, .. }
            | Self::Map { epoch, .. }
            | Self::Failure { epoch, .. } => epoch,
        }
    }

    /// The opcode of the request this response answers.
    pub fn request_opcode(&self) -> u8 {
        match *self {
            Self::ExternalAddress { .. } => OP_EXTERNAL,
            Self::Map { protocol, .. } => map_opcode(protocol),
            Self::Failure { opcode, .. } => opcode,
        }
    }

    /// Reads a response. Never panics.
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let opcode = header(data)?;
        if opcode & RESPONSE_BIT == 0 {
            return Err(DecodeError::Direction(opcode));
        }
        let request_opcode = opcode & !RESPONSE_BIT;
        need(data, 8)?;
        let epoch = u32_at(data, 4);
        if let Some(error) = NatPmpError::from_code(u16_at(data, 2)) {
            return Ok(Self::Failure { opcode: request_opcode, epoch, error });
        }
        let protocol = match request_opcode {
            OP_EXTERNAL => {
                need(data, 12)?;
                let address = Ipv4Addr::from(u32_at(data, 8));
                return Ok(Self::ExternalAddress { epoch, address });
            }
            OP_MAP_UDP => MapProtocol::Udp,
            OP_MAP_TCP => MapProtocol::Tcp,
            op => return Err(DecodeError::UnknownOpcode(op)),
        };
        need(data, 16)?;
        Ok(Self::Map {
            epoch,
            protocol,
            internal_port: u16_at(data, 8),
            external_port: u16_at(data, 10),
            lifetime: u32_at(data, 12),
        })
    }

    /// The response's bytes (8, 12 or 16), as a gateway would send them.
    pub fn encode(&self) -> Vec<u8> {
        let (opcode, code) = match *self {
            Self::Failure { opcode, error, .. } => (opcode, error.code()),
            _ => (self.request_opcode(), 0),
        };
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&[VERSION, opcode | RESPONSE_BIT]);
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(&self.epoch().to_be_bytes());
        match *self {
            Self::ExternalAddress { address, .. } => out.extend_from_slice(&address.octets()),
            Self::Map { internal_port, external_port, lifetime, .. } => {
                out.extend_from_slice(&internal_port.to_be_bytes());
                out.extend_from_slice(&external_port.to_be_bytes());
                out.extend_from_slice(&lifetime.to_be_bytes());
            }
            Self::Failure { .. } => {}
        }
        out
    }
}

#[cfg(test)]
mod tests;
