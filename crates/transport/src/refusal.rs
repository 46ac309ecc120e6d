//! Why a listener refused a connection before its handshake, as said on the wire.

use std::fmt;
use std::time::Duration;

/// The limit a listener refused a connection for, before any handshake: sent in sinew's
/// advisory refusal record (Noise; see `docs/protocol.md`), and later as a TLS alert or QUIC's
/// `CONNECTION_REFUSED`. Unauthenticated: a hint for the dialler, never proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusedLimit {
    /// The listener's total connection limit.
    Total,
    /// Its inbound connection limit.
    Inbound,
    /// Its limit on inbound handshakes in progress.
    PendingHandshakes,
    /// Its limit on connections from one IP address.
    PerIp,
    /// It is shutting down.
    ShuttingDown,
    /// A code this version does not know.
    Other(u8),
}

impl RefusedLimit {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::Total => 1,
            Self::Inbound => 2,
            Self::PendingHandshakes => 3,
            Self::PerIp => 4,
            Self::ShuttingDown => 5,
            Self::Other(code) => code,
        }
    }

    /// The limit for a wire code.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Total,
            2 => Self::Inbound,
            3 => Self::PendingHandshakes,
            4 => Self::PerIp,
            5 => Self::ShuttingDown,
            other => Self::Other(other),
        }
    }
}

impl fmt::Display for RefusedLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Total => f.write_str("its connection limit"),
            Self::Inbound => f.write_str("its inbound connection limit"),
            Self::PendingHandshakes => f.write_str("its pending handshake limit"),
            Self::PerIp => f.write_str("its per-IP connection limit"),
            Self::ShuttingDown => f.write_str("shutting down"),
            Self::Other(code) => write!(f, "limit code {code}"),
        }
    }
}

/// A refusal as the dialler received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Which limit.
    pub limit: RefusedLimit,
    /// How long the listener advises waiting before trying again (none: no advice).
    pub retry_after: Option<Duration>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the listener refused the connection: {}", self.limit)?;
        if let Some(after) = self.retry_after {
            write!(f, " (retry after {} s)", after.as_secs())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..=u8::MAX {
            assert_eq!(RefusedLimit::from_code(code).code(), code);
        }
        assert_eq!(RefusedLimit::from_code(4), RefusedLimit::PerIp);
    }
}
