//! A real OpenSSH `sshd` for integration tests.
//!
//! [`Sshd::start`] runs `/usr/sbin/sshd -D -e -f CONFIG` on a free 127.0.0.1 port with a
//! config and `authorized_keys` in a fresh temp dir, and returns once sshd has logged
//! `Server listening on 127.0.0.1 port N.` (bounded by a deadline). Dropping the fixture
//! kills sshd with every connection process under it and removes the temp dir. Each
//! fixture is independent, so tests may run them in parallel threads and processes.
//!
//! # Users
//! - As root (CI): logins go to the dedicated user [`TEST_USER`], created if missing.
//!   Its password is random per machine, kept in [`PASSWORD_FILE`] (root-only) and
//!   applied with `chpasswd` once per test process; see [`Sshd::password`].
//! - As another user (a developer's convenience): sshd runs as that user and only that
//!   user can log in. Password logins can't work (no shadow access), which
//!   [`Sshd::supports_password`] reports.
//!
//! # Keys
//! Client and host keys are generated with `ssh-keygen` once per build directory and
//! cached under `CARGO_TARGET_TMPDIR` (override: env `CSM_TEST_KEY_CACHE`), guarded by a
//! file lock, since nextest runs every test in its own process. Host keys are shared by
//! all fixtures; known_hosts files are per fixture because they name the port.
//!
//! # Debugging
//! [`Sshd::server_log`] returns sshd's stderr (`LogLevel VERBOSE`); a fixture dropped
//! while its test panics prints it, so failing tests show the server side.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpid, getppid, Pid, Uid, User};

/// The OpenSSH server; always started by absolute path (sshd refuses to re-exec otherwise).
pub const SSHD: &str = "/usr/sbin/sshd";
/// The OpenSSH client, for [`Sshd::run_as_user`] and friends.
pub const SSH: &str = "/usr/bin/ssh";
const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
const USERADD: &str = "/usr/sbin/useradd";
const CHPASSWD: &str = "/usr/sbin/chpasswd";

/// The login user when the tests run as root.
pub const TEST_USER: &str = "csmtest";
/// Root-only file holding [`TEST_USER`]'s password, shared by all test processes.
pub const PASSWORD_FILE: &str = "/var/lib/csm-agent-tests/csmtest.password";
/// Passphrase of the [`KeyKind::Ed25519Encrypted`] key (a space, to catch quoting bugs).
pub const KEY_PASSPHRASE: &str = "csm test passphrase";

/// Bumped when the set or format of cached keys changes, so stale caches are ignored.
const KEY_CACHE_VERSION: u32 = 1;
/// Attempts at a fresh port when another process grabs ours before sshd binds it.
const PORT_ATTEMPTS: u32 = 8;

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

/// Knobs for [`Sshd::start_with`]; `SshdOptions::default()` is what [`Sshd::start`] uses.
#[derive(Clone, Debug)]
pub struct SshdOptions {
    /// Host keys to serve, in order. The first one is the "primary" key that
    /// [`Sshd::host_key_fingerprint`] and [`Sshd::known_hosts_line`] describe. Default:
    /// ed25519 only, so every client (OpenSSH prefers ed25519, libssh2 ECDSA) is offered
    /// that one key.
    pub host_keys: Vec<HostKeyKind>,
    /// `MaxSessions` (channels per connection). Default 20.
    pub max_sessions: u32,
    /// `MaxStartups`. Default `100:30:200`, so parallel connects aren't dropped.
    pub max_startups: String,
    /// Extra `sshd_config` lines. sshd keeps the FIRST value of most keywords, so lines
    /// before the first `Match` go above the fixture's defaults and override them; from
    /// the first `Match` line on they go at the end, where `Match` blocks must be.
    pub extra_config: Vec<String>,
    /// How long to wait for sshd to listen. Default 30 s (CI machines are busy).
    pub start_timeout: Duration,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions {
            host_keys: vec![HostKeyKind::Ed25519],
            max_sessions: 20,
            max_startups: "100:30:200".to_string(),
            extra_config: Vec::new(),
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// A running (or stopped) OpenSSH server on `127.0.0.1:port()`.
pub struct Sshd {
    // Removed when the fields drop, i.e. after `Drop::drop` has stopped sshd.
    dir: tempfile::TempDir,
    opts: SshdOptions,
    keys: &'static KeyStore,
    account: &'static Account,
    port: u16,
    child: Option<Child>,
    log: Arc<ServerLog>,
    spawns: u64,
    /// Set once a panic message already carries the log, so drop doesn't repeat it.
    log_shown: bool,
    config_path: PathBuf,
    known_hosts: PathBuf,
    other_known_hosts: PathBuf,
    askpass: PathBuf,
}

impl Sshd {
    /// Starts sshd with [`SshdOptions::default`]. Panics with sshd's log if it can't.
    pub fn start() -> Sshd {
        Sshd::start_with(SshdOptions::default())
    }

    /// Starts sshd with `opts`. Panics with a clear message (and sshd's log) if it can't.
    pub fn start_with(opts: SshdOptions) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} not found: install OpenSSH's server (Debian: apt-get install openssh-server)"
        );
        assert!(
            !opts.host_keys.is_empty(),
            "SshdOptions::host_keys must name at least one key"
        );
        let keys = KeyStore::get();
        let account = Account::get();
        if is_root() {
            // sshd's privilege separation chroot; tmpfs /run loses it on reboot.
            fs::create_dir_all("/run/sshd").expect("create /run/sshd");
            set_mode(Path::new("/run/sshd"), 0o755);
        }

