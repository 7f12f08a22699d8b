//! The SSH executor against a real OpenSSH sshd (tests/support/sshd.rs), through the library
//! API (`SshPool`, `SshExecutor`, `exec::run`) and through the `csm-agent test-run` binary.
//!
//! Covers every authentication method and its failures, strict host keys, exact values,
//! commandPath, remote kills on timeout and cancellation, the remote watchdog, pooling under
//! concurrency and server restarts, fast connect errors, and that nothing secret reaches the
//! host's argv, environment, disk or a PTY.
//!
//! The sshd runs on this machine, so the remote processes are visible in this machine's
//! /proc: that is how the kill tests prove that nothing survives.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csm_agent::exec::ssh::{
    HostKeyPolicy, SshAuth, SshConfig, SshCredential, SshError, SshExecutor, SshPool, SshTarget,
};
use csm_agent::exec::{self, ExecError, Job, Outcome, RetryPolicy};
use csm_agent::secret::{secret_bytes, Variables};
use csm_agent::template::Template;
use csm_agent::{ErrorKind, Kind};
use secrecy::{ExposeSecret, SecretString};
use support::sshd::*;
use tokio_util::sync::CancellationToken;

/// Bound on every "wait until" poll in this file.
const POLL_LIMIT: Duration = Duration::from_secs(10);

const BIN: &str = env!("CARGO_BIN_EXE_csm-agent");

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn config() -> SshConfig {
    SshConfig {
        connect_timeout: Duration::from_secs(5),
        auth_timeout: Duration::from_secs(10),
        ..SshConfig::default()
    }
}

fn pool() -> Arc<SshPool> {
    SshPool::new(config())
}

fn known_hosts(sshd: &Sshd) -> HostKeyPolicy {
    HostKeyPolicy::Strict {
        known_hosts: vec![sshd.known_hosts_path().to_path_buf()],
        pinned: vec![],
    }
}

fn inline_key(key: &ClientKey) -> SshAuth {
    SshAuth::Key {
        private_key: SecretString::from(key.private_pem.clone()),
        passphrase: key.passphrase.clone().map(SecretString::from),
    }
}

fn target(sshd: &Sshd, auth: SshAuth, host_keys: HostKeyPolicy) -> SshTarget {
    SshTarget {
        host: sshd.host().to_string(),
        port: sshd.port(),
        credential: Arc::new(SshCredential::new(sshd.user(), auth)),
        host_keys: Arc::new(host_keys),
    }
}

/// The everyday target: the ed25519 key inline, strict against the fixture's known_hosts.
fn key_target(sshd: &Sshd) -> SshTarget {
    target(
        sshd,
        inline_key(sshd.client_key(KeyKind::Ed25519)),
        known_hosts(sshd),
    )
}

fn job_with(script: &str, values: Variables, dir: &str, timeout: Duration) -> Job {
    let rendered = Template::from_script(script)
        .render(&values, &Variables::new())
        .expect("render");
    let mut j = Job::new(rendered, dir, timeout, &values);
    j.limits.grace = Duration::from_millis(300);
    j
}

fn job(script: &str) -> Job {
    job_with(script, Variables::new(), "/tmp", Duration::from_secs(20))
}

fn once() -> RetryPolicy {
    RetryPolicy {
        attempts: 1,
        delay: Duration::ZERO,
    }
}

async fn run_once(exec: &SshExecutor, job: &Job) -> Outcome {
    exec::run(exec, job, &once(), &CancellationToken::new()).await
}

#[track_caller]
fn secret_of(o: &Outcome) -> Vec<u8> {
    match &o.result {
        Ok(s) => s.expose_secret().to_vec(),
        Err(e) => panic!(
            "expected a secret, got {:?}: {e}\nlog: {}",
            e.kind(),
            String::from_utf8_lossy(o.stderr.as_bytes())
        ),
    }
}

#[track_caller]
fn err_of(o: &Outcome) -> &ExecError {
    match &o.result {
        Ok(_) => panic!("expected an error, got a secret"),
        Err(e) => e,
    }
}

#[track_caller]
fn kind_of(o: &Outcome) -> ErrorKind {
    err_of(o).kind()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `host:port` as messages must name it.
fn addr(sshd: &Sshd) -> String {
    format!("{}:{}", sshd.host(), sshd.port())
}

/// A marker unique to this test run, for `exec -a MARKER sleep …`.
fn marker(label: &str) -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    format!(
        "csm-ssh-{label}-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(b)
    )
}

/// Whether a live (non-zombie) process has `marker` in its argv. The sshd is on this
/// machine, so its remote processes are here too.
fn alive_with(marker: &str) -> bool {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if !contains(&cmd, marker.as_bytes()) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("");
        if !state.is_empty() && state != "Z" {
            return true;
        }
    }
    false
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The async form of [`poll_until`], for use inside the runtime.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The login user's uid and gid.
fn login_ids(sshd: &Sshd) -> (nix::unistd::Uid, nix::unistd::Gid) {
    let u = nix::unistd::User::from_name(sshd.user())
        .unwrap()
        .expect("login user exists");
    (u.uid, u.gid)
}

/// A fresh directory in /tmp owned by the login user, so remote scripts can use it.
fn user_dir(sshd: &Sshd) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("csm-ssh-test-")
        .tempdir_in("/tmp")
        .unwrap();
    let (uid, gid) = login_ids(sshd);
    nix::unistd::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    dir
}

/// A file the test writes for the binary (templates, keys, inputs).
fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// `SHA256:…` of every key in a known_hosts file, by `ssh-keygen -l`, independently of the
/// code under test.
fn fingerprints_in(known_hosts: &Path) -> Vec<String> {
    let out = Command::new("/usr/bin/ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(known_hosts)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect()
}

/// Lines of a private key's base64 body: none may appear in any message.
fn key_body(key: &ClientKey) -> Vec<&str> {
    key.private_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect()
}

/// How many logins the server accepted so far.
fn accepted_logins(sshd: &Sshd) -> usize {
    let log = sshd.server_log();
    log.matches("Accepted publickey for ").count() + log.matches("Accepted password for ").count()
}

/// Client ends of the ESTABLISHED TCP connections to `port`, from /proc/net/tcp (the sshd
/// is on loopback, so both ends are listed; the client ends are those whose remote port is
/// sshd's), by local address. The file is not read atomically: it can list an entry twice,
/// and a connection that closed and one that opened while it was being read can both be in
/// it.
fn established_ends(port: u16) -> std::collections::HashSet<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let mut ends = std::collections::HashSet::new();
    for l in table.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let rem_port = f
            .get(2)
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        if rem_port == Some(port) && f.get(3) == Some(&"01") {
            ends.insert(f[1].to_string());
        }
    }
    ends
}

fn established_to(port: u16) -> usize {
    established_ends(port).len()
}

