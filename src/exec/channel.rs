//! The local result channel: a `SOCK_STREAM` unix socket pair whose agent end has
//! `SO_PASSCRED` set.
//!
//! With `SO_PASSCRED`, Linux attaches the sending process's credentials to every read and
//! never joins data from different senders into one read. The agent therefore keeps only
//! the bytes the bash process it spawned sent itself; anything written by another process
//! that holds the descriptor (a child, a subshell) is dropped and counted, and a warning is
//! logged once per attempt, never with its content. A program `exec`ed by bash keeps bash's
//! pid, so the frames also carry the attempt's nonce ([`super::frames`]).

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    recvmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixCredentials,
};
use tokio::io::unix::AsyncFd;

/// The agent's end of the channel.
pub(crate) struct Channel {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
    cmsg: Vec<u8>,
}

/// One read from the channel.
pub(crate) enum Read<'a> {
    /// Bytes from the process with this pid (0 if the kernel attached none).
    Data(i32, &'a [u8]),
    /// Every holder of the other end has closed it.
    Eof,
}

/// A socket pair: the agent's end (to become a [`Channel`] with [`Channel::new`], on the
/// runtime that reads it), and the end bash gets (close-on-exec here; the spawn `dup2`s it
/// into place).
pub(crate) fn pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    // Non-blocking on our side only: the flag belongs to each end's open file, and bash's
    // end must block (a write into a full socket would otherwise fail with EAGAIN).
    fcntl(&theirs, FcntlArg::F_SETFL(OFlag::empty()))?;
    setsockopt(&ours, sockopt::PassCred, &true)?;
    Ok((ours, theirs))
}

/// Block until bash sends the one byte `r` on the agent's end of a [`pair`] (the local
/// bootstrap's "ready", [`super::wrapper::local_bootstrap`]), for at most `patience`.
pub(crate) fn await_ready(ours: &OwnedFd, patience: std::time::Duration) -> std::io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + patience;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(ours.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => return Err(std::io::ErrorKind::TimedOut.into()),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let mut b = [0u8; 1];
        return match nix::sys::socket::recv(ours.as_raw_fd(), &mut b, MsgFlags::empty()) {
            Ok(1) if b[0] == b'r' => Ok(()),
            Ok(0) => Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => Err(std::io::ErrorKind::InvalidData.into()),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}

impl Channel {
    /// The agent's end of a [`pair`], registered with the current runtime.
    pub(crate) fn new(ours: OwnedFd) -> std::io::Result<Channel> {
        // SAFETY: an OwnedFd keeps its one descriptor open, unchanged, until it drops with
        // the AsyncFd.
        let fd = unsafe { AsyncFd::register_with_interest(ours, tokio::io::Interest::READABLE) }?;
        Ok(Channel {
            fd,
            buf: vec![0u8; 16 * 1024],
            cmsg: nix::cmsg_space!(UnixCredentials),
        })
    }

    /// The next read, with the sender's pid.
    pub(crate) async fn read(&mut self) -> std::io::Result<Read<'_>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let (buf, cmsg) = (&mut self.buf, &mut self.cmsg);
            let got = guard.try_io(|fd| {
                let mut iov = [IoSliceMut::new(buf)];
                let msg = recvmsg::<()>(
                    fd.as_raw_fd(),
                    &mut iov,
                    Some(cmsg),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                )
                .map_err(std::io::Error::from)?;
                let mut pid = 0;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmCredentials(cred) = c {
                            pid = cred.pid();
                        }
                    }
                }
                Ok((msg.bytes, pid))
            });
            match got {
                Ok(Ok((0, _))) => return Ok(Read::Eof),
                Ok(Ok((n, pid))) => return Ok(Read::Data(pid, &self.buf[..n])),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}
