//! Time and memory bounds of masking on large and adversarial inputs: a large value, a
//! flood of one repeated byte matching a repetitive value, a value's start followed by
//! a flood (of text, and of line breaks in the base64 channel), thousands of values, a
//! value of many lines, and re-masking with a large secret.
//!
//! Each scenario runs in a child process (this test binary, re-run with
//! `CSM_MASK_BOUNDS_CHILD` set), so that its peak RSS (VmHWM) is its own: the child takes
//! the peak after building its inputs as the baseline and reports the growth. The bounds
//! are linear in the input with headroom over what a debug build uses here (2–10×), and
//! the time limits are wide (10× or more over a debug build here): they catch quadratic or
//! unbounded behaviour, not slowness. Performance figures come from `benches/mask.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use csm_agent::mask::{LogCapture, Masker};

const CHILD_ENV: &str = "CSM_MASK_BOUNDS_CHILD";
const MIB: usize = 1 << 20;
const READ: usize = 64 * 1024;

fn hwm_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Deterministic printable text.
fn text(n: usize, seed: u64) -> Vec<u8> {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \"'\\";
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHA[(x % ALPHA.len() as u64) as usize]
        })
        .collect()
}

fn capture(m: &Arc<Masker>, log: &[u8], cap: usize) -> csm_agent::mask::CapturedLog {
    let mut c = LogCapture::new(m.clone(), cap);
    for read in log.chunks(READ) {
        c.push(read);
    }
    c.finish()
}

/// A scenario: builds its inputs, then (after the baseline) does the work and checks it.
struct Scenario {
    name: &'static str,
    /// Peak RSS growth allowed, in MiB.
    max_mib: usize,
    max_time: Duration,
    run: fn() -> Box<dyn FnOnce()>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        // A 2 MiB variable, printed raw and as wrapped base64 after 1 MiB of log: at most
        // 10 × the value's size (the target; a debug build uses about 4.5 ×).
        name: "large_value",
        max_mib: 20,
        max_time: Duration::from_secs(300),
        run: || {
            let v = text(2 * MIB, 1);
            let mut log = text(MIB, 2);
            log.extend_from_slice(&v);
            let enc = STANDARD.encode(&v);
            for line in enc.as_bytes().chunks(76) {
                log.extend_from_slice(line);
                log.push(b'\n');
            }
            Box::new(move || {
                let m = Arc::new(Masker::for_variables([v.as_slice()]));
                let out = capture(&m, &log, usize::MAX);
                // The raw value and its base64 touch: one marker, then the last newline.
                assert_eq!(out.as_bytes().len(), MIB + 3 + 1);
            })
        },
    },
    Scenario {
        // Every offset of a 4 MiB flood is a candidate for a 256 KiB value of one byte.
        name: "repetitive_flood",
        max_mib: 16,
        max_time: Duration::from_secs(300),
        run: || {
            let v = vec![b'a'; MIB / 4];
            let log = vec![b'a'; 4 * MIB];
            Box::new(move || {
                let m = Arc::new(Masker::for_variables([v.as_slice()]));
                let out = capture(&m, &log, MIB);
                assert_eq!(out.as_bytes(), b"***");
            })
        },
    },
    Scenario {
        // A value's first 100 bytes (its anchors match) and then 16 MiB of other text,
        // then the same with its base64 start followed by 16 MiB of line breaks: what is
        // held waits for at most one value's length, then goes.
        name: "start_then_flood",
        max_mib: 40,
        max_time: Duration::from_secs(300),
        run: || {
            let v = text(MIB, 3);
            let mut log = v[..100].to_vec();
            log.extend_from_slice(&text(16 * MIB, 4));
            let mut breaks = STANDARD.encode(&v).as_bytes()[..100].to_vec();
            breaks.resize(breaks.len() + 16 * MIB, b'\n');
            Box::new(move || {
                let m = Arc::new(Masker::for_variables([v.as_slice()]));
                let out = capture(&m, &log, 2 * MIB);
                assert!(out.is_cut());
                assert!(out.as_bytes().starts_with(&v[..100]));
                let out = capture(&m, &breaks, 2 * MIB);
                assert!(out.is_cut());
            })
        },
    },
    Scenario {
        // 2,000 variables of 64 bytes, 4 MiB of log mentioning some.
        name: "many_values",
        max_mib: 64,
        max_time: Duration::from_secs(300),
        run: || {
            let values: Vec<Vec<u8>> = (0..2000).map(|i| text(64, 100 + i)).collect();
            let mut log = Vec::new();
            let mut i = 0;
            while log.len() < 4 * MIB {
                log.extend_from_slice(&text(200, 5000 + i as u64));
                if i % 10 == 0 {
                    log.extend_from_slice(&values[i % values.len()]);
                }
                i += 1;
            }
            Box::new(move || {
                let m = Arc::new(Masker::for_variables(values.iter().map(|v| v.as_slice())));
                let out = capture(&m, &log, usize::MAX);
                assert!(!out
                    .as_bytes()
                    .windows(64)
                    .any(|w| w == values[0].as_slice()));
            })
        },
    },
    Scenario {
        // A value of 100,000 lines (each masked on its own too).
        name: "many_lines",
        max_mib: 96,
        max_time: Duration::from_secs(300),
        run: || {
            let mut v = Vec::new();
            for i in 0..100_000u32 {
                v.extend_from_slice(format!("line{i:06}\n").as_bytes());
            }
            let log = v.clone();
            Box::new(move || {
                let m = Arc::new(Masker::for_variables([v.as_slice()]));
                let out = capture(&m, &log, usize::MAX);
                assert_eq!(out.as_bytes(), b"***");
            })
        },
    },
    Scenario {
        // A 1 MiB returned secret re-masking 1 MiB of log that has markers in it.
        name: "remask_large_secret",
        max_mib: 16,
        max_time: Duration::from_secs(300),
        run: || {
            let vars: Vec<Vec<u8>> = (0..20).map(|i| text(40, 200 + i)).collect();
            let secret = text(MIB, 6);
            let mut log = Vec::new();
            for i in 0..2000 {
                log.extend_from_slice(&text(400, 7000 + i));
                log.extend_from_slice(&vars[i as usize % vars.len()]);
            }
            log.extend_from_slice(&secret[..1000]);
            log.extend_from_slice(b"\n");
            log.extend_from_slice(STANDARD.encode(&secret).as_bytes());
            Box::new(move || {
                let m = Arc::new(Masker::for_variables(vars.iter().map(|v| v.as_slice())));
                let mut out = capture(&m, &log, 4 * MIB);
                out.remask(&m.extended([secret.as_slice()]));
                assert!(out.as_bytes().ends_with(b"\n***"));
            })
        },
    },
];

