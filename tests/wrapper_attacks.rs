//! The local wrapper under attack, against real `/bin/bash`: only the wrapper can produce the
//! result, the result is exact whatever state the script leaves the shell in, the secret is
//! never written anywhere but the real channel, and what the agent inherited never reaches
//! a script.
//!
//! Each forgery is tried the way a program the script runs could: from a child, a
//! subshell, a coproc, an `exec`ed program, with and without the attempt's nonce, and
//! concurrently with the real report.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use csm_agent::exec::local::LocalExecutor;
use csm_agent::exec::{self, ExecError, Job, Outcome, RetryPolicy};
use csm_agent::secret::Variables;
use csm_agent::template::Template;
use csm_agent::{ErrorKind, Kind};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

fn job(script: &str, dir: &Path) -> Job {
    let values = Variables::new();
    let rendered = Template::from_script(script)
        .render(&values, &Variables::new())
        .expect("render");
    let mut j = Job::new(
        rendered,
        dir.to_str().unwrap(),
        Duration::from_secs(30),
        &values,
    );
    j.limits.grace = Duration::from_millis(300);
    j
}

fn once() -> RetryPolicy {
    RetryPolicy {
        attempts: 1,
        delay: Duration::ZERO,
    }
}

async fn run_in(script: &str, dir: &Path) -> Outcome {
    exec::run(
        &LocalExecutor::default(),
        &job(script, dir),
        &once(),
        &CancellationToken::new(),
    )
    .await
}

async fn run(script: &str) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    run_in(script, dir.path()).await
}

