//! Host-key verification: known_hosts files, keys pinned in the credential, fingerprints.
//!
//! Strict by default. known_hosts lines are matched here, not by libssh2 (whose matcher
//! ignores markers and negation and falls back from `[host]:port` to the bare host), by
//! the rules in `docs/ssh-host-keys.md`: OpenSSH 9.2's, except that a bare-host entry never
//! vouches for another port. This module also checks `SHA256:` pins, names the known keys
//! in a changed-key message, and orders the host-key algorithms so that the server offers
//! a key type we know.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use ssh2::{HostKeyType, Session};

use super::known_hosts::{self, Marker};
use super::SshError;

/// How a host key is trusted.
#[derive(Debug, Clone)]
pub enum HostKeyPolicy {
    /// Only keys listed in these known_hosts files or pinned here.
    Strict {
        /// OpenSSH known_hosts files. A missing file is treated as empty.
        known_hosts: Vec<PathBuf>,
        /// known_hosts lines (`[host]:port type base64`) or `SHA256:` fingerprints.
        pinned: Vec<String>,
    },
    /// Any key, with a warning logged on every connection. For lab use only.
    InsecureAcceptAny,
}

/// `SHA256:<unpadded base64>` of a raw public key blob, as OpenSSH prints it.
pub fn fingerprint(blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(blob))
    )
}

/// The name OpenSSH looks `host:port` up under: the bare host on port 22, `[host]:port`
/// elsewhere, in lower case. OpenSSH lower-cases the host before matching or hashing.
fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// A known_hosts entry that applies to this host: the key, its marker, and where it came
/// from, for messages.
struct Entry {
    marker: Marker,
    key_type: String,
    blob: Vec<u8>,
    origin: String,
}

impl Entry {
    /// `SHA256:… (type, origin)`, for messages.
    fn describe(&self) -> String {
        format!(
            "{} ({}, {})",
            fingerprint(&self.blob),
            self.key_type,
            self.origin
        )
    }
}

/// The entries in `text` that apply to `name`, in order; `origin` names the source.
fn entries_for(text: &str, name: &str, origin: &str, out: &mut Vec<Entry>) {
    for (i, raw) in text.lines().enumerate() {
        let Some(line) = known_hosts::parse(raw) else {
            continue;
        };
        if !line.matches(name) {
            continue;
        }
        let hashed = if line.is_hashed() { ", hashed" } else { "" };
        out.push(Entry {
            marker: line.marker,
            key_type: line.key_type.to_string(),
            blob: line.blob,
            origin: format!("{origin} line {}{hashed}", i + 1),
        });
    }
}

/// The host-key algorithms libssh2 can verify, grouped by key type, in OpenSSH's order.
const ALGORITHMS: [(&str, &[&str]); 5] = [
    ("ssh-ed25519", &["ssh-ed25519"]),
    ("ecdsa-sha2-nistp256", &["ecdsa-sha2-nistp256"]),
    ("ecdsa-sha2-nistp384", &["ecdsa-sha2-nistp384"]),
    ("ecdsa-sha2-nistp521", &["ecdsa-sha2-nistp521"]),
    ("ssh-rsa", &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]),
];

/// The host-key algorithms to ask for: those of the key types already known for the host
/// first, then every other type, as OpenSSH orders them. The server takes the first one
/// it has, so it offers a key we know if it holds one; if it holds none, it offers another
/// type, which then fails verification as a changed key instead of failing the key
/// exchange with no word about host keys. Types in `skip` are left out (see
/// [`algorithms_except`]).
fn algorithms_for(known: &[&str], skip: &[HostKeyType]) -> Vec<&'static str> {
    let skipped = |t: &str| {
        skip.iter()
            .any(|k| ALGORITHMS.iter().position(|(n, _)| *n == t) == type_index(*k))
    };
    let mut algs = Vec::new();
    let known_first = ALGORITHMS
        .iter()
        .filter(|(t, _)| known.contains(t))
        .chain(ALGORITHMS.iter().filter(|(t, _)| !known.contains(t)));
    for (t, names) in known_first {
        if !skipped(t) {
            algs.extend_from_slice(names);
        }
    }
    algs
}

