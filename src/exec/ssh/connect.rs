//! Opening an SSH connection: resolve and connect within the connect bound, then the
//! server's identification line, the handshake, host-key verification and authentication
//! within the handshake bound, all through [`super::conn`]'s non-blocking waits and under
//! the attempt's [`Watch`], which shuts the socket down if a libssh2 call outlives the
//! bound.
//!
//! The identification line is awaited here, before libssh2 sees the socket: libssh2 reads
//! it one byte per `recv`, and reads any number of lines that do not start with `SSH-`,
//! so a server streaming a line without end would keep it busy inside one call. Here it
//! must arrive within [`MAX_PREAMBLE`] bytes, read with `MSG_PEEK` (libssh2 then reads the
//! same bytes) and `SO_RCVLOWAT` (so a partial line does not wake the wait over and over).

use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use secrecy::ExposeSecret;
use ssh2::{ErrorCode, Session};

use super::conn::{nb, poll_ready, Conn, Interrupt, NbError};
use super::hostkey;
use super::watchdog::Watch;
use super::{SshAuth, SshConfig, SshError, SshTarget};

/// The most a server may send before and including its identification line (`SSH-…`):
/// libssh2's own banner buffer. RFC 4253 allows other lines before it.
pub const MAX_PREAMBLE: usize = 8192;

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

/// Open, verify and authenticate a new connection. `watch` follows each socket opened and
/// is armed at the handshake bound; it is left armed, for the caller to re-arm.
pub fn connect(
    t: &SshTarget,
    cfg: &SshConfig,
    wake: Option<BorrowedFd<'_>>,
    task_deadline: Instant,
    watch: &Watch,
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
        let deadline = *auth_deadline
            .get_or_insert_with(|| (Instant::now() + cfg.auth_timeout).min(task_deadline));
        // Nothing to clean up yet: a cancellation takes the socket at once.
        watch.attach(&stream);
        watch.arm(deadline, Duration::ZERO);
        if let Err(e) = await_identification(&stream, wake, deadline) {
            // The watchdog shuts the socket down at the same deadline: a hang-up then is
            // the deadline, not the server.
            let e = if watch.fired() {
                Preamble::Interrupted(Interrupt::Deadline)
            } else {
                e
            };
            return Err(refused.unwrap_or_else(|| match e {
                Preamble::Interrupted(i) => {
                    handshake_error(t, NbError::Interrupt(i), "the SSH handshake", "cancelled")
                }
                Preamble::Refused(reason) => SshError::Handshake {
                    host: t.host.clone(),
                    port: t.port,
                    reason,
                },
            }));
        }
        let (sess, sock) = session(t, cfg, stream)?;
        let prepared = t.host_keys.prepare(&sess, &t.host, t.port)?;
        if !offered.is_empty() {
            match hostkey::algorithms_except(prepared.as_ref(), &offered) {
                Some(algs) => {
                    let _ = sess.method_pref(ssh2::MethodType::HostKey, &algs);
                }
                None => return Err(refused.unwrap_or_else(|| connect_error(t, "no host key"))),
            }
        }
        let fd = sock.as_fd();
        // `handshake` wants `&mut`; a clone shares the same libssh2 session for the waits.
        let mut hs = sess.clone();
        if let Err(e) = nb(&sess, fd, wake, deadline, || hs.handshake()) {
            // On a retry, a failed handshake most likely means the server has no key of the
            // types still asked for: the first refusal is the answer.
            let e = if watch.fired() {
                NbError::Interrupt(Interrupt::Deadline)
            } else {
                e
            };
            return Err(
                refused.unwrap_or_else(|| handshake_error(t, e, "the SSH handshake", "cancelled"))
            );
        }
        match hostkey::verify(&sess, &t.host_keys, prepared.as_ref(), &t.host, t.port) {
            Ok(()) => break (sess, sock),
            // A pinned fingerprint does not say which key type it trusts, so the server
            // may hold the pinned key under another type than the one it offered first:
            // ask again for the types not seen yet. A revoked key is final.
            Err(
                e @ (SshError::HostKeyUnknown { .. }
                | SshError::HostKeyChanged { .. }
                | SshError::HostKeyTypeMismatch { .. }),
            ) if prepared
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
    authenticate(&sess, t, sock.as_fd(), wake, deadline).map_err(|e| {
        if watch.fired() && !matches!(e, SshError::Auth { .. }) {
            connect_error(t, "timed out during authentication")
        } else {
            e
        }
    })?;
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

/// Why the server's identification line did not arrive.
#[derive(Debug)]
enum Preamble {
    /// The deadline, a cancellation, or a failed wait.
    Interrupted(Interrupt),
    /// The server closed the connection, or sent something other than SSH.
    Refused(String),
}

/// Wait until the first [`MAX_PREAMBLE`] bytes from the server hold a complete line
/// starting with `SSH-`, without consuming them.
fn await_identification(
    stream: &TcpStream,
    wake: Option<BorrowedFd<'_>>,
    deadline: Instant,
) -> Result<(), Preamble> {
    let refused = |m: &str| Preamble::Refused(m.to_string());
    stream
        .set_nonblocking(true)
        .map_err(|e| Preamble::Interrupted(Interrupt::Failed(e.to_string())))?;
    let mut buf = vec![0u8; MAX_PREAMBLE];
    let lowat = RecvLowat(stream.as_fd());
    let mut hung_up = false;
    loop {
        match stream.peek(&mut buf) {
            Ok(0) => {
                return Err(refused(
                    "the server closed the connection before identifying itself",
                ))
            }
            Ok(n) => {
                if has_identification(&buf[..n]) {
                    return Ok(());
                }
                if n >= MAX_PREAMBLE {
                    return Err(Preamble::Refused(format!(
                        "the server sent {MAX_PREAMBLE} bytes without an SSH identification line (not an SSH server?)"
                    )));
                }
                if hung_up {
                    return Err(refused(
                        "the server closed the connection before identifying itself",
                    ));
                }
                // Wake again only when more than what is here has arrived.
                lowat.set(n + 1);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Preamble::Interrupted(Interrupt::Failed(e.to_string()))),
        }
        hung_up = poll_input(stream.as_fd(), wake, deadline).map_err(Preamble::Interrupted)?;
    }
}

/// Whether `buf` holds a complete line (ended by `\n`) that starts with `SSH-`.
fn has_identification(buf: &[u8]) -> bool {
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
        if buf[start..].starts_with(b"SSH-") {
            return true;
        }
        start += nl + 1;
    }
    false
}

/// The peer shut its side down (nix does not name it).
const POLLRDHUP: PollFlags = PollFlags::from_bits_retain(nix::libc::POLLRDHUP);

/// Wait for input (or a hang-up, returned as `true`) on `fd`, the wake pipe, or `deadline`.
fn poll_input(
    fd: BorrowedFd<'_>,
    wake: Option<BorrowedFd<'_>>,
    deadline: Instant,
) -> Result<bool, Interrupt> {
    use nix::poll::{PollFd, PollTimeout};
    let now = Instant::now();
    if now >= deadline {
        return Err(Interrupt::Deadline);
    }
    let mut fds = vec![PollFd::new(fd, PollFlags::POLLIN | POLLRDHUP)];
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
            let r = fds[0].revents().unwrap_or(PollFlags::empty());
            Ok(r.intersects(POLLRDHUP | PollFlags::POLLHUP | PollFlags::POLLERR))
        }
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(Interrupt::Failed(e.to_string())),
    }
}

