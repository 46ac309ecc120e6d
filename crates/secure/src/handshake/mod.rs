//! The sans-IO Noise XX handshake with identity binding.

use std::fmt;
use std::sync::Arc;

use sinew_transport::{HandshakeError, NoiseSuite, Security};
use sinew_types::{Keypair, PeerId, SigningDomain};

use crate::HandshakeInfo;
use crate::payload::IdentityPayload;
use crate::preamble::Preamble;
use crate::stream::NoiseError;
use crate::{LENGTH_PREFIX, MAX_MESSAGE, TAG_LEN};

/// X25519 public key length.
const DH_LEN: usize = 32;

/// This process's side of every Noise handshake: the Ed25519 identity, a fresh X25519 static key
/// (made here, kept in memory only, never stored), and the identity payload signed once so that
/// handshakes do not sign.
///
/// Cheap to clone (an `Arc`). `Debug` shows the peer id and boot nonce, never key material.
#[derive(Clone)]
pub struct NoiseIdentity {
    inner: Arc<IdentityInner>,
}

struct IdentityInner {
    peer_id: PeerId,
    boot_nonce: u64,
    static_private: Vec<u8>,
    static_public: [u8; DH_LEN],
    /// The encoded identity payload for messages 2 and 3.
    payload: Vec<u8>,
}

impl NoiseIdentity {
    /// Makes the X25519 static key (from the operating system's randomness) and signs it with
    /// `keypair` in [`SigningDomain::NOISE_HANDSHAKE`]. Do this once per process; `boot_nonce`
    /// (random per process start) goes to every remote.
    pub fn new(keypair: &Keypair, boot_nonce: u64) -> Self {
        // Invariant: the suite names are valid Noise names and the resolver (ring with snow's
        // own fallback) provides X25519 and an RNG, so neither step can fail short of the
        // operating system refusing randomness, which nothing can recover from.
        let builder = snow::Builder::new(params(NoiseSuite::ChaChaPoly));
        let static_key = builder
            .generate_keypair()
            .expect("the ring/default resolver provides X25519 and an RNG");
        let mut static_public = [0u8; DH_LEN];
        static_public.copy_from_slice(&static_key.public);
        let signature = keypair.sign(SigningDomain::NOISE_HANDSHAKE, &static_public);
        let mut payload = Vec::new();
        IdentityPayload { identity: keypair.peer_id(), signature, boot_nonce, extension: &[] }
            .encode(&mut payload);
        Self {
            inner: Arc::new(IdentityInner {
                peer_id: keypair.peer_id(),
                boot_nonce,
                static_private: static_key.private,
                static_public,
                payload,
            }),
        }
    }

    /// This process's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// This process's boot nonce.
    pub fn boot_nonce(&self) -> u64 {
        self.inner.boot_nonce
    }

    /// The X25519 static public key the identity payload signs.
    pub fn static_public_key(&self) -> &[u8; 32] {
        &self.inner.static_public
    }
}

impl fmt::Debug for NoiseIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseIdentity")
            .field("peer_id", &self.inner.peer_id)
            .field("boot_nonce", &self.inner.boot_nonce)
            .finish_non_exhaustive()
    }
}

/// What a [`NoiseHandshake`] needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeStep {
    /// Call [`NoiseHandshake::write_message`] and send the bytes.
    Write,
    /// Receive a message and pass it to [`NoiseHandshake::read_message`].
    Read,
    /// Call [`NoiseHandshake::finish`].
    Finished,
    /// A call failed; the handshake is over (close the connection).
    Failed,
}

/// The sans-IO Noise XX state machine, for one side of one connection.
///
/// The initiator writes message 1, reads message 2 (and checks the responder's identity there),
/// then writes message 3; the responder reads 1, writes 2, reads 3. [`NoiseHandshake::step`] says
/// which call comes next. Any error ends the handshake: later calls return
/// `HandshakeError::Protocol`.
pub struct NoiseHandshake {
    state: Box<snow::HandshakeState>,
    identity: NoiseIdentity,
    preamble: Preamble,
    expected: Option<PeerId>,
    position: Position,
    remote: Option<(PeerId, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Messages done so far (0..=3).
    At(u8),
    Failed,
}

impl NoiseHandshake {
    /// The dialer's side, asking for `suite`; if `expected` is set, any other responder identity
    /// fails with `UnexpectedPeer` before message 3 is written. Send
    /// [`NoiseHandshake::preamble`] first, then message 1.
    pub fn initiator(
        identity: &NoiseIdentity,
        suite: NoiseSuite,
        expected: Option<PeerId>,
    ) -> Self {
        Self::new(identity, Preamble::new(suite), expected, true)
    }

