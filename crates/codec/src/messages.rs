//! Bodies of sinew's own messages. Each has a bounded decoder and a fuzz target.

use std::fmt;

use bytes::Bytes;
use sinew_types::{Addr, MAX_RECORD_ADDRS, SignedPeerRecord};

use crate::{DecodeError, Opcode, OpcodeRange, Reader, Writer};

/// A message body with a wire encoding.
pub trait MessageBody: Sized {
    /// Encodes the body.
    fn encode(&self) -> Bytes;
    /// Decodes a body, refusing anything out of bounds.
    fn decode(body: Bytes) -> Result<Self, DecodeError>;
}

/// Longest agent string in identify.
pub const MAX_AGENT: usize = 128;
/// Longest role name.
pub const MAX_ROLE: usize = 64;
/// Most opcode ranges announced in identify.
pub const MAX_OPCODE_RANGES: usize = 256;
/// Largest encoded signed peer record carried in identify.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;
/// Longest disconnect message.
pub const MAX_DISCONNECT_MESSAGE: usize = 256;
/// Longest address text in a message (identify's listen and observed addresses).
pub const MAX_ADDR_TEXT: usize = 255;

/// The identify message (opcode 19), sent by both sides when a connection opens and again when
/// a node's addresses change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identify {
    /// sinew protocol version, currently 1.
    pub protocol_version: u16,
    /// Software name and version, e.g. `sinew/0.1.0`.
    pub agent: String,
    /// Random per process start: a new value from a known peer means it restarted.
    pub boot_nonce: u64,
    /// Addresses the sender listens on (at most 32).
    pub listen_addrs: Vec<Addr>,
    /// The sender's view of the receiver's address (helps nodes learn their external address).
    pub observed_addr: Option<Addr>,
    /// The sender's role (an open set: "client", "admin", ...).
    pub role: String,
    /// Opcode ranges the sender handles.
    pub opcodes: Vec<OpcodeRange>,
    /// The sender's signed peer record, if it has one.
    pub record: Option<SignedPeerRecord>,
}

impl MessageBody for Identify {
    fn encode(&self) -> Bytes {
        let mut w = Writer::with_capacity(256);
        w.u16(self.protocol_version).string(&self.agent).u64(self.boot_nonce);
        w.count(self.listen_addrs.len());
        for addr in &self.listen_addrs {
            w.addr(addr);
        }
        w.bool(self.observed_addr.is_some());
        if let Some(addr) = &self.observed_addr {
            w.addr(addr);
        }
        w.string(&self.role);
        w.count(self.opcodes.len());
        for range in &self.opcodes {
            w.u32(range.start().value()).u32(range.end().value());
        }
        match &self.record {
            Some(record) => w.bytes(&record.encode()),
            None => w.u32(0),
        };
        w.finish()
    }

    /// Trailing bytes after the known fields are ignored, so later versions can add fields.
    fn decode(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let protocol_version = r.u16("protocol version")?;
        let agent = r.string(MAX_AGENT, "agent")?;
        let boot_nonce = r.u64("boot nonce")?;
        let n = r.count(MAX_RECORD_ADDRS, "listen addresses")?;
        let mut listen_addrs = Vec::with_capacity(n);
        for _ in 0..n {
            listen_addrs.push(r.addr("listen address")?);
        }
        let observed_addr =
            if r.bool("observed flag")? { Some(r.addr("observed address")?) } else { None };
        let role = r.string(MAX_ROLE, "role")?;
        let n = r.count(MAX_OPCODE_RANGES, "opcode ranges")?;
        let mut opcodes = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Opcode::from_u32(r.u32("opcode range")?);
            let end = Opcode::from_u32(r.u32("opcode range")?);
            opcodes.push(
                OpcodeRange::new(start, end)
                    .ok_or(DecodeError::Invalid { field: "opcode range" })?,
            );
        }
        let record_bytes = r.bytes(MAX_RECORD_BYTES, "peer record")?;
        let record = if record_bytes.is_empty() {
            None
        } else {
            Some(
                SignedPeerRecord::decode(&record_bytes)
                    .map_err(|_| DecodeError::Invalid { field: "peer record" })?,
            )
        };
        Ok(Self {
            protocol_version,
            agent,
            boot_nonce,
            listen_addrs,
            observed_addr,
            role,
            opcodes,
            record,
        })
    }
}

