//! Client and host keys, generated with `ssh-keygen` once per build directory and cached
//! on disk under a file lock (nextest runs every test in its own process).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use nix::unistd::Uid;

use super::{lock_file, KEY_PASSPHRASE};

const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

/// Bumped when the set or format of cached keys changes, so stale caches are ignored.
const KEY_CACHE_VERSION: u32 = 1;

/// The kinds of authorized client keys every fixture accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// ed25519, OpenSSH format.
    Ed25519,
    /// RSA 2048, OpenSSH format (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    Rsa,
    /// ECDSA P-256, OpenSSH format.
    Ecdsa,
    /// ed25519 encrypted with [`KEY_PASSPHRASE`].
    Ed25519Encrypted,
    /// RSA 2048 in the legacy PEM format (`-----BEGIN RSA PRIVATE KEY-----`).
    RsaPem,
}

impl KeyKind {
    /// Every kind, for tests that loop over them.
    pub const ALL: [KeyKind; 5] = [
        KeyKind::Ed25519,
        KeyKind::Rsa,
        KeyKind::Ecdsa,
        KeyKind::Ed25519Encrypted,
        KeyKind::RsaPem,
    ];

    fn spec(self) -> KeySpec {
        match self {
            KeyKind::Ed25519 => KeySpec::new("client_ed25519", &["-t", "ed25519"]),
            KeyKind::Rsa => KeySpec::new("client_rsa", &["-t", "rsa", "-b", "2048"]),
            KeyKind::Ecdsa => KeySpec::new("client_ecdsa", &["-t", "ecdsa", "-b", "256"]),
            KeyKind::Ed25519Encrypted => KeySpec {
                passphrase: Some(KEY_PASSPHRASE),
                ..KeySpec::new("client_ed25519_encrypted", &["-t", "ed25519"])
            },
            KeyKind::RsaPem => {
                KeySpec::new("client_rsa_pem", &["-t", "rsa", "-b", "2048", "-m", "PEM"])
            }
        }
    }
}

/// The kinds of host key a fixture can serve (see [`SshdOptions::host_keys`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostKeyKind {
    /// `ssh-ed25519`.
    Ed25519,
    /// `ecdsa-sha2-nistp256`.
    Ecdsa,
    /// `rsa-sha2-512` / `rsa-sha2-256` (RSA 2048).
    Rsa,
}

impl HostKeyKind {
    const ALL: [HostKeyKind; 3] = [HostKeyKind::Ed25519, HostKeyKind::Ecdsa, HostKeyKind::Rsa];

    fn spec(self, other: bool) -> KeySpec {
        let (name, args): (&'static str, &'static [&'static str]) = match (self, other) {
            (HostKeyKind::Ed25519, false) => ("host_ed25519", &["-t", "ed25519"]),
            (HostKeyKind::Ecdsa, false) => ("host_ecdsa", &["-t", "ecdsa", "-b", "256"]),
            (HostKeyKind::Rsa, false) => ("host_rsa", &["-t", "rsa", "-b", "2048"]),
            (HostKeyKind::Ed25519, true) => ("other_host_ed25519", &["-t", "ed25519"]),
            (HostKeyKind::Ecdsa, true) => ("other_host_ecdsa", &["-t", "ecdsa", "-b", "256"]),
            (HostKeyKind::Rsa, true) => ("other_host_rsa", &["-t", "rsa", "-b", "2048"]),
        };
        KeySpec::new(name, args)
    }
}

/// A generated client key pair (files live in the process-wide key cache).
#[derive(Debug)]
pub struct ClientKey {
    /// Private key file (mode 0600).
    pub path: PathBuf,
    /// Public key file (`path` + `.pub`).
    pub public_path: PathBuf,
    /// Contents of the private key file.
    pub private_pem: String,
    /// The public key line, e.g. `ssh-ed25519 AAAA... comment`.
    pub public: String,
    /// `SHA256:...` fingerprint of the public key.
    pub fingerprint: String,
    /// Passphrase the private key is encrypted with, if any.
    pub passphrase: Option<String>,
}

/// A generated host key pair.
#[derive(Debug)]
pub struct HostKey {
    /// Private key file (mode 0600), given to sshd as `HostKey`.
    pub path: PathBuf,
    /// `TYPE BASE64`, without comment, as known_hosts wants it.
    pub public: String,
    /// `SHA256:...` fingerprint, as OpenSSH prints it.
    pub fingerprint: String,
}

/// How to generate one key file with ssh-keygen.
struct KeySpec {
    file: &'static str,
    args: &'static [&'static str],
    passphrase: Option<&'static str>,
}

impl KeySpec {
    fn new(file: &'static str, args: &'static [&'static str]) -> KeySpec {
        KeySpec {
            file,
            args,
            passphrase: None,
        }
    }
}

/// All generated keys, loaded once per process from the on-disk cache.
pub(super) struct KeyStore {
    clients: HashMap<KeyKind, ClientKey>,
    pub(super) wrong: ClientKey,
    hosts: HashMap<HostKeyKind, HostKey>,
    other_hosts: HashMap<HostKeyKind, HostKey>,
}

impl KeyStore {
    pub(super) fn get() -> &'static KeyStore {
        static STORE: OnceLock<KeyStore> = OnceLock::new();
        STORE.get_or_init(|| KeyStore::load(&ensure_key_cache()))
    }

