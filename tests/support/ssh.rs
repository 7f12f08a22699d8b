//! Helpers shared by the SSH executor tests (`tests/ssh_*.rs`): targets and jobs for the
//! fixture's sshd, outcome accessors, /proc probes for remote processes and connections,
//! and running the `csm-agent test-run` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csm_agent::exec::ssh::{
    HostKeyPolicy, SshAuth, SshConfig, SshCredential, SshExecutor, SshPool, SshTarget,
};
use csm_agent::exec::{self, ExecError, Job, Outcome, RetryPolicy};
use csm_agent::secret::Variables;
use csm_agent::template::Template;
use csm_agent::{ErrorKind, Kind};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use super::sshd::{ClientKey, KeyKind, Sshd};

/// Bound on every "wait until" poll in this file.
pub const POLL_LIMIT: Duration = Duration::from_secs(10);

pub const BIN: &str = env!("CARGO_BIN_EXE_csm-agent");

pub fn config() -> SshConfig {
    SshConfig {
        connect_timeout: Duration::from_secs(5),
        auth_timeout: Duration::from_secs(10),
        ..SshConfig::default()
    }
}

pub fn pool() -> Arc<SshPool> {
    SshPool::new(config())
}

pub fn known_hosts(sshd: &Sshd) -> HostKeyPolicy {
    HostKeyPolicy::Strict {
        known_hosts: vec![sshd.known_hosts_path().to_path_buf()],
        pinned: vec![],
    }
}

pub fn inline_key(key: &ClientKey) -> SshAuth {
    SshAuth::Key {
        private_key: SecretString::from(key.private_pem.clone()),
        passphrase: key.passphrase.clone().map(SecretString::from),
    }
}

pub fn target(sshd: &Sshd, auth: SshAuth, host_keys: HostKeyPolicy) -> SshTarget {
    SshTarget {
        host: sshd.host().to_string(),
        port: sshd.port(),
        credential: Arc::new(SshCredential::new(sshd.user(), auth)),
        host_keys: Arc::new(host_keys),
    }
}

/// The everyday target: the ed25519 key inline, strict against the fixture's known_hosts.
pub fn key_target(sshd: &Sshd) -> SshTarget {
    target(
        sshd,
        inline_key(sshd.client_key(KeyKind::Ed25519)),
        known_hosts(sshd),
    )
}

pub fn job_with(script: &str, values: Variables, dir: &str, timeout: Duration) -> Job {
    let rendered = Template::from_script(script)
        .render(&values, &Variables::new())
        .expect("render");
    let mut j = Job::new(rendered, dir, timeout, &values);
    j.limits.grace = Duration::from_millis(300);
    j
}

pub fn job(script: &str) -> Job {
    job_with(script, Variables::new(), "/tmp", Duration::from_secs(20))
}

pub fn once() -> RetryPolicy {
    RetryPolicy {
        attempts: 1,
        delay: Duration::ZERO,
    }
}

pub async fn run_once(exec: &SshExecutor, job: &Job) -> Outcome {
    exec::run(exec, job, &once(), &CancellationToken::new()).await
}

#[track_caller]
pub fn secret_of(o: &Outcome) -> Vec<u8> {
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
pub fn err_of(o: &Outcome) -> &ExecError {
    match &o.result {
        Ok(_) => panic!("expected an error, got a secret"),
        Err(e) => e,
    }
}

#[track_caller]
pub fn kind_of(o: &Outcome) -> ErrorKind {
    err_of(o).kind()
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `host:port` as messages must name it.
pub fn addr(sshd: &Sshd) -> String {
    format!("{}:{}", sshd.host(), sshd.port())
}

/// A marker unique to this test run, for `exec -a MARKER sleep …`.
pub fn marker(label: &str) -> String {
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
pub fn alive_with(marker: &str) -> bool {
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
pub fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
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
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
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
pub fn login_ids(sshd: &Sshd) -> (nix::unistd::Uid, nix::unistd::Gid) {
    let u = nix::unistd::User::from_name(sshd.user())
        .unwrap()
        .expect("login user exists");
    (u.uid, u.gid)
}

/// A fresh directory in /tmp owned by the login user, so remote scripts can use it.
pub fn user_dir(sshd: &Sshd) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("csm-ssh-test-")
        .tempdir_in("/tmp")
        .unwrap();
    let (uid, gid) = login_ids(sshd);
    nix::unistd::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    dir
}

/// A file the test writes for the binary (templates, keys, inputs).
pub fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// `SHA256:…` of every key in a known_hosts file, by `ssh-keygen -l`, independently of the
/// code under test.
pub fn fingerprints_in(known_hosts: &Path) -> Vec<String> {
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
pub fn key_body(key: &ClientKey) -> Vec<&str> {
    key.private_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect()
}

/// How many logins the server accepted so far.
pub fn accepted_logins(sshd: &Sshd) -> usize {
    let log = sshd.server_log();
    log.matches("Accepted publickey for ").count() + log.matches("Accepted password for ").count()
}

/// Client ends of the ESTABLISHED TCP connections to `port`, from /proc/net/tcp (the sshd
/// is on loopback, so both ends are listed; the client ends are those whose remote port is
/// sshd's), by local address. The file is not read atomically: it can list an entry twice,
/// and a connection that closed and one that opened while it was being read can both be in
/// it.
pub fn established_ends(port: u16) -> std::collections::HashSet<String> {
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

pub fn established_to(port: u16) -> usize {
    established_ends(port).len()
}

/// Samples the connections to a port on a thread; `max()` is the most open at once.
///
/// A connection counts for a pair of consecutive reads only if both list it. One that closed
/// during the first read and one that opened during the second cannot both be in both, so
/// the non-atomic reads never make two sequential connections look simultaneous; two that
/// really overlap for longer than two reads (well under a millisecond each) are counted.
pub struct ConnSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl ConnSampler {
    pub fn start(port: u16) -> ConnSampler {
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

    pub fn max(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

pub fn test_run(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("test-run")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `--host/--port/--user/--known-hosts` and `--attempts 1` for `sshd`.
pub fn ssh_flags(sshd: &Sshd, known_hosts: &Path) -> Vec<String> {
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

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

pub fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// The sshd processes serving connections (every descendant of the listener), from /proc.
pub fn connection_processes(sshd: &Sshd) -> Vec<nix::unistd::Pid> {
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
