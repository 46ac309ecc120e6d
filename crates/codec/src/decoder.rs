//! The sans-IO frame decoder.

use bytes::{Buf as _, BytesMut};

use crate::frame::{CHECKSUM_LEN, LENGTH_FIELD, MAX_HEADER, MIN_BODY, flags};
use crate::{Frame, FrameKind, Opcode, Status};

/// Smallest amount [`FrameDecoder::read_hint`] asks for.
const MIN_READ: usize = 8 * 1024;
/// Most [`FrameDecoder::read_hint`] asks for when nothing bounds it.
const MAX_READ: usize = 256 * 1024;

/// Why bytes are not a valid frame. Every variant is a protocol violation: the connection (or
/// stream) that sent it should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame's payload exceeds the cap for this stream (judged from the header alone:
    /// nothing was allocated for it).
    #[error("frame payload of {len} bytes exceeds the cap of {max}")]
    TooLarge {
        /// The payload length the header claims (when only the length field has arrived, the
        /// least payload a frame of that length can carry).
        len: usize,
        /// The payload cap.
        max: usize,
    },
    /// The length field is too small for the header its flags announce.
    #[error("frame length {len} is too short for its header")]
    TooShort {
        /// The claimed body length.
        len: usize,
    },
    /// A reserved flag bit is set.
    #[error("reserved flag bits set: {0:#04x}")]
    ReservedFlags(u8),
    /// More than one of request, response, error and ack is set.
    #[error("conflicting kind flags: {0:#04x}")]
    ConflictingKind(u8),
    /// Opcode 0 is invalid.
    #[error("opcode 0 is invalid")]
    ZeroOpcode,
    /// The CRC32C trailer does not match.
    #[error("checksum mismatch: frame says {expected:#010x}, computed {actual:#010x}")]
    Checksum {
        /// The trailer's value.
        expected: u32,
        /// The computed value.
        actual: u32,
    },
}

/// Decodes frames from a buffer the caller owns and fills (the `tokio_util` `Decoder` shape).
///
/// [`FrameDecoder::decode`] returns `Ok(None)` when more bytes are needed. The header is
/// validated as soon as its bytes are present, so a bad or oversize frame is refused before its
/// body arrives, and the claimed length is never used to allocate: grow the buffer by
/// [`FrameDecoder::read_hint`], which is bounded by what has already arrived.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_payload: usize,
    max_body: usize,
}

impl FrameDecoder {
    /// A decoder for frames carrying up to `max_payload` bytes of payload (exactly: a frame
    /// with `max_payload + 1` payload bytes is refused, whatever its kind and options).
    pub fn new(max_payload: usize) -> Self {
        let mut decoder = Self { max_payload: 0, max_body: 0 };
        decoder.set_max_payload(max_payload);
        decoder
    }

