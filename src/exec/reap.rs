//! Nothing a local script starts outlives its attempt: the process group, then every orphan
//! the attempt left behind.
//!
//! A process that calls `setsid`, or a job under `set -m`, leaves bash's process group, and
//! a double-forked daemon leaves bash's tree. So the local executor makes the agent a
//! *child subreaper* (`PR_SET_CHILD_SUBREAPER`, set once, the first time it runs a script):
//! every orphan a script leaves is re-parented to the agent instead of to init, where the
//! agent can see it, attribute it and kill it. When an attempt ends, the agent looks at its
//! own children (as /proc lists them under its main thread, where the kernel puts orphans)
//! that are not a running attempt's bash, and attributes each one:
//!
//! 1. by the attempt marker in its environment (`CSM_AGENT_TASK`, which every process the
//!    script starts inherits unless it clears its environment);
//! 2. else by its process group: bash leads a new one, so every process the script starts
//!    carries bash's pid as its group unless it moves (`setsid`, `set -m`);
//! 3. else by when it started: the attempts that were running at that moment could own it.
//!
//! An orphan owned by a running attempt is left alone (a daemon a script starts for its own
//! use, such as `ssh-agent`, lives until *its* attempt ends). One owned by a finished attempt
//! is SIGKILLed and reaped. One that rule 3 cannot pin on a single attempt is killed once no
//! attempt that was running when it started is still running. Rule 3 never touches a process
//! that started while no attempt ran, or one in the agent's own process group: those are the
//! host program's own children (a host program that starts children in process groups of
//! their own while scripts run should not also run the local executor). Zombies attributable
//! to an attempt are reaped; nothing else is ever waited for, so other code's children keep
//! their status.
//!
//! What remains out of reach here: a process that is orphaned *and* clears its environment
//! *and* leaves bash's process group lives until no attempt that overlapped its start is
//! running (a per-task cgroup, where the agent has one, closes that gap: see
//! [`super::cgroup`]); processes of other users (a setuid program's children) cannot be
//! signalled at all; and if the agent cannot become a subreaper, orphans go to init and only
//! the process group is killed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, Once, RwLock, RwLockReadGuard};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use super::wrapper::MARKER_VAR;

/// Finished attempts remembered for late attribution.
const HISTORY: usize = 1024;
/// Sweeps after a kill, for descendants the killed processes were hiding.
const ROUNDS: usize = 16;

static SUBREAPER: Once = Once::new();

/// Held (shared) from before an attempt's bash is spawned until it is registered, and
/// (exclusive) by every sweep: between `posix_spawn`'s `setpgid` and its `exec`, a new bash
/// is a child in a process group of its own with no marker, and a sweep must never meet one.
static SPAWNING: RwLock<()> = RwLock::new(());

/// Hold while spawning an attempt's bash and registering it.
pub(crate) fn spawning() -> RwLockReadGuard<'static, ()> {
    SPAWNING.read().unwrap_or_else(|p| p.into_inner())
}

/// Make this process a child subreaper, once. Failure is logged: orphans then go to init,
/// and only the process group (and a cgroup, if any) is killed.
pub(crate) fn ensure_subreaper() {
    SUBREAPER.call_once(|| {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "cannot become a child subreaper; orphans of scripts will not be killed");
        }
    });
}

struct Entry {
    marker: String,
    start: u64,
    end: Option<u64>,
}

#[derive(Default)]
struct Registry {
    by_pid: HashMap<i32, Entry>,
    finished: VecDeque<i32>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn with_registry<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut g = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(Registry::default))
}

/// A running attempt, known to the registry until [`Tracked::finish`] (or drop).
#[derive(Debug)]
pub(crate) struct Tracked {
    pid: i32,
    finished: bool,
}

impl Tracked {
    /// Register bash `pid`, whose processes carry `marker`. Until [`Tracked::activate`] it
    /// has not started: no process is attributed to it by its start time (rule 3).
    pub(crate) fn register(pid: Pid, marker: &str) -> Tracked {
        let raw = pid.as_raw();
        let start = u64::MAX;
        with_registry(|r| {
            // A finished attempt whose bash had this pid is history now.
            r.finished.retain(|&p| p != raw);
            r.by_pid.insert(
                raw,
                Entry {
                    marker: marker.to_string(),
                    start,
                    end: None,
                },
            );
        });
        Tracked {
            pid: raw,
            finished: false,
        }
    }

    /// The attempt's script has arrived: from now on, processes that start while it runs
    /// may be its own.
    pub(crate) fn activate(&mut self) {
        let now = now_ticks();
        with_registry(|r| {
            if let Some(e) = r.by_pid.get_mut(&self.pid) {
                e.start = now;
            }
        });
    }

    /// The attempt is over (bash has exited or been killed): kill and reap its orphans.
    /// Returns the work left if it killed any (their descendants surface only once they
    /// are dead); [`Pending::complete`] finishes it, blocking.
    pub(crate) fn finish(mut self) -> Option<Pending> {
        self.finished = true;
        mark_finished(self.pid);
        let killed = sweep();
        (!killed.is_empty()).then_some(Pending { killed })
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.finished {
            mark_finished(self.pid);
            let killed = sweep();
            if !killed.is_empty() {
                let pending = Pending { killed };
                let _ = std::thread::Builder::new()
                    .name("csm-reaper".into())
                    .spawn(move || pending.complete());
            }
        }
    }
}

