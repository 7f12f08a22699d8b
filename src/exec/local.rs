//! The local executor: runs the wrapped script under `/bin/bash` on this host.
//!
//! Each attempt is one bash process leading a process group of its own,
//! started with `posix_spawn` ([`super::spawn`]) with nothing but stdin, stdout, stderr and
//! the result channel ([`super::channel`]) open. The script arrives on stdin (never argv).
//! stdout and stderr are drained concurrently into masked, capped captures; the channel is
//! read for frames from bash itself only.
//!
//! The script's environment is the agent's, cleared down to an allowlist (the agent's own
//! environment holds tokens), plus `TMPDIR`, a private directory for this attempt
//! ([`super::tmpdir`]), and `CSM_AGENT_TASK`, the attempt's marker.
//!
//! With [`LocalExecutor::with_spare`] (the agent's choice) the executor keeps one bash
//! *ready*: started, its session, temporary directory and cgroup made, the wrapper parsed,
//! and blocked reading its script. The next attempt takes it and pays only for its own
//! script; a new one is started in the background when an attempt ends. A ready bash holds
//! no value and no task data. It is killed and its directory removed when the executor
//! drops, and if the agent dies it finds its stdin at end of file and exits.
//!
//! At the deadline the group gets SIGTERM, then SIGKILL after the grace period, while output
//! keeps being drained ([`super::kill`]). When bash exits, or the attempt is cancelled or
//! dropped, the group is killed, then the attempt's cgroup if it has one
//! ([`super::cgroup`]), then its orphans ([`super::reap`]: the first local attempt makes
//! the agent a child subreaper for that); then its temporary directory is removed.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cgroup::{self, CgroupPolicy, TaskCgroup};
use super::channel::{self, Channel, Read};
use super::frames::FrameReader;
use super::kill::{Ladder, Step};
use super::reap::{self, Tracked};
use super::spawn::{self, ChildFds};
use super::tmpdir::{self, TempDir};
use super::wrapper::{self, Mode, Session, MARKER_VAR};
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
        // The executor sets these two itself, per attempt.
        if name == "TMPDIR" || name == MARKER_VAR {
            return false;
        }
        self.allow.iter().any(|pat| match pat.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == pat,
        })
    }

    /// The environment a script gets from `vars` (normally the agent's own), before the
    /// executor adds `TMPDIR` and `CSM_AGENT_TASK`.
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
    /// Where attempts' temporary directories go.
    tmp_base: Arc<PathBuf>,
    /// The parent of attempts' cgroups, if any.
    cgroup: Option<Arc<PathBuf>>,
    /// The bash kept ready for the next attempt, when that is on.
    spare: Option<Arc<Spare>>,
}

/// The slot for one ready bash, and whether one is being started.
#[derive(Default)]
struct Spare {
    state: Mutex<SpareState>,
    filled: tokio::sync::Notify,
}

#[derive(Default)]
struct SpareState {
    ready: Option<Ready>,
    filling: bool,
}

impl std::fmt::Debug for Spare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spare").finish_non_exhaustive()
    }
}