/// The child side: run the scenario named in the environment, report growth and time.
#[test]
fn child_entry() {
    let Ok(name) = std::env::var(CHILD_ENV) else {
        return; // Run as a test of its own: nothing to do.
    };
    let s = SCENARIOS.iter().find(|s| s.name == name).expect("scenario");
    let work = (s.run)();
    let base = hwm_kib();
    let t = Instant::now();
    work();
    let secs = t.elapsed().as_secs_f64();
    println!("bounds-report {} {secs}", hwm_kib() - base);
}

fn run_in_child(s: &Scenario) {
    // coreutils' timeout kills a child that runs far past its limit.
    let kill_after = format!("{}s", 2 * s.max_time.as_secs());
    let out = std::process::Command::new("timeout")
        .args(["--signal=KILL", &kill_after])
        .arg(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, s.name)
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {stdout}{}",
        s.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let report = stdout
        .lines()
        .find_map(|l| l.split_once("bounds-report ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("{}: no report in {stdout}", s.name));
    let mut parts = report.split(' ');
    let kib: usize = parts.next().unwrap().parse().unwrap();
    let secs: f64 = parts.next().unwrap().parse().unwrap();
    eprintln!("{}: peak RSS +{} KiB, {secs:.2} s", s.name, kib);
    assert!(
        kib <= s.max_mib * 1024,
        "{}: peak RSS grew by {kib} KiB, over {} MiB",
        s.name,
        s.max_mib
    );
    assert!(
        secs <= s.max_time.as_secs_f64(),
        "{}: took {secs:.1} s, over {:?}",
        s.name,
        s.max_time
    );
}

#[test]
fn large_value() {
    run_in_child(&SCENARIOS[0]);
}

#[test]
fn repetitive_flood() {
    run_in_child(&SCENARIOS[1]);
}

#[test]
fn start_then_flood() {
    run_in_child(&SCENARIOS[2]);
}

#[test]
fn many_values() {
    run_in_child(&SCENARIOS[3]);
}

#[test]
fn many_lines() {
    run_in_child(&SCENARIOS[4]);
}

#[test]
fn remask_large_secret() {
    run_in_child(&SCENARIOS[5]);
}
