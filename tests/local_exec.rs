//! The local executor against real `/bin/bash`: exact values, early exit, errors and their
//! kinds, isolation (stdin, environment, argv), timeouts and process-tree kills, output caps,
//! masking, retries, cancellation and concurrency.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csm_agent::exec::local::{EnvPolicy, LocalExecutor};
use csm_agent::exec::{self, ExecError, Job, Outcome, RetryPolicy};
use csm_agent::secret::{secret_bytes, Variables};
use csm_agent::template::Template;
use csm_agent::{ErrorKind, Kind};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

fn vars(pairs: &[(&str, &[u8])]) -> Variables {
    let mut v = Variables::new();
    for (k, val) in pairs {
        v.insert(*k, secret_bytes(val.to_vec()));
    }
    v
}

fn job(script: &str, values: Variables, dir: &Path, timeout: Duration) -> Job {
    let t = Template::from_script(script);
    let rendered = t.render(&values, &Variables::new()).expect("render");
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

async fn run_job(j: &Job, policy: &RetryPolicy) -> Outcome {
    exec::run(
        &LocalExecutor::default(),
        j,
        policy,
        &CancellationToken::new(),
    )
    .await
}

async fn run(script: &str, values: Variables) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let j = job(script, values, dir.path(), Duration::from_secs(20));
    run_job(&j, &once()).await
}

fn secret_of(o: &Outcome) -> Vec<u8> {
    match &o.result {
        Ok(s) => s.expose_secret().to_vec(),
        Err(e) => panic!("expected a secret, got {:?}: {e}", e.kind()),
    }
}

fn kind_of(o: &Outcome) -> ErrorKind {
    match &o.result {
        Ok(_) => panic!("expected an error, got a secret"),
        Err(e) => e.kind(),
    }
}

/// Whether a process with `marker` in its argv is alive (zombies count as dead).
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
        // Field 3 (after "pid (comm)") is the state.
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

/// Wait (bounded) for no process to carry `marker`: signal delivery is asynchronous.
fn gone_within(marker: &str, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if !alive_with(marker) {
            return true;
        }
        std::thread::yield_now();
    }
    !alive_with(marker)
}

