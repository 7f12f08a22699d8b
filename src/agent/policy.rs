//! The agent's local policy: the safety net against a compromised control plane.
//!
//! A task outside the policy is rejected as `policy` and never runs. What can be limited:
//!
//! | key | default | why the default |
//! |---|---|---|
//! | `local` | on | running scripts on the agent's host is what a CSM agent is for (Harness's `executeOnDelegate: true`) |
//! | `command_path_prefixes` | any | commandPath is only a working directory; listing prefixes narrows it further |
//! | `ssh_hosts` | none: SSH refused | SSH turns the agent into a pivot into its network; the operator names the hosts it may reach |
//! | `ssh_key_file_prefixes` | none: key files refused | a key-file credential names a file on the agent's host, which the control plane must not choose freely |
//! | `max_timeout_secs` | 900 | bounds how long a task may hold a slot; well above Harness's 3 × 60 s |
//! | `pinned_templates` | any script | pinning needs the operator's list of approved scripts |
//!
//! Pinned templates are SHA-256 digests (hex) of the template's `scriptString`, byte for
//! byte: `jq -j .scriptString template.json | sha256sum`.

use std::net::IpAddr;
use std::path::{Component, Path};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::protocol::{SshCredentials, Target, Task};

/// Default `max_timeout_secs`.
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(900);

/// What the agent agrees to run.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Whether scripts may run on this host.
    pub local: bool,
    /// Allowed commandPath prefixes (whole path components); empty: any absolute path.
    pub command_path_prefixes: Vec<String>,
    /// SSH hosts the agent may reach; empty: none.
    pub ssh_hosts: Vec<HostPattern>,
    /// Where SSH key files may be read from; empty: key-file credentials are refused.
    pub ssh_key_file_prefixes: Vec<String>,
    /// The longest task deadline and per-attempt timeout accepted.
    pub max_timeout: Duration,
    /// SHA-256 digests of approved scripts; empty: any script.
    pub pinned_templates: Vec<[u8; 32]>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            local: true,
            command_path_prefixes: Vec::new(),
            ssh_hosts: Vec::new(),
            ssh_key_file_prefixes: Vec::new(),
            max_timeout: DEFAULT_MAX_TIMEOUT,
            pinned_templates: Vec::new(),
        }
    }
}

/// An allowed SSH destination: a host glob (`*`, `?`) or a CIDR, with an optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Glob(String),
    Cidr(IpAddr, u8),
}

/// Why a policy entry could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(pub String);

impl std::str::FromStr for HostPattern {
    type Err = PatternError;

    /// `host`, `host:port`, `*.corp.example:22`, `10.0.0.0/8`, `10.0.0.0/8:22`,
    /// `fd00::/8`, `[fd00::/8]:22`, `[::1]:2222`.
    fn from_str(s: &str) -> Result<Self, PatternError> {
        let s = s.trim();
        let err = |why: &str| PatternError(format!("{s:?}: {why}"));
        if s.is_empty() {
            return Err(err("empty"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| err("missing ]"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .and_then(|p| p.parse::<u16>().ok())
                        .ok_or_else(|| err("bad port"))?,
                ),
            };
            (h, port)
        } else if s.matches(':').count() == 1 {
            let (h, p) = s.split_once(':').expect("one colon");
            (h, Some(p.parse::<u16>().map_err(|_| err("bad port"))?))
        } else {
            (s, None)
        };
        if port == Some(0) {
            return Err(err("port 0"));
        }
        let host = match host.split_once('/') {
            Some((addr, bits)) => {
                let addr: IpAddr = addr.parse().map_err(|_| err("bad CIDR address"))?;
                let bits: u8 = bits.parse().map_err(|_| err("bad CIDR prefix length"))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                if bits > max {
                    return Err(err("CIDR prefix length too long"));
                }
                HostMatch::Cidr(addr, bits)
            }
            None => {
                if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
                    return Err(err("bad host pattern"));
                }
                HostMatch::Glob(host.to_ascii_lowercase())
            }
        };
        Ok(HostPattern { host, port })
    }
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matcher with one backtrack point for `*`: linear in practice.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn in_cidr(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

impl HostPattern {
    /// Whether `host:port` is allowed. A CIDR matches address literals only: a name is not
    /// resolved here, because the executor would resolve it again and might get another
    /// answer.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match &self.host {
            HostMatch::Glob(g) => glob(g.as_bytes(), host.to_ascii_lowercase().as_bytes()),
            HostMatch::Cidr(net, bits) => host
                .parse::<IpAddr>()
                .is_ok_and(|ip| in_cidr(*net, *bits, ip)),
        }
    }
}

