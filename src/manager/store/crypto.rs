//! Encryption at rest: the master key and AES-256-GCM sealing of secret columns.
//!
//! Every sealed value is `version (1 byte) ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`,
//! encrypted under the master key with the row's identity — table, id and column — as
//! associated data. A ciphertext copied into another row, or another column, therefore
//! fails to decrypt instead of yielding the other row's secret. Nonces are random (96
//! bits); at the volumes a control plane writes, collisions are out of reach.
//!
//! The master key is 32 random bytes, kept as 64 hex digits in a file created with mode
//! 0600 on first start (`DATA_DIR/master.key`), or read from `CSM_MASTER_KEY_FILE`.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

/// The format byte of a sealed value.
const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The environment variable that names a master key file kept elsewhere.
pub const MASTER_KEY_ENV: &str = "CSM_MASTER_KEY_FILE";

/// The master key's file name inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// Why the master key or a sealed value is unusable. Messages name files, never bytes.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key file could not be read or created.
    #[error("master key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A sealed value does not decrypt under this key and identity.
    #[error("a sealed value in {table}.{column} of row {id} does not decrypt (wrong master key, or a value moved between rows)")]
    Open {
        /// Table.
        table: String,
        /// Row id.
        id: String,
        /// Column.
        column: String,
    },
}

/// Where a sealed value lives: bound into its ciphertext as associated data.
#[derive(Debug, Clone, Copy)]
pub struct Cell<'a> {
    /// The table.
    pub table: &'a str,
    /// The row's id.
    pub id: &'a str,
    /// The column.
    pub column: &'a str,
}

impl Cell<'_> {
    fn aad(&self) -> Vec<u8> {
        // Length-prefixed, so that ("a|b", "c") and ("a", "b|c") differ.
        let mut v = Vec::with_capacity(16 + self.table.len() + self.id.len() + self.column.len());
        v.extend_from_slice(b"csm-cell-v1");
        for part in [self.table, self.id, self.column] {
            v.extend_from_slice(&(part.len() as u32).to_be_bytes());
            v.extend_from_slice(part.as_bytes());
        }
        v
    }

    fn error(&self) -> CryptoError {
        CryptoError::Open {
            table: self.table.into(),
            id: self.id.into(),
            column: self.column.into(),
        }
    }
}

/// The master key. `Debug` never shows it; memory is zeroised on drop (the cipher's key
/// schedule is zeroised by the `aes` crate's `zeroize` support).
pub struct MasterKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

