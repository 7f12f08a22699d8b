//! Rendering: checking values against what the analysis requires, binding them, and
//! writing the script with references in place of placeholders.
//!
//! The output is the preamble of bindings followed by the template with edits: each
//! placeholder becomes a reference, and each quoted here-document that holds one becomes
//! an unquoted here-document with `\`, `$` and `` ` `` of its own text escaped. The output
//! buffer is sized exactly up front, so it never reallocates and leaves no copy of a value
//! in freed memory.

use std::collections::{BTreeMap, BTreeSet};

use secrecy::ExposeSecret;

use super::placeholder::{is_ident, Placeholder};
use super::quote::{single_quote, single_quoted_len};
use super::syntax::{Quoting, Role, ScopeKind};
use super::verdict::Verdict;
use super::{Template, TemplateError};
use crate::secret::{secret_bytes, SecretBytes, Variables};

/// Bounds on the values a template is rendered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderLimits {
    /// The largest single value (a variable or a stored secret), in bytes.
    pub max_value: usize,
    /// The largest total of all values supplied, in bytes.
    pub max_total: usize,
}

impl Default for RenderLimits {
    /// 1 MiB per value, 4 MiB in all.
    fn default() -> Self {
        RenderLimits {
            max_value: 1 << 20,
            max_total: 4 << 20,
        }
    }
}

/// One change to the script text.
enum Edit<'a> {
    /// Replace `start..end` with a reference to binding `b`, quoted as `q`.
    Reference { b: usize, q: Quoting },
    /// Replace `start..end` with this text (a here-document delimiter, unquoted).
    Text(&'a [u8]),
    /// Copy `start..end`, escaping `\`, `$` and `` ` ``.
    Escape,
}

fn reference(q: Quoting) -> (&'static str, &'static str) {
    match q {
        Quoting::Unquoted => ("\"${", "}\""),
        Quoting::Double | Quoting::QuotedHeredoc => ("${", "}"),
        Quoting::Single => ("'\"${", "}\"'"),
        Quoting::AnsiC => ("'\"${", "}\"$'"),
    }
}

fn binding_name(b: usize) -> String {
    format!("__csm_v{b}")
}

fn line_of(script: &[u8], at: usize) -> usize {
    1 + script[..at.min(script.len())]
        .iter()
        .filter(|&&c| c == b'\n')
        .count()
}

fn is_plain_integer(v: &[u8]) -> bool {
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    !digits.is_empty() && digits.len() <= 19 && digits.iter().all(u8::is_ascii_digit)
}

fn escaped_len(s: &[u8]) -> usize {
    s.len()
        + s.iter()
            .filter(|c| matches!(c, b'\\' | b'$' | b'`'))
            .count()
}

