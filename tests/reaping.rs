//! Nothing a local script starts outlives its attempt, against real `/bin/bash`: processes
//! that left the process group (`setsid`, `set -m`), double-forked daemons, and processes
//! that also cleared their environment, on success, on timeout and on cancellation; a
//! daemon a script starts for its own use lives until *its* attempt ends, not another's;
//! and a per-attempt cgroup kills even what nothing else can attribute.
//!
//! Scripts park on FIFOs so that the test can look at their processes while they run.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use csm_agent::exec::cgroup::CgroupPolicy;
use csm_agent::exec::local::LocalExecutor;
use csm_agent::exec::{self, Job, Outcome, RetryPolicy};
use csm_agent::secret::Variables;
use csm_agent::template::Template;
use csm_agent::{ErrorKind, Kind};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(10);

fn job(script: &str, dir: &Path, timeout: Duration) -> Job {
    let values = Variables::new();
    let rendered = Template::from_script(script)
        .render(&values, &Variables::new())
        .expect("render");
    let mut j = Job::new(rendered, dir.to_str().unwrap(), timeout, &values);
    j.limits.grace = Duration::from_millis(300);
    j
}

fn once() -> RetryPolicy {
    RetryPolicy {
        attempts: 1,
        delay: Duration::ZERO,
    }
}

fn marker(label: &str) -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("csm-reap-{label}-{}-{hex}", std::process::id())
}

/// Whether a live (non-zombie) process has `marker` in its argv.
fn alive_with(marker: &str) -> bool {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let p = entry.path();
        let Ok(cmd) = std::fs::read(p.join("cmdline")) else {
            continue;
        };
        if !cmd.windows(marker.len()).any(|w| w == marker.as_bytes()) {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("");
        if state != "Z" && !state.is_empty() {
            return true;
        }
    }
    false
}

async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn fifo(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    p
}

/// Let a script parked in `read < fifo` go on (blocks until it reads).
async fn release(fifo: PathBuf) {
    tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .unwrap()
            .write_all(b"go\n")
            .unwrap();
    })
    .await
    .unwrap();
}

/// Script lines that leave three escapees behind: one that called setsid, a `set -m` job,
/// and a double-forked daemon.
fn escapees(m: &[String; 3]) -> String {
    format!(
        "setsid -f bash -c 'exec -a {} sleep 1000' </dev/null >/dev/null 2>&1\n\
         set -m; (exec -a {} sleep 1000) & set +m\n\
         ( (exec -a {} sleep 1000) & )\n",
        m[0], m[1], m[2]
    )
}

fn three(label: &str) -> [String; 3] {
    [
        marker(&format!("{label}-setsid")),
        marker(&format!("{label}-setm")),
        marker(&format!("{label}-daemon")),
    ]
}

