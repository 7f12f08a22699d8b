//! The remote wrapper against a real OpenSSH sshd (tests/support/sshd.rs): nothing the
//! script writes steers the agent (not the kill target, not the result), the `exec 3>&1`
//! idioms neither leak nor break, nothing the script starts outlives the task (TERM-ignoring
//! children, `setsid` and `set -m` escapees, a script that kills its own relay and shell or
//! closes its descriptors), the private `TMPDIR`, and login shells that print to stdout or
//! refuse to run anything.
//!
//! The sshd runs on this machine, so remote processes are visible in this machine's /proc.

mod support;

use std::path::Path;
use std::process::{Child, Command};
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
use support::sshd::*;
use tokio_util::sync::CancellationToken;

const POLL_LIMIT: Duration = Duration::from_secs(10);

fn executor(sshd: &Sshd) -> SshExecutor {
    let key = sshd.client_key(KeyKind::Ed25519);
    let target = SshTarget {
        host: sshd.host().to_string(),
        port: sshd.port(),
        credential: Arc::new(SshCredential::new(
            sshd.user(),
            SshAuth::Key {
                private_key: SecretString::from(key.private_pem.clone()),
                passphrase: None,
            },
        )),
        host_keys: Arc::new(HostKeyPolicy::Strict {
            known_hosts: vec![sshd.known_hosts_path().to_path_buf()],
            pinned: vec![],
        }),
    };
    SshExecutor::new(
        SshPool::new(SshConfig {
            connect_timeout: Duration::from_secs(5),
            auth_timeout: Duration::from_secs(10),
            ..SshConfig::default()
        }),
        target,
    )
}

fn job_in(script: &str, dir: &str, timeout: Duration) -> Job {
    let values = Variables::new();
    let rendered = Template::from_script(script)
        .render(&values, &Variables::new())
        .expect("render");
    let mut j = Job::new(rendered, dir, timeout, &values);
    j.limits.grace = Duration::from_millis(300);
    j
}

fn job(script: &str) -> Job {
    job_in(script, "/tmp", Duration::from_secs(20))
}

fn once() -> RetryPolicy {
    RetryPolicy {
        attempts: 1,
        delay: Duration::ZERO,
    }
}

async fn run(exec: &SshExecutor, job: &Job) -> Outcome {
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

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn marker(label: &str) -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    format!(
        "csm-sshw-{label}-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(b)
    )
}

fn state_of(stat: &str) -> &str {
    stat.rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("")
}

/// Live (non-zombie) processes whose argv holds `marker`.
fn alive_with(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        contains(&cmd, marker.as_bytes()) && !matches!(state_of(&stat), "" | "Z")
    })
}

/// Live processes in session `sid`, or whose environment holds `CSM_AGENT_TASK=marker`.
fn task_processes(sid: i32, marker: &str) -> Vec<i32> {
    let tag = format!("CSM_AGENT_TASK={marker}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            if matches!(state_of(&stat), "" | "Z") {
                return None;
            }
            let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
            let in_session = fields.get(3).and_then(|s| s.parse::<i32>().ok()) == Some(sid);
            let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
            let tagged = env.split(|&b| b == 0).any(|kv| kv == tag.as_bytes());
            (in_session || tagged).then_some(pid)
        })
        .collect()
}

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

/// A directory the login user can write.
fn user_dir(sshd: &Sshd) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("csm-sshw-test-")
        .tempdir_in("/tmp")
        .unwrap();
    let u = nix::unistd::User::from_name(sshd.user())
        .unwrap()
        .expect("login user exists");
    nix::unistd::chown(dir.path(), Some(u.uid), Some(u.gid)).unwrap();
    dir
}

/// A process of the login user outside any task, killed on drop.
struct Sentinel(Child);

