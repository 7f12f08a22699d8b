//! Running rendered scripts: the [`Executor`] trait, the job description, attempt
//! interpretation and retries.
//!
//! An executor runs one attempt of one job and reports what the wrapper saw. Everything
//! that is the same wherever the script ran stays here: how a report becomes a secret or an
//! error, the retry policy, and the final masking of logs with the returned secret.
//! [`local`] runs on this host; [`ssh`] runs on a target host.
//!
//! Executors are shared (`Arc<dyn Executor>`) and run many jobs concurrently; each attempt
//! takes a [`CancellationToken`] and kills its process tree when cancelled or dropped.

pub mod cgroup;
mod channel;
pub mod frames;
pub(crate) mod kill;
pub mod local;
mod reap;
mod spawn;
pub mod ssh;
mod tmpdir;
pub mod wrapper;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorKind, Kind};
use crate::mask::{CapturedLog, Masker};
use crate::secret::{SecretBytes, Variables};
use crate::template::RenderedScript;
use frames::{FrameError, Report};

/// Harness's default working directory.
pub const DEFAULT_COMMAND_PATH: &str = "/tmp";
/// Harness FirstGen's per-attempt limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How many bytes of masked stderr an error message quotes.
const ERROR_TAIL: usize = 512;

/// Resource bounds for one attempt.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of stdout kept; the rest is drained and counted.
    pub stdout_cap: usize,
    /// Bytes of stderr kept.
    pub stderr_cap: usize,
    /// Largest secret accepted.
    pub max_secret: usize,
    /// Time between SIGTERM and SIGKILL at the deadline.
    pub grace: Duration,
    /// How long to keep draining output after the script has exited, for a descendant that
    /// escaped the process group while holding a pipe.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            stdout_cap: 1 << 20,
            stderr_cap: 1 << 20,
            max_secret: 4 << 20,
            grace: Duration::from_secs(2),
            drain: Duration::from_millis(500),
        }
    }
}

/// One secret fetch, ready to run: the rendered script and where and how to run it.
/// Cloning is cheap: the script and the masker are shared.
#[derive(Debug, Clone)]
pub struct Job {
    /// The rendered script, values bound. Shared, so that an attempt cut short by the task
    /// deadline can run as a copy of the job with a shorter timeout.
    pub script: Arc<RenderedScript>,
    /// The working directory on the host that runs the script.
    pub command_path: String,
    /// Per-attempt deadline.
    pub timeout: Duration,
    /// Output and timing bounds.
    pub limits: Limits,
    /// Masks every variable value; the secret is added once it is known.
    pub masker: Arc<Masker>,
}

impl Job {
    /// A job with default limits, masking every value in `values` (see
    /// [`Masker::for_variables`] for values too short to mask).
    pub fn new(
        script: RenderedScript,
        command_path: impl Into<String>,
        timeout: Duration,
        values: &Variables,
    ) -> Job {
        let masker = Arc::new(Masker::for_variables(
            values.iter().map(|(_, v)| v.expose_secret()),
        ));
        Job {
            script: Arc::new(script),
            command_path: command_path.into(),
            timeout,
            limits: Limits::default(),
            masker,
        }
    }
}

/// Why an attempt or a task failed. Messages name paths, hosts and exit codes; the only
/// script output they quote is masked.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// commandPath is missing or not a directory.
    #[error("commandPath {path:?} does not exist or is not a directory")]
    CommandPath {
        /// The path as given.
        path: String,
    },
    /// The script exited non-zero.
    #[error("the script exited with status {code}{}", fmt_tail(.stderr_tail))]
    ScriptFailed {
        /// Its exit status.
        code: i32,
        /// The end of its masked stderr.
        stderr_tail: String,
    },
    /// The script ended without reporting: killed by a signal, or it `exec`ed away.
    #[error("the script ended without reporting a result ({how}){}", fmt_tail(.stderr_tail))]
    NoReport {
        /// How the process ended, e.g. "killed by signal 9".
        how: String,
        /// The end of its masked stderr.
        stderr_tail: String,
    },
    /// The wrapper's result stream was unusable, or the secret was over the limit.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The remote account would not run the wrapper (a `nologin` shell, no bash, no
    /// writable temporary directory).
    #[error("the remote account did not run the wrapper: {reason}")]
    RemoteShell {
        /// What happened, with the masked output of the login shell if any.
        reason: String,
    },
    /// Harness's rule: empty or `null` is not a secret.
    #[error("The custom shell script returned an empty or null value")]
    EmptySecret,
    /// The attempt was killed at its deadline.
    #[error("the script did not finish within {} and was killed with its process tree", fmt_duration(*.after))]
    Timeout {
        /// The deadline that passed.
        after: Duration,
    },
    /// The caller cancelled the task.
    #[error("the task was cancelled")]
    Cancelled,
    /// The request asks for something not available.
    #[error("{0}")]
    Unsupported(String),
    /// The agent itself failed (spawn, pipes).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// SSH connection, authentication or host-key failure.
    #[error(transparent)]
    Ssh(#[from] ssh::SshError),
    /// The task's deadline had passed before the first attempt could start.
    #[error("the task's deadline passed before the script could start")]
    DeadlinePassed,
}

