//! The two C math functions the binary imports, defined here so that no csm-agent process
//! loads the system libm.
//!
//! Only two references to libm are left after linking: `pow`, from tokio's scheduler
//! statistics, and `log`, from SQLite's FTS5 ranking function (compiled in by the bundled
//! build, never called by us). Defined here from the `libm` crate (a port of musl's, well
//! within 1 ULP), the linker (`--as-needed`) drops libm from the executable's needed
//! libraries. Loading libm costs every process about 0.5 MiB of resident memory, mostly
//! pages its IFUNC resolvers touch at start-up; the agent's idle goal is 10 MiB.
//! `tests/footprint.rs` checks that the release binary does not need libm.

/// `pow(3)`.
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

/// `log(3)`, the natural logarithm.
#[no_mangle]
pub extern "C" fn log(x: f64) -> f64 {
    libm::log(x)
}

#[cfg(test)]
mod tests {
    #[test]
    fn agree_with_the_definitions() {
        assert_eq!(super::pow(2.0, 10.0), 1024.0);
        assert_eq!(super::pow(9.0, 0.5), 3.0);
        assert!((super::pow(0.9, 2.5) - 0.768_433_471_420_916_9).abs() < 1e-15);
        assert_eq!(super::log(1.0), 0.0);
        assert!((super::log(std::f64::consts::E) - 1.0).abs() < 1e-15);
        assert!(super::log(-1.0).is_nan());
        assert_eq!(super::log(0.0), f64::NEG_INFINITY);
    }
}
