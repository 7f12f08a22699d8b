//! A differential fuzzer for the template renderer against real bash.
//!
//! The promise under test: for every template and value, either rendering refuses (a
//! `TemplateError` of kind `render_error`, `missing_variable` or `invalid_input`), or bash
//! sees exactly the value's bytes and no side effect happens. [`gen`] writes bash templates
//! from a grammar, with placeholders everywhere and observations whose exact output it
//! knows; [`values`] makes hostile and benign values; [`oracle`] renders, runs the result
//! under `/bin/bash` in a [`sandbox`] and judges; [`minimize`] shrinks failures.
//!
//! Knobs (environment): `CSM_FUZZ_CASES`, `CSM_FUZZ_SEED`, `CSM_FUZZ_THREADS`,
//! `CSM_FUZZ_KEEP_GOING=1` (collect and classify failures instead of stopping at the first),
//! `CSM_FUZZ_MINIMIZE` (how many failures to minimise), `CSM_FUZZ_CASE=N` (run only case
//! N), `CSM_FUZZ_REPORTS` (failure reports to print), `CSM_FUZZ_EXCLUDE=tag,…` (leave productions out), `CSM_FUZZ_TIMEOUT_MS`
//! (bash, per case), `CSM_FUZZ_RENDER_MS` (render bound, per case). See `docs/fuzzing.md`.

pub mod gen;
pub mod minimize;
pub mod oracle;
pub mod rng;
pub mod sandbox;
pub mod values;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use oracle::{check_case, shown, Failure, Limits, Mode, Verdict};
use rng::Rng;
use sandbox::Sandbox;

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cases: u64,
    pub seed: u64,
    pub threads: usize,
    pub keep_going: bool,
    /// Failures to minimise.
    pub minimize: usize,
    pub limits: Limits,
    pub mode: Mode,
    pub gen: gen::Config,
    /// Print progress lines.
    pub progress: bool,
    /// Run only this case.
    pub single: Option<u64>,
    /// Failure reports to print.
    pub reports: usize,
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = if let Some(h) = v.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else {
        v.replace('_', "").parse()
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

impl Settings {
    /// Settings from the environment, with these defaults.
    pub fn from_env(cases: u64, seed: u64, mode: Mode) -> Settings {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let keep_going = std::env::var("CSM_FUZZ_KEEP_GOING").is_ok_and(|v| v != "0");
        let exclude = std::env::var("CSM_FUZZ_EXCLUDE")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        Settings {
            cases: env_u64("CSM_FUZZ_CASES").unwrap_or(cases),
            seed: env_u64("CSM_FUZZ_SEED").unwrap_or(seed),
            threads: env_u64("CSM_FUZZ_THREADS")
                .map_or((cpus + 1).clamp(2, 4), |n| n.max(1) as usize),
            keep_going,
            minimize: env_u64("CSM_FUZZ_MINIMIZE")
                .map_or(if keep_going { 60 } else { 1 }, |n| n as usize),
            limits: Limits {
                render: Duration::from_millis(env_u64("CSM_FUZZ_RENDER_MS").unwrap_or(1000)),
                bash: Duration::from_millis(env_u64("CSM_FUZZ_TIMEOUT_MS").unwrap_or(10_000)),
            },
            mode,
            gen: gen::Config {
                exclude,
                paste_safe_values: false,
            },
            progress: false,
            single: env_u64("CSM_FUZZ_CASE"),
            reports: env_u64("CSM_FUZZ_REPORTS")
                .map_or(if keep_going { 40 } else { 1 }, |n| n as usize),
        }
    }
}

/// One recorded failure.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub case_no: u64,
    pub failure: Failure,
    pub tags: Vec<String>,
    pub minimized: Option<(gen::Case, Failure)>,
}

/// Totals of a run.
#[derive(Debug, Default)]
pub struct Summary {
    pub seed: u64,
    pub run: u64,
    pub rendered: u64,
    pub refused: BTreeMap<String, u64>,
    pub by_check: BTreeMap<String, u64>,
    pub failures: Vec<Recorded>,
    /// Observations compared byte for byte.
    pub checked: u64,
    /// Observations legitimately cut short by a value bash rejected.
    pub tolerated: u64,
    pub wall: Duration,
}

impl Summary {
    pub fn failed(&self) -> u64 {
        self.by_check.values().sum()
    }