fn fmt_tail(tail: &str) -> String {
    let t = tail.trim_end();
    if t.is_empty() {
        String::new()
    } else {
        format!("; stderr ends: {t}")
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

impl Kind for ExecError {
    fn kind(&self) -> ErrorKind {
        match self {
            ExecError::CommandPath { .. } => ErrorKind::CommandPath,
            ExecError::Frame(FrameError::TooLarge { .. }) => ErrorKind::SecretTooLarge,
            ExecError::Frame(FrameError::NoBootstrap { .. }) | ExecError::RemoteShell { .. } => {
                ErrorKind::RemoteShell
            }
            ExecError::ScriptFailed { .. }
            | ExecError::NoReport { .. }
            | ExecError::Frame(FrameError::Malformed) => ErrorKind::ScriptFailed,
            ExecError::EmptySecret => ErrorKind::EmptySecret,
            ExecError::Timeout { .. } | ExecError::DeadlinePassed => ErrorKind::Timeout,
            ExecError::Cancelled => ErrorKind::Cancelled,
            ExecError::Unsupported(_) => ErrorKind::Unsupported,
            ExecError::Io { .. } => ErrorKind::Internal,
            ExecError::Ssh(e) => e.kind(),
        }
    }
}

/// How an attempt's process ended, when the executor could observe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Not observed (e.g. an SSH channel closed without an exit status).
    Unknown,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
            Exit::Unknown => f.write_str("no exit status"),
        }
    }
}

/// What one attempt produced before interpretation.
#[derive(Debug)]
pub struct Attempt {
    /// The wrapper's report, or why the attempt could not produce one.
    pub report: Result<Option<Report>, ExecError>,
    /// How the process ended.
    pub exit: Exit,
    /// Masked, capped stdout (over SSH, empty: the script's stdout is merged into stderr).
    pub stdout: CapturedLog,
    /// Masked, capped stderr.
    pub stderr: CapturedLog,
}

impl Attempt {
    /// An attempt that failed before the script ran.
    pub fn failed(err: ExecError) -> Attempt {
        Attempt {
            report: Err(err),
            exit: Exit::Unknown,
            stdout: CapturedLog::default(),
            stderr: CapturedLog::default(),
        }
    }
}

/// A boxed future, so that `Executor` stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs one attempt of a job somewhere. Implementations must kill everything the attempt
/// started when the deadline passes, when `cancel` fires, and when the future is dropped.
pub trait Executor: Send + Sync {
    /// Run one attempt.
    fn execute<'a>(&'a self, job: &'a Job, cancel: CancellationToken) -> BoxFuture<'a, Attempt>;
}

/// How many attempts to make, and how far apart.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1.
    pub attempts: u32,
    /// The pause between attempts.
    pub delay: Duration,
}

impl Default for RetryPolicy {
    /// Harness: up to 3 attempts, 1 s apart.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            delay: Duration::from_secs(1),
        }
    }
}

/// The least time a retry must have left, after its pause, before the task deadline (or
/// the per-attempt timeout, when that is shorter). A retry that could only run for less is
/// not started: the task ends at once with the last error.
pub const MIN_RETRY_WINDOW: Duration = Duration::from_secs(1);

/// The end of a task: the secret or the last error, with the last attempt's logs.
#[derive(Debug)]
pub struct Outcome {
    /// The secret, or why there is none.
    pub result: Result<SecretBytes, ExecError>,
    /// Attempts made: 0 only when the task deadline had passed before the first one.
    pub attempts: u32,
    /// Wall time across all attempts.
    pub elapsed: Duration,
    /// The last attempt's masked stdout.
    pub stdout: CapturedLog,
    /// The last attempt's masked stderr.
    pub stderr: CapturedLog,
}

/// Run `job` on `executor` with retries and no task deadline; see [`run_until`].
pub async fn run(
    executor: &dyn Executor,
    job: &Job,
    policy: &RetryPolicy,
    cancel: &CancellationToken,
) -> Outcome {
    run_until(executor, job, policy, None, cancel).await
}

