//! One SSH connection driven without blocking: connect, handshake, authenticate, and run
//! one wrapped script on a channel.
//!
//! libssh2 runs in non-blocking mode on a blocking thread. Every operation that would block
//! waits in `poll(2)` on the socket and on a wake pipe, never longer than the current
//! deadline. One loop therefore drains stdout and stderr together, so a chatty script
//! cannot fill the channel window and deadlock a read of the other stream. The same loop
//! enforces deadlines and notices cancellation at once, and no libssh2 call can hang.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use secrecy::ExposeSecret;
use ssh2::{BlockDirections, Channel, ErrorCode, Session};

use super::hostkey;
use super::{SshAuth, SshConfig, SshError, SshTarget};
use crate::exec::frames::FrameReader;
use crate::exec::kill::{Ladder, Step};
use crate::exec::wrapper::{self, Session as WrapperSession};
use crate::exec::{Exit, Limits};
use crate::mask::LogCapture;

/// libssh2's "would block".
pub(super) const EAGAIN: i32 = -37;

/// Why a wait ended early.
#[derive(Debug)]
pub enum Interrupt {
    /// The deadline passed.
    Deadline,
    /// The wake pipe was written: the task was cancelled.
    Woken,
    /// An error from libssh2 or the socket.
    Failed(String),
}

