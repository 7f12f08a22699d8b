//! Remote clean-up over SSH: the deadline, cancellation and a dropped task kill the remote
//! process tree over a second channel, and the wrapper's watchdog does it when the agent is
//! gone. The sshd runs on this machine, so /proc shows whether anything survived.

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csm_agent::exec::ssh::SshExecutor;
use csm_agent::exec::{self};
use csm_agent::secret::Variables;
use csm_agent::ErrorKind;
use support::ssh::*;
use support::sshd::*;
use tokio_util::sync::CancellationToken;

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
