//! Host-key verification: known_hosts files, keys pinned in the credential, fingerprints.
//!
//! Strict by default. libssh2 decides whether a known_hosts entry matches
//! (`KnownHosts::check_port`, so `[host]:port` entries work); this module adds what libssh2
//! lacks: `SHA256:` fingerprint pins, the fingerprints of the known keys for a
//! changed-key message, and the host-key algorithm order that makes the server offer a key
//! type we actually know.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use ssh2::{CheckResult, HostKeyType, KnownHostFileKind, Session};

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

/// The name OpenSSH uses for `host:port` in known_hosts.
fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// One plain (unhashed) known_hosts entry for our host.
struct Entry {
    key_type: String,
    blob: Vec<u8>,
}

/// Plain entries for `host:port` in known_hosts text. Hashed entries (`|1|…`) are left to
/// libssh2, which can match them; we only lose their fingerprints in messages.
fn entries_for(text: &str, host: &str, port: u16) -> Vec<Entry> {
    let want = host_pattern(host, port);
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(hosts), Some(kt), Some(b64)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if !hosts.split(',').any(|h| h == want) {
            continue;
        }
        if let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(Entry {
                key_type: kt.to_string(),
                blob,
            });
        }
    }
    out
}

/// The host-key algorithms to ask for, best first, given the key types we know.
fn algorithms_for(types: &[String]) -> Vec<&'static str> {
    let mut algs = Vec::new();
    for t in types {
        let add: &[&'static str] = match t.as_str() {
            "ssh-ed25519" => &["ssh-ed25519"],
            "ecdsa-sha2-nistp256" => &["ecdsa-sha2-nistp256"],
            "ecdsa-sha2-nistp384" => &["ecdsa-sha2-nistp384"],
            "ecdsa-sha2-nistp521" => &["ecdsa-sha2-nistp521"],
            "ssh-rsa" => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
            _ => &[],
        };
        for a in add {
            if !algs.contains(a) {
                algs.push(*a);
            }
        }
    }
    algs
}

/// Every host-key algorithm libssh2 can verify, grouped by key type, in OpenSSH's order.
const ALGORITHMS: [(HostKeyType, &[&str]); 5] = [
    (HostKeyType::Ed25519, &["ssh-ed25519"]),
    (HostKeyType::Ecdsa256, &["ecdsa-sha2-nistp256"]),
    (HostKeyType::Ecdsa384, &["ecdsa-sha2-nistp384"]),
    (HostKeyType::Ecdsa521, &["ecdsa-sha2-nistp521"]),
    (
        HostKeyType::Rsa,
        &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
    ),
];

/// The host-key algorithms of every key type not in `offered`, or `None` if none is left.
/// Used to ask a server for its key of another type when the one it offered first did not
/// verify against trust that does not name a type.
pub fn algorithms_except(offered: &[HostKeyType]) -> Option<String> {
    let algs: Vec<&str> = ALGORITHMS
        .iter()
        .filter(|(kind, _)| !offered.iter().any(|o| *o as i32 == *kind as i32))
        .flat_map(|(_, algs)| algs.iter().copied())
        .collect();
    (!algs.is_empty()).then(|| algs.join(","))
}

/// What verification needs, read once per connection attempt before the handshake.
pub struct Prepared {
    known_text: String,
    entries: Vec<Entry>,
    fingerprints: Vec<String>,
    hashed: bool,
}

