//! Secret-bearing value types.
//!
//! Variable values, rendered scripts and returned secrets are bytes (a value read with
//! `--var-file` need not be UTF-8), held in [`SecretBytes`] so that `Debug` prints
//! `[REDACTED]` and memory is zeroised on drop. Reading one is an explicit
//! `expose_secret()` call; `docs/architecture.md` lists the few places that make it.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretSlice};

/// A secret byte string, zeroised on drop and redacted in `Debug`.
pub type SecretBytes = SecretSlice<u8>;

/// Wrap owned bytes as a secret.
pub fn secret_bytes(v: Vec<u8>) -> SecretBytes {
    SecretSlice::from(v)
}

/// Template variable values by name. Names are public; values are secret.
#[derive(Debug, Default)]
pub struct Variables {
    values: BTreeMap<String, SecretBytes>,
}

impl Variables {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `name` to `value`, replacing any earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: SecretBytes) {
        self.values.insert(name.into(), value);
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&SecretBytes> {
        self.values.get(name)
    }

    /// Whether `name` has a value.
    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Variable names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// `(name, value)` pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretBytes)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of variables.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Merge `other` into `self`; `other` wins on conflicts (flags override input files).
    pub fn extend(&mut self, other: Variables) {
        self.values.extend(other.values);
    }
}

impl Clone for Variables {
    fn clone(&self) -> Self {
        Self {
            values: self
                .values
                .iter()
                .map(|(k, v)| (k.clone(), secret_bytes(v.expose_secret().to_vec())))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values() {
        let mut v = Variables::new();
        v.insert("token", secret_bytes(b"hunter2-very-secret".to_vec()));
        let dbg = format!("{v:?}");
        assert!(dbg.contains("token"));
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }
}
