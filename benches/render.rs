//! Template cost: a ~10 KB template document with 50 variables in mixed quoting contexts.
//!
//! Run with `cargo bench --bench render`. Prints median and p90 per operation over 2000
//! timed iterations after a warm-up, for:
//! - `parse`: JSON document parsing plus the bash lexing that finds placeholders;
//! - `render`: checks, bindings and the rewritten script, from a parsed template;
//! - the floor: Harness-style textual substitution of the same placeholders (raw values
//!   pasted into the text, no safety), as one pass and as repeated `replace` calls,
//!   measured in the same run, with our ratio to it. The one-pass floor handles only
//!   `${name}`, so it does a little less work than we do.

use std::hint::black_box;
use std::time::{Duration, Instant};

use csm_agent::secret::{secret_bytes, Variables};
use csm_agent::template::Template;

const VARS: usize = 50;
const WARMUP: usize = 200;
const ITERS: usize = 2000;

/// The script: each variable used in one of several contexts, repeated with filler until
/// the script is about 10 KB. Variables `v40..v49` hold integers for arithmetic contexts.
fn script() -> String {
    let mut s = String::from("#!/bin/bash\nset -euo pipefail\n");
    let mut round = 0;
    while s.len() < 10_000 {
        for i in 0..VARS {
            let v = format!("v{i}");
            let line = if i >= 40 {
                match (i + round) % 3 {
                    0 => format!("n=$(( ${{{v}}} + {round} ))\n"),
                    1 => format!("(( total += ${{{v}}} ))\n"),
                    _ => format!("[[ ${{{v}}} -gt 3 ]] && echo big\n"),
                }
            } else {
                match (i + round) % 9 {
                    0 => format!("echo ${{{v}}}\n"),
                    1 => format!("printf '%s\\n' \"pre ${{{v}}} post\"\n"),
                    2 => format!("x=$(printf '%s' '${{{v}}}')\n"),
                    3 => format!("cat <<EOF\nvalue: ${{{v}}}\nEOF\n"),
                    4 => format!("case ${{{v}}} in *.json) echo json;; *) : ;; esac\n"),
                    5 => format!("y=\"${{unset:-${{{v}}}}}\"\n"),
                    6 => format!("z=$'tab\\t${{{v}}}'\n"),
                    7 => format!("w=`echo ${{{v}}}`\n"),
                    _ => format!("cat <<'RAW'\n<+spec.environmentVariables.{v}>\nRAW\n"),
                }
            };
            s.push_str(&line);
            if i % 10 == 0 {
                s.push_str("# fetch the next part of the secret; ${HOME} stays bash's\n");
            }
        }
        round += 1;
    }
    s.push_str("secret=\"$x$y$z$w\"\n");
    s
}

fn document(script: &str) -> String {
    let names: Vec<String> = (0..VARS).map(|i| format!("v{i}")).collect();
    serde_json::json!({
        "name": "bench",
        "scriptString": script,
        "variables": names,
        "timeoutMillis": 20000
    })
    .to_string()
}

fn values() -> Vec<(String, Vec<u8>)> {
    (0..VARS)
        .map(|i| {
            let value = if i >= 40 {
                format!("{}", i * 7).into_bytes()
            } else {
                format!("s3cr3t-{i} with 'quotes' \"and\" $(not a command) `nor this` ;*")
                    .into_bytes()
            };
            (format!("v{i}"), value)
        })
        .collect()
}

/// Time `f` per call: warm up, then ITERS timed calls; returns sorted durations.
fn measure(mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..WARMUP {
        f();
    }
    let mut times: Vec<Duration> = (0..ITERS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn pct(times: &[Duration], p: usize) -> Duration {
    times[(times.len() * p / 100).min(times.len() - 1)]
}

fn report(name: &str, times: &[Duration]) -> Duration {
    let median = pct(times, 50);
    println!(
        "{name:<28} median {:>9.1} µs   p90 {:>9.1} µs",
        median.as_secs_f64() * 1e6,
        pct(times, 90).as_secs_f64() * 1e6
    );
    median
}

fn main() {
    let script = script();
    let doc = document(&script);
    let values = values();
    let mut vars = Variables::new();
    for (k, v) in &values {
        vars.insert(k.clone(), secret_bytes(v.clone()));
    }
    let secrets = Variables::new();
    let template = Template::parse(&doc).expect("bench template parses");
    let rendered = template
        .render(&vars, &secrets)
        .expect("bench template renders");
    let placeholders = script.matches("${v").count() + script.matches("<+spec.").count();
    println!(
        "template: {} bytes of script, {} variables, {} placeholders; rendered {} bytes",
        script.len(),
        VARS,
        placeholders,
        rendered.expose_bytes().len()
    );
    println!("{ITERS} timed iterations after {WARMUP} warm-up\n");

    let parse = measure(|| {
        black_box(Template::parse(black_box(&doc)).unwrap());
    });
    let render = measure(|| {
        black_box(template.render(black_box(&vars), &secrets).unwrap());
    });
    // The floor, in two forms: what Harness does (raw values pasted into the text), as one
    // pass over the script, and as repeated `replace` calls.
    let by_name: std::collections::HashMap<&str, &[u8]> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let single_pass = measure(|| {
        let text = black_box(&script).as_bytes();
        let mut out = Vec::with_capacity(text.len() * 2);
        let mut i = 0;
        while i < text.len() {
            if text[i] == b'$' && text.get(i + 1) == Some(&b'{') {
                if let Some(len) = text[i + 2..].iter().position(|&c| c == b'}') {
                    let name = std::str::from_utf8(&text[i + 2..i + 2 + len]).unwrap_or("");
                    if let Some(v) = by_name.get(name) {
                        out.extend_from_slice(v);
                        i += len + 3;
                        continue;
                    }
                }
            }
            out.push(text[i]);
            i += 1;
        }
        black_box(out);
    });
    let naive = measure(|| {
        let mut out = black_box(&script).clone();
        for (k, v) in &values {
            let v = std::str::from_utf8(v).unwrap();
            out = out.replace(&format!("${{{k}}}"), v);
            out = out.replace(&format!("<+spec.environmentVariables.{k}>"), v);
        }
        black_box(out);
    });

    let parse_m = report("parse (JSON + lex)", &parse);
    let render_m = report("render", &render);
    let floor_m = report("floor: one-pass raw paste", &single_pass);
    let naive_m = report("floor: repeated replace()", &naive);
    println!(
        "\nrender / one-pass floor = {:.2}x   (parse + render) / one-pass floor = {:.2}x",
        render_m.as_secs_f64() / floor_m.as_secs_f64(),
        (parse_m + render_m).as_secs_f64() / floor_m.as_secs_f64()
    );
    println!(
        "render / replace() floor = {:.2}x",
        render_m.as_secs_f64() / naive_m.as_secs_f64()
    );
}
