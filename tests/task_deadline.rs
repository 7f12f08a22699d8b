//! One deadline per task, across all attempts, with real bash: through `task::prepare` and
//! `task::run` (the API the CLI and the agent share), and through `exec::run_until`.
//!
//! Every script appends a line to a file in its commandPath, so each test counts the
//! attempts that really started, beside `Outcome::attempts`. Timing assertions are
//! generous bounds that only tell "cut by the deadline" from "ran every attempt in full".

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use csm_agent::exec::local::LocalExecutor;
use csm_agent::exec::ssh::{SshConfig, SshPool};
use csm_agent::exec::{self, ExecError, Job, Outcome, RetryPolicy};
use csm_agent::secret::Variables;
use csm_agent::task::{self, Executors, Target, TaskSpec};
use csm_agent::template::Template;
use csm_agent::{ErrorKind, Kind};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

fn executors() -> Executors {
    Executors {
        local: LocalExecutor::default(),
        ssh: SshPool::new(SshConfig::default()),
    }
}

/// A spec for `script` (which first records its start in `started`), run in `dir`.
fn spec(
    dir: &Path,
    script: &str,
    timeout: Duration,
    attempts: u32,
    delay: Duration,
    deadline: Option<Duration>,
) -> TaskSpec {
    let script = format!("echo started >> started\n{script}");
    let mut spec = TaskSpec::new(
        Template::from_script(script),
        Target::Local {
            command_path: dir.to_str().unwrap().into(),
        },
    );
    spec.timeout = Some(timeout);
    spec.retry = RetryPolicy { attempts, delay };
    spec.deadline = deadline;
    spec.limits.grace = Duration::from_millis(300);
    spec
}

fn started(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("started"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

async fn run(spec: TaskSpec) -> (Outcome, Duration) {
    let prepared = task::prepare(spec).expect("prepare");
    let t0 = Instant::now();
    let o = task::run(&prepared, &executors(), &CancellationToken::new()).await;
    (o, t0.elapsed())
}

fn kind(o: &Outcome) -> ErrorKind {
    match &o.result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.kind(),
    }
}

/// Three attempts of 1 s each cannot fit in a 2.5 s deadline: two time out in full, and the
/// third is not started, because only ~0.5 s would be left for it.
#[tokio::test]
async fn attempts_that_cannot_fit_the_deadline_are_not_started() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        "sleep 100",
        Duration::from_secs(1),
        3,
        Duration::ZERO,
        Some(Duration::from_millis(2500)),
    );
    let (o, took) = run(s).await;
    assert_eq!(kind(&o), ErrorKind::Timeout);
    assert_eq!(o.attempts, 2);
    assert_eq!(started(dir.path()), 2);
    assert!(took < Duration::from_millis(2500 + 1500), "took {took:?}");

    // Positive control: without the deadline all three run.
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        "sleep 100",
        Duration::from_secs(1),
        3,
        Duration::ZERO,
        None,
    );
    let (o, took) = run(s).await;
    assert_eq!((kind(&o), o.attempts), (ErrorKind::Timeout, 3));
    assert_eq!(started(dir.path()), 3);
    assert!(took >= Duration::from_secs(3), "took {took:?}");
}

/// An attempt whose own timeout is longer than the time left is cut at the deadline.
#[tokio::test]
async fn an_attempt_never_runs_past_the_task_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        "sleep 100",
        Duration::from_secs(30),
        3,
        Duration::ZERO,
        Some(Duration::from_millis(800)),
    );
    let (o, took) = run(s).await;
    assert_eq!(kind(&o), ErrorKind::Timeout);
    assert_eq!(o.attempts, 1);
    assert_eq!(started(dir.path()), 1);
    // 0.8 s, plus the kill and drain; nowhere near the 30 s attempt timeout.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// A fast failure whose retry pause would not leave a useful attempt before the deadline