/// Run `job` on `executor` with retries, within an optional whole-task `deadline`, and turn
/// the wrapper's report into a result.
///
/// Only retryable kinds are retried (see [`ErrorKind::retryable`]); `empty_secret` is
/// final, as in Harness. With a deadline:
/// - an attempt never runs past it: its timeout is the smaller of `job.timeout` and the
///   time left;
/// - a retry starts only if, after its pause, at least the smaller of `job.timeout` and
///   [`MIN_RETRY_WINDOW`] is left. Otherwise the task ends at once with the last attempt's
///   error, rather than pausing towards a deadline it cannot use;
/// - a deadline that has already passed makes no attempt at all:
///   [`ExecError::DeadlinePassed`] (kind `timeout`), with `attempts: 0`.
pub async fn run_until(
    executor: &dyn Executor,
    job: &Job,
    policy: &RetryPolicy,
    deadline: Option<Instant>,
    cancel: &CancellationToken,
) -> Outcome {
    let start = Instant::now();
    let attempts = policy.attempts.max(1);
    let outcome = |result, attempts, stdout, stderr| Outcome {
        result,
        attempts,
        elapsed: start.elapsed(),
        stdout,
        stderr,
    };
    let mut n = 0;
    loop {
        // An attempt cut short by the deadline runs as a copy of the job with less time.
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let shortened;
        let this = match left {
            Some(left) if left.is_zero() => {
                let (stdout, stderr) = Default::default();
                return outcome(Err(ExecError::DeadlinePassed), n, stdout, stderr);
            }
            Some(left) if left < job.timeout => {
                shortened = Job {
                    timeout: left,
                    ..job.clone()
                };
                &shortened
            }
            _ => job,
        };
        n += 1;
        let attempt = executor.execute(this, cancel.clone()).await;
        let (result, stdout, stderr) = interpret(this, attempt);
        let again = match &result {
            Err(e) => n < attempts && e.kind().retryable() && !cancel.is_cancelled(),
            Ok(_) => false,
        };
        if !again {
            return outcome(result, n, stdout, stderr);
        }
        // Whether a retry after a pause of `pause` would still have a useful window.
        let window = job
            .timeout
            .clamp(Duration::from_millis(1), MIN_RETRY_WINDOW);
        let fits = |pause: Duration| {
            deadline.map_or(true, |d| {
                d.saturating_duration_since(Instant::now()) >= pause.saturating_add(window)
            })
        };
        if !fits(policy.delay) {
            if let Err(e) = &result {
                tracing::info!(attempt = n, kind = %e.kind(), "attempt failed; no time left for a retry");
            }
            return outcome(result, n, stdout, stderr);
        }
        if let Err(e) = &result {
            tracing::info!(attempt = n, kind = %e.kind(), "attempt failed; retrying");
        }
        // The check above keeps the pause inside the deadline; the deadline bounds it anyway.
        let pause = match deadline {
            Some(d) => {
                let d = tokio::time::Instant::from_std(d);
                let end = tokio::time::Instant::now().checked_add(policy.delay);
                tokio::time::sleep_until(end.map_or(d, |e| e.min(d)))
            }
            None => tokio::time::sleep(policy.delay),
        };
        tokio::select! {
            _ = pause => {}
            _ = cancel.cancelled() => {
                return outcome(Err(ExecError::Cancelled), n, stdout, stderr);
            }
        }
        if !fits(Duration::ZERO) {
            return outcome(result, n, stdout, stderr);
        }
    }
}

/// Turn one attempt into a result, masking its logs with the secret too.
fn interpret(
    job: &Job,
    attempt: Attempt,
) -> (Result<SecretBytes, ExecError>, CapturedLog, CapturedLog) {
    let Attempt {
        report,
        exit,
        mut stdout,
        mut stderr,
    } = attempt;
    // Any secret the script set is masked from its logs, whether or not it succeeded.
    let has_logs = !stdout.as_bytes().is_empty() || !stderr.as_bytes().is_empty();
    if let (Ok(Some(Report::Done { secret, .. })), true) = (&report, has_logs) {
        let masker = job.masker.extended([secret.expose_secret()]);
        stdout.remask(&masker);
        stderr.remask(&masker);
    }
    let tail = || stderr.tail(ERROR_TAIL);
    let result = match report {
        Err(ExecError::Frame(FrameError::NoBootstrap { printed })) => {
            let said = job.masker.mask(&printed);
            let said = String::from_utf8_lossy(&said);
            let said = said.trim();
            Err(ExecError::RemoteShell {
                reason: format!(
                    "the channel closed ({exit}) before the bootstrap's first frame, so the login shell never started it (a nologin shell, or no bash on the host?){}{}",
                    if said.is_empty() { String::new() } else { format!("; the login shell printed: {said}") },
                    fmt_tail(&tail()),
                ),
            })
        }
        Err(e) => Err(e),
        Ok(None) => Err(ExecError::NoReport {
            how: exit.to_string(),
            stderr_tail: tail(),
        }),
        Ok(Some(Report::CommandPath)) => Err(ExecError::CommandPath {
            path: job.command_path.clone(),
        }),
        Ok(Some(Report::TempDir)) => Err(ExecError::RemoteShell {
            reason: "no writable directory for the private TMPDIR ($XDG_RUNTIME_DIR, /dev/shm, $TMPDIR, /tmp)".into(),
        }),
        Ok(Some(Report::Unset { rc: 0 })) => Err(ExecError::EmptySecret),
        Ok(Some(Report::Unset { rc })) => Err(ExecError::ScriptFailed {
            code: rc,
            stderr_tail: tail(),
        }),
        Ok(Some(Report::Done { rc, secret })) => {
            if rc != 0 {
                Err(ExecError::ScriptFailed {
                    code: rc,
                    stderr_tail: tail(),
                })
            } else if frames::is_empty_secret(&secret) {
                Err(ExecError::EmptySecret)
            } else {
                Ok(secret)
            }
        }
    };
    (result, stdout, stderr)
}
