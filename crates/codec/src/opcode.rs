//! Opcodes and the blocks they are allocated in.

use std::fmt;

/// A message type on the wire (u32). Allocated in blocks:
///
/// | range | owner |
/// |---|---|
/// | 0 | invalid |
/// | 1..=18 | carrier meanings: bytes, keepalive, ping, disconnect, ack, ... |
/// | 19..=99 | node system protocols (identify, stream headers, perf) |
/// | 100..=199 | rendezvous and admin |
/// | 200..=299 | gossip |
/// | 300..=399 | NAT, relay and routing |
/// | 400..=999 | reserved |
/// | 1000.. | applications, registered explicitly |
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Opcode(u32);

/// An opcode outside the block a constructor allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("opcode {value} is outside {block} ({start}..={end})")]
pub struct OpcodeError {
    /// The value given.
    pub value: u32,
    /// The block's name.
    pub block: &'static str,
    /// First opcode of the block.
    pub start: u32,
    /// Last opcode of the block.
    pub end: u32,
}

impl Opcode {
    /// Arbitrary bytes (carrier opcode 1).
    pub const BYTES: Self = Self(1);
    /// Keepalive, sent on a quiet connection.
    pub const KEEPALIVE: Self = Self(2);
    /// Answer to a keepalive.
    pub const KEEPALIVE_RESPONSE: Self = Self(3);
    /// Proxy response.
    pub const PROXY_RESPONSE: Self = Self(9);
    /// Ping: a request whose payload the remote echoes in a [`Opcode::PONG`] response.
    pub const PING: Self = Self(10);
    /// Pong: the response to a ping.
    pub const PONG: Self = Self(11);
    /// Lookup node request.
    pub const LOOKUP_NODE_REQUEST: Self = Self(12);
    /// Lookup node response.
    pub const LOOKUP_NODE_RESPONSE: Self = Self(13);
    /// Disconnect: the sender is closing the connection, with a reason.
    pub const DISCONNECT: Self = Self(14);
    /// Proxy request.
    pub const PROXY_REQUEST: Self = Self(15);
    /// Metric request.
    pub const METRIC_REQUEST: Self = Self(16);
    /// Metric response.
    pub const METRIC_RESPONSE: Self = Self(17);
    /// Acknowledges a message sent with the ack flag.
    pub const ACK: Self = Self(18);
    /// Identify: agent, addresses, role, opcodes, boot nonce.
    pub const IDENTIFY: Self = Self(19);
    /// First frame of the control stream.
    pub const CONTROL_STREAM: Self = Self(20);
    /// First frame of a raw application stream; the payload names the stream's opcode.
    pub const OPEN_STREAM: Self = Self(21);
    /// First frame of a throughput-test stream (`sinew perf`).
    pub const PERF: Self = Self(22);
    /// First frame of a message stream: the sender's application lane on one connection.
    pub const MESSAGE_STREAM: Self = Self(23);

    /// First opcode of the carrier block.
    pub const CARRIER_START: u32 = 1;
    /// First opcode of the system block.
    pub const SYSTEM_START: u32 = 19;
    /// First opcode of the rendezvous block.
    pub const RENDEZVOUS_START: u32 = 100;
    /// First opcode of the gossip block.
    pub const GOSSIP_START: u32 = 200;
    /// First opcode of the NAT, relay and routing block.
    pub const NAT_START: u32 = 300;
    /// First opcode of the reserved block.
    pub const RESERVED_START: u32 = 400;
    /// First application opcode.
    pub const APP_START: u32 = 1000;

    /// Any opcode value, as read from the wire (0 is representable but never valid in a frame).
    pub const fn from_u32(value: u32) -> Self {
        Self(value)
    }

    /// An application opcode (1000 and up).
    pub const fn app(value: u32) -> Result<Self, OpcodeError> {
        if value >= Self::APP_START {
            Ok(Self(value))
        } else {
            Err(OpcodeError {
                value,
                block: "the application block",
                start: Self::APP_START,
                end: u32::MAX,
            })
        }
    }

    /// A rendezvous/admin opcode (100..=199).
    pub const fn rendezvous(value: u32) -> Result<Self, OpcodeError> {
        Self::in_block(
            value,
            "the rendezvous block",
            Self::RENDEZVOUS_START,
            Self::GOSSIP_START - 1,
        )
    }