/// A live, authenticated connection.
pub struct Conn {
    pub(super) sess: Session,
    /// A duplicate of the socket libssh2 owns, to poll and to shut down.
    sock: TcpStream,
    /// When the connection was last returned to the pool.
    pub(super) last_used: Instant,
    /// Whether the connection has run a task before (a failure on it may be staleness).
    pub(super) reused: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("reused", &self.reused)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Close the socket: any blocked libssh2 call on it returns at once.
    pub fn shutdown(&self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// How long to wait when libssh2 says "would block" without saying on what.
const UNDIRECTED_WAIT: Duration = Duration::from_millis(2);

/// Wait for `fd` (in libssh2's blocked directions) or the wake pipe, until `deadline`.
fn wait(
    sess: &Session,
    fd: BorrowedFd<'_>,
    wake: Option<BorrowedFd<'_>>,
    deadline: Instant,
) -> Result<(), Interrupt> {
    let flags = match sess.block_directions() {
        BlockDirections::Inbound => PollFlags::POLLIN,
        BlockDirections::Outbound => PollFlags::POLLOUT,
        BlockDirections::Both => PollFlags::POLLIN | PollFlags::POLLOUT,
        BlockDirections::None => {
            // libssh2 can report EAGAIN with no direction set, e.g. when what it needs is
            // already in its own buffer: waiting for the socket could then last until the
            // deadline (a 30 s stall after authentication was seen). Its own blocking mode
            // caps this wait at 1 s; a short cap, then a retry of the call, keeps latency.
            let cap = (Instant::now() + UNDIRECTED_WAIT).min(deadline);
            return match poll_ready(fd, PollFlags::POLLIN, wake, cap) {
                Err(Interrupt::Deadline) if Instant::now() < deadline => Ok(()),
                r => r,
            };
        }
    };
    if flags.contains(PollFlags::POLLIN) {
        quickack(fd);
    }
    poll_ready(fd, flags, wake, deadline)
}

/// Wait until `fd` is ready for `flags`, the wake pipe is written (which wins), or
/// `deadline` passes. A signal interrupting the wait counts as ready: callers retry.
fn poll_ready(
    fd: BorrowedFd<'_>,
    flags: PollFlags,
    wake: Option<BorrowedFd<'_>>,
    deadline: Instant,
) -> Result<(), Interrupt> {
    let now = Instant::now();
    if now >= deadline {
        return Err(Interrupt::Deadline);
    }
    let mut fds = vec![PollFd::new(fd, flags)];
    if let Some(w) = wake {
        fds.push(PollFd::new(w, PollFlags::POLLIN));
    }
    let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
    match nix::poll::poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(0) => Err(Interrupt::Deadline),
        Ok(_) => {
            if fds
                .get(1)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
            {
                return Err(Interrupt::Woken);
            }
            Ok(())
        }
        Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(Interrupt::Failed(e.to_string())),
    }
}

/// Have the kernel acknowledge the next segments from the server at once.
///
/// Until its first session starts, sshd writes without TCP_NODELAY. After authentication it
/// sends its host keys (`hostkeys-00@openssh.com`), and its reply to our first channel open
/// then waits behind Nagle for the ACK of that message, which a delayed ACK holds back for
/// ~40 ms: every new connection's first task paid that. Delayed ACKs come back whenever we
/// send, so the flag is set before each wait for the server, for the cost of a syscall.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn quickack(fd: BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    let one: nix::libc::c_int = 1;
    // SAFETY: `fd` is a socket that stays open for the call, and the option value is a
    // live c_int of the length given. A failure only loses the optimisation.
    unsafe {
        nix::libc::setsockopt(
            fd.as_raw_fd(),
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_QUICKACK,
            (&one as *const nix::libc::c_int).cast(),
            std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
        );
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn quickack(_fd: BorrowedFd<'_>) {}

/// Retry a libssh2 call until it stops saying "would block".
fn nb<T>(
    sess: &Session,
    fd: BorrowedFd<'_>,
    wake: Option<BorrowedFd<'_>>,
    deadline: Instant,
    mut op: impl FnMut() -> Result<T, ssh2::Error>,
) -> Result<T, NbError> {
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if e.code() == ErrorCode::Session(EAGAIN) => {
                wait(sess, fd, wake, deadline).map_err(NbError::Interrupt)?
            }
            Err(e) => return Err(NbError::Ssh(e)),
        }
    }
}

/// A non-blocking call's failure.
#[derive(Debug)]
pub enum NbError {
    /// Deadline, wake, or poll failure.
    Interrupt(Interrupt),
    /// libssh2 failed.
    Ssh(ssh2::Error),
}

fn connect_error(t: &SshTarget, reason: impl Into<String>) -> SshError {
    SshError::Connect {
        host: t.host.clone(),
        port: t.port,
        reason: reason.into(),
    }
}

fn handshake_error(t: &SshTarget, e: NbError, what: &str, wake_msg: &str) -> SshError {
    match e {
        NbError::Interrupt(Interrupt::Deadline) => {
            connect_error(t, format!("timed out during {what}"))
        }
        NbError::Interrupt(Interrupt::Woken) => connect_error(t, wake_msg.to_string()),
        NbError::Interrupt(Interrupt::Failed(m)) => connect_error(t, m),
        NbError::Ssh(e) => SshError::Handshake {
            host: t.host.clone(),
            port: t.port,
            reason: format!("{what} failed: {}", e.message()),
        },
    }
}

/// Open, verify and authenticate a new connection.
pub fn connect(
    t: &SshTarget,
    cfg: &SshConfig,
    wake: Option<BorrowedFd<'_>>,
    task_deadline: Instant,
) -> Result<Conn, SshError> {
    let connect_deadline = (Instant::now() + cfg.connect_timeout).min(task_deadline);
    let mut auth_deadline = None;
    // Key types the server offered that did not verify, and the first such refusal.
    let mut offered = Vec::new();
    let mut refused: Option<SshError> = None;
    let (sess, sock) = loop {
        let tcp_deadline = match auth_deadline {
            None => connect_deadline,
            // A retry for another host-key type stays within the first handshake's bound.
            Some(d) => (Instant::now() + cfg.connect_timeout).min(d),
        };
        let stream = match tcp_connect(t, cfg, tcp_deadline, wake) {
            Ok(s) => s,
            Err(e) => return Err(refused.unwrap_or(e)),
        };
        let (sess, sock) = session(t, cfg, stream)?;
        let prepared = t.host_keys.prepare(&sess, &t.host, t.port)?;
        if !offered.is_empty() {
            match hostkey::algorithms_except(&offered) {
                Some(algs) => {
                    let _ = sess.method_pref(ssh2::MethodType::HostKey, &algs);
                }
                None => return Err(refused.unwrap_or_else(|| connect_error(t, "no host key"))),
            }
        }
        let deadline = *auth_deadline
            .get_or_insert_with(|| (Instant::now() + cfg.auth_timeout).min(task_deadline));
        let fd = sock.as_fd();
        // `handshake` wants `&mut`; a clone shares the same libssh2 session for the waits.
        let mut hs = sess.clone();
        if let Err(e) = nb(&sess, fd, wake, deadline, || hs.handshake()) {
            // On a retry, a failed handshake most likely means the server has no key of the
            // types still asked for: the first refusal is the answer.
            return Err(
                refused.unwrap_or_else(|| handshake_error(t, e, "the SSH handshake", "cancelled"))
            );
        }
        match hostkey::verify(&sess, &t.host_keys, prepared.as_ref(), &t.host, t.port) {
            Ok(()) => break (sess, sock),
            // A pinned fingerprint or a hashed known_hosts entry does not say which key
            // type it trusts, so the server may hold the trusted key under another type
            // than the one it offered first: ask again for the types not seen yet.
            Err(e @ (SshError::HostKeyUnknown { .. } | SshError::HostKeyChanged { .. }))
                if prepared
                    .as_ref()
                    .is_some_and(hostkey::Prepared::has_untyped_trust) =>
            {
                let Some((_, kind)) = sess.host_key() else {
                    return Err(e);
                };
                tracing::debug!(host = %t.host, port = t.port, ?kind, "host key of this type is not trusted; asking for another type");
                offered.push(kind);
                refused.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    };
    let deadline = auth_deadline.unwrap_or(task_deadline);
    authenticate(&sess, t, sock.as_fd(), wake, deadline)?;
    Ok(Conn {
        sess,
        sock,
        last_used: Instant::now(),
        reused: false,
    })
}

/// A TCP connection to the first address of the host that accepts, with TCP_NODELAY set.
///
/// Name resolution and the connects run on a helper thread: getaddrinfo has no timeout of
/// its own (a silent name server holds it for timeout × attempts, 10 s by default), and a
/// blocking connect cannot be woken. This thread waits for the helper, the deadline or the
/// wake pipe, whichever comes first; an abandoned helper finishes on its own and its
/// socket, if any, is closed.
fn tcp_connect(
    t: &SshTarget,
    cfg: &SshConfig,
    deadline: Instant,
    wake: Option<BorrowedFd<'_>>,
) -> Result<TcpStream, SshError> {
    let timed_out = || {
        connect_error(
            t,
            format!("timed out after {} ms", cfg.connect_timeout.as_millis()),
        )
    };
    let (done_r, done_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| connect_error(t, format!("creating a pipe: {e}")))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let (host, port, timeout) = (t.host.clone(), t.port, cfg.connect_timeout);
    std::thread::Builder::new()
        .name("csm-ssh-connect".into())
        .spawn(move || {
            let _ = tx.send(resolve_and_connect(&host, port, deadline, timeout));
            let _ = nix::unistd::write(&done_w, b"x");
        })
        .map_err(|e| connect_error(t, format!("starting the connect thread: {e}")))?;
    loop {
        match poll_ready(done_r.as_fd(), PollFlags::POLLIN, wake, deadline) {
            Ok(()) => {}
            Err(Interrupt::Deadline) => return Err(timed_out()),
            Err(Interrupt::Woken) => return Err(connect_error(t, "cancelled")),
            Err(Interrupt::Failed(m)) => return Err(connect_error(t, m)),
        }
        match rx.try_recv() {
            Ok(r) => break r.map_err(|reason| connect_error(t, reason)),
            Err(std::sync::mpsc::TryRecvError::Empty) => continue,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                return Err(connect_error(t, "the connect thread failed"))
            }
        }
    }
}

/// Resolve `host` and connect to its addresses in turn until one accepts or `deadline`
/// passes. Runs on the helper thread of [`tcp_connect`].
fn resolve_and_connect(
    host: &str,
    port: u16,
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err("the host name resolved to no address".into());
    }
    let timed_out = || format!("timed out after {} ms", timeout.as_millis());
    let mut last = String::new();
    for addr in &addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(s) => {
                // Without it every exchange on a reused connection waits ~40 ms for
                // delayed ACKs.
                s.set_nodelay(true)
                    .map_err(|e| format!("setting TCP_NODELAY: {e}"))?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => last = timed_out(),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// A non-blocking libssh2 session on `stream`, and a duplicate of the socket to poll.
fn session(
    t: &SshTarget,
    cfg: &SshConfig,
    stream: TcpStream,
) -> Result<(Session, TcpStream), SshError> {
    let sock = stream
        .try_clone()
        .map_err(|e| connect_error(t, e.to_string()))?;
    let mut sess = Session::new().map_err(|e| connect_error(t, e.message().to_string()))?;
    sess.set_tcp_stream(stream);
    sess.set_blocking(false);
    sess.set_keepalive(
        false,
        cfg.keepalive.as_secs().clamp(1, u32::MAX as u64) as u32,
    );
    Ok((sess, sock))
}

/// Authenticate with the credential's one method. Errors name the method, never a secret.
fn authenticate(
    sess: &Session,
    t: &SshTarget,
    fd: BorrowedFd<'_>,
    wake: Option<BorrowedFd<'_>>,
    deadline: Instant,
) -> Result<(), SshError> {
    let user = t.credential.user.as_str();
    let (method, result) = match &t.credential.auth {
        SshAuth::Key {
            private_key,
            passphrase,
        } => (
            "publickey (inline key)".to_string(),
            nb(sess, fd, wake, deadline, || {
                sess.userauth_pubkey_memory(
                    user,
                    None,
                    private_key.expose_secret(),
                    passphrase.as_ref().map(|p| p.expose_secret()),
                )
            }),
        ),
        SshAuth::KeyFile { path, passphrase } => {
            if let Err(e) = std::fs::metadata(path) {
                return Err(SshError::Auth {
                    host: t.host.clone(),
                    port: t.port,
                    user: user.to_string(),
                    tried: vec![format!("publickey (key file {})", path.display())],
                    detail: format!("the key file cannot be read: {e}"),
                });
            }
            (
                format!("publickey (key file {})", path.display()),
                nb(sess, fd, wake, deadline, || {
                    sess.userauth_pubkey_file(
                        user,
                        None,
                        path,
                        passphrase.as_ref().map(|p| p.expose_secret()),
                    )
                }),
            )
        }
        SshAuth::Password(pw) => (
            "password".to_string(),
            nb(sess, fd, wake, deadline, || {
                sess.userauth_password(user, pw.expose_secret())
            }),
        ),
    };
    match result {
        Ok(()) if sess.authenticated() => Ok(()),
        Ok(()) => Err(auth_error(
            t,
            method,
            "the server did not accept the credential".into(),
        )),
        Err(NbError::Interrupt(i)) => Err(match i {
            Interrupt::Deadline => connect_error(t, "timed out during authentication"),
            Interrupt::Woken => connect_error(t, "cancelled"),
            Interrupt::Failed(m) => connect_error(t, m),
        }),
        Err(NbError::Ssh(e)) => {
            // libssh2's own text can be vague; these codes are stable.
            let detail = match e.code() {
                ErrorCode::Session(-16) => "the private key could not be read or decrypted (wrong passphrase, or an unsupported format)".to_string(),
                ErrorCode::Session(-18) | ErrorCode::Session(-19) => "the server rejected the credential".to_string(),
                _ => format!("libssh2 error {}", e.message()),
            };
            Err(auth_error(t, method, detail))
        }
    }
}

fn auth_error(t: &SshTarget, method: String, detail: String) -> SshError {
    SshError::Auth {
        host: t.host.clone(),
        port: t.port,
        user: t.credential.user.clone(),
        tried: vec![method],
        detail,
    }
}

/// What one run on a channel produced.
pub struct ChannelRun {
    /// Frames from the wrapper.
    pub frames: FrameReader,
    /// The merged, masked log.
    pub log: LogCapture,
    /// How the remote process ended.
    pub exit: Exit,
    /// Why the run stopped early, if it did.
    pub interrupted: Option<RunInterrupt>,
    /// Whether any script byte reached the server: if not, a failure is safe to retry.
    pub started: bool,
    /// Whether the connection is still fit for the pool.
    pub healthy: bool,
    /// Whether the remote attempt's full clean-up was already sent over a second channel.
    pub swept: bool,
}

/// Why a channel run did not end by itself.
#[derive(Debug)]
pub enum RunInterrupt {
    /// The task deadline passed; the remote group was signalled.
    Timeout,
    /// Cancelled; the remote group was killed.
    Cancelled,
    /// The connection failed.
    Broken(String),
}

/// Everything a channel run needs besides the connection.
pub struct RunSpec<'a> {
    /// The nonce line, prologue and rendered script.
    pub input: &'a [u8],
    /// The attempt's wrapper session: the nonce its frames carry, the marker its
    /// processes carry.
    pub session: &'a WrapperSession,
    /// Bounds.
    pub limits: &'a Limits,
    /// When the task's time is up.
    pub deadline: Instant,
    /// How long a reused connection may take to open the channel and start the command.
    pub setup_timeout: Duration,
}

/// Run the wrapped script on a new channel of `conn`.
pub fn run(conn: &Conn, spec: &RunSpec<'_>, log: LogCapture, wake: &OwnedFd) -> ChannelRun {
    let sess = &conn.sess;
    let fd = conn.sock.as_fd();
    let wake = Some(wake.as_fd());
    let mut out = ChannelRun {
        frames: spec.session.frame_reader(spec.limits.max_secret, true),
        log,
        exit: Exit::Unknown,
        interrupted: None,
        started: false,
        healthy: true,
        swept: false,
    };
    let broken = |out: &mut ChannelRun, e: NbError| {
        out.healthy = false;
        out.interrupted = Some(match e {
            NbError::Interrupt(Interrupt::Deadline) => RunInterrupt::Timeout,
            NbError::Interrupt(Interrupt::Woken) => RunInterrupt::Cancelled,
            NbError::Interrupt(Interrupt::Failed(m)) => RunInterrupt::Broken(m),
            NbError::Ssh(e) => RunInterrupt::Broken(e.message().to_string()),
        });
    };
    // A pooled connection can be dead without a word (a NAT that forgot the mapping, a
    // frozen host): no RST, and a channel request into it waits forever. Nothing has been
    // sent to the script yet, so a connection that does not answer within the setup bound
    // is reported broken, and the task moves to a fresh one with most of its time left.
    let setup = if conn.reused {
        (Instant::now() + spec.setup_timeout).min(spec.deadline)
    } else {
        spec.deadline
    };
    let silent = |out: &mut ChannelRun, e: NbError| match e {
        NbError::Interrupt(Interrupt::Deadline) if Instant::now() < spec.deadline => {
            out.healthy = false;
            out.interrupted = Some(RunInterrupt::Broken(format!(
                "the pooled connection did not answer within {} ms",
                spec.setup_timeout.as_millis()
            )));
        }
        e => broken(out, e),
    };
    let mut ch = match nb(sess, fd, wake, setup, || sess.channel_session()) {
        Ok(c) => c,
        Err(e) => {
            silent(&mut out, e);
            return out;
        }
    };
    let cmd = wrapper::remote_command();
    if let Err(e) = nb(sess, fd, wake, setup, || ch.exec(&cmd)) {
        silent(&mut out, e);
        return out;
    }
    drive(sess, &mut ch, fd, wake, spec, &mut out);
    // The relay reports (`end`) once it has killed what the script left and removed its
    // temporary directory. Without that report (the script killed the relay, or the run
    // was cut short) the executor does the same over a second channel before the task
    // returns: nothing the script started outlives it.
    if !out.frames.ended() && !out.swept {
        remote_kill(sess, fd, out.frames.pgid(), spec.session.marker(), true);
    }
    out
}

/// Feed the script, drain both streams, and walk the kill ladder, until the channel closes.
fn drive(
    sess: &Session,
    ch: &mut Channel,
    fd: BorrowedFd<'_>,
    wake: Option<BorrowedFd<'_>>,
    spec: &RunSpec<'_>,
    out: &mut ChannelRun,
) {
    let mut pos = 0usize;
    let mut eof_sent = false;
    let mut buf = vec![0u8; 32 * 1024];
    let mut ladder = Ladder::new(spec.deadline, spec.limits.grace, spec.limits.drain);
    let mut retries = 0;
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let marker = spec.session.marker();

    loop {
        let mut progress = false;
        if pos < spec.input.len() {
            match ch.write(&spec.input[pos..]) {
                Ok(n) => {
                    pos += n;
                    out.started = true;
                    progress = n > 0;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return fail(out, e.to_string()),
            }
        } else if !eof_sent {
            match ch.send_eof() {
                Ok(()) => {
                    eof_sent = true;
                    progress = true;
                }
                Err(e) if e.code() == ErrorCode::Session(EAGAIN) => {}
                Err(e) => return fail(out, e.message().to_string()),
            }
        }
        // stdout carries only frames; stderr carries the script's merged output.
        let mut streams_done = true;
        for stream_id in [0, 1] {
            let r = if stream_id == 0 {
                ch.read(&mut buf)
            } else {
                ch.stderr().read(&mut buf)
            };
            match r {
                Ok(0) => {}
                Ok(n) => {
                    streams_done = false;
                    progress = true;
                    if stream_id == 0 {
                        out.frames.push(&buf[..n]);
                    } else {
                        out.log.push(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => streams_done = false,
                Err(e) => return fail(out, e.to_string()),
            }
        }
        if streams_done && ch.eof() {
            break;
        }
        let now = Instant::now();
        // The script reported: what it left must not hold the channel for long.
        if out.frames.is_complete() {
            ladder.ended(now);
        }
        while let Some(step) = ladder.due(now) {
            match step {
                Step::Term => {
                    out.interrupted = Some(RunInterrupt::Timeout);
                    let _ = remote_kill(sess, fd, out.frames.pgid(), marker, false);
                }
                Step::Kill => {
                    out.swept = remote_kill(sess, fd, out.frames.pgid(), marker, true);
                }
                Step::GiveUp => {
                    out.healthy = false;
                    return;
                }
                Step::StopDraining => {
                    out.swept = remote_kill(sess, fd, out.frames.pgid(), marker, true);
                    out.healthy = false;
                    return;
                }
            }
        }
        if progress {
            retries = 0;
            continue;
        }
        if queued(ch) && retries < QUEUED_RETRIES {
            retries += 1;
            continue;
        }
        match wait(sess, fd, wake, ladder.next().unwrap_or(far)) {
            Ok(()) | Err(Interrupt::Deadline) => {}
            Err(Interrupt::Woken) => {
                // The group may be reported but not read yet, or not reported yet: a kill
                // skipped for want of it would leave the script running until its relay's
                // deadline.
                let limit = Instant::now() + spec.limits.grace;
                let pgid = await_pgid(sess, ch, fd, out, &mut buf, limit);
                out.swept = remote_kill(sess, fd, pgid, marker, true);
                out.interrupted = Some(RunInterrupt::Cancelled);
                out.healthy = false;
                return;
            }
            Err(Interrupt::Failed(m)) => return fail(out, m),
        }
    }
    // Close politely so that the exit status is in; a short bound keeps a bad peer from
    // holding us.
    let close_deadline = Instant::now() + Duration::from_secs(2);
    let closed = nb(sess, fd, wake, close_deadline, || ch.close())
        .and_then(|_| nb(sess, fd, wake, close_deadline, || ch.wait_close()));
    if closed.is_err() {
        out.healthy = false;
    }
    out.exit = match ch.exit_signal() {
        Ok(s) if s.exit_signal.is_some() => {
            Exit::Signal(signal_number(s.exit_signal.as_deref().unwrap_or("")))
        }
        _ => match ch.exit_status() {
            Ok(c) => Exit::Code(c),
            Err(_) => Exit::Unknown,
        },
    };
}

/// The remote process group: read what the channel has (frames, and log) until the
/// bootstrap's `pid` frame is in, the channel ends, or `limit` passes. No wake fd: this
/// runs after a cancellation, to carry it out.
fn await_pgid(
    sess: &Session,
    ch: &mut Channel,
    fd: BorrowedFd<'_>,
    out: &mut ChannelRun,
    buf: &mut [u8],
    limit: Instant,
) -> Option<i32> {
    let mut retries = 0;
    loop {
        if let Some(p) = out.frames.pgid() {
            return Some(p);
        }
        let mut progress = false;
        match ch.read(buf) {
            Ok(n) if n > 0 => {
                out.frames.push(&buf[..n]);
                progress = true;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return None,
        }
        match ch.stderr().read(buf) {
            Ok(n) if n > 0 => {
                out.log.push(&buf[..n]);
                progress = true;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return None,
        }
        if progress || (queued(ch) && retries < QUEUED_RETRIES) {
            retries = if progress { 0 } else { retries + 1 };
            continue;
        }
        if ch.eof() || wait(sess, fd, None, limit).is_err() {
            return out.frames.pgid();
        }
    }
}

/// Whether libssh2 holds data for `ch` that it already read off the socket.
///
/// A read of one stream drains the socket into libssh2's queue, packets for the other
/// stream (and EOF) included. Waiting on the socket then would sleep on data that has
/// already arrived: seen as a finished task stalling until its deadline.
fn queued(ch: &Channel) -> bool {
    ch.read_window().available > 0
}

/// Retries allowed for queued data that no read drains, before waiting anyway: a
/// guard against spinning on data for a stream we do not read.
const QUEUED_RETRIES: u32 = 3;

fn fail(out: &mut ChannelRun, reason: String) {
    out.healthy = false;
    if out.interrupted.is_none() {
        out.interrupted = Some(RunInterrupt::Broken(reason));
    }
}

fn signal_number(name: &str) -> i32 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "KILL" => 9,
        "PIPE" => 13,
        "TERM" => 15,
        _ => 0,
    }
}

/// Signal the remote attempt over a second channel: SIGTERM to its process group, or
/// (`kill`) SIGKILL to the group, its session and its marked processes, and removal of its
/// temporary directory ([`wrapper::remote_signal_command`]). Best effort and bounded: the
/// remote relay is the backstop when the connection is gone. Only the group the bootstrap
/// reported (never one the script wrote) is targeted, and never one below 2. Returns whether
/// the command ran.
fn remote_kill(
    sess: &Session,
    fd: BorrowedFd<'_>,
    pgid: Option<i32>,
    marker: &str,
    kill: bool,
) -> bool {
    let Some(pgid) = pgid.filter(|&p| p > 1) else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    // No wake fd: a cancellation must not interrupt the kill it asked for.
    let never = None;
    let mut ch = match nb(sess, fd, never, deadline, || sess.channel_session()) {
        Ok(c) => c,
        Err(_) => return false,
    };
    let cmd = wrapper::remote_signal_command(pgid, marker, kill);
    let ran = nb(sess, fd, never, deadline, || ch.exec(&cmd)).is_ok();
    if ran {
        let _ = nb(sess, fd, never, deadline, || ch.send_eof());
        let _ = nb(sess, fd, never, deadline, || ch.wait_eof());
        let _ = nb(sess, fd, never, deadline, || ch.close());
    }
    tracing::debug!(pgid, kill, ran, "signalled the remote attempt");
    ran
}
