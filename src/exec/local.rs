//! The local executor: runs the wrapped script under `/bin/bash` on this host.
//!
//! Each attempt is one bash process in a process group of its own. The script arrives on
//! stdin (never argv), the result on a dedicated fd 3 pipe, and stdout and stderr are drained
//! concurrently into masked, capped captures. At the deadline the group gets SIGTERM, then
//! SIGKILL after the grace period, while output keeps being drained. When bash exits, or the
//! attempt is cancelled or dropped, whatever is left of the group is killed too.
//!
//! The environment is cleared down to an allowlist: the agent's own environment holds
//! tokens, and none of it reaches a script.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wrapper::{self, FrameReader, Mode};
use super::{Attempt, BoxFuture, ExecError, Executor, Exit, Job};
use crate::mask::LogCapture;

/// Variables always passed through from the agent's environment when set.
pub const DEFAULT_ENV_ALLOW: &[&str] = &["PATH", "HOME", "LANG", "LC_*", "TZ", "USER", "LOGNAME"];

/// PATH for scripts when the agent has none.
const FALLBACK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Which of the agent's environment variables a script may see.
#[derive(Debug, Clone)]
pub struct EnvPolicy {
    allow: Vec<String>,
}

impl Default for EnvPolicy {
    fn default() -> Self {
        EnvPolicy {
            allow: DEFAULT_ENV_ALLOW.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl EnvPolicy {
    /// The default allowlist plus `extra` names (a trailing `*` matches a prefix).
    pub fn with_extra(extra: impl IntoIterator<Item = String>) -> Self {
        let mut p = Self::default();
        p.allow.extend(extra);
        p
    }

    fn allows(&self, name: &str) -> bool {
        self.allow.iter().any(|pat| match pat.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == pat,
        })
    }

    /// The environment a script gets, taken from `vars` (normally the agent's own).
    pub fn filter(
        &self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> =
            vars.into_iter().filter(|(k, _)| self.allows(k)).collect();
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), FALLBACK_PATH.into()));
        }
        env
    }
}

/// Runs scripts on this host.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    env: Arc<Vec<(String, String)>>,
}

impl Default for LocalExecutor {
    fn default() -> Self {
        Self::new(&EnvPolicy::default())
    }
}

impl LocalExecutor {
    /// An executor whose scripts see the agent's environment filtered by `policy`.
    /// The environment is read once, here, not per task.
    pub fn new(policy: &EnvPolicy) -> Self {
        LocalExecutor {
            env: Arc::new(policy.filter(std::env::vars())),
        }
    }
}

impl Executor for LocalExecutor {
    fn execute<'a>(&'a self, job: &'a Job, cancel: CancellationToken) -> BoxFuture<'a, Attempt> {
        Box::pin(run_local(self, job, cancel))
    }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ExecError {
    move |source| ExecError::Io { what, source }
}

/// Kills the process group when dropped, so a cancelled or panicking attempt leaves nothing.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn signal(&self, sig: Signal) {
        if let Some(pg) = self.0 {
            // ESRCH just means the group is already gone.
            let _ = killpg(pg, sig);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Create the result pipe. The write end is moved to fd >= 10 so that it cannot collide
/// with fd 3 (or stdio) when the child `dup2`s it into place.
fn result_pipe() -> Result<(OwnedFd, OwnedFd), ExecError> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| io("creating the result pipe")(e.into()))?;
    let high = fcntl(&w, FcntlArg::F_DUPFD_CLOEXEC(10))
        .map_err(|e| io("creating the result pipe")(e.into()))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    let w = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) };
    Ok((r, w))
}

