//! Loud, CI-proof skips. A test that cannot run here (no root, no `unshare`, no podman)
//! calls [`skip`]: on a developer machine it prints a banner and the test returns; under
//! CI (`CSM_TEST_REQUIRE_ALL=1`, set by `.ci/run`) a skip is a failure, so nothing the
//! suite claims to test can pass vacuously there.

/// Whether every test must run (CI).
pub fn require_all() -> bool {
    std::env::var_os("CSM_TEST_REQUIRE_ALL").is_some_and(|v| v != "0" && !v.is_empty())
}

/// Report that the calling test cannot run, and why. Panics under CI.
#[track_caller]
pub fn skip(test: &str, reason: &str) {
    let loc = std::panic::Location::caller();
    if require_all() {
        panic!(
            "{test} cannot run here ({reason}), and CSM_TEST_REQUIRE_ALL forbids skipping [{loc}]"
        );
    }
    eprintln!(
        "\n========== SKIPPED {test}: {reason} [{loc}] ==========\n\
         (set CSM_TEST_REQUIRE_ALL=1 to make this a failure)\n"
    );
}
