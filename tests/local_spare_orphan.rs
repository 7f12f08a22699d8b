//! A ready bash (`LocalExecutor::with_spare`) whose agent is SIGKILLed finds its stdin at
//! end of file, removes its temporary directory and exits.
//!
//! A binary of its own: a process that has run local attempts is a child subreaper, so the
//! orphaned bash would be re-parented to it and swept as a dead attempt's orphan before it
//! could clean up. Here the test process runs no attempt; the "agent" is this binary again,
//! in a child process.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use csm_agent::exec::local::{EnvPolicy, LocalExecutor};

const LIMIT: Duration = Duration::from_secs(10);
const TEST: &str = "a_ready_bash_whose_agent_dies_exits_and_removes_its_directory";

/// The "agent": ready a bash whose directory is under `base`, say which, wait to be killed.
fn agent(base: &Path) {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.retain(|(k, _)| k != "XDG_RUNTIME_DIR");
    env.push(("XDG_RUNTIME_DIR".into(), base.to_str().unwrap().into()));
    let exec = LocalExecutor::from_env(&EnvPolicy::default(), env).with_spare();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(exec.warm_up());
    // Its only child is the ready bash.
    let kids = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .collect::<String>();
    let pid: i32 = kids.split_whitespace().next().unwrap().parse().unwrap();
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let tmp = env
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"TMPDIR="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap();
    println!("\nCSM-READY {pid} {tmp}");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(exec);
}

#[test]
fn a_ready_bash_whose_agent_dies_exits_and_removes_its_directory() {
    if let Some(base) = std::env::var_os("CSM_SPARE_AGENT_BASE") {
        return agent(Path::new(&base));
    }
    let base = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env("CSM_SPARE_AGENT_BASE", base.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (pid, tmp) = loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the agent said nothing"
        );
        // libtest may have printed the test's name on the same line.
        if let Some((_, rest)) = line.trim_end().split_once("CSM-READY ") {
            let (pid, tmp) = rest.split_once(' ').unwrap();
            break (pid.parse::<i32>().unwrap(), PathBuf::from(tmp));
        }
    };
    assert!(tmp.starts_with(base.path()) && tmp.is_dir());
    child.kill().unwrap();
    child.wait().unwrap();
    // Its stdin is at end of file: the bootstrap removes the directory, then exits.
    assert!(
        support::exits_by(pid, Instant::now() + LIMIT),
        "the orphaned ready bash lives on"
    );
    assert!(!tmp.exists(), "{} is left behind", tmp.display());
}