/// The position in [`ALGORITHMS`] of a libssh2 key type.
fn type_index(k: HostKeyType) -> Option<usize> {
    match k {
        HostKeyType::Ed25519 => Some(0),
        HostKeyType::Ecdsa256 => Some(1),
        HostKeyType::Ecdsa384 => Some(2),
        HostKeyType::Ecdsa521 => Some(3),
        HostKeyType::Rsa => Some(4),
        _ => None,
    }
}

/// The host-key algorithms to ask for on a retry, leaving out the key types the server
/// already offered, or `None` if none is left. Used when trust that does not name a type
/// (a `SHA256:` pin) did not match the key the server offered first.
pub fn algorithms_except(prepared: Option<&Prepared>, offered: &[HostKeyType]) -> Option<String> {
    let known = prepared.map(Prepared::known_types).unwrap_or_default();
    let algs = algorithms_for(&known, offered);
    (!algs.is_empty()).then(|| algs.join(","))
}

/// What verification needs, read once per connection attempt before the handshake.
pub struct Prepared {
    /// Entries that apply to this host, markers included.
    entries: Vec<Entry>,
    /// `SHA256:` pins.
    fingerprints: Vec<String>,
}

impl Prepared {
    /// Whether some trusted key's type is unknown before the handshake: a `SHA256:` pin.
    /// The server may then hold the pinned key under another type than the one it offers
    /// first.
    pub fn has_untyped_trust(&self) -> bool {
        !self.fingerprints.is_empty()
    }

    /// Key types of the trusted (unmarked) entries for this host.
    fn known_types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = Vec::new();
        for e in self.entries.iter().filter(|e| e.marker == Marker::None) {
            if !types.contains(&e.key_type.as_str()) {
                types.push(&e.key_type);
            }
        }
        types
    }
}

impl HostKeyPolicy {
    /// Read the known_hosts files and pick host-key algorithms. Call before the handshake.
    pub fn prepare(
        &self,
        sess: &Session,
        host: &str,
        port: u16,
    ) -> Result<Option<Prepared>, SshError> {
        let HostKeyPolicy::Strict {
            known_hosts,
            pinned,
        } = self
        else {
            return Ok(None);
        };
        let name = lookup_name(host, port);
        let mut entries = Vec::new();
        for path in known_hosts {
            match std::fs::read_to_string(path) {
                Ok(t) => entries_for(&t, &name, &path.display().to_string(), &mut entries),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(known_hosts_error(path, e, host, port)),
            }
        }
        let mut fingerprints = Vec::new();
        for (i, p) in pinned.iter().enumerate() {
            if p.starts_with("SHA256:") {
                fingerprints.push(p.trim_end_matches('=').to_string());
            } else {
                entries_for(p, &name, &format!("pinned key {}", i + 1), &mut entries);
            }
        }
        let prepared = Prepared {
            entries,
            fingerprints,
        };
        // Unknown names are the only failure here, and then libssh2's default stands.
        let algs = algorithms_for(&prepared.known_types(), &[]);
        let _ = sess.method_pref(ssh2::MethodType::HostKey, &algs.join(","));
        Ok(Some(prepared))
    }
}

fn known_hosts_error(path: &Path, e: std::io::Error, host: &str, port: u16) -> SshError {
    SshError::KnownHosts {
        host: host.to_string(),
        port,
        reason: format!("cannot read {}: {e}", path.display()),
    }
}