impl Spare {
    fn lock(&self) -> std::sync::MutexGuard<'_, SpareState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
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
        Self::from_env(policy, std::env::vars())
    }

    /// An executor whose scripts see `vars` (standing for the agent's environment)
    /// filtered by `policy`. `XDG_RUNTIME_DIR` among them picks where temporary
    /// directories go.
    pub fn from_env(policy: &EnvPolicy, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let xdg = vars
            .iter()
            .find(|(k, _)| k == "XDG_RUNTIME_DIR")
            .map(|(_, v)| PathBuf::from(v));
        let env = policy
            .filter(vars)
            .into_iter()
            .filter_map(|(k, v)| spawn::env_entry(&k, &v))
            .collect();
        LocalExecutor {
            env: Arc::new(env),
            tmp_base: Arc::new(tmpdir::base_from(xdg.as_deref())),
            cgroup: cgroup::resolve(&CgroupPolicy::Auto).map(Arc::new),
            spare: None,
        }
    }

    /// The same executor keeping one bash ready for the next attempt (see the module
    /// docs). For a long-running process: a one-shot command would start a bash only to
    /// kill it.
    pub fn with_spare(mut self) -> Self {
        self.spare = Some(Arc::default());
        self
    }

    /// Wait until a bash is ready for the next attempt, starting one if none is (a no-op
    /// without [`Self::with_spare`]). For a caller that wants the first attempt warm too,
    /// and for benchmarks that must not measure a floor beside a bash starting.
    pub async fn warm_up(&self) {
        let Some(spare) = &self.spare else { return };
        // Bounded: a bash that cannot start (logged by `refill`) must not spin this.
        for _ in 0..3 {
            let filled = spare.filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            {
                let st = spare.lock();
                if st.ready.is_some() {
                    return;
                }
                if !st.filling {
                    drop(st);
                    self.refill();
                }
            }
            filled.await;
        }
    }

    /// Start a ready bash in the background, unless one is ready or being started.
    fn refill(&self) {
        let Some(spare) = &self.spare else { return };
        {
            let mut st = spare.lock();
            if st.ready.is_some() || st.filling {
                return;
            }
            st.filling = true;
        }
        let this = self.clone();
        let spawned = tokio::task::spawn_blocking(move || {
            let ready = prepare(&this, true);
            let spare = this.spare.as_ref().expect("a spare slot");
            let mut st = spare.lock();
            st.filling = false;
            match ready {
                Ok(r) => st.ready = Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a bash ahead of the next attempt")
                }
            }
            drop(st);
            spare.filled.notify_waiters();
        });
        drop(spawned);
    }

    /// The ready bash, if there is one or one is about to be; `None` means start one now.
    async fn take_ready(&self) -> Option<Ready> {
        let spare = self.spare.as_ref()?;
        let filled = spare.filled.notified();
        tokio::pin!(filled);
        filled.as_mut().enable();
        {
            let mut st = spare.lock();
            if let Some(r) = st.ready.take().and_then(Ready::alive) {
                return Some(r);
            }
            if !st.filling {
                return None;
            }
        }
        // One is starting, and will be ready sooner than a new one would be; unless the
        // blocking pool is busy, hence the bound.
        tokio::time::timeout(FILL_PATIENCE, filled).await.ok()?;
        spare.lock().ready.take().and_then(Ready::alive)
    }

    /// The same executor with per-attempt cgroups placed by `policy`.
    pub fn with_cgroup(mut self, policy: &CgroupPolicy) -> Self {
        self.cgroup = cgroup::resolve(policy).map(Arc::new);
        self
    }

    /// Whether attempts get a cgroup of their own.
    pub fn uses_cgroups(&self) -> bool {
        self.cgroup.is_some()
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

/// The spawned bash. Dropping it kills the whole process group, reaps bash and sweeps the
/// attempt's orphans ([`Tracked`]), so a cancelled, dropped or panicking attempt leaves
/// neither processes nor a zombie.
struct Child {
    pid: Pid,
    reaped: bool,
    tracked: Option<Tracked>,
}

impl Child {
    fn signal_group(&self, sig: Signal) {
        // ESRCH just means the group is already gone. bash leads the group, and a group id
        // stays reserved while any member lives, so this cannot hit a stranger.
        let _ = killpg(self.pid, sig);
    }

    /// Wait for bash to exit and reap it. `exited` was created before this is first
    /// called, and the first check needs no event, so an exit is never missed.
    async fn wait(&mut self, exited: &mut ExitEvents) -> Exit {
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    // Spurious or coalesced wakes are fine: every one re-checks.
                    if !exited.next().await {
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

impl Child {
    /// The attempt is over: kill the group, the cgroup, then the orphans. What is left to
    /// reap is returned, for a blocking thread.
    fn end(&mut self, cgroup: Option<&TaskCgroup>) -> Option<reap::Pending> {
        self.signal_group(Signal::SIGKILL);
        if let Some(cg) = cgroup {
            cg.kill();
        }
        self.tracked.take().and_then(Tracked::finish)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.signal_group(Signal::SIGKILL);
        if !self.reaped {
            if let Ok(WaitStatus::StillAlive) = waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                // SIGKILLed, so this returns promptly; off the async threads all the same.
                let pid = self.pid;
                std::thread::spawn(move || {
                    let _ = waitpid(pid, None);
                });
            }
        }
        // The orphans, after the group (dropping an unfinished `Tracked` sweeps).
        self.tracked.take();
    }
}

/// What wakes the wait for bash's exit: its pidfd, which becomes readable when bash (and
/// only bash) exits; or, where the kernel has no `pidfd_open` (before 5.3), SIGCHLD, which
/// wakes every attempt that waits whenever any child exits.
enum ExitEvents {
    Pidfd(tokio::io::unix::AsyncFd<OwnedFd>),
    Sigchld(tokio::signal::unix::Signal),
}

impl ExitEvents {
    fn new(pid: Pid) -> std::io::Result<ExitEvents> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
        if fd >= 0 {
            // SAFETY: the descriptor was just returned to us and nothing else owns it.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
            // SAFETY: the OwnedFd keeps its one descriptor open, unchanged, until it drops
            // with the AsyncFd.
            let fd = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            }?;
            return Ok(ExitEvents::Pidfd(fd));
        }
        let sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        Ok(ExitEvents::Sigchld(sig))
    }

    /// The next wake; `false` if none can come.
    async fn next(&mut self) -> bool {
        match self {
            ExitEvents::Pidfd(fd) => match fd.readable().await {
                Ok(mut g) => {
                    // Readable stays readable once bash has exited; the caller reaps it.
                    g.clear_ready();
                    true
                }
                Err(_) => false,
            },
            ExitEvents::Sigchld(sig) => sig.recv().await.is_some(),
        }
    }
}

/// The agent's ends of the child's pipes and channel, not yet registered with a runtime: a
/// ready bash is started on a blocking thread, and may serve an attempt on another runtime.
struct Fds {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    channel: OwnedFd,
}

/// A bash started ahead of its script: session, temporary directory and cgroup made, the
/// session line written, the wrapper parsed, blocked reading the script. Dropping it kills
/// it, then its cgroup, then removes its directory (fields drop in this order).
struct Ready {
    child: Child,
    cgroup: Option<TaskCgroup>,
    tmp: TempDir,
    session: Session,
    fds: Fds,
}

impl Ready {
    /// Still waiting for its script (nothing killed it while it waited), or `None`.
    fn alive(mut self) -> Option<Ready> {
        match waitpid(self.child.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => Some(self),
            _ => {
                self.child.reaped = true;
                None
            }
        }
    }
}

/// How long an attempt waits for a bash that is being started for it before it starts its
/// own.
const FILL_PATIENCE: std::time::Duration = std::time::Duration::from_millis(50);

/// How long a bash started ahead of its task may take to say it is ready.
const READY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Start a bash for one attempt, up to where it waits for its script. With `wait`, return
/// only once it has parsed the wrapper and says so (off the async threads: this blocks).
fn prepare(exec: &LocalExecutor, wait: bool) -> Result<Ready, ExecError> {
    let session = Session::new();
    let tmp = TempDir::create(&exec.tmp_base, session.marker())
        .map_err(io("creating the attempt's temporary directory"))?;
    let mut cgroup = exec.cgroup.as_deref().and_then(|parent| {
        TaskCgroup::create(parent, session.marker())
            .map_err(|e| tracing::warn!(error = %e, "cannot create a cgroup for the attempt"))
            .ok()
    });
    // No sweep may run between the spawn and the registration (inside `spawn_bash`).
    let spawning = reap::spawning();
    let (child, fds) = spawn_bash(exec, &session, tmp.path()).map_err(io("starting /bin/bash"))?;
    drop(spawning);
    if let Some(cg) = &cgroup {
        // bash is blocked reading its session line, which is not written yet: it has not
        // forked, and the bootstrap never does before the script arrives.
        if let Err(e) = cg.adopt(child.pid) {
            tracing::warn!(error = %e, "cannot move bash into the attempt's cgroup");
            cgroup = None;
        }
    }
    // A few dozen bytes into an empty pipe: this cannot block.
    let starting = io("starting /bin/bash");
    let line = wrapper::local_session_line(&session, wait);
    match nix::unistd::write(&fds.stdin, &line) {
        Ok(n) if n == line.len() => {}
        Ok(_) => return Err(starting(std::io::ErrorKind::WriteZero.into())),
        Err(e) => return Err(starting(e.into())),
    }
    if wait {
        channel::await_ready(&fds.channel, READY_PATIENCE).map_err(starting)?;
    }
    Ok(Ready {
        child,
        cgroup,
        tmp,
        session,
        fds,
    })
}

/// `fd` at 4 or above, so that the `dup2`s onto 0–3 in the spawn can never clobber one
/// another: moved (close-on-exec) only in an agent started with stdio closed, where a new
/// descriptor can be one of 0–3.
fn high(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    if fd.as_raw_fd() >= 4 {
        return Ok(fd);
    }
    let high = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(10))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) })
}

