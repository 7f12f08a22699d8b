//! SSH executor latency and throughput against the OpenSSH client, measured in the same run
//! against the same real sshd (the test fixture, on loopback).
//!
//! - **Warm pool**: per-task latency through a pool that already holds a connection,
//!   against `ssh` over a warmed ControlMaster connection and against a fresh `ssh` per
//!   call, each running the equivalent command. To show where our time goes, also the
//!   libssh2 floor: a bare exec channel per call on one blocking session, running the same
//!   command under the login shell alone, under a second `bash --noprofile --norc` as our
//!   remote bootstrap does, and our exact remote command and wrapped script (prologue,
//!   temporary directory, relay, result frame, clean-up) without the executor around them.
//! - **Throughput**: tasks/s with 50 concurrent tasks to one host through one pool; for
//!   reference, 50 concurrent `ssh` clients over one ControlMaster.
//! - **New connection**: a task through a fresh pool (TCP, key exchange, host-key check,
//!   authentication, then the task) against a fresh `ssh`. The two alternate, so drift in
//!   machine load hits both alike.
//!
//! `cargo bench --bench ssh`. Counts: CSM_BENCH_WARM (300), CSM_BENCH_FRESH (30),
//! CSM_BENCH_TASKS (1000).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csm_agent::exec::ssh::{
    HostKeyPolicy, SshAuth, SshConfig, SshCredential, SshExecutor, SshPool, SshTarget,
};
use csm_agent::exec::{self, wrapper, Job, RetryPolicy};
use csm_agent::secret::Variables;
use csm_agent::template::Template;
use secrecy::{ExposeSecret, SecretString};
use support::sshd::{KeyKind, Sshd, SshdOptions};
use tokio_util::sync::CancellationToken;

mod common;
use common::{ms, pct};

/// The task, as a template and as the remote command `ssh` runs.
const SCRIPT: &str = "secret=abc";
const SSH_COMMAND: &str = "secret=abc; printf %s \"$secret\"";
const CONCURRENCY: usize = 50;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn target(sshd: &Sshd) -> SshTarget {
    let key = sshd.client_key(KeyKind::Ed25519);
    SshTarget {
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
    }
}

fn job() -> Job {
    let rendered = Template::from_script(SCRIPT)
        .render(&Variables::new(), &Variables::new())
        .unwrap();
    Job::new(rendered, "/tmp", Duration::from_secs(30), &Variables::new())
}

const ONCE: RetryPolicy = RetryPolicy {
    attempts: 1,
    delay: Duration::ZERO,
};

/// One task through `exec`; panics unless it returns `abc`.
async fn task(exec: &SshExecutor) -> Duration {
    let t = Instant::now();
    let o = exec::run(exec, &job(), &ONCE, &CancellationToken::new()).await;
    match o.result {
        Ok(s) => assert_eq!(s.expose_secret(), b"abc"),
        Err(e) => panic!("task failed: {e}"),
    }
    t.elapsed()
}

/// How an `ssh` call connects.
#[derive(Clone, Copy)]
enum Via<'a> {
    /// A fresh connection.
    Fresh,
    /// The ControlMaster at this path, starting it if needed.
    Master(&'a Path),
    /// Only as a client of the (already running) ControlMaster at this path.
    Client(&'a Path),
}

/// The system `ssh` with the ed25519 key and strict host keys.
fn ssh(sshd: &Sshd, via: Via<'_>) -> Command {
    let key = sshd.client_key(KeyKind::Ed25519);
    let mut cmd = Command::new(support::sshd::SSH);
    cmd.args(["-F", "/dev/null", "-T", "-i"])
        .arg(&key.path)
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .args(["-o", "StrictHostKeyChecking=yes", "-o"])
        .arg(format!(
            "UserKnownHostsFile=\"{}\"",
            sshd.known_hosts_path().display()
        ))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ]);
    match via {
        Via::Master(path) => {
            cmd.args(["-o", "ControlMaster=auto", "-o", "ControlPersist=60", "-o"])
                .arg(format!("ControlPath={}", path.display()));
        }
        Via::Client(path) => {
            cmd.args(["-o", "ControlMaster=no", "-o"])
                .arg(format!("ControlPath={}", path.display()));
        }
        Via::Fresh => {
            cmd.args(["-o", "ControlPath=none"]);
        }
    }
    cmd.arg("-p")
        .arg(sshd.port().to_string())
        .arg("-l")
        .arg(sshd.user())
        .arg(sshd.host())
        .arg(SSH_COMMAND)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