fn marker() -> String {
    format!("csm-marker-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

#[tokio::test]
async fn secret_is_byte_exact_with_no_trimming() {
    let o = run(
        r#"secret=$'  two\nlines \xff\x01 end\n\n'"#,
        Variables::new(),
    )
    .await;
    assert_eq!(secret_of(&o), b"  two\nlines \xff\x01 end\n\n");
}

#[tokio::test]
async fn early_exit_zero_still_returns_the_value() {
    let o = run("secret=early\nexit 0\nsecret=late", Variables::new()).await;
    assert_eq!(secret_of(&o), b"early");
}

#[tokio::test]
async fn a_scripts_own_exit_trap_is_chained_not_replaced() {
    let o = run(
        "trap 'echo cleanup >&2' EXIT\nsecret=kept\nexit 0",
        Variables::new(),
    )
    .await;
    assert_eq!(secret_of(&o), b"kept");
    assert!(String::from_utf8_lossy(o.stderr.as_bytes()).contains("cleanup"));
}

#[tokio::test]
async fn empty_null_and_unset_are_empty_secret_and_not_retried() {
    for script in ["secret=", "secret=null", "true"] {
        let dir = tempfile::tempdir().unwrap();
        let j = job(
            script,
            Variables::new(),
            dir.path(),
            Duration::from_secs(10),
        );
        let policy = RetryPolicy {
            attempts: 3,
            delay: Duration::from_millis(1),
        };
        let o = run_job(&j, &policy).await;
        assert_eq!(kind_of(&o), ErrorKind::EmptySecret, "{script}");
        assert_eq!(o.attempts, 1, "{script}: empty_secret must not be retried");
        assert_eq!(
            o.result.as_ref().unwrap_err().to_string(),
            "The custom shell script returned an empty or null value"
        );
    }
}

#[tokio::test]
async fn non_zero_exit_is_script_failed_with_code_and_tail_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let j = job(
        "echo 'boom happened' >&2; secret=partial-value; exit 7",
        Variables::new(),
        dir.path(),
        Duration::from_secs(10),
    );
    let policy = RetryPolicy {
        attempts: 3,
        delay: Duration::from_millis(5),
    };
    let o = run_job(&j, &policy).await;
    assert_eq!(o.attempts, 3);
    match &o.result {
        Err(ExecError::ScriptFailed { code, stderr_tail }) => {
            assert_eq!(*code, 7);
            assert!(stderr_tail.contains("boom happened"), "{stderr_tail}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn script_runs_in_command_path_and_missing_paths_are_command_path_errors() {
    let dir = tempfile::tempdir().unwrap();
    let canon = std::fs::canonicalize(dir.path()).unwrap();
    let j = job(
        "secret=$(pwd -P)",
        Variables::new(),
        dir.path(),
        Duration::from_secs(10),
    );
    let o = run_job(&j, &once()).await;
    assert_eq!(secret_of(&o), canon.to_str().unwrap().as_bytes());

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    for missing in [dir.path().join("nope"), file] {
        let j = job(
            "secret=x",
            Variables::new(),
            &missing,
            Duration::from_secs(10),
        );
        let o = run_job(&j, &once()).await;
        assert_eq!(kind_of(&o), ErrorKind::CommandPath);
        assert!(o
            .result
            .unwrap_err()
            .to_string()
            .contains(missing.to_str().unwrap()));
    }
}

#[tokio::test]
async fn stdin_is_dev_null() {
    let o = run(
        "secret=\"[$(cat)]$(readlink /proc/self/fd/0)\"",
        Variables::new(),
    )
    .await;
    assert_eq!(secret_of(&o), b"[]/dev/null");
}

/// The agent's environment, cleared to the allowlist: the allowed names arrive with their
/// values, and names that only resemble them (a prefix, a suffix, a longer name) do not.
#[tokio::test]
async fn environment_is_an_allowlist() {
    let planted: Vec<(String, String)> = [
        ("PATH", "/usr/bin:/bin"),
        ("HOME", "/home/agent"),
        ("LANG", "C.UTF-8"),
        ("LC_ALL", "C"),
        ("LC_TIME", "C"),
        ("TZ", "UTC"),
        ("USER", "agent"),
        ("LOGNAME", "agent"),
        ("EXTRA_OK", "yes"),
        // Near misses, and the agent's own secrets.
        ("HOME_TOKEN", "leak-1"),
        ("PATHX", "leak-2"),
        ("XPATH", "leak-3"),
        ("LC", "leak-4"),
        ("LCALL", "leak-5"),
        ("TZ_SECRET", "leak-6"),
        ("USERS", "leak-7"),
        ("LOGNAME2", "leak-8"),
        ("LANGUAGE_KEY", "leak-9"),
        ("EXTRA", "leak-10"),
        ("AGENT_TOKEN", "leak-11"),
        ("TMPDIR", "/agents/own/tmp"),
        ("CSM_AGENT_TASK", "forged"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let policy = EnvPolicy::with_extra(["EXTRA_*".to_string()]);
    let executor = LocalExecutor::from_env(&policy, planted);
    let dir = tempfile::tempdir().unwrap();
    let j = job(
        "secret=$(env | LC_ALL=C sort | tr '\\n' ' ')",
        Variables::new(),
        dir.path(),
        Duration::from_secs(20),
    );
    let o = exec::run(&executor, &j, &once(), &CancellationToken::new()).await;
    let seen = String::from_utf8(secret_of(&o)).unwrap();
    let vars: std::collections::BTreeMap<&str, &str> = seen
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    for (k, v) in [
        ("PATH", "/usr/bin:/bin"),
        ("HOME", "/home/agent"),
        ("LANG", "C.UTF-8"),
        ("LC_ALL", "C"),
        ("LC_TIME", "C"),
        ("TZ", "UTC"),
        ("USER", "agent"),
        ("LOGNAME", "agent"),
        ("EXTRA_OK", "yes"),
    ] {
        assert_eq!(vars.get(k), Some(&v), "{k} did not arrive: {seen}");
    }
    assert!(!seen.contains("leak-"), "a near-miss name arrived: {seen}");
    // The executor's own two, per attempt: never the agent's.
    assert_ne!(vars.get("TMPDIR"), Some(&"/agents/own/tmp"), "{seen}");
    assert_ne!(vars.get("CSM_AGENT_TASK"), Some(&"forged"), "{seen}");
    for name in vars.keys() {
        assert!(
            [
                "PATH",
                "HOME",
                "LANG",
                "LC_ALL",
                "LC_TIME",
                "TZ",
                "USER",
                "LOGNAME",
                "EXTRA_OK",
                "TMPDIR",
                "CSM_AGENT_TASK",
                "PWD",
                "SHLVL",
                "_",
                "OLDPWD"
            ]
            .contains(name),
            "unexpected variable {name} reached the script: {seen}"
        );
    }
}

/// Each attempt gets a private TMPDIR: mode 0700, on a memory filesystem where there is
/// one, where bash puts large here-documents, and removed on every path.
#[tokio::test]
async fn each_attempt_has_a_private_tmpdir_removed_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let body = "x".repeat(200_000);
    let script = format!(
        "stat -c '%a %U' \"$TMPDIR\" > seen\necho \"$TMPDIR\" >> seen\n\
         cat <<EOF | wc -c >> seen\n{body}\nEOF\n\
         touch \"$TMPDIR/left-behind\"\n"
    );
    for (tail, kind) in [
        ("secret=ok", None),
        ("exit 3", Some(ErrorKind::ScriptFailed)),
        ("sleep 1000", Some(ErrorKind::Timeout)),
    ] {
        let j = job(
            &format!("{script}{tail}"),
            Variables::new(),
            dir.path(),
            Duration::from_secs(3),
        );
        let o = run_job(&j, &once()).await;
        match kind {
            None => assert_eq!(secret_of(&o), b"ok"),
            Some(k) => assert_eq!(kind_of(&o), k),
        }
        let seen = std::fs::read_to_string(dir.path().join("seen")).unwrap();
        let mut lines = seen.lines();
        let mode = lines.next().unwrap();
        assert!(mode.starts_with("700 "), "{seen}");
        let tmp = PathBuf::from(lines.next().unwrap());
        assert_eq!(lines.next().unwrap().trim(), "200001", "{seen}");
        if Path::new("/dev/shm").is_dir() && std::env::var_os("XDG_RUNTIME_DIR").is_none() {
            assert!(tmp.starts_with("/dev/shm"), "{seen}");
        }
        assert!(!tmp.exists(), "{tail}: {} was left behind", tmp.display());
    }
    // Cancelled.
    let j = job(
        &format!("{script}touch started\nsleep 1000"),
        Variables::new(),
        dir.path(),
        Duration::from_secs(60),
    );
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let h =
        tokio::spawn(async move { exec::run(&LocalExecutor::default(), &j, &once(), &c2).await });
    let end = Instant::now() + Duration::from_secs(10);
    while !dir.path().join("started").exists() && Instant::now() < end {
        tokio::task::yield_now().await;
    }
    let seen = std::fs::read_to_string(dir.path().join("seen")).unwrap();
    let tmp = PathBuf::from(seen.lines().nth(1).unwrap());
    assert!(tmp.join("left-behind").exists());
    cancel.cancel();
    assert_eq!(kind_of(&h.await.unwrap()), ErrorKind::Cancelled);
    assert!(!tmp.exists(), "{} was left behind", tmp.display());
}

/// While the script runs, no process of its tree has a value or the script in argv or in its
/// environment. The script parks on a FIFO so the test can look at it.
#[tokio::test]
async fn values_never_reach_argv_or_environment() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let go = dir.path().join("go");
    for f in [&ready, &go] {
        nix::unistd::mkfifo(f, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }
    let value = b"argv-leak-canary-7f3a";
    // The child reports its parent's pid once it exists itself, so both are there to scan.
    let script = "# script-text-marker-6b1d\nv=${token}\nbash -c 'echo $PPID > ready; exec cat go' > /dev/null\nsecret=\"$v\"";
    let j = job(
        script,
        vars(&[("token", value)]),
        dir.path(),
        Duration::from_secs(20),
    );
    let exec_fut = tokio::spawn(async move { run_job(&j, &once()).await });

    let (ready2, go2) = (ready.clone(), go.clone());
    let scanned = tokio::task::spawn_blocking(move || {
        let mut pid = String::new();
        std::fs::File::open(&ready2)
            .unwrap()
            .read_to_string(&mut pid)
            .unwrap();
        let pid: i32 = pid.trim().parse().unwrap();
        let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).unwrap();
        let mut checked = 0;
        // Positive controls: the scan really reads argv and environments.
        let (mut saw_boot, mut saw_path) = (false, false);
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(g) = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(p))) else {
                continue;
            };
            if g != pgid {
                continue;
            }
            for f in ["cmdline", "environ"] {
                let data = std::fs::read(entry.path().join(f)).unwrap_or_default();
                saw_boot |= f == "cmdline" && data.windows(7).any(|w| w == b"--norc\0");
                saw_path |= f == "environ" && data.windows(5).any(|w| w == b"PATH=");
                assert!(
                    !data.windows(value.len()).any(|w| w == value),
                    "value found in /proc/{p}/{f}"
                );
                assert!(
                    !data.windows(18).any(|w| w == b"script-text-marker"),
                    "script text found in /proc/{p}/{f}"
                );
            }
            checked += 1;
        }
        assert!(
            saw_boot && saw_path,
            "the scan did not see the parked tree's argv/environment"
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(&go2)
            .unwrap()
            .write_all(b"go")
            .unwrap();
        checked
    })
    .await
    .unwrap();
    assert!(
        scanned >= 2,
        "expected bash and cat in the group, saw {scanned}"
    );
    let o = exec_fut.await.unwrap();
    assert_eq!(secret_of(&o), value);
}

#[tokio::test]
async fn timeout_kills_the_whole_process_tree() {
    let m = marker();
    let script = format!("(exec -a {m} sleep 1000) &\necho started\nsleep 1000");
    let dir = tempfile::tempdir().unwrap();
    let j = job(
        &script,
        Variables::new(),
        dir.path(),
        Duration::from_millis(400),
    );
    let t0 = Instant::now();
    let o = run_job(&j, &once()).await;
    assert_eq!(kind_of(&o), ErrorKind::Timeout);
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(String::from_utf8_lossy(o.stdout.as_bytes()).contains("started"));
    assert!(
        gone_within(&m, Duration::from_secs(5)),
        "backgrounded sleep survived the timeout"
    );
}

#[tokio::test]
async fn a_script_ignoring_sigterm_is_killed_after_the_grace_period() {
    let m = marker();
    let script = format!(
        "trap '' TERM\n(trap '' TERM; exec -a {m} sleep 1000) &\nwhile :; do sleep 0.05; done"
    );
    let dir = tempfile::tempdir().unwrap();
    let j = job(
        &script,
        Variables::new(),
        dir.path(),
        Duration::from_millis(300),
    );
    let o = run_job(&j, &once()).await;
    assert_eq!(kind_of(&o), ErrorKind::Timeout);
    assert!(gone_within(&m, Duration::from_secs(5)));
}

#[tokio::test]
async fn background_jobs_do_not_outlive_a_successful_script() {
    let m = marker();
    let script = format!("(exec -a {m} sleep 1000) &\nsecret=done");
    let o = run(&script, Variables::new()).await;
    assert_eq!(secret_of(&o), b"done");
    assert!(gone_within(&m, Duration::from_secs(5)));
}

/// A script with a real background child (a process of its own, not bash `exec`ed away)
/// that has provably started; cancelling, or dropping the attempt's future, kills both.
#[tokio::test]
async fn cancellation_and_drop_kill_the_tree() {
    for drop_it in [false, true] {
        let m = marker();
        let dir = tempfile::tempdir().unwrap();
        let started = dir.path().join("started");
        let j = job(
            &format!("(exec -a {m} sleep 1000) &\necho \"$!\" > started\nsleep 1000"),
            Variables::new(),
            dir.path(),
            Duration::from_secs(60),
        );
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        let handle =
            tokio::spawn(
                async move { exec::run(&LocalExecutor::default(), &j, &once(), &c2).await },
            );
        let end = Instant::now() + Duration::from_secs(10);
        while !(alive_with(&m) && started.exists()) && Instant::now() < end {
            tokio::task::yield_now().await;
        }
        assert!(alive_with(&m), "the background child never started");
        let child: i32 = std::fs::read_to_string(&started)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The child is a process of its own, not bash itself.
        let bash_pid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(child))).unwrap();
        assert_ne!(bash_pid.as_raw(), child, "the marker is bash itself");
        if drop_it {
            handle.abort();
            let _ = handle.await;
        } else {
            cancel.cancel();
            let o = handle.await.unwrap();
            assert_eq!(kind_of(&o), ErrorKind::Cancelled);
        }
        assert!(
            gone_within(&m, Duration::from_secs(5)),
            "drop={drop_it}: the background child survived"
        );
    }
}

