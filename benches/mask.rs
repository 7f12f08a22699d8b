//! Masking cost against its floor, measured in the same run.
//!
//! Floor: `memchr::memmem` searching the log for each value's raw bytes only (one
//! prebuilt finder per value): what the cheapest possible raw-only masker would spend.
//! Ours: building a [`Masker`] (every form of every value) and masking the same log
//! through a [`LogCapture`] in 64 KiB reads, as an executor does.
//!
//! Scenarios (each in its own process, so that its peak RSS can be reported):
//! - `vars`: 20 variables of 40 bytes, 1 MiB of log mentioning some of them;
//! - `big-N`: one unused N MiB variable (N = 1, 3, 16) plus the 20, the same log;
//! - `secret-3`: the 20 variables mask 1 MiB of log, then a 3 MiB returned secret is added
//!   and the log re-masked (`extended` + `remask`), as `exec::run` does.
//!
//! Prints, per scenario, the median build time, mask (or re-mask) time and throughput,
//! the floor's time, the ratios, and the peak RSS growth over the process's baseline.
//! Times are wall and thread CPU time (the latter less disturbed by a shared machine);
//! throughput and the `build+…` ratio use CPU time.
//!
//! `cargo bench --bench mask` (CSM_BENCH_ITERS=N to change the count).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use csm_agent::mask::{LogCapture, Masker};
use memchr::memmem::Finder;

mod common;
use common::{ms, pct};

const LOG: usize = 1 << 20;
const READ: usize = 64 * 1024;

/// Deterministic pseudo-random printable text (xorshift), `n` bytes.
fn text(n: usize, seed: u64) -> Vec<u8> {
    const ALPHA: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_. \"'\\:";
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

fn variables() -> Vec<Vec<u8>> {
    (0..20).map(|i| text(40, 1000 + i)).collect()
}

/// 1 MiB of log lines; every 50th line prints one of the variables.
fn log(vars: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(LOG + 200);
    let mut i = 0u64;
    while out.len() < LOG {
        out.extend_from_slice(
            format!("{i:08} fetching item {} from the store: ", i * 7).as_bytes(),
        );
        if i % 50 == 0 {
            out.extend_from_slice(&vars[(i as usize / 50) % vars.len()]);
        } else {
            out.extend_from_slice(&text(24, i));
        }
        out.push(b'\n');
        i += 1;
    }
    out
}

/// CPU time of this thread: on a shared machine, less noisy than wall time.
fn cpu() -> Duration {
    let mut ts = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall and CPU time of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (w, c) = (Instant::now(), cpu());
    let out = f();
    (out, w.elapsed(), cpu() - c)
}

fn hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn capture(m: &Arc<Masker>, log: &[u8]) -> csm_agent::mask::CapturedLog {
    let mut c = LogCapture::new(m.clone(), LOG + 4096);
    for read in log.chunks(READ) {
        c.push(read);
    }
    c.finish()
}

fn floor(values: &[&[u8]], log: &[u8]) -> (Duration, Duration) {
    let finders: Vec<Finder<'_>> = values.iter().map(Finder::new).collect();
    let (hits, w, c) = timed(|| {
        finders
            .iter()
            .map(|f| f.find_iter(log).count())
            .sum::<usize>()
    });
    black_box(hits);
    (w, c)
}

/// Medians of one measured quantity, wall and CPU.
#[derive(Default)]
struct Times {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
}

impl Times {
    fn push(&mut self, (w, c): (Duration, Duration)) {
        self.wall.push(w);
        self.cpu.push(c);
    }
    fn medians(&mut self) -> (Duration, Duration) {
        (pct(&mut self.wall, 0.5), pct(&mut self.cpu, 0.5))
    }
}

/// One scenario, in this process: medians of build, mask and floor times.
fn child(scenario: &str, iters: usize) {
    let vars = variables();
    let log = log(&vars);
    let base = hwm_kib();
    let (mut build, mut mask, mut fl) = (Times::default(), Times::default(), Times::default());
    let mut label = "mask";
    for _ in 0..iters {
        match scenario {
            "vars" | "big-1" | "big-3" | "big-16" => {
                let big = match scenario {
                    "vars" => Vec::new(),
                    s => text(s[4..].parse::<usize>().unwrap() << 20, 7),
                };
                let mut values: Vec<&[u8]> = vars.iter().map(|v| v.as_slice()).collect();
                if !big.is_empty() {
                    values.push(&big);
                }
                let (m, w, c) = timed(|| Arc::new(Masker::for_variables(values.iter().copied())));
                build.push((w, c));
                let (out, w, c) = timed(|| capture(&m, &log));
                mask.push((w, c));
                assert!(!out.as_bytes().windows(40).any(|w| w == vars[0].as_slice()));
                fl.push(floor(&values, &log));
            }
            "secret-3" => {
                label = "remask";
                let secret = text(3 << 20, 99);
                let m = Arc::new(Masker::for_variables(vars.iter().map(|v| v.as_slice())));
                let mut out = capture(&m, &log);
                let (with_secret, w, c) = timed(|| m.extended([secret.as_slice()]));
                build.push((w, c));
                let ((), w, c) = timed(|| out.remask(&with_secret));
                mask.push((w, c));
                let mut values: Vec<&[u8]> = vars.iter().map(|v| v.as_slice()).collect();
                values.push(&secret);
                fl.push(floor(&values, &log));
            }
            other => panic!("unknown scenario {other}"),
        }
    }
    let peak = hwm_kib().saturating_sub(base);
    let ((bw, bc), (mw, mc), (fw, fc)) = (build.medians(), mask.medians(), fl.medians());
    println!(
        "{scenario:>9}: build {:7.1} ms ({:7.1} cpu) | {label} {:6.1} ms ({:6.1} cpu, {:5.1} MB/s) \
         | floor {:5.2} ms ({:5.2} cpu) | ratio {:5.1}x ({:5.1}x cpu) | build+{label} {:6.1}x cpu \
         | peak RSS +{:.1} MiB",
        ms(bw),
        ms(bc),
        ms(mw),
        ms(mc),
        LOG as f64 / 1e6 / mc.as_secs_f64(),
        ms(fw),
        ms(fc),
        mw.as_secs_f64() / fw.as_secs_f64(),
        mc.as_secs_f64() / fc.as_secs_f64(),
        (bc + mc).as_secs_f64() / fc.as_secs_f64(),
        peak as f64 / 1024.0,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iters: usize = std::env::var("CSM_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        child(&args[i + 1], iters);
        return;
    }
    println!("masking 1 MiB of log read in 64 KiB chunks; medians of {iters} (big-16: 3)");
    let exe = std::env::current_exe().unwrap();
    for scenario in ["vars", "big-1", "big-3", "big-16", "secret-3"] {
        let n = if scenario == "big-16" {
            iters.min(3)
        } else {
            iters
        };
        let out = std::process::Command::new(&exe)
            .args(["--scenario", scenario])
            .env("CSM_BENCH_ITERS", n.to_string())
            .output()
            .expect("run scenario");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            std::process::exit(1);
        }
    }
}