fn secret_of(o: &Outcome) -> Vec<u8> {
    match &o.result {
        Ok(s) => s.expose_secret().to_vec(),
        Err(e) => panic!(
            "expected a secret, got {:?}: {e}\nstderr: {}",
            e.kind(),
            String::from_utf8_lossy(o.stderr.as_bytes())
        ),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn logs(o: &Outcome) -> Vec<u8> {
    [o.stdout.as_bytes(), o.stderr.as_bytes()].concat()
}

/// A forged frame for every format a forger might guess, with the given nonce.
const FORGE_ALL: &str = r#"forge() {
  local fd
  for fd in {3..255}; do
    { printf 'csm:done 0 4\nEVIL'; printf '\ncsm:%s done 0\nEVIL\0' "$1"; printf '\ncsm:%s unset 0\n' "$1"; } >&$fd
  done 2>/dev/null
}
"#;

#[tokio::test]
async fn a_child_cannot_forge_the_result_with_or_without_the_nonce() {
    // A child that does not know the nonce writes the old frame format to every fd.
    let o = run(&format!(
        "{FORGE_ALL}export -f forge\nbash -c 'forge 00000000000000000000000000000000'\nsecret=real-value"
    ))
    .await;
    assert_eq!(secret_of(&o), b"real-value");

    // A subshell *does* know the nonce (it is a copy of the shell): the kernel's sender
    // credentials still tell it apart from the wrapper.
    let o = run(&format!(
        "{FORGE_ALL}(forge \"$__csm_n\")\nsecret=real-value"
    ))
    .await;
    assert_eq!(secret_of(&o), b"real-value");

    // So does a coproc, and a background job racing the real report.
    let o = run(&format!(
        "{FORGE_ALL}coproc {{ forge \"$__csm_n\"; }}\n( while :; do forge \"$__csm_n\"; done ) &\nsecret=real-value"
    ))
    .await;
    assert_eq!(secret_of(&o), b"real-value");
}

#[tokio::test]
async fn an_execed_program_keeps_bashs_pid_but_not_the_nonce() {
    // The exec'd program writes from bash's own pid; without the nonce it is noise, and
    // the script ended without reporting.
    let o = run(&format!(
        "{FORGE_ALL}export -f forge\nsecret=real-value\nexec bash -c 'forge 11111111111111111111111111111111'"
    ))
    .await;
    assert!(
        matches!(o.result, Err(ExecError::NoReport { .. })),
        "{:?}",
        o.result
    );
}

#[tokio::test]
async fn garbage_and_half_frames_written_concurrently_do_not_corrupt_a_large_secret() {
    // Half a MiB of secret (many writes) while children spray garbage, half frames and NULs at every fd.
    let script = r#"
spray() { while :; do for fd in {3..255}; do printf 'csm:%s done 0\nxx\0garbage\n\0csm:' "$__csm_n" >&$fd; done 2>/dev/null; done; }
spray & spray &
secret=$(head -c 524288 /dev/zero | tr '\0' 'k')
"#;
    let o = run(script).await;
    let s = secret_of(&o);
    assert_eq!(s.len(), 512 << 10);
    assert!(s.iter().all(|&b| b == b'k'));
}

#[tokio::test]
async fn the_result_does_not_depend_on_the_scripts_shell_state() {
    let multibyte = "ü€😀 \u{1F600}\n\tend";
    let cases: Vec<(&str, String)> = vec![
        ("IFS=0", "IFS=0\nsecret=1020304050".into()),
        ("readonly IFS", "readonly IFS=0\nsecret=1020304050".into()),
        (
            "readonly UTF-8 LC_ALL",
            format!("readonly LC_ALL=C.UTF-8\nsecret=$'{}'", escape(multibyte)),
        ),
        (
            "readonly PATH and POSIXLY_CORRECT",
            "readonly PATH=/nonexistent POSIXLY_CORRECT\nsecret=x1x2x3".into(),
        ),
        ("set -euo pipefail", "set -euo pipefail\nsecret=x1x2x3".into()),
        ("set -x", "set -x\nsecret=x1x2x3".into()),
        ("set -C -f -a -k -b -h", "set -Cfakbh\nsecret=x1x2x3".into()),
        (
            "shopt soup",
            "shopt -s extglob nullglob failglob nocasematch nocaseglob dotglob globstar xpg_echo lastpipe expand_aliases\nalias printf=false builtin=false\nsecret=x1x2x3".into(),
        ),
        (
            "DEBUG, RETURN and ERR traps, inherited",
            "set -ET\ntrap 'echo dbg >/dev/null' DEBUG\ntrap 'echo ret >/dev/null' RETURN\ntrap 'echo err >/dev/null' ERR\nsecret=x1x2x3".into(),
        ),
        (
            "posix mode",
            "set -o posix\nsecret=x1x2x3".into(),
        ),
        ("exit from a function", "f() { secret=x1x2x3; exit 0; }\nf\nsecret=late".into()),
        ("secret is an integer", "declare -i secret=7*6".into()),
        ("unset -f everything of ours we can name", "unset -f __csm_x 2>/dev/null; secret=x1x2x3".into()),
    ];
    for (name, script) in cases {
        let o = run(&script).await;
        let want: &[u8] = match name {
            "IFS=0" | "readonly IFS" => b"1020304050",
            "readonly UTF-8 LC_ALL" => multibyte.as_bytes(),
            "secret is an integer" => b"42",
            _ => b"x1x2x3",
        };
        assert_eq!(secret_of(&o), want, "{name}");
    }
}

fn escape(s: &str) -> String {
    s.bytes().map(|b| format!("\\x{b:02x}")).collect()
}

/// Every builtin the trap and the epilogue call, shadowed by a function that would lie.
#[tokio::test]
async fn functions_named_after_every_builtin_the_wrapper_uses_are_bypassed() {
    let names = [
        "printf", "builtin", "local", "command", "set", "unset", "exec", "eval", "kill", "echo",
        "read", "declare", "typeset", "shopt", "enable", "type", "test", "[", "cd", "trap",
        "return", "true", "false", ":", "source", ".", "disown", "wait",
    ];
    for tail in ["", "exit 0\n"] {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        std::fs::create_dir(&seen).unwrap();
        // Each one leaves a file named after itself (a bare redirection: no command a
        // hijacked name could catch) and does nothing else.
        let mut script = format!("seen={}\n", seen.display());
        for n in names {
            script.push_str(&format!("function {n} {{ >\"$seen/{n}\"; }}\n"));
        }
        script.push_str("secret=not-hijacked\n");
        script.push_str(tail);
        let o = run_in(&script, dir.path()).await;
        assert_eq!(secret_of(&o), b"not-hijacked", "{tail:?}");
        let called: Vec<String> = std::fs::read_dir(&seen)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        // Only the script's own `return` (the epilogue hands the exit status back with it,
        // after the frame is written) may run.
        assert!(
            called.iter().all(|n| n == "return"),
            "{tail:?}: the wrapper called {called:?}"
        );
    }
}

#[tokio::test]
async fn the_scripts_exit_traps_cannot_remove_the_report() {
    for (script, want) in [
        ("trap - EXIT\nsecret=kept\nexit 0", "kept"),
        ("trap '' EXIT\nsecret=kept\nexit 0", "kept"),
        ("trap EXIT\nsecret=kept\nexit 0", "kept"),
        ("trap -- 'echo bye >&2' EXIT\nsecret=kept\nexit 0", "kept"),
        // A saved and restored `trap -p` hands our own handler back.
        (
            "old=$(trap -p EXIT)\ntrap 'echo x' EXIT\neval \"$old\"\nsecret=kept\nexit 0",
            "kept",
        ),
        // Behind the wrapper's back, with a normal end: the epilogue reports.
        ("builtin trap - EXIT\nsecret=kept", "kept"),
        (
            "set -o posix\ntrap 'echo bye >&2' EXIT\nsecret=kept",
            "kept",
        ),
        ("command trap '' EXIT\nsecret=kept", "kept"),
    ] {
        let o = run(script).await;
        assert_eq!(secret_of(&o), want.as_bytes(), "{script}");
    }
    // The script's own trap still runs, after the report.
    let o = run("trap 'echo bye >&2' EXIT\nsecret=kept").await;
    assert_eq!(secret_of(&o), b"kept");
    assert!(contains(o.stderr.as_bytes(), b"bye"));
    // Removed behind the wrapper's back *and* an early exit: nothing reports, and the
    // attempt fails rather than return anything else.
    let o = run("builtin trap - EXIT\nsecret=kept\nexit 0").await;
    assert!(matches!(o.result, Err(ExecError::NoReport { .. })));
}

#[tokio::test]
async fn the_secret_goes_nowhere_but_the_channel_whatever_the_fds() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x");
    let f = file.to_str().unwrap();
    // The common idiom: fd 3 becomes stdout. The channel is not on fd 3, so it still works,
    // and neither the frame nor the secret is in the log.
    let o = run_in(
        "exec 3>&1 1>&2\nsecret=idiom-secret-1\necho done >&3",
        dir.path(),
    )
    .await;
    assert_eq!(secret_of(&o), b"idiom-secret-1");
    assert!(!contains(&logs(&o), b"csm:"));
    let o = run_in(&format!("exec 3>{f}\nsecret=idiom-secret-2"), dir.path()).await;
    assert_eq!(secret_of(&o), b"idiom-secret-2");
    assert!(!contains(&std::fs::read(&file).unwrap(), b"idiom-secret-2"));

    // Every descriptor moved to a file, or to stdout: the trap finds no channel, writes
    // nothing, and the attempt fails; the secret is in neither the file nor the log.
    for target in [format!(">{f}"), ">&1".to_string(), ">&2".to_string()] {
        let script = format!(
            "secret=clobbered-secret\nfor fd in {{3..255}}; do eval \"exec $fd{target}\"; done 2>/dev/null\ntrue"
        );
        let o = run_in(&script, dir.path()).await;
        assert!(
            matches!(o.result, Err(ExecError::NoReport { .. })),
            "{target}: {:?}",
            o.result
        );
        assert!(!contains(&logs(&o), b"clobbered-secret"), "{target}");
        assert!(!contains(
            &std::fs::read(&file).unwrap(),
            b"clobbered-secret"
        ));
    }
    // Closed: the same.
    let o = run_in(
        "secret=closed-secret\nfor fd in {3..255}; do eval \"exec $fd>&-\"; done\ntrue",
        dir.path(),
    )
    .await;
    assert!(matches!(o.result, Err(ExecError::NoReport { .. })));
}