impl Sentinel {
    fn start(sshd: &Sshd, marker: &str) -> Sentinel {
        use std::os::unix::process::CommandExt;
        let u = nix::unistd::User::from_name(sshd.user())
            .unwrap()
            .expect("login user exists");
        let child = Command::new("/bin/sleep")
            .arg0(marker)
            .arg("1000")
            .uid(u.uid.as_raw())
            .gid(u.gid.as_raw())
            .spawn()
            .unwrap();
        Sentinel(child)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything a script could write to name a kill target: the old frame on fd 3, a frame
/// with the attempt's own nonce on every descriptor it has, and (deliberately, knowing the
/// wrapper's internals) straight into the relay's copy of the channel.
const FORGE_PID: &str = r#"echo 'csm:pid 1' >&3
for fd in 1 2 {3..255}; do printf '\ncsm:%s pid 1\ncsm:pid 1\n' "$__csm_n" >&$fd; done 2>/dev/null
printf '\ncsm:%s pid 1\n' "$__csm_n" >"/proc/$__csm_rp/fd/$__csm_ch"
bash -c 'for fd in {3..255}; do echo "csm:pid 1" >&$fd; done' 2>/dev/null
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_cannot_choose_what_the_agent_kills() {
    const NAME: &str = "a_script_cannot_choose_what_the_agent_kills";
    if !nix::unistd::geteuid().is_root() {
        // As another user the login user is the test's own: a regression would kill -1 it.
        return support::skip::skip(NAME, "needs root, so that the login user is not this one");
    }
    let sshd = Sshd::start();
    let exec = executor(&sshd);
    let s = marker("sentinel");
    let _sentinel = Sentinel::start(&sshd, &s);
    assert!(wait_until(POLL_LIMIT, || alive_with(&s)).await);
    let m = marker("forger");
    // At the deadline, and at clean-up after success.
    for tail in ["sleep 1000", "secret=ok"] {
        let script = format!("{FORGE_PID}(exec -a {m} sleep 1000) &\n{tail}");
        let o = run(&exec, &job_in(&script, "/tmp", Duration::from_secs(3))).await;
        if tail == "secret=ok" {
            assert_eq!(secret_of(&o), b"ok");
        } else {
            assert_eq!(o.result.as_ref().unwrap_err().kind(), ErrorKind::Timeout);
        }
        assert!(wait_until(POLL_LIMIT, || !alive_with(&m)).await, "{tail}");
        assert!(
            alive_with(&s),
            "{tail}: the agent killed a process outside the task"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_cannot_forge_the_result() {
    let sshd = Sshd::start();
    let exec = executor(&sshd);
    let o = run(
        &exec,
        &job("bash -c 'for fd in {1..255}; do printf \"csm:done 0 4\\nEVIL\\ncsm:0 done 0\\nEVIL\\0\" >&$fd; done' 2>/dev/null\nsecret=real-value"),
    )
    .await;
    assert_eq!(secret_of(&o), b"real-value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fd3_idioms_neither_leak_nor_break() {
    let sshd = Sshd::start();
    let exec = executor(&sshd);
    let o = run(
        &exec,
        &job("exec 3>&1 1>&2\nsecret=idiom-secret-1\necho visible >&3"),
    )
    .await;
    assert_eq!(secret_of(&o), b"idiom-secret-1");
    let log = o.stderr.as_bytes();
    assert!(
        contains(log, b"visible"),
        "{}",
        String::from_utf8_lossy(log)
    );
    assert!(!contains(log, b"csm:") && !contains(log, b"idiom-secret-1"));

    let dir = user_dir(&sshd);
    let file = dir.path().join("x");
    let o = run(
        &exec,
        &job(&format!("exec 3>{}\nsecret=idiom-secret-2", file.display())),
    )
    .await;
    assert_eq!(secret_of(&o), b"idiom-secret-2");
    assert!(!contains(&std::fs::read(&file).unwrap(), b"idiom-secret-2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_the_script_starts_outlives_a_successful_task() {
    let sshd = Sshd::start();
    let exec = executor(&sshd);
    let m: Vec<String> = ["noterm", "setsid", "setm", "daemon"]
        .iter()
        .map(|l| marker(l))
        .collect();
    let script = format!(
        "(trap '' TERM; exec -a {} sleep 1000) &\n\
         setsid -f bash -c 'exec -a {} sleep 1000' </dev/null >/dev/null 2>&1\n\
         set -m; (exec -a {} sleep 1000) & set +m\n\
         ( (exec -a {} sleep 1000) & )\n\
         for m in {} {} {} {}; do until pgrep -f \"$m\" >/dev/null; do :; done; done\n\
         secret=\"$$ $CSM_AGENT_TASK\"",
        m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]
    );
    let o = run(&exec, &job(&script)).await;
    let s = String::from_utf8(secret_of(&o)).unwrap();
    let (sid, task) = s.split_once(' ').unwrap();
    let sid: i32 = sid.parse().unwrap();
    for x in &m {
        assert!(
            wait_until(POLL_LIMIT, || !alive_with(x)).await,
            "{x} survived"
        );
    }
    // Nor the relay (it shares the script's session), nor anything else of the task.
    assert!(
        wait_until(POLL_LIMIT, || task_processes(sid, task).is_empty()).await,
        "{:?} survived",
        task_processes(sid, task)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapees_die_with_a_timed_out_task() {
    let sshd = Sshd::start();
    let exec = executor(&sshd);
    let m: Vec<String> = ["setsid", "setm"].iter().map(|l| marker(l)).collect();
    let script = format!(
        "setsid -f bash -c 'exec -a {} sleep 1000' </dev/null >/dev/null 2>&1\n\
         set -m; (trap '' TERM; exec -a {} sleep 1000) & set +m\n\
         sleep 1000",
        m[0], m[1]
    );
    let o = run(&exec, &job_in(&script, "/tmp", Duration::from_secs(2))).await;
    assert_eq!(o.result.as_ref().unwrap_err().kind(), ErrorKind::Timeout);
    for x in &m {
        assert!(
            wait_until(POLL_LIMIT, || !alive_with(x)).await,
            "{x} survived"
        );
    }
}

/// The script kills its relay and its own shell, closes every descriptor it has, or `exec`s
/// a program that outlives the deadline, after starting an escapee: no result can come, and
/// by the time the task returns nothing the script started is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_kills_its_relay_and_shell_leaves_nothing_running() {
    let sshd = Sshd::start();
    let exec = executor(&sshd);
    for (label, end, kind) in [
        ("kill", "kill -9 \"$__csm_rp\" $$", ErrorKind::ScriptFailed),
        (
            "close",
            "for fd in /proc/$$/fd/*; do eval \"exec ${fd##*/}>&-\"; done\nsleep 1000",
            ErrorKind::Timeout,
        ),
        ("exec", "exec sleep 1000", ErrorKind::Timeout),
    ] {
        let m = marker(label);
        let script = format!(
            "setsid -f bash -c 'exec -a {m} sleep 1000' </dev/null >/dev/null 2>&1\n\
             until pgrep -f {m} >/dev/null; do :; done\nsecret=x\n{end}"
        );
        let t0 = Instant::now();
        let o = run(&exec, &job_in(&script, "/tmp", Duration::from_secs(3))).await;
        let e = o.result.as_ref().unwrap_err();
        assert_eq!(e.kind(), kind, "{label}: {e}");
        if kind == ErrorKind::ScriptFailed {
            assert!(matches!(e, ExecError::NoReport { .. }), "{label}: {e}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{label}: {:?}",
            t0.elapsed()
        );
        // Killed before the task returned; signal delivery takes a moment.
        assert!(
            wait_until(Duration::from_secs(2), || !alive_with(&m)).await,
            "{label}: {m} outlived the task"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_ending_in_wait_is_not_held_by_the_wrapper() {
    let sshd = Sshd::start();
    let exec = executor(&sshd);
    let t0 = Instant::now();
    let o = run(
        &exec,
        &job_in(
            "(exit 0) &\nwait\nsecret=waited",
            "/tmp",
            Duration::from_secs(20),
        ),
    )
    .await;
    assert_eq!(secret_of(&o), b"waited");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_tmpdir_is_private_and_removed() {
    let sshd = Sshd::start();
    let exec = executor(&sshd);
    let body = "y".repeat(150_000);
    let o = run(
        &exec,
        &job(&format!(
            "n=$(cat <<EOF | wc -c\n{body}\nEOF\n)\ntouch \"$TMPDIR/left\"\nsecret=\"$(stat -c %a \"$TMPDIR\") $n $TMPDIR\""
        )),
    )
    .await;
    let s = String::from_utf8(secret_of(&o)).unwrap();
    let mut f = s.split(' ');
    assert_eq!(f.next(), Some("700"), "{s}");
    assert_eq!(f.next(), Some("150001"), "{s}");
    let tmp = f.next().unwrap().to_string();
    if Path::new("/dev/shm").is_dir() {
        assert!(tmp.starts_with("/dev/shm/"), "{s}");
    }
    assert!(
        wait_until(POLL_LIMIT, || !Path::new(&tmp).exists()).await,
        "{tmp} was left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_secret_is_secret_too_large_and_not_retried() {
    let sshd = Sshd::start();
    let exec = executor(&sshd);
    let mut j = job("secret=$(head -c 5000 /dev/zero | tr '\\0' a)");
    j.limits.max_secret = 4096;
    let policy = RetryPolicy {
        attempts: 3,
        delay: Duration::ZERO,
    };
    let o = exec::run(&exec, &j, &policy, &CancellationToken::new()).await;
    assert_eq!(
        o.result.as_ref().unwrap_err().kind(),
        ErrorKind::SecretTooLarge
    );
    assert_eq!(o.attempts, 1);
    // A large one under the limit is exact.
    let o = run(
        &exec,
        &job("secret=$(head -c 1048576 /dev/zero | tr '\\0' z)"),
    )
    .await;
    assert_eq!(secret_of(&o), vec![b'z'; 1 << 20]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nologin_shell_is_remote_shell_and_not_retried() {
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec!["ForceCommand /usr/sbin/nologin".into()],
        ..SshdOptions::default()
    });
    let exec = executor(&sshd);
    let policy = RetryPolicy {
        attempts: 3,
        delay: Duration::ZERO,
    };
    let o = exec::run(&exec, &job("secret=x"), &policy, &CancellationToken::new()).await;
    let e = o.result.as_ref().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RemoteShell, "{e}");
    assert_eq!(o.attempts, 1);
    let msg = e.to_string();
    assert!(msg.contains("currently not available"), "{msg}");
    assert!(msg.contains("exit status 1"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_shell_that_prints_to_stdout_does_not_break_the_task() {
    // As a chatty .bashrc would, with a forged frame and no final newline among it.
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec![
            "ForceCommand echo 'Welcome!'; echo 'csm:pid 1'; printf 'no newline'; eval \"$SSH_ORIGINAL_COMMAND\"".into(),
        ],
        ..SshdOptions::default()
    });
    let exec = executor(&sshd);
    let o = run(&exec, &job("secret=after-noise")).await;
    assert_eq!(secret_of(&o), b"after-noise");
    // Twice on the pooled connection.
    let o = run(&exec, &job("secret=again")).await;
    assert_eq!(secret_of(&o), b"again");
}