async fn run_parked(
    exec: LocalExecutor,
    script: String,
    dir: &Path,
    timeout: Duration,
) -> tokio::task::JoinHandle<Outcome> {
    let j = job(&script, dir, timeout);
    tokio::spawn(async move { exec::run(&exec, &j, &once(), &CancellationToken::new()).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapees_die_with_a_successful_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let go = fifo(dir.path(), "go");
    let m = three("ok");
    let script = format!("{}read -r _ < go\nsecret=ok", escapees(&m));
    let h = run_parked(LocalExecutor::default(), script, dir.path(), LIMIT * 3).await;
    for x in &m {
        assert!(
            eventually(LIMIT, || alive_with(x)).await,
            "{x} never started"
        );
    }
    release(go).await;
    let o = h.await.unwrap();
    assert_eq!(o.result.as_ref().unwrap().expose_secret(), b"ok");
    for x in &m {
        assert!(eventually(LIMIT, || !alive_with(x)).await, "{x} survived");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapees_die_with_a_timed_out_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let m = three("timeout");
    let ready = dir.path().join("ready");
    let script = format!("{}touch ready\nsleep 1000", escapees(&m));
    let h = run_parked(
        LocalExecutor::default(),
        script,
        dir.path(),
        Duration::from_secs(3),
    )
    .await;
    assert!(eventually(LIMIT, || ready.exists()).await);
    for x in &m {
        assert!(alive_with(x), "{x} never started");
    }
    let o = h.await.unwrap();
    assert_eq!(o.result.as_ref().unwrap_err().kind(), ErrorKind::Timeout);
    for x in &m {
        assert!(eventually(LIMIT, || !alive_with(x)).await, "{x} survived");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapees_die_with_a_cancelled_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let m = three("cancel");
    let script = format!("{}sleep 1000", escapees(&m));
    let j = job(&script, dir.path(), LIMIT * 3);
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let h =
        tokio::spawn(async move { exec::run(&LocalExecutor::default(), &j, &once(), &c2).await });
    for x in &m {
        assert!(
            eventually(LIMIT, || alive_with(x)).await,
            "{x} never started"
        );
    }
    cancel.cancel();
    let o = h.await.unwrap();
    assert_eq!(o.result.as_ref().unwrap_err().kind(), ErrorKind::Cancelled);
    for x in &m {
        assert!(eventually(LIMIT, || !alive_with(x)).await, "{x} survived");
    }
}

/// `eval "$(ssh-agent)"`-style: a daemon the script starts for its own use is re-parented
/// to the agent, and lives on while its attempt runs, even when another attempt ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_lives_until_its_own_attempt_ends() {
    let dir = tempfile::tempdir().unwrap();
    let go = fifo(dir.path(), "go");
    let d = marker("own-daemon");
    let script = format!("( (exec -a {d} sleep 1000) & )\nread -r _ < go\nsecret=a");
    let a = run_parked(LocalExecutor::default(), script, dir.path(), LIMIT * 3).await;
    assert!(eventually(LIMIT, || alive_with(&d)).await);
    // Another attempt, start to end, while the first runs.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let o = exec::run(
        &LocalExecutor::default(),
        &job("secret=b", &other, LIMIT),
        &once(),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(o.result.unwrap().expose_secret(), b"b");
    assert!(
        alive_with(&d),
        "another attempt's end killed this attempt's daemon"
    );
    release(go).await;
    assert_eq!(a.await.unwrap().result.unwrap().expose_secret(), b"a");
    assert!(eventually(LIMIT, || !alive_with(&d)).await);
}

/// A script that starts a process that calls setsid, clears its environment and is
/// orphaned at once (`setsid -f` forks and exits), and waits until it runs.
fn anonymous_escapee(e: &str) -> String {
    format!(
        "setsid -f env -i /bin/bash -c 'echo up > up; exec -a {e} sleep 1000' </dev/null >/dev/null 2>&1\n\
         read -r _ < up\nsecret=a"
    )
}

/// A process that calls setsid, double-forks and clears its environment carries nothing
/// that names its attempt. Without a cgroup it is killed once no attempt that was running
/// when it started is still running; with a cgroup, when its own attempt ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_escapee_waits_for_the_overlapping_attempts_without_a_cgroup() {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a_dir).unwrap();
    std::fs::create_dir(&b_dir).unwrap();
    let go_b = fifo(&b_dir, "go");
    let exec = LocalExecutor::default().with_cgroup(&CgroupPolicy::Off);
    let b = run_parked(
        exec.clone(),
        "touch started\nread -r _ < go\nsecret=b".into(),
        &b_dir,
        LIMIT * 3,
    )
    .await;
    assert!(eventually(LIMIT, || b_dir.join("started").exists()).await);

    let e = marker("anonymous");
    fifo(&a_dir, "up");
    let script = anonymous_escapee(&e);
    let o = exec::run(
        &exec,
        &job(&script, &a_dir, LIMIT),
        &once(),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(o.result.unwrap().expose_secret(), b"a");
    assert!(eventually(LIMIT, || alive_with(&e)).await);
    // B was running when it started, so B could own it: it lives while B runs.
    assert!(alive_with(&e));
    release(go_b).await;
    assert_eq!(b.await.unwrap().result.unwrap().expose_secret(), b"b");
    assert!(eventually(LIMIT, || !alive_with(&e)).await, "{e} survived");
}

/// The cgroup v2 directory this process is in, if the hierarchy is mounted.
fn own_cgroup_dir() -> Option<PathBuf> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    for m in mounts.lines() {
        let (pre, post) = m.split_once(" - ")?;
        if post.split(' ').next() == Some("cgroup2") {
            let f: Vec<&str> = pre.split(' ').collect();
            let inside = rel
                .strip_prefix(f[3])
                .unwrap_or(rel)
                .trim_start_matches('/');
            return Some(Path::new(f[4]).join(inside));
        }
    }
    None
}

/// A parent cgroup for the test's attempts, removed on drop.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let end = Instant::now() + LIMIT;
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < end {
            std::thread::yield_now();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cgroup_an_anonymous_escapee_dies_with_its_own_attempt() {
    const NAME: &str = "with_a_cgroup_an_anonymous_escapee_dies_with_its_own_attempt";
    if !nix::unistd::geteuid().is_root() {
        return support::skip::skip(NAME, "creating a cgroup needs root");
    }
    let Some(own) = own_cgroup_dir() else {
        return support::skip::skip(NAME, "no cgroup v2 hierarchy is mounted");
    };
    let parent = own.join(format!("csm-test-{}", marker("cg")));
    if let Err(e) = std::fs::create_dir(&parent) {
        return support::skip::skip(NAME, &format!("cannot create a cgroup: {e}"));
    }
    let parent = TestCgroup(parent);
    let exec = LocalExecutor::default().with_cgroup(&CgroupPolicy::Under(parent.0.clone()));
    assert!(exec.uses_cgroups());

    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a_dir).unwrap();
    std::fs::create_dir(&b_dir).unwrap();
    let go_b = fifo(&b_dir, "go");
    let b = run_parked(
        exec.clone(),
        "touch started\nread -r _ < go\nsecret=b".into(),
        &b_dir,
        LIMIT * 3,
    )
    .await;
    assert!(eventually(LIMIT, || b_dir.join("started").exists()).await);
    let e = marker("cg-anonymous");
    fifo(&a_dir, "up");
    let script = anonymous_escapee(&e);
    let o = exec::run(
        &exec,
        &job(&script, &a_dir, LIMIT),
        &once(),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(o.result.unwrap().expose_secret(), b"a");
    // Dead although B, which overlapped its start, still runs.
    assert!(eventually(LIMIT, || !alive_with(&e)).await, "{e} survived");
    release(go_b).await;
    assert_eq!(b.await.unwrap().result.unwrap().expose_secret(), b"b");
    // The attempts' cgroups are gone.
    assert!(
        eventually(LIMIT, || std::fs::read_dir(&parent.0)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("csm-")))
        .await
    );
}
