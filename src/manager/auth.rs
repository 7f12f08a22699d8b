//! API keys and roles for the GraphQL endpoint.
//!
//! Keys arrive in the `x-api-key` header. They are kept only as SHA-256 digests and
//! compared in constant time against every key (no early exit), like the agent tokens.
//! Each key has a role:
//!
//! - `admin` may do everything;
//! - `resolve` may call `resolveSecret` and read queries, nothing else.
//!
//! A key file holds one key a line: a bare key is `admin`, `resolve KEY` gives `resolve`,
//! `admin KEY` says it explicitly; blank lines and `#` comments are skipped.
//!
//! A key's **id**, used in the audit trail and logs, is `key-` and the first 12 hex digits
//! of its SHA-256 digest: enough to tell keys apart, useless for recovering a
//! high-entropy key, and never the key.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// `resolveSecret` and read queries.
    Resolve,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Resolve => "resolve",
        }
    }
}

/// Who is calling: the key's id and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's id (never the key).
    pub key_id: String,
    /// Its role.
    pub role: Role,
}

struct Entry {
    digest: [u8; 32],
    role: Role,
    key_id: String,
}

/// The accepted API keys.
pub struct ApiKeys {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.entries.len())
    }
}

/// Why a key file is unusable. Never quotes a line (it may hold a key).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("API key file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A line is not `KEY`, `admin KEY` or `resolve KEY`.
    #[error("API key file {path}, line {line}: expected KEY, `admin KEY` or `resolve KEY`")]
    Line {
        /// The file.
        path: String,
        /// The line number.
        line: usize,
    },
    /// A key is shorter than 16 characters.
    #[error("API key file {path}, line {line}: a key must be at least 16 characters")]
    Short {
        /// The file.
        path: String,
        /// The line number.
        line: usize,
    },
}

/// The shortest key accepted.
pub const MIN_KEY_LEN: usize = 16;

/// A key's id: `key-` and 12 hex digits of its SHA-256 digest.
pub fn key_id(key: &[u8]) -> String {
    let d = Sha256::digest(key);
    let hex: String = d[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("key-{hex}")
}

impl ApiKeys {
    /// No keys: every request is refused.
    pub fn empty() -> ApiKeys {
        ApiKeys {
            entries: Vec::new(),
        }
    }

    /// Add a key with a role.
    pub fn add(&mut self, key: &[u8], role: Role) {
        self.entries.push(Entry {
            digest: Sha256::digest(key).into(),
            role,
            key_id: key_id(key),
        });
    }

    /// Keys from a key file's text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &str) -> Result<ApiKeys, KeyError> {
        let mut keys = ApiKeys::empty();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (role, key) = match (words.next(), words.next(), words.next()) {
                (Some(k), None, None) => (Role::Admin, k),
                (Some("admin"), Some(k), None) => (Role::Admin, k),
                (Some("resolve"), Some(k), None) => (Role::Resolve, k),
                _ => {
                    return Err(KeyError::Line {
                        path: path.into(),
                        line: i + 1,
                    })
                }
            };
            if key.len() < MIN_KEY_LEN {
                return Err(KeyError::Short {
                    path: path.into(),
                    line: i + 1,
                });
            }
            keys.add(key.as_bytes(), role);
        }
        Ok(keys)
    }

    /// Keys from a key file.
    pub fn from_file(path: &Path) -> Result<ApiKeys, KeyError> {
        let shown = path.display().to_string();
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| KeyError::File {
            path: shown.clone(),
            reason: e.to_string(),
        })?);
        let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::File {
            path: shown.clone(),
            reason: "not UTF-8".into(),
        })?;
        ApiKeys::parse(text, &shown)
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller `presented` identifies, if any. Every key is compared, in constant time.
    pub fn verify(&self, presented: &[u8]) -> Option<Caller> {
        let d: [u8; 32] = Sha256::digest(presented).into();
        let mut found: Option<&Entry> = None;
        for e in &self.entries {
            let hit = bool::from(e.digest.ct_eq(&d));
            if hit && found.is_none() {
                found = Some(e);
            }
        }
        found.map(|e| Caller {
            key_id: e.key_id.clone(),
            role: e.role,
        })
    }
}

/// A new random key: 32 bytes as 43 characters of URL-safe base64.
pub fn generate_key() -> Zeroizing<String> {
    use base64::Engine as _;
    let mut b = Zeroizing::new([0u8; 32]);
    super::store::crypto::fill_random(&mut b[..]);
    Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&b[..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_from_lines() {
        let k = ApiKeys::parse(
            "# keys\nadmin-key-0123456789\nresolve reader-key-0123456789\nadmin second-admin-0123456789\n",
            "f",
        )
        .unwrap();
        assert_eq!(k.len(), 3);
        assert_eq!(k.verify(b"admin-key-0123456789").unwrap().role, Role::Admin);
        assert_eq!(
            k.verify(b"reader-key-0123456789").unwrap().role,
            Role::Resolve
        );
        assert_eq!(
            k.verify(b"second-admin-0123456789").unwrap().role,
            Role::Admin
        );
        assert!(k.verify(b"reader-key-012345678").is_none());
        assert!(k.verify(b"resolve reader-key-0123456789").is_none());
        assert!(k.verify(b"").is_none());
        let id = k.verify(b"admin-key-0123456789").unwrap().key_id;
        assert!(id.starts_with("key-") && id.len() == 16 && !id.contains("admin"));
    }

    #[test]
    fn bad_lines_never_quote_the_line() {
        let e = ApiKeys::parse("superuser top-secret-key-0123456789\n", "f").unwrap_err();
        assert!(!e.to_string().contains("top-secret"), "{e}");
        let e = ApiKeys::parse("shortkey\n", "f").unwrap_err();
        assert!(!e.to_string().contains("shortkey"), "{e}");
    }
}