    /// The listener's side, for the preamble it received (its exact bytes are the prologue).
    pub fn responder(identity: &NoiseIdentity, preamble: Preamble) -> Self {
        Self::new(identity, preamble, None, false)
    }

    fn new(
        identity: &NoiseIdentity,
        preamble: Preamble,
        expected: Option<PeerId>,
        initiator: bool,
    ) -> Self {
        // Invariant: the parameters are valid constants, the static key is set once and the
        // prologue once, and the resolver provides every primitive of both suites, so building
        // cannot fail.
        let builder = snow::Builder::new(params(preamble.suite()))
            .local_private_key(&identity.inner.static_private)
            .and_then(|b| b.prologue(preamble.as_bytes()))
            .expect("a fresh builder accepts one static key and one prologue");
        let state = if initiator { builder.build_initiator() } else { builder.build_responder() }
            .expect("valid XX parameters with a static key always build");
        Self {
            state: Box::new(state),
            identity: identity.clone(),
            preamble,
            expected,
            position: Position::At(0),
            remote: None,
        }
    }

    /// The preamble: the one the initiator sends, or the one the responder received.
    pub fn preamble(&self) -> Preamble {
        self.preamble
    }

    /// What to do next.
    pub fn step(&self) -> HandshakeStep {
        match self.position {
            Position::Failed => HandshakeStep::Failed,
            Position::At(3) => HandshakeStep::Finished,
            Position::At(_) if self.state.is_my_turn() => HandshakeStep::Write,
            Position::At(_) => HandshakeStep::Read,
        }
    }

    /// The remote's identity, once its identity payload has been checked.
    pub fn remote(&self) -> Option<PeerId> {
        self.remote.map(|(peer, _)| peer)
    }