#[tokio::test]
async fn gigabytes_of_output_are_drained_and_capped() {
    let o = run(
        "head -c 1073741824 /dev/zero\nhead -c 300000000 /dev/zero >&2\nsecret=survived",
        Variables::new(),
    )
    .await;
    assert_eq!(secret_of(&o), b"survived");
    let cap = 1 << 20;
    assert!(
        o.stdout.as_bytes().len() <= cap + 256,
        "{}",
        o.stdout.as_bytes().len()
    );
    assert!(o.stderr.as_bytes().len() <= cap + 256);
    assert_eq!(o.stdout.cut_bytes(), (1u64 << 30) - cap as u64);
}

#[tokio::test]
async fn a_script_larger_than_the_pipe_buffer_runs() {
    let filler = "# ".to_string() + &"x".repeat(200) + "\n";
    let script = filler.repeat(5000) + "secret=big-script-ok";
    let o = run(&script, Variables::new()).await;
    assert_eq!(secret_of(&o), b"big-script-ok");
}

#[tokio::test]
async fn exec_away_is_a_script_failure_without_report() {
    let o = run("exec true", Variables::new()).await;
    assert!(
        matches!(o.result, Err(ExecError::NoReport { .. })),
        "{:?}",
        o.result
    );
    assert_eq!(kind_of(&o), ErrorKind::ScriptFailed);
}

