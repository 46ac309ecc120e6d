//! Little-endian, bounded reading and writing of message bodies.

use bytes::{BufMut as _, Bytes, BytesMut};
use sinew_types::{Addr, PeerId};

/// Why a message body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body ended before the field `field`.
    #[error("message truncated at {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// A length prefix exceeds the field's bound.
    #[error("{field} is {len} long, more than the limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The length claimed.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A field has a value it may not have.
    #[error("invalid {field}")]
    Invalid {
        /// The field.
        field: &'static str,
    },
    /// Bytes were left after the last field of a message that allows none.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// Reads little-endian values from a message body. Every variable-length read names its bound;
/// nothing is allocated from a length before the bytes are known to be there.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    /// Reads from `buf` (cheap: `Bytes` is reference counted).
    pub fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { field });
        }
        Ok(self.buf.split_to(n))
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&bytes);
        Ok(out)
    }

    /// A `u8`.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A boolean byte (0 or 1; anything else is invalid).
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid { field }),
        }
    }

    /// Exactly `n` bytes.
    pub fn fixed(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        self.take(n, field)
    }

    /// Bytes with a `u32` length prefix, at most `max` long (zero-copy).
    pub fn bytes(&mut self, max: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        self.take(len, field)
    }

    /// UTF-8 text with a `u16` length prefix, at most `max` bytes.
    pub fn string(&mut self, max: usize, field: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid { field })
    }

    /// A count (`u16`) of items to follow, at most `max`.
    pub fn count(&mut self, max: usize, field: &'static str) -> Result<usize, DecodeError> {
        let n = usize::from(self.u16(field)?);
        if n > max {
            return Err(DecodeError::TooLong { field, len: n, max });
        }
        Ok(n)
    }

    /// A 32-byte peer id (validated: a non-weak Ed25519 key).
    pub fn peer_id(&mut self, field: &'static str) -> Result<PeerId, DecodeError> {
        let bytes = self.array::<32>(field)?;
        PeerId::from_bytes(bytes).map_err(|_| DecodeError::Invalid { field })
    }

    /// An address in its text form (as [`Reader::string`], at most 255 bytes).
    pub fn addr(&mut self, field: &'static str) -> Result<Addr, DecodeError> {
        self.string(crate::messages::MAX_ADDR_TEXT, field)?
            .parse()
            .map_err(|_| DecodeError::Invalid { field })
    }

    /// The rest of the body (zero-copy).
    pub fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    /// Succeeds only if everything was read.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() { Ok(()) } else { Err(DecodeError::Trailing(self.buf.len())) }
    }
}

/// Writes little-endian values into a message body, the counterpart of [`Reader`].
#[derive(Debug, Default)]
pub struct Writer {
    buf: BytesMut,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Self { buf: BytesMut::with_capacity(n) }
    }

    /// A `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.put_u8(v);
        self
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.put_u16_le(v);
        self
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.put_u32_le(v);
        self
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.put_u64_le(v);
        self
    }

    /// A boolean byte.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    /// Bytes without a length prefix.
    pub fn fixed(&mut self, v: &[u8]) -> &mut Self {
        self.buf.put_slice(v);
        self
    }

    /// Bytes with a `u32` length prefix.
    ///
    /// # Panics
    /// If `v` is longer than `u32::MAX`; callers bound their fields far below that.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(u32::try_from(v.len()).expect("fields are bounded far below 4 GiB"));
        self.fixed(v)
    }

    /// Text with a `u16` length prefix.
    ///
    /// # Panics
    /// If `v` is longer than 65,535 bytes; callers bound their strings below that.
    pub fn string(&mut self, v: &str) -> &mut Self {
        self.u16(u16::try_from(v.len()).expect("strings are bounded below 64 KiB"));
        self.fixed(v.as_bytes())
    }

    /// A `u16` item count.
    ///
    /// # Panics
    /// If `n` exceeds 65,535; callers bound their lists below that.
    pub fn count(&mut self, n: usize) -> &mut Self {
        self.u16(u16::try_from(n).expect("lists are bounded below 65,536 items"))
    }

    /// A peer id's 32 bytes.
    pub fn peer_id(&mut self, v: &PeerId) -> &mut Self {
        self.fixed(v.as_bytes())
    }

    /// An address's text form.
    pub fn addr(&mut self, v: &Addr) -> &mut Self {
        self.string(&v.to_string())
    }

    /// The body written so far.
    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_little_endian() {
        let mut w = Writer::new();
        w.u8(1).u16(0x0203).u32(0x0405_0607).u64(8).bool(true).bytes(b"ab").string("hé");
        let body = w.finish();
        assert_eq!(&body[..3], &[1, 0x03, 0x02]);
        let mut r = Reader::new(body);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u16("b").unwrap(), 0x0203);
        assert_eq!(r.u32("c").unwrap(), 0x0405_0607);
        assert_eq!(r.u64("d").unwrap(), 8);
        assert!(r.bool("e").unwrap());
        assert_eq!(&r.bytes(2, "f").unwrap()[..], b"ab");
        assert_eq!(r.string(8, "g").unwrap(), "hé");
        r.finish().unwrap();
    }

    #[test]
    fn bounds_and_truncation_are_typed() {
        let mut w = Writer::new();
        w.bytes(&[0u8; 10]);
        let body = w.finish();
        assert_eq!(
            Reader::new(body.clone()).bytes(9, "blob"),
            Err(DecodeError::TooLong { field: "blob", len: 10, max: 9 })
        );
        assert_eq!(
            Reader::new(body.slice(..8)).bytes(10, "blob"),
            Err(DecodeError::Truncated { field: "blob" })
        );
        assert_eq!(
            Reader::new(Bytes::from_static(&[2])).bool("flag"),
            Err(DecodeError::Invalid { field: "flag" })
        );
        assert_eq!(Reader::new(Bytes::from_static(&[1])).finish(), Err(DecodeError::Trailing(1)));
        // A huge claimed length is refused before anything is allocated for it.
        let lying = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 1, 2]);
        assert!(matches!(
            Reader::new(lying).bytes(usize::MAX, "x"),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