    /// Appends the next message to `out`, framed for the wire: `u16` big-endian length, then
    /// the message. Fails with `Protocol` if it is not this side's turn to write.
    pub fn write_message(&mut self, out: &mut Vec<u8>) -> Result<(), HandshakeError> {
        let Position::At(done) = self.position else { return Err(HandshakeError::Protocol) };
        if self.step() != HandshakeStep::Write {
            return Err(HandshakeError::Protocol);
        }
        // Message 1 carries no payload; messages 2 and 3 carry the identity payload.
        let payload: &[u8] = if done == 0 { &[] } else { &self.identity.inner.payload };
        // e (32) + encrypted s (32 + 16) + encrypted payload (payload + 16) at most.
        let max = (2 * DH_LEN + 2 * TAG_LEN + payload.len()).min(MAX_MESSAGE);
        let start = out.len();
        out.resize(start + LENGTH_PREFIX + max, 0);
        let written = self.state.write_message(payload, &mut out[start + LENGTH_PREFIX..]);
        let result = written
            .map_err(|_| HandshakeError::Protocol)
            .and_then(|n| u16::try_from(n).map_err(|_| HandshakeError::MessageTooLarge(n)));
        match result {
            Ok(len) => {
                out.truncate(start + LENGTH_PREFIX + usize::from(len));
                out[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
                self.position = Position::At(done + 1);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                self.position = Position::Failed;
                Err(e)
            }
        }
    }

    /// Processes one received message: its body, without the length prefix (read that first;
    /// see [`message_len`]).
    ///
    /// Errors: `Protocol` when it is not this side's turn or the message does not decrypt
    /// (tampering, a changed preamble, not Noise); `MalformedPayload` for a non-empty message 1
    /// payload or a malformed identity payload; `BadSignature`; `SelfConnection`;
    /// `UnexpectedPeer` (the initiator then never writes message 3).
    pub fn read_message(&mut self, message: &[u8]) -> Result<(), HandshakeError> {
        let result = self.read_inner(message);
        match result {
            Ok(()) => {
                if let Position::At(done) = self.position {
                    self.position = Position::At(done + 1);
                }
            }
            Err(_) => self.position = Position::Failed,
        }
        result
    }

    fn read_inner(&mut self, message: &[u8]) -> Result<(), HandshakeError> {
        let Position::At(done) = self.position else { return Err(HandshakeError::Protocol) };
        if self.step() != HandshakeStep::Read {
            return Err(HandshakeError::Protocol);
        }
        let mut payload = vec![0u8; message.len()];
        let n =
            self.state.read_message(message, &mut payload).map_err(|_| HandshakeError::Protocol)?;
        let payload = &payload[..n];
        if done == 0 {
            // Message 1 (e): no payload in this version.
            return if payload.is_empty() {
                Ok(())
            } else {
                Err(HandshakeError::MalformedPayload("message 1 payload must be empty"))
            };
        }
        let decoded = IdentityPayload::decode(payload)?;
        let remote_static = self.state.get_remote_static().ok_or(HandshakeError::Protocol)?;
        decoded
            .identity
            .verify(SigningDomain::NOISE_HANDSHAKE, remote_static, &decoded.signature)
            .map_err(|_| HandshakeError::BadSignature)?;
        if decoded.identity == self.identity.inner.peer_id {
            return Err(HandshakeError::SelfConnection);
        }
        if let Some(expected) = self.expected
            && expected != decoded.identity
        {
            return Err(HandshakeError::UnexpectedPeer { expected, actual: decoded.identity });
        }
        self.remote = Some((decoded.identity, decoded.boot_nonce));
        Ok(())
    }

    /// Ends a finished handshake: the transport cipher pair and what was established. Fails with
    /// `Protocol` unless [`NoiseHandshake::step`] is [`HandshakeStep::Finished`].
    pub fn finish(self) -> Result<(NoiseTransport, HandshakeInfo), HandshakeError> {
        let (HandshakeStep::Finished, Some((peer, boot_nonce))) = (self.step(), self.remote) else {
            return Err(HandshakeError::Protocol);
        };
        let hash = self.state.get_handshake_hash();
        let session_tag: [u8; 32] = hash.try_into().map_err(|_| HandshakeError::Protocol)?;
        let suite = self.preamble.suite();
        let state = self.state.into_transport_mode().map_err(|_| HandshakeError::Protocol)?;
        Ok((
            NoiseTransport { state },
            HandshakeInfo { peer, boot_nonce, session_tag, security: Security::Noise(suite) },
        ))
    }
}

impl fmt::Debug for NoiseHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseHandshake")
            .field("suite", &self.preamble.suite())
            .field("initiator", &self.state.is_initiator())
            .field("step", &self.step())
            .field("remote", &self.remote())
            .finish_non_exhaustive()
    }
}

/// The length of a handshake message from its `u16` big-endian prefix; 0 is `Protocol`.
pub fn message_len(prefix: [u8; 2]) -> Result<usize, HandshakeError> {
    match u16::from_be_bytes(prefix) {
        0 => Err(HandshakeError::Protocol),
        n => Ok(usize::from(n)),
    }
}

/// The two transport ciphers of a finished handshake (one per direction, with their nonces).
/// [`NoiseStream`](crate::NoiseStream) frames and drives it; use it directly to build another
/// framing.
pub struct NoiseTransport {
    state: snow::TransportState,
}

impl NoiseTransport {
    /// Encrypts one message: `plaintext` (at most [`MAX_PLAINTEXT`](crate::MAX_PLAINTEXT)
    /// bytes) into `out`, which needs room for the plaintext and the 16-byte tag. Returns the
    /// message length.
    pub fn encrypt(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, NoiseError> {
        self.state.write_message(plaintext, out).map_err(|_| NoiseError::Encrypt)
    }

    /// Decrypts one message into `out` and returns the plaintext length. `out` needs room for
    /// the plaintext; give it room for the whole message (plaintext and tag) and it decrypts in
    /// place there without an allocation.
    pub fn decrypt(&mut self, message: &[u8], out: &mut [u8]) -> Result<usize, NoiseError> {
        self.state.read_message(message, out).map_err(|_| NoiseError::Decrypt)
    }
}

impl fmt::Debug for NoiseTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseTransport")
            .field("sending_nonce", &self.state.sending_nonce())
            .field("receiving_nonce", &self.state.receiving_nonce())
            .finish_non_exhaustive()
    }
}

fn params(suite: NoiseSuite) -> snow::params::NoiseParams {
    // Invariant: NoiseSuite::noise_name returns one of two valid Noise protocol names.
    suite.noise_name().parse().expect("sinew's suite names are valid Noise parameters")
}

#[cfg(test)]
mod tests;
