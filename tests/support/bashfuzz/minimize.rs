//! A greedy minimiser. A case is a pure function of its seed and the set of statements
//! emitted as `:` (see `gen::Gen::stmt`), so the minimiser drops statements, outermost
//! first, by regenerating with a larger skip set; then drops the prelude and the document
//! wrapper, makes values benign, drops value fragments and halves long ones. Each step is
//! kept only while the case still fails the same check.

use std::collections::BTreeSet;

use super::gen::{self, Case, Text};
use super::oracle::{check_case, Check, Failure, Verdict};
use super::rng::Rng;
use super::sandbox::Sandbox;
use super::values::Value;
use super::Settings;

/// Attempts per minimisation (each renders and usually runs bash once).
const BUDGET: usize = 200;

/// The smallest case found that still fails with `check`, and its failure.
pub fn minimize(
    case: &Case,
    check: Check,
    settings: &Settings,
    sb: &Sandbox,
    n: u64,
) -> Option<(Case, Failure)> {
    let tries = std::cell::Cell::new(0usize);
    let spent = || tries.get() >= BUDGET;
    let fails = |c: &Case| -> Option<Failure> {
        tries.set(tries.get() + 1);
        match check_case(c, settings.mode, sb, n, settings.limits) {
            Verdict::Failed(f) if f.check == check => Some(*f),
            _ => None,
        }
    };
    // The same random choices, some statements emitted as `:`, this case's edits kept.
    let regen = |skip: &BTreeSet<u32>, like: &Case| -> Case {
        let mut rng = Rng::for_case(settings.seed, n);
        let mut c = gen::case(&mut rng, &settings.gen, skip);
        c.values = like.values.clone();
        c.document = like.document;
        if like.prelude.0.is_empty() {
            c.prelude = Text::new();
        }
        c
    };
    let mut best = case.clone();
    let mut best_fail = None;
    let mut skip = BTreeSet::new();
    for k in 0..case.stmts {
        if spent() {
            break;
        }
        let mut s = skip.clone();
        s.insert(k);
        let c = regen(&s, &best);
        if c.text() == best.text() {
            continue;
        }
        if let Some(f) = fails(&c) {
            skip = s;
            best = c;
            best_fail = Some(f);
        }
    }
    if !best.prelude.0.is_empty() && !spent() {
        let mut c = best.clone();
        c.prelude = Text::new();
        if let Some(f) = fails(&c) {
            best = c;
            best_fail = Some(f);
        }
    }
    if best.document && !spent() {
        // Prefer a plain script.
        let mut c = best.clone();
        c.document = false;
        if let Some(f) = fails(&c) {
            best = c;
            best_fail = Some(f);
        }
    }
    for v in 0..3 {
        for benign in ["x", "1", ""] {
            if spent() || best.values[v].raw() == benign.as_bytes() {
                break;
            }
            let mut c = best.clone();
            c.values[v] = Value::benign(benign);
            if let Some(f) = fails(&c) {
                best = c;
                best_fail = Some(f);
                break;
            }
        }
    }
    for v in 0..3 {
        let mut k = best.values[v].frags.len();
        while k > 0 && !spent() && best.values[v].frags.len() > 1 {
            k -= 1;
            let mut c = best.clone();
            c.values[v].frags.remove(k);
            if let Some(f) = fails(&c) {
                best = c;
                best_fail = Some(f);
            }
        }
        let mut k = 0;
        while k < best.values[v].frags.len() && !spent() {
            let frag = &best.values[v].frags[k];
            if frag.len() > 16 {
                let mut c = best.clone();
                c.values[v].frags[k] = frag[frag.len() / 2..].to_vec();
                if let Some(f) = fails(&c) {
                    best = c;
                    best_fail = Some(f);
                    continue;
                }
            }
            k += 1;
        }
    }
    best_fail.map(|f| (best, f))
}
