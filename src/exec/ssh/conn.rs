//! One SSH connection driven without blocking: the connection, the waits every libssh2
//! call goes through, and running one wrapped script on a channel. Opening a connection
//! (connect, handshake, host key, authentication) is [`super::connect`]'s.
//!
//! libssh2 runs in non-blocking mode on a blocking thread. Every operation that would block
//! waits in `poll(2)` on the socket and on a wake pipe, never longer than the current
//! deadline. One loop therefore drains stdout and stderr together, so a chatty script
//! cannot fill the channel window and deadlock a read of the other stream. The same loop
//! enforces deadlines and notices cancellation at once, and no libssh2 call can hang.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use ssh2::{BlockDirections, Channel, ErrorCode, Session};

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
    pub(super) sock: TcpStream,
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
pub(super) fn wait(
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
pub(super) fn poll_ready(
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
pub(super) fn nb<T>(
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