    /// A gossip opcode (200..=299).
    pub const fn gossip(value: u32) -> Result<Self, OpcodeError> {
        Self::in_block(value, "the gossip block", Self::GOSSIP_START, Self::NAT_START - 1)
    }

    /// A NAT/relay/routing opcode (300..=399).
    pub const fn nat(value: u32) -> Result<Self, OpcodeError> {
        Self::in_block(value, "the NAT block", Self::NAT_START, Self::RESERVED_START - 1)
    }

    const fn in_block(
        value: u32,
        block: &'static str,
        start: u32,
        end: u32,
    ) -> Result<Self, OpcodeError> {
        if value >= start && value <= end {
            Ok(Self(value))
        } else {
            Err(OpcodeError { value, block, start, end })
        }
    }

    /// The numeric value.
    pub const fn value(self) -> u32 {
        self.0
    }

    /// Whether this is an application opcode (traffic that counts against the idle timeout).
    pub const fn is_app(self) -> bool {
        self.0 >= Self::APP_START
    }

    /// The block this opcode belongs to.
    pub const fn block(self) -> OpcodeBlock {
        match self.0 {
            0 => OpcodeBlock::Invalid,
            v if v < Self::SYSTEM_START => OpcodeBlock::Carrier,
            v if v < Self::RENDEZVOUS_START => OpcodeBlock::System,
            v if v < Self::GOSSIP_START => OpcodeBlock::Rendezvous,
            v if v < Self::NAT_START => OpcodeBlock::Gossip,
            v if v < Self::RESERVED_START => OpcodeBlock::Nat,
            v if v < Self::APP_START => OpcodeBlock::Reserved,
            _ => OpcodeBlock::Application,
        }
    }
}

/// The blocks opcodes are allocated in (see [`Opcode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum OpcodeBlock {
    /// 0, never valid.
    Invalid,
    /// 1..=18: bytes, keepalive, ping, disconnect, ack, ...
    Carrier,
    /// 19..=99: identify, stream headers, perf.
    System,
    /// 100..=199: rendezvous and admin.
    Rendezvous,
    /// 200..=299: gossip.
    Gossip,
    /// 300..=399: NAT, relay and routing.
    Nat,
    /// 400..=999: reserved.
    Reserved,
    /// 1000 and up: applications.
    Application,
}

impl fmt::Debug for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Opcode({})", self.0)
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An inclusive range of opcodes a protocol handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpcodeRange {
    start: Opcode,
    end: Opcode,
}

impl OpcodeRange {
    /// `start..=end`; `None` if `start > end`.
    pub fn new(start: Opcode, end: Opcode) -> Option<Self> {
        (start <= end).then_some(Self { start, end })
    }

    /// Exactly one opcode.
    pub const fn single(opcode: Opcode) -> Self {
        Self { start: opcode, end: opcode }
    }

    /// The first opcode.
    pub fn start(&self) -> Opcode {
        self.start
    }

    /// The last opcode.
    pub fn end(&self) -> Opcode {
        self.end
    }

    /// Whether `opcode` is in the range.
    pub fn contains(&self, opcode: Opcode) -> bool {
        self.start <= opcode && opcode <= self.end
    }

    /// Whether the two ranges share an opcode.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl fmt::Display for OpcodeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}..={}", self.start, self.end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_enforced() {
        assert!(Opcode::app(999).is_err());
        assert_eq!(Opcode::app(1000).unwrap().value(), 1000);
        assert!(Opcode::rendezvous(100).is_ok() && Opcode::rendezvous(200).is_err());
        assert!(Opcode::gossip(299).is_ok() && Opcode::gossip(99).is_err());
        assert!(Opcode::nat(300).is_ok() && Opcode::nat(400).is_err());
        assert!(Opcode::app(1000).unwrap().is_app() && !Opcode::PING.is_app());
    }

    #[test]
    fn ranges() {
        let r = OpcodeRange::new(Opcode::from_u32(100), Opcode::from_u32(110)).unwrap();
        assert!(r.contains(Opcode::from_u32(105)) && !r.contains(Opcode::from_u32(111)));
        assert!(r.overlaps(&OpcodeRange::single(Opcode::from_u32(110))));
        assert!(!r.overlaps(&OpcodeRange::single(Opcode::from_u32(111))));
        assert!(OpcodeRange::new(Opcode::from_u32(2), Opcode::from_u32(1)).is_none());
        assert_eq!(r.to_string(), "100..=110");
    }
}
