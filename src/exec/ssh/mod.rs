//! The SSH executor: runs the wrapped script on a target host with a connector's
//! credentials, through a pool of authenticated connections.
//!
//! - **Transport.** libssh2 (the `ssh2` crate), non-blocking, driven by `poll(2)` on a
//!   blocking thread per attempt ([`conn`]). Nothing here is tied to libssh2 beyond `conn`
//!   and `hostkey`; the [`Executor`] interface is transport-neutral.
//! - **Host keys.** Strict by default ([`hostkey`]); accepting any key takes
//!   [`HostKeyPolicy::InsecureAcceptAny`] and logs a warning on every connection.
//! - **The script** goes over the channel's stdin, under the same wrapper as locally. No
//!   PTY, no file on the host, nothing secret in the command line.
//! - **Timeouts.** Connect, handshake plus authentication, and the task each have a bound.
//!   At the task deadline the remote process group gets SIGTERM, then SIGKILL, over a
//!   second channel. A watchdog in the remote wrapper does the same if the agent is gone.
//! - **Pooling.** Connections are kept per (host, port, user, credential, host-key policy),
//!   several per target because libssh2 serialises a connection's channels. Idle ones expire
//!   and get keepalives. A task whose pooled connection turns out dead before the script was
//!   sent is moved to a fresh connection without failing.

mod conn;
pub mod hostkey;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use secrecy::SecretString;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::wrapper::{self, Mode};
use super::{Attempt, BoxFuture, ExecError, Executor, Job};
use crate::error::{ErrorKind, Kind};
use crate::mask::{CapturedLog, LogCapture};
pub use hostkey::HostKeyPolicy;

/// The default SSH port.
pub const DEFAULT_PORT: u16 = 22;

/// How to authenticate. Secret parts are held in `secrecy` types.
pub enum SshAuth {
    /// A private key given inline (OpenSSH or PEM), optionally encrypted.
    Key {
        /// The key text.
        private_key: SecretString,
        /// Its passphrase.
        passphrase: Option<SecretString>,
    },
    /// A private key file on the agent host.
    KeyFile {
        /// Its path.
        path: PathBuf,
        /// Its passphrase.
        passphrase: Option<SecretString>,
    },
    /// A password.
    Password(SecretString),
}

impl std::fmt::Debug for SshAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SshAuth::Key { .. } => f.write_str("Key([REDACTED])"),
            SshAuth::KeyFile { path, .. } => write!(f, "KeyFile({})", path.display()),
            SshAuth::Password(_) => f.write_str("Password([REDACTED])"),
        }
    }
}