#[tokio::test]
async fn oversized_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = job(
        "secret=$(head -c 5000 /dev/zero | tr '\\0' a)",
        Variables::new(),
        dir.path(),
        Duration::from_secs(10),
    );
    j.limits.max_secret = 4096;
    let o = run_job(&j, &once()).await;
    assert_eq!(kind_of(&o), ErrorKind::SecretTooLarge);
    assert!(o.result.unwrap_err().to_string().contains("4096"));
}

#[tokio::test]
async fn values_and_secret_are_masked_in_logs_and_errors() {
    let value = b"var-value-1234";
    let script = "v=${token}\n\
        echo \"raw $v\"\n\
        printf '%s' \"$v\" | base64\n\
        echo \"$v\" | base64 >&2\n\
        secret=the-returned-secret\n\
        echo \"secret is $secret\" >&2\n\
        echo \"fail $v\" >&2\n\
        exit 3";
    let o = run(script, vars(&[("token", value)])).await;
    let all = [o.stdout.as_bytes(), o.stderr.as_bytes()].concat();
    let err = o.result.as_ref().unwrap_err().to_string();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    for needle in [
        &b"var-value-1234"[..],
        b"the-returned-secret",
        b64.as_bytes(),
        &b64.as_bytes()[..12],
    ] {
        assert!(
            !all.windows(needle.len()).any(|w| w == needle),
            "log leaks {:?}",
            String::from_utf8_lossy(needle)
        );
        assert!(
            !err.as_bytes().windows(needle.len()).any(|w| w == needle),
            "error leaks: {err}"
        );
    }
    assert!(
        String::from_utf8_lossy(&all).contains("raw ***"),
        "{}",
        String::from_utf8_lossy(&all)
    );
}

