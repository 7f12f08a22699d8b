//! The SSH connection pool against a real sshd: its bound under concurrency, dead and
//! silent pooled connections replaced without a failure, a dropped task holding its slot,
//! and expiry.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use csm_agent::exec::ssh::{SshConfig, SshExecutor, SshPool};
use csm_agent::exec::{self, RetryPolicy};
use support::ssh::*;
use support::sshd::*;
use tokio_util::sync::CancellationToken;

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