pub(super) fn render(
    t: &Template,
    vars: &Variables,
    secrets: &Variables,
    limits: &RenderLimits,
) -> Result<SecretBytes, TemplateError> {
    check_sizes(vars, secrets, limits)?;
    let an = &t.analysis;
    let syn = &an.syntax;
    let script = t.script.as_bytes();
    let declared = t.variables.as_deref();
    let is_declared = |n: &str| match declared {
        Some(_) => t.declared.contains(n),
        None => vars.contains(n),
    };

    // Which sites are placeholders here; value-independent refusals first.
    let mut active = Vec::with_capacity(syn.sites.len());
    for (i, site) in syn.sites.iter().enumerate() {
        let on = match &site.placeholder {
            Placeholder::Var { name, next_gen } => {
                if *next_gen && declared.is_some() && !is_declared(name) {
                    return Err(TemplateError::Undeclared { name: name.clone() });
                }
                *next_gen || is_declared(name)
            }
            Placeholder::Secret { .. } => true,
        };
        if on {
            active.push(i);
        }
    }
    if let Some(&first) = active.first() {
        let site = &syn.sites[first];
        if syn.too_deep {
            return Err(TemplateError::TooComplex);
        }
        if let Some(u) = &syn.unsure {
            return Err(TemplateError::Unsure {
                variable: site.placeholder.display(),
                line: line_of(script, site.start),
                at_line: line_of(script, u.at),
                reason: u.why.clone(),
            });
        }
    }
    for &i in &active {
        let site = &syn.sites[i];
        if let Verdict::Refuse(why) = &an.verdicts[i] {
            if why.contains("here-document delimiter") {
                return Err(TemplateError::InDelimiter {
                    variable: site.placeholder.display(),
                });
            }
            return Err(TemplateError::NotData {
                variable: site.placeholder.display(),
                line: line_of(script, site.start),
                reason: why.clone(),
            });
        }
        if let Some(h) = site.heredoc {
            let hd = &syn.heredocs[h];
            if let Some(why) = hd.problem {
                return Err(TemplateError::Heredoc {
                    variable: site.placeholder.display(),
                    delimiter: String::from_utf8_lossy(&hd.delim).into_owned(),
                    reason: why.into(),
                });
            }
        }
    }

    let mut missing = BTreeSet::new();
    if let Some(list) = declared {
        missing.extend(list.iter().filter(|n| !vars.contains(n)).cloned());
    }
    for &i in &active {
        match &syn.sites[i].placeholder {
            Placeholder::Var { name, .. } if !vars.contains(name) => {
                missing.insert(name.clone());
            }
            p @ Placeholder::Secret { name } if !secrets.contains(name) => {
                missing.insert(p.display());
            }
            _ => {}
        }
    }
    if !missing.is_empty() {
        return Err(TemplateError::MissingVariables {
            names: missing.into_iter().collect(),
        });
    }

    // Per-value checks, and one binding per distinct placeholder.
    let mut bindings: Vec<&[u8]> = Vec::new();
    let mut binding_of: BTreeMap<(bool, &str), usize> = BTreeMap::new();
    let mut edits: Vec<(usize, usize, Edit)> = Vec::with_capacity(active.len());
    let mut rewritten: BTreeSet<usize> = BTreeSet::new();
    for &i in &active {
        let site = &syn.sites[i];
        let value = lookup(&site.placeholder, vars, secrets);
        let variable = || site.placeholder.display();
        let line = || line_of(script, site.start);
        if value.contains(&0) {
            return Err(TemplateError::NulByte {
                variable: variable(),
            });
        }
        let chain = syn.chain(site.scope);
        let in_param_word = chain
            .iter()
            .any(|&s| matches!(syn.scopes[s].kind, ScopeKind::ParamWord { .. }));
        let in_case_pattern = chain.iter().any(|&s| {
            matches!(
                syn.scopes[s].kind,
                ScopeKind::Word(Role::CasePattern | Role::CaseSubject)
            )
        });
        if in_param_word && in_case_pattern {
            // bash 5.2 keeps quotes spliced into `${x+…}` inside a case pattern or subject as
            // text, so the value no longer matches itself (found by the third and fourth
            // 1,000,000-case fuzz runs).
            return Err(TemplateError::Unsure {
                variable: variable(),
                line: line(),
                at_line: line(),
                reason: "a placeholder inside ${…} in a case pattern or subject, which bash \
                         5.2 does not match exactly"
                    .into(),
            });
        }
        if value.iter().any(|&c| c == 0x01 || c == 0x7f)
            && (site.in_body
                || chain
                    .iter()
                    .any(|&s| matches!(syn.scopes[s].kind, ScopeKind::Word(Role::HereString))))
        {
            // bash 5.2 drops or doubles its internal quoting bytes (CTLESC 0x01, CTLNUL
            // 0x7f) when it expands a here-document or a here-string: inside `$(…)` or
            // `<(…)`, and in a UTF-8 locale after an invalid multibyte sequence anywhere
            // (found by the fuzzer's long runs).
            return Err(TemplateError::NotData {
                variable: variable(),
                line: line(),
                reason: "a value with the bytes 0x01 or 0x7f in a here-document or a \
                         here-string, which bash 5.2 does not expand exactly"
                    .into(),
            });
        }
        match &an.verdicts[i] {
            Verdict::Integer(why) if !is_plain_integer(value) => {
                return Err(TemplateError::NotAnInteger {
                    variable: variable(),
                    line: line(),
                    context: why.clone(),
                })
            }
            Verdict::Name(why) if !is_ident(value) || value.starts_with(b"__csm") => {
                return Err(TemplateError::NotAName {
                    variable: variable(),
                    line: line(),
                    context: why.clone(),
                })
            }
            _ => {}
        }
        let next = bindings.len();
        let b = *binding_of.entry(site.placeholder.key()).or_insert(next);
        if b == next {
            bindings.push(value);
        }
        edits.push((site.start, site.end, Edit::Reference { b, q: site.quoting }));
        if let Some(h) = site.heredoc {
            rewritten.insert(h);
        }
    }
    for &h in &rewritten {
        let hd = &syn.heredocs[h];
        edits.push((hd.delim_span.0, hd.delim_span.1, Edit::Text(&hd.delim)));
        // The body's own text, between the placeholders in it.
        let (bs, be) = hd.body;
        let mut cuts: Vec<(usize, usize)> = active
            .iter()
            .map(|&i| &syn.sites[i])
            .filter(|s| s.heredoc == Some(h))
            .map(|s| (s.start, s.end))
            .collect();
        cuts.sort_unstable();
        let mut last = bs;
        for (s, e) in cuts {
            if s > last {
                edits.push((last, s, Edit::Escape));
            }
            last = e;
        }
        if be > last {
            edits.push((last, be, Edit::Escape));
        }
    }
    edits.sort_by_key(|&(s, e, _)| (s, e));

    // Exact length first, so the buffer never reallocates.
    let names: Vec<String> = (0..bindings.len()).map(binding_name).collect();
    let mut total = 0usize;
    for (n, v) in bindings.iter().enumerate() {
        total += names[n].len() + 1 + single_quoted_len(v) + 1;
    }
    let mut last = 0;
    for (s, e, edit) in &edits {
        if *s < last {
            // Edits never overlap; refuse rather than guess.
            return Err(TemplateError::TooComplex);
        }
        total += s - last;
        total += match edit {
            Edit::Reference { b, q } => {
                let (pre, post) = reference(*q);
                pre.len() + names[*b].len() + post.len()
            }
            Edit::Text(t) => t.len(),
            Edit::Escape => escaped_len(&script[*s..*e]),
        };
        last = *e;
    }
    total += script.len() - last;

    let mut out = Vec::with_capacity(total);
    for (n, v) in bindings.iter().enumerate() {
        out.extend_from_slice(names[n].as_bytes());
        out.push(b'=');
        single_quote(v, &mut out);
        out.push(b'\n');
    }
    let mut last = 0;
    for (s, e, edit) in &edits {
        out.extend_from_slice(&script[last..*s]);
        match edit {
            Edit::Reference { b, q } => {
                let (pre, post) = reference(*q);
                out.extend_from_slice(pre.as_bytes());
                out.extend_from_slice(names[*b].as_bytes());
                out.extend_from_slice(post.as_bytes());
            }
            Edit::Text(t) => out.extend_from_slice(t),
            Edit::Escape => {
                for &c in &script[*s..*e] {
                    if matches!(c, b'\\' | b'$' | b'`') {
                        out.push(b'\\');
                    }
                    out.push(c);
                }
            }
        }
        last = *e;
    }
    out.extend_from_slice(&script[last..]);
    debug_assert_eq!(out.len(), total);
    Ok(secret_bytes(out))
}

