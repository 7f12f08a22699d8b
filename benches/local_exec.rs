//! Per-task overhead of the local executor against its floor, measured in the same run.
//!
//! Floor: write the script to a temp file, run `bash file`, read its stdout. That is what
//! Harness's delegate does, minus its JVM. Ours: render a template, run it through
//! `exec::run` on a `LocalExecutor` (wrapper, process group, env allowlist, result pipe,
//! masked capture) and get the secret. Iterations alternate between the two, so drift in
//! machine load hits both alike.
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
    let exec = LocalExecutor::default();
    let template = Template::from_script(SCRIPT);
    let policy = RetryPolicy {
        attempts: 1,
        delay: Duration::ZERO,
    };
    for _ in 0..30 {
        floor(dir.path());
        rt.block_on(ours(&exec, &dir_s, &template, &policy));
    }
    let (mut f, mut o) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    for i in 0..iters {
        if i % 2 == 0 {
            f.push(floor(dir.path()));
            o.push(rt.block_on(ours(&exec, &dir_s, &template, &policy)));
        } else {
            o.push(rt.block_on(ours(&exec, &dir_s, &template, &policy)));
            f.push(floor(dir.path()));
        }
    }
    let (f50, o50) = (pct(&mut f, 0.5), pct(&mut o, 0.5));
    let (f90, o90) = (pct(&mut f, 0.9), pct(&mut o, 0.9));
    println!("local executor, {iters} iterations each, interleaved");
    println!(
        "  floor (write file, bash file, read output): p50 {:.3} ms  p90 {:.3} ms",
        ms(f50),
        ms(f90)
    );
    println!(
        "  csm-agent (render + exec::run):             p50 {:.3} ms  p90 {:.3} ms",
        ms(o50),
        ms(o90)
    );
    println!(
        "  ratio p50 {:.2}x  (goal <= 1.20x)",
        o50.as_secs_f64() / f50.as_secs_f64()
    );
}
