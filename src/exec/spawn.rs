//! Starting local bash with `posix_spawn` (no `fork` of the agent: cheaper, and no code of
//! ours runs between fork and exec), through libc directly for what `nix` does not offer:
//! `posix_spawn_file_actions_addclosefrom_np`.
//!
//! The child gets exactly: stdin, stdout and stderr, and the result channel at the two
//! descriptors the wrapper names. Everything else is closed in the child, including any
//! descriptor the agent itself inherited without close-on-exec (a file its parent left open
//! at fd 9 must not reach a script). The child leads a new process group, has an empty
//! signal mask, and the signals the agent may have changed back at their defaults.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc;
use nix::unistd::Pid;

/// The child's descriptors, as the parent holds them.
pub(crate) struct ChildFds<'a> {
    pub stdin: BorrowedFd<'a>,
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
    pub channel: BorrowedFd<'a>,
    /// Where the channel goes in the child (both copies).
    pub channel_at: (i32, i32),
}

/// Signals whose disposition the agent may have changed (Rust ignores SIGPIPE). An ignored
/// signal stays ignored across exec, so the child gets these back at their defaults.
const RESET_SIGNALS: &[libc::c_int] = &[
    libc::SIGPIPE,
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

fn check(rc: libc::c_int) -> io::Result<()> {
    // posix_spawn* return the error number instead of setting errno.
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

struct Actions(libc::posix_spawn_file_actions_t);

impl Drop for Actions {
    fn drop(&mut self) {
        // SAFETY: initialised in `spawn` before this guard exists.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

struct Attr(libc::posix_spawnattr_t);

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: initialised in `spawn` before this guard exists.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// Spawn `path` with `args` and `env`, wired as `fds` says.
pub(crate) fn spawn(
    path: &CStr,
    args: &[&CStr],
    env: &[&CStr],
    fds: &ChildFds<'_>,
) -> io::Result<Pid> {
    let (a, b) = fds.channel_at;
    assert!(
        a > 3 && b > 3 && a != b,
        "channel descriptors must be above 3"
    );
    // SAFETY: plain C calls on locals that outlive them; every pointer handed to
    // posix_spawn (path, argv, envp, actions, attr) stays valid until it returns.
    unsafe {
        let mut actions = std::mem::zeroed::<libc::posix_spawn_file_actions_t>();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        let mut actions = Actions(actions);
        let acts = &mut actions.0;
        // The sources sit at fd 4 or above (close-on-exec), so these dup2s cannot clobber
        // one another; dup2 clears close-on-exec on the targets.
        for (src, dst) in [
            (fds.stdin.as_raw_fd(), 0),
            (fds.stdout.as_raw_fd(), 1),
            (fds.stderr.as_raw_fd(), 2),
            (fds.channel.as_raw_fd(), 3),
        ] {
            check(libc::posix_spawn_file_actions_adddup2(acts, src, dst))?;
        }
        // Close everything above the four, then put the channel where the wrapper wants it.
        check(libc::posix_spawn_file_actions_addclosefrom_np(acts, 4))?;
        check(libc::posix_spawn_file_actions_adddup2(acts, 3, a))?;
        check(libc::posix_spawn_file_actions_adddup2(acts, 3, b))?;
        check(libc::posix_spawn_file_actions_addclose(acts, 3))?;

        let mut attr = std::mem::zeroed::<libc::posix_spawnattr_t>();
        check(libc::posix_spawnattr_init(&mut attr))?;
        let mut attr = Attr(attr);
        let at = &mut attr.0;
        // A new process group led by bash: every process the script starts carries bash's
        // pid as its group unless it moves. Not a new session: with autogroup scheduling
        // (the Linux default) every session is a scheduling group of its own, and creating
        // one per attempt doubled the local per-task latency on a busy machine.
        let flags = (libc::POSIX_SPAWN_SETPGROUP
            | libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short;
        check(libc::posix_spawnattr_setflags(at, flags))?;
        check(libc::posix_spawnattr_setpgroup(at, 0))?;
        let mut empty = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut empty);
        check(libc::posix_spawnattr_setsigmask(at, &empty))?;
        let mut defaults = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut defaults);
        for &s in RESET_SIGNALS {
            libc::sigaddset(&mut defaults, s);
        }
        check(libc::posix_spawnattr_setsigdefault(at, &defaults))?;

        let mut argv: Vec<*mut libc::c_char> = args.iter().map(|s| s.as_ptr().cast_mut()).collect();
        argv.push(std::ptr::null_mut());
        let mut envp: Vec<*mut libc::c_char> = env.iter().map(|s| s.as_ptr().cast_mut()).collect();
        envp.push(std::ptr::null_mut());
        let mut pid: libc::pid_t = 0;
        check(libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            &actions.0,
            &attr.0,
            argv.as_ptr(),
            envp.as_ptr(),
        ))?;
        Ok(Pid::from_raw(pid))
    }
}

/// `NAME=value` as a C string, or `None` if either holds a NUL.
pub(crate) fn env_entry(name: &str, value: &str) -> Option<CString> {
    CString::new(format!("{name}={value}")).ok()
}