/// Every supplied value, used or not, within the limits.
fn check_sizes(
    vars: &Variables,
    secrets: &Variables,
    limits: &RenderLimits,
) -> Result<(), TemplateError> {
    let mut total = 0usize;
    for (name, v, secret) in vars
        .iter()
        .map(|(n, v)| (n, v, false))
        .chain(secrets.iter().map(|(n, v)| (n, v, true)))
    {
        let shown = || {
            if secret {
                format!("secrets.getValue(\"{name}\")")
            } else {
                name.to_owned()
            }
        };
        let len = v.expose_secret().len();
        if len > limits.max_value {
            return Err(TemplateError::TooLarge {
                variable: shown(),
                size: len,
                limit: limits.max_value,
                scope: " per value",
            });
        }
        total += len;
        if total > limits.max_total {
            return Err(TemplateError::TooLarge {
                variable: shown(),
                size: total,
                limit: limits.max_total,
                scope: " for all values together",
            });
        }
    }
    Ok(())
}

/// The value for a placeholder; presence was checked before this is called.
fn lookup<'v>(p: &Placeholder, vars: &'v Variables, secrets: &'v Variables) -> &'v [u8] {
    let v = match p {
        Placeholder::Var { name, .. } => vars.get(name),
        Placeholder::Secret { name } => secrets.get(name),
    };
    v.map(|s| s.expose_secret()).unwrap_or_default()
}
