//! The vocabulary every sinew layer shares.
//!
//! - [`Keypair`]: a node's Ed25519 identity; generated, saved and loaded (owner-only file mode).
//! - [`PeerId`]: the 32-byte Ed25519 public key, with a versioned text form (`sn1...`) that
//!   round-trips and refuses weak or invalid keys.
//! - [`SigningDomain`]: every signature in sinew is over a domain-separated message, so a
//!   signature made for one purpose can never be replayed for another.
//! - [`Addr`]: `tcp://host:port`, with an IPv4, IPv6 or DNS host and an optional expected peer id
//!   (`tcp://<peer id>@host:port`).
//! - [`SignedPeerRecord`]: a peer's addresses, signed by its key, ordered by a sequence number
//!   (unix time in milliseconds).
//!
//! This crate does no network I/O and reads no clock: times are inputs. The one exception is
//! [`Keypair::generate`], which asks the operating system for randomness (use
//! [`Keypair::generate_with`] to pass your own RNG), and [`Keypair::save`]/[`Keypair::load`],
//! which touch the file system by design.
//!
//! ```
//! use sinew_types::{Addr, Keypair, PeerId, SigningDomain};
//!
//! let key = Keypair::generate();
//! let id: PeerId = key.peer_id();
//! let text = id.to_string();
//! assert_eq!(text.parse::<PeerId>()?, id);
//!
//! let sig = key.sign(SigningDomain::PEER_RECORD, b"hello");
//! id.verify(SigningDomain::PEER_RECORD, b"hello", &sig)?;
//! assert!(id.verify(SigningDomain::NOISE_HANDSHAKE, b"hello", &sig).is_err());
//!
//! let addr: Addr = format!("tcp://{id}@127.0.0.1:4001").parse()?;
//! assert_eq!(addr.peer(), Some(id));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod addr;
mod base32;
mod keypair;
mod peer_id;
mod record;

pub use addr::{Addr, AddrError, Direction, Host, Scheme};
pub use keypair::{KeyFileError, Keypair};
pub use peer_id::{PeerId, PeerIdError, Signature, SignatureError, SigningDomain};
pub use record::{
    MAX_RECORD_ADDR_LEN, MAX_RECORD_ADDRS, PeerRecord, RecordError, SignedPeerRecord,
};
