//! sinew's security handshakes, Noise XX and TLS 1.3, each bound to Ed25519 peer identities,
//! and the encrypted streams used after them.
//!
//! TLS lives in [`tls`] (certificate, verifiers, tokio-rustls drivers). [`upgrade_inbound_any`]
//! and [`upgrade_outbound_any`] serve both securities: a listener tells them apart by the first
//! bytes, a dialler picks one ([`DialSecurity`]).
//!
//! # Cargo features
//!
//! | feature | adds | default |
//! |---|---|---|
//! | `noise` | Noise XX (snow): [`NoiseIdentity`], [`NoiseHandshake`], [`NoiseStream`], [`upgrade_outbound`], [`upgrade_inbound`] | yes |
//! | `tls` | TLS 1.3 (rustls, tokio-rustls, rcgen, x509-parser): the [`tls`] module | yes |
//!
//! The preamble and its detection ([`detect`]), the refusal record and [`NoiseConfig`] are
//! always there; [`Identities`], [`SecuredStream`] and the `_any` upgraders are there with
//! either security. A listener refuses the security it was built without: a preamble with
//! `NoiseNotAccepted`, a ClientHello with `TlsNotAccepted`
//! ([`HandshakeError`](sinew_transport::HandshakeError)).
//!
//! The rest of this page is about Noise.
//!
//! A dialer sends an 8-byte preamble (which also tells a listener apart from a TLS ClientHello),
//! then both sides run `Noise_XX` with a per-process X25519 static key. Messages 2 and 3 carry
//! the sender's Ed25519 identity key and its signature over that static key, so the handshake
//! ends with a [`PeerId`](sinew_types::PeerId) the remote proved, its boot nonce, and a session
//! tag both sides share. After it, [`NoiseStream`] moves bytes as Noise transport messages.
//!
//! # Layers and I/O contract
//!
//! - **Sans-IO core.** [`Preamble`], [`detect_prefix`] and [`NoiseHandshake`] do no I/O, read no
//!   clock and spawn nothing: the caller moves bytes. [`NoiseHandshake::write_message`] appends a
//!   framed message to a caller's buffer; [`NoiseHandshake::read_message`] takes one message
//!   body (after the caller read its length with [`message_len`]); [`NoiseHandshake::finish`]
//!   yields the [`NoiseTransport`] cipher pair and the [`HandshakeInfo`]. The one hidden input
//!   is randomness: snow draws the ephemeral keys (and [`NoiseIdentity::new`] the static key)
//!   from the operating system.
//! - **Thin async wrappers** over tokio's `AsyncRead + AsyncWrite`: [`upgrade_outbound`],
//!   [`upgrade_inbound`] (which runs [`detect`] first; [`upgrade_inbound_noise`] continues after a
//!   caller's own detection). Each bounds the whole handshake by a timeout
//!   ([`HandshakeError::Timeout`](sinew_transport::HandshakeError::Timeout)) and drops (closes)
//!   the socket on any error. Errors are typed [`HandshakeError`](sinew_transport::HandshakeError)s.
//! - **[`NoiseStream`]**: tokio `AsyncRead + AsyncWrite`. Writes are coalesced into full Noise
//!   messages and handed to the socket in batches of up to [`WRITE_BATCH`] bytes, on
//!   `poll_flush`, or when the batch is full; reads pull up to [`READ_CHUNK`] bytes at a time and
//!   decrypt straight into the caller's buffer when it has room. Buffers are released when the
//!   stream goes idle (a flush that empties the output, a read that finds nothing to do), so an
//!   idle stream holds only its two cipher keys on the heap. A message that fails to
//!   authenticate, or a zero length, is an `io::Error` of kind `InvalidData` (close the
//!   connection); the end of the stream in the middle of a message is `UnexpectedEof`. The inner
//!   error is a [`NoiseError`].
//!
//! # Wire format
//!
//! **1. Preamble** (8 bytes, dialer to listener, before Noise message 1):
//!
//! | offset | size | value |
//! |---:|---:|---|
//! | 0 | 5 | magic `53 49 4E 45 57` (`"SINEW"`) |
//! | 5 | 1 | version, `01` |
//! | 6 | 1 | Noise suite id: `01` = `Noise_XX_25519_ChaChaPoly_BLAKE2s`, `02` = `Noise_XX_25519_AESGCM_SHA256` |
//! | 7 | 1 | flags: reserved; the sender writes `00`, the receiver ignores the value |
//!
//! The 8 bytes, exactly as sent and as received, are the Noise prologue on both sides, so a
//! preamble changed in transit (even the ignored flags byte) makes the handshake fail.
//!
//! A listener looks at the first byte: `16` (a TLS handshake record) means TLS 1.3
//! ([`Detected::Tls`]; refused for now with `TlsNotAccepted`, the bytes read are kept in a
//! [`Rewind`] so a TLS acceptor can be plugged in later); `53` means a preamble, whose other
//! bytes are then read: a wrong magic is `NotSinew`, a version other than 1 is
//! `UnknownVersion(v)`, an unknown suite id is `UnknownSuite(id)`. Any other first byte is
//! `NotSinew`.
//!
//! **2. Framing.** Every Noise message, handshake and transport alike, is sent as
//! `u16 length (BIG-endian) || message`. Noise's own framing keeps Noise's byte order; sinew's
//! frames inside the stream are little-endian. Length 0 is invalid; the maximum is 65,535, so a
//! transport message carries at most [`MAX_PLAINTEXT`] = 65,519 bytes of plaintext plus a 16-byte
//! tag.
//!
//! **3. Handshake** (`XX`):
//!
//! | message | direction | Noise tokens | payload | size with length |
//! |---|---|---|---|---:|
//! | 1 | dialer to listener | `e` | empty (a non-empty payload is refused) | 2 + 32 |
//! | 2 | listener to dialer | `e, ee, s, es` | identity payload | 2 + 32 + 48 + 107 + 16 |
//! | 3 | dialer to listener | `s, se` | identity payload | 2 + 48 + 107 + 16 |
//!
//! The preamble and message 1 go out in one write.
//!
//! **4. Identity payload** (inside the encrypted payload of messages 2 and 3):
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 1 | payload version, `01` (any other value: `MalformedPayload`) |
//! | 1 | 32 | Ed25519 identity public key (the sender's `PeerId`; weak or invalid keys are refused) |
//! | 33 | 64 | Ed25519 signature, see below |
//! | 97 | 8 | boot nonce, `u64` little-endian |
//! | 105 | 2 | extension length `n`, `u16` little-endian |
//! | 107 | n | extension bytes (ignored; for future use) |
//!
//! Nothing may follow the extension (`MalformedPayload`). The signature is
//! `Keypair::sign(SigningDomain::NOISE_HANDSHAKE, s)` where `s` is the sender's 32-byte X25519
//! static public key, that is Ed25519 over `"sinew-sig:noise-handshake/v1" || 00 || s`. The
//! receiver verifies it strictly against the static key the Noise state machine reports for the
//! remote (`BadSignature` if it fails).
//!
//! **5. Checks.** The dialer checks the listener's identity after reading message 2 and before
//! writing message 3: its own identity is `SelfConnection`; another than the expected one is
//! `UnexpectedPeer`, and message 3 is never sent (the socket is closed). The listener checks the
//! dialer's payload the same way (without an expected id) after message 3.
//!
//! **6. Result.** [`HandshakeInfo`]: the remote's peer id and boot nonce, the suite, and the
//! session tag, the 32-byte Noise handshake hash, identical on both sides.
//!
#![cfg_attr(
    feature = "noise",
    doc = r#"
