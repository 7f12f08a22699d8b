//! Differential fuzzing of the template renderer against real bash (issue 6, section 1).
//!
//! The promise: for every template and value, either rendering refuses, or bash sees
//! exactly the value's bytes and no side effect happens. `tests/support/bashfuzz` generates
//! templates from a bash grammar with placeholders at random positions, renders them with
//! hostile and benign values, runs the result under `/bin/bash` and checks canaries,
//! stray files, parse errors, dead code and exact observations. See `docs/fuzzing.md`.
//!
//! - `cargo test --test render_fuzz`: 10,000 cases (CI), plus the generator's self-check and
//!   the oracle's positive control.
//! - `cargo test --release --test render_fuzz -- --ignored`: 1,000,000 cases, with progress.

mod support;

use std::time::Duration;

use support::bashfuzz::sandbox::{run_bash, Sandbox};
use support::bashfuzz::{self, oracle::Mode, report, Settings};

/// CI's seed: a fixed one, so a CI failure reproduces anywhere.
const CI_SEED: u64 = 0xC5A6_F022;

fn print_failures(settings: &Settings, s: &bashfuzz::Summary) {
    // One report per class (its shortest minimised case) first: they are the readable ones.
    let reps = s.representatives();
    let mut printed = 0;
    for (class, n, r) in &reps {
        if printed == settings.reports {
            return;
        }
        eprintln!("#### class {class} ({n} failures)");
        eprintln!("{}", report(settings, r));
        printed += 1;
    }
    for r in s.failures.iter().filter(|r| r.minimized.is_none()) {
        if printed == settings.reports {
            return;
        }
        eprintln!("{}", report(settings, r));
        printed += 1;
    }
}

/// The renderer keeps every value data: no canary, no stray file, no parse error, dead code
/// stays dead and every observation is byte-exact (or rendering refuses).
#[test]
fn rendered_templates_keep_values_as_data_in_real_bash() {
    let settings = Settings::from_env(10_000, CI_SEED, Mode::Renderer);
    let s = bashfuzz::run(&settings);
    eprintln!("{}", s.render());
    print_failures(&settings, &s);
    assert_eq!(
        s.failed(),
        0,
        "the renderer broke its promise; see the reports above"
    );
    if settings.single.is_none() {
        assert_eq!(s.run, settings.cases, "every case ran");
        // A fuzzer whose every template is refused proves nothing.
        assert!(
            s.rendered * 10 >= s.run,
            "only {} of {} cases rendered: the generator no longer reaches the renderer",
            s.rendered,
            s.run
        );
    }
}

/// Positive control for the generator's model of bash: with values for which pasting the
/// text verbatim is exact (`[A-Za-z0-9_]+`), every template runs to its end, no observation
/// is missing, dead code stays dead and every expected byte matches. A failure here is a
/// bug in the generator, not in the renderer.
#[test]
fn generator_model_matches_bash() {
    let mut settings = Settings::from_env(500, CI_SEED ^ 0x5E1F, Mode::NaivePaste);
    settings.gen.paste_safe_values = true;
    let s = bashfuzz::run(&settings);
    eprintln!("{}", s.render());
    print_failures(&settings, &s);
    assert_eq!(
        s.failed(),
        0,
        "the generator's expectations disagree with bash"
    );
    assert_eq!(s.rendered, s.run);
    assert!(s.checked >= s.run, "observations were compared");
}

/// Positive control for the oracle: pasting hostile values verbatim (what a naive renderer
/// would do) must be caught, by canaries and by exactness checks.
#[test]
fn oracle_catches_a_naive_renderer() {
    let mut settings = Settings::from_env(300, CI_SEED ^ 0xBAD, Mode::NaivePaste);
    settings.keep_going = true;
    settings.minimize = 0;
    settings.single = None;
    let s = bashfuzz::run(&settings);
    eprintln!("{}", s.render());
    let canary = s.by_check.get("Canary").copied().unwrap_or(0);
    let mismatch = s.by_check.get("Mismatch").copied().unwrap_or(0);
    assert!(
        canary * 5 >= s.run,
        "the canary caught only {canary} of {} naive renders",
        s.run
    );
    assert!(mismatch > 0, "exactness checks caught nothing");
}

/// Each case runs in a private directory (mode 0700) that is gone afterwards, and the
/// canary directory values point to is inside it.
#[test]
fn case_directories_are_private_and_removed() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let dir = sb.case_dir(7);
    let work = dir.work.clone();
    let base = work.parent().unwrap().to_path_buf();
    for d in [&base, &work] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
    let run = run_bash(
        b"printf x > f; touch P_probe",
        &dir,
        false,
        Duration::from_secs(10),
    );
    assert!(!run.timed_out);
    assert_eq!(dir.entries(), ["P_probe", "f"]);
    assert!(bashfuzz::oracle::is_canary("P_probe"));
    drop(dir);
    assert!(!base.exists(), "the case directory is removed");
}

/// A script that outlives its deadline is killed with everything it started, and the
/// runner returns at the deadline rather than when the processes would have ended.
#[test]
fn runaway_scripts_are_killed_at_the_deadline() {
    let sb = Sandbox::new();
    let dir = sb.case_dir(1);
    let script = b"sleep 30 & echo $! > bg; sleep 30";
    let run = run_bash(script, &dir, false, Duration::from_millis(300));
    assert!(run.timed_out);
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
    let pid: i32 = String::from_utf8(dir.read("bg").unwrap())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        support::exits_by(pid, std::time::Instant::now() + Duration::from_secs(10)),
        "background job {pid} survived"
    );
}

/// A script that closes its output and goes on is not cut short: the runner waits for
/// bash itself, not only for end-of-file.
#[test]
fn scripts_that_close_their_output_still_run_to_the_end() {
    let sb = Sandbox::new();
    let dir = sb.case_dir(2);
    let script =
        b"exec >&- 2>&-\nfor i in 1 2 3 4 5 6 7 8; do : \"$(printf x)\"; done\nprintf x > late";
    let run = run_bash(script, &dir, false, Duration::from_secs(20));
    assert!(!run.timed_out);
    assert_eq!(dir.read("late").as_deref(), Some(&b"x"[..]));
}

/// The long run: a million cases, with progress and totals.
#[test]
#[ignore = "long run: cargo test --release --test render_fuzz -- --ignored"]
fn long_run() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut settings = Settings::from_env(1_000_000, seed, Mode::Renderer);
    settings.progress = true;
    eprintln!(
        "bash-fuzz long run: {} cases, seed {:#x}, {} threads",
        settings.cases, settings.seed, settings.threads
    );
    let s = bashfuzz::run(&settings);
    eprintln!("{}", s.render());
    print_failures(&settings, &s);
    assert_eq!(
        s.failed(),
        0,
        "the renderer broke its promise; see the reports above"
    );
}
