//! Runs one rendered script under real `/bin/bash --noprofile --norc`: in a private
//! directory (mode 0700, removed afterwards), with a cleared environment (`PATH`, and
//! `LC_ALL` to pick the locale), stdin `/dev/null`, in its own process group.
//!
//! Completion is an event, not a sleep: every process the script starts inherits its
//! stdout and stderr pipes, so end-of-file on both means the script and everything it
//! left behind (process substitutions, coprocesses, background jobs) has finished. Past
//! the deadline the whole group is killed.

use std::fs;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Bytes of stdout/stderr kept for reports.
const KEEP: usize = 16 * 1024;

/// A root directory holding one subdirectory per case.
pub struct Sandbox {
    root: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        // tempfile creates directories with mode 0700.
        let root = tempfile::Builder::new()
            .prefix("csm-fuzz.")
            .tempdir()
            .expect("create the fuzz sandbox directory");
        Sandbox { root }
    }

    /// A fresh private directory for one case; removed when dropped.
    pub fn case_dir(&self, id: u64) -> CaseDir {
        let base = self.root.path().join(format!("c{id}"));
        let _ = fs::remove_dir_all(&base);
        let mut b = fs::DirBuilder::new();
        b.mode(0o700);
        b.create(&base).expect("create case directory");
        let work = base.join("w");
        b.create(&work).expect("create case work directory");
        CaseDir { base, work }
    }
}

/// One case's directory: `base/script.sh` and the script's working directory `base/w`,
/// which the canary payloads target.
pub struct CaseDir {
    base: PathBuf,
    pub work: PathBuf,
}

impl CaseDir {
    fn script(&self) -> PathBuf {
        self.base.join("script.sh")
    }

    /// The work directory as bytes (what `@C@` in a value stands for).
    pub fn work_bytes(&self) -> Vec<u8> {
        self.work.as_os_str().as_encoded_bytes().to_vec()
    }

    /// Names of the entries in the work directory.
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.work)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        fs::read(self.work.join(name)).ok()
    }
}

impl Drop for CaseDir {
    fn drop(&mut self) {
        if fs::remove_dir_all(&self.base).is_err() {
            // A script may have made its files unwritable; take them back.
            let _ = Command::new("chmod")
                .args(["-R", "u+rwx"])
                .arg(&self.base)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = fs::remove_dir_all(&self.base);
        }
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Run {
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

/// Run `script` with bash in `dir`.
pub fn run_bash(script: &[u8], dir: &CaseDir, utf8: bool, timeout: Duration) -> Run {
    let path = dir.script();
    fs::write(&path, script).expect("write script");
    run_path(&path, &dir.work, locale(utf8), timeout)
}

fn locale(utf8: bool) -> &'static str {
    if utf8 {
        "C.UTF-8"
    } else {
        "C"
    }
}

fn run_path(path: &Path, cwd: &Path, locale: &str, timeout: Duration) -> Run {
    let start = Instant::now();
    let mut child = Command::new("/bin/bash")
        .arg("--noprofile")
        .arg("--norc")
        .arg(path)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LC_ALL", locale)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn /bin/bash");
    let pgid = Pid::from_raw(child.id() as i32);
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let mut run = Run::default();
    let deadline = start + timeout;
    let mut buf = [0u8; 8192];
    while out.is_some() || err.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            run.timed_out = true;
            break;
        }
        let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32 + 1)
            .unwrap_or(PollTimeout::MAX);
        let (ro, re) = {
            let mut fds = Vec::with_capacity(2);
            let mut which = Vec::with_capacity(2);
            if let Some(o) = &out {
                fds.push(PollFd::new(o.as_fd(), PollFlags::POLLIN));
                which.push(0);
            }
            if let Some(e) = &err {
                fds.push(PollFd::new(e.as_fd(), PollFlags::POLLIN));
                which.push(1);
            }
            match poll(&mut fds, ms) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => panic!("poll: {e}"),
            }
            let mut ready = [false; 2];
            for (f, w) in fds.iter().zip(&which) {
                ready[*w] = f.revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                });
            }
            (ready[0], ready[1])
        };
        if ro {
            let o = out.as_mut().unwrap();
            match o.read(&mut buf) {
                Ok(0) | Err(_) => out = None,
                Ok(n) if run.stdout.len() < KEEP => run.stdout.extend_from_slice(&buf[..n]),
                Ok(_) => {}
            }
        }
        if re {
            let e = err.as_mut().unwrap();
            match e.read(&mut buf) {
                Ok(0) | Err(_) => err = None,
                Ok(n) if run.stderr.len() < KEEP => run.stderr.extend_from_slice(&buf[..n]),
                Ok(_) => {}
            }
        }
    }
    // Output ended; bash itself may still run (it can close its stdout and stderr). Give
    // it until the deadline to exit.
    if !run.timed_out && !crate::support::exits_by(pgid.as_raw(), deadline) {
        run.timed_out = true;
    }
    // Kill the group while bash is alive or a zombie: until it is reaped its pid, which is
    // the group id, cannot be reused, so this never hits another worker's bash (pid_max
    // can be as low as 32768, and the pids here wrap within minutes). This also ends
    // anything left in the group that closed its output.
    let _ = killpg(pgid, Signal::SIGKILL);
    let status = child.wait().expect("wait for bash");
    run.code = status.code();
    run.elapsed = start.elapsed();
    run
}