# Example

```
use std::time::Duration;
use sinew_secure::{upgrade_inbound, upgrade_outbound, NoiseIdentity};
use sinew_transport::NoiseSuite;
use sinew_types::Keypair;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

# #[tokio::main(flavor = "current_thread")]
# async fn main() -> Result<(), Box<dyn std::error::Error>> {
let (dialer_key, listener_key) = (Keypair::generate(), Keypair::generate());
let dialer = NoiseIdentity::new(&dialer_key, 1);
let listener = NoiseIdentity::new(&listener_key, 2);
let (a, b) = tokio::io::duplex(64 * 1024);
let timeout = Duration::from_secs(10);

let expected = Some(listener_key.peer_id());
let (outbound, inbound) = tokio::join!(
    upgrade_outbound(a, &dialer, NoiseSuite::AesGcm, expected, timeout),
    upgrade_inbound(b, &listener, timeout),
);
let (mut a, a_info) = outbound?;
let (mut b, b_info) = inbound?;
assert_eq!(a_info.peer, listener_key.peer_id());
assert_eq!(b_info.peer, dialer_key.peer_id());
assert_eq!((a_info.boot_nonce, b_info.boot_nonce), (2, 1));
assert_eq!(a_info.session_tag, b_info.session_tag);

a.write_all(b"hello").await?;
a.flush().await?; // writes are buffered until a flush or a full batch
let mut buf = [0u8; 5];
b.read_exact(&mut buf).await?;
assert_eq!(&buf, b"hello");
# Ok(())
# }
```
"#
)]
#![forbid(unsafe_code)]