/// Samples the connections to a port on a thread; `max()` is the most open at once.
///
/// A connection counts for a pair of consecutive reads only if both list it. One that closed
/// during the first read and one that opened during the second cannot both be in both, so
/// the non-atomic reads never make two sequential connections look simultaneous; two that
/// really overlap for longer than two reads (well under a millisecond each) are counted.
struct ConnSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl ConnSampler {
    fn start(port: u16) -> ConnSampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut max = 0;
            let mut prev = established_ends(port);
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                let now = established_ends(port);
                max = max.max(prev.intersection(&now).count());
                prev = now;
                std::thread::sleep(Duration::from_micros(200));
            }
            max
        });
        ConnSampler {
            stop,
            thread: Some(thread),
        }
    }

    fn max(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_inline_key_kind_authenticates() {
    let sshd = Sshd::start();
    let pool = pool();
    for kind in KeyKind::ALL {
        let key = sshd.client_key(kind);
        let exec = SshExecutor::new(
            pool.clone(),
            target(&sshd, inline_key(key), known_hosts(&sshd)),
        );
        let o = run_once(&exec, &job(&format!("secret=ok-{kind:?}"))).await;
        assert_eq!(secret_of(&o), format!("ok-{kind:?}").as_bytes(), "{kind:?}");
        // The server saw exactly this key, so the login really used that method.
        assert!(
            sshd.server_log().contains(&key.fingerprint),
            "{kind:?}: {} not in the server log",
            key.fingerprint
        );
    }
}

#[tokio::test]
async fn key_files_plain_and_encrypted_authenticate() {
    let sshd = Sshd::start();
    let pool = pool();
    for kind in [KeyKind::Ed25519, KeyKind::Ed25519Encrypted, KeyKind::RsaPem] {
        let key = sshd.client_key(kind);
        let auth = SshAuth::KeyFile {
            path: key.path.clone(),
            passphrase: key.passphrase.clone().map(SecretString::from),
        };
        let exec = SshExecutor::new(pool.clone(), target(&sshd, auth, known_hosts(&sshd)));
        let o = run_once(&exec, &job("secret=from-file")).await;
        assert_eq!(secret_of(&o), b"from-file", "{kind:?}");
        assert!(sshd.server_log().contains(&key.fingerprint), "{kind:?}");
    }
}

#[tokio::test]
async fn password_authenticates() {
    let sshd = Sshd::start();
    if !sshd.supports_password() {
        support::skip::skip(
            "password_authenticates",
            "password logins need the tests to run as root",
        );
        return;
    }
    let auth = SshAuth::Password(SecretString::from(sshd.password().to_string()));
    let exec = SshExecutor::new(pool(), target(&sshd, auth, known_hosts(&sshd)));
    let o = run_once(&exec, &job("secret=$(id -un)")).await;
    assert_eq!(secret_of(&o), sshd.user().as_bytes());
    assert!(sshd.server_log().contains("Accepted password for"));
}

#[tokio::test]
async fn wrong_key_is_ssh_auth_naming_the_method_and_never_the_key() {
    let sshd = Sshd::start();
    let wrong = sshd.wrong_key();
    for (auth, method) in [
        (inline_key(wrong), "publickey (inline key)"),
        (
            SshAuth::KeyFile {
                path: wrong.path.clone(),
                passphrase: None,
            },
            "publickey (key file",
        ),
    ] {
        let t = target(&sshd, auth, known_hosts(&sshd));
        let debug = format!("{t:?}");
        let o = run_once(&SshExecutor::new(pool(), t), &job("secret=x")).await;
        assert_eq!(kind_of(&o), ErrorKind::SshAuth);
        assert!(matches!(err_of(&o), ExecError::Ssh(SshError::Auth { .. })));
        assert_eq!(o.attempts, 1);
        let msg = err_of(&o).to_string();
        assert!(msg.contains(&addr(&sshd)), "{msg}");
        assert!(msg.contains(method), "{msg}");
        assert!(msg.contains(sshd.user()), "{msg}");
        for line in key_body(wrong) {
            assert!(!msg.contains(line), "key text in the message: {msg}");
            assert!(!debug.contains(line), "key text in Debug: {debug}");
        }
    }
}

#[tokio::test]
async fn wrong_password_is_ssh_auth_and_never_shows_the_password() {
    let sshd = Sshd::start();
    if !sshd.supports_password() {
        support::skip::skip(
            "wrong_password",
            "password logins need the tests to run as root",
        );
        return;
    }
    let pw = "not-the-password-9f2e71";
    let t = target(
        &sshd,
        SshAuth::Password(SecretString::from(pw.to_string())),
        known_hosts(&sshd),
    );
    let debug = format!("{t:?}");
    let o = run_once(&SshExecutor::new(pool(), t), &job("secret=x")).await;
    assert_eq!(kind_of(&o), ErrorKind::SshAuth);
    let msg = err_of(&o).to_string();
    assert!(
        msg.contains(&addr(&sshd)) && msg.contains("password"),
        "{msg}"
    );
    assert!(!msg.contains(pw), "{msg}");
    assert!(!msg.contains(sshd.password()), "{msg}");
    assert!(!debug.contains(pw), "{debug}");
}

#[tokio::test]
async fn wrong_or_missing_passphrase_is_ssh_auth_and_never_shows_it() {
    let sshd = Sshd::start();
    let key = sshd.client_key(KeyKind::Ed25519Encrypted);
    let bad = "wrong passphrase 51c0";
    let cases = [
        SshAuth::Key {
            private_key: SecretString::from(key.private_pem.clone()),
            passphrase: Some(SecretString::from(bad.to_string())),
        },
        SshAuth::KeyFile {
            path: key.path.clone(),
            passphrase: Some(SecretString::from(bad.to_string())),
        },
        SshAuth::Key {
            private_key: SecretString::from(key.private_pem.clone()),
            passphrase: None,
        },
    ];
    for auth in cases {
        let what = format!("{auth:?}");
        let o = run_once(
            &SshExecutor::new(pool(), target(&sshd, auth, known_hosts(&sshd))),
            &job("secret=x"),
        )
        .await;
        assert_eq!(kind_of(&o), ErrorKind::SshAuth, "{what}");
        let msg = err_of(&o).to_string();
        assert!(
            msg.contains(&addr(&sshd)) && msg.contains("publickey"),
            "{msg}"
        );
        assert!(!msg.contains(bad) && !msg.contains(KEY_PASSPHRASE), "{msg}");
        for line in key_body(key) {
            assert!(!msg.contains(line), "{msg}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Host keys
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_host_key_is_refused_with_its_fingerprint() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "known_hosts", b"");
    let policy = HostKeyPolicy::Strict {
        known_hosts: vec![empty],
        pinned: vec![],
    };
    let auth = inline_key(sshd.client_key(KeyKind::Ed25519));
    let o = run_once(
        &SshExecutor::new(pool(), target(&sshd, auth, policy)),
        &job("secret=x"),
    )
    .await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey);
    assert_eq!(o.attempts, 1);
    let msg = err_of(&o).to_string();
    let want = format!(
        "host key for {} is not trusted ({})",
        addr(&sshd),
        sshd.host_key_fingerprint()
    );
    assert!(msg.contains(&want), "{msg}\nwanted: {want}");
    // Refused before authenticating: the server never accepted a login.
    assert_eq!(accepted_logins(&sshd), 0, "{}", sshd.server_log());
}

#[tokio::test]
async fn a_key_trusted_for_the_bare_host_is_not_trusted_on_another_port() {
    // OpenSSH's rule: `127.0.0.1 KEY` covers port 22 only. libssh2 alone would accept it
    // for any port.
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let line = sshd.known_hosts_line();
    let (_, key) = line.split_once(' ').unwrap();
    let bare = write(
        dir.path(),
        "known_hosts",
        format!("{} {key}\n", sshd.host()).as_bytes(),
    );
    let policy = HostKeyPolicy::Strict {
        known_hosts: vec![bare],
        pinned: vec![],
    };
    let auth = inline_key(sshd.client_key(KeyKind::Ed25519));
    let o = run_once(
        &SshExecutor::new(pool(), target(&sshd, auth, policy)),
        &job("secret=x"),
    )
    .await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey);
    assert!(
        matches!(err_of(&o), ExecError::Ssh(SshError::HostKeyUnknown { .. })),
        "{}",
        err_of(&o)
    );
    assert_eq!(accepted_logins(&sshd), 0);
}

#[tokio::test]
async fn changed_host_key_is_refused_naming_both_fingerprints() {
    let sshd = Sshd::start();
    let other = fingerprints_in(sshd.other_host_key_known_hosts());
    assert_eq!(other.len(), 1);
    assert_ne!(other[0], sshd.host_key_fingerprint());
    let policy = HostKeyPolicy::Strict {
        known_hosts: vec![sshd.other_host_key_known_hosts().to_path_buf()],
        pinned: vec![],
    };
    let auth = inline_key(sshd.client_key(KeyKind::Ed25519));
    let o = run_once(
        &SshExecutor::new(pool(), target(&sshd, auth, policy)),
        &job("secret=x"),
    )
    .await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey);
    assert!(matches!(
        err_of(&o),
        ExecError::Ssh(SshError::HostKeyChanged { .. })
    ));
    let msg = err_of(&o).to_string();
    assert!(msg.contains(&addr(&sshd)), "{msg}");
    assert!(msg.contains(&sshd.host_key_fingerprint()), "{msg}");
    assert!(msg.contains(&other[0]), "{msg}");
    assert_eq!(accepted_logins(&sshd), 0);
}

