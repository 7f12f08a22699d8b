//! Shared support code for the integration tests (`mod support;` in each test file).
//!
//! - [`sshd`]: a real OpenSSH `sshd` on a free 127.0.0.1 port, with generated keys.
//! - [`ssh`]: targets, jobs and /proc probes for the SSH executor tests against [`sshd`].
//! - [`skip`]: loud skips that fail under CI.
//! - [`bashfuzz`]: the differential fuzzer of the template renderer against real bash.
//! - [`agentnet`]: an in-process manager, real agent processes, hand-driven WebSocket peers.
//! - [`standins`]: loopback stand-ins for the secret stores of `examples/templates/`.
//! - [`podman`]: containers (podman + runc, mmdebstrap images) for the shipping tests.
//! - [`ship`]: a real `csm-agent manager` process for the shipping tests.

// Each integration test binary compiles this module on its own and uses only part of
// it, so items unused by one binary would otherwise trip `dead_code` there.
#![allow(dead_code)]

pub mod agentnet;
pub mod bashfuzz;
pub mod podman;
pub mod ship;
pub mod skip;
pub mod ssh;
pub mod sshd;
pub mod standins;

/// Whether process `pid` exits by `deadline`, without reaping it (it need not be our
/// child): a pidfd becomes readable when it exits, so this waits on the event itself.
pub fn exits_by(pid: i32, deadline: std::time::Instant) -> bool {
    use nix::libc;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    use std::time::Instant;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return true;
    }
    // SAFETY: the descriptor was just returned to us and nobody else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return true,
            Ok(_) if left.is_zero() => return false,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return true,
        }
    }
}