/// `SO_RCVLOWAT` on a socket, reset to 1 on drop: libssh2's waits expect any byte to wake
/// them.
struct RecvLowat<'a>(BorrowedFd<'a>);

impl RecvLowat<'_> {
    fn set(&self, bytes: usize) {
        use std::os::fd::AsRawFd;
        let v = bytes.min(i32::MAX as usize) as nix::libc::c_int;
        // SAFETY: the descriptor is a socket borrowed for the call, and the option value is
        // a live c_int of the length given. A failure only makes the wait wake more often.
        unsafe {
            nix::libc::setsockopt(
                self.0.as_raw_fd(),
                nix::libc::SOL_SOCKET,
                nix::libc::SO_RCVLOWAT,
                (&v as *const nix::libc::c_int).cast(),
                std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
            );
        }
    }
}

impl Drop for RecvLowat<'_> {
    fn drop(&mut self) {
        self.set(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identification_is_a_complete_ssh_line_after_any_other_lines() {
        assert!(has_identification(b"SSH-2.0-x\r\n"));
        assert!(has_identification(b"hello\r\nworld\nSSH-2.0-x\n"));
        assert!(!has_identification(b"SSH-2.0-x"));
        assert!(!has_identification(b"hello SSH-2.0-x\n"));
        assert!(!has_identification(b"hello\nSSH-2.0"));
    }
}
