//! The local executor's ready bash (`LocalExecutor::with_spare`, as the agent runs it),
//! against real `/bin/bash`: the next attempt runs in it, it holds nothing of any task, one
//! killed while it waits is replaced, dropping the executor kills it and removes its
//! directory. (When its agent dies it exits and removes its directory itself:
//! `local_spare_orphan.rs`, a binary of its own.)
//!
//! Each test gives its executor a private base directory (`XDG_RUNTIME_DIR`), so the ready
//! bash is the child whose `TMPDIR` lies under it.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use csm_agent::exec::local::{EnvPolicy, LocalExecutor};
use csm_agent::exec::{self, Job, Outcome, RetryPolicy};
use csm_agent::secret::{secret_bytes, Variables};
use csm_agent::template::Template;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(10);
const VALUE: &[u8] = b"spare-test-value-7f3a9c";

/// A warm executor whose attempts' directories go under `base`.
fn executor(base: &Path) -> LocalExecutor {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.retain(|(k, _)| k != "XDG_RUNTIME_DIR");
    env.push(("XDG_RUNTIME_DIR".into(), base.to_str().unwrap().into()));
    LocalExecutor::from_env(&EnvPolicy::default(), env).with_spare()
}

/// Runs a script that binds `{{v}}` (to [`VALUE`]) and reports its bash's pid.
async fn run_pid(exec: &LocalExecutor, dir: &Path) -> (Outcome, i32) {
    let mut values = Variables::new();
    values.insert("v", secret_bytes(VALUE.to_vec()));
    let rendered = Template::from_script("x=${v}\nsecret=$$")
        .render(&values, &Variables::new())
        .unwrap();
    let job = Job::new(rendered, dir.to_str().unwrap(), LIMIT, &values);
    let policy = RetryPolicy {
        attempts: 1,
        delay: Duration::ZERO,
    };
    let o = exec::run(exec, &job, &policy, &CancellationToken::new()).await;
    let pid = match &o.result {
        Ok(s) => std::str::from_utf8(s.expose_secret())
            .unwrap()
            .parse()
            .unwrap(),
        Err(e) => panic!("the attempt failed: {e}"),
    };
    (o, pid)
}

/// This process's children (from every thread).
fn children() -> Vec<i32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

fn environ(pid: i32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default()
}

/// The ready bash of the executor whose base is `base`: its pid and its `TMPDIR`.
fn ready_bash(base: &Path) -> Option<(i32, PathBuf)> {
    let key = format!("TMPDIR={}/", base.display());
    children().into_iter().find_map(|pid| {
        let env = environ(pid);
        let tmp = env
            .split(|&b| b == 0)
            .find_map(|kv| kv.strip_prefix(b"TMPDIR="))
            .map(|v| PathBuf::from(String::from_utf8_lossy(v).into_owned()))?;
        env.split(|&b| b == 0)
            .any(|kv| kv.starts_with(key.as_bytes()))
            .then_some((pid, tmp))
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_attempt_runs_in_the_ready_bash_which_holds_nothing_of_a_task() {
    let base = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(base.path());
    exec.warm_up().await;
    let (ready, tmp) = ready_bash(base.path()).expect("a ready bash after warm_up");
    // Private, empty, and holding no trace of a task before one arrives.
    let meta = std::fs::metadata(&tmp).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o700
    );
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);

    let (_, pid) = run_pid(&exec, dir.path()).await;
    assert_eq!(pid, ready, "the attempt ran in the bash that was ready");
    assert!(!tmp.exists(), "the attempt's directory goes with it");

    // The next one is ready again, and nothing of the last task reached it: not its argv,
    // not its environment, not its directory.
    exec.warm_up().await;
    let (next, next_tmp) = ready_bash(base.path()).expect("a new ready bash");
    assert_ne!(next, ready);
    let cmdline = std::fs::read(format!("/proc/{next}/cmdline")).unwrap();
    assert!(!contains(&cmdline, VALUE));
    assert!(!contains(&environ(next), VALUE));
    assert_eq!(std::fs::read_dir(&next_tmp).unwrap().count(), 0);
    let (_, pid) = run_pid(&exec, dir.path()).await;
    assert_eq!(pid, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attempts_each_get_a_bash_of_their_own() {
    let base = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(base.path());
    exec.warm_up().await;
    let runs = (0..8).map(|_| run_pid(&exec, dir.path()));
    let pids: Vec<i32> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let mut unique = pids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), pids.len(), "{pids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_bash_killed_while_it_waits_is_replaced() {
    let base = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(base.path());
    exec.warm_up().await;
    let (ready, _) = ready_bash(base.path()).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(ready), nix::sys::signal::SIGKILL).unwrap();
    // Our child: dead, but not reaped until the executor looks.
    assert!(support::exits_by(ready, Instant::now() + LIMIT));
    let (o, pid) = run_pid(&exec, dir.path()).await;
    assert_ne!(pid, ready);
    assert_eq!(o.attempts, 1, "no attempt was spent on the dead bash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_executor_kills_the_ready_bash_and_removes_its_directory() {
    let base = tempfile::tempdir().unwrap();
    let exec = executor(base.path());
    exec.warm_up().await;
    let (ready, tmp) = ready_bash(base.path()).unwrap();
    drop(exec);
    assert!(
        support::exits_by(ready, Instant::now() + LIMIT),
        "the ready bash was killed"
    );
    // The directory goes in the same drop, right after the kill; the drop may have run
    // on the thread that started the bash, so look until the deadline.
    let deadline = Instant::now() + LIMIT;
    while tmp.exists() && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(!tmp.exists(), "{} is left behind", tmp.display());
}
