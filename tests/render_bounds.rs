//! Parsing and rendering stay bounded on adversarial input (issue 6, section 2).
//!
//! The old lexer took 1.3 GB and 2 s on a 133-byte template of nested `$((`, and values
//! cost memory in proportion to their square. These inputs must now finish quickly and in
//! memory linear in their size. The bounds are generous (a regression to exponential or
//! quadratic cost blows far past them); real figures come from `cargo bench --bench render`.
//!
//! One test function, so that this process's peak RSS belongs to these inputs alone.

use std::time::{Duration, Instant};

use csm_agent::error::{ErrorKind, Kind};
use csm_agent::secret::{secret_bytes, Variables};
use csm_agent::template::{RenderLimits, Template, TemplateError};

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

fn vars(pairs: &[(&str, Vec<u8>)]) -> Variables {
    let mut v = Variables::new();
    for (k, val) in pairs {
        v.insert(*k, secret_bytes(val.clone()));
    }
    v
}

/// Run `f`, and check it took less than `limit` and raised peak RSS by at most `mib`.
fn bounded<T>(what: &str, limit: Duration, mib: u64, f: impl FnOnce() -> T) -> T {
    let before = peak_rss_kib();
    let t = Instant::now();
    let out = f();
    let took = t.elapsed();
    let grew = peak_rss_kib().saturating_sub(before) / 1024;
    eprintln!("{what}: {took:?}, peak RSS +{grew} MiB");
    assert!(took < limit, "{what} took {took:?} (limit {limit:?})");
    assert!(
        grew <= mib,
        "{what} raised peak RSS by {grew} MiB (limit {mib} MiB)"
    );
    out
}

#[test]
fn adversarial_inputs_take_bounded_time_and_memory() {
    // Debug builds on a loaded 2-core CI machine: the bounds catch blow-ups, not slowness.
    let limit = Duration::from_secs(5);
    let v = vars(&[("key", b"1".to_vec())]);
    let none = Variables::new();

    // The 133-byte nesting that took 1.3 GB: `$((` ×22, x, `) ` ×22, `)` ×22.
    let s = format!(
        "echo {}${{key}}{}{}",
        "$((".repeat(22),
        ") ".repeat(22),
        ")".repeat(22)
    );
    bounded("nested $(( ×22", limit, 32, || {
        let _ = Template::from_script(s.clone()).render(&v, &none);
    });

    // Deep nesting of every kind is refused with a clear error, not overflowed.
    for (open, close) in [
        ("$(", ")"),
        ("$((", "))"),
        ("\"$(", ")\""),
        ("${x:-", "}"),
        ("`", "`"),
    ] {
        let s = format!(
            "echo {}${{key}}{}",
            open.repeat(20_000),
            close.repeat(20_000)
        );
        let r = bounded(&format!("nesting {open} ×20000"), limit, 64, || {
            Template::from_script(s.clone()).render(&v, &none)
        });
        if let Err(e) = r {
            assert_eq!(e.kind(), ErrorKind::RenderError, "{e}");
        }
    }

    // Many placeholders: 30,000 of them in 330 KB of script, each rendered.
    let s = "echo \"${key}\" ${key} '${key}'\n".repeat(10_000);
    let out = bounded("30,000 placeholders", Duration::from_secs(10), 128, || {
        Template::from_script(s.clone()).render(&v, &none).unwrap()
    });
    assert!(out.expose_bytes().len() > s.len());

    // A 1 MiB value (the default per-value limit), used many times: bound once.
    let big = vars(&[("key", vec![b'x'; 1 << 20])]);
    let s = "printf '%s' \"${key}\" ${key} '${key}'\n".repeat(100);
    let out = bounded("1 MiB value, 300 uses", limit, 64, || {
        Template::from_script(s.clone())
            .render(&big, &none)
            .unwrap()
    });
    assert!(out.expose_bytes().len() < (1 << 20) + s.len() * 2);

    // A 16 MiB value, even an unused one, is refused at once by the limits.
    let huge = vars(&[("unused", vec![b'x'; 16 << 20]), ("key", b"v".to_vec())]);
    let e = bounded("16 MiB value", limit, 8, || {
        Template::from_script("echo ${key}")
            .render(&huge, &none)
            .unwrap_err()
    });
    assert!(matches!(e, TemplateError::TooLarge { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("`unused`"), "{e}");

    // All values together are bounded too, and the limits are configurable.
    let many = vars(&[
        ("a", vec![b'a'; 1 << 20]),
        ("b", vec![b'b'; 1 << 20]),
        ("c", vec![b'c'; 1 << 20]),
        ("d", vec![b'd'; 1 << 20]),
        ("e", vec![b'e'; 1 << 20]),
    ]);
    let e = Template::from_script("echo ${a}")
        .render(&many, &none)
        .unwrap_err();
    assert!(e.to_string().contains("all values together"), "{e}");
    let roomy = RenderLimits {
        max_value: 1 << 20,
        max_total: 8 << 20,
    };
    assert!(Template::from_script("echo ${a}")
        .render_with(&many, &none, &roomy)
        .is_ok());

    // A script over the size limit is refused before it is analysed.
    let s = "#".repeat(csm_agent::template::MAX_SCRIPT_BYTES + 1);
    let e = bounded("oversized script", limit, 16, || {
        Template::parse(&s).map(|_| ()).unwrap_err()
    });
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}
