//! Containers for the shipping tests (`tests/ship_*.rs`): podman with runc, base images
//! built by mmdebstrap from Debian's packages (no registry is reachable), a container
//! guard that removes its container on every path, and polling with deadlines.
//!
//! Everything follows `/work/shared/notes/containers-and-systemd.md`: `--runtime runc`
//! (crun fails on the hybrid cgroup hierarchy), explicit ulimits on every `run` and
//! `build`, `--network host` so that a container reaches servers on the host's loopback.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The ulimits every `podman run` and `podman build` needs here.
pub const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
];

/// Packages of the systemd image: systemd itself, and what scripts and dpkg need.
pub const SYSTEMD_INCLUDES: &str =
    "systemd,systemd-sysv,dbus,bash,coreutils,curl,jq,ca-certificates,openssh-client,passwd,procps";

/// Packages of the sidecar's base image (`debian:bookworm-slim` as the Dockerfile names it).
pub const SLIM_INCLUDES: &str = "bash,coreutils,curl,jq,ca-certificates,openssh-client";

/// Why this machine cannot run a container test, if it cannot: not root, or a tool missing.
pub fn missing_prerequisite(tools: &[&str]) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (podman, mmdebstrap and systemd in a container)".into());
    }
    for t in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()));
        if !found {
            return Some(format!(
                "`{t}` is missing (scripts/ci-setup-ship.sh installs it)"
            ));
        }
    }
    None
}

/// `podman --runtime runc`.
pub fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc"]);
    c
}

/// Run a command to completion; its output, whatever the status.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run a command and insist on success; its stdout.
#[track_caller]
pub fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Poll `f` until it returns `Some`, for at most `patience`; panics naming `what`. The
/// pause between attempts only paces the polling: the outcome comes from `f`.
#[track_caller]
pub fn poll<T>(what: &str, patience: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {patience:?} waiting for: {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// `REPO:bookworm-HASH`, HASH a digest of `includes`: an image name that changes with the
/// package list, so that a cached image is never one built from an older list.
pub fn image_name(repo: &str, includes: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(includes.as_bytes());
    let hex: String = d[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{repo}:bookworm-{hex}")
}

/// Make sure the image `name` exists: reuse it, or build a Debian 12 root filesystem with
/// mmdebstrap (`includes`, comma-separated) and import it under that name. A file lock
/// keeps two test processes from building images at once.
pub fn ensure_image(name: &str, includes: &str) {
    let exists = |n: &str| {
        output(podman().args(["image", "exists", n]))
            .status
            .success()
    };
    if exists(name) {
        return;
    }
    let lock_path = std::env::temp_dir().join("csm-ship-image.lock");
    let lock_file = std::fs::File::create(&lock_path).expect("image lock file");
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("image lock");
    if exists(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("rootfs.tar");
    let started = Instant::now();
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=apt", "--mode=root", "--quiet"])
        .arg(format!("--include={includes}"))
        .arg("bookworm")
        .arg(&tar);
    if Path::new("/etc/apt/sources.list.d/debian.sources").exists() {
        cmd.arg("/etc/apt/sources.list.d/debian.sources");
    }
    ok(&mut cmd);
    ok(podman().arg("import").arg(&tar).arg(name));
    eprintln!("built image {name} in {:?}", started.elapsed());
}

/// A container, removed (with its anonymous volumes) when dropped.
pub struct Container {
    /// Its name.
    pub name: String,
}

impl Container {
    /// A fresh, unique container name.
    pub fn unique_name(prefix: &str) -> String {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).unwrap();
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("{prefix}-{}-{hex}", std::process::id())
    }

    /// `podman run -d --name NAME --network host ULIMITS ARGS...`; the guard.
    #[track_caller]
    pub fn run(name: &str, args: &[&str]) -> Container {
        // The guard exists before the container, so that a failed start still cleans up.
        let c = Container {
            name: name.to_string(),
        };
        ok(podman()
            .args(["run", "-d", "--name", name, "--network", "host"])
            .args(ULIMITS)
            .args(args));
        c
    }

    /// Boot `image`'s systemd (`/sbin/init`) and wait until it is up.
    pub fn boot_systemd(prefix: &str, image: &str) -> Container {
        let name = Self::unique_name(prefix);
        let c = Self::run(&name, &["--systemd=always", image, "/sbin/init"]);
        poll(
            "systemd to finish booting",
            Duration::from_secs(120),
            || {
                let out = output(&mut c.exec_cmd(&["systemctl", "is-system-running"]));
                let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
                matches!(state.as_str(), "running" | "degraded").then_some(())
            },
        );
        c
    }

    /// A `podman exec` command in this container.
    pub fn exec_cmd(&self, args: &[&str]) -> Command {
        let mut c = podman();
        c.args(["exec", &self.name]).args(args);
        c
    }

    /// Run `sh -c script` in the container; its output, whatever the status.
    pub fn sh(&self, script: &str) -> Output {
        output(&mut self.exec_cmd(&["sh", "-c", script]))
    }

    /// Run `sh -c script` in the container and insist on success; its stdout.
    #[track_caller]
    pub fn sh_ok(&self, script: &str) -> String {
        ok(&mut self.exec_cmd(&["sh", "-c", script]))
    }

    /// Write `contents` to `path` in the container through stdin (never argv), with
    /// `mode` and `owner` (`user:group`).
    #[track_caller]
    pub fn write_file(&self, path: &str, contents: &[u8], mode: &str, owner: &str) {
        let script = format!(
            "umask 077 && cat > '{path}.new' && chown {owner} '{path}.new' && chmod {mode} '{path}.new' && mv -f '{path}.new' '{path}'"
        );
        let mut child = podman()
            .args(["exec", "-i", &self.name, "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podman exec");
        child.stdin.take().unwrap().write_all(contents).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "writing {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Copy a host file or directory into the container.
    #[track_caller]
    pub fn copy_in(&self, host: &Path, path: &str) {
        ok(podman()
            .arg("cp")
            .arg(host)
            .arg(format!("{}:{path}", self.name)));
    }

    /// The container's logs (stdout and stderr).
    pub fn logs(&self) -> String {
        let out = output(podman().args(["logs", &self.name]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `podman inspect --format FORMAT`, trimmed.
    pub fn inspect(&self, format: &str) -> String {
        let out = output(podman().args(["inspect", "--format", format, &self.name]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = output(podman().args(["rm", "-f", "-v", "-t", "0", &self.name]));
    }
}

/// A free TCP port on 127.0.0.1 for a server that cannot take port 0 and report it (the
/// agent's health endpoint in a container on the host's network). The port is free when
/// this returns; if another process takes it first, the agent refuses to start and the
/// test fails loudly rather than silently.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fail if any of `secrets` occurs in `text` (a log, a journal), naming where.
#[track_caller]
pub fn assert_no_secret(place: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!s.is_empty());
        assert!(
            !text.contains(s),
            "{place} holds a secret value ({} bytes of it)",
            s.len()
        );
    }
}