#[tokio::test]
async fn short_values_follow_the_documented_minimum() {
    // A variable under the minimum is not masked (masking "eu" would destroy the log)...
    let o = run(
        "echo \"region ${k}\"\nsecret=long-enough-secret",
        vars(&[("k", b"eu")]),
    )
    .await;
    assert_eq!(secret_of(&o), b"long-enough-secret");
    assert_eq!(o.stdout.as_bytes(), b"region eu\n");
    // ...but a returned secret that short cannot be shown safely, so the log is withheld.
    let o = run(
        "echo \"value abc here\"\necho more >&2\nsecret=abc",
        Variables::new(),
    )
    .await;
    assert_eq!(secret_of(&o), b"abc");
    for log in [&o.stdout, &o.stderr] {
        let text = String::from_utf8_lossy(log.as_bytes());
        assert!(text.contains("withheld"), "{text}");
        assert!(!text.contains("value abc"), "{text}");
    }
}

#[tokio::test]
async fn many_concurrent_jobs_on_one_executor() {
    let executor = Arc::new(LocalExecutor::default());
    let dir = tempfile::tempdir().unwrap();
    let mut handles = Vec::new();
    for i in 0..50 {
        let executor = executor.clone();
        let path: PathBuf = dir.path().to_path_buf();
        handles.push(tokio::spawn(async move {
            let j = job(
                &format!("secret=value-{i}"),
                Variables::new(),
                &path,
                Duration::from_secs(30),
            );
            let o = exec::run(executor.as_ref(), &j, &once(), &CancellationToken::new()).await;
            (i, o)
        }));
    }
    for h in handles {
        let (i, o) = h.await.unwrap();
        assert_eq!(secret_of(&o), format!("value-{i}").as_bytes());
    }
}

#[tokio::test]
async fn nothing_is_left_in_command_path() {
    let dir = tempfile::tempdir().unwrap();
    let j = job(
        "secret=clean",
        vars(&[("k", b"some-value-here")]),
        dir.path(),
        Duration::from_secs(10),
    );
    let o = run_job(&j, &once()).await;
    assert_eq!(secret_of(&o), b"clean");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