#[tokio::test]
async fn pinned_fingerprint_pinned_line_and_insecure_accept_any_all_connect() {
    let sshd = Sshd::start();
    let pool = pool();
    let policies = [
        HostKeyPolicy::Strict {
            known_hosts: vec![],
            pinned: vec![sshd.host_key_fingerprint()],
        },
        HostKeyPolicy::Strict {
            known_hosts: vec![],
            pinned: vec![sshd.known_hosts_line()],
        },
        HostKeyPolicy::InsecureAcceptAny,
    ];
    for policy in policies {
        let what = format!("{policy:?}");
        let auth = inline_key(sshd.client_key(KeyKind::Ed25519));
        let exec = SshExecutor::new(pool.clone(), target(&sshd, auth, policy));
        let o = run_once(&exec, &job("secret=trusted")).await;
        assert_eq!(secret_of(&o), b"trusted", "{what}");
    }
    // A pin that does not match is a changed key, not a silent pass.
    let wrong_pin = fingerprints_in(sshd.other_host_key_known_hosts()).remove(0);
    let policy = HostKeyPolicy::Strict {
        known_hosts: vec![],
        pinned: vec![wrong_pin.clone()],
    };
    let auth = inline_key(sshd.client_key(KeyKind::Ed25519));
    let o = run_once(
        &SshExecutor::new(pool.clone(), target(&sshd, auth, policy)),
        &job("secret=x"),
    )
    .await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey);
    let msg = err_of(&o).to_string();
    assert!(
        msg.contains(&wrong_pin) && msg.contains(&sshd.host_key_fingerprint()),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn secret_is_byte_exact_and_survives_early_exit() {
    let sshd = Sshd::start();
    let exec = SshExecutor::new(pool(), key_target(&sshd));
    let o = run_once(
        &exec,
        &job(r#"secret=$'  two\nlines \xff\x01\x7f end\n\n'"#),
    )
    .await;
    assert_eq!(secret_of(&o), b"  two\nlines \xff\x01\x7f end\n\n");
    let o = run_once(&exec, &job("secret=early\nexit 0\nsecret=late")).await;
    assert_eq!(secret_of(&o), b"early");
    // A large value crosses many channel packets intact.
    let o = run_once(
        &exec,
        &job("secret=$(head -c 300000 /dev/zero | tr '\\0' 'q')x"),
    )
    .await;
    let s = secret_of(&o);
    assert_eq!(s.len(), 300_001);
    assert!(s[..300_000].iter().all(|&b| b == b'q') && s[300_000] == b'x');
}

#[tokio::test]
async fn empty_secret_and_script_failure() {
    let sshd = Sshd::start();
    let exec = SshExecutor::new(pool(), key_target(&sshd));
    let three = RetryPolicy {
        attempts: 3,
        delay: Duration::from_millis(1),
    };
    for script in ["secret=", "secret=null", "true"] {
        let o = exec::run(&exec, &job(script), &three, &CancellationToken::new()).await;
        assert_eq!(kind_of(&o), ErrorKind::EmptySecret, "{script}");
        assert_eq!(o.attempts, 1, "{script}: empty_secret is final");
    }
    let o = exec::run(
        &exec,
        &job("echo 'boom over ssh' >&2\nsecret=long-enough\nexit 7"),
        &three,
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(o.attempts, 3, "script_failed is retried");
    match err_of(&o) {
        ExecError::ScriptFailed { code, stderr_tail } => {
            assert_eq!(*code, 7);
            assert!(stderr_tail.contains("boom over ssh"), "{stderr_tail}");
        }
        e => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn runs_in_command_path_leaves_nothing_there_and_missing_path_is_command_path() {
    let sshd = Sshd::start();
    let exec = SshExecutor::new(pool(), key_target(&sshd));
    let dir = user_dir(&sshd);
    let canon = std::fs::canonicalize(dir.path()).unwrap();
    let path = dir.path().to_str().unwrap();
    let o = run_once(
        &exec,
        &job_with(
            "secret=$(pwd -P)",
            Variables::new(),
            path,
            Duration::from_secs(20),
        ),
    )
    .await;
    assert_eq!(secret_of(&o), canon.to_str().unwrap().as_bytes());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the run left a file in commandPath"
    );

    let file = write(dir.path(), "a-file", b"");
    for missing in [dir.path().join("nope"), file] {
        let m = missing.to_str().unwrap();
        let o = run_once(
            &exec,
            &job_with("secret=x", Variables::new(), m, Duration::from_secs(20)),
        )
        .await;
        assert_eq!(kind_of(&o), ErrorKind::CommandPath, "{m}");
        assert!(err_of(&o).to_string().contains(m));
    }
}

#[tokio::test]
async fn stdout_and_stderr_are_merged_and_masked() {
    let sshd = Sshd::start();
    let mut values = Variables::new();
    values.insert("token", secret_bytes(b"var-value-8c1d2e".to_vec()));
    // The template stub does not substitute; the script carries the value as rendering would.
    let script = "echo out-line\n\
                  echo err-line >&2\n\
                  echo \"token var-value-8c1d2e\"\n\
                  secret=returned-secret-55aa\n\
                  echo \"secret returned-secret-55aa\" >&2";
    let o = run_once(
        &SshExecutor::new(pool(), key_target(&sshd)),
        &job_with(script, values, "/tmp", Duration::from_secs(20)),
    )
    .await;
    assert_eq!(secret_of(&o), b"returned-secret-55aa");
    let log = String::from_utf8_lossy(o.stderr.as_bytes()).into_owned();
    assert!(o.stdout.as_bytes().is_empty(), "over SSH stdout is merged");
    let (out, err) = (log.find("out-line"), log.find("err-line"));
    assert!(out.is_some() && err.is_some() && out < err, "{log}");
    assert!(
        log.contains("token ***") && log.contains("secret ***"),
        "{log}"
    );
    assert!(!log.contains("var-value-8c1d2e") && !log.contains("returned-secret-55aa"));
}

// ---------------------------------------------------------------------------------------
// Isolation on the host
// ---------------------------------------------------------------------------------------

/// While the remote script is parked on a FIFO, no process of the login user carries the
/// script text or a value in its argv or environment; and there is no PTY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_and_values_never_reach_remote_argv_or_environment_and_no_pty() {
    let sshd = Sshd::start();
    let dir = user_dir(&sshd);
    let (uid, gid) = login_ids(&sshd);
    let ready = dir.path().join("ready");
    let go = dir.path().join("go");
    for f in [&ready, &go] {
        nix::unistd::mkfifo(f, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        nix::unistd::chown(f, Some(uid), Some(gid)).unwrap();
    }
    let canary = "argv-leak-canary-3d9b";
    let mut values = Variables::new();
    values.insert("token", secret_bytes(canary.as_bytes().to_vec()));
    // The value arrives through a placeholder (bound in the script's preamble). The child
    // reports readiness once it exists itself, so the whole tree is there to scan.
    let script = "# script-text-marker-91c4\n\
         v=${token}\n\
         bash -c 'echo $PPID > ready; exec cat go' > /dev/null\n\
         if [ -t 0 ] || [ -t 1 ] || [ -t 2 ]; then t=tty; else t=notty; fi\n\
         secret=\"$v $t $(cut -d' ' -f7 /proc/$$/stat)\""
        .to_string();
    let j = job_with(
        &script,
        values,
        dir.path().to_str().unwrap(),
        Duration::from_secs(20),
    );
    let exec = SshExecutor::new(pool(), key_target(&sshd));
    let running = tokio::spawn(async move { run_once(&exec, &j).await });

    let scanned = tokio::task::spawn_blocking(move || {
        let mut pid = String::new();
        std::fs::File::open(&ready)
            .unwrap()
            .read_to_string(&mut pid)
            .unwrap();
        assert!(pid.trim().parse::<i32>().is_ok(), "{pid}");
        let mut checked = 0;
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if entry.file_name().to_string_lossy().parse::<i32>().is_err() {
                continue;
            }
            let owner = std::fs::metadata(entry.path()).map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.uid()
            });
            if owner.ok() != Some(uid.as_raw()) {
                continue;
            }
            for f in ["cmdline", "environ"] {
                let data = std::fs::read(entry.path().join(f)).unwrap_or_default();
                let p = entry.path();
                assert!(
                    !contains(&data, canary.as_bytes()),
                    "value in {}/{f}",
                    p.display()
                );
                assert!(
                    !contains(&data, b"script-text-marker"),
                    "script text in {}/{f}",
                    p.display()
                );
            }
            checked += 1;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(&go)
            .unwrap()
            .write_all(b"go")
            .unwrap();
        checked
    })
    .await
    .unwrap();
    // sshd's session process, bash, and cat at least.
    assert!(
        scanned >= 3,
        "saw only {scanned} processes of the login user"
    );
    let o = running.await.unwrap();
    assert_eq!(
        secret_of(&o),
        format!("{canary} notty 0").as_bytes(),
        "no PTY, no controlling terminal"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "only the test's FIFOs remain: {left:?}");
}

// ---------------------------------------------------------------------------------------
// Timeouts, cancellation, the remote watchdog
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_remote_process_tree() {
    let sshd = Sshd::start();
    let exec = SshExecutor::new(pool(), key_target(&sshd));
    // Warm the pool, so the deadline is spent on the script, not the handshake.
    assert_eq!(
        secret_of(&run_once(&exec, &job("secret=warm")).await),
        b"warm"
    );
    let m = marker("timeout");
    let script = format!("(exec -a {m} sleep 1000) &\necho started\nsleep 1000");
    let j = job_with(&script, Variables::new(), "/tmp", Duration::from_secs(1));
    let t0 = Instant::now();
    let o = run_once(&exec, &j).await;
    assert_eq!(kind_of(&o), ErrorKind::Timeout);
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    assert!(String::from_utf8_lossy(o.stderr.as_bytes()).contains("started"));
    assert!(
        wait_until(POLL_LIMIT, || !alive_with(&m)).await,
        "the remote background sleep survived the timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_script_ignoring_sigterm_is_killed_after_the_grace() {
    let sshd = Sshd::start();
    let exec = SshExecutor::new(pool(), key_target(&sshd));
    assert_eq!(
        secret_of(&run_once(&exec, &job("secret=warm")).await),
        b"warm"
    );
    let m = marker("noterm");
    let script = format!(
        "trap '' TERM\n(trap '' TERM; exec -a {m} sleep 1000) &\nwhile :; do sleep 0.05; done"
    );
    let j = job_with(&script, Variables::new(), "/tmp", Duration::from_secs(1));
    let o = run_once(&exec, &j).await;
    assert_eq!(kind_of(&o), ErrorKind::Timeout);
    assert!(
        wait_until(POLL_LIMIT, || !alive_with(&m)).await,
        "a TERM-ignoring remote process survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_and_drop_kill_the_remote_tree() {
    let sshd = Sshd::start();
    let pool = pool();
    let exec = Arc::new(SshExecutor::new(pool.clone(), key_target(&sshd)));

    let m = marker("cancel");
    let j = job(&format!("(exec -a {m} sleep 1000) &\nsleep 1000"));
    let cancel = CancellationToken::new();
    let (c2, e2) = (cancel.clone(), exec.clone());
    let handle = tokio::spawn(async move { exec::run(e2.as_ref(), &j, &once(), &c2).await });
    assert!(
        wait_until(POLL_LIMIT, || alive_with(&m)).await,
        "never started"
    );
    let t0 = Instant::now();
    cancel.cancel();
    let o = handle.await.unwrap();
    assert_eq!(kind_of(&o), ErrorKind::Cancelled);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(wait_until(POLL_LIMIT, || !alive_with(&m)).await);

    // Dropping the task's future mid-run kills too.
    let m = marker("drop");
    let j = job(&format!("exec -a {m} sleep 1000"));
    let e2 = exec.clone();
    let handle = tokio::spawn(async move { run_once(&e2, &j).await });
    assert!(wait_until(POLL_LIMIT, || alive_with(&m)).await);
    handle.abort();
    assert!(handle.await.unwrap_err().is_cancelled());
    assert!(wait_until(POLL_LIMIT, || !alive_with(&m)).await);

    // The pool is still usable afterwards.
    assert_eq!(
        secret_of(&run_once(&exec, &job("secret=after")).await),
        b"after"
    );
}

// ---------------------------------------------------------------------------------------
// Pooling
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_tasks_share_a_bounded_pool() {
    let sshd = Sshd::start();
    let pool = pool();
    let max = pool.config().max_sessions_per_target;
    let t = key_target(&sshd);
    let exec = Arc::new(SshExecutor::new(pool.clone(), t.clone()));
    let sampler = ConnSampler::start(sshd.port());
    let mut handles = Vec::new();
    for i in 0..50 {
        let exec = exec.clone();
        handles.push(tokio::spawn(async move {
            let o = run_once(&exec, &job(&format!("secret=value-{i}"))).await;
            (i, o)
        }));
    }
    for h in handles {
        let (i, o) = h.await.unwrap();
        assert_eq!(secret_of(&o), format!("value-{i}").as_bytes());
        assert_eq!(o.attempts, 1);
    }
    let most = sampler.max();
    assert!(
        (1..=max).contains(&most),
        "{most} connections open at once for max_sessions_per_target {max}"
    );
    // Every login the server ever accepted is a connection the pool opened; none dropped,
    // so this bounds how many it held at once.
    let logins = accepted_logins(&sshd);
    assert!(
        (1..=max).contains(&logins),
        "{logins} connections for max_sessions_per_target {max}"
    );
    assert!(pool.idle_count(&t) <= max);
}

/// Fill the pool with idle connections: `n` overlapping tasks.
async fn fill_pool(exec: &Arc<SshExecutor>, n: usize) {
    let mut handles = Vec::new();
    for i in 0..n {
        let exec = exec.clone();
        handles.push(tokio::spawn(async move {
            run_once(&exec, &job(&format!("sleep 0.3; secret=fill-{i}"))).await
        }));
    }
    for h in handles {
        secret_of(&h.await.unwrap());
    }
}

/// After the server dropped every pooled connection, tasks run on fresh ones without
/// failing or retrying.
async fn survives(sshd: &mut Sshd, break_connections: impl FnOnce(&mut Sshd)) {
    let pool = pool();
    let t = key_target(sshd);
    let exec = Arc::new(SshExecutor::new(pool.clone(), t.clone()));
    fill_pool(&exec, 4).await;
    let idle = pool.idle_count(&t);
    assert!(idle >= 2, "only {idle} idle connections");
    let before = accepted_logins(sshd);
    break_connections(sshd);
    let retrying = RetryPolicy {
        attempts: 3,
        delay: Duration::from_secs(1),
    };
    let mut handles = Vec::new();
    for i in 0..6 {
        let exec = exec.clone();
        let retrying = retrying.clone();
        handles.push(tokio::spawn(async move {
            let j = job(&format!("secret=again-{i}"));
            exec::run(exec.as_ref(), &j, &retrying, &CancellationToken::new()).await
        }));
    }
    for (i, h) in handles.into_iter().enumerate() {
        let o = h.await.unwrap();
        assert_eq!(secret_of(&o), format!("again-{i}").as_bytes());
        assert_eq!(o.attempts, 1, "a dead pooled connection cost a retry");
    }
    assert!(accepted_logins(sshd) > before, "no new connection was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_restart_with_idle_pooled_sessions_is_transparent() {
    let mut sshd = Sshd::start();
    survives(&mut sshd, |s| s.restart()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_with_idle_pooled_sessions_are_transparent() {
    let mut sshd = Sshd::start();
    survives(&mut sshd, |s| assert!(s.kill_connections() > 0)).await;
}

// ---------------------------------------------------------------------------------------
// Connect errors
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unreachable_port_fails_fast_and_names_host_port() {
    let sshd = Sshd::start();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut t = key_target(&sshd);
    t.port = port;
    let t0 = Instant::now();
    let o = run_once(&SshExecutor::new(pool(), t), &job("secret=x")).await;
    let took = t0.elapsed();
    assert_eq!(kind_of(&o), ErrorKind::SshConnect);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let msg = err_of(&o).to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");

    let mut t = key_target(&sshd);
    t.host = "no-such-host.invalid".into();
    let o = run_once(&SshExecutor::new(pool(), t), &job("secret=x")).await;
    assert_eq!(kind_of(&o), ErrorKind::SshConnect);
    let msg = err_of(&o).to_string();
    assert!(
        msg.contains(&format!("no-such-host.invalid:{}", sshd.port())),
        "{msg}"
    );
}

#[tokio::test]
async fn a_silent_server_hits_the_handshake_bound() {
    let sshd = Sshd::start();
    // Accepts TCP, never speaks SSH.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut t = key_target(&sshd);
    t.port = port;
    let cfg = SshConfig {
        auth_timeout: Duration::from_millis(500),
        ..config()
    };
    let t0 = Instant::now();
    let o = run_once(&SshExecutor::new(SshPool::new(cfg), t), &job("secret=x")).await;
    assert_eq!(kind_of(&o), ErrorKind::SshConnect);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let msg = err_of(&o).to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("timed out"),
        "{msg}"
    );
    drop(silent);
}

/// Guards the drive loop's liveness on warm connections. The bug it is named for (a stdout
/// read that would block, then a stderr read that pulled the frame and EOF off the socket
/// into libssh2's queue, so the loop slept on an empty socket until the deadline) showed up
/// about once in 350 tasks in `cargo bench --bench ssh`, whose other clients interleave
/// with ours. This test does not reproduce that race reliably; it asserts the property
/// (no task comes near a stall) under concurrent tasks on several connections, with
/// stderr output right before the frame so both streams' packets arrive together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_never_sleeps_on_data_libssh2_already_holds() {
    let sshd = Sshd::start();
    let exec = Arc::new(SshExecutor::new(pool(), key_target(&sshd)));
    let mut workers = Vec::new();
    for w in 0..8 {
        let exec = exec.clone();
        workers.push(tokio::spawn(async move {
            for i in 0..75 {
                let j = job_with(
                    "echo progress >&2\nsecret=abc",
                    Variables::new(),
                    "/tmp",
                    Duration::from_secs(5),
                );
                let t0 = Instant::now();
                let o = run_once(exec.as_ref(), &j).await;
                assert_eq!(secret_of(&o), b"abc", "worker {w} task {i}");
                assert!(
                    t0.elapsed() < Duration::from_secs(2),
                    "worker {w} task {i} took {:?}",
                    t0.elapsed()
                );
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}

#[tokio::test]
async fn a_connect_cut_short_by_the_task_deadline_is_ssh_connect_not_a_script_timeout() {
    let sshd = Sshd::start();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut t = key_target(&sshd);
    t.port = port;
    // The task's own deadline (400 ms) ends first; no script ever started.
    let j = job_with(
        "secret=x",
        Variables::new(),
        "/tmp",
        Duration::from_millis(400),
    );
    let o = run_once(&SshExecutor::new(pool(), t), &j).await;
    assert_eq!(kind_of(&o), ErrorKind::SshConnect);
    let msg = err_of(&o).to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("timed out"),
        "{msg}"
    );
    assert!(!msg.contains("script"), "{msg}");
    drop(silent);
}

// ---------------------------------------------------------------------------------------
// `csm-agent test-run` over SSH, the real binary
// ---------------------------------------------------------------------------------------

fn test_run(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("test-run")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `--host/--port/--user/--known-hosts` and `--attempts 1` for `sshd`.
fn ssh_flags(sshd: &Sshd, known_hosts: &Path) -> Vec<String> {
    vec![
        "--host".into(),
        sshd.host().into(),
        "--port".into(),
        sshd.port().to_string(),
        "--user".into(),
        sshd.user().into(),
        "--known-hosts".into(),
        known_hosts.to_str().unwrap().into(),
        "--attempts".into(),
        "1".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn test_run_over_ssh_reveals_exact_bytes() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let template = write(
        dir.path(),
        "t.sh",
        br#"secret=$'bin\x01\nary \xfe\n\n'
echo "log line" >&2
"#,
    );
    let key = sshd.client_key(KeyKind::Ed25519Encrypted);
    let pp = write(dir.path(), "pp", format!("{KEY_PASSPHRASE}\n").as_bytes());
    let mut args = ssh_flags(&sshd, sshd.known_hosts_path());
    args.extend([
        "--template".into(),
        template.to_str().unwrap().into(),
        "--identity-file".into(),
        key.path.to_str().unwrap().into(),
        "--passphrase-file".into(),
        pp.to_str().unwrap().into(),
        "--reveal".into(),
    ]);
    let out = test_run(&strs(&args));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"bin\x01\nary \xfe\n\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("log line") && err.contains("ok: secret retrieved"),
        "{err}"
    );

    if sshd.supports_password() {
        let pw = write(dir.path(), "pw", sshd.password().as_bytes());
        let mut args = ssh_flags(&sshd, sshd.known_hosts_path());
        args.extend([
            "--template".into(),
            template.to_str().unwrap().into(),
            "--password-file".into(),
            pw.to_str().unwrap().into(),
            "--json".into(),
            "--reveal".into(),
        ]);
        let out = test_run(&strs(&args));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let j = json_of(&out);
        assert_eq!(j["ok"], true);
        assert_eq!(j["length"], 12);
        assert!(!String::from_utf8_lossy(&out.stdout).contains(sshd.password()));
    }
}

#[test]
fn test_run_ssh_failures_exit_4_with_stable_kinds() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let template = write(dir.path(), "t.sh", b"secret=x\n");
    let empty = write(dir.path(), "empty_known_hosts", b"");
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let good = sshd.client_key(KeyKind::Ed25519).path.clone();
    let wrong = sshd.wrong_key().path.clone();
    let cases: [(&str, &Path, &Path, Option<u16>); 3] = [
        ("host_key", &empty, &good, None),
        ("ssh_auth", sshd.known_hosts_path(), &wrong, None),
        ("ssh_connect", sshd.known_hosts_path(), &good, Some(closed)),
    ];
    for (kind, kh, key, port) in cases {
        let mut args = ssh_flags(&sshd, kh);
        if let Some(p) = port {
            args[3] = p.to_string();
        }
        args.extend([
            "--template".into(),
            template.to_str().unwrap().into(),
            "--identity-file".into(),
            key.to_str().unwrap().into(),
        ]);
        let plain = test_run(&strs(&args));
        assert_eq!(plain.status.code(), Some(4), "{kind}: {plain:?}");
        let err = String::from_utf8_lossy(&plain.stderr);
        assert!(err.contains(&format!("error[{kind}]")), "{kind}: {err}");
        args.push("--json".into());
        let out = test_run(&strs(&args));
        assert_eq!(out.status.code(), Some(4), "{kind}: {out:?}");
        let j = json_of(&out);
        assert_eq!(j["ok"], false);
        assert_eq!(j["error"]["kind"], kind);
        let msg = j["error"]["message"].as_str().unwrap();
        let port = port.unwrap_or(sshd.port());
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{kind}: {msg}");
    }
}

/// The seed's create form with `executeOnDelegate: false`, and a connector file shaped like
/// Harness's sshCredential input with secrets from files and pinned host keys.
#[test]
fn test_run_with_input_and_connector_file() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let template = write(dir.path(), "t.sh", b"secret=\"via-connector $(id -un)\"\n");
    let input = serde_json::json!({
        "secretManagerInput": {
            "secretManagerType": "CUSTOM",
            "customSecretManagerInput": {
                "name": "SshExample",
                "delegateSelectors": [],
                "testVariables": [],
                "isConnectorTemplatized": false,
                "executeOnDelegate": false,
                "templateId": "t1",
                "host": "127.0.0.1",
                "commandPath": "/tmp",
                "connectorId": "c1",
            }
        }
    });
    let input = write(dir.path(), "input.json", input.to_string().as_bytes());
    let key = sshd.client_key(KeyKind::Ed25519Encrypted);
    let key_file = write(dir.path(), "key", key.private_pem.as_bytes());
    let pp_file = write(dir.path(), "pp", KEY_PASSPHRASE.as_bytes());
    let connector = |method: serde_json::Value, secrets: serde_json::Value, id: &str| {
        let doc = serde_json::json!({
            "sshCredential": {
                "id": id,
                "name": "test connector",
                "authenticationScheme": "SSH",
                "sshAuthentication": {
                    "userName": sshd.user(),
                    "port": sshd.port(),
                    "sshAuthenticationMethod": method,
                },
            },
            "hostKeys": [sshd.known_hosts_line()],
            "secrets": secrets,
        });
        write(dir.path(), "connector.json", doc.to_string().as_bytes())
    };
    let mut methods = vec![
        (
            serde_json::json!({"sshCredentialType": "SSH_KEY",
                "inlineSSHKey": {"sshKeySecretFileId": "k1", "passphraseSecretId": "p1"}}),
            serde_json::json!({"k1": {"file": key_file}, "p1": {"file": pp_file}}),
        ),
        (
            serde_json::json!({"sshCredentialType": "SSH_KEY_FILE_PATH",
                "sshKeyFile": {"path": key.path, "passphraseSecretId": "p1"}}),
            serde_json::json!({"p1": {"file": pp_file}}),
        ),
    ];
    if sshd.supports_password() {
        let pw = write(dir.path(), "pw", sshd.password().as_bytes());
        methods.push((
            serde_json::json!({"sshCredentialType": "PASSWORD",
                "serverPassword": {"passwordSecretId": "pw1"}}),
            serde_json::json!({"pw1": {"file": pw}}),
        ));
    }
    for (method, secrets) in methods {
        let what = method["sshCredentialType"].to_string();
        let c = connector(method, secrets, "c1");
        let out = test_run(&[
            "--template",
            template.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--connector",
            c.to_str().unwrap(),
            "--attempts",
            "1",
            "--reveal",
        ]);
        assert_eq!(out.status.code(), Some(0), "{what}: {out:?}");
        assert_eq!(
            out.stdout,
            format!("via-connector {}", sshd.user()).as_bytes(),
            "{what}"
        );
    }

    // The connector's pinned host key is enforced: pin the other key and it is refused.
    let c = connector(
        serde_json::json!({"sshCredentialType": "SSH_KEY_FILE_PATH",
            "sshKeyFile": {"path": sshd.client_key(KeyKind::Ed25519).path}}),
        serde_json::json!({}),
        "c1",
    );
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&c).unwrap()).unwrap();
    let other = std::fs::read_to_string(sshd.other_host_key_known_hosts()).unwrap();
    doc["hostKeys"] = serde_json::json!([other.trim()]);
    std::fs::write(&c, doc.to_string()).unwrap();
    let out = test_run(&[
        "--template",
        template.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--connector",
        c.to_str().unwrap(),
        "--attempts",
        "1",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(json_of(&out)["error"]["kind"], "host_key");
}

/// The remote watchdog: when the agent dies mid-run, nothing is left to kill the remote
/// script over SSH, and the wrapper's own watchdog does it at the deadline.
#[test]
fn remote_watchdog_kills_the_script_when_the_agent_is_gone() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let m = marker("watchdog");
    let template = write(
        dir.path(),
        "t.sh",
        format!("(exec -a {m} sleep 1000) &\nsleep 1000\n").as_bytes(),
    );
    let mut args = ssh_flags(&sshd, sshd.known_hosts_path());
    let key = &sshd.client_key(KeyKind::Ed25519).path;
    args.extend([
        "--template".into(),
        template.to_str().unwrap().into(),
        "--identity-file".into(),
        key.to_str().unwrap().into(),
        "--timeout".into(),
        "3".into(),
    ]);
    let mut agent = Command::new(BIN)
        .arg("test-run")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(poll_until(POLL_LIMIT, || alive_with(&m)), "never started");
    let killed_at = Instant::now();
    agent.kill().unwrap();
    agent.wait().unwrap();
    // Still alive right after the agent died: the watchdog, not the agent, ends it.
    assert!(alive_with(&m), "the remote script died with the agent");
    assert!(
        poll_until(POLL_LIMIT, || !alive_with(&m)),
        "the remote script outlived the watchdog"
    );
    assert!(killed_at.elapsed() < Duration::from_secs(6));
}

/// A server with ed25519, ECDSA and RSA host keys, as most are. Trust that does not name a
/// key type (a hashed known_hosts entry, as Debian's HashKnownHosts writes them, or a
/// `SHA256:` pin) must still find the one key it trusts, whichever type that is.
#[tokio::test]
async fn hashed_known_hosts_and_fingerprint_pins_find_a_key_of_any_type() {
    let kinds = [HostKeyKind::Ed25519, HostKeyKind::Ecdsa, HostKeyKind::Rsa];
    let sshd = Sshd::start_with(SshdOptions {
        host_keys: kinds.to_vec(),
        ..SshdOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let hashed = |name: &str, text: &str| {
        let f = write(dir.path(), name, text.as_bytes());
        let out = Command::new("/usr/bin/ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&f)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(std::fs::read_to_string(&f).unwrap().starts_with("|1|"));
        f
    };
    let pool = pool();
    let run = |policy: HostKeyPolicy| {
        let auth = inline_key(sshd.client_key(KeyKind::Ed25519));
        let exec = SshExecutor::new(pool.clone(), target(&sshd, auth, policy));
        async move { run_once(&exec, &job("secret=found-it")).await }
    };
    // The fixture's known_hosts lists one line per served key, in `kinds` order.
    let all = std::fs::read_to_string(sshd.known_hosts_path()).unwrap();
    for (i, kind) in kinds.into_iter().enumerate() {
        let line = all.lines().nth(i).unwrap();
        let file = hashed(&format!("kh-{i}"), &format!("{line}\n"));
        let o = run(HostKeyPolicy::Strict {
            known_hosts: vec![file],
            pinned: vec![],
        })
        .await;
        assert_eq!(secret_of(&o), b"found-it", "hashed {kind:?} entry");
        let fp = sshd.host_key_fingerprint_of(kind).unwrap();
        let o = run(HostKeyPolicy::Strict {
            known_hosts: vec![],
            pinned: vec![fp],
        })
        .await;
        assert_eq!(secret_of(&o), b"found-it", "pinned {kind:?} fingerprint");
    }

    // Still strict: a hashed entry with another key is a changed key, and so is a foreign pin.
    let other = std::fs::read_to_string(sshd.other_host_key_known_hosts()).unwrap();
    let ecdsa_other = other.lines().nth(1).unwrap();
    let file = hashed("kh-other", &format!("{ecdsa_other}\n"));
    let o = run(HostKeyPolicy::Strict {
        known_hosts: vec![file],
        pinned: vec![],
    })
    .await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey);
    let msg = err_of(&o).to_string();
    assert!(
        msg.contains("has changed") && msg.contains(&addr(&sshd)) && msg.contains("hashed"),
        "{msg}"
    );
    let foreign = fingerprints_in(sshd.other_host_key_known_hosts()).remove(1);
    let o = run(HostKeyPolicy::Strict {
        known_hosts: vec![],
        pinned: vec![foreign.clone()],
    })
    .await;
    assert_eq!(kind_of(&o), ErrorKind::HostKey);
    let msg = err_of(&o).to_string();
    assert!(msg.contains(&foreign), "{msg}");
    assert_eq!(accepted_logins(&sshd), 6, "no login past a refused key");
}

/// Cancelling a task while its connection is still being set up is `cancelled`, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_during_the_handshake_is_cancelled() {
    let sshd = Sshd::start();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut t = key_target(&sshd);
    t.port = port;
    let exec = SshExecutor::new(pool(), t);
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let task = tokio::spawn(async move {
        let policy = RetryPolicy::default();
        exec::run(&exec, &job("secret=x"), &policy, &c2).await
    });
    // The client is connected and waiting for the server's banner.
    let accepted = tokio::task::spawn_blocking(move || silent.accept().map(|(s, _)| s))
        .await
        .unwrap()
        .unwrap();
    let t0 = Instant::now();
    cancel.cancel();
    let o = task.await.unwrap();
    assert_eq!(kind_of(&o), ErrorKind::Cancelled, "{}", err_of(&o));
    assert_eq!(o.attempts, 1);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    drop(accepted);
}

/// A task dropped mid-run still owns its connection until its remote kill is done; the
/// pool's bound must count it until then, or the next task opens one connection too many.
/// The server delays every command by 0.3 s (the remote kill too), so that a connection
/// opened too early overlaps the old one long enough to be seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_task_holds_its_pool_slot_until_its_connection_is_closed() {
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec!["ForceCommand sleep 0.3; eval \"$SSH_ORIGINAL_COMMAND\"".into()],
        ..SshdOptions::default()
    });
    let pool = SshPool::new(SshConfig {
        max_sessions_per_target: 1,
        ..config()
    });
    let exec = Arc::new(SshExecutor::new(pool, key_target(&sshd)));
    for round in 0..2 {
        let m = marker("slot");
        let e2 = exec.clone();
        let j = job(&format!("exec -a {m} sleep 1000"));
        let running = tokio::spawn(async move { run_once(&e2, &j).await });
        assert!(wait_until(POLL_LIMIT, || alive_with(&m)).await);
        let sampler = ConnSampler::start(sshd.port());
        running.abort();
        let o = run_once(&exec, &job(&format!("secret=next-{round}"))).await;
        assert_eq!(secret_of(&o), format!("next-{round}").as_bytes());
        assert!(wait_until(POLL_LIMIT, || !alive_with(&m)).await);
        let most = sampler.max();
        assert_eq!(
            most, 1,
            "round {round}: {most} connections at once, bound 1"
        );
    }
}

/// Every credential is a pool target of its own; once its connections have expired, the
/// pool forgets it, so an agent that sees many credentials does not grow without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_forgets_targets_whose_connections_expired() {
    let sshd = Sshd::start();
    let pool = SshPool::new(SshConfig {
        keepalive: Duration::from_secs(1),
        idle_timeout: Duration::from_millis(200),
        ..config()
    });
    for i in 0..5 {
        let exec = SshExecutor::new(pool.clone(), key_target(&sshd));
        let o = run_once(&exec, &job(&format!("secret=cred-{i}"))).await;
        assert_eq!(secret_of(&o), format!("cred-{i}").as_bytes());
    }
    assert_eq!(pool.target_count(), 5);
    assert!(
        wait_until(Duration::from_secs(5), || pool.target_count() == 0).await,
        "{} targets still tracked",
        pool.target_count()
    );
    // The closed connections are gone on the server too.
    assert!(wait_until(POLL_LIMIT, || established_to(sshd.port()) == 0).await);
}

/// A task cancelled before its remote bash has reported its process group must still kill
/// that group once it does. The server delays every command (ForceCommand), so the cancel
/// lands before the wrapper starts; and it ignores SIGPIPE, as services often run, so the
/// wrapper is not stopped by writing to a closed channel either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_before_the_remote_pid_is_known_still_kills() {
    let delay = marker("delay");
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec![format!(
            "ForceCommand trap '' PIPE; (exec -a {delay} sleep 0.5); eval \"$SSH_ORIGINAL_COMMAND\""
        )],
        ..SshdOptions::default()
    });
    let exec = Arc::new(SshExecutor::new(pool(), key_target(&sshd)));
    let m = marker("early-cancel");
    let mut j = job(&format!("exec -a {m} sleep 1000"));
    j.limits.grace = Duration::from_secs(3);
    let cancel = CancellationToken::new();
    let (c2, e2) = (cancel.clone(), exec.clone());
    let task = tokio::spawn(async move { exec::run(e2.as_ref(), &j, &once(), &c2).await });
    // The command has been sent and the server is in the delay: no pid reported yet.
    assert!(wait_until(POLL_LIMIT, || alive_with(&delay)).await);
    cancel.cancel();
    let o = task.await.unwrap();
    assert_eq!(kind_of(&o), ErrorKind::Cancelled);
    assert!(wait_until(POLL_LIMIT, || !alive_with(&delay)).await);
    // Once the delay is over the script starts within milliseconds unless it was killed;
    // watch for it for a second.
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        assert!(
            !alive_with(&m),
            "the remote script outlived its cancelled task"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// getaddrinfo has no timeout of its own: a name server that never answers must not hold a
/// task past its connect bound. Runs the binary in a private mount namespace whose
/// resolv.conf points at a UDP socket that swallows queries.
#[test]
fn a_silent_name_server_is_bounded_by_the_connect_timeout() {
    let probe = Command::new("unshare")
        .args(["--mount", "true"])
        .stderr(Stdio::null())
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        support::skip::skip("a_silent_name_server", "needs `unshare --mount` (root)");
        return;
    }
    let sshd = Sshd::start();
    let mut b = [0u8; 3];
    getrandom::fill(&mut b).unwrap();
    let ns = format!("127.{}.{}.{}", b[0], b[1], b[2].max(2));
    let silent = std::net::UdpSocket::bind((ns.as_str(), 53)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let resolv = write(
        dir.path(),
        "resolv.conf",
        format!("nameserver {ns}\noptions timeout:5 attempts:2\n").as_bytes(),
    );
    let template = write(dir.path(), "t.sh", b"secret=x\n");
    let key = &sshd.client_key(KeyKind::Ed25519).path;
    let t0 = Instant::now();
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c"])
        .arg("mount --bind \"$1\" /etc/resolv.conf && shift && exec \"$@\"")
        .arg("sh")
        .arg(&resolv)
        .arg(BIN)
        .arg("test-run")
        .args(["--host", "no-answer.example", "--user", sshd.user()])
        .arg("--identity-file")
        .arg(key)
        .arg("--known-hosts")
        .arg(sshd.known_hosts_path())
        .arg("--template")
        .arg(&template)
        .args(["--connect-timeout", "1", "--attempts", "1", "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let j = json_of(&out);
    assert_eq!(j["error"]["kind"], "ssh_connect");
    let msg = j["error"]["message"].as_str().unwrap();
    assert!(msg.contains("no-answer.example:22"), "{msg}");
    assert!(took < Duration::from_secs(4), "took {took:?}: {msg}");
    drop(silent);
}

/// test-run's host-key options: a pinned fingerprint, a connector's knownHosts file, and the
/// explicitly named insecure option, which warns every time.
#[test]
fn test_run_host_key_options() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let template = write(dir.path(), "t.sh", b"secret=pinned-ok\n");
    let empty = write(dir.path(), "empty", b"");
    let key = sshd
        .client_key(KeyKind::Ed25519)
        .path
        .to_str()
        .unwrap()
        .to_string();
    let base = |extra: &[&str]| {
        let mut args = ssh_flags(&sshd, &empty);
        args.extend(
            [
                "--template",
                template.to_str().unwrap(),
                "--identity-file",
                &key,
                "--reveal",
            ]
            .iter()
            .chain(extra)
            .map(|s| s.to_string()),
        );
        test_run(&strs(&args))
    };
    let fp = sshd.host_key_fingerprint();
    let out = base(&["--host-key", &fp]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"pinned-ok");

    let out = base(&["--insecure-accept-any-host-key"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"pinned-ok");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOT verified") && err.contains(&fp), "{err}");

    // A connector naming a known_hosts file instead of pinning keys.
    let connector = serde_json::json!({
        "authenticationScheme": "SSH",
        "sshAuthentication": {
            "userName": sshd.user(),
            "port": sshd.port(),
            "sshAuthenticationMethod": {"sshCredentialType": "SSH_KEY_FILE_PATH",
                "sshKeyFile": {"path": key}},
        },
        "knownHosts": [sshd.known_hosts_path()],
    });
    let c = write(dir.path(), "c.json", connector.to_string().as_bytes());
    let out = test_run(&[
        "--template",
        template.to_str().unwrap(),
        "--host",
        sshd.host(),
        "--connector",
        c.to_str().unwrap(),
        "--attempts",
        "1",
        "--reveal",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"pinned-ok");
}

/// The script-side error kinds over SSH, through the binary: kind and exit code.
#[test]
fn test_run_over_ssh_script_error_kinds() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let key = sshd
        .client_key(KeyKind::Ed25519)
        .path
        .to_str()
        .unwrap()
        .to_string();
    let cases: [(&str, &[&str], &str, i32); 4] = [
        (
            "secret=x\n",
            &["--command-path", "/no/such/dir"],
            "command_path",
            2,
        ),
        ("sleep 30\n", &["--timeout", "0.5"], "timeout", 3),
        ("echo bad >&2\nexit 9\n", &[], "script_failed", 1),
        ("secret=\n", &[], "empty_secret", 1),
    ];
    for (script, extra, kind, code) in cases {
        let template = write(dir.path(), "t.sh", script.as_bytes());
        let mut args = ssh_flags(&sshd, sshd.known_hosts_path());
        args.extend(
            [
                "--template",
                template.to_str().unwrap(),
                "--identity-file",
                &key,
                "--json",
            ]
            .iter()
            .chain(extra)
            .map(|s| s.to_string()),
        );
        let out = test_run(&strs(&args));
        assert_eq!(out.status.code(), Some(code), "{kind}: {out:?}");
        assert_eq!(json_of(&out)["error"]["kind"], kind, "{out:?}");
    }
}

/// The sshd processes serving connections (every descendant of the listener), from /proc.
fn connection_processes(sshd: &Sshd) -> Vec<nix::unistd::Pid> {
    let mut children: std::collections::HashMap<i32, Vec<i32>> = Default::default();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if let Some(ppid) = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|s| s.parse::<i32>().ok())
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![sshd.pid().expect("sshd running") as i32];
    while let Some(p) = queue.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            out.push(nix::unistd::Pid::from_raw(c));
            queue.push(c);
        }
    }
    out
}

/// A pooled connection whose server went silent (a NAT that forgot the mapping, a frozen
/// host) gets no RST: the task must not spend its whole deadline waiting on it. The
/// server's connection processes are stopped; the listener still accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_pooled_connection_is_replaced_within_the_connect_timeout() {
    use nix::sys::signal::{kill, Signal};
    let sshd = Sshd::start();
    let pool = SshPool::new(SshConfig {
        connect_timeout: Duration::from_secs(1),
        ..config()
    });
    let t = key_target(&sshd);
    let exec = SshExecutor::new(pool.clone(), t.clone());
    assert_eq!(
        secret_of(&run_once(&exec, &job("secret=first")).await),
        b"first"
    );
    assert_eq!(pool.idle_count(&t), 1);
    let frozen = connection_processes(&sshd);
    assert!(!frozen.is_empty());
    for p in &frozen {
        kill(*p, Signal::SIGSTOP).unwrap();
    }
    let t0 = Instant::now();
    let o = run_once(&exec, &job("secret=second")).await;
    let took = t0.elapsed();
    for p in &frozen {
        let _ = kill(*p, Signal::SIGKILL);
    }
    assert_eq!(secret_of(&o), b"second");
    assert_eq!(o.attempts, 1);
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
