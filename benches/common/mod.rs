//! Small helpers shared by the benchmarks: percentiles and millisecond formatting.

use std::time::Duration;

/// The `p` quantile (0.0–1.0) of `v`, which it sorts.
pub fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