/// Why a connection is being closed: the code in a [`Disconnect`] (u16). 1000 and up are for
/// applications.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DisconnectCode(pub u16);

impl DisconnectCode {
    /// The node is shutting down.
    pub const SHUTDOWN: Self = Self(0);
    /// Another connection between the same two peers was kept.
    pub const DUPLICATE: Self = Self(1);
    /// No application traffic for the idle timeout.
    pub const IDLE: Self = Self(2);
    /// Too many pings went unanswered.
    pub const PING_TIMEOUT: Self = Self(3);
    /// The remote broke the protocol.
    pub const PROTOCOL_ERROR: Self = Self(4);
    /// The remote was not authorized in time.
    pub const UNAUTHORIZED: Self = Self(5);
    /// A connection limit was reached.
    pub const LIMIT: Self = Self(6);
    /// A newer connection from a restarted peer replaced this one.
    pub const REPLACED: Self = Self(7);
    /// The application removed the peer.
    pub const REMOVED: Self = Self(8);
    /// The peer sent requests (pings, keepalives, acked messages...) faster than it read the
    /// answers: the system lane overflowed.
    pub const FLOODING: Self = Self(9);
    /// The peer stopped reading: a write made no progress for the write-stall timeout.
    pub const STALLED: Self = Self(10);
    /// The peer's control stream version is not supported.
    pub const UNSUPPORTED_VERSION: Self = Self(11);

    /// A short name.
    pub fn name(&self) -> &'static str {
        match *self {
            Self::SHUTDOWN => "shutdown",
            Self::DUPLICATE => "duplicate connection",
            Self::IDLE => "idle timeout",
            Self::PING_TIMEOUT => "ping timeout",
            Self::PROTOCOL_ERROR => "protocol error",
            Self::UNAUTHORIZED => "unauthorized",
            Self::LIMIT => "connection limit",
            Self::REPLACED => "replaced by a newer connection",
            Self::REMOVED => "peer removed",
            Self::FLOODING => "flooding",
            Self::STALLED => "stopped reading",
            Self::UNSUPPORTED_VERSION => "unsupported control stream version",
            Self(code) if code >= 1000 => "application reason",
            _ => "unknown reason",
        }
    }
}

impl fmt::Debug for DisconnectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DisconnectCode({} {})", self.0, self.name())
    }
}

impl fmt::Display for DisconnectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The disconnect message (opcode 14): the last frame on a control stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Why.
    pub code: DisconnectCode,
    /// Human-readable detail (at most 256 bytes).
    pub message: String,
}

impl MessageBody for Disconnect {
    fn encode(&self) -> Bytes {
        let mut w = Writer::with_capacity(4 + self.message.len());
        w.u16(self.code.0).string(&self.message);
        w.finish()
    }

    fn decode(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let code = DisconnectCode(r.u16("code")?);
        let message = r.string(MAX_DISCONNECT_MESSAGE, "message")?;
        Ok(Self { code, message })
    }
}

/// First frame of the control stream (opcode 20): the control protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlHello {
    /// Control protocol version: [`CONTROL_VERSION`].
    pub version: u16,
}

/// The control protocol version this crate speaks: 2 (a control stream for system frames,
/// one message stream per sender for application frames).
pub const CONTROL_VERSION: u16 = 3;

/// The byte a large message's receiver writes on its stream once it has taken the message
/// (then it finishes its half). A sender that reads the end of the stream without it was
/// refused: a reset and a clean end look alike on some muxers (yamux 0.14).
pub const LARGE_TAKEN: u8 = 0x01;

impl MessageBody for ControlHello {
    fn encode(&self) -> Bytes {
        let mut w = Writer::with_capacity(2);
        w.u16(self.version);
        w.finish()
    }