/// A pipe: the agent's end non-blocking (ready for the runtime), bash's end blocking.
fn child_pipe(child_reads: bool) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let (parent, child) = if child_reads { (w, r) } else { (r, w) };
    // The flag belongs to each end's open file: clearing it on bash's leaves the agent's.
    fcntl(&child, FcntlArg::F_SETFL(OFlag::empty()))?;
    Ok((parent, high(child)?))
}

fn spawn_bash(
    exec: &LocalExecutor,
    session: &Session,
    tmp: &Path,
) -> std::io::Result<(Child, Fds)> {
    let (stdin_w, stdin_r) = child_pipe(true)?;
    let (stdout_r, stdout_w) = child_pipe(false)?;
    let (stderr_r, stderr_w) = child_pipe(false)?;
    let (channel, theirs) = channel::pair()?;
    let theirs = high(theirs)?;

    let extra = [
        spawn::env_entry("TMPDIR", &tmp.to_string_lossy()),
        spawn::env_entry(MARKER_VAR, session.marker()),
    ];
    let env: Vec<&std::ffi::CStr> = exec
        .env
        .iter()
        .map(CString::as_c_str)
        .chain(extra.iter().flatten().map(CString::as_c_str))
        .collect();
    let args = [
        wrapper::LOCAL_BASH,
        c"--noprofile",
        c"--norc",
        c"-c",
        wrapper::local_bootstrap(),
        wrapper::SCRIPT_NAME_C,
    ];
    let fds = ChildFds {
        stdin: stdin_r.as_fd(),
        stdout: stdout_w.as_fd(),
        stderr: stderr_w.as_fd(),
        channel: theirs.as_fd(),
        channel_at: session.local_fds(),
    };
    let pid = spawn::spawn(wrapper::LOCAL_BASH, &args, &env, &fds)?;
    let child = Child {
        pid,
        reaped: false,
        tracked: Some(Tracked::register(pid, session.marker())),
    };
    drop((stdin_r, stdout_w, stderr_w, theirs));
    let fds = Fds {
        stdin: stdin_w,
        stdout: stdout_r,
        stderr: stderr_r,
        channel,
    };
    Ok((child, fds))
}

