//! A cgroup per local attempt, where the agent has a delegated cgroup v2 of its own.
//!
//! Everything in a cgroup dies at once with one write to its `cgroup.kill` (Linux 5.14+),
//! whatever it did to its session, process group, parentage or environment. The executor
//! creates `csm-<marker>` under the parent cgroup, moves bash into it right after the spawn
//! and *before* writing the script to bash's stdin (bash is blocked reading it, so it cannot
//! have forked yet), writes `cgroup.kill` when the attempt ends, and removes the cgroup.
//!
//! The parent comes from [`CgroupPolicy`]:
//! - `Auto` (the default) uses the agent's own cgroup v2 when it is *delegated* (systemd's
//!   `Delegate=yes` marks it with the `trusted.delegate` or `user.delegate` extended
//!   attribute), writable, and the kernel has `cgroup.kill`. A cgroup systemd did not hand
//!   over is never written to.
//! - `Under(dir)` uses `dir`, an existing cgroup v2 directory the agent may write.
//! - `Off` uses none.
//!
//! Without a cgroup, [`super::reap`] does the work, with the limits it documents.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::{access, AccessFlags, Pid};

/// Where per-attempt cgroups go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CgroupPolicy {
    /// The agent's own cgroup, if systemd delegated it (see the module docs).
    #[default]
    Auto,
    /// No cgroups.
    Off,
    /// Under this cgroup v2 directory.
    Under(PathBuf),
}

/// How long removing a killed cgroup may wait for its processes to be gone.
const RMDIR_PATIENCE: Duration = Duration::from_secs(5);

/// Resolve a policy to a parent directory, or `None`.
pub(crate) fn resolve(policy: &CgroupPolicy) -> Option<PathBuf> {
    let dir = match policy {
        CgroupPolicy::Off => return None,
        CgroupPolicy::Under(d) => d.clone(),
        CgroupPolicy::Auto => {
            let dir = own_cgroup()?;
            if !delegated(&dir) {
                return None;
            }
            dir
        }
    };
    let usable = access(&dir, AccessFlags::W_OK).is_ok()
        && access(&dir.join("cgroup.procs"), AccessFlags::W_OK).is_ok();
    if !usable {
        tracing::warn!(dir = %dir.display(), "the cgroup for scripts is not writable; not using cgroups");
        return None;
    }
    Some(dir)
}

/// This process's cgroup v2 directory.
fn own_cgroup() -> Option<PathBuf> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    for m in mounts.lines() {
        let (pre, post) = m.split_once(" - ")?;
        if post.split(' ').next() != Some("cgroup2") {
            continue;
        }
        let f: Vec<&str> = pre.split(' ').collect();
        let (root, point) = (*f.get(3)?, *f.get(4)?);
        let inside = rel
            .strip_prefix(root)
            .unwrap_or(rel)
            .trim_start_matches('/');
        return Some(Path::new(point).join(inside));
    }
    None
}

fn delegated(dir: &Path) -> bool {
    ["trusted.delegate", "user.delegate"]
        .iter()
        .any(|name| xattr_is_one(dir, name))
}

fn xattr_is_one(path: &Path, name: &str) -> bool {
    let (Ok(p), Ok(n)) = (
        std::ffi::CString::new(path.as_os_str().as_bytes()),
        std::ffi::CString::new(name),
    ) else {
        return false;
    };
    let mut buf = [0u8; 8];
    // SAFETY: NUL-terminated strings and a buffer of the length given.
    let n =
        unsafe { nix::libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    n > 0 && &buf[..n as usize] == b"1"
}

/// One attempt's cgroup; killed and removed on drop.
#[derive(Debug)]
pub(crate) struct TaskCgroup {
    dir: PathBuf,
}

impl TaskCgroup {
    /// Create `csm-<marker>` under `parent`.
    pub(crate) fn create(parent: &Path, marker: &str) -> io::Result<TaskCgroup> {
        let dir = parent.join(format!("csm-{marker}"));
        std::fs::create_dir(&dir)?;
        let cg = TaskCgroup { dir };
        if !cg.dir.join("cgroup.kill").exists() {
            return Err(io::Error::other("this kernel has no cgroup.kill"));
        }
        Ok(cg)
    }

    /// Move `pid` into it.
    pub(crate) fn adopt(&self, pid: Pid) -> io::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.as_raw().to_string())
    }

    /// SIGKILL everything in it.
    pub(crate) fn kill(&self) {
        if let Err(e) = std::fs::write(self.dir.join("cgroup.kill"), b"1") {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cgroup.kill failed");
            }
        }
    }
}

impl Drop for TaskCgroup {
    fn drop(&mut self) {
        self.kill();
        // Killed processes leave the cgroup once they are dead; until then rmdir is EBUSY.
        if std::fs::remove_dir(&self.dir).is_ok() {
            return;
        }
        let dir = std::mem::take(&mut self.dir);
        let _ = std::thread::Builder::new()
            .name("csm-cgroup-rm".into())
            .spawn(move || {
                let until = Instant::now() + RMDIR_PATIENCE;
                while Instant::now() < until {
                    match std::fs::remove_dir(&dir) {
                        Ok(()) => return,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                tracing::warn!(dir = %dir.display(), "could not remove an attempt's cgroup");
            });
    }
}
