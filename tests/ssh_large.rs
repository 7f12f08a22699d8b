//! Large values over SSH: time and memory must grow linearly with a value's size. Peak
//! RSS is this process's `VmHWM`, reset before each measurement (`/proc/self/clear_refs`),
//! so the tests take a lock and run one at a time.
//!
//! The SSH transport (rendering, the wrapper, the channel writes and reads, the frames) is
//! measured on its own, with the value out of the masker's reach. With the value (or the
//! returned secret) masked, the masker is measured too: building it is linear in the
//! values' size, and so is masking the output (`mask::engine`).

#![allow(clippy::await_holding_lock)]

mod support;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use csm_agent::exec::Job;
use csm_agent::secret::{secret_bytes, Variables};
use csm_agent::template::{RenderLimits, Template};
use support::ssh::*;
use support::sshd::*;

/// One test at a time: `VmHWM` is the whole process's.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// This process's resident set: (current, peak since the last reset) in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Reset the peak RSS to the current RSS.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM (Linux >= 4.0)");
}

/// A value of `len` bytes that no shell quoting or encoding shortens.
fn value(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36])
        .collect()
}

const MB3: usize = 3_000_000;

/// Limits raised past a 3 MB value (the default is 1 MiB per value): the caps are
/// configurable, and these tests measure what lies beyond them.
fn large() -> RenderLimits {
    RenderLimits {
        max_value: 4 << 20,
        max_total: 8 << 20,
    }
}

/// 3 MB of script (a variable bound in the preamble) crosses the channel, and the script
/// proves it got every byte. The job's masker is given no value, so this measures the SSH
/// path alone: its peak memory stays within 100 MB of where it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_megabytes_of_script_cross_ssh_in_linear_time_and_memory() {
    let _serial = serial();
    let sshd = Sshd::start();
    let exec = csm_agent::exec::ssh::SshExecutor::new(pool(), key_target(&sshd));
    // Warm the pool: the connection's own buffers are not the value's cost.
    assert_eq!(
        secret_of(&run_once(&exec, &job("secret=warm")).await),
        b"warm"
    );
    let mut vars = Variables::new();
    vars.insert("v", secret_bytes(value(MB3)));
    let rendered = Template::from_script("v=${v}\nsecret=\"${#v} $(printf %s \"$v\" | md5sum)\"")
        .render_with(&vars, &Variables::new(), &large())
        .expect("render");
    let want = {
        use std::io::Write;
        let mut md5 = std::process::Command::new("md5sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        md5.stdin.take().unwrap().write_all(&value(MB3)).unwrap();
        let out = md5.wait_with_output().unwrap();
        format!(
            "{MB3} {}",
            String::from_utf8(out.stdout).unwrap().trim_end()
        )
    };
    let mut j = Job::new(rendered, "/tmp", Duration::from_secs(60), &Variables::new());
    j.limits.grace = Duration::from_millis(300);
    let (before, _) = rss();
    reset_peak();
    let t0 = Instant::now();
    let o = run_once(&exec, &j).await;
    let took = t0.elapsed();
    let (_, peak) = rss();
    assert_eq!(String::from_utf8(secret_of(&o)).unwrap(), want);
    let grew = peak.saturating_sub(before);
    eprintln!(
        "3 MB of script over SSH: {took:?}, peak RSS +{} KiB",
        grew / 1024
    );
    assert!(grew < 100 << 20, "peak RSS grew by {} MiB", grew >> 20);
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

/// A 3 MB variable in, a 3 MB secret and one log line out, everything masked: linear time
/// and memory end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_megabyte_variable_and_secret_cost_linear_time_and_memory() {
    let _serial = serial();
    let sshd = Sshd::start();
    let exec = csm_agent::exec::ssh::SshExecutor::new(pool(), key_target(&sshd));
    assert_eq!(
        secret_of(&run_once(&exec, &job("secret=warm")).await),
        b"warm"
    );
    let mut vars = Variables::new();
    vars.insert("v", secret_bytes(value(MB3)));
    let rendered = Template::from_script("secret=\"${v}\"\necho one log line >&2")
        .render_with(&vars, &Variables::new(), &large())
        .expect("render");
    let mut j = Job::new(rendered, "/tmp", Duration::from_secs(120), &vars);
    j.limits.grace = Duration::from_millis(300);
    let (before, _) = rss();
    reset_peak();
    let t0 = Instant::now();
    let o = run_once(&exec, &j).await;
    let took = t0.elapsed();
    let (_, peak) = rss();
    assert_eq!(secret_of(&o), value(MB3));
    assert!(String::from_utf8_lossy(o.stderr.as_bytes()).contains("one log line"));
    let grew = peak.saturating_sub(before);
    eprintln!(
        "3 MB variable and secret over SSH: {took:?}, peak RSS +{} KiB",
        grew / 1024
    );
    assert!(grew < 100 << 20, "peak RSS grew by {} MiB", grew >> 20);
    assert!(took < Duration::from_secs(30), "took {took:?}");
}