async fn run_local(exec: &LocalExecutor, job: &Job, cancel: CancellationToken) -> Attempt {
    // A clear, early error; the wrapper's `cd` check covers a directory that vanishes later.
    if !Path::new(&job.command_path).is_dir() {
        return Attempt::failed(ExecError::CommandPath {
            path: job.command_path.clone(),
        });
    }
    reap::ensure_subreaper();
    let ready = match exec.take_ready().await {
        Some(r) => r,
        // On the blocking pool: `posix_spawn` holds the calling thread until bash has
        // exec'd, and on the agent's one runtime thread that would stall every other task.
        None => {
            let this = exec.clone();
            match tokio::task::spawn_blocking(move || prepare(&this, false)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Attempt::failed(e),
                Err(e) => {
                    return Attempt::failed(io("starting /bin/bash")(std::io::Error::other(e)))
                }
            }
        }
    };
    let attempt = run_ready(ready, job, cancel).await;
    // The next attempt's bash starts now, off this one's path.
    exec.refill();
    attempt
}

/// Run one attempt on a ready bash.
async fn run_ready(ready: Ready, job: &Job, cancel: CancellationToken) -> Attempt {
    // Bound in this order so that they drop in reverse: the processes, the cgroup, and the
    // directory last.
    let Ready {
        tmp,
        cgroup,
        mut child,
        session,
        fds,
    } = ready;
    // The attempt starts now, not when its bash did: nothing born while it waited is
    // pinned on it.
    if let Some(t) = child.tracked.as_mut() {
        t.activate();
    }
    let registered = (|| {
        Ok::<_, std::io::Error>((
            ExitEvents::new(child.pid)?,
            // Pipes of the right direction, non-blocking already (`child_pipe`).
            pipe::Sender::from_owned_fd_unchecked(fds.stdin)?,
            pipe::Receiver::from_owned_fd_unchecked(fds.stdout)?,
            pipe::Receiver::from_owned_fd_unchecked(fds.stderr)?,
            Channel::new(fds.channel)?,
        ))
    })();
    let (mut exited, mut stdin, mut stdout, mut stderr, mut channel) = match registered {
        Ok(r) => r,
        Err(e) => return Attempt::failed(io("starting /bin/bash")(e)),
    };

    // The writer runs beside the readers: a script larger than the pipe buffer would
    // otherwise deadlock against a shell that is waiting to be read.
    let input = wrapper::script_input(
        &session,
        Mode::Local,
        &job.command_path,
        job.script.expose_bytes(),
    );
    let writer = async move {
        // EPIPE only means bash is gone; its exit tells the story.
        let _ = stdin.write_all(&input).await;
        drop(stdin);
    };

    let mut out_cap = LogCapture::new(job.masker.clone(), job.limits.stdout_cap);
    let mut err_cap = LogCapture::new(job.masker.clone(), job.limits.stderr_cap);
    let mut frames = session.frame_reader(job.limits.max_secret, false);

    let ladder = Ladder::new(
        (Instant::now() + job.timeout).into_std(),
        job.limits.grace,
        job.limits.drain,
    );
    let supervised = supervise(
        &mut child,
        Streams {
            exited: &mut exited,
            stdout: &mut stdout,
            stderr: &mut stderr,
            channel: &mut channel,
        },
        Sinks {
            stdout: &mut out_cap,
            stderr: &mut err_cap,
            frames: &mut frames,
        },
        ladder,
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
    // The group, the cgroup, the orphans; the directory goes last.
    if let Some(pending) = child.end(cgroup.as_ref()) {
        let _ = tokio::task::spawn_blocking(move || pending.complete()).await;
    }
    drop(child);
    drop(cgroup);
    drop(tmp);
    Attempt {
        report,
        exit,
        stdout: out_cap.finish(),
        stderr: err_cap.finish(),
    }
}

struct Streams<'a, O, E> {
    exited: &'a mut ExitEvents,
    stdout: &'a mut O,
    stderr: &'a mut E,
    channel: &'a mut Channel,
}