impl Prepared {
    /// Whether some trusted key's type is unknown before the handshake: a `SHA256:` pin, or
    /// a hashed known_hosts entry (which may or may not be for this host). The server may
    /// then hold the trusted key under another type than the one it offers first.
    pub fn has_untyped_trust(&self) -> bool {
        !self.fingerprints.is_empty() || self.hashed
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
        let mut known_text = String::new();
        for path in known_hosts {
            match std::fs::read_to_string(path) {
                Ok(t) => {
                    known_text.push_str(&t);
                    known_text.push('\n');
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(known_hosts_error(path, e, host, port)),
            }
        }
        let mut fingerprints = Vec::new();
        for p in pinned {
            if p.starts_with("SHA256:") {
                fingerprints.push(p.trim_end_matches('=').to_string());
            } else {
                known_text.push_str(p);
                known_text.push('\n');
            }
        }
        let entries = entries_for(&known_text, host, port);
        let hashed = known_text
            .lines()
            .any(|l| l.trim_start().starts_with("|1|"));
        let types: Vec<String> = entries.iter().map(|e| e.key_type.clone()).collect();
        let algs = algorithms_for(&types);
        if !algs.is_empty() {
            // Unknown names are the only failure here, and then libssh2's default stands.
            let _ = sess.method_pref(ssh2::MethodType::HostKey, &algs.join(","));
        }
        Ok(Some(Prepared {
            known_text,
            entries,
            fingerprints,
            hashed,
        }))
    }
}

fn known_hosts_error(path: &Path, e: std::io::Error, host: &str, port: u16) -> SshError {
    SshError::KnownHosts {
        host: host.to_string(),
        port,
        reason: format!("cannot read {}: {e}", path.display()),
    }
}

/// Check the key the server presented after the handshake.
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
    if p.fingerprints.contains(&offered) {
        return Ok(());
    }
    let mut kh = sess.known_hosts().map_err(|e| SshError::KnownHosts {
        host: host.to_string(),
        port,
        reason: e.to_string(),
    })?;
    // Line by line: one malformed line must not hide the others.
    for line in p.known_text.lines() {
        let t = line.trim();
        if !t.is_empty() && !t.starts_with('#') {
            let _ = kh.read_str(t, KnownHostFileKind::OpenSSH);
        }
    }
    let mut known: Vec<String> = p.entries.iter().map(|e| fingerprint(&e.blob)).collect();
    known.extend(p.fingerprints.iter().cloned());
    known.dedup();
    // libssh2 falls back from `[host]:port` to a bare `host` entry; OpenSSH does not, and a
    // key trusted for port 22 says nothing about the server on another port. Hashed entries
    // can't be attributed without their HMAC, so with any present libssh2's answer stands.
    let bare_host_only = port != 22 && !p.hashed && !p.entries.iter().any(|e| e.blob == key);
    match kh.check_port(host, port, key) {
        CheckResult::Match | CheckResult::Mismatch if bare_host_only && known.is_empty() => {
            Err(SshError::HostKeyUnknown {
                host: host.to_string(),
                port,
                offered,
            })
        }
        CheckResult::Match if bare_host_only => Err(SshError::HostKeyChanged {
            host: host.to_string(),
            port,
            offered,
            known,
        }),
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => {
            if known.is_empty() {
                // libssh2 matched an entry we could not read: hashed, or under the host's
                // plain name while we looked for `[host]:port`.
                known.push(
                    "listed for this host in known_hosts (hashed, or without a port)".to_string(),
                );
            }
            Err(SshError::HostKeyChanged {
                host: host.to_string(),
                port,
                offered,
                known,
            })
        }
        CheckResult::NotFound | CheckResult::Failure if !known.is_empty() => {
            Err(SshError::HostKeyChanged {
                host: host.to_string(),
                port,
                offered,
                known,
            })
        }
        CheckResult::NotFound | CheckResult::Failure => Err(SshError::HostKeyUnknown {
            host: host.to_string(),
            port,
            offered,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_host_and_port_patterns() {
        let text = "# c\n[10.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==\n10.0.0.1 ssh-rsa AAAAB3NzaC1yc2E=\n|1|abc|def ssh-rsa AAAA\n";
        let e = entries_for(text, "10.0.0.1", 2222);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key_type, "ssh-ed25519");
        let e = entries_for(text, "10.0.0.1", 22);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key_type, "ssh-rsa");
        assert!(entries_for(text, "10.0.0.2", 22).is_empty());
    }

    #[test]
    fn rsa_prefers_sha2_signatures() {
        assert_eq!(
            algorithms_for(&["ssh-rsa".into(), "ssh-ed25519".into()]),
            ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa", "ssh-ed25519"]
        );
    }

    #[test]
    fn fallback_algorithms_skip_the_types_already_offered() {
        assert_eq!(
            algorithms_except(&[HostKeyType::Ed25519, HostKeyType::Rsa]).unwrap(),
            "ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521"
        );
        let all = [
            HostKeyType::Ed25519,
            HostKeyType::Ecdsa256,
            HostKeyType::Ecdsa384,
            HostKeyType::Ecdsa521,
            HostKeyType::Rsa,
        ];
        assert_eq!(algorithms_except(&all), None);
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