/// Check the key the server presented after the handshake, by OpenSSH's rules: a key
/// revoked for this host is refused whatever else trusts it; a key listed for this host
/// (or pinned by fingerprint) is accepted; a host with other keys listed has changed (or
/// offers only a type we do not know for it); a host with none is unknown.
pub fn verify(
    sess: &Session,
    policy: &HostKeyPolicy,
    prepared: Option<&Prepared>,
    host: &str,
    port: u16,
) -> Result<(), SshError> {
    let (key, _) = sess.host_key().ok_or_else(|| SshError::Handshake {
        host: host.to_string(),
        port,
        reason: "the server presented no host key".into(),
    })?;
    let offered = fingerprint(key);
    let Some(p) = prepared else {
        if matches!(policy, HostKeyPolicy::InsecureAcceptAny) {
            tracing::warn!(host, port, fingerprint = %offered, "host key NOT verified: insecure-accept-any-host-key is set");
        }
        return Ok(());
    };
    let offered_type = known_hosts::blob_type(key)
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_else(|| "unknown type".into());
    if let Some(e) = p
        .entries
        .iter()
        .find(|e| e.marker == Marker::Revoked && e.blob == key)
    {
        return Err(SshError::HostKeyRevoked {
            host: host.to_string(),
            port,
            offered: format!("{offered} ({offered_type})"),
            origin: e.origin.clone(),
        });
    }
    let trusted: Vec<&Entry> = p
        .entries
        .iter()
        .filter(|e| e.marker == Marker::None)
        .collect();
    if p.fingerprints.contains(&offered) || trusted.iter().any(|e| e.blob == key) {
        return Ok(());
    }
    let mut known: Vec<String> = trusted.iter().map(|e| e.describe()).collect();
    known.extend(
        p.fingerprints
            .iter()
            .map(|f| format!("{f} (pinned fingerprint)")),
    );
    if known.is_empty() {
        return Err(SshError::HostKeyUnknown {
            host: host.to_string(),
            port,
            offered,
        });
    }
    // The server takes the first algorithm we ask for that it has, and we ask for the
    // known types first: a key of another type means it has none of those.
    if p.fingerprints.is_empty() && !trusted.iter().any(|e| e.key_type == offered_type) {
        return Err(SshError::HostKeyTypeMismatch {
            host: host.to_string(),
            port,
            offered: format!("{offered_type} key {offered}"),
            known,
        });
    }
    Err(SshError::HostKeyChanged {
        host: host.to_string(),
        port,
        offered: format!("{offered} ({offered_type})"),
        known,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIEXsWh1EUb333DEiJ9NPTBGdZRoYVG4sQEfVdLjLyi7Y";

    #[test]
    fn lookup_names_follow_openssh_put_host_port() {
        assert_eq!(lookup_name("Host.Example", 22), "host.example");
        assert_eq!(lookup_name("10.0.0.1", 2222), "[10.0.0.1]:2222");
    }

    #[test]
    fn entries_match_host_and_port_patterns_and_keep_markers() {
        let text = format!(
            "# c\n[10.0.0.1]:2222 ssh-ed25519 {ED}\n10.0.0.1 ssh-ed25519 {ED}\n\
             @revoked * ssh-ed25519 {ED}\n@cert-authority [10.0.0.1]:2222 ssh-ed25519 {ED}\n\
             [10.0.0.1]:2222,!* ssh-ed25519 {ED}\n"
        );
        let mut e = Vec::new();
        entries_for(&text, "[10.0.0.1]:2222", "f", &mut e);
        let got: Vec<(Marker, &str)> = e.iter().map(|e| (e.marker, e.origin.as_str())).collect();
        assert_eq!(
            got,
            [
                (Marker::None, "f line 2"),
                (Marker::Revoked, "f line 4"),
                (Marker::CertAuthority, "f line 5")
            ]
        );
        let mut e = Vec::new();
        entries_for(&text, "10.0.0.1", "f", &mut e);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].origin, "f line 3");
    }

    #[test]
    fn known_types_come_first_then_every_other_type() {
        assert_eq!(
            algorithms_for(&["ssh-rsa", "ssh-ed25519"], &[]),
            [
                "ssh-ed25519",
                "rsa-sha2-512",
                "rsa-sha2-256",
                "ssh-rsa",
                "ecdsa-sha2-nistp256",
                "ecdsa-sha2-nistp384",
                "ecdsa-sha2-nistp521"
            ]
        );
        assert_eq!(algorithms_for(&[], &[])[0], "ssh-ed25519");
    }

    #[test]
    fn fallback_algorithms_skip_the_types_already_offered() {
        assert_eq!(
            algorithms_except(None, &[HostKeyType::Ed25519, HostKeyType::Rsa]).unwrap(),
            "ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521"
        );
        let all = [
            HostKeyType::Ed25519,
            HostKeyType::Ecdsa256,
            HostKeyType::Ecdsa384,
            HostKeyType::Ecdsa521,
            HostKeyType::Rsa,
        ];
        assert_eq!(algorithms_except(None, &all), None);
    }

    #[test]
    fn fingerprint_matches_openssh_format() {
        // sha256("") in unpadded base64.
        assert_eq!(
            fingerprint(b""),
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }
}