struct Sinks<'a> {
    stdout: &'a mut LogCapture,
    stderr: &'a mut LogCapture,
    frames: &'a mut FrameReader,
}

enum End {
    Exited(Exit),
    TimedOut,
    Cancelled,
}

/// One loop drives everything: reading all three streams, reaping the child, the deadline
/// and cancellation. Draining never stops while the process lives, so a chatty script or a
/// grandchild holding a pipe can never block the shell or hang the reader.
async fn supervise<O, E>(
    child: &mut Child,
    s: Streams<'_, O, E>,
    sinks: Sinks<'_>,
    mut ladder: Ladder,
    cancel: &CancellationToken,
) -> End
where
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
{
    let mut ob = vec![0u8; 32 * 1024];
    let mut eb = vec![0u8; 32 * 1024];
    let (mut out_eof, mut err_eof, mut res_eof) = (false, false, false);
    let mut exit: Option<Exit> = None;
    let mut foreign = 0u64;
    let bash = child.pid.as_raw();

    loop {
        if exit.is_some() && out_eof && err_eof && (res_eof || sinks.frames.is_complete()) {
            break;
        }
        let now = std::time::Instant::now();
        while let Some(step) = ladder.due(now) {
            match step {
                Step::Term => child.signal_group(Signal::SIGTERM),
                Step::Kill => child.signal_group(Signal::SIGKILL),
                // Bounded: a descendant that left the group must not hold us forever, nor
                // a process that SIGKILL does not end.
                Step::GiveUp | Step::StopDraining => return finish(&ladder, exit, foreign),
            }
        }
        let wake = ladder.next().map(Instant::from_std);
        tokio::select! {
            r = s.stdout.read(&mut ob), if !out_eof => match r {
                Ok(0) | Err(_) => out_eof = true,
                Ok(n) => sinks.stdout.push(&ob[..n]),
            },
            r = s.stderr.read(&mut eb), if !err_eof => match r {
                Ok(0) | Err(_) => err_eof = true,
                Ok(n) => sinks.stderr.push(&eb[..n]),
            },
            r = s.channel.read(), if !res_eof => match r {
                Ok(Read::Eof) | Err(_) => res_eof = true,
                Ok(Read::Data(pid, data)) if pid == bash => sinks.frames.push(data),
                Ok(Read::Data(_, data)) => foreign += data.len() as u64,
            },
            st = child.wait(s.exited), if exit.is_none() => {
                exit = Some(st);
                // The script is over: nothing it started may outlive it.
                child.signal_group(Signal::SIGKILL);
                ladder.ended(std::time::Instant::now());
            },
            _ = tokio::time::sleep_until(wake.unwrap_or_else(far)), if wake.is_some() => {},
            _ = cancel.cancelled() => {
                child.signal_group(Signal::SIGKILL);
                return End::Cancelled;
            }
        }
    }
    finish(&ladder, exit, foreign)
}

fn finish(ladder: &Ladder, exit: Option<Exit>, foreign: u64) -> End {
    if foreign > 0 {
        tracing::warn!(
            bytes = foreign,
            "other processes wrote to the result channel; ignored"
        );
    }
    if ladder.timed_out() {
        End::TimedOut
    } else {
        End::Exited(exit.unwrap_or(Exit::Unknown))
    }
}

fn far() -> Instant {
    Instant::now() + std::time::Duration::from_secs(86400 * 365)
}
