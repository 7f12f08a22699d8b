//! Processes: spawning sshd so that it dies with the test process, and finding, stopping
//! and killing its descendants through /proc.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{mpsc, Mutex, OnceLock, PoisonError};
use std::thread;

use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpid, getppid, Pid};

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that it gets SIGKILL if this test process dies without running
/// `Drop` (killed by a timeout, aborted), instead of lingering on its port forever.
/// PR_SET_PDEATHSIG fires when the spawning *thread* exits, so all spawns go through
/// one thread that lives as long as the process.
pub(super) fn spawn_tied_to_process(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("sshd-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn sshd spawner thread");
        Mutex::new(tx)
    });
    let parent = getpid();
    // SAFETY: the closure only makes async-signal-safe syscalls (prctl, getppid) and
    // builds io::Errors from raw errnos, which does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // The parent may have died before prctl: then nobody would ever kill us.
            if getppid() != parent {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("sshd spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("sshd spawner thread is gone"))?
}

/// SIGSTOPs every descendant of `root` until no new ones appear (stopped processes can't
/// fork, so the set converges), and returns them.
pub(super) fn stop_descendants(root: Pid) -> Vec<Pid> {
    let mut stopped = HashSet::new();
    for _ in 0..50 {
        let fresh: Vec<Pid> = descendants(root)
            .into_iter()
            .filter(|p| !stopped.contains(p))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for pid in fresh {
            let _ = kill(pid, Signal::SIGSTOP);
            stopped.insert(pid);
        }
    }
    stopped.into_iter().collect()
}

pub(super) fn kill_all(pids: &[Pid]) {
    for &pid in pids {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// All descendants of `root`, from the parent pids in /proc.
pub(super) fn descendants(root: Pid) -> Vec<Pid> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            // /proc/PID/stat is "pid (comm) state ppid ..."; comm may contain spaces and ')'.
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|s| s.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![root.as_raw()];
    while let Some(p) = queue.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            out.push(Pid::from_raw(c));
            queue.push(c);
        }
    }
    out
}
