//! What the transport layer reports, in the peer manager's terms (the manager knows nothing of
//! transports: it has no I/O and no tokio).

use sinew_peers::{DialFailure, Established};
use sinew_transport::{ConnectionInfo, DialError, HandshakeError};

/// What a finished handshake established.
pub(crate) fn established(info: &ConnectionInfo) -> Established {
    Established {
        peer: info.peer,
        direction: info.direction,
        remote_addr: info.remote_addr.clone(),
        boot_nonce: info.boot_nonce,
        session_tag: info.session_tag,
    }
}

/// Why a dial failed.
pub(crate) fn dial_failure(error: &DialError) -> DialFailure {
    match error {
        DialError::UnsupportedScheme(_) => DialFailure::UnsupportedScheme,
        DialError::Timeout | DialError::Handshake(HandshakeError::Timeout) => DialFailure::Timeout,
        DialError::Handshake(HandshakeError::SelfConnection) => DialFailure::SelfConnection,
        DialError::Handshake(HandshakeError::UnexpectedPeer { .. }) => DialFailure::UnexpectedPeer,
        DialError::Handshake(HandshakeError::Refused(_)) => DialFailure::Refused,
        DialError::Handshake(_) => DialFailure::Handshake,
        _ => DialFailure::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use sinew_transport::{Direction, NoiseSuite, Security};
    use sinew_types::{Addr, Keypair};

    use super::*;

    #[test]
    fn dial_errors_map_to_their_failure_kind() {
        let peer = Keypair::from_secret_bytes([3; 32]).peer_id();
        let cases = [
            (DialError::Timeout, DialFailure::Timeout),
            (DialError::Handshake(HandshakeError::Timeout), DialFailure::Timeout),
            (DialError::Handshake(HandshakeError::SelfConnection), DialFailure::SelfConnection),
            (
                DialError::Handshake(HandshakeError::UnexpectedPeer {
                    expected: peer,
                    actual: peer,
                }),
                DialFailure::UnexpectedPeer,
            ),
            (DialError::Handshake(HandshakeError::BadSignature), DialFailure::Handshake),
            (
                DialError::Connect(io::Error::from(io::ErrorKind::ConnectionRefused)),
                DialFailure::Unreachable,
            ),
            (
                DialError::UnsupportedScheme(sinew_types::Scheme::Quic),
                DialFailure::UnsupportedScheme,
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(dial_failure(&error), kind, "{error}");
        }
    }

    #[test]
    fn established_takes_what_the_handshake_proved() {
        let peer = Keypair::from_secret_bytes([4; 32]).peer_id();
        let addr: Addr = "tcp://192.0.2.1:4001".parse().unwrap();
        let info = ConnectionInfo {
            peer,
            direction: Direction::Inbound,
            local_addr: addr.clone(),
            remote_addr: addr.clone().with_port(5555),
            security: Security::Noise(NoiseSuite::AesGcm),
            boot_nonce: 42,
            session_tag: [7; 32],
        };
        let est = established(&info);
        assert_eq!(est.peer, peer);
        assert_eq!(est.direction, Direction::Inbound);
        assert_eq!(est.remote_addr, addr.with_port(5555));
        assert_eq!((est.boot_nonce, est.session_tag), (42, [7; 32]));
    }
}