/// A user and how it authenticates.
#[derive(Debug)]
pub struct SshCredential {
    /// Login user.
    pub user: String,
    /// Authentication method.
    pub auth: SshAuth,
    /// Identity for pooling: connections are never shared between credentials.
    id: u64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl SshCredential {
    /// A credential. Each one gets its own pool identity.
    pub fn new(user: impl Into<String>, auth: SshAuth) -> Self {
        SshCredential {
            user: user.into(),
            auth,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// Where to run: host, port, credential and host-key policy.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Who to log in as.
    pub credential: Arc<SshCredential>,
    /// Which host keys to trust.
    pub host_keys: Arc<HostKeyPolicy>,
}

/// Bounds and pool sizes.
#[derive(Debug, Clone)]
pub struct SshConfig {
    /// Bound on resolving the host name plus the TCP connect; also how long a pooled
    /// connection may take to open a channel before it is taken for dead and replaced.
    pub connect_timeout: Duration,
    /// Handshake plus authentication bound.
    pub auth_timeout: Duration,
    /// Keepalive interval for pooled connections.
    pub keepalive: Duration,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    /// Connections per target. OpenSSH's default MaxStartups (10) bounds how many may
    /// handshake at once, so keep this at or below it.
    pub max_sessions_per_target: usize,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            connect_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(15),
            keepalive: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            max_sessions_per_target: 8,
        }
    }
}

/// Why an SSH connection could not be used. Every message names host:port.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// Refused, unreachable, DNS, or a connect/handshake timeout.
    #[error("cannot connect to {host}:{port}: {reason}")]
    Connect {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// What failed.
        reason: String,
    },
    /// The SSH handshake failed.
    #[error("SSH handshake with {host}:{port} failed: {reason}")]
    Handshake {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// What failed.
        reason: String,
    },
    /// No known key for the host.
    #[error("host key for {host}:{port} is not trusted ({offered}); add it to known_hosts or pin it in the connector")]
    HostKeyUnknown {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The offered key's fingerprint.
        offered: String,
    },
    /// The host offered a key other than the known one.
    #[error("host key for {host}:{port} has changed: the server offered {offered}, but the trusted key is {}", .known.join(" or "))]
    HostKeyChanged {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The offered key's fingerprint.
        offered: String,
        /// Fingerprints of the trusted keys.
        known: Vec<String>,
    },
    /// A known_hosts file could not be used.
    #[error("cannot check the host key for {host}:{port}: {reason}")]
    KnownHosts {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// What failed.
        reason: String,
    },
    /// Authentication failed.
    #[error("authentication as {user} to {host}:{port} failed; tried {}: {detail}", .tried.join(", "))]
    Auth {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// User.
        user: String,
        /// Methods tried, e.g. "password".
        tried: Vec<String>,
        /// Why, without secrets.
        detail: String,
    },
    /// The connection broke while a task ran on it.
    #[error("the SSH connection to {host}:{port} failed during the task: {reason}")]
    Broken {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// What failed.
        reason: String,
    },
}