fn hex_decode(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let t = text.trim();
    if t.len() != 64 {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for (i, chunk) in t.as_bytes().chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

impl MasterKey {
    /// A key from 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> MasterKey {
        MasterKey {
            cipher: Aes256Gcm::new(bytes.into()),
        }
    }

    /// A fresh random key (tests).
    pub fn generate() -> MasterKey {
        let mut b = Zeroizing::new([0u8; 32]);
        fill_random(&mut b[..]);
        MasterKey::from_bytes(&b)
    }

    /// The key for `data_dir`: the file `CSM_MASTER_KEY_FILE` names when `env_file` is
    /// given (it must exist), else `data_dir/master.key`, created with mode 0600 when
    /// missing.
    pub fn load_or_create(
        data_dir: &Path,
        env_file: Option<PathBuf>,
    ) -> Result<MasterKey, CryptoError> {
        match env_file {
            Some(p) => Self::read(&p),
            None => {
                let p = data_dir.join(MASTER_KEY_FILE);
                match Self::create(&p) {
                    Ok(k) => Ok(k),
                    Err(None) => Self::read(&p),
                    Err(Some(e)) => Err(e),
                }
            }
        }
    }

    /// Read a key file: 64 hex digits (surrounding whitespace allowed).
    pub fn read(path: &Path) -> Result<MasterKey, CryptoError> {
        let err = |reason: String| CryptoError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let text = Zeroizing::new(std::fs::read(path).map_err(|e| err(e.to_string()))?);
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the master key file is readable by other users; chmod 600 it");
            }
        }
        let text = std::str::from_utf8(&text).map_err(|_| err("not 64 hex digits".into()))?;
        let bytes = hex_decode(text).ok_or_else(|| err("not 64 hex digits".into()))?;
        Ok(MasterKey::from_bytes(&bytes))
    }

    /// Create a new key file with O_EXCL and mode 0600. `Err(None)`: it already exists.
    fn create(path: &Path) -> Result<MasterKey, Option<CryptoError>> {
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(None),
            Err(e) => {
                return Err(Some(CryptoError::KeyFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }))
            }
        };
        let mut b = Zeroizing::new([0u8; 32]);
        fill_random(&mut b[..]);
        let mut hex = Zeroizing::new(String::with_capacity(65));
        for x in b.iter() {
            hex.push(char::from_digit((x >> 4) as u32, 16).unwrap_or('0'));
            hex.push(char::from_digit((x & 15) as u32, 16).unwrap_or('0'));
        }
        hex.push('\n');
        let written = f.write_all(hex.as_bytes()).and_then(|_| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(path);
            return Err(Some(CryptoError::KeyFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            }));
        }
        tracing::info!(path = %path.display(), "created a new master key");
        Ok(MasterKey::from_bytes(&b))
    }

    /// Encrypt `plain` for `cell`.
    pub fn seal(&self, cell: Cell<'_>, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let aad = cell.aad();
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            // AES-GCM encryption fails only for messages over 64 GiB.
            .expect("AES-GCM encryption of a bounded value");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypt a value sealed for `cell`.
    pub fn open(&self, cell: Cell<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != SEALED_V1 {
            return Err(cell.error());
        }
        let aad = cell.aad();
        let nonce = Nonce::from_slice(&sealed[1..1 + NONCE_LEN]);
        self.cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| cell.error())
    }
}

/// Random bytes from the OS. getrandom fails only on a broken platform, where running on
/// would be worse than stopping.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random number generator");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell<'a>(id: &'a str, column: &'a str) -> Cell<'a> {
        Cell {
            table: "objects",
            id,
            column,
        }
    }

    #[test]
    fn round_trip_and_identity_binding() {
        let k = MasterKey::generate();
        let s = k.seal(cell("a", "sealed"), b"hunter2-secret");
        assert!(!s.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            &k.open(cell("a", "sealed"), &s).unwrap()[..],
            b"hunter2-secret"
        );
        // Copied into another row or column: refused.
        assert!(k.open(cell("b", "sealed"), &s).is_err());
        assert!(k.open(cell("a", "other"), &s).is_err());
        // Another key: refused.
        assert!(MasterKey::generate().open(cell("a", "sealed"), &s).is_err());
        // Tampered: refused.
        let mut t = s.clone();
        let n = t.len() - 1;
        t[n] ^= 1;
        assert!(k.open(cell("a", "sealed"), &t).is_err());
        assert!(k.open(cell("a", "sealed"), &s[..10]).is_err());
    }

    #[test]
    fn key_file_is_created_0600_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = MasterKey::load_or_create(dir.path(), None).unwrap();
        let p = dir.path().join(MASTER_KEY_FILE);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let k2 = MasterKey::load_or_create(dir.path(), None).unwrap();
        let s = k1.seal(cell("x", "c"), b"v");
        assert_eq!(&k2.open(cell("x", "c"), &s).unwrap()[..], b"v");
        assert_eq!(format!("{k1:?}"), "MasterKey([REDACTED])");
        // An explicit file that is missing is an error, not a new key.
        assert!(MasterKey::load_or_create(dir.path(), Some(dir.path().join("nope"))).is_err());
        std::fs::write(dir.path().join("bad"), "zz").unwrap();
        assert!(MasterKey::read(&dir.path().join("bad")).is_err());
    }
}
