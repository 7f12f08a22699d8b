//! The bounds on every number and size a task, a flag or an input document can carry, in
//! one place, and the checks that turn an out-of-range value into an `invalid_input`
//! [`Failure`] naming the field and its bounds.
//!
//! Durations are checked before they become a [`Duration`]: `Duration::from_secs_f64`
//! panics on infinity, NaN, negatives and values past `u64::MAX` seconds, and a valid but
//! huge `Duration` panics later when it is added to an `Instant`.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::Failure;

/// A per-attempt timeout (`--timeout`, the template's `timeoutMillis`, [`TaskSpec::timeout`]),
/// and the SSH connect timeout: 1 ms to 24 h.
///
/// [`TaskSpec::timeout`]: super::TaskSpec::timeout
pub const TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(86_400);
/// The whole-task deadline, across all attempts: 1 ms to 24 h.
pub const DEADLINE: RangeInclusive<Duration> = TIMEOUT;
/// The pause between attempts (`--retry-delay`): 0 to 1 h.
pub const RETRY_DELAY: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(3_600);
/// Attempts in all (`--attempts`): 1 to 10.
pub const ATTEMPTS: RangeInclusive<u32> = 1..=10;
/// `Limits::grace` and `Limits::drain`: 0 to 10 min.
pub const LIMIT_DURATION: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(600);
/// Longest `commandPath`, in bytes (Linux's `PATH_MAX`).
pub const MAX_COMMAND_PATH: usize = 4096;
/// Largest template file read (`--template`).
pub const MAX_TEMPLATE_BYTES: u64 = 1 << 20;
/// Largest input document read (`--input`, `--connector`).
pub const MAX_DOCUMENT_BYTES: u64 = 256 << 10;
/// Largest value file read (`--var-file`, `--secret-file`, `--password-file`,
/// `--passphrase-file`, a connector's `{"file": …}` secrets).
pub const MAX_VALUE_FILE_BYTES: u64 = 1 << 20;

/// Check a duration given as a number of seconds (a flag) and convert it.
pub fn secs(what: &str, secs: f64, range: &RangeInclusive<Duration>) -> Result<Duration, Failure> {
    // Compare as f64 first: NaN fails both comparisons, and nothing out of range reaches
    // `Duration::from_secs_f64`.
    let ok = secs >= range.start().as_secs_f64() && secs <= range.end().as_secs_f64();
    if !ok {
        return Err(Failure::invalid(format!(
            "{what} must be a number of seconds from {} to {}",
            fmt_secs(*range.start()),
            fmt_secs(*range.end())
        )));
    }
    let d = Duration::from_secs_f64(secs);
    // Rounding can land a hair outside; clamp rather than refuse what the user wrote.
    Ok(d.clamp(*range.start(), *range.end()))
}

/// Check a duration given as whole milliseconds (a document field such as `timeoutMillis`).
pub fn millis(what: &str, ms: u64, range: &RangeInclusive<Duration>) -> Result<Duration, Failure> {
    let (lo, hi) = (range.start().as_millis(), range.end().as_millis());
    if u128::from(ms) < lo || u128::from(ms) > hi {
        return Err(Failure::invalid(format!(
            "{what} must be from {lo} to {hi} milliseconds"
        )));
    }
    Ok(Duration::from_millis(ms))
}

/// Check a [`Duration`] a library caller supplied.
pub fn duration(
    what: &str,
    d: Duration,
    range: &RangeInclusive<Duration>,
) -> Result<Duration, Failure> {
    if !range.contains(&d) {
        return Err(Failure::invalid(format!(
            "{what} must be from {} to {} seconds",
            fmt_secs(*range.start()),
            fmt_secs(*range.end())
        )));
    }
    Ok(d)
}

/// Check an attempt count.
pub fn attempts(what: &str, n: u32) -> Result<u32, Failure> {
    if !ATTEMPTS.contains(&n) {
        return Err(Failure::invalid(format!(
            "{what} must be from {} to {}",
            ATTEMPTS.start(),
            ATTEMPTS.end()
        )));
    }
    Ok(n)
}

/// Check a TCP port: 1 to 65535.
pub fn port(what: &str, port: u16) -> Result<u16, Failure> {
    if port == 0 {
        return Err(Failure::invalid(format!("{what} must be from 1 to 65535")));
    }
    Ok(port)
}

/// Seconds as the shortest decimal that says it: `0.001`, `86400`.
fn fmt_secs(d: Duration) -> String {
    let s = format!("{:.3}", d.as_secs_f64());
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_outside_the_bounds_never_panic_and_name_the_bounds() {
        for bad in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            0.0,
            0.0009,
            86_400.001,
            1e19,
            1e300,
            f64::MAX,
        ] {
            let e = secs("--timeout", bad, &TIMEOUT).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidInput);
            assert_eq!(
                e.message, "--timeout must be a number of seconds from 0.001 to 86400",
                "{bad}"
            );
        }
        assert_eq!(
            secs("--timeout", 0.001, &TIMEOUT).unwrap(),
            Duration::from_millis(1)
        );
        assert_eq!(
            secs("--timeout", 86_400.0, &TIMEOUT).unwrap(),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            secs("--retry-delay", 0.0, &RETRY_DELAY).unwrap(),
            Duration::ZERO
        );
        let e = secs("--retry-delay", 3_600.5, &RETRY_DELAY).unwrap_err();
        assert_eq!(
            e.message,
            "--retry-delay must be a number of seconds from 0 to 3600"
        );
    }

    #[test]
    fn millis_counts_and_ports() {
        assert!(millis("timeoutMillis", 0, &TIMEOUT).is_err());
        assert!(millis("timeoutMillis", u64::MAX, &TIMEOUT).is_err());
        assert_eq!(
            millis("timeoutMillis", 86_400_001, &TIMEOUT)
                .unwrap_err()
                .message,
            "timeoutMillis must be from 1 to 86400000 milliseconds"
        );
        assert_eq!(
            millis("timeoutMillis", 20_000, &TIMEOUT).unwrap(),
            Duration::from_secs(20)
        );
        assert!(duration("deadline", Duration::MAX, &DEADLINE).is_err());
        assert!(duration("deadline", Duration::ZERO, &DEADLINE).is_err());
        assert!(attempts("--attempts", 0).is_err());
        assert!(attempts("--attempts", 11).is_err());
        assert_eq!(attempts("--attempts", 10).unwrap(), 10);
        assert_eq!(
            port("--port", 0).unwrap_err().message,
            "--port must be from 1 to 65535"
        );
        assert_eq!(port("--port", 65_535).unwrap(), 65_535);
    }
}