        let dir = tempfile::Builder::new()
            .prefix("csm-sshd-")
            .tempdir()
            .expect("create sshd fixture temp dir");
        if is_root() {
            // sshd reads AuthorizedKeysFile as the login user, who must reach it.
            set_mode(dir.path(), 0o755);
            check_traversable(dir.path());
        }
        let authorized: String = KeyKind::ALL
            .iter()
            .map(|&k| format!("{}\n", keys.client(k).public))
            .collect();
        write_file(&dir.path().join("authorized_keys"), &authorized, 0o644);
        let askpass = dir.path().join("askpass");
        // Prints the secret handed over in the environment, so it never sits on disk.
        write_file(
            &askpass,
            "#!/bin/sh\nprintf '%s\\n' \"$CSM_TEST_ASKPASS_SECRET\"\n",
            0o755,
        );

        let mut sshd = Sshd {
            config_path: dir.path().join("sshd_config"),
            known_hosts: dir.path().join("known_hosts"),
            other_known_hosts: dir.path().join("other_known_hosts"),
            askpass,
            dir,
            opts,
            keys,
            account,
            port: 0,
            child: None,
            log: Arc::new(ServerLog::default()),
            spawns: 0,
            log_shown: false,
        };

        // A port found free may be taken by someone else before sshd binds it: try another.
        let mut attempt = 0;
        loop {
            attempt += 1;
            sshd.port = free_port();
            match sshd.spawn() {
                Ok(()) => break,
                Err(StartError::AddrInUse) if attempt < PORT_ATTEMPTS => continue,
                Err(e) => sshd.fail_start(e),
            }
        }

