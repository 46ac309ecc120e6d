//! A node's Ed25519 identity key.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::Path;

use ed25519_dalek::{Signer as _, SigningKey};
use rand::CryptoRng;

use crate::{PeerId, Signature, SigningDomain};

/// First line of a key file; the second line is the 32-byte secret in lowercase hex.
const KEY_FILE_HEADER: &str = "sinew-ed25519-secret-key-v1";

/// A node's Ed25519 identity keypair. The public half is the [`PeerId`].
///
/// `Debug` never prints the secret.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
    peer_id: PeerId,
}

/// Why a key file could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("key file I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a sinew key file.
    #[error("not a sinew key file (expected first line `{KEY_FILE_HEADER}`)")]
    Format,
    /// Group or others may read the file; refusing to use a secret that others can read.
    #[error("key file permissions {0:o} allow access by others; expected 0600")]
    Permissions(u32),
}

impl Keypair {
    /// Generates a new keypair from the operating system's randomness.
    #[allow(clippy::disallowed_methods)] // key generation is the one place types reads OS randomness
    pub fn generate() -> Self {
        Self::generate_with(&mut rand::rng())
    }

    /// Generates a new keypair from `rng` (deterministic with a seeded RNG, for tests).
    pub fn generate_with<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_signing(SigningKey::generate(rng))
    }

    /// Builds a keypair from its 32-byte secret.
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Self::from_signing(SigningKey::from_bytes(&secret))
    }

    fn from_signing(signing: SigningKey) -> Self {
        // Invariant: a key derived from a secret scalar is a valid point of prime order, so the
        // validation in `PeerId::from_bytes` cannot fail; fall back defensively anyway.
        let bytes = signing.verifying_key().to_bytes();
        let peer_id = PeerId::from_bytes(bytes).expect("derived Ed25519 public keys are valid");
        Self { signing, peer_id }
    }

    /// The 32-byte secret. Keep it secret.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// This key's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Signs `message` in `domain` (see [`SigningDomain`]).
    pub fn sign(&self, domain: SigningDomain, message: &[u8]) -> Signature {
        Signature(self.signing.sign(&domain.message(message)).to_bytes())
    }

    /// The underlying ed25519-dalek key, for TLS certificate generation and the like.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Saves the secret to `path` with mode 0600, atomically (written beside it, then renamed).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), KeyFileError> {
        let path = path.as_ref();
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let file_name = path.file_name().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "key path has no file name")
        })?;
        let tmp = dir.join(format!(".{}.tmp", file_name.to_string_lossy()));
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        let hex: String = self.secret_bytes().iter().map(|b| format!("{b:02x}")).collect();
        file.write_all(format!("{KEY_FILE_HEADER}\n{hex}\n").as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Loads a key saved by [`Keypair::save`]. Refuses files that group or others can access.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyFileError> {
        let path = path.as_ref();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::Permissions(mode));
            }
        }
        let text = fs::read_to_string(path)?;
        let mut lines = text.lines();
        if lines.next() != Some(KEY_FILE_HEADER) {
            return Err(KeyFileError::Format);
        }
        let hex = lines.next().ok_or(KeyFileError::Format)?.trim();
        if hex.len() != 64 || lines.any(|l| !l.trim().is_empty()) {
            return Err(KeyFileError::Format);
        }
        let mut secret = [0u8; 32];
        for (i, byte) in secret.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| KeyFileError::Format)?;
        }
        Ok(Self::from_secret_bytes(secret))
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair").field("peer_id", &self.peer_id).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    #[test]
    fn save_and_load_round_trip_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = Keypair::generate();
        key.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let loaded = Keypair::load(&path).unwrap();
        assert_eq!(loaded.peer_id(), key.peer_id());
        assert_eq!(loaded.secret_bytes(), key.secret_bytes());
    }

    #[cfg(unix)]
    #[test]
    fn load_refuses_readable_by_others() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        Keypair::generate().save(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(Keypair::load(&path), Err(KeyFileError::Permissions(0o644))));
    }

    #[test]
    fn load_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        Keypair::generate().save(&path).unwrap();
        for bad in ["hello\n", "sinew-ed25519-secret-key-v1\nzz\n", "sinew-ed25519-secret-key-v1\n"]
        {
            fs::write(&path, bad).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            }
            assert!(matches!(Keypair::load(&path), Err(KeyFileError::Format)), "{bad:?}");
        }
    }

    #[test]
    fn seeded_generation_is_deterministic() {
        let a = Keypair::generate_with(&mut rand_chacha::ChaCha20Rng::seed_from_u64(7));
        let b = Keypair::generate_with(&mut rand_chacha::ChaCha20Rng::seed_from_u64(7));
        assert_eq!(a.peer_id(), b.peer_id());
        assert!(!format!("{a:?}").contains(&format!("{:?}", a.secret_bytes())));
    }
}
