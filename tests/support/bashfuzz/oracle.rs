//! The oracle for one case: render (bounded, never panicking), then either a refusal of an
//! allowed kind, or a run under real bash in which no canary appears, no unexpected file
//! appears, bash never reports a parse error (a value was read as code), dead code stays
//! dead, and every observation holds exactly its expected bytes.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use csm_agent::error::Kind;
use csm_agent::secret::{secret_bytes, Variables};
use csm_agent::template::{Template, TemplateError};

use super::gen::{eval, uses_patterns, Case, Text, VARS};
use super::sandbox::{run_bash, CaseDir, Run, Sandbox};

/// Limits for one case.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub render: Duration,
    pub bash: Duration,
}

/// Which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// Rendering panicked.
    Panic,
    /// Rendering took longer than the bound.
    SlowRender,
    /// A refusal of a kind the promise does not allow.
    BadKind,
    /// An error message contains a value.
    ValueInMessage,
    /// A canary file appeared: a value ran as code.
    Canary,
    /// Another unexpected file appeared in the work directory.
    UnexpectedFile,
    /// bash reported a parse error: a value changed the script's structure.
    ParsedAsCode,
    /// An observation holds the wrong bytes.
    Mismatch,
    /// An observation that must have run is missing.
    Missing,
    /// Code that must never run did.
    DeadCodeRan,
    /// bash did not finish in time.
    Timeout,
}

/// How rendering is done: by the renderer under test, or by pasting values verbatim (the
/// generator's self-check and the canary's positive control).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Renderer,
    NaivePaste,
}

/// The outcome of a case.
#[derive(Debug)]
pub enum Verdict {
    /// Rendering refused, with a class (`kind/Variant`).
    Refused(String),
    /// Rendered, ran and passed. `tolerated`: observations legitimately cut short.
    Passed {
        tolerated: usize,
        checked: usize,
    },
    Failed(Box<Failure>),
}

/// A failure with everything needed to reproduce and read it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub check: Check,
    pub detail: String,
    pub template: String,
    pub values: [Vec<u8>; 3],
    pub rendered: Option<Vec<u8>>,
    pub stderr: Vec<u8>,
}

/// Canary files are the ones payloads create.
pub fn is_canary(name: &str) -> bool {
    name.starts_with("P_")
}

/// Parse errors only a changed script structure produces (runtime errors differ).
const PARSE_ERRORS: &[&str] = &[
    "syntax error near unexpected token",
    "syntax error: unexpected end of file",
    "unexpected EOF while looking for matching",
];

fn vars_of(case: &Case, vals: &[Vec<u8>; 3]) -> (Variables, Variables) {
    let mut vars = Variables::new();
    let mut secrets = Variables::new();
    vars.insert(VARS[0], secret_bytes(vals[0].clone()));
    vars.insert(VARS[1], secret_bytes(vals[1].clone()));
    secrets.insert(VARS[2], secret_bytes(vals[2].clone()));
    let _ = case;
    (vars, secrets)
}

/// The template as handed to the renderer.
pub fn template_source(case: &Case, text: &Text) -> String {
    let script = text.spell();
    if case.document {
        serde_json::json!({
            "name": "fuzz",
            "scriptString": script,
            "variables": [VARS[0], VARS[1]],
        })
        .to_string()
    } else {
        script
    }
}

/// A refusal class: the stable kind and the error's variant name (never its message,
/// which names variables).
pub fn refusal_class(e: &TemplateError) -> String {
    let dbg = format!("{e:?}");
    let variant: String = dbg
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    format!("{}/{}", e.kind().as_str(), variant)
}

/// Evaluate one case on its own: one bash process.
pub fn check_case(case: &Case, mode: Mode, sb: &Sandbox, id: u64, lim: Limits) -> Verdict {
    let dir = sb.case_dir(id);
    match prepare(case, mode, &dir, lim) {
        Prepared::Done(v) => v,
        Prepared::Run(p) => {
            let run = run_bash(&p.script, &dir, case.utf8, lim.bash);
            judge(case, &p, &dir, &run)
        }
    }
}

/// A rendered case, ready to run.
struct Pending {
    script: Vec<u8>,
    text: String,
    vals: [Vec<u8>; 3],
}

enum Prepared {
    Done(Verdict),
    Run(Pending),
}

fn failure(text: &str, vals: &[Vec<u8>; 3], check: Check, detail: String) -> Verdict {
    Verdict::Failed(Box::new(Failure {
        check,
        detail,
        template: text.to_string(),
        values: vals.clone(),
        rendered: None,
        stderr: Vec::new(),
    }))
}

