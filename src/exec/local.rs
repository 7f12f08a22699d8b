//! The local executor: runs the wrapped script under `/bin/bash` on this host.
//!
//! Each attempt is one bash process in a process group of its own, started with
//! `posix_spawn` (no `fork` of the agent: cheaper, and no code runs between fork and exec).
//! The script arrives on stdin (never argv), the result on a dedicated fd 3 pipe, and
//! stdout and stderr are drained concurrently into masked, capped captures. At the deadline the group gets SIGTERM, then
//! SIGKILL after the grace period, while output keeps being drained. When bash exits, or the
//! attempt is cancelled or dropped, whatever is left of the group is killed too.
//!
//! The environment is cleared down to an allowlist: the agent's own environment holds
//! tokens, and none of it reaches a script.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
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
    /// `NAME=value` strings, ready for `posix_spawn`.
    env: Arc<Vec<CString>>,
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
        let env = policy
            .filter(std::env::vars())
            .into_iter()
            .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
            .collect();
        LocalExecutor { env: Arc::new(env) }
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

/// The spawned bash. Dropping it kills the whole process group and reaps bash, so a
/// cancelled, dropped or panicking attempt leaves neither processes nor a zombie.
struct Child {
    pid: Pid,
    reaped: bool,
    sigchld: tokio::signal::unix::Signal,
}

impl Child {
    fn signal_group(&self, sig: Signal) {
        // ESRCH just means the group is already gone. bash leads the group, and a group id
        // stays reserved while any member lives, so this cannot hit a stranger.
        let _ = killpg(self.pid, sig);
    }

    /// Wait for bash to exit and reap it.
    async fn wait(&mut self) -> Exit {
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    // Coalesced signals are fine: every wake re-checks with WNOHANG.
                    if self.sigchld.recv().await.is_none() {
                        return Exit::Unknown;
                    }
                }
                Ok(WaitStatus::Exited(_, code)) => {
                    self.reaped = true;
                    return Exit::Code(code);
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    self.reaped = true;
                    return Exit::Signal(sig as i32);
                }
                // Stopped or continued: keep waiting for the end.
                Ok(_) => {}
                Err(_) => {
                    self.reaped = true;
                    return Exit::Unknown;
                }
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.signal_group(Signal::SIGKILL);
        if self.reaped {
            return;
        }
        if let Ok(WaitStatus::StillAlive) = waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            // SIGKILLed, so this returns promptly; off the async threads all the same.
            let pid = self.pid;
            std::thread::spawn(move || {
                let _ = waitpid(pid, None);
            });
        }
    }
}

/// The agent's ends of the child's pipes.
struct Pipes {
    stdin: pipe::Sender,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    result: pipe::Receiver,
}

/// A pipe whose child end is at fd 10 or above, so that the `dup2`s onto 0–3 in the file
/// actions can never clobber one another, even in an agent started with stdio closed.
fn child_pipe(child_reads: bool) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (parent, child) = if child_reads { (w, r) } else { (r, w) };
    let high = fcntl(&child, FcntlArg::F_DUPFD_CLOEXEC(10))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    let child = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) };
    Ok((parent, child))
}