        let line = |k: &HostKey| format!("[127.0.0.1]:{} {}\n", sshd.port, k.public);
        let known: String = sshd.host_keys().map(|(_, k)| line(k)).collect();
        let other: String = sshd
            .opts
            .host_keys
            .iter()
            .map(|&kind| line(keys.other_host(kind)))
            .collect();
        write_file(&sshd.known_hosts, &known, 0o644);
        write_file(&sshd.other_known_hosts, &other, 0o644);
        sshd
    }

    /// The port sshd listens on (stays the same across [`Sshd::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address sshd listens on: always `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The user to log in as: [`TEST_USER`] as root, else the current user.
    pub fn user(&self) -> &str {
        &self.account.user
    }

    /// Whether password logins work (only when the tests run as root).
    pub fn supports_password(&self) -> bool {
        self.account.password.is_some()
    }

    /// [`Sshd::user`]'s password. Panics when `!supports_password()`; check that first.
    pub fn password(&self) -> &str {
        self.account.password.as_deref().unwrap_or_else(|| {
            panic!("password logins need the tests to run as root (see Sshd::supports_password)")
        })
    }

    /// A known_hosts file listing every served host key for `[127.0.0.1]:PORT`.
    pub fn known_hosts_path(&self) -> &Path {
        &self.known_hosts
    }

    /// The known_hosts line of the primary host key: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        let (_, key) = self.host_keys().next().expect("at least one host key");
        format!("[127.0.0.1]:{} {}", self.port, key.public)
    }

    /// A known_hosts file listing DIFFERENT keys (same kinds) for `[127.0.0.1]:PORT`,
    /// for changed-host-key tests.
    pub fn other_host_key_known_hosts(&self) -> &Path {
        &self.other_known_hosts
    }

    /// `SHA256:...` fingerprint of the primary host key (by default the only one, ed25519).
    pub fn host_key_fingerprint(&self) -> String {
        let (_, key) = self.host_keys().next().expect("at least one host key");
        key.fingerprint.clone()
    }

    /// `SHA256:...` fingerprint of the served host key of `kind`, if it is served.
    pub fn host_key_fingerprint_of(&self, kind: HostKeyKind) -> Option<String> {
        self.host_keys()
            .find(|(k, _)| *k == kind)
            .map(|(_, key)| key.fingerprint.clone())
    }

    /// An authorized client key of `kind`.
    pub fn client_key(&self, kind: KeyKind) -> &ClientKey {
        self.keys.client(kind)
    }

    /// An ed25519 key that is NOT authorized.
    pub fn wrong_key(&self) -> &ClientKey {
        &self.keys.wrong
    }

    /// The fixture's temp dir (mode 0755 as root, so the login user can read files put
    /// there); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pid of the sshd listener process, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether sshd is running (between start/restart and stop).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Everything sshd wrote to stderr so far, across restarts.
    pub fn server_log(&self) -> String {
        self.log.lock().text.clone()
    }

    /// Kills sshd and every process under it (connection handlers and the commands they
    /// run), like a host going down. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let root = Pid::from_raw(child.id() as i32);
            let _ = kill(root, Signal::SIGSTOP);
            let tree = stop_descendants(root);
            kill_all(&tree);
            let _ = child.kill();
            // Reaping makes the pid disappear and the listening socket close now.
            let _ = child.wait();
        }
    }

    /// Stops sshd (as [`Sshd::stop`], dropping all connections) and starts it again on
    /// the same port with the same keys and config; returns once it listens again.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            self.fail_start(e);
        }
    }

    /// Kills every connection's processes but keeps the listener; returns how many
    /// processes were killed. For tests of clients recovering from dropped connections.
    pub fn kill_connections(&self) -> usize {
        let Some(child) = &self.child else { return 0 };
        let root = Pid::from_raw(child.id() as i32);
        // Pausing the listener makes the snapshot of its children complete.
        let _ = kill(root, Signal::SIGSTOP);
        let tree = stop_descendants(root);
        kill_all(&tree);
        let _ = kill(root, Signal::SIGCONT);
        tree.len()
    }

    /// An `ssh` command logging in with `key` and strict host key checking against
    /// `known_hosts`, ignoring the user's ssh config and agent. Append the remote
    /// command with `.arg(..)`. An encrypted key's passphrase is given via `SSH_ASKPASS`.
    pub fn ssh_command(&self, key: &ClientKey, known_hosts: &Path) -> Command {
        let mut cmd = Command::new(SSH);
        cmd.arg("-i").arg(&key.path);
        cmd.args(["-o", "IdentitiesOnly=yes", "-o", "PubkeyAuthentication=yes"]);
        cmd.args(["-o", "PasswordAuthentication=no"]);
        match &key.passphrase {
            Some(pass) => self.use_askpass(&mut cmd, pass),
            None => {
                cmd.args(["-o", "BatchMode=yes"]);
            }
        }
        self.finish_ssh_command(&mut cmd, known_hosts);
        cmd
    }

    /// An `ssh` command logging in with `password` (via `SSH_ASKPASS`), no keys, and
    /// strict host key checking against `known_hosts`. Append the remote command.
    pub fn ssh_password_command(&self, password: &str, known_hosts: &Path) -> Command {
        let mut cmd = Command::new(SSH);
        cmd.args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PasswordAuthentication=yes",
        ]);
        cmd.args(["-o", "PreferredAuthentications=password"]);
        self.use_askpass(&mut cmd, password);
        self.finish_ssh_command(&mut cmd, known_hosts);
        cmd
    }

    /// Runs `cmd` on the server as [`Sshd::user`] through the system `ssh` client (the
    /// ed25519 key, strict host key checking), e.g. `pgrep -f MARKER` to inspect the
    /// remote side. Panics only if `ssh` can't be executed; check `status` yourself.
    pub fn run_as_user(&self, cmd: &str) -> Output {
        self.ssh_command(self.client_key(KeyKind::Ed25519), self.known_hosts_path())
            .arg(cmd)
            .output()
            .unwrap_or_else(|e| panic!("run {SSH}: {e} (install openssh-client)"))
    }

    fn use_askpass(&self, cmd: &mut Command, secret: &str) {
        cmd.args(["-o", "BatchMode=no", "-o", "NumberOfPasswordPrompts=1"]);
        cmd.args(["-o", "KbdInteractiveAuthentication=no"]);
        cmd.env("SSH_ASKPASS", &self.askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("CSM_TEST_ASKPASS_SECRET", secret);
    }

    fn finish_ssh_command(&self, cmd: &mut Command, known_hosts: &Path) {
        // Quoted: ssh splits this option's value on spaces (it takes several files).
        cmd.arg("-o")
            .arg(format!("UserKnownHostsFile={}", quote(known_hosts)));
        cmd.args([
            "-F",
            "/dev/null",
            "-T",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "UpdateHostKeys=no",
            "-o",
            "IdentityAgent=none",
            "-o",
            "ControlPath=none",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "LogLevel=ERROR",
        ]);
        cmd.arg("-p")
            .arg(self.port.to_string())
            .arg("-l")
            .arg(self.user())
            .arg(self.host())
            .stdin(Stdio::null());
    }

    fn host_keys(&self) -> impl Iterator<Item = (HostKeyKind, &'static HostKey)> + '_ {
        let keys = self.keys;
        self.opts.host_keys.iter().map(move |&k| (k, keys.host(k)))
    }

    /// Writes the config for the current port, spawns sshd and waits until it listens.
    fn spawn(&mut self) -> Result<(), StartError> {
        fs::write(&self.config_path, self.config()).expect("write sshd_config");
        self.spawns += 1;
        let id = self.spawns;
        let from = self.log.lock().text.len();

        let mut cmd = Command::new(SSHD);
        cmd.arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn_tied_to_process(cmd)
            .unwrap_or_else(|e| panic!("spawn {SSHD}: {e} (install openssh-server)"));
        let stderr = child.stderr.take().expect("piped stderr");
        self.log.clone().follow(id, stderr);
        self.child = Some(child);

        let needle = format!("Server listening on 127.0.0.1 port {}.", self.port);
        let deadline = Instant::now() + self.opts.start_timeout;
        let mut log = self.log.lock();
        loop {
            let new = &log.text[from..];
            if new.contains(&needle) {
                return Ok(());
            }
            if log.closed.contains(&id) {
                // stderr closes when sshd exits: it failed to start.
                let in_use = new.contains("Address already in use");
                drop(log);
                let status = self.reap();
                return Err(if in_use {
                    StartError::AddrInUse
                } else {
                    StartError::Failed(format!("sshd exited ({status})"))
                });
            }
            let now = Instant::now();
            if now >= deadline {
                drop(log);
                self.stop();
                return Err(StartError::Failed(format!(
                    "sshd did not listen within {:?}",
                    self.opts.start_timeout
                )));
            }
            log = self
                .log
                .changed
                .wait_timeout(log, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn reap(&mut self) -> String {
        match self.child.take().map(|mut c| c.wait()) {
            Some(Ok(status)) => status.to_string(),
            Some(Err(e)) => format!("wait failed: {e}"),
            None => "not running".to_string(),
        }
    }

    fn fail_start(&mut self, e: StartError) -> ! {
        self.stop();
        self.log_shown = true;
        let why = match e {
            StartError::AddrInUse => format!("port {} is in use", self.port),
            StartError::Failed(why) => why,
        };
        panic!(
            "could not start {SSHD} on 127.0.0.1:{}: {why}\n--- sshd_config ---\n{}--- sshd log ---\n{}",
            self.port,
            self.config(),
            self.server_log()
        );
    }

    fn config(&self) -> String {
        let mut c =
            String::from("# Generated by the csm-agent test fixture (tests/support/sshd.rs).\n");
        let split = self
            .opts
            .extra_config
            .iter()
            .position(|l| l.trim_start().to_ascii_lowercase().starts_with("match "))
            .unwrap_or(self.opts.extra_config.len());
        let (overrides, matches) = self.opts.extra_config.split_at(split);
        for line in overrides {
            let _ = writeln!(c, "{line}");
        }
        let dir = self.dir.path();
        let _ = writeln!(c, "Port {}", self.port);
        let _ = writeln!(c, "ListenAddress 127.0.0.1");
        let _ = writeln!(c, "AddressFamily inet");
        for (_, key) in self.host_keys() {
            let _ = writeln!(c, "HostKey {}", quote(&key.path));
        }
        let _ = writeln!(c, "PidFile {}", quote(&dir.join("sshd.pid")));
        let _ = writeln!(
            c,
            "AuthorizedKeysFile {}",
            quote(&dir.join("authorized_keys"))
        );
        let _ = writeln!(c, "AllowUsers {}", self.user());
        let password = if self.supports_password() {
            "yes"
        } else {
            "no"
        };
        let _ = writeln!(c, "PasswordAuthentication {password}");
        let _ = writeln!(c, "MaxSessions {}", self.opts.max_sessions);
        let _ = writeln!(c, "MaxStartups {}", self.opts.max_startups);
        // UsePAM no: password checks read shadow directly, no PAM stack needed.
        // StrictModes no: keys and config live in temp dirs owned by the test runner.
        c.push_str(
            "LogLevel VERBOSE
UsePAM no
StrictModes no
PubkeyAuthentication yes
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowAgentForwarding no
AllowTcpForwarding no
PermitTunnel no
",
        );
        for line in matches {
            let _ = writeln!(c, "{line}");
        }
        c
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() && !self.log_shown {
            eprintln!(
                "--- sshd log (127.0.0.1:{}) ---\n{}--- end of sshd log ---",
                self.port,
                self.server_log()
            );
        }
    }
}

enum StartError {
    AddrInUse,
    Failed(String),
}

/// sshd's stderr, appended to by one reader thread per spawned sshd.
#[derive(Default)]
struct ServerLog {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    text: String,
    /// Spawn ids whose stderr reached EOF (that sshd and all its children exited).
    closed: Vec<u64>,
}

impl ServerLog {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn follow(self: Arc<Self>, id: u64, stderr: ChildStderr) {
        thread::Builder::new()
            .name(format!("sshd-log-{id}"))
            .spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut line = Vec::new();
                while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                    let mut state = self.lock();
                    state.text.push_str(&String::from_utf8_lossy(&line));
                    if !line.ends_with(b"\n") {
                        state.text.push('\n');
                    }
                    drop(state);
                    self.changed.notify_all();
                    line.clear();
                }
                self.lock().closed.push(id);
                self.changed.notify_all();
            })
            .expect("spawn sshd log reader thread");
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that it gets SIGKILL if this test process dies without running
/// `Drop` (killed by a timeout, aborted), instead of lingering on its port forever.
/// PR_SET_PDEATHSIG fires when the spawning *thread* exits, so all spawns go through
/// one thread that lives as long as the process.
fn spawn_tied_to_process(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("sshd-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn sshd spawner thread");
        Mutex::new(tx)
    });
    let parent = getpid();
    // SAFETY: the closure only makes async-signal-safe syscalls (prctl, getppid) and
    // builds io::Errors from raw errnos, which does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // The parent may have died before prctl: then nobody would ever kill us.
            if getppid() != parent {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("sshd spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("sshd spawner thread is gone"))?
}

/// SIGSTOPs every descendant of `root` until no new ones appear (stopped processes can't
/// fork, so the set converges), and returns them.
fn stop_descendants(root: Pid) -> Vec<Pid> {
    let mut stopped = HashSet::new();
    for _ in 0..50 {
        let fresh: Vec<Pid> = descendants(root)
            .into_iter()
            .filter(|p| !stopped.contains(p))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for pid in fresh {
            let _ = kill(pid, Signal::SIGSTOP);
            stopped.insert(pid);
        }
    }
    stopped.into_iter().collect()
}

fn kill_all(pids: &[Pid]) {
    for &pid in pids {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// All descendants of `root`, from the parent pids in /proc.
fn descendants(root: Pid) -> Vec<Pid> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            // /proc/PID/stat is "pid (comm) state ppid ..."; comm may contain spaces and ')'.
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|s| s.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![root.as_raw()];
    while let Some(p) = queue.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            out.push(Pid::from_raw(c));
            queue.push(c);
        }
    }
    out
}

/// A port that was free a moment ago (the kernel's pick for an ephemeral bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

fn is_root() -> bool {
    Uid::effective().is_root()
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

fn write_file(path: &Path, contents: &str, mode: u32) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, mode);
}

/// Quotes a path for sshd_config (which splits arguments on spaces).
fn quote(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// Panics unless other users can traverse every ancestor of `dir` (the login user
/// must reach `authorized_keys` there).
fn check_traversable(dir: &Path) {
    for ancestor in dir.ancestors().skip(1) {
        let mode = fs::metadata(ancestor)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        assert!(
            mode & 0o001 != 0,
            "{} is not traversable by {TEST_USER} (mode {mode:o}), so sshd can't read \
             authorized_keys under it: point TMPDIR at a world-traversable dir such as /tmp",
            ancestor.display()
        );
    }
}

/// Who logs in, and with which password; resolved once per process.
struct Account {
    user: String,
    password: Option<String>,
}

impl Account {
    fn get() -> &'static Account {
        static ACCOUNT: OnceLock<Account> = OnceLock::new();
        ACCOUNT.get_or_init(|| {
            if is_root() {
                ensure_test_user();
                Account {
                    user: TEST_USER.to_string(),
                    password: Some(ensure_test_password()),
                }
            } else {
                let user = User::from_uid(Uid::current())
                    .ok()
                    .flatten()
                    .expect("look up the current user in the passwd database");
                Account {
                    user: user.name,
                    password: None,
                }
            }
        })
    }
}

/// Creates [`TEST_USER`] if missing. Parallel test processes may race here: useradd
/// serialises on the passwd lock and the loser fails, so success means "exists now".
fn ensure_test_user() {
    let exists = || User::from_name(TEST_USER).ok().flatten().is_some();
    if exists() {
        return;
    }
    let out = Command::new(USERADD)
        .args(["-m", "-s", "/bin/bash", TEST_USER])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {USERADD}: {e}"));
    assert!(
        exists(),
        "could not create user {TEST_USER}: {USERADD} {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Returns [`TEST_USER`]'s password and makes sure the shadow entry matches it.
///
/// Concurrent test processes (nextest, several test binaries) must agree on one
/// password, or one process's `chpasswd` would break another's password logins. So the
/// first process to get here writes a random password to the root-only
/// [`PASSWORD_FILE`], and every process applies that file's password, under a lock so
/// that no one reads a half-written file. Re-applying it once per process also repairs
/// a user that was deleted and re-created (useradd leaves the account locked, which
/// sshd with `UsePAM no` refuses even for key logins).
fn ensure_test_password() -> String {
    let file = Path::new(PASSWORD_FILE);
    let dir = file.parent().expect("password file has a parent");
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    set_mode(dir, 0o700);
    let _lock = lock_file(&dir.join("lock"), "");

    let password = match fs::read_to_string(file) {
        Ok(p) if !p.trim().is_empty() => p.trim().to_string(),
        _ => {
            let mut bytes = [0u8; 18];
            getrandom::fill(&mut bytes).expect("random bytes for the test password");
            let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = dir.join("csmtest.password.tmp");
            write_file(&tmp, &password, 0o600);
            fs::rename(&tmp, file).unwrap_or_else(|e| panic!("rename to {PASSWORD_FILE}: {e}"));
            password
        }
    };

    let mut child = Command::new(CHPASSWD)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {CHPASSWD}: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(format!("{TEST_USER}:{password}\n").as_bytes())
        .expect("write to chpasswd");
    let out = child.wait_with_output().expect("wait for chpasswd");
    assert!(
        out.status.success(),
        "{CHPASSWD} for {TEST_USER} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    password
}

/// Takes an exclusive flock on `path` (created if missing); released on drop. `hint`
/// is appended to failure messages.
fn lock_file(path: &Path, hint: &str) -> Flock<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open lock file {}: {e} {hint}", path.display()));
    Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("lock {}: {e} {hint}", path.display()))
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
struct KeyStore {
    clients: HashMap<KeyKind, ClientKey>,
    wrong: ClientKey,
    hosts: HashMap<HostKeyKind, HostKey>,
    other_hosts: HashMap<HostKeyKind, HostKey>,
}

impl KeyStore {
    fn get() -> &'static KeyStore {
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

    fn client(&self, kind: KeyKind) -> &ClientKey {
        &self.clients[&kind]
    }

    fn host(&self, kind: HostKeyKind) -> &HostKey {
        &self.hosts[&kind]
    }

    fn other_host(&self, kind: HostKeyKind) -> &HostKey {
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
