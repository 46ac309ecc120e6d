//! The advisory refusal record: what a listener says, before any handshake, to a Noise dialler
//! it refuses for a limit.
//!
//! | offset | size | value |
//! |---:|---:|---|
//! | 0 | 2 | `00 00`: a Noise message length of 0, which no real message 2 has |
//! | 2 | 6 | `52 45 46 55 53 45` ("REFUSE") |
//! | 8 | 1 | record version, `01` |
//! | 9 | 1 | the limit ([`RefusedLimit::code`]) |
//! | 10 | 2 | u16 LE: seconds to wait before trying again (0: no advice) |
//!
//! It is plaintext and unauthenticated (nothing is known of the listener yet): a dialler
//! reports it as a typed refusal and treats it as a hint, never as proof.

use std::time::Duration;

use sinew_transport::{Refused, RefusedLimit};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Bytes in a refusal record.
pub const REFUSAL_LEN: usize = 12;
const MAGIC: &[u8; 6] = b"REFUSE";
const VERSION: u8 = 1;

/// Encodes a refusal record.
pub fn encode_refusal(refused: Refused) -> [u8; REFUSAL_LEN] {
    let mut record = [0u8; REFUSAL_LEN];
    record[2..8].copy_from_slice(MAGIC);
    record[8] = VERSION;
    record[9] = refused.limit.code();
    let after = refused.retry_after.map_or(0, |d| u16::try_from(d.as_secs()).unwrap_or(u16::MAX));
    record[10..12].copy_from_slice(&after.to_le_bytes());
    record
}

/// Decodes a refusal record (all [`REFUSAL_LEN`] bytes, the zero length included); `None` if
/// it is not one.
pub fn decode_refusal(record: &[u8; REFUSAL_LEN]) -> Option<Refused> {
    if record[..2] != [0, 0] || &record[2..8] != MAGIC || record[8] != VERSION {
        return None;
    }
    let after = u16::from_le_bytes([record[10], record[11]]);
    Some(Refused {
        limit: RefusedLimit::from_code(record[9]),
        retry_after: (after > 0).then(|| Duration::from_secs(u64::from(after))),
    })
}

/// Refuses an accepted socket: waits (within `timeout`) for the dialler's first bytes, writes
/// the refusal record to a Noise dialler (a TLS dialler gets nothing yet: TLS will send an
/// alert), finishes the socket, and reads what the dialler still sends until it closes or
/// `timeout` passes, so that the record is not lost to a reset.
pub async fn refuse_inbound<S>(mut io: S, refused: Refused, timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let _ = tokio::time::timeout(timeout, async {
        let mut first = [0u8; 64];
        let n = io.read(&mut first).await?;
        if n > 0 && first[0] == crate::preamble::MAGIC[0] {
            io.write_all(&encode_refusal(refused)).await?;
        }
        io.shutdown().await?;
        while io.read(&mut first).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_others_are_not_records() {
        let refused =
            Refused { limit: RefusedLimit::PerIp, retry_after: Some(Duration::from_secs(3)) };
        let record = encode_refusal(refused);
        assert_eq!(&record[..], b"\0\0REFUSE\x01\x04\x03\x00");
        assert_eq!(decode_refusal(&record), Some(refused));
        let none = Refused { limit: RefusedLimit::Total, retry_after: None };
        assert_eq!(decode_refusal(&encode_refusal(none)), Some(none));
        let mut bad = record;
        bad[8] = 2;
        assert_eq!(decode_refusal(&bad), None);
        bad = record;
        bad[1] = 1;
        assert_eq!(decode_refusal(&bad), None);
    }
}