    /// Changes the payload cap for the frames still to come (for example when a peer becomes
    /// authorized).
    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.max_payload = max_payload;
        self.max_body = max_payload.saturating_add(MAX_HEADER - LENGTH_FIELD + CHECKSUM_LEN);
    }

    /// The payload cap.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The largest body length (the length field's value) any frame within the cap can have.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Decodes one frame from the front of `src`, removing its bytes. `Ok(None)`: `src` holds
    /// only part of a frame (possibly nothing); read more and call again.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header) = self.check_header(src)? else {
            return Ok(None);
        };
        let total = LENGTH_FIELD + header.body_len;
        if src.len() < total {
            return Ok(None);
        }
        let mut frame_bytes = src.split_to(total);
        if header.checksum {
            let (covered, trailer) =
                frame_bytes[LENGTH_FIELD..].split_at(header.body_len - CHECKSUM_LEN);
            let expected = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
            let actual = crc32c::crc32c(covered);
            if expected != actual {
                return Err(FrameError::Checksum { expected, actual });
            }
            frame_bytes.truncate(total - CHECKSUM_LEN);
        }
        frame_bytes.advance(header.header_len);
        Ok(Some(Frame {
            opcode: header.opcode,
            kind: header.kind,
            checksum: header.checksum,
            large: header.large,
            payload: frame_bytes.freeze(),
        }))
    }

    /// How many bytes to reserve before the next read into `src`: what the frame in progress
    /// still needs, but never more than what has already arrived (at least 8 KiB, at most
    /// 256 KiB when nothing bounds it). Growing this way, a peer has to send n bytes to make us
    /// hold about 2n.
    pub fn read_hint(&self, src: &BytesMut) -> usize {
        let arrived = src.len().max(MIN_READ);
        match self.check_header(src) {
            Ok(Some(h)) => {
                let needed = (LENGTH_FIELD + h.body_len).saturating_sub(src.len());
                needed.min(arrived).max(1)
            }
            _ => arrived.min(MAX_READ),
        }
    }

    /// Whether `src` holds part of a frame (the slow-loris check: a partial frame must make
    /// progress or the connection is closed).
    pub fn is_partial(&self, src: &BytesMut) -> bool {
        !src.is_empty()
    }

    /// Validates the header if enough bytes for it are present.
    fn check_header(&self, src: &BytesMut) -> Result<Option<Header>, FrameError> {
        if src.len() < LENGTH_FIELD {
            return Ok(None);
        }
        let body_len = u32::from_le_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if body_len > self.max_body {
            // Too long for any header: the least payload such a frame can carry.
            let len = body_len - (MAX_HEADER - LENGTH_FIELD + CHECKSUM_LEN);
            return Err(FrameError::TooLarge { len, max: self.max_payload });
        }
        if src.len() < LENGTH_FIELD + MIN_BODY {
            return Ok(None);
        }
        let opcode = u32::from_le_bytes([src[4], src[5], src[6], src[7]]);
        if opcode == 0 {
            return Err(FrameError::ZeroOpcode);
        }
        let flag_bits = src[8];
        if flag_bits & flags::RESERVED != 0 {
            return Err(FrameError::ReservedFlags(flag_bits));
        }
        let kind_bits = flag_bits & flags::KIND_MASK;
        if kind_bits.count_ones() > 1 {
            return Err(FrameError::ConflictingKind(flag_bits));
        }
        let checksum = flag_bits & flags::CHECKSUM != 0;
        let extra = match kind_bits {
            0 => 0,
            flags::ERROR => 10,
            _ => 8,
        };
        let header_len = LENGTH_FIELD + MIN_BODY + extra;
        let min_body = MIN_BODY + extra + if checksum { CHECKSUM_LEN } else { 0 };
        if body_len < min_body {
            return Err(FrameError::TooShort { len: body_len });
        }
        let payload_len = body_len - min_body;
        if payload_len > self.max_payload {
            return Err(FrameError::TooLarge { len: payload_len, max: self.max_payload });
        }
        if src.len() < header_len {
            return Ok(None);
        }
        let id = || u64::from_le_bytes(src[9..17].try_into().expect("8 bytes checked above"));
        let kind = match kind_bits {
            0 => FrameKind::Message,
            flags::REQUEST => FrameKind::Request { id: id() },
            flags::RESPONSE => FrameKind::Response { id: id() },
            flags::ACK => FrameKind::Acked { id: id() },
            _ => FrameKind::Error {
                id: id(),
                status: Status(u16::from_le_bytes([src[17], src[18]])),
            },
        };
        Ok(Some(Header {
            body_len,
            header_len,
            opcode: Opcode::from_u32(opcode),
            kind,
            checksum,
            large: flag_bits & flags::LARGE != 0,
        }))
    }
}

struct Header {
    body_len: usize,
    header_len: usize,
    opcode: Opcode,
    kind: FrameKind,
    checksum: bool,
    large: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{DEFAULT_CONTROL_CAP, MAX_MESSAGE};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn kind_strategy() -> impl Strategy<Value = FrameKind> {
        prop_oneof![
            Just(FrameKind::Message),
            any::<u64>().prop_map(|id| FrameKind::Acked { id }),
            any::<u64>().prop_map(|id| FrameKind::Request { id }),
            any::<u64>().prop_map(|id| FrameKind::Response { id }),
            (any::<u64>(), any::<u16>())
                .prop_map(|(id, s)| FrameKind::Error { id, status: Status(s) }),
        ]
    }

    prop_compose! {
        fn frame_strategy()(
            opcode in 1u32..,
            kind in kind_strategy(),
            checksum in any::<bool>(),
            large in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) -> Frame {
            Frame { opcode: Opcode::from_u32(opcode), kind, checksum, large, payload: Bytes::from(payload) }
        }
    }

    proptest! {
        /// Every flag combination (each kind, with and without checksum and large) round-trips,
        /// also when several frames share a buffer.
        #[test]
        fn round_trip(frames in proptest::collection::vec(frame_strategy(), 1..5)) {
            let mut buf = BytesMut::new();
            for f in &frames {
                f.encode(&mut buf);
            }
            let mut dec = FrameDecoder::new(DEFAULT_CONTROL_CAP);
            for f in &frames {
                let got = dec.decode(&mut buf).unwrap().unwrap();
                prop_assert_eq!(&got, f);
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(dec.decode(&mut buf).unwrap(), None);
        }

        /// Every truncation point of a valid frame gives Ok(None) and consumes nothing.
        #[test]
        fn every_truncation_is_incomplete(frame in frame_strategy()) {
            let encoded = frame.to_bytes();
            let mut dec = FrameDecoder::new(DEFAULT_CONTROL_CAP);
            for cut in 0..encoded.len() {
                let mut buf = BytesMut::from(&encoded[..cut]);
                prop_assert_eq!(dec.decode(&mut buf).unwrap(), None, "cut at {}", cut);
                prop_assert_eq!(buf.len(), cut);
            }
        }

        /// Arbitrary bytes never panic; whatever decodes re-encodes to the same bytes.
        #[test]
        fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = BytesMut::from(&data[..]);
            let mut dec = FrameDecoder::new(1024);
            let _ = dec.read_hint(&buf);
            if let Ok(Some(frame)) = dec.decode(&mut buf) {
                let consumed = data.len() - buf.len();
                prop_assert_eq!(&frame.to_bytes()[..], &data[..consumed]);
            }
        }
    }

