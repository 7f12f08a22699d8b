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
//!
//! # Layout
//! [`config`] renders `sshd_config` from [`SshdOptions`]; [`keys`] generates and caches the
//! client and host keys; [`users`] resolves the login account; [`process`] spawns sshd tied
//! to the test process and walks its process tree.

mod config;
mod keys;
mod process;
mod users;

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, Uid};

pub use config::SshdOptions;
use keys::KeyStore;
pub use keys::{ClientKey, HostKey, HostKeyKind, KeyKind};
use process::{kill_all, spawn_tied_to_process, stop_descendants};
use users::Account;

/// The OpenSSH server; always started by absolute path (sshd refuses to re-exec otherwise).
pub const SSHD: &str = "/usr/sbin/sshd";

/// The OpenSSH client, for [`Sshd::run_as_user`] and friends.
pub const SSH: &str = "/usr/bin/ssh";

/// The login user when the tests run as root.
pub const TEST_USER: &str = "csmtest";

/// Root-only file holding [`TEST_USER`]'s password, shared by all test processes.
pub const PASSWORD_FILE: &str = "/var/lib/csm-agent-tests/csmtest.password";

/// Passphrase of the [`KeyKind::Ed25519Encrypted`] key (a space, to catch quoting bugs).
pub const KEY_PASSPHRASE: &str = "csm test passphrase";

/// Attempts at a fresh port when another process grabs ours before sshd binds it.
const PORT_ATTEMPTS: u32 = 8;

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

    /// The fixture's host key of `kind`, whether or not this server serves it (for
    /// known_hosts lines naming a key type the server does not have).
    pub fn host_key(&self, kind: HostKeyKind) -> &'static HostKey {
        self.keys.host(kind)
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

/// A port that was free a moment ago (the kernel's pick for an ephemeral bind).
pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

pub(super) fn is_root() -> bool {
    Uid::effective().is_root()
}

pub(super) fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

pub(super) fn write_file(path: &Path, contents: &str, mode: u32) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, mode);
}

/// Quotes a path for sshd_config (which splits arguments on spaces).
pub(super) fn quote(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// Panics unless other users can traverse every ancestor of `dir` (the login user
/// must reach `authorized_keys` there).
pub(super) fn check_traversable(dir: &Path) {
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

/// Takes an exclusive flock on `path` (created if missing); released on drop. `hint`
/// is appended to failure messages.
pub(super) fn lock_file(path: &Path, hint: &str) -> Flock<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open lock file {}: {e} {hint}", path.display()));
    Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("lock {}: {e} {hint}", path.display()))
}
