//! The frame: header layout, kinds, flags, status codes, and encoding.

use std::fmt;

use bytes::{BufMut as _, Bytes, BytesMut};

use crate::Opcode;

/// Size of the length field.
pub const LENGTH_FIELD: usize = 4;
/// Smallest frame body: opcode (4) and flags (1).
pub const MIN_BODY: usize = 5;
/// Largest header: length, opcode, flags, request id, status.
pub const MAX_HEADER: usize = LENGTH_FIELD + 4 + 1 + 8 + 2;
/// Size of the optional CRC32C trailer.
pub const CHECKSUM_LEN: usize = 4;
/// The largest message sinew carries: 512 MiB of payload.
pub const MAX_MESSAGE: usize = 512 * 1024 * 1024;
/// The largest payload a frame on a message stream may carry: 1 MiB. Every receiver accepts
/// it; a larger message travels on a stream of its own with the `LARGE` flag.
pub const DEFAULT_CONTROL_CAP: usize = 1024 * 1024;
/// The largest payload a frame on the control stream (the system lane) may carry: 64 KiB.
pub const SYSTEM_FRAME_CAP: usize = 64 * 1024;

/// The bits of the flags byte.
pub mod flags {
    /// The frame is a request; a request id follows.
    pub const REQUEST: u8 = 0x01;
    /// The frame is a response to the request with the id that follows.
    pub const RESPONSE: u8 = 0x02;
    /// The frame is an error response: a request id and a status follow.
    pub const ERROR: u8 = 0x04;
    /// A CRC32C of opcode..payload follows the payload.
    pub const CHECKSUM: u8 = 0x08;
    /// The frame is a large message on a stream of its own.
    pub const LARGE: u8 = 0x10;
    /// The sender wants an [`crate::Opcode::ACK`] once the message was handed to a handler;
    /// a request id follows.
    pub const ACK: u8 = 0x20;
    /// Bits that must be zero.
    pub const RESERVED: u8 = 0xC0;
    /// The bits that choose the kind; at most one may be set.
    pub const KIND_MASK: u8 = REQUEST | RESPONSE | ERROR | ACK;
}

/// An error status carried by an error response (u16). 1..=999 are sinew's; 1000 and up are
/// for applications.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(pub u16);

impl Status {
    /// No handler for the opcode.
    pub const UNKNOWN_OPCODE: Self = Self(1);
    /// The handler's queue is full; try again later.
    pub const BUSY: Self = Self(2);
    /// The peer is not authorized for this opcode.
    pub const UNAUTHORIZED: Self = Self(3);
    /// The message is larger than the receiver accepts.
    pub const TOO_LARGE: Self = Self(4);
    /// The request was malformed.
    pub const BAD_REQUEST: Self = Self(5);
    /// The handler failed.
    pub const INTERNAL: Self = Self(6);
    /// The handler is shutting down.
    pub const SHUTTING_DOWN: Self = Self(7);
    /// First application status.
    pub const APP_START: u16 = 1000;

    /// A short name for sinew's statuses.
    pub fn name(&self) -> &'static str {
        match *self {
            Self::UNKNOWN_OPCODE => "unknown opcode",
            Self::BUSY => "busy",
            Self::UNAUTHORIZED => "unauthorized",
            Self::TOO_LARGE => "too large",
            Self::BAD_REQUEST => "bad request",
            Self::INTERNAL => "internal error",
            Self::SHUTTING_DOWN => "shutting down",
            Self(code) if code >= Self::APP_START => "application error",
            _ => "unknown status",
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({} {})", self.0, self.name())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// What a frame is, and the ids it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A one-way message.
    Message,
    /// A one-way message the receiver acknowledges with [`Opcode::ACK`] once handled.
    Acked {
        /// Matches the acknowledgement to the message.
        id: u64,
    },
    /// A request; the receiver answers with a `Response` or `Error` of the same id.
    Request {
        /// The request id.
        id: u64,
    },
    /// A response.
    Response {
        /// The id of the request answered.
        id: u64,
    },
    /// An error response.
    Error {
        /// The id of the request answered (0 when answering a frame that had no id).
        id: u64,
        /// Why.
        status: Status,
    },
}

impl FrameKind {
    /// The kind's flag bit.
    pub fn flag(&self) -> u8 {
        match self {
            Self::Message => 0,
            Self::Acked { .. } => flags::ACK,
            Self::Request { .. } => flags::REQUEST,
            Self::Response { .. } => flags::RESPONSE,
            Self::Error { .. } => flags::ERROR,
        }
    }