    /// Failure classes: the check plus the telling productions of the minimised case
    /// (function forms, here-document forms, probes), leaving out wrappers, word shapes,
    /// comments and continuations, which vary within a class.
    pub fn classes(&self) -> BTreeMap<String, Vec<&Recorded>> {
        let telling = |t: &str| {
            !(t.starts_with("c:")
                || t.starts_with("w:")
                || t.starts_with("obs:")
                || matches!(t, "end" | "comment" | "contin" | "extglob" | "heredoc"))
        };
        let mut m: BTreeMap<String, Vec<&Recorded>> = BTreeMap::new();
        for r in &self.failures {
            let key = match &r.minimized {
                Some((c, f)) => {
                    let mut tags: Vec<&str> = Vec::new();
                    for it in &c.items {
                        for t in &it.tags {
                            if telling(t) && !tags.contains(&t.as_str()) {
                                tags.push(t);
                            }
                        }
                    }
                    tags.sort_unstable();
                    if tags.is_empty() {
                        tags.push("(wrappers and words only)");
                    }
                    format!("{:?}: {}", f.check, tags.join(" "))
                }
                None => format!("{:?}: (not minimised)", r.failure.check),
            };
            m.entry(key).or_default().push(r);
        }
        m
    }

    /// For each class, the failure whose minimised template is shortest.
    pub fn representatives(&self) -> Vec<(String, usize, &Recorded)> {
        self.classes()
            .into_iter()
            .map(|(k, rs)| {
                let n = rs.len();
                let best = rs
                    .into_iter()
                    .min_by_key(|r| {
                        r.minimized
                            .as_ref()
                            .map_or(usize::MAX, |(_, f)| f.template.len())
                    })
                    .expect("a class has members");
                (k, n, best)
            })
            .collect()
    }

    /// The human summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let secs = self.wall.as_secs_f64().max(1e-9);
        let _ = writeln!(
            s,
            "bash-fuzz: seed {:#x}: {} cases in {:.1} s ({:.0} cases/s): {} rendered and run, {} refused, {} failed",
            self.seed,
            self.run,
            secs,
            self.run as f64 / secs,
            self.rendered,
            self.refused.values().sum::<u64>(),
            self.failed()
        );
        let _ = writeln!(
            s,
            "  observations compared exactly: {}; cut short by a value bash rejected: {}",
            self.checked, self.tolerated
        );
        for (k, n) in &self.refused {
            let _ = writeln!(s, "  refused {k}: {n}");
        }
        for (k, n) in &self.by_check {
            let cases: Vec<String> = self
                .failures
                .iter()
                .filter(|r| format!("{:?}", r.failure.check) == *k)
                .take(8)
                .map(|r| r.case_no.to_string())
                .collect();
            let _ = writeln!(s, "  FAILED {k}: {n} (cases {}…)", cases.join(", "));
        }
        let classes = self.classes();
        if !classes.is_empty() {
            let _ = writeln!(s, "failure classes ({}):", classes.len());
            for (k, rs) in &classes {
                let _ = writeln!(s, "  [{}x] {k}", rs.len());
            }
        }
        s
    }
}

/// A full report of one failure.
pub fn report(settings: &Settings, r: &Recorded) -> String {
    let mut s = String::new();
    let f = &r.failure;
    // Everything that shapes generation, so the line replays the case.
    let exclude = if settings.gen.exclude.is_empty() {
        String::new()
    } else {
        format!(" CSM_FUZZ_EXCLUDE={}", settings.gen.exclude.join(","))
    };
    let _ = writeln!(
        s,
        "==== FAILURE {:?} (CSM_FUZZ_SEED={:#x} CSM_FUZZ_CASE={}{exclude})\n{}",
        f.check, settings.seed, r.case_no, f.detail
    );
    let _ = writeln!(s, "productions: {}", r.tags.join(" "));
    describe(&mut s, f);
    if let Some((c, mf)) = &r.minimized {
        let _ = writeln!(s, "---- minimised ({:?}): {}", mf.check, mf.detail);
        let tags: Vec<&str> = c
            .items
            .iter()
            .flat_map(|i| i.tags.iter().map(String::as_str))
            .collect();
        let _ = writeln!(s, "productions: {}", tags.join(" "));
        if c.document {
            let _ = writeln!(s, "(rendered as a JSON template document)");
        }
        describe(&mut s, mf);
    }
    s
}

fn describe(s: &mut String, f: &Failure) {
    let _ = writeln!(s, "-- template:\n{}\n-- end template", f.template);
    for (i, v) in f.values.iter().enumerate() {
        let _ = writeln!(s, "value {}: {}", gen::VARS[i], shown(v));
    }
    if let Some(r) = &f.rendered {
        let _ = writeln!(
            s,
            "-- rendered:\n{}\n-- end rendered",
            String::from_utf8_lossy(&r[..r.len().min(8000)])
        );
    }
    if !f.stderr.is_empty() {
        let e = &f.stderr[..f.stderr.len().min(2000)];
        let _ = writeln!(s, "-- bash stderr:\n{}", String::from_utf8_lossy(e));
    }
}

