//! sinew's wire format.
//!
//! A frame is little-endian: `u32 length` (bytes after this field), `u32 opcode`, `u8 flags`,
//! then a `u64` request id for requests, responses, errors and acked messages, a `u16` status for
//! errors, the payload, and an optional `u32` CRC32C. `docs/protocol.md` has the byte table.
//!
//! - [`Frame`] and [`FrameKind`]: what a frame is; [`Frame::encode_header`] lets a large payload
//!   be written without copying it.
//! - [`FrameDecoder`]: sans-IO; `decode(&mut BytesMut) -> Result<Option<Frame>, FrameError>`,
//!   `Ok(None)` meaning "more bytes". Payloads are slices of the receive buffer. The header is
//!   checked as soon as it arrives, so oversize or malformed frames are refused before their
//!   body, and [`FrameDecoder::read_hint`] grows buffers with the bytes received, never with a
//!   claimed length.
//! - [`Opcode`] and [`OpcodeRange`]: opcode blocks (carrier, system, rendezvous, gossip, NAT,
//!   applications from 1000).
//! - [`Reader`] and [`Writer`]: bounded little-endian reading and writing of message bodies.
//! - [`messages`]: the bodies of sinew's own messages (identify, disconnect, stream headers).
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use sinew_codec::{Frame, FrameDecoder, FrameKind, Opcode, DEFAULT_CONTROL_CAP};
//!
//! let frame = Frame::new(Opcode::app(1000)?, FrameKind::Request { id: 7 }, Bytes::from_static(b"hi"));
//! let mut wire = BytesMut::new();
//! frame.encode(&mut wire);
//!
//! let mut decoder = FrameDecoder::new(DEFAULT_CONTROL_CAP);
//! let mut partial = wire.split_to(5);
//! assert_eq!(decoder.decode(&mut partial)?, None); // needs more bytes
//! partial.unsplit(wire);
//! assert_eq!(decoder.decode(&mut partial)?, Some(frame));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod decoder;
mod frame;
pub mod messages;
mod opcode;
mod rw;

pub use decoder::{FrameDecoder, FrameError};
pub use frame::{
    CHECKSUM_LEN, DEFAULT_CONTROL_CAP, EncodedHeader, Frame, FrameKind, LENGTH_FIELD, MAX_HEADER,
    MAX_MESSAGE, MIN_BODY, SYSTEM_FRAME_CAP, Status, flags,
};
pub use opcode::{Opcode, OpcodeBlock, OpcodeError, OpcodeRange};
pub use rw::{DecodeError, Reader, Writer};

/// Harnesses for the fuzz targets in `fuzz/` (not part of the API).
#[doc(hidden)]
pub mod fuzzing {
    use bytes::{Bytes, BytesMut};

    use crate::FrameDecoder;
    use crate::messages::{ControlHello, Disconnect, Identify, MessageBody, OpenStream, Perf};

    /// Decodes frames from `data` in chunks; every decoded frame must re-encode to the bytes it
    /// came from and decode to itself again.
    pub fn frame_decoder(data: &[u8]) {
        let Some((&chunk, data)) = data.split_first() else { return };
        let chunk = usize::from(chunk).max(1);
        let mut decoder = FrameDecoder::new(64 * 1024);
        let mut buf = BytesMut::new();
        for piece in data.chunks(chunk) {
            buf.extend_from_slice(piece);
            let _ = decoder.read_hint(&buf);
            loop {
                let before = buf.clone();
                match decoder.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        let consumed = before.len() - buf.len();
                        let encoded = frame.to_bytes();
                        assert_eq!(&encoded[..], &before[..consumed], "re-encoding differs");
                        let again = decoder.decode(&mut BytesMut::from(&encoded[..]));
                        assert_eq!(again, Ok(Some(frame)), "decode(encode(decode(x))) differs");
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    }

    fn body_round_trip<M: MessageBody + PartialEq + std::fmt::Debug>(data: &[u8]) {
        if let Ok(msg) = M::decode(Bytes::copy_from_slice(data)) {
            let again = M::decode(msg.encode()).expect("re-encoded body must decode");
            assert_eq!(again, msg);
        }
    }

    /// Decodes identify bodies: decode, encode, decode, equal.
    pub fn identify(data: &[u8]) {
        body_round_trip::<Identify>(data);
    }

    /// Decodes every other system message body (the first byte picks which).
    pub fn message_bodies(data: &[u8]) {
        let Some((&which, data)) = data.split_first() else { return };
        match which % 4 {
            0 => body_round_trip::<Disconnect>(data),
            1 => body_round_trip::<ControlHello>(data),
            2 => body_round_trip::<OpenStream>(data),
            _ => body_round_trip::<Perf>(data),
        }
    }
}