    /// The request id, for every kind but `Message`.
    pub fn id(&self) -> Option<u64> {
        match *self {
            Self::Message => None,
            Self::Acked { id }
            | Self::Request { id }
            | Self::Response { id }
            | Self::Error { id, .. } => Some(id),
        }
    }

    /// Header bytes after the flags byte.
    fn extra_len(&self) -> usize {
        match self {
            Self::Message => 0,
            Self::Error { .. } => 10,
            _ => 8,
        }
    }
}

/// One frame: an opcode, a kind, options, and an opaque payload.
///
/// The payload is a [`Bytes`]: when decoded, it is a slice of the receive buffer (no copy).
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message type.
    pub opcode: Opcode,
    /// Message, request, response, ...
    pub kind: FrameKind,
    /// Whether a CRC32C trailer is (to be) sent. Off by default: the AEAD already protects
    /// integrity; useful over transports without one or for end-to-end checks.
    pub checksum: bool,
    /// Whether this is a large message on a stream of its own.
    pub large: bool,
    /// The payload.
    pub payload: Bytes,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("opcode", &self.opcode)
            .field("kind", &self.kind)
            .field("checksum", &self.checksum)
            .field("large", &self.large)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// An encoded header: up to [`MAX_HEADER`] bytes, written before the payload.
#[derive(Debug, Clone, Copy)]
pub struct EncodedHeader {
    bytes: [u8; MAX_HEADER],
    len: usize,
}

impl EncodedHeader {
    /// The header bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Frame {
    /// A one-way message.
    pub fn message(opcode: Opcode, payload: Bytes) -> Self {
        Self { opcode, kind: FrameKind::Message, checksum: false, large: false, payload }
    }

    /// A frame of the given kind.
    pub fn new(opcode: Opcode, kind: FrameKind, payload: Bytes) -> Self {
        Self { opcode, kind, checksum: false, large: false, payload }
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        let mut f = self.kind.flag();
        if self.checksum {
            f |= flags::CHECKSUM;
        }
        if self.large {
            f |= flags::LARGE;
        }
        f
    }

    /// Bytes after the length field: the value of the length field.
    pub fn body_len(&self) -> usize {
        MIN_BODY
            + self.kind.extra_len()
            + self.payload.len()
            + if self.checksum { CHECKSUM_LEN } else { 0 }
    }

    /// Total encoded size, length field included.
    pub fn encoded_len(&self) -> usize {
        LENGTH_FIELD + self.body_len()
    }

    /// Encodes the header (everything before the payload). Write the payload after it and then
    /// [`Frame::trailer`] if any; this lets a large payload be written without copying.
    ///
    /// # Panics
    /// If the body is longer than `u32::MAX` bytes; sinew never builds such frames (payloads are
    /// capped at [`MAX_MESSAGE`] before they get here).
    pub fn encode_header(&self) -> EncodedHeader {
        let mut bytes = [0u8; MAX_HEADER];
        let body_len =
            u32::try_from(self.body_len()).expect("frame bodies are at most 512 MiB + header");
        bytes[0..4].copy_from_slice(&body_len.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.opcode.value().to_le_bytes());
        bytes[8] = self.flags();
        let mut len = 9;
        if let Some(id) = self.kind.id() {
            bytes[len..len + 8].copy_from_slice(&id.to_le_bytes());
            len += 8;
        }
        if let FrameKind::Error { status, .. } = self.kind {
            bytes[len..len + 2].copy_from_slice(&status.0.to_le_bytes());
            len += 2;
        }
        EncodedHeader { bytes, len }
    }

    /// The CRC32C trailer, if the frame has one: over the header after the length field, then
    /// the payload.
    pub fn trailer(&self) -> Option<[u8; CHECKSUM_LEN]> {
        self.checksum.then(|| {
            let header = self.encode_header();
            let crc = crc32c::crc32c(&header.as_bytes()[LENGTH_FIELD..]);
            crc32c::crc32c_append(crc, &self.payload).to_le_bytes()
        })
    }

    /// Appends the whole encoded frame to `dst` (copies the payload; use
    /// [`Frame::encode_header`] to avoid that for large payloads).
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_slice(self.encode_header().as_bytes());
        dst.put_slice(&self.payload);
        if let Some(trailer) = self.trailer() {
            dst.put_slice(&trailer);
        }
    }

    /// Whether the frame travels on the system lane (the control stream): every opcode below
    /// 1000, and every `ERROR` frame. The rest (application messages, requests, acked
    /// messages and responses) travels on the sender's message stream.
    pub fn is_system(&self) -> bool {
        !self.opcode.is_app() || matches!(self.kind, FrameKind::Error { .. })
    }

    /// The encoded frame as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }
}