impl Kind for SshError {
    fn kind(&self) -> ErrorKind {
        match self {
            SshError::Connect { .. } | SshError::Handshake { .. } | SshError::Broken { .. } => {
                ErrorKind::SshConnect
            }
            SshError::HostKeyUnknown { .. }
            | SshError::HostKeyChanged { .. }
            | SshError::KnownHosts { .. } => ErrorKind::HostKey,
            SshError::Auth { .. } => ErrorKind::SshAuth,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    host: String,
    port: u16,
    user: String,
    credential: u64,
    policy: usize,
}

impl PoolKey {
    fn of(t: &SshTarget) -> Self {
        PoolKey {
            host: t.host.clone(),
            port: t.port,
            user: t.credential.user.clone(),
            credential: t.credential.id,
            // Same policy object, same trust decision.
            policy: Arc::as_ptr(&t.host_keys) as usize,
        }
    }
}

/// Connections to one target, and the permits that bound how many exist.
struct Slot {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<conn::Conn>>,
}

/// Pooled, authenticated SSH connections, shared by every SSH task of an agent.
pub struct SshPool {
    config: SshConfig,
    slots: Mutex<HashMap<PoolKey, Arc<Slot>>>,
}

impl std::fmt::Debug for SshPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshPool")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SshPool {
    /// A pool. Call from within a tokio runtime: it starts a keepalive task, which ends
    /// when the pool is dropped.
    pub fn new(config: SshConfig) -> Arc<SshPool> {
        let pool = Arc::new(SshPool {
            config,
            slots: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&pool);
        let every = pool.config.keepalive.max(Duration::from_secs(1));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(pool) = Weak::upgrade(&weak) else {
                        break;
                    };
                    pool.maintain();
                }
            });
        }
        pool
    }

    /// The pool's bounds.
    pub fn config(&self) -> &SshConfig {
        &self.config
    }

    fn slot(&self, t: &SshTarget) -> Arc<Slot> {
        let mut slots = self.slots.lock().expect("pool lock");
        slots
            .entry(PoolKey::of(t))
            .or_insert_with(|| {
                Arc::new(Slot {
                    permits: Arc::new(Semaphore::new(self.config.max_sessions_per_target.max(1))),
                    idle: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    /// Drop expired idle connections and send keepalives on the rest.
    fn maintain(&self) {
        let slots: Vec<Arc<Slot>> = self
            .slots
            .lock()
            .expect("pool lock")
            .values()
            .cloned()
            .collect();
        for slot in slots {
            let mut idle = slot.idle.lock().expect("slot lock");
            let idle_timeout = self.config.idle_timeout;
            idle.retain(|c| c.last_used.elapsed() < idle_timeout && keepalive(c));
        }
        // Forget targets with no idle connection and no task: every credential is a target
        // of its own, and a long-running agent must not keep one for each it has seen. A
        // task holds its slot's Arc, and `slot()` clones it under this lock, so a slot
        // counted once here is in no one's hands.
        self.slots.lock().expect("pool lock").retain(|_, s| {
            Arc::strong_count(s) > 1 || !s.idle.lock().expect("slot lock").is_empty()
        });
    }

    /// Number of targets the pool tracks (with idle connections or running tasks).
    pub fn target_count(&self) -> usize {
        self.slots.lock().expect("pool lock").len()
    }

    /// Number of idle connections held for `target`.
    pub fn idle_count(&self, target: &SshTarget) -> usize {
        self.slot(target).idle.lock().expect("slot lock").len()
    }
}

/// Send a keepalive; false if the connection is dead. A keepalive that could not be queued
/// without blocking is not a dead connection.
fn keepalive(c: &conn::Conn) -> bool {
    match c.sess.keepalive_send() {
        Ok(_) => true,
        Err(e) => e.code() == ssh2::ErrorCode::Session(conn::EAGAIN),
    }
}

/// Runs scripts on one target through a shared pool.
#[derive(Debug, Clone)]
pub struct SshExecutor {
    pool: Arc<SshPool>,
    target: SshTarget,
}

impl SshExecutor {
    /// An executor for `target`, using `pool`'s connections.
    pub fn new(pool: Arc<SshPool>, target: SshTarget) -> Self {
        SshExecutor { pool, target }
    }
}

impl Executor for SshExecutor {
    fn execute<'a>(&'a self, job: &'a Job, cancel: CancellationToken) -> BoxFuture<'a, Attempt> {
        Box::pin(execute(self, job, cancel))
    }
}

/// Writes to the wake pipe when asked or dropped, so a cancelled or abandoned attempt's
/// thread stops waiting at once.
struct Wake(Option<OwnedFd>);

impl Wake {
    fn fire(&mut self) {
        if let Some(fd) = self.0.take() {
            let _ = nix::unistd::write(&fd, b"x");
        }
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        self.fire();
    }
}

async fn execute(exec: &SshExecutor, job: &Job, cancel: CancellationToken) -> Attempt {
    let deadline = Instant::now() + job.timeout;
    let slot = exec.pool.slot(&exec.target);
    let permit: OwnedSemaphorePermit = tokio::select! {
        p = slot.permits.clone().acquire_owned() => p.expect("the pool never closes its semaphores"),
        _ = tokio::time::sleep_until(deadline.into()) => return Attempt::failed(ExecError::Timeout { after: job.timeout }),
        _ = cancel.cancelled() => return Attempt::failed(ExecError::Cancelled),
    };
    let (wake_r, wake_w) = match nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK) {
        Ok(p) => p,
        Err(e) => {
            return Attempt::failed(ExecError::Io {
                what: "creating the wake pipe",
                source: e.into(),
            })
        }
    };
    let mut wake = Wake(Some(wake_w));
    let idle = {
        let mut idle = slot.idle.lock().expect("slot lock");
        let expiry = exec.pool.config.idle_timeout;
        idle.retain(|c| c.last_used.elapsed() < expiry);
        idle.pop()
    };
    let session = wrapper::Session::new();
    let work = Work {
        target: exec.target.clone(),
        config: exec.pool.config.clone(),
        input: wrapper::script_input(
            &session,
            Mode::Ssh {
                timeout: job.timeout,
                grace: job.limits.grace,
            },
            &job.command_path,
            job.script.expose_bytes(),
        ),
        session,
        limits: job.limits.clone(),
        masker: job.masker.clone(),
        deadline,
        timeout: job.timeout,
    };
    // The thread owns the connection, so it also holds the permit: a task dropped mid-run
    // keeps its slot until its remote kill is done and its connection is back in the pool
    // or closed, and the pool never holds more connections than it has permits.
    let handle = tokio::task::spawn_blocking(move || {
        let (attempt, conn) = work.run(idle, wake_r);
        if let Some(mut c) = conn {
            c.last_used = Instant::now();
            c.reused = true;
            slot.idle.lock().expect("slot lock").push(c);
        }
        drop(permit);
        attempt
    });
    tokio::pin!(handle);
    let joined = tokio::select! {
        r = &mut handle => r,
        _ = cancel.cancelled() => {
            wake.fire();
            handle.await
        }
    };
    joined.unwrap_or_else(|e| {
        Attempt::failed(ExecError::Io {
            what: "the SSH worker thread failed",
            source: std::io::Error::other(e.to_string()),
        })
    })
}

/// Whether the wake pipe has been written: the attempt was cancelled or abandoned.
fn woken(wake: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
    matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// What the blocking thread owns for one attempt.
struct Work {
    target: SshTarget,
    config: SshConfig,
    input: zeroize::Zeroizing<Vec<u8>>,
    session: wrapper::Session,
    limits: super::Limits,
    masker: Arc<crate::mask::Masker>,
    deadline: Instant,
    timeout: Duration,
}

impl Work {
    /// Run on a pooled connection, or a new one; returns the attempt and the connection if
    /// it is fit for reuse.
    fn run(self, mut conn: Option<conn::Conn>, wake: OwnedFd) -> (Attempt, Option<conn::Conn>) {
        use std::os::fd::AsFd;
        loop {
            let c = match conn.take() {
                Some(c) => c,
                None => match conn::connect(
                    &self.target,
                    &self.config,
                    Some(wake.as_fd()),
                    self.deadline,
                ) {
                    Ok(c) => c,
                    Err(e) => return (Attempt::failed(self.connect_failure(e, &wake)), None),
                },
            };
            let spec = conn::RunSpec {
                input: &self.input,
                session: &self.session,
                limits: &self.limits,
                deadline: self.deadline,
                setup_timeout: self.config.connect_timeout,
            };
            let log = LogCapture::new(self.masker.clone(), self.limits.stderr_cap);
            let run = conn::run(&c, &spec, log, &wake);
            // A stale pooled connection that failed before the script was sent: nothing ran,
            // so the task moves to a fresh connection instead of failing.
            if c.reused
                && !run.started
                && matches!(run.interrupted, Some(conn::RunInterrupt::Broken(_)))
            {
                tracing::debug!(host = %self.target.host, port = self.target.port, "pooled SSH connection was dead; reconnecting");
                c.shutdown();
                continue;
            }
            let healthy = run.healthy;
            let attempt = self.attempt_from(run);
            let keep = healthy.then_some(c);
            return (attempt, keep);
        }
    }

    fn connect_failure(&self, e: SshError, wake: &OwnedFd) -> ExecError {
        // A connect interrupted by the wake pipe was cancelled, whatever error the
        // interrupted step reported.
        if woken(wake) {
            return ExecError::Cancelled;
        }
        // A connect that ran out of time, the task's or its own bound, is `ssh_connect`:
        // no script ran, so it is not the script's timeout.
        ExecError::Ssh(e)
    }

    fn attempt_from(&self, run: conn::ChannelRun) -> Attempt {
        let report = match run.interrupted {
            Some(conn::RunInterrupt::Timeout) => Err(ExecError::Timeout {
                after: self.timeout,
            }),
            Some(conn::RunInterrupt::Cancelled) => Err(ExecError::Cancelled),
            Some(conn::RunInterrupt::Broken(reason)) if !run.frames.is_complete() => {
                Err(ExecError::Ssh(SshError::Broken {
                    host: self.target.host.clone(),
                    port: self.target.port,
                    reason,
                }))
            }
            _ => run.frames.finish().map_err(ExecError::from),
        };
        Attempt {
            report,
            exit: run.exit,
            stdout: CapturedLog::default(),
            stderr: run.log.finish(),
        }
    }
}
