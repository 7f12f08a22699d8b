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
//!   second channel. The relay in the remote wrapper does the same if the agent is gone.
//! - **Pooling** ([`pool`]). Connections are kept per (host, port, user, credential, host-key policy),
//!   several per target because libssh2 serialises a connection's channels. Idle ones expire
//!   and get keepalives. A task whose pooled connection turns out dead before the script was
//!   sent is moved to a fresh connection without failing.

mod conn;
mod connect;
pub mod hostkey;
mod known_hosts;
mod pool;
mod watchdog;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use secrecy::SecretString;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::wrapper::{self, Mode};
use super::{Attempt, BoxFuture, ExecError, Executor, Job};
use crate::error::{ErrorKind, Kind};
use crate::mask::{CapturedLog, LogCapture};
pub use hostkey::HostKeyPolicy;
pub use pool::SshPool;
use watchdog::Watch;

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
        /// The offered key's fingerprint and type.
        offered: String,
        /// Fingerprints of the trusted keys, with their types and origins.
        known: Vec<String>,
    },
    /// The host offered a key that known_hosts marks `@revoked` for it. Refused even when
    /// another line or a pin trusts the same key, as OpenSSH refuses it.
    #[error("host key for {host}:{port} is revoked: the server offered {offered}, which {origin} marks @revoked")]
    HostKeyRevoked {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The offered key's fingerprint and type.
        offered: String,
        /// The known_hosts file and line that revoke it.
        origin: String,
    },
    /// The host offered a key of a type that known_hosts does not list for it, while it
    /// lists keys of other types: the server holds none of the known types (they are asked
    /// for first), so this is a changed host key, not a connection failure.
    #[error("host key for {host}:{port} does not match: the server offered only a {offered}, but the trusted keys for this host are {}", .known.join(" or "))]
    HostKeyTypeMismatch {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The offered key's type and fingerprint.
        offered: String,
        /// Fingerprints, types and origins of the trusted keys.
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
            | SshError::HostKeyRevoked { .. }
            | SshError::HostKeyTypeMismatch { .. }
            | SshError::KnownHosts { .. } => ErrorKind::HostKey,
            SshError::Auth { .. } => ErrorKind::SshAuth,
        }
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
/// thread stops waiting at once; and has the watchdog shut the attempt's socket down once
/// the clean-up has had its time, in case the thread is held inside a libssh2 call.
struct Wake {
    fd: Option<OwnedFd>,
    watch: Arc<Watch>,
}

impl Wake {
    fn fire(&mut self) {
        if let Some(fd) = self.fd.take() {
            let _ = nix::unistd::write(&fd, b"x");
            self.watch.cancel();
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
    let watch = Arc::new(Watch::new());
    let mut wake = Wake {
        fd: Some(wake_w),
        watch: watch.clone(),
    };
    let idle = slot.take_idle(exec.pool.config.idle_timeout);
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
        watch,
    };
    // The thread owns the connection, so it also holds the permit: a task dropped mid-run
    // keeps its slot until its remote kill is done and its connection is back in the pool
    // or closed, and the pool never holds more connections than it has permits.
    let handle = tokio::task::spawn_blocking(move || {
        let (attempt, conn) = work.run(idle, wake_r);
        if let Some(c) = conn {
            slot.put_back(c);
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

/// Time the channel run may take past its own bounds (remote kills and the channel close,
/// each bounded at 2 s in `conn`) before the watchdog takes the socket away.
const CLEANUP_SLACK: Duration = Duration::from_secs(7);

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
    watch: Arc<Watch>,
}

impl Work {
    /// Run on a pooled connection, or a new one; returns the attempt and the connection if
    /// it is fit for reuse.
    fn run(self, mut conn: Option<conn::Conn>, wake: OwnedFd) -> (Attempt, Option<conn::Conn>) {
        use std::os::fd::AsFd;
        loop {
            let c = match conn.take() {
                Some(c) => c,
                None => match connect::connect(
                    &self.target,
                    &self.config,
                    Some(wake.as_fd()),
                    self.deadline,
                    &self.watch,
                ) {
                    Ok(c) => c,
                    Err(e) => {
                        self.watch.detach();
                        return (Attempt::failed(self.connect_failure(e, &wake)), None);
                    }
                },
            };
            // The run's own bounds all end by the first time: the deadline, TERM, the grace,
            // KILL, the grace (or the drain after the script reported), with bounded remote
            // kills and the channel close. After a cancellation the run reads the remote
            // group (up to the grace) and sends a remote kill.
            self.watch.attach(&c.sock);
            self.watch.arm(
                self.deadline + 2 * self.limits.grace + self.limits.drain + CLEANUP_SLACK,
                self.limits.grace + CLEANUP_SLACK,
            );
            let spec = conn::RunSpec {
                input: &self.input,
                session: &self.session,
                limits: &self.limits,
                deadline: self.deadline,
                setup_timeout: self.config.connect_timeout,
            };
            let log = LogCapture::new(self.masker.clone(), self.limits.stderr_cap);
            let run = conn::run(&c, &spec, log, &wake);
            let cut = self.watch.detach();
            // A stale pooled connection that failed before the script was sent: nothing ran,
            // so the task moves to a fresh connection instead of failing.
            if c.reused
                && !cut
                && !run.started
                && matches!(run.interrupted, Some(conn::RunInterrupt::Broken(_)))
            {
                tracing::debug!(host = %self.target.host, port = self.target.port, "pooled SSH connection was dead; reconnecting");
                c.shutdown();
                continue;
            }
            let healthy = run.healthy && !cut;
            let attempt = self.attempt_from(run, cut, &wake);
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

    /// The attempt a channel run amounts to. `cut`: the watchdog shut the socket down, so a
    /// "broken" connection was the attempt's own deadline or cancellation.
    fn attempt_from(&self, mut run: conn::ChannelRun, cut: bool, wake: &OwnedFd) -> Attempt {
        if cut && matches!(run.interrupted, Some(conn::RunInterrupt::Broken(_))) {
            run.interrupted = Some(if woken(wake) {
                conn::RunInterrupt::Cancelled
            } else {
                conn::RunInterrupt::Timeout
            });
        }
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