/// Parse a hex SHA-256 digest.
pub fn parse_digest(s: &str) -> Result<[u8; 32], PatternError> {
    let s = s.trim();
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    if s.len() != 64 {
        return Err(PatternError(format!(
            "{s:?}: a SHA-256 digest is 64 hex digits"
        )));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| PatternError(format!("{s:?}: not hex")))?;
    }
    Ok(out)
}

/// The digest a pinned template is listed under: SHA-256 of the script text.
pub fn script_digest(script: &str) -> [u8; 32] {
    Sha256::digest(script.as_bytes()).into()
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `path` is absolute, has no `..`, and lies under one of `prefixes` (whole
/// components; an empty list allows any such path).
fn path_allowed(path: &str, prefixes: &[String]) -> bool {
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return false;
    }
    prefixes.is_empty() || prefixes.iter().any(|pre| p.starts_with(Path::new(pre)))
}

impl Policy {
    /// `Ok` if the task may run, else why not (names the rule, never a value).
    pub fn check(&self, task: &Task) -> Result<(), String> {
        let max_ms = self.max_timeout.as_millis();
        if task.deadline_ms as u128 > max_ms {
            return Err(format!(
                "the task's deadline of {} ms is over the agent's maximum of {max_ms} ms",
                task.deadline_ms
            ));
        }
        if let Some(t) = task.template.timeout_millis {
            if t as u128 > max_ms {
                return Err(format!(
                    "the template's timeout of {t} ms is over the agent's maximum of {max_ms} ms"
                ));
            }
        }
        if !self.pinned_templates.is_empty() {
            let d = script_digest(&task.template.script_string);
            if !self.pinned_templates.contains(&d) {
                return Err(format!(
                    "the script (sha256 {}) is not among the agent's pinned templates",
                    hex(&d)
                ));
            }
        }
        let default_path = crate::exec::DEFAULT_COMMAND_PATH;
        match &task.target {
            Target::Local { command_path } => {
                if !self.local {
                    return Err("local execution is disabled on this agent".into());
                }
                let cp = command_path.as_deref().unwrap_or(default_path);
                if !path_allowed(cp, &self.command_path_prefixes) {
                    return Err(format!("commandPath {cp:?} is not under an allowed prefix"));
                }
            }
            Target::Ssh(ssh) => {
                let port = ssh.port();
                if !self.ssh_hosts.iter().any(|h| h.matches(&ssh.host, port)) {
                    return Err(format!(
                        "SSH to {}:{port} is not allowed by the agent's ssh_hosts",
                        ssh.host
                    ));
                }
                let cp = ssh.command_path.as_deref().unwrap_or(default_path);
                if !path_allowed(cp, &self.command_path_prefixes) {
                    return Err(format!("commandPath {cp:?} is not under an allowed prefix"));
                }
                if let SshCredentials::KeyFile { path, .. } = &ssh.credentials {
                    if self.ssh_key_file_prefixes.is_empty()
                        || !path_allowed(path, &self.ssh_key_file_prefixes)
                    {
                        return Err(format!(
                            "the SSH key file {path:?} is not under an allowed ssh_key_file_prefixes entry"
                        ));
                    }
                }
            }
            Target::Unknown => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{SshSpec, TaskKind, TemplateSpec, WireSecret};

    fn task(target: Target) -> Task {
        Task {
            id: "t".into(),
            kind: TaskKind::Fetch,
            attempt: 1,
            deadline_ms: 1000,
            template: TemplateSpec {
                name: None,
                script_string: "secret=x".into(),
                variables: vec![],
                timeout_millis: None,
            },
            variables: Default::default(),
            secrets: Default::default(),
            target,
            retry: None,
        }
    }

    fn ssh(host: &str, port: u16, creds: SshCredentials) -> Target {
        Target::Ssh(SshSpec {
            host: host.into(),
            port: Some(port),
            user: "u".into(),
            credentials: creds,
            host_keys: vec![],
            command_path: None,
        })
    }

    fn pw() -> SshCredentials {
        SshCredentials::Password {
            password: WireSecret::from_vec(b"pw".to_vec()),
        }
    }

    #[test]
    fn host_patterns_match_globs_cidrs_and_ports() {
        let p: HostPattern = "*.db.corp:22".parse().unwrap();
        assert!(p.matches("a.db.corp", 22));
        assert!(p.matches("A.DB.corp", 22));
        assert!(!p.matches("a.db.corp", 2222));
        assert!(!p.matches("db.corp", 22));
        assert!(!p.matches("a.db.corp.evil", 22));
        let p: HostPattern = "10.1.0.0/16".parse().unwrap();
        assert!(p.matches("10.1.200.3", 22));
        assert!(p.matches("10.1.200.3", 2200));
        assert!(!p.matches("10.2.0.1", 22));
        assert!(!p.matches("ten.example", 22), "names are not resolved");
        let p: HostPattern = "[fd00::/8]:22".parse().unwrap();
        assert!(p.matches("fd12::1", 22));
        assert!(p.matches("[fd12::1]", 22));
        assert!(!p.matches("fe80::1", 22));
        let p: HostPattern = "fd00::/8".parse().unwrap();
        assert!(p.matches("fd12::1", 9));
        let p: HostPattern = "[::1]:2222".parse().unwrap();
        assert!(p.matches("::1", 2222));
        assert!(!p.matches("::1", 22));
        let p: HostPattern = "db-?".parse().unwrap();
        assert!(p.matches("db-1", 22));
        assert!(!p.matches("db-12", 22));
        for bad in ["", "h:0", "h:x", "10.0.0.0/33", "[::1", "a b"] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_allow_local_and_refuse_ssh() {
        let p = Policy::default();
        assert!(p.check(&task(Target::Local { command_path: None })).is_ok());
        let e = p.check(&task(ssh("h", 22, pw()))).unwrap_err();
        assert!(e.contains("ssh_hosts"), "{e}");
    }

    #[test]
    fn each_rule_refuses() {
        let mut p = Policy {
            local: false,
            ..Policy::default()
        };
        let local = |cp: &str| {
            task(Target::Local {
                command_path: Some(cp.into()),
            })
        };
        assert!(p.check(&local("/tmp")).unwrap_err().contains("disabled"));
        p.local = true;
        p.command_path_prefixes = vec!["/srv/csm".into()];
        assert!(p.check(&local("/srv/csm/x")).is_ok());
        assert!(p.check(&local("/srv/csmevil")).is_err());
        assert!(p.check(&local("/srv/csm/../etc")).is_err());
        assert!(p.check(&local("relative")).is_err());
        p.command_path_prefixes.clear();

        p.ssh_hosts = vec!["h".parse().unwrap()];
        assert!(p.check(&task(ssh("h", 22, pw()))).is_ok());
        let kf = SshCredentials::KeyFile {
            path: "/root/.ssh/id_ed25519".into(),
            passphrase: None,
        };
        assert!(p.check(&task(ssh("h", 22, kf.clone()))).is_err());
        p.ssh_key_file_prefixes = vec!["/etc/csm-agent/keys".into()];
        assert!(p.check(&task(ssh("h", 22, kf))).is_err());
        let ok_kf = SshCredentials::KeyFile {
            path: "/etc/csm-agent/keys/deploy".into(),
            passphrase: None,
        };
        assert!(p.check(&task(ssh("h", 22, ok_kf))).is_ok());

        p.max_timeout = Duration::from_millis(500);
        assert!(p.check(&local("/tmp")).unwrap_err().contains("deadline"));
        p.max_timeout = DEFAULT_MAX_TIMEOUT;
        let mut t = local("/tmp");
        t.template.timeout_millis = Some(10_000_000);
        assert!(p.check(&t).unwrap_err().contains("timeout"));

        p.pinned_templates = vec![script_digest("secret=y")];
        assert!(p.check(&local("/tmp")).unwrap_err().contains("pinned"));
        p.pinned_templates.push(script_digest("secret=x"));
        assert!(p.check(&local("/tmp")).is_ok());
    }

    #[test]
    fn digests_parse_from_hex() {
        let d = script_digest("secret=x");
        assert_eq!(parse_digest(&hex(&d)).unwrap(), d);
        assert_eq!(parse_digest(&format!("sha256:{}", hex(&d))).unwrap(), d);
        assert!(parse_digest("abc").is_err());
        assert!(parse_digest(&"zz".repeat(32)).is_err());
    }
}