fn mark_finished(pid: i32) {
    let end = now_ticks();
    with_registry(|r| {
        if let Some(e) = r.by_pid.get_mut(&pid) {
            e.end = Some(end);
        }
        r.finished.push_back(pid);
        while r.finished.len() > HISTORY {
            if let Some(old) = r.finished.pop_front() {
                if r.by_pid.get(&old).is_some_and(|e| e.end.is_some()) {
                    r.by_pid.remove(&old);
                }
            }
        }
    });
}

/// Orphans killed by a sweep, still to be reaped.
#[derive(Debug)]
pub(crate) struct Pending {
    killed: Vec<i32>,
}

impl Pending {
    /// Reap what was killed, then sweep again for what it was hiding, until a sweep finds
    /// nothing. Blocks until the killed processes are dead.
    pub(crate) fn complete(mut self) {
        for _ in 0..ROUNDS {
            for pid in self.killed.drain(..) {
                let _ = waitpid(Pid::from_raw(pid), None);
            }
            self.killed = sweep();
            if self.killed.is_empty() {
                return;
            }
        }
    }
}

/// What /proc says about a process.
struct Stat {
    state: u8,
    pgid: i32,
    start: u64,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some(Stat {
        state: *f.first()?.as_bytes().first()?,
        pgid: f.get(2)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

fn marker_of(pid: i32) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let key = format!("{MARKER_VAR}=");
    env.split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(key.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// This process's children that can be orphans: the kernel hands an orphan to the first
/// live thread of its subreaper, the main thread (a child is listed under the thread that
/// spawned it, but every attempt's bash is known already). From every thread only if the
/// main thread's list cannot be read.
fn children() -> Vec<i32> {
    let mut out = Vec::new();
    let main = format!("/proc/self/task/{}/children", std::process::id());
    if let Ok(s) = std::fs::read_to_string(main) {
        out.extend(
            s.split_ascii_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
        return out;
    }
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(
                s.split_ascii_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn now_ticks() -> u64 {
    let mut ts = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a live timespec.
    unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_BOOTTIME, &mut ts) };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as u64;
    ts.tv_sec as u64 * hz + ts.tv_nsec as u64 * hz / 1_000_000_000
}

/// Who owns a process, as far as the registry can tell.
enum Owner {
    Running,
    Finished,
    /// Started while no attempt ran, or in the agent's own process group: not ours.
    Foreign,
}

/// One pass over this process's children: SIGKILL every orphan of a finished attempt, reap
/// every dead one that is ours. Returns the pids killed (not yet reaped).
fn sweep() -> Vec<i32> {
    let _no_spawn = SPAWNING.write().unwrap_or_else(|p| p.into_inner());
    let mut killed = Vec::new();
    let kids = children();
    if kids.is_empty() {
        return killed;
    }
    let me_pgid = nix::unistd::getpgrp().as_raw();
    with_registry(|r| {
        for pid in kids {
            if r.by_pid.get(&pid).is_some_and(|e| e.end.is_none()) {
                continue; // a running attempt's bash
            }
            let Some(st) = stat(pid) else { continue };
            let zombie = st.state == b'Z' || st.state == b'X';
            let owner = attribute(r, pid, &st, zombie, me_pgid);
            match (owner, zombie) {
                (Owner::Foreign, _) => {}
                (_, true) => {
                    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                }
                (Owner::Running, false) => {}
                (Owner::Finished, false) => match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                    Ok(()) => killed.push(pid),
                    Err(Errno::ESRCH) => {}
                    Err(e) => tracing::warn!(pid, error = %e, "cannot kill a script's orphan"),
                },
            }
        }
    });
    if !killed.is_empty() {
        tracing::debug!(count = killed.len(), "killed orphans of finished scripts");
    }
    killed
}

fn attribute(r: &Registry, pid: i32, st: &Stat, zombie: bool, me_pgid: i32) -> Owner {
    let state = |e: &Entry| {
        if e.end.is_none() {
            Owner::Running
        } else {
            Owner::Finished
        }
    };
    if !zombie {
        if let Some(m) = marker_of(pid) {
            // A marker no attempt in memory carries is an old attempt's.
            return r
                .by_pid
                .values()
                .find(|e| e.marker == m)
                .map_or(Owner::Finished, state);
        }
    }
    if let Some(e) = r.by_pid.get(&st.pgid) {
        return state(e);
    }
    if st.pgid == me_pgid {
        return Owner::Foreign;
    }
    let mut owners = r
        .by_pid
        .values()
        .filter(|e| e.start <= st.start && e.end.map_or(true, |end| st.start <= end + 1))
        .peekable();
    if owners.peek().is_none() {
        return Owner::Foreign;
    }
    if owners.any(|e| e.end.is_none()) {
        Owner::Running
    } else {
        Owner::Finished
    }
}