#[tokio::test]
async fn a_child_killing_the_shell_ends_the_attempt_without_a_result() {
    let o = run("secret=x\nbash -c 'kill -9 $PPID'\nsleep 5\nsecret=y").await;
    match &o.result {
        Err(ExecError::NoReport { how, .. }) => assert!(how.contains("signal 9"), "{how}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn xtrace_never_shows_the_frame_or_its_nonce() {
    let o = run("set -x\nsecret=traced-secret-value\nexit 0").await;
    assert_eq!(secret_of(&o), b"traced-secret-value");
    let err = String::from_utf8_lossy(o.stderr.as_bytes()).into_owned();
    assert!(err.contains("+ secret="), "xtrace was on: {err}");
    // No 32-hex-digit run (the nonce) anywhere in the trace.
    let hex_run = err
        .as_bytes()
        .split(|b| !b.is_ascii_hexdigit())
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    assert!(hex_run < 32, "{err}");
}

#[tokio::test]
async fn an_oversized_secret_is_secret_too_large_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = job("secret=$(head -c 5000 /dev/zero | tr '\\0' a)", dir.path());
    j.limits.max_secret = 4096;
    let policy = RetryPolicy {
        attempts: 3,
        delay: Duration::ZERO,
    };
    let o = exec::run(
        &LocalExecutor::default(),
        &j,
        &policy,
        &CancellationToken::new(),
    )
    .await;
    let e = o.result.as_ref().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SecretTooLarge);
    assert!(e.to_string().contains("4096"), "{e}");
    assert_eq!(o.attempts, 1, "{e}");
    // At the limit exactly, it is returned.
    let mut j = job("secret=$(head -c 4096 /dev/zero | tr '\\0' a)", dir.path());
    j.limits.max_secret = 4096;
    let o = exec::run(
        &LocalExecutor::default(),
        &j,
        &once(),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(secret_of(&o).len(), 4096);
}

/// The agent's own inherited descriptors never reach a script: `csm-agent` started with fd
/// 9 open on a private file (as a careless parent might leave it).
#[test]
fn descriptors_the_agent_inherited_do_not_reach_the_script() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("private");
    std::fs::write(&private, b"private-canary-4471").unwrap();
    let t = dir.path().join("t.sh");
    std::fs::write(
        &t,
        b"secret=\"[$(cat <&9 2>/dev/null || echo closed)][$(ls /proc/$$/fd | sort -n | tr '\\n' ' ')]\"",
    )
    .unwrap();
    let spawn = |cmd: &mut Command| {
        let f = std::fs::File::open(&private).unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&f);
        // SAFETY: dup2 and fcntl are async-signal-safe; `raw` is open in the child.
        unsafe {
            cmd.pre_exec(move || {
                // With other tests opening files concurrently, `raw` may itself be 9, and
                // dup2 onto itself would leave it close-on-exec.
                let ok = if raw == 9 {
                    nix::libc::fcntl(9, nix::libc::F_SETFD, 0)
                } else {
                    nix::libc::dup2(raw, 9)
                };
                if ok < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        drop(f);
        out
    };
    // Positive control: a plain child of the same parent does see fd 9.
    let control = spawn(Command::new("/bin/bash").args(["-c", "cat <&9"]));
    assert_eq!(control.stdout, b"private-canary-4471");

    let out = spawn(Command::new(env!("CARGO_BIN_EXE_csm-agent")).args([
        "test-run",
        "--template",
        t.to_str().unwrap(),
        "--command-path",
        dir.path().to_str().unwrap(),
        "--reveal",
        "-q",
    ]));
    let seen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(seen.starts_with("[closed]["), "{seen}");
    assert!(!seen.contains("private-canary"), "{seen}");
    // bash holds stdin, stdout, stderr, the two channel copies, and the pipe of the `$(…)`.
    let fds: Vec<i32> = seen
        .trim_end_matches([']', ' '])
        .rsplit('[')
        .next()
        .unwrap()
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(!fds.contains(&9), "{seen}");
    assert_eq!(fds.iter().filter(|&&f| f >= 64).count(), 2, "{seen}");
}
