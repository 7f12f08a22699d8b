//! Per-task overhead of the local executor against its floor, measured in the same run.
//!
//! Floor: write the script to a temp file, run `bash file`, read its stdout. That is what
//! Harness's delegate does, minus its JVM. Ours: render a template, run it through
//! `exec::run` on a `LocalExecutor` (wrapper, process group, env allowlist, result channel,
//! masked capture, orphan sweep) and get the secret, two ways:
//! - **warm**, as the agent runs it (`with_spare`): a bash was started ahead of the task.
//!   Before every floor run the bench waits until that bash is ready (`warm_up`), so the
//!   floor never shares the machine with one starting;
//! - **cold**: bash is started for the task, as `csm-agent test-run` does.
//!
//! Iterations rotate through the three, so drift in machine load hits all alike.
//!
//! `cargo bench --bench local_exec` (CSM_BENCH_ITERS=N to change the count).

use std::io::Write;
use std::time::{Duration, Instant};

use csm_agent::exec::local::LocalExecutor;
use csm_agent::exec::{self, Job, RetryPolicy};
use csm_agent::secret::{secret_bytes, Variables};
use csm_agent::template::Template;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

mod common;
use common::{ms, pct};

const SCRIPT: &str = "secret=abc\nprintf %s \"$secret\"\n";

fn floor(dir: &std::path::Path) -> Duration {
    let t = Instant::now();
    let path = dir.join("floor.sh");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(SCRIPT.as_bytes()).unwrap();
    drop(f);
    let out = std::process::Command::new("/bin/bash")
        .arg(&path)
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"abc");
    std::fs::remove_file(&path).unwrap();
    t.elapsed()
}

async fn ours(
    exec: &LocalExecutor,
    dir: &str,
    template: &Template,
    policy: &RetryPolicy,
) -> Duration {
    let t = Instant::now();
    let mut vars = Variables::new();
    vars.insert("unused", secret_bytes(b"a-variable-value".to_vec()));
    let rendered = template.render(&vars, &Variables::new()).unwrap();
    let job = Job::new(rendered, dir, Duration::from_secs(60), &vars);
    let o = exec::run(exec, &job, policy, &CancellationToken::new()).await;
    assert_eq!(o.result.unwrap().expose_secret(), b"abc");
    t.elapsed()
}

fn main() {
    let iters: usize = std::env::var("CSM_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_string();
    let warm = LocalExecutor::default().with_spare();
    let cold = LocalExecutor::default();
    let template = Template::from_script(SCRIPT);
    let policy = RetryPolicy {
        attempts: 1,
        delay: Duration::ZERO,
    };
    let settle = || rt.block_on(warm.warm_up());
    for _ in 0..30 {
        settle();
        floor(dir.path());
        rt.block_on(ours(&warm, &dir_s, &template, &policy));
        rt.block_on(ours(&cold, &dir_s, &template, &policy));
    }
    let mut f = Vec::with_capacity(iters);
    let (mut w, mut c) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    for i in 0..iters {
        for k in 0..3 {
            settle();
            match (i + k) % 3 {
                0 => f.push(floor(dir.path())),
                1 => w.push(rt.block_on(ours(&warm, &dir_s, &template, &policy))),
                _ => c.push(rt.block_on(ours(&cold, &dir_s, &template, &policy))),
            }
        }
    }
    let f50 = pct(&mut f, 0.5);
    println!("local executor, {iters} iterations each, interleaved");
    let line = |name: &str, v: &mut Vec<Duration>| {
        println!(
            "  {name:<44} p50 {:.3} ms  p90 {:.3} ms",
            ms(pct(v, 0.5)),
            ms(pct(v, 0.9))
        );
    };
    line("floor (write file, bash file, read output):", &mut f);
    line("csm-agent warm (render + exec::run):", &mut w);
    line("csm-agent cold (render + exec::run):", &mut c);
    println!(
        "  ratio p50 warm {:.2}x  (goal <= 1.20x), cold {:.2}x",
        pct(&mut w, 0.5).as_secs_f64() / f50.as_secs_f64(),
        pct(&mut c, 0.5).as_secs_f64() / f50.as_secs_f64()
    );
}