/// Signals whose disposition the agent may have changed (Rust ignores SIGPIPE). An ignored
/// signal stays ignored across exec, so the child gets these back at their defaults.
const RESET_SIGNALS: &[Signal] = &[
    Signal::SIGPIPE,
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

fn spawn_bash(env: &[CString]) -> std::io::Result<(Child, Pipes)> {
    // Registered before the spawn, so the child's exit cannot be missed.
    let sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    let (stdin_w, stdin_r) = child_pipe(true)?;
    let (stdout_r, stdout_w) = child_pipe(false)?;
    let (stderr_r, stderr_w) = child_pipe(false)?;
    let (result_r, result_w) = child_pipe(false)?;

    let mut actions = PosixSpawnFileActions::init()?;
    // dup2 clears FD_CLOEXEC on the target, so exactly these four survive exec.
    for (fd, target) in [
        (&stdin_r, 0),
        (&stdout_w, 1),
        (&stderr_w, 2),
        (&result_w, 3),
    ] {
        actions.add_dup2(fd.as_raw_fd(), target)?;
    }
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    attr.set_pgroup(Pid::from_raw(0))?;
    attr.set_sigmask(&SigSet::empty())?;
    let mut defaults = SigSet::empty();
    for s in RESET_SIGNALS {
        defaults.add(*s);
    }
    attr.set_sigdefault(&defaults)?;
    let args = [
        wrapper::LOCAL_BASH,
        c"--noprofile",
        c"--norc",
        c"-c",
        wrapper::LOCAL_BOOTSTRAP,
        wrapper::SCRIPT_NAME_C,
    ];
    let pid = posix_spawn(wrapper::LOCAL_BASH, &actions, &attr, &args, env)?;
    let child = Child {
        pid,
        reaped: false,
        sigchld,
    };
    drop((stdin_r, stdout_w, stderr_w, result_w));
    let pipes = Pipes {
        stdin: pipe::Sender::from_owned_fd(stdin_w)?,
        stdout: pipe::Receiver::from_owned_fd(stdout_r)?,
        stderr: pipe::Receiver::from_owned_fd(stderr_r)?,
        result: pipe::Receiver::from_owned_fd(result_r)?,
    };
    Ok((child, pipes))
}

async fn run_local(exec: &LocalExecutor, job: &Job, cancel: CancellationToken) -> Attempt {
    // A clear, early error; the wrapper's `cd` check covers a directory that vanishes later.
    if !Path::new(&job.command_path).is_dir() {
        return Attempt::failed(ExecError::CommandPath {
            path: job.command_path.clone(),
        });
    }
    let (mut child, pipes) = match spawn_bash(&exec.env) {
        Ok(c) => c,
        Err(e) => return Attempt::failed(io("starting /bin/bash")(e)),
    };
    let Pipes {
        mut stdin,
        mut stdout,
        mut stderr,
        mut result,
    } = pipes;

    // The writer runs beside the readers: a script larger than the pipe buffer would
    // otherwise deadlock against a shell that is waiting to be read.
    let input = wrapper::script_input(Mode::Local, &job.command_path, job.script.expose_bytes());
    let writer = async move {
        // EPIPE only means bash is gone; its exit tells the story.
        let _ = stdin.write_all(&input).await;
        drop(stdin);
    };

    let mut out_cap = LogCapture::new(job.masker.clone(), job.limits.stdout_cap);
    let mut err_cap = LogCapture::new(job.masker.clone(), job.limits.stderr_cap);
    let mut frames = FrameReader::new(job.limits.max_secret);

    let started = Instant::now();
    let supervised = supervise(
        &mut child,
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
    };
    drop(child);
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
}

/// One loop drives everything: reading all three pipes, reaping the child, the deadline and
/// cancellation. Draining never stops while the process lives, so a chatty script or a
/// grandchild holding a pipe can never block the shell or hang the reader.
async fn supervise<O, E, R>(
    child: &mut Child,
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
                exit = Some(st);
                // The script is over: nothing it started may outlive it.
                child.signal_group(Signal::SIGKILL);
                drain_until = Some(Instant::now() + d.drain);
            },
            _ = tokio::time::sleep_until(d.timeout), if !timed_out && exit.is_none() => {
                timed_out = true;
                child.signal_group(Signal::SIGTERM);
                kill_at = Some(Instant::now() + d.grace);
            },
            _ = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() => {
                kill_at = None;
                child.signal_group(Signal::SIGKILL);
            },
            // Bounded: a descendant that left the group must not hold us forever.
            _ = tokio::time::sleep_until(drain_until.unwrap_or(far)), if drain_until.is_some() => break,
            _ = cancel.cancelled() => {
                child.signal_group(Signal::SIGKILL);
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
