//! A greedy minimiser: drops whole items, then makes other values benign, then drops
//! value fragments and halves long ones, keeping each step only while the case still
//! fails the same check.

use super::gen::Case;
use super::oracle::{check_case, Check, Failure, Limits, Mode, Verdict};
use super::sandbox::Sandbox;
use super::values::Value;

/// Attempts per minimisation (each renders and usually runs bash once).
const BUDGET: usize = 160;

/// The smallest case found that still fails with `check`, and its failure.
pub fn minimize(
    case: &Case,
    check: Check,
    mode: Mode,
    sb: &Sandbox,
    id: u64,
    lim: Limits,
) -> Option<(Case, Failure)> {
    let mut best = case.clone();
    let mut best_fail = None;
    let mut tries = 0;
    let fails = |c: &Case, tries: &mut usize| -> Option<Failure> {
        *tries += 1;
        match check_case(c, mode, sb, id, lim) {
            Verdict::Failed(f) if f.check == check => Some(*f),
            _ => None,
        }
    };
    // Items, last first (the end marker too: it only matters for `Missing`).
    let mut i = best.items.len();
    while i > 0 && tries < BUDGET {
        i -= 1;
        if best.items.len() <= 1 {
            break;
        }
        let mut c = best.clone();
        c.items.remove(i);
        if let Some(f) = fails(&c, &mut tries) {
            best = c;
            best_fail = Some(f);
        }
    }
    if best.prelude.has_ph() || !best.prelude.0.is_empty() {
        let mut c = best.clone();
        c.prelude = Default::default();
        if let Some(f) = fails(&c, &mut tries) {
            best = c;
            best_fail = Some(f);
        }
    }
    if best.document && tries < BUDGET {
        // Prefer a plain script.
        let mut c = best.clone();
        c.document = false;
        if let Some(f) = fails(&c, &mut tries) {
            best = c;
            best_fail = Some(f);
        }
    }
    for v in 0..3 {
        for benign in ["x", "1", ""] {
            if tries >= BUDGET {
                break;
            }
            let mut c = best.clone();
            if c.values[v].raw() == benign.as_bytes() {
                break;
            }
            c.values[v] = Value::benign(benign);
            if let Some(f) = fails(&c, &mut tries) {
                best = c;
                best_fail = Some(f);
                break;
            }
        }
    }
    for v in 0..3 {
        let mut k = best.values[v].frags.len();
        while k > 0 && tries < BUDGET {
            k -= 1;
            if best.values[v].frags.len() <= 1 {
                break;
            }
            let mut c = best.clone();
            c.values[v].frags.remove(k);
            if let Some(f) = fails(&c, &mut tries) {
                best = c;
                best_fail = Some(f);
            }
        }
        let mut k = 0;
        while k < best.values[v].frags.len() && tries < BUDGET {
            let frag = &best.values[v].frags[k];
            if frag.len() > 16 {
                let mut c = best.clone();
                let half = frag.len() / 2;
                c.values[v].frags[k] = frag[half..].to_vec();
                if let Some(f) = fails(&c, &mut tries) {
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
