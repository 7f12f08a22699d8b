//! libFuzzer target: arbitrary bytes → template text and values → parse and render.
//!
//! The input is split at NUL bytes: the first part is the template (as UTF-8, lossily), the
//! next three are the values of `v`, `w` and the secret `s`. Parsing and rendering must
//! never panic, and must finish quickly: the explicit bound below turns a slow case into a
//! crash with its input saved; libFuzzer's `-timeout` and `-rss_limit_mb` catch hangs and
//! memory blow-ups. The same text is also tried as a JSON template document.

#![no_main]

use std::time::{Duration, Instant};

use csm_agent::secret::{secret_bytes, Variables};
use csm_agent::template::Template;
use libfuzzer_sys::fuzz_target;

/// Per-input bound on parse + render (both spellings).
const BOUND: Duration = Duration::from_secs(2);

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let mut vals = [Vec::new(), Vec::new(), Vec::new()];
    for v in &mut vals {
        *v = parts.next().unwrap_or_default().to_vec();
    }
    let mut vars = Variables::new();
    vars.insert("v", secret_bytes(vals[0].clone()));
    vars.insert("w", secret_bytes(vals[1].clone()));
    // A name that also appears in documents' `variables`.
    vars.insert("key", secret_bytes(vals[0].clone()));
    let mut secrets = Variables::new();
    secrets.insert("s", secret_bytes(vals[2].clone()));

    let start = Instant::now();
    if let Ok(t) = Template::parse(&text) {
        let _ = t.render(&vars, &secrets);
    }
    let t = Template::from_script(text.clone());
    let _ = t.render(&vars, &secrets);
    let doc = serde_json::json!({
        "name": "fuzz",
        "scriptString": text,
        "variables": ["v", "w", "key"],
    })
    .to_string();
    if let Ok(t) = Template::parse(&doc) {
        let _ = t.render(&vars, &secrets);
    }
    let took = start.elapsed();
    assert!(
        took < BOUND,
        "parse + render took {took:?} for a {}-byte template",
        text.len()
    );
});