    #[test]
    fn oversize_and_lying_lengths_are_refused_without_allocating() {
        let mut dec = FrameDecoder::new(DEFAULT_CONTROL_CAP);
        // A header claiming 4 GiB: refused from the length field alone.
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let cap_before = buf.capacity();
        assert!(matches!(dec.decode(&mut buf), Err(FrameError::TooLarge { len: 0xffff_ffec, .. })));
        assert_eq!(buf.capacity(), cap_before);
        // A header claiming 512 MiB on a large-message stream is accepted, but the read hint
        // only grows with what arrived, not with the claim.
        let dec = FrameDecoder::new(MAX_MESSAGE);
        let frame = Frame { large: true, ..Frame::message(Opcode::from_u32(1000), Bytes::new()) };
        let mut header = BytesMut::from(frame.encode_header().as_bytes());
        header[0..4].copy_from_slice(&(MAX_MESSAGE as u32 + 5).to_le_bytes());
        assert_eq!(dec.read_hint(&header), MIN_READ);
        header.extend_from_slice(&vec![0u8; 100_000]);
        assert_eq!(dec.read_hint(&header), header.len());
    }

    /// The cap is on the payload, exactly, whatever the header size: every kind, with and
    /// without checksum, at the cap and at cap + 1.
    #[test]
    fn the_payload_cap_is_exact_for_every_kind() {
        let cap = 1000;
        let kinds = [
            FrameKind::Message,
            FrameKind::Request { id: 1 },
            FrameKind::Response { id: 1 },
            FrameKind::Acked { id: 1 },
            FrameKind::Error { id: 1, status: Status::BUSY },
        ];
        for kind in kinds {
            for checksum in [false, true] {
                let frame = |len: usize| Frame {
                    checksum,
                    ..Frame::new(Opcode::from_u32(1000), kind, Bytes::from(vec![1u8; len]))
                };
                let mut dec = FrameDecoder::new(cap);
                let mut at_cap = BytesMut::from(&frame(cap).to_bytes()[..]);
                assert_eq!(dec.decode(&mut at_cap).unwrap(), Some(frame(cap)), "{kind:?}");
                let mut over = BytesMut::from(&frame(cap + 1).to_bytes()[..]);
                // Refused from the header alone, before the payload arrives.
                let mut header = over.split_to(MAX_HEADER.min(over.len()));
                assert_eq!(
                    dec.decode(&mut header),
                    Err(FrameError::TooLarge { len: cap + 1, max: cap }),
                    "{kind:?} checksum {checksum}"
                );
                header.unsplit(over);
                assert!(dec.decode(&mut header).is_err());
            }
        }
        let mut dec = FrameDecoder::new(10);
        dec.set_max_payload(20);
        let mut buf =
            BytesMut::from(&Frame::message(Opcode::PING, Bytes::from(vec![0; 20])).to_bytes()[..]);
        assert!(dec.decode(&mut buf).unwrap().is_some());
    }

    #[test]
    fn reserved_bits_conflicts_and_zero_opcode_are_refused() {
        let mut dec = FrameDecoder::new(1024);
        let good = Frame::message(Opcode::PING, Bytes::from_static(b"x")).to_bytes();
        for bit in [0x40u8, 0x80] {
            let mut bad = BytesMut::from(&good[..]);
            bad[8] |= bit;
            assert_eq!(dec.decode(&mut bad), Err(FrameError::ReservedFlags(bit)));
        }
        let mut bad = BytesMut::from(&good[..]);
        bad[8] = flags::REQUEST | flags::RESPONSE;
        assert_eq!(dec.decode(&mut bad), Err(FrameError::ConflictingKind(0x03)));
        let mut bad = BytesMut::from(&good[..]);
        bad[4..8].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(dec.decode(&mut bad), Err(FrameError::ZeroOpcode));
        // An error frame whose length cannot hold id and status.
        let mut bad = BytesMut::from(&good[..]);
        bad[8] = flags::ERROR;
        assert_eq!(dec.decode(&mut bad), Err(FrameError::TooShort { len: 6 }));
    }

    #[test]
    fn checksum_mismatch_is_an_error() {
        let mut dec = FrameDecoder::new(1024);
        let mut frame = Frame::message(Opcode::from_u32(1000), Bytes::from_static(b"payload"));
        frame.checksum = true;
        let mut buf = BytesMut::from(&frame.to_bytes()[..]);
        let payload_at = buf.len() - CHECKSUM_LEN - 7;
        buf[payload_at] ^= 0x01;
        assert!(matches!(dec.decode(&mut buf), Err(FrameError::Checksum { .. })));
    }

    #[test]
    fn payload_is_a_slice_of_the_receive_buffer() {
        let mut dec = FrameDecoder::new(1024);
        let mut buf = BytesMut::new();
        Frame::message(Opcode::from_u32(1000), Bytes::from(vec![7u8; 100])).encode(&mut buf);
        let base = buf.as_ptr() as usize;
        let frame = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.payload.as_ptr() as usize, base + 9);
    }
}