use std::time::Duration;

use sinew_transport::NoiseSuite;

#[cfg(feature = "noise")]
mod handshake;
#[cfg(feature = "noise")]
mod payload;
mod preamble;
mod refusal;
#[cfg(any(feature = "noise", feature = "tls"))]
mod secured;
#[cfg(feature = "noise")]
mod stream;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "noise")]
mod upgrade;

#[cfg(feature = "noise")]
pub use handshake::{HandshakeStep, NoiseHandshake, NoiseIdentity, NoiseTransport, message_len};
pub use preamble::{
    Detected, MAGIC, PREAMBLE_LEN, PREAMBLE_VERSION, Preamble, Rewind, TLS_HANDSHAKE_RECORD,
    detect, detect_prefix,
};
pub use refusal::{REFUSAL_LEN, decode_refusal, encode_refusal, refuse_inbound};
#[cfg(any(feature = "noise", feature = "tls"))]
pub use secured::{
    DIALLER_MESSAGE_TIMEOUT, DialSecurity, HandshakeInfo, Identities, SecuredStream,
    upgrade_inbound_any, upgrade_outbound_any,
};
#[cfg(feature = "noise")]
pub use stream::{NoiseError, NoiseStream, READ_CHUNK, WRITE_BATCH};
#[cfg(feature = "tls")]
pub use tls::{
    ALPN, CertifiedIdentity, SESSION_TAG_LABEL, TlsIdentity, TlsSetupError, TlsStream, Verdict,
    certified_identity, tls_error, upgrade_inbound_tls, upgrade_outbound_tls,
};
#[cfg(feature = "noise")]
pub use upgrade::{upgrade_inbound, upgrade_inbound_noise, upgrade_outbound};

/// The largest Noise message: 65,535 bytes.
pub const MAX_MESSAGE: usize = 65_535;
/// The AEAD tag at the end of every encrypted Noise message.
pub const TAG_LEN: usize = 16;
/// The most plaintext one transport message carries: 65,519 bytes.
pub const MAX_PLAINTEXT: usize = MAX_MESSAGE - TAG_LEN;
/// The length prefix before every Noise message (`u16`, big-endian).
pub const LENGTH_PREFIX: usize = 2;

/// How a node runs Noise handshakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoiseConfig {
    /// The suite this node asks for when it dials (a listener accepts every suite).
    pub suite: NoiseSuite,
    /// The bound on a whole handshake, preamble detection included.
    pub handshake_timeout: Duration,
}

impl NoiseConfig {
    /// The default handshake timeout: 10 seconds.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    /// The suite that is fastest here: AES-GCM when the CPU has AES instructions (x86-64 AES-NI,
    /// aarch64 AES), ChaChaPoly otherwise.
    pub fn preferred_suite() -> NoiseSuite {
        if cpu_has_aes() { NoiseSuite::AesGcm } else { NoiseSuite::ChaChaPoly }
    }
}

impl Default for NoiseConfig {
    fn default() -> Self {
        Self { suite: Self::preferred_suite(), handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT }
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_aes() -> bool {
    std::arch::is_x86_feature_detected!("aes")
}

#[cfg(target_arch = "aarch64")]
fn cpu_has_aes() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_has_aes() -> bool {
    false
}

/// Harnesses for the fuzz targets in `fuzz/` (not part of the API).
#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config() {
        let config = NoiseConfig::default();
        assert_eq!(config.handshake_timeout, Duration::from_secs(10));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(config.suite == NoiseSuite::AesGcm, std::arch::is_x86_feature_detected!("aes"));
        assert_eq!(MAX_PLAINTEXT, 65_519);
    }
}