/// What each worker is running (case, since when), for the hang watchdog.
type Busy = Arc<Mutex<Vec<Option<(u64, Instant)>>>>;

/// Generate case `n` of a run.
pub fn make_case(settings: &Settings, n: u64) -> gen::Case {
    let mut rng = Rng::for_case(settings.seed, n);
    gen::case(&mut rng, &settings.gen, &std::collections::BTreeSet::new())
}

/// Run the fuzzer.
pub fn run(settings: &Settings) -> Summary {
    let start = Instant::now();
    let sb = Arc::new(Sandbox::new());
    let next = Arc::new(AtomicU64::new(settings.single.unwrap_or(0)));
    let end = settings.single.map_or(settings.cases, |n| n + 1);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let summary = Arc::new(Mutex::new(Summary {
        seed: settings.seed,
        ..Summary::default()
    }));
    // Per-worker start of the current case, for the hang watchdog.
    let busy: Busy = Arc::new(Mutex::new(vec![None; settings.threads]));
    let (tx, rx) = mpsc::channel::<()>();
    let mut handles = Vec::new();
    for w in 0..settings.threads {
        let (sb, next, stop, done, summary, busy, tx) = (
            sb.clone(),
            next.clone(),
            stop.clone(),
            done.clone(),
            summary.clone(),
            busy.clone(),
            tx.clone(),
        );
        let settings = settings.clone();
        handles.push(std::thread::spawn(move || {
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end {
                    break;
                }
                busy.lock().unwrap()[w] = Some((n, Instant::now()));
                let case = make_case(&settings, n);
                let v = check_case(&case, settings.mode, &sb, n, settings.limits);
                busy.lock().unwrap()[w] = None;
                {
                    let mut s = summary.lock().unwrap();
                    s.run += 1;
                    match v {
                        Verdict::Refused(class) => *s.refused.entry(class).or_default() += 1,
                        Verdict::Passed { tolerated, checked } => {
                            s.rendered += 1;
                            s.tolerated += tolerated as u64;
                            s.checked += checked as u64;
                        }
                        Verdict::Failed(f) => {
                            if settings.progress {
                                eprintln!("bash-fuzz: case {n} failed: {:?}", f.check);
                            }
                            s.rendered += u64::from(f.rendered.is_some());
                            *s.by_check.entry(format!("{:?}", f.check)).or_default() += 1;
                            let tags = case.items.iter().flat_map(|i| i.tags.clone()).collect();
                            let minimize = s.failures.len() < settings.minimize;
                            s.failures.push(Recorded {
                                case_no: n,
                                failure: *f.clone(),
                                tags,
                                minimized: None,
                            });
                            let at = s.failures.len() - 1;
                            drop(s);
                            if !settings.keep_going {
                                stop.store(true, Ordering::Relaxed);
                            }
                            if minimize {
                                let m = minimize::minimize(&case, f.check, &settings, &sb, n);
                                summary.lock().unwrap().failures[at].minimized = m;
                            }
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = tx.send(());
        }));
    }
    drop(tx);
    // Watch for hangs (a render that never returns cannot be interrupted) and report
    // progress while the workers run.
    let hang = settings.limits.bash + settings.limits.render + Duration::from_secs(60);
    let mut last_progress = Instant::now();
    let mut finished = 0;
    while finished < settings.threads {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(()) => finished += 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        for (n, t) in busy.lock().unwrap().iter().flatten() {
            if t.elapsed() > hang {
                let case = make_case(settings, *n);
                eprintln!(
                    "bash-fuzz: case {n} (seed {:#x}) has run for {:?}: the renderer hangs.\n-- template:\n{}",
                    settings.seed,
                    t.elapsed(),
                    case.text().spell()
                );
                std::process::abort();
            }
        }
        if settings.progress && last_progress.elapsed() >= Duration::from_secs(30) {
            last_progress = Instant::now();
            let s = summary.lock().unwrap();
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "bash-fuzz: {} / {} cases, {} rendered, {} failed, {:.0} cases/s",
                s.run,
                end,
                s.rendered,
                s.failed(),
                s.run as f64 / secs
            );
        }
    }
    for h in handles {
        h.join().expect("fuzz worker panicked");
    }
    let mut s = std::mem::take(&mut *summary.lock().unwrap());
    s.wall = start.elapsed();
    s
}