    fn decode(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let version = r.u16("version")?;
        Ok(Self { version })
    }
}

/// First frame of a raw application stream (opcode 21): which handler the stream is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenStream {
    /// The application opcode naming the stream's protocol.
    pub opcode: Opcode,
}

impl MessageBody for OpenStream {
    fn encode(&self) -> Bytes {
        let mut w = Writer::with_capacity(4);
        w.u32(self.opcode.value());
        w.finish()
    }

    fn decode(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let opcode = r.u32("opcode")?;
        if opcode == 0 {
            return Err(DecodeError::Invalid { field: "opcode" });
        }
        r.finish()?;
        Ok(Self { opcode: Opcode::from_u32(opcode) })
    }
}

/// First frame of a throughput-test stream (opcode 22): the client then sends `upload` bytes
/// and finishes; the server reads them all, then sends `download` bytes and finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perf {
    /// Bytes the client sends after this frame.
    pub upload: u64,
    /// Bytes the server sends back once it has read the upload.
    pub download: u64,
}

impl MessageBody for Perf {
    fn encode(&self) -> Bytes {
        let mut w = Writer::with_capacity(16);
        w.u64(self.upload).u64(self.download);
        w.finish()
    }

    fn decode(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let upload = r.u64("upload")?;
        let download = r.u64("download")?;
        r.finish()?;
        Ok(Self { upload, download })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sinew_types::Keypair;

    fn sample_identify() -> Identify {
        let key = Keypair::generate();
        let addr: Addr = "tcp://127.0.0.1:4001".parse().unwrap();
        Identify {
            protocol_version: 1,
            agent: "sinew/0.1.0".into(),
            boot_nonce: 42,
            listen_addrs: vec![addr.clone(), "tcp://[::1]:4001".parse().unwrap()],
            observed_addr: Some("tcp://10.0.0.2:5555".parse().unwrap()),
            role: "client".into(),
            opcodes: vec![
                OpcodeRange::single(Opcode::PING),
                OpcodeRange::new(Opcode::from_u32(1000), Opcode::from_u32(1010)).unwrap(),
            ],
            record: Some(SignedPeerRecord::sign(&key, vec![addr], 1).unwrap()),
        }
    }

    #[test]
    fn identify_round_trip_and_forward_compatible() {
        let msg = sample_identify();
        let encoded = msg.encode();
        assert_eq!(Identify::decode(encoded.clone()).unwrap(), msg);
        let mut longer = encoded.to_vec();
        longer.extend_from_slice(b"future fields");
        assert_eq!(Identify::decode(Bytes::from(longer)).unwrap(), msg);
        for cut in 0..encoded.len() {
            assert!(Identify::decode(encoded.slice(..cut)).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn identify_refuses_inverted_ranges_and_bad_records() {
        let mut msg = sample_identify();
        msg.record = None;
        let mut bytes = msg.encode().to_vec();
        // The second range's start (at len - 4 (record len) - 8) becomes larger than its end.
        let at = bytes.len() - 4 - 8;
        bytes[at..at + 4].copy_from_slice(&5000u32.to_le_bytes());
        assert_eq!(
            Identify::decode(Bytes::from(bytes)),
            Err(DecodeError::Invalid { field: "opcode range" })
        );
    }

    #[test]
    fn small_bodies_round_trip() {
        let d = Disconnect { code: DisconnectCode::IDLE, message: "bye".into() };
        assert_eq!(Disconnect::decode(d.encode()).unwrap(), d);
        let h = ControlHello { version: 1 };
        assert_eq!(ControlHello::decode(h.encode()).unwrap(), h);
        let o = OpenStream { opcode: Opcode::from_u32(1234) };
        assert_eq!(OpenStream::decode(o.encode()).unwrap(), o);
        assert!(OpenStream::decode(Bytes::from_static(&[0, 0, 0, 0])).is_err());
        let p = Perf { upload: 1 << 30, download: 0 };
        assert_eq!(Perf::decode(p.encode()).unwrap(), p);
    }
}