/// Render (or paste) a case's template with its values.
fn prepare(case: &Case, mode: Mode, dir: &CaseDir, lim: Limits) -> Prepared {
    let text = case.text();
    let spelled = text.spell();
    let wb = dir.work_bytes();
    let vals: [Vec<u8>; 3] = [
        case.values[0].bytes(&wb),
        case.values[1].bytes(&wb),
        case.values[2].bytes(&wb),
    ];
    let source = template_source(case, &text);
    let script: Vec<u8> = match mode {
        Mode::NaivePaste => text.paste(&vals),
        Mode::Renderer => {
            let (vars, secrets) = vars_of(case, &vals);
            let t0 = Instant::now();
            let r = catch_unwind(AssertUnwindSafe(|| {
                let t = if case.document {
                    Template::parse(&source)?
                } else {
                    Template::from_script(source.clone())
                };
                t.render(&vars, &secrets).map(|r| r.expose_bytes().to_vec())
            }));
            let took = t0.elapsed();
            let r = match r {
                Err(p) => {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    let d = format!("render panicked: {msg}");
                    return Prepared::Done(failure(&spelled, &vals, Check::Panic, d));
                }
                Ok(r) => r,
            };
            if took > lim.render {
                let d = format!("rendering took {took:?} (bound {:?})", lim.render);
                return Prepared::Done(failure(&spelled, &vals, Check::SlowRender, d));
            }
            match r {
                Err(e) => {
                    let kind = e.kind().as_str();
                    if !matches!(kind, "render_error" | "missing_variable" | "invalid_input") {
                        let d = format!("refused with kind {kind}: {e}");
                        return Prepared::Done(failure(&spelled, &vals, Check::BadKind, d));
                    }
                    let msg = e.to_string();
                    for (i, v) in vals.iter().enumerate() {
                        if v.len() >= 8
                            && contains(msg.as_bytes(), v)
                            && !contains(spelled.as_bytes(), v)
                        {
                            let d = format!(
                                "the message of a refusal holds the value of `{}`: {msg}",
                                VARS[i]
                            );
                            return Prepared::Done(failure(
                                &spelled,
                                &vals,
                                Check::ValueInMessage,
                                d,
                            ));
                        }
                    }
                    return Prepared::Done(Verdict::Refused(refusal_class(&e)));
                }
                Ok(s) => s,
            }
        }
    };
    if let Some(d) = std::env::var_os("CSM_FUZZ_DUMP") {
        // Debugging aid: keep every script that runs.
        let n = std::fs::read_dir(&d).map_or(0, |r| r.count());
        let _ = std::fs::write(std::path::Path::new(&d).join(format!("s{n}.sh")), &script);
    }
    Prepared::Run(Pending {
        script,
        text: spelled,
        vals,
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fn judge(case: &Case, p: &Pending, dir: &CaseDir, run: &Run) -> Verdict {
    let vals = &p.vals;
    let f = |check, detail: String| {
        Verdict::Failed(Box::new(Failure {
            check,
            detail,
            template: p.text.clone(),
            values: vals.clone(),
            rendered: Some(p.script.clone()),
            stderr: run.stderr.clone(),
        }))
    };
    let entries = dir.entries();
    let canaries: Vec<&String> = entries.iter().filter(|e| is_canary(e)).collect();
    if !canaries.is_empty() {
        return f(
            Check::Canary,
            format!("canary files appeared: {canaries:?}"),
        );
    }
    let live: BTreeSet<&str> = case
        .observations()
        .filter(|(_, o)| o.want.is_some())
        .map(|(_, o)| o.file.as_str())
        .collect();
    let dead: BTreeSet<&str> = case
        .observations()
        .filter(|(_, o)| o.want.is_none())
        .map(|(_, o)| o.file.as_str())
        .collect();
    let stray: Vec<&String> = entries
        .iter()
        .filter(|e| !live.contains(e.as_str()) && !dead.contains(e.as_str()))
        .collect();
    if !stray.is_empty() {
        return f(
            Check::UnexpectedFile,
            format!("unexpected files appeared: {stray:?}"),
        );
    }
    if run.timed_out {
        return f(Check::Timeout, format!("bash ran past {:?}", run.elapsed));
    }
    let err = String::from_utf8_lossy(&run.stderr);
    if let Some(p) = PARSE_ERRORS.iter().find(|p| err.contains(*p)) {
        return f(Check::ParsedAsCode, format!("bash reported `{p}`"));
    }
    let ran: Vec<&String> = entries
        .iter()
        .filter(|e| dead.contains(e.as_str()))
        .collect();
    if !ran.is_empty() {
        return f(
            Check::DeadCodeRan,
            format!("observations in dead code ran: {ran:?}"),
        );
    }
    let strict = case.strict();
    let invalid_utf8 = case.utf8 && vals.iter().any(|v| std::str::from_utf8(v).is_err());
    let mut tolerated = 0;
    let mut checked = 0;
    for (item, o) in case.observations() {
        let Some(want) = &o.want else { continue };
        match dir.read(&o.file) {
            Some(got) => {
                if invalid_utf8 && uses_patterns(want) {
                    continue;
                }
                let want = eval(want, vals);
                checked += 1;
                if got != want {
                    return f(
                        Check::Mismatch,
                        format!(
                            "observation {} ({}) in item {item}:\n    want {}\n    got  {}",
                            o.file,
                            o.tag,
                            shown(&want),
                            shown(&got)
                        ),
                    );
                }
            }
            None => {
                let excused = !strict && case.items[..=item].iter().any(|it| it.sensitive);
                if excused {
                    tolerated += 1;
                } else {
                    return f(
                        Check::Missing,
                        format!(
                            "observation {} ({}) in item {item} never ran",
                            o.file, o.tag
                        ),
                    );
                }
            }
        }
    }
    Verdict::Passed { tolerated, checked }
}

/// Bytes for a report: escaped, bounded.
pub fn shown(b: &[u8]) -> String {
    let s = b.escape_ascii().to_string();
    if s.len() > 600 {
        format!("\"{}…\" ({} bytes)", &s[..600], b.len())
    } else {
        format!("\"{s}\"")
    }
}