    fn all_specs() -> Vec<KeySpec> {
        let mut specs: Vec<KeySpec> = KeyKind::ALL.iter().map(|k| k.spec()).collect();
        specs.push(wrong_key_spec());
        for kind in HostKeyKind::ALL {
            specs.push(kind.spec(false));
            specs.push(kind.spec(true));
        }
        specs
    }

    fn load(dir: &Path) -> KeyStore {
        let client = |spec: KeySpec| {
            let path = dir.join(spec.file);
            let public_path = dir.join(format!("{}.pub", spec.file));
            ClientKey {
                private_pem: read(&path),
                public: read(&public_path).trim().to_string(),
                fingerprint: read(&dir.join(format!("{}.fp", spec.file))),
                passphrase: spec.passphrase.map(str::to_string),
                path,
                public_path,
            }
        };
        let host = |spec: KeySpec| {
            let public = read(&dir.join(format!("{}.pub", spec.file)));
            HostKey {
                path: dir.join(spec.file),
                // known_hosts wants "TYPE BASE64"; drop the comment.
                public: public
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
                fingerprint: read(&dir.join(format!("{}.fp", spec.file))),
            }
        };
        KeyStore {
            clients: KeyKind::ALL
                .iter()
                .map(|&k| (k, client(k.spec())))
                .collect(),
            wrong: client(wrong_key_spec()),
            hosts: HostKeyKind::ALL
                .iter()
                .map(|&k| (k, host(k.spec(false))))
                .collect(),
            other_hosts: HostKeyKind::ALL
                .iter()
                .map(|&k| (k, host(k.spec(true))))
                .collect(),
        }
    }

    pub(super) fn client(&self, kind: KeyKind) -> &ClientKey {
        &self.clients[&kind]
    }

    pub(super) fn host(&self, kind: HostKeyKind) -> &HostKey {
        &self.hosts[&kind]
    }

    pub(super) fn other_host(&self, kind: HostKeyKind) -> &HostKey {
        &self.other_hosts[&kind]
    }
}

fn wrong_key_spec() -> KeySpec {
    KeySpec::new("client_wrong_ed25519", &["-t", "ed25519"])
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Returns the key cache dir, generating it first if no process has yet.
///
/// Generation happens in a temp dir that is renamed into place when complete, so a
/// crashed generator never leaves a half-filled cache; the lock stops parallel test
/// processes from all generating at once.
fn ensure_key_cache() -> PathBuf {
    let base = std::env::var_os("CSM_TEST_KEY_CACHE")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from))
        .unwrap_or_else(std::env::temp_dir);
    let name = format!("sshd-keys-v{KEY_CACHE_VERSION}-uid{}", Uid::effective());
    let dir = base.join(&name);
    let hint = "(set CSM_TEST_KEY_CACHE to a writable dir)";
    fs::create_dir_all(&base).unwrap_or_else(|e| panic!("create {}: {e} {hint}", base.display()));
    let _lock = lock_file(&base.join(format!("{name}.lock")), hint);
    if dir.join("complete").exists() {
        return dir;
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}-"))
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("create temp dir in {}: {e} {hint}", base.display()));
    generate_keys(tmp.path());
    fs::write(tmp.path().join("complete"), "").expect("write key cache marker");
    fs::rename(tmp.path(), &dir).unwrap_or_else(|e| panic!("rename key cache into place: {e}"));
    // The TempDir's path is gone now, so its drop has nothing left to remove.
    drop(tmp);
    dir
}

/// Runs all ssh-keygen invocations at once (RSA generation dominates), then
/// records each key's SHA256 fingerprint next to it.
fn generate_keys(dir: &Path) {
    let specs = KeyStore::all_specs();
    let children: Vec<(String, Child)> = specs
        .iter()
        .map(|spec| {
            let child = Command::new(SSH_KEYGEN)
                .args(["-q", "-C", &format!("csm-agent-test-{}", spec.file)])
                .args(spec.args)
                .arg("-N")
                .arg(spec.passphrase.unwrap_or(""))
                .arg("-f")
                .arg(dir.join(spec.file))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("run {SSH_KEYGEN}: {e} (install openssh-client)"));
            (spec.file.to_string(), child)
        })
        .collect();
    for (file, child) in children {
        let out = child.wait_with_output().expect("wait for ssh-keygen");
        assert!(
            out.status.success(),
            "ssh-keygen for {file} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for spec in &specs {
        let out = Command::new(SSH_KEYGEN)
            .args(["-l", "-E", "sha256", "-f"])
            .arg(dir.join(format!("{}.pub", spec.file)))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {SSH_KEYGEN} -l: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        // "256 SHA256:base64 comment (ED25519)"
        let fingerprint = text
            .split_whitespace()
            .nth(1)
            .filter(|f| out.status.success() && f.starts_with("SHA256:"))
            .unwrap_or_else(|| panic!("unexpected ssh-keygen -l output for {}: {text}", spec.file));
        fs::write(dir.join(format!("{}.fp", spec.file)), fingerprint).expect("write fingerprint");
    }
}
