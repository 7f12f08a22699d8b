//! Connecting: refused ports, unresolvable and unanswered names, silent servers, and
//! cancellation or a task deadline during the handshake, each `ssh_connect` or
//! `cancelled`, fast, and naming host:port.

mod support;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use csm_agent::exec::ssh::{SshConfig, SshExecutor, SshPool};
use csm_agent::exec::{self, RetryPolicy};
use csm_agent::secret::Variables;
use csm_agent::ErrorKind;
use support::ssh::*;
use support::sshd::*;
use tokio_util::sync::CancellationToken;

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