/// ends the task at once with that failure: no pause towards the deadline, and the error is
/// the script's, not `timeout`.
#[tokio::test]
async fn no_retry_when_its_pause_would_eat_the_deadline_and_the_last_error_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        "echo nope >&2; exit 7",
        Duration::from_secs(5),
        3,
        Duration::from_secs(3600),
        Some(Duration::from_secs(3)),
    );
    let (o, took) = run(s).await;
    assert_eq!(kind(&o), ErrorKind::ScriptFailed);
    let msg = o.result.as_ref().unwrap_err().to_string();
    assert!(msg.contains("status 7"), "{msg}");
    assert_eq!(o.attempts, 1);
    assert_eq!(started(dir.path()), 1);
    assert!(
        took < Duration::from_secs(2),
        "paused towards the deadline: {took:?}"
    );
}

/// With time to spare, the deadline changes nothing: failures are retried as usual, and a
/// later attempt can succeed.
#[tokio::test]
async fn retries_run_as_usual_within_a_generous_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        "exit 3",
        Duration::from_secs(5),
        3,
        Duration::from_millis(50),
        Some(Duration::from_secs(60)),
    );
    let (o, _) = run(s).await;
    assert_eq!((kind(&o), o.attempts), (ErrorKind::ScriptFailed, 3));
    assert_eq!(started(dir.path()), 3);

    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        "if [ -e failed-once ]; then secret=second-time; else : > failed-once; exit 1; fi",
        Duration::from_secs(5),
        3,
        Duration::from_millis(50),
        Some(Duration::from_secs(60)),
    );
    let (o, _) = run(s).await;
    let secret = o.result.as_ref().expect("second attempt succeeds");
    assert_eq!(secret.expose_secret(), b"second-time");
    assert_eq!(o.attempts, 2);
}

/// A deadline that has already passed starts no attempt at all.
#[tokio::test]
async fn a_passed_deadline_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = Template::from_script("echo started >> started\nsecret=x");
    let rendered = t.render(&Variables::new(), &Variables::new()).unwrap();
    let job = Job::new(
        rendered,
        dir.path().to_str().unwrap(),
        Duration::from_secs(5),
        &Variables::new(),
    );
    let o = exec::run_until(
        &LocalExecutor::default(),
        &job,
        &RetryPolicy::default(),
        Some(Instant::now()),
        &CancellationToken::new(),
    )
    .await;
    assert!(matches!(o.result, Err(ExecError::DeadlinePassed)));
    assert_eq!(kind(&o), ErrorKind::Timeout);
    assert_eq!(o.attempts, 0);
    assert_eq!(started(dir.path()), 0);

    // Positive control: the same job with time left runs and records its start.
    let o = exec::run_until(
        &LocalExecutor::default(),
        &job,
        &RetryPolicy::default(),
        Some(Instant::now() + Duration::from_secs(30)),
        &CancellationToken::new(),
    )
    .await;
    assert!(o.result.is_ok());
    assert_eq!(started(dir.path()), 1);
}

/// Cancellation still wins during a retry pause under a deadline.
#[tokio::test]
async fn cancelling_during_the_pause_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        "exit 1",
        Duration::from_secs(5),
        3,
        Duration::from_secs(20),
        Some(Duration::from_secs(60)),
    );
    let prepared = Arc::new(task::prepare(s).unwrap());
    let cancel = CancellationToken::new();
    let (p, c) = (prepared.clone(), cancel.clone());
    let handle = tokio::spawn(async move { task::run(&p, &executors(), &c).await });
    // Wait for the first attempt to have run (its line appears), then cancel in the pause.
    let limit = Instant::now() + Duration::from_secs(10);
    while started(dir.path()) == 0 {
        assert!(Instant::now() < limit, "the first attempt never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    let o = handle.await.unwrap();
    assert_eq!(kind(&o), ErrorKind::Cancelled);
    assert_eq!(o.attempts, 1);
}