async fn run_local(exec: &LocalExecutor, job: &Job, cancel: CancellationToken) -> Attempt {
    // A clear, early error; the wrapper's `cd` check covers a directory that vanishes later.
    if !Path::new(&job.command_path).is_dir() {
        return Attempt::failed(ExecError::CommandPath {
            path: job.command_path.clone(),
        });
    }
    let (result_r, result_w) = match result_pipe() {
        Ok(p) => p,
        Err(e) => return Attempt::failed(e),
    };
    let w_raw: RawFd = result_w.as_raw_fd();

    let mut cmd = Command::new(wrapper::LOCAL_BASH);
    cmd.args([
        "--noprofile",
        "--norc",
        "-c",
        wrapper::LOCAL_BOOTSTRAP,
        wrapper::SCRIPT_NAME,
    ])
    .env_clear()
    .envs(exec.env.iter().map(|(k, v)| (k, v)))
    .current_dir("/")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only calls dup2, which is
    // async-signal-safe. dup2 clears FD_CLOEXEC on fd 3, so exactly the write end survives.
    unsafe {
        cmd.pre_exec(move || {
            let fd3 = nix::unistd::dup2_raw(std::os::fd::BorrowedFd::borrow_raw(w_raw), 3)?;
            // fd 3 must stay open across exec: it is not ours to close.
            std::mem::forget(fd3);
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Attempt::failed(io("starting /bin/bash")(e)),
    };
    drop(result_w);
    let guard = GroupGuard(child.id().map(|p| Pid::from_raw(p as i32)));

    let mut result = match tokio::net::unix::pipe::Receiver::from_owned_fd(result_r) {
        Ok(r) => r,
        Err(e) => return Attempt::failed(io("reading the result pipe")(e)),
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");

    // The writer runs beside the readers: a script larger than the pipe buffer would
    // otherwise deadlock against a shell that is waiting to be read.
    let input = wrapper::script_input(Mode::Local, &job.command_path, job.script.expose_bytes());
    let writer = async move {
        // EPIPE only means bash is gone; its exit tells the story.
        let _ = stdin.write_all(&input).await;
        let _ = stdin.shutdown().await;
    };

    let mut out_cap = LogCapture::new(job.masker.clone(), job.limits.stdout_cap);
    let mut err_cap = LogCapture::new(job.masker.clone(), job.limits.stderr_cap);
    let mut frames = FrameReader::new(job.limits.max_secret);

    let started = Instant::now();
    let supervised = supervise(
        &mut child,
        &guard,
        Streams {
            stdout: &mut stdout,
            stderr: &mut stderr,
            result: &mut result,
        },
        Sinks {
            stdout: &mut out_cap,
            stderr: &mut err_cap,
            frames: &mut frames,
        },
        Deadlines {
            timeout: started + job.timeout,
            grace: job.limits.grace,
            drain: job.limits.drain,
        },
        &cancel,
    );
    let (end, _) = tokio::join!(supervised, writer);

    let (report, exit) = match end {
        End::Exited(exit) => (frames.finish().map_err(ExecError::from), exit),
        End::TimedOut => (
            Err(ExecError::Timeout { after: job.timeout }),
            Exit::Unknown,
        ),
        End::Cancelled => (Err(ExecError::Cancelled), Exit::Unknown),
        End::Failed(e) => (Err(e), Exit::Unknown),
    };
    drop(guard);
    Attempt {
        report,
        exit,
        stdout: out_cap.finish(),
        stderr: err_cap.finish(),
    }
}

struct Streams<'a, O, E, R> {
    stdout: &'a mut O,
    stderr: &'a mut E,
    result: &'a mut R,
}

struct Sinks<'a> {
    stdout: &'a mut LogCapture,
    stderr: &'a mut LogCapture,
    frames: &'a mut FrameReader,
}

struct Deadlines {
    timeout: Instant,
    grace: Duration,
    drain: Duration,
}

enum End {
    Exited(Exit),
    TimedOut,
    Cancelled,
    Failed(ExecError),
}

/// One loop drives everything: reading all three pipes, reaping the child, the deadline and
/// cancellation. Draining never stops while the process lives, so a chatty script or a
/// grandchild holding a pipe can never block the shell or hang the reader.
async fn supervise<O, E, R>(
    child: &mut tokio::process::Child,
    guard: &GroupGuard,
    s: Streams<'_, O, E, R>,
    sinks: Sinks<'_>,
    d: Deadlines,
    cancel: &CancellationToken,
) -> End
where
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
    R: AsyncRead + Unpin,
{
    let mut ob = vec![0u8; 32 * 1024];
    let mut eb = vec![0u8; 32 * 1024];
    let mut rb = vec![0u8; 8 * 1024];
    let (mut out_eof, mut err_eof, mut res_eof) = (false, false, false);
    let mut exit: Option<Exit> = None;
    let mut timed_out = false;
    let mut kill_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(86400 * 365);

    loop {
        if exit.is_some() && out_eof && err_eof && (res_eof || sinks.frames.is_complete()) {
            break;
        }
        tokio::select! {
            r = s.stdout.read(&mut ob), if !out_eof => match r {
                Ok(0) | Err(_) => out_eof = true,
                Ok(n) => sinks.stdout.push(&ob[..n]),
            },
            r = s.stderr.read(&mut eb), if !err_eof => match r {
                Ok(0) | Err(_) => err_eof = true,
                Ok(n) => sinks.stderr.push(&eb[..n]),
            },
            r = s.result.read(&mut rb), if !res_eof => match r {
                Ok(0) | Err(_) => res_eof = true,
                Ok(n) => sinks.frames.push(&rb[..n]),
            },
            st = child.wait(), if exit.is_none() => {
                exit = Some(match st {
                    Ok(st) => match (st.code(), st.signal()) {
                        (Some(c), _) => Exit::Code(c),
                        (None, Some(sig)) => Exit::Signal(sig),
                        _ => Exit::Unknown,
                    },
                    Err(e) => return End::Failed(io("waiting for bash")(e)),
                });
                // The script is over: nothing it started may outlive it. The group id stays
                // reserved while any member lives, so this cannot hit a stranger.
                guard.signal(Signal::SIGKILL);
                drain_until = Some(Instant::now() + d.drain);
            },
            _ = tokio::time::sleep_until(d.timeout), if !timed_out && exit.is_none() => {
                timed_out = true;
                guard.signal(Signal::SIGTERM);
                kill_at = Some(Instant::now() + d.grace);
            },
            _ = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() => {
                kill_at = None;
                guard.signal(Signal::SIGKILL);
            },
            // Bounded: a descendant that left the group must not hold us forever.
            _ = tokio::time::sleep_until(drain_until.unwrap_or(far)), if drain_until.is_some() => break,
            _ = cancel.cancelled() => {
                guard.signal(Signal::SIGKILL);
                return End::Cancelled;
            }
        }
    }
    if timed_out {
        End::TimedOut
    } else {
        End::Exited(exit.unwrap_or(Exit::Unknown))
    }
}