fn ssh_once(sshd: &Sshd, via: Via<'_>) -> Duration {
    let t = Instant::now();
    let out = ssh(sshd, via).output().unwrap();
    assert!(out.status.success(), "ssh failed: {out:?}");
    assert_eq!(out.stdout, b"abc");
    t.elapsed()
}

/// A blocking libssh2 session, authenticated, with TCP_NODELAY: the floor's connection.
fn raw_session(sshd: &Sshd) -> ssh2::Session {
    let tcp = std::net::TcpStream::connect((sshd.host(), sshd.port())).unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut s = ssh2::Session::new().unwrap();
    s.set_tcp_stream(tcp);
    s.handshake().unwrap();
    let key = sshd.client_key(KeyKind::Ed25519);
    s.userauth_pubkey_memory(sshd.user(), None, &key.private_pem, None)
        .unwrap();
    s
}

/// One bare exec channel running `cmd` with `input` on its stdin; stdout must hold `abc`
/// (as the plain command prints it, or NUL-terminated in the wrapper's result frame).
fn raw_exec(s: &ssh2::Session, cmd: &str, input: &[u8]) -> Duration {
    use std::io::{Read, Write};
    let t = Instant::now();
    let mut ch = s.channel_session().unwrap();
    ch.exec(cmd).unwrap();
    ch.write_all(input).unwrap();
    ch.send_eof().unwrap();
    let mut out = Vec::new();
    ch.read_to_end(&mut out).unwrap();
    ch.wait_close().unwrap();
    assert!(
        out.ends_with(b"abc") || out.windows(4).any(|w| w == b"abc\0"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    t.elapsed()
}

fn line(name: &str, v: &mut [Duration]) -> Duration {
    let (p50, p90) = (pct(v, 0.5), pct(v, 0.9));
    println!(
        "  {name:<44} p50 {:>8.2} ms  p90 {:>8.2} ms  (n={})",
        ms(p50),
        ms(p90),
        v.len()
    );
    p50
}

/// `total` tasks, `CONCURRENCY` at a time, through one pool; returns tasks/s.
async fn throughput(exec: Arc<SshExecutor>, total: usize) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (exec, next) = (exec.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    task(&exec).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    total as f64 / t.elapsed().as_secs_f64()
}

/// `total` `ssh` calls over one ControlMaster, `CONCURRENCY` at a time; returns calls/s.
fn ssh_throughput(sshd: &Sshd, control: &Path, total: usize) -> f64 {
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CONCURRENCY {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    ssh_once(sshd, Via::Client(control));
                }
            });
        }
    });
    total as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let warm_n = count("CSM_BENCH_WARM", 300);
    let fresh_n = count("CSM_BENCH_FRESH", 30);
    let total = count("CSM_BENCH_TASKS", 1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // MaxSessions above the concurrency, so that the ControlMaster floor serves all 50 calls
    // over its one connection instead of falling back to fresh connections.
    let sshd = Sshd::start_with(SshdOptions {
        max_sessions: 64,
        ..SshdOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("cm");
    let t = target(&sshd);
    println!(
        "SSH executor vs OpenSSH client, sshd on 127.0.0.1:{} ({} cores)",
        sshd.port(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Warm pool vs ControlMaster vs fresh ssh, one at a time, interleaved.
    let pool = rt.block_on(async { SshPool::new(SshConfig::default()) });
    let exec = Arc::new(SshExecutor::new(pool.clone(), t.clone()));
    for _ in 0..20 {
        rt.block_on(task(&exec));
        ssh_once(&sshd, Via::Master(&control));
    }
    let raw = raw_session(&sshd);
    let double = format!("exec bash --noprofile --norc -c '{SSH_COMMAND}'");
    // Our remote command and stdin, without the executor around them.
    let bootstrap = wrapper::remote_command();
    let session = wrapper::Session::new();
    let wrapped = wrapper::script_input(
        &session,
        wrapper::Mode::Ssh {
            timeout: Duration::from_secs(30),
            grace: Duration::from_secs(2),
        },
        "/tmp",
        SCRIPT.as_bytes(),
    );
    let (mut ours, mut cm) = (Vec::new(), Vec::new());
    let (mut floor1, mut floor2) = (Vec::new(), Vec::new());
    let mut floor3 = Vec::new();
    for i in 0..warm_n {
        if i % 2 == 0 {
            ours.push(rt.block_on(task(&exec)));
            cm.push(ssh_once(&sshd, Via::Master(&control)));
            floor1.push(raw_exec(&raw, SSH_COMMAND, b""));
            floor2.push(raw_exec(&raw, &double, b""));
            floor3.push(raw_exec(&raw, &bootstrap, &wrapped));
        } else {
            floor3.push(raw_exec(&raw, &bootstrap, &wrapped));
            floor2.push(raw_exec(&raw, &double, b""));
            floor1.push(raw_exec(&raw, SSH_COMMAND, b""));
            cm.push(ssh_once(&sshd, Via::Master(&control)));
            ours.push(rt.block_on(task(&exec)));
        }
    }
    drop(raw);
    // New connections: a fresh pool per task vs a fresh ssh per call.
    let (mut ours_new, mut ssh_new) = (Vec::new(), Vec::new());
    for i in 0..fresh_n {
        let fresh = || {
            rt.block_on(async {
                let exec = SshExecutor::new(SshPool::new(SshConfig::default()), t.clone());
                task(&exec).await
            })
        };
        if i % 2 == 0 {
            ours_new.push(fresh());
            ssh_new.push(ssh_once(&sshd, Via::Fresh));
        } else {
            ssh_new.push(ssh_once(&sshd, Via::Fresh));
            ours_new.push(fresh());
        }
    }

    println!("per-task latency, one at a time:");
    let o50 = line("csm-agent, warm pool", &mut ours);
    let c50 = line("ssh over a warm ControlMaster", &mut cm);
    let f50 = line("fresh ssh per call", &mut ssh_new);
    let n50 = line("csm-agent, new connection (fresh pool)", &mut ours_new);
    line("libssh2 floor: exec channel, login shell", &mut floor1);
    line("libssh2 floor: exec channel, + bash --norc", &mut floor2);
    line("libssh2 floor: exec channel, our wrapper", &mut floor3);
    println!(
        "  warm pool / ControlMaster p50: {:.3}  (goal <= 0.5)",
        o50.as_secs_f64() / c50.as_secs_f64()
    );
    println!(
        "  warm pool / fresh ssh p50:     {:.3}",
        o50.as_secs_f64() / f50.as_secs_f64()
    );
    println!(
        "  new connection / fresh ssh p50: {:.3}  (goal <= 1.0)",
        n50.as_secs_f64() / f50.as_secs_f64()
    );

    println!("throughput, {CONCURRENCY} concurrent:");
    let ours_tput = rt.block_on(throughput(exec.clone(), total));
    let ssh_total = (total / 4).max(CONCURRENCY);
    let cm_tput = ssh_throughput(&sshd, &control, ssh_total);
    println!(
        "  csm-agent, one pool (max_sessions_per_target {}): {ours_tput:>7.0} tasks/s ({total} tasks; goal >= 300)",
        pool.config().max_sessions_per_target
    );
    println!("  ssh over one ControlMaster:                     {cm_tput:>7.0} calls/s ({ssh_total} calls)");
    println!("  ratio: {:.2}x", ours_tput / cm_tput);

    // Stop the ControlMaster before sshd goes away.
    let _ = Command::new(support::sshd::SSH)
        .args(["-O", "exit", "-o"])
        .arg(format!("ControlPath={}", control.display()))
        .arg(sshd.host())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
