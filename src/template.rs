//! Templates: parsing template documents and plain scripts, and injection-proof rendering.
//!
//! This module owns everything between "the control plane handed us a template and some
//! values" and "here are the bytes bash will run": the template document format, variable
//! name rules, placeholder syntax, the missing-variable check (with Harness's wording) and
//! the rendering that keeps every value data.
//!
//! # Templates
//! A template is either a JSON document
//! `{"name": …, "scriptString": …, "variables": ["key", …], "timeoutMillis": …}` (variables
//! may also be Harness objects `{"name": "key", "value": "", "description": ""}`), or a plain
//! bash script. [`Template::parse`] treats text whose first non-blank character is `{` as a
//! document. A plain script declares exactly the variables it is given at render time.
//!
//! # Placeholders
//! - `${name}` (FirstGen), for declared variables only; any other `${…}` (such as `${HOME}`)
//!   is bash's. `$name` without braces is never a placeholder.
//! - `<+secretManager.environmentVariables.name>` and `<+spec.environmentVariables.name>`
//!   (NextGen) always mean a template variable.
//! - `${secrets.getValue("name")}` (or with single quotes), and the NextGen spelling
//!   `<+secrets.getValue("name")>`, take their value from the `secrets` map.
//!
//! A placeholder is recognised wherever bash would read the text, including inside single
//! quotes (Harness substitutes text there too), except in comments and where a backslash
//! escapes its first character.
//!
//! # How rendering keeps values as data
//! A value never enters the script text. The rendered script starts with a preamble that
//! binds each used value once, single-quoted (`__csm_v0='it'\''s'`; every byte except `'`
//! is literal inside single quotes, and `'` is never part of a multibyte character in a
//! locale bash supports). The preamble shifts line numbers in bash's messages by one per
//! binding. A bash lexer then finds the quoting context of each
//! placeholder and replaces it with a reference that yields exactly the value in that
//! context: `"${__csm_v0}"` unquoted, `${__csm_v0}` inside double quotes and here-documents,
//! `'"${__csm_v0}"'` inside single quotes, `'"${__csm_v0}"$'` inside `$'…'`. A misjudged
//! context can therefore only produce wrong text, never code, except where bash evaluates a
//! variable's *contents* as code. Those contexts are handled explicitly:
//! - arithmetic (`$((…))`, `((…))`, `$[…]`, `let`, array subscripts, `${x:offset:length}`,
//!   operands of `-eq -ne -lt -le -gt -ge` in `[[ … ]]`, arguments of `declare -i`, and
//!   assignments to variables declared with `-i` anywhere in the script): the value must be
//!   a plain integer (`-?[0-9]+`), otherwise rendering fails. Anything nested inside such a
//!   context (a `$(…)` whose output lands in `$((…))`, say) counts as arithmetic too.
//! - `declare -n`/`local -n` arguments and the operand of `[[ -v … ]]`/`[[ -R … ]]`: the
//!   value must be a plain variable name.
//! - quoted here-documents (`<<'EOF'`, `<<"EOF"`, `<<\EOF`, `<<-…`) do no expansion, so the
//!   value is pasted raw. Rendering fails if a line would then end the here-document early,
//!   if `<<-` would strip tabs that belong to the value, or if the here-document sits where
//!   the lexer cannot be certain how bash reads it (inside backquotes, unterminated, or its
//!   body detached from the command that opened it). Inside `$(…)`/`<(…)` bash 5.2 also
//!   ends a body at a line that merely *starts* with the delimiter and has a `)` later (the
//!   rest of that line is then code), so there no line of a value may start with the
//!   delimiter, and the lexer ends template bodies where bash does.
//! - a value containing NUL cannot be carried by a bash script and is rejected.
//!
//! `$((` and `((` are arithmetic unless their first `(` closes alone (`$((cmd) | x)`), as
//! in bash; the lexer reads them as arithmetic and, if that happens, reads them again as
//! a command list. Unterminated constructs run to the end of the script, which bash then
//! rejects; nesting deeper than the lexer's limit is refused.
//!
//! # Outside the guarantee
//! Some constructs run data as code by design; a template that uses them with a placeholder
//! gets exactly what it asked for: `eval "${x}"`, `bash -c "${x}"`, `source`/`.`, trap and
//! alias strings, `PS4`/`PROMPT_COMMAND`, `${x@P}`, builtins that take a variable *name*
//! from data (`printf -v`, `read`, `unset`, `declare "${x}"`, `test -v`, `${!x}`), a
//! placeholder used as a command name, and a value copied into another variable which the
//! script later evaluates arithmetically (bash runs `a[$(cmd)]`-shaped values there).
//! Likewise a value handed as program text to another shell or interpreter
//! (`ssh host "… ${x}"`, `su -c`, `sed "s/…/${x}/"`, `awk`, `python -c`) is that
//! program's business: bash passes it exactly, as data.
//! The lexer follows bash 5.2 (checked against 5.2.15); placeholders in quoted
//! here-documents inside `$(…)` also rely on bash (4.0 or later) reading the body before
//! the `)`. Arithmetic detection is conservative: `echo a[${x}]` or an associative-array
//! subscript also requires an integer, as does anything inside `$((cmd) …)` once the
//! lexer's re-reading budget is spent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{ErrorKind, Kind};
use crate::secret::{secret_bytes, SecretBytes, Variables};

/// A template document, in the JSON shape the control plane accepts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateDocument {
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The bash script.
    pub script_string: String,
    /// Declared variables: names, or Harness variable objects with a `name` field.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub variables: Vec<TemplateVariable>,
    /// Per-attempt timeout.
    #[serde(default)]
    pub timeout_millis: Option<u64>,
}

/// One declared template variable.
///
/// Deserialises from a bare string (`"key"`) or from an object with a string `name`
/// (`{"name": "key", "value": "", "description": ""}`); other fields are ignored, because a
/// default `value` is not a test value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateVariable {
    /// The variable's name, as used in placeholders.
    pub name: String,
}

impl From<&str> for TemplateVariable {
    fn from(name: &str) -> Self {
        TemplateVariable {
            name: name.to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for TemplateVariable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TemplateVariable;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a variable name or an object with a string `name`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TemplateVariable { name: v.to_owned() })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut name = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "name" {
                        if name.is_some() {
                            return Err(de::Error::duplicate_field("name"));
                        }
                        name = Some(map.next_value::<String>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                name.map(|name| TemplateVariable { name })
                    .ok_or_else(|| de::Error::missing_field("name"))
            }
        }
        d.deserialize_any(V)
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TemplateVariable>, D::Error> {
    Ok(Option::<Vec<TemplateVariable>>::deserialize(d)?.unwrap_or_default())
}

/// A parsed template: the script, its declared variables and the placeholder analysis.
#[derive(Debug, Clone)]
pub struct Template {
    script: String,
    name: Option<String>,
    variables: Option<Vec<String>>,
    /// The same names, for lookups while rendering.
    declared: BTreeSet<String>,
    timeout: Option<Duration>,
    analysis: lex::Analysis,
    /// Set by [`Template::from_script`], which cannot fail; reported by `render`.
    deferred: Option<String>,
}

/// A rendered script: value bindings plus the rewritten body. Secret as a whole.
#[derive(Debug)]
pub struct RenderedScript {
    text: SecretBytes,
}

impl RenderedScript {
    /// The script bytes. The one place a rendered script is exposed: handing it to bash.
    pub fn expose_bytes(&self) -> &[u8] {
        self.text.expose_secret()
    }
}

/// Why a template could not be parsed or rendered. Messages name variables and contexts,
/// never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Not a usable template document or script.
    #[error("invalid template: {0}")]
    Invalid(String),
    /// Variables (or `secrets.getValue("…")` references) without a value, sorted.
    #[error(
        "The values for the variables {{{}}} have not been provided as part of test parameters",
        .names.join(", ")
    )]
    MissingVariables {
        /// Every variable that lacks a value.
        names: Vec<String>,
    },
    /// A NextGen placeholder in a document names a variable the document does not declare.
    #[error(
        "placeholder for variable `{name}` refers to a variable the template does not declare"
    )]
    Undeclared {
        /// The undeclared name.
        name: String,
    },
    /// A placeholder forms (part of) a here-document delimiter, which bash never expands.
    #[error(
        "variable `{variable}` is used in a here-document delimiter, which bash never expands"
    )]
    InDelimiter {
        /// The variable.
        variable: String,
    },
    /// The value contains a NUL byte, which a bash script cannot hold.
    #[error("the value of `{variable}` contains a NUL byte, which a bash script cannot carry")]
    NulByte {
        /// The variable.
        variable: String,
    },
    /// The value is used where bash evaluates text as arithmetic, and is not an integer.
    #[error(
        "variable `{variable}` is used in {context}, where bash evaluates text as code; \
         its value must be a plain integer"
    )]
    NotAnInteger {
        /// The variable.
        variable: String,
        /// Where it is used.
        context: String,
    },
    /// The value is used as a variable name (`declare -n`), and is not one.
    #[error("variable `{variable}` is used in {context}; its value must be a plain variable name")]
    NotAName {
        /// The variable.
        variable: String,
        /// Where it is used.
        context: String,
    },
    /// The value cannot be pasted into a quoted here-document safely and exactly.
    #[error(
        "variable `{variable}` cannot be placed in the quoted here-document ended by \
         `{delimiter}`: {reason}"
    )]
    Heredoc {
        /// The variable.
        variable: String,
        /// The here-document's delimiter (template text).
        delimiter: String,
        /// Why not.
        reason: String,
    },
    /// The template nests constructs too deeply to be analysed.
    #[error("the template nests constructs too deeply to be rendered safely")]
    TooComplex,
}

impl Kind for TemplateError {
    fn kind(&self) -> ErrorKind {
        match self {
            TemplateError::Invalid(_) => ErrorKind::InvalidInput,
            TemplateError::MissingVariables { .. } => ErrorKind::MissingVariable,
            _ => ErrorKind::RenderError,
        }
    }
}

/// Whether `name` can be a template variable: `[A-Za-z_][A-Za-z0-9_]*`, usable in all
/// placeholder forms.
pub fn is_valid_variable_name(name: &str) -> bool {
    lex::ident_len(name.as_bytes()) == Some(name.len())
}

/// A name for an error message: names come from the template, never from values, but are
/// still shown escaped and bounded.
fn shown(name: &str) -> String {
    let mut s: String = name.chars().take(64).collect();
    if s.len() < name.len() {
        s.push('…');
    }
    format!("{s:?}")
}

fn check_script(script: &str) -> Result<(), String> {
    if script.trim().is_empty() {
        return Err("the script is empty".into());
    }
    if script.contains('\0') {
        return Err("the script contains a NUL byte".into());
    }
    Ok(())
}

/// Explains why a JSON value is not a template document, naming the field (never a value).
fn explain_shape(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let Value::Object(m) = v else {
        return Some("a template document must be a JSON object".into());
    };
    match m.get("scriptString") {
        None => return Some("missing field `scriptString`".into()),
        Some(Value::String(_)) => {}
        Some(_) => return Some("`scriptString` must be a string".into()),
    }
    if !matches!(m.get("name"), None | Some(Value::Null | Value::String(_))) {
        return Some("`name` must be a string".into());
    }
    match m.get("variables") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let ok = match item {
                    Value::String(_) => true,
                    Value::Object(o) => matches!(o.get("name"), Some(Value::String(_))),
                    _ => false,
                };
                if !ok {
                    return Some(format!(
                        "`variables[{i}]` must be a variable name or an object with a string `name`"
                    ));
                }
            }
        }
        Some(_) => return Some("`variables` must be an array".into()),
    }
    match m.get("timeoutMillis") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_u64().is_some() => {}
        Some(_) => return Some("`timeoutMillis` must be a non-negative integer".into()),
    }
    None
}

impl Template {
    /// Parse a template document (JSON with `scriptString`) or a plain bash script.
    ///
    /// Text whose first non-blank character is `{` must be a document. Errors name the JSON
    /// problem and its position, never the text.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        if !text.trim_start().starts_with('{') {
            check_script(text).map_err(TemplateError::Invalid)?;
            return Ok(Template::from_script(text));
        }
        match serde_json::from_str::<TemplateDocument>(text) {
            Ok(doc) => Template::from_document(doc),
            // Syntax messages are fixed phrases plus a position; they never quote input.
            Err(e) if e.is_syntax() || e.is_eof() => Err(TemplateError::Invalid(format!(
                "template document is not valid JSON: {e}"
            ))),
            // Data messages can quote values, so say it in our own words.
            Err(e) => {
                let hint = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| explain_shape(&v))
                    .unwrap_or_else(|| {
                        "each of `name`, `scriptString`, `variables` and `timeoutMillis` may \
                         appear once, with its documented type"
                            .into()
                    });
                Err(TemplateError::Invalid(format!(
                    "template document at line {} column {}: {hint}",
                    e.line(),
                    e.column()
                )))
            }
        }
    }

    /// Build from a parsed document, validating names, the script and the timeout.
    pub fn from_document(doc: TemplateDocument) -> Result<Template, TemplateError> {
        check_script(&doc.script_string).map_err(TemplateError::Invalid)?;
        let mut seen = BTreeSet::new();
        let mut names = Vec::with_capacity(doc.variables.len());
        for v in doc.variables {
            if !is_valid_variable_name(&v.name) {
                return Err(TemplateError::Invalid(format!(
                    "variable name {} is not valid: use letters, digits and `_`, not starting \
                     with a digit",
                    shown(&v.name)
                )));
            }
            if !seen.insert(v.name.clone()) {
                return Err(TemplateError::Invalid(format!(
                    "variable {} is declared more than once",
                    shown(&v.name)
                )));
            }
            names.push(v.name);
        }
        let timeout = match doc.timeout_millis {
            Some(0) => {
                return Err(TemplateError::Invalid(
                    "`timeoutMillis` must be positive".into(),
                ))
            }
            t => t.map(Duration::from_millis),
        };
        Ok(Template {
            analysis: lex::analyze(doc.script_string.as_bytes()),
            script: doc.script_string,
            name: doc.name,
            declared: names.iter().cloned().collect(),
            variables: Some(names),
            timeout,
            deferred: None,
        })
    }

    /// A plain script; its declared variables are the ones supplied.
    ///
    /// This cannot fail; an empty script or one containing NUL is reported by `render`
    /// (use [`Template::parse`] to find out early).
    pub fn from_script(script: impl Into<String>) -> Template {
        let script = script.into();
        Template {
            analysis: lex::analyze(script.as_bytes()),
            deferred: check_script(&script).err(),
            script,
            name: None,
            variables: None,
            declared: BTreeSet::new(),
            timeout: None,
        }
    }

    /// The document's name.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Declared variables; `None` for a plain script.
    pub fn declared_variables(&self) -> Option<&[String]> {
        self.variables.as_deref()
    }

    /// The document's timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The unrendered script.
    pub fn script(&self) -> &str {
        &self.script
    }

    /// Render with values (and values for `${secrets.getValue("x")}` references).
    ///
    /// For a document every declared variable needs a value, used or not; extra values are
    /// ignored. For a plain script, `${name}` is a placeholder when `name` is supplied, and
    /// every NextGen placeholder needs a value.
    pub fn render(
        &self,
        vars: &Variables,
        secrets: &Variables,
    ) -> Result<RenderedScript, TemplateError> {
        use lex::{Ctx, Placeholder};

        if let Some(why) = &self.deferred {
            return Err(TemplateError::Invalid(why.clone()));
        }
        let an = &self.analysis;
        if an.too_deep {
            return Err(TemplateError::TooComplex);
        }
        let declared = self.variables.as_deref();
        let is_declared = |n: &str| match declared {
            Some(_) => self.declared.contains(n),
            None => vars.contains(n),
        };

        // Value-independent problems first: they hold whatever the values are.
        let mut active = Vec::with_capacity(an.sites.len());
        for (i, site) in an.sites.iter().enumerate() {
            let on = match &site.placeholder {
                Placeholder::Var { name, next_gen } => {
                    if *next_gen && declared.is_some() && !is_declared(name) {
                        return Err(TemplateError::Undeclared { name: name.clone() });
                    }
                    *next_gen || is_declared(name)
                }
                Placeholder::Secret { .. } => true,
            };
            if !on {
                continue;
            }
            match site.ctx {
                Ctx::HeredocDelimiter => {
                    return Err(TemplateError::InDelimiter {
                        variable: site.placeholder.display(),
                    })
                }
                Ctx::QuotedHeredoc(h) => {
                    let hd = &an.heredocs[h];
                    if let Some(p) = hd.problem {
                        return Err(heredoc_error(&site.placeholder, hd, p.reason()));
                    }
                }
                _ => {}
            }
            active.push(i);
        }

        let mut missing = BTreeSet::new();
        if let Some(list) = declared {
            missing.extend(list.iter().filter(|n| !vars.contains(n)).cloned());
        }
        for &i in &active {
            match &an.sites[i].placeholder {
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

        // One lookup per site from here on.
        let values: Vec<&[u8]> = active
            .iter()
            .map(|&i| lookup(&an.sites[i].placeholder, vars, secrets))
            .collect();

        // Per-value checks, and one binding per distinct variable needing a reference.
        let mut bindings: Vec<&[u8]> = Vec::new();
        let mut binding_of: BTreeMap<(bool, &str), usize> = BTreeMap::new();
        let mut site_binding = vec![usize::MAX; active.len()];
        for (k, &i) in active.iter().enumerate() {
            let site = &an.sites[i];
            let value = values[k];
            if value.contains(&0) {
                return Err(TemplateError::NulByte {
                    variable: site.placeholder.display(),
                });
            }
            if let Some(d) = &site.danger {
                if d.wants_name() {
                    if lex::ident_len(value) != Some(value.len()) {
                        return Err(TemplateError::NotAName {
                            variable: site.placeholder.display(),
                            context: d.describe(),
                        });
                    }
                } else if !is_plain_integer(value) {
                    return Err(TemplateError::NotAnInteger {
                        variable: site.placeholder.display(),
                        context: d.describe(),
                    });
                }
            }
            if !matches!(site.ctx, Ctx::QuotedHeredoc(_)) {
                let next = bindings.len();
                let b = *binding_of.entry(site.placeholder.key()).or_insert(next);
                if b == next {
                    bindings.push(value);
                }
                site_binding[k] = b;
            }
        }
        self.check_quoted_heredocs(&active, &values)?;

        // Exact length first, so the buffer never reallocates and leaves copies behind.
        let refs: Vec<String> = (0..bindings.len()).map(|n| format!("__csm_v{n}")).collect();
        let mut total = 0usize;
        for (n, v) in bindings.iter().enumerate() {
            let quotes = v.iter().filter(|&&b| b == b'\'').count();
            total += refs[n].len() + 4 + v.len() + 3 * quotes;
        }
        let mut last = 0;
        for (k, &i) in active.iter().enumerate() {
            let site = &an.sites[i];
            if site.start < last {
                // The lexer never yields overlapping sites; refuse rather than guess.
                return Err(TemplateError::TooComplex);
            }
            total += site.start - last;
            total += match site.ctx {
                Ctx::QuotedHeredoc(_) => values[k].len(),
                ctx => {
                    let (pre, post) = ctx.wrap();
                    pre.len() + refs[site_binding[k]].len() + post.len()
                }
            };
            last = site.end;
        }
        total += self.script.len() - last;

        let mut out = Vec::with_capacity(total);
        for (n, v) in bindings.iter().enumerate() {
            out.extend_from_slice(refs[n].as_bytes());
            out.extend_from_slice(b"='");
            for &byte in *v {
                if byte == b'\'' {
                    out.extend_from_slice(b"'\\''");
                } else {
                    out.push(byte);
                }
            }
            out.extend_from_slice(b"'\n");
        }
        let script = self.script.as_bytes();
        let mut last = 0;
        for (k, &i) in active.iter().enumerate() {
            let site = &an.sites[i];
            out.extend_from_slice(&script[last..site.start]);
            match site.ctx {
                Ctx::QuotedHeredoc(_) => out.extend_from_slice(values[k]),
                ctx => {
                    let (pre, post) = ctx.wrap();
                    out.extend_from_slice(pre.as_bytes());
                    out.extend_from_slice(refs[site_binding[k]].as_bytes());
                    out.extend_from_slice(post.as_bytes());
                }
            }
            last = site.end;
        }
        out.extend_from_slice(&script[last..]);
        debug_assert_eq!(out.len(), total);
        Ok(RenderedScript {
            text: secret_bytes(out),
        })
    }

    /// Values pasted raw into a quoted here-document must not end it early, and `<<-` must
    /// not strip tabs that belong to a value.
    fn check_quoted_heredocs(
        &self,
        active: &[usize],
        values: &[&[u8]],
    ) -> Result<(), TemplateError> {
        let an = &self.analysis;
        let script = self.script.as_bytes();
        // Heredoc index -> (site index, value) of the sites in its body.
        let mut by_doc: BTreeMap<usize, Vec<(usize, &[u8])>> = BTreeMap::new();
        for (k, &i) in active.iter().enumerate() {
            if let lex::Ctx::QuotedHeredoc(h) = an.sites[i].ctx {
                by_doc.entry(h).or_default().push((i, values[k]));
            }
        }
        for (h, sites) in by_doc {
            let hd = &an.heredocs[h];
            let (start, end) = hd.body;
            // The body as bash will read it, and which bytes came from which site.
            let mut body = Zeroizing::new(Vec::new());
            let mut spans = Vec::with_capacity(sites.len());
            let mut last = start;
            for &(i, value) in &sites {
                let s = &an.sites[i];
                body.extend_from_slice(&script[last..s.start]);
                let from = body.len();
                body.extend_from_slice(value);
                spans.push((from, body.len(), &s.placeholder));
                last = s.end;
            }
            body.extend_from_slice(&script[last..end]);
            let mut ls = 0;
            while ls < body.len() {
                let le = body[ls..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(body.len(), |p| ls + p);
                let mut cs = ls;
                if hd.strip_tabs {
                    while cs < le && body[cs] == b'\t' {
                        // A tab owned by a value would be stripped: not exact.
                        if let Some(&(_, _, p)) = spans.iter().find(|&&(f, t, _)| f <= cs && cs < t)
                        {
                            return Err(heredoc_error(
                                p,
                                hd,
                                "`<<-` would strip leading tabs that belong to the value",
                            ));
                        }
                        cs += 1;
                    }
                }
                // Template text alone never forms the delimiter line (the lexer ended the
                // body at the first one), so a value on this line made it.
                // A value touches the line if it has a byte in it, ends it with its own newline, or
                // (when empty) sits inside it.
                let on_line = spans
                    .iter()
                    .find(|&&(f, t, _)| f <= le && (t > ls || (f == t && f >= ls)));
                if body[cs..le] == hd.delim[..] {
                    let p = on_line.map_or(&an.sites[sites[0].0].placeholder, |&(_, _, p)| p);
                    return Err(heredoc_error(
                        p,
                        hd,
                        "a line of the value would end the here-document",
                    ));
                }
                if let (true, Some(&(_, _, p))) = (hd.in_subst, on_line) {
                    if body[cs..le].starts_with(&hd.delim) {
                        return Err(heredoc_error(
                            p,
                            hd,
                            "inside $(…) bash may end a here-document at a line that only \
                             starts with its delimiter",
                        ));
                    }
                }
                ls = le + 1;
            }
        }
        Ok(())
    }
}

/// The value for a placeholder; presence was checked before this is called.
fn lookup<'v>(p: &lex::Placeholder, vars: &'v Variables, secrets: &'v Variables) -> &'v [u8] {
    let v = match p {
        lex::Placeholder::Var { name, .. } => vars.get(name),
        lex::Placeholder::Secret { name } => secrets.get(name),
    };
    v.map(|s| s.expose_secret()).unwrap_or_default()
}

fn heredoc_error(p: &lex::Placeholder, hd: &lex::Heredoc, reason: &str) -> TemplateError {
    TemplateError::Heredoc {
        variable: p.display(),
        delimiter: String::from_utf8_lossy(&hd.delim).into_owned(),
        reason: reason.to_owned(),
    }
}

fn is_plain_integer(v: &[u8]) -> bool {
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// The bash lexer: finds placeholders and the quoting context and dangers of each.
///
/// It works on bytes with an explicit stack of frames, so deep nesting cannot overflow the
/// call stack; the few recursive steps (backquote contents, here-document bodies) count
/// towards the same depth limit. It never fails on odd input: unterminated constructs
/// simply run to the end of the region, and only excessive nesting is reported.
mod lex {
    use std::borrow::Cow;
    use std::collections::{BTreeSet, HashSet};

    /// Frames plus nested lexers beyond this are refused rather than analysed.
    const MAX_DEPTH: usize = 200;
    /// How many `((` per lexer may be re-read as command lists (bounds the work on
    /// hostile input; past it, such lists are treated as arithmetic).
    const MAX_RELEX: usize = 256;

    /// What a placeholder refers to.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) enum Placeholder {
        /// A template variable; `next_gen` for the `<+…>` spellings.
        Var { name: String, next_gen: bool },
        /// A `secrets.getValue("name")` reference.
        Secret { name: String },
    }

    impl Placeholder {
        /// Identity for bindings: `${x}` and `<+spec.environmentVariables.x>` are one variable.
        pub(super) fn key(&self) -> (bool, &str) {
            match self {
                Placeholder::Var { name, .. } => (false, name),
                Placeholder::Secret { name } => (true, name),
            }
        }

        /// How errors name it.
        pub(super) fn display(&self) -> String {
            match self {
                Placeholder::Var { name, .. } => name.clone(),
                Placeholder::Secret { name } => format!("secrets.getValue(\"{name}\")"),
            }
        }
    }

    /// The quoting context of a placeholder, which decides the reference that replaces it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Ctx {
        /// Command words, `$(…)`, backquotes, `[[ … ]]`, case patterns, array elements.
        Unquoted,
        /// Inside `"…"`, `$"…"` or an unquoted here-document body.
        DoubleQuoted,
        /// The word of `${x:-…}`, `${x#…}`, `${x/…/…}` and friends.
        ParamWord,
        /// Inside `'…'`.
        SingleQuoted,
        /// Inside `$'…'`.
        AnsiC,
        /// Inside an arithmetic expression or subscript (the value is an integer by then).
        Arith,
        /// The body of the quoted here-document with this index: pasted raw.
        QuotedHeredoc(usize),
        /// A here-document delimiter word: never rendered.
        HeredocDelimiter,
    }

    impl Ctx {
        /// The text around `__csm_vN` that yields exactly the value in this context.
        pub(super) fn wrap(self) -> (&'static str, &'static str) {
            match self {
                Ctx::Unquoted | Ctx::ParamWord => ("\"${", "}\""),
                Ctx::DoubleQuoted | Ctx::Arith => ("${", "}"),
                Ctx::SingleQuoted => ("'\"${", "}\"'"),
                Ctx::AnsiC => ("'\"${", "}\"$'"),
                // Never wrapped: raw paste, or refused before rendering.
                Ctx::QuotedHeredoc(_) | Ctx::HeredocDelimiter => ("", ""),
            }
        }
    }

    /// Why bash would evaluate a value placed here as code.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) enum Danger {
        ArithExpansion,
        ArithCommand,
        OldArith,
        Let,
        Subscript,
        Substring,
        CondOperand,
        IntegerDeclare,
        IntegerVariable(String),
        NameRef,
        CondName,
    }

    impl Danger {
        /// Whether the value must be a variable name rather than an integer.
        pub(super) fn wants_name(&self) -> bool {
            matches!(self, Danger::NameRef | Danger::CondName)
        }

        /// The context, for error messages.
        pub(super) fn describe(&self) -> String {
            match self {
                Danger::ArithExpansion => "an arithmetic expansion $((…))".into(),
                Danger::ArithCommand => "an arithmetic command ((…))".into(),
                Danger::OldArith => "an arithmetic expansion $[…]".into(),
                Danger::Let => "an argument of `let`".into(),
                Danger::Subscript => "an array subscript".into(),
                Danger::Substring => "a substring offset or length ${name:…}".into(),
                Danger::CondOperand => "an operand of -eq/-ne/-lt/-le/-gt/-ge in [[ … ]]".into(),
                Danger::IntegerDeclare => "an argument of `declare -i`".into(),
                Danger::IntegerVariable(n) => {
                    format!("an assignment to `{n}`, which is declared as an integer (-i)")
                }
                Danger::NameRef => "an argument of `declare -n` (a name reference)".into(),
                Danger::CondName => "the operand of -v or -R in [[ … ]]".into(),
            }
        }
    }

    /// One placeholder occurrence.
    #[derive(Debug, Clone)]
    pub(super) struct Site {
        /// Byte range in the script.
        pub start: usize,
        pub end: usize,
        pub placeholder: Placeholder,
        pub ctx: Ctx,
        pub danger: Option<Danger>,
        /// Variables the surrounding assignment words assign to.
        assign: Vec<String>,
    }

    /// Why a quoted here-document cannot take a raw value.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum HeredocProblem {
        InBackquotes,
        Unterminated,
        Detached,
        UnusualDelimiter,
        EndsEarly,
    }

    impl HeredocProblem {
        pub(super) fn reason(self) -> &'static str {
            match self {
                HeredocProblem::InBackquotes => {
                    "it is inside backquotes, where a raw value could end the command substitution"
                }
                HeredocProblem::Unterminated => "the here-document has no terminating line",
                HeredocProblem::Detached => {
                    "its body does not follow the line of the command that opens it"
                }
                HeredocProblem::EndsEarly => {
                    "inside $(…) a body line starting with the delimiter ends it early"
                }
                HeredocProblem::UnusualDelimiter => "its delimiter uses $'…', $\"…\" or backquotes",
            }
        }
    }

    /// A quoted here-document.
    #[derive(Debug, Clone)]
    pub(super) struct Heredoc {
        /// Byte range of the body in the script.
        pub body: (usize, usize),
        pub delim: Vec<u8>,
        pub strip_tabs: bool,
        pub problem: Option<HeredocProblem>,
        /// Inside `$(…)` or `<(…)`, where bash 5.2 ends the body at a line that merely
        /// starts with the delimiter (given a later `)`), and older versions vary.
        pub in_subst: bool,
    }

    /// The result of lexing a script.
    #[derive(Debug, Clone)]
    pub(super) struct Analysis {
        /// Sorted by position, non-overlapping.
        pub sites: Vec<Site>,
        pub heredocs: Vec<Heredoc>,
        pub too_deep: bool,
    }

    /// Lex a script.
    pub(super) fn analyze(script: &[u8]) -> Analysis {
        let mut lx = Lexer::new(script, false, 0);
        let root = Frame::Cmd(CmdFrame::new(lx.fresh_id(), false, false));
        lx.run(0, script.len(), root);
        let Lexer {
            mut sites,
            heredocs,
            int_names,
            too_deep,
            ..
        } = lx;
        for s in &mut sites {
            if s.danger.is_none() {
                if let Some(n) = s.assign.iter().find(|n| int_names.contains(*n)) {
                    s.danger = Some(Danger::IntegerVariable(n.clone()));
                }
            }
        }
        sites.sort_by_key(|s| s.start);
        Analysis {
            sites,
            heredocs,
            too_deep,
        }
    }

    /// Length of the identifier `[A-Za-z_][A-Za-z0-9_]*` at the start of `s`.
    pub(super) fn ident_len(s: &[u8]) -> Option<usize> {
        match s.first() {
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {}
            _ => return None,
        }
        Some(
            s.iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                .count(),
        )
    }

    /// A placeholder starting at `pos`, if any, and where it ends.
    pub(super) fn match_placeholder(
        buf: &[u8],
        pos: usize,
        end: usize,
    ) -> Option<(Placeholder, usize)> {
        let s = &buf[pos..end];
        if let Some(rest) = s.strip_prefix(b"${") {
            if let Some(n) = ident_len(rest) {
                if rest.get(n) == Some(&b'}') {
                    let name = String::from_utf8_lossy(&rest[..n]).into_owned();
                    return Some((
                        Placeholder::Var {
                            name,
                            next_gen: false,
                        },
                        pos + 2 + n + 1,
                    ));
                }
            }
            let (name, used) = secret_call(rest.strip_prefix(b"secrets.getValue(")?, b'}')?;
            return Some((Placeholder::Secret { name }, pos + 2 + 17 + used));
        }
        let rest = s.strip_prefix(b"<+")?;
        for prefix in [
            &b"secretManager.environmentVariables."[..],
            b"spec.environmentVariables.",
        ] {
            if let Some(r) = rest.strip_prefix(prefix) {
                let n = ident_len(r)?;
                if r.get(n) != Some(&b'>') {
                    return None;
                }
                let name = String::from_utf8_lossy(&r[..n]).into_owned();
                return Some((
                    Placeholder::Var {
                        name,
                        next_gen: true,
                    },
                    pos + 2 + prefix.len() + n + 1,
                ));
            }
        }
        let (name, used) = secret_call(rest.strip_prefix(b"secrets.getValue(")?, b'>')?;
        Some((Placeholder::Secret { name }, pos + 2 + 17 + used))
    }

    /// `"name")` + `close`, or with single quotes: the name and the bytes used.
    fn secret_call(s: &[u8], close: u8) -> Option<(String, usize)> {
        let q = *s.first()?;
        if q != b'"' && q != b'\'' {
            return None;
        }
        let n = s[1..].iter().position(|&c| c == q)?;
        let name = &s[1..1 + n];
        if name.is_empty()
            || name.len() > 256
            || name.iter().any(|&c| c < 0x20 || c == b'\\' || c == 0x7f)
        {
            return None;
        }
        if s.get(1 + n + 1) != Some(&b')') || s.get(1 + n + 2) != Some(&close) {
            return None;
        }
        let name = std::str::from_utf8(name).ok()?.to_owned();
        // Opening quote, name, closing quote, `)`, `close`.
        Some((name, n + 4))
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum CaseState {
        Subject,
        AwaitIn,
        Pattern,
        Body,
    }

    #[derive(Debug, Clone, Copy, Default)]
    struct Decl {
        int: bool,
        nameref: bool,
    }

    /// A command list: the script itself, `$(…)`, `(…)`, `<(…)`.
    #[derive(Debug, Clone)]
    struct CmdFrame {
        id: usize,
        closes_on_paren: bool,
        /// A command or process substitution, where bash reads here-documents differently.
        subst: bool,
        in_word: bool,
        word_start: usize,
        /// The next word would be a command name.
        cmd_pos: bool,
        /// After `time`, `command`, `builtin`: option words keep `cmd_pos`.
        opts: bool,
        /// The next word is a redirection target, which leaves `cmd_pos` alone.
        redirect_target: bool,
        /// After `function`: the next word is the name, then the body.
        function_name: bool,
        let_active: bool,
        decl: Option<Decl>,
        assign_target: Option<String>,
        cases: Vec<CaseState>,
        /// Set when what looked like arithmetic turned out to be a command list.
        tainted: Option<Danger>,
    }

    impl CmdFrame {
        fn new(id: usize, closes_on_paren: bool, subst: bool) -> Self {
            CmdFrame {
                id,
                closes_on_paren,
                subst,
                in_word: false,
                word_start: 0,
                cmd_pos: true,
                opts: false,
                redirect_target: false,
                function_name: false,
                let_active: false,
                decl: None,
                assign_target: None,
                cases: Vec::new(),
                tainted: None,
            }
        }

        fn start_word(&mut self, pos: usize) {
            if !self.in_word {
                self.in_word = true;
                self.word_start = pos;
            }
        }

        /// A command separator: the next word is a command name again.
        fn separate(&mut self) {
            self.cmd_pos = true;
            self.opts = false;
            self.redirect_target = false;
            self.function_name = false;
            self.let_active = false;
            self.decl = None;
        }
    }

    /// `[[ … ]]`.
    #[derive(Debug, Clone)]
    struct CondFrame {
        id: usize,
        in_word: bool,
        word_start: usize,
        /// Sites in the current and previous word, for `-eq`-style operands.
        cur: Vec<usize>,
        prev: Vec<usize>,
        /// What the next word is an operand of, when that is dangerous.
        operand_next: Option<Danger>,
        regex_next: bool,
        regex_word: bool,
        regex_depth: usize,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum WordKind {
        Default,
        Pattern,
        Substring,
    }

    #[derive(Debug, Clone)]
    enum Frame {
        Cmd(CmdFrame),
        Cond(CondFrame),
        /// `name=( … )`.
        ArrayAssign {
            id: usize,
            target: String,
            in_word: bool,
        },
        /// `@( … )` and the parentheses of `f()`.
        ExtGlob {
            depth: usize,
        },
        Dq,
        /// `${ … }`: `word` is `None` while the operator is still to come.
        Param {
            dq: bool,
            word: Option<WordKind>,
        },
        Arith {
            kind: Danger,
            double_paren: bool,
            depth: usize,
            bdepth: usize,
            /// How to re-lex from the `((` if it turns out to be a command list.
            undo: Option<Box<Undo>>,
        },
        Subscript {
            depth: usize,
        },
        HeredocBody,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Tag {
        Cmd,
        Cond,
        ArrayAssign,
        ExtGlob,
        Dq,
        Param,
        Arith,
        Subscript,
        HeredocBody,
    }

    impl Frame {
        fn tag(&self) -> Tag {
            match self {
                Frame::Cmd(_) => Tag::Cmd,
                Frame::Cond(_) => Tag::Cond,
                Frame::ArrayAssign { .. } => Tag::ArrayAssign,
                Frame::ExtGlob { .. } => Tag::ExtGlob,
                Frame::Dq => Tag::Dq,
                Frame::Param { .. } => Tag::Param,
                Frame::Arith { .. } => Tag::Arith,
                Frame::Subscript { .. } => Tag::Subscript,
                Frame::HeredocBody => Tag::HeredocBody,
            }
        }

        /// Whether `${…}` opened here behaves as inside double quotes.
        fn dq_like(&self) -> bool {
            match self {
                Frame::Dq | Frame::HeredocBody | Frame::Arith { .. } | Frame::Subscript { .. } => {
                    true
                }
                Frame::Param { dq, .. } => *dq,
                _ => false,
            }
        }

        fn danger(&self) -> Option<Danger> {
            match self {
                Frame::Arith { kind, .. } => Some(kind.clone()),
                Frame::Subscript { .. } => Some(Danger::Subscript),
                Frame::Param {
                    word: Some(WordKind::Substring),
                    ..
                } => Some(Danger::Substring),
                Frame::Cmd(f) => {
                    if let Some(t) = &f.tainted {
                        Some(t.clone())
                    } else if f.let_active {
                        Some(Danger::Let)
                    } else {
                        match f.decl {
                            Some(Decl { int: true, .. }) => Some(Danger::IntegerDeclare),
                            Some(Decl { nameref: true, .. }) => Some(Danger::NameRef),
                            _ => None,
                        }
                    }
                }
                _ => None,
            }
        }
    }

    /// Lexer state at a `((` that was taken to open arithmetic.
    #[derive(Debug, Clone)]
    struct Undo {
        /// Where the `$((` or `((` starts.
        pos: usize,
        stack: Vec<Frame>,
        pend: Vec<Pending>,
        sites: usize,
        heredocs: usize,
    }

    /// A here-document whose body starts after the next newline token.
    #[derive(Debug, Clone)]
    struct Pending {
        delim: Vec<u8>,
        quoted: bool,
        strip_tabs: bool,
        frame_id: usize,
        /// Index into `heredocs` for quoted ones.
        index: Option<usize>,
        in_subst: bool,
    }

    struct Lexer<'a> {
        buf: &'a [u8],
        sites: Vec<Site>,
        heredocs: Vec<Heredoc>,
        int_names: BTreeSet<String>,
        in_backticks: bool,
        /// Here-documents waiting for the next newline token in the current run.
        pend: Vec<Pending>,
        /// Positions of `((` found to open a command list, not arithmetic.
        not_arith: HashSet<usize>,
        /// Re-lexing left before `((` decisions become conservative.
        relex_budget: usize,
        /// Frames held by enclosing runs and lexers.
        depth: usize,
        /// Steps left. Every step advances or changes frames, and re-lexing is bounded,
        /// so running out means a bug: refuse rather than hang.
        fuel: usize,
        next_id: usize,
        too_deep: bool,
    }

    const ARITH_OPS: [&[u8]; 6] = [b"-eq", b"-ne", b"-lt", b"-le", b"-gt", b"-ge"];
    /// Words after which a command name follows, wherever they appear.
    const OPENERS: [&[u8]; 10] = [
        b"{", b"then", b"do", b"else", b"elif", b"if", b"while", b"until", b"!", b"coproc",
    ];

    fn is_blank(c: u8) -> bool {
        c == b' ' || c == b'\t'
    }

    /// The word with `\`, `'` and `"` quoting removed, if it has no expansions: how bash
    /// finds a builtin's name (`"let"` and `l\et` still run `let`).
    fn unquote(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
        if raw.iter().any(|&c| c == b'$' || c == b'`') {
            return None;
        }
        if !raw.iter().any(|&c| c == b'\\' || c == b'\'' || c == b'"') {
            return Some(Cow::Borrowed(raw));
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            match raw[i] {
                b'\\' => {
                    if let Some(&c) = raw.get(i + 1) {
                        out.push(c);
                    }
                    i += 2;
                }
                b'\'' | b'"' => i += 1,
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        Some(Cow::Owned(out))
    }

    /// Whether a word directly before `<` or `>` is a file descriptor (`2>`, `{fd}>`).
    fn is_io_number(w: &[u8]) -> bool {
        (!w.is_empty() && w.iter().all(u8::is_ascii_digit))
            || w.strip_prefix(b"{")
                .and_then(|r| r.strip_suffix(b"}"))
                .is_some_and(|n| ident_len(n) == Some(n.len()))
    }

    /// The word without backslash-newline pairs, which bash removes before it reads words
    /// (`le\⏎t` is `let`).
    fn without_continuations(raw: &[u8]) -> Cow<'_, [u8]> {
        if !raw.windows(2).any(|w| w == b"\\\n") {
            return Cow::Borrowed(raw);
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            match (raw[i], raw.get(i + 1)) {
                (b'\\', Some(b'\n')) => i += 2,
                (b'\\', Some(&c)) => {
                    out.extend_from_slice(&[b'\\', c]);
                    i += 2;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        Cow::Owned(out)
    }

    /// The variable an assignment word prefix (`name=`, `name+=`, `name[…]=`, without the
    /// `=`) assigns to.
    fn assign_name(prefix: &[u8]) -> Option<String> {
        let n = ident_len(prefix)?;
        let rest = &prefix[n..];
        let rest = rest.strip_suffix(b"+").unwrap_or(rest);
        if rest.is_empty() || (rest.starts_with(b"[") && rest.ends_with(b"]")) {
            Some(String::from_utf8_lossy(&prefix[..n]).into_owned())
        } else {
            None
        }
    }

    fn line_end(b: &[u8], from: usize, end: usize) -> usize {
        b[from..end]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(end, |p| from + p)
    }

    /// Where a here-document body ends.
    struct Terminator {
        /// End of the body (start of the terminating line).
        body_end: usize,
        /// Where lexing resumes; `None` if the body runs to the end.
        resume: Option<usize>,
        /// Ended by bash 5.2's rule inside `$(…)`: a line starting with the delimiter and
        /// containing `)` ends the body, and parsing resumes after the delimiter.
        early: bool,
    }

    /// Find the end of a here-document body starting at `start`.
    fn find_terminator(
        b: &[u8],
        start: usize,
        end: usize,
        delim: &[u8],
        strip_tabs: bool,
        quoted: bool,
        in_subst: bool,
    ) -> Terminator {
        let mut ls = start;
        while ls < end {
            let line_start = ls;
            let mut le = line_end(b, ls, end);
            let mut first = ls;
            if strip_tabs {
                while first < le && b[first] == b'\t' {
                    first += 1;
                }
            }
            let mut cand: Cow<[u8]> = Cow::Borrowed(&b[first..le]);
            if !quoted {
                // Unquoted bodies join backslash-newline before looking for the delimiter.
                while le < end
                    && b[ls..le].iter().rev().take_while(|&&c| c == b'\\').count() % 2 == 1
                {
                    let next_end = line_end(b, le + 1, end);
                    let joined = cand.to_mut();
                    joined.pop();
                    joined.extend_from_slice(&b[le + 1..next_end]);
                    ls = le + 1;
                    le = next_end;
                }
            }
            if cand.as_ref() == delim {
                return Terminator {
                    body_end: line_start,
                    resume: Some((le + 1).min(end)),
                    early: false,
                };
            }
            if in_subst
                && matches!(cand, Cow::Borrowed(_))
                && cand.starts_with(delim)
                && cand[delim.len()..].contains(&b')')
            {
                let resume = Some(first + delim.len());
                return Terminator {
                    body_end: line_start,
                    resume,
                    early: true,
                };
            }
            ls = le + 1;
        }
        Terminator {
            body_end: end,
            resume: None,
            early: false,
        }
    }

    impl<'a> Lexer<'a> {
        fn new(buf: &'a [u8], in_backticks: bool, depth: usize) -> Self {
            Lexer {
                buf,
                sites: Vec::new(),
                heredocs: Vec::new(),
                int_names: BTreeSet::new(),
                in_backticks,
                pend: Vec::new(),
                not_arith: HashSet::new(),
                relex_budget: MAX_RELEX,
                depth,
                fuel: (MAX_RELEX + 2) * 4 * buf.len() + 64,
                next_id: 0,
                too_deep: false,
            }
        }

        fn fresh_id(&mut self) -> usize {
            self.next_id += 1;
            self.next_id
        }

        fn at(&self, i: usize, end: usize) -> Option<u8> {
            if i < end {
                Some(self.buf[i])
            } else {
                None
            }
        }

        /// Lex `start..end` with `root` as the outermost frame; returns where it stopped.
        fn run(&mut self, start: usize, end: usize, root: Frame) -> usize {
            let mut st = vec![root];
            // Here-documents pending in an enclosing run are not this region's.
            let outer_pending = std::mem::take(&mut self.pend);
            let mut pos = start;
            while pos < end && !self.too_deep {
                if st.len() + self.depth > MAX_DEPTH || self.fuel == 0 {
                    self.too_deep = true;
                    break;
                }
                self.fuel -= 1;
                let tag = st.last().map(Frame::tag).unwrap_or(Tag::HeredocBody);
                pos = match tag {
                    Tag::Cmd => self.step_cmd(&mut st, pos, end),
                    Tag::Cond => self.step_cond(&mut st, pos, end),
                    Tag::ArrayAssign => self.step_array(&mut st, pos, end),
                    Tag::ExtGlob => self.step_extglob(&mut st, pos, end),
                    Tag::Dq => self.step_dq(&mut st, pos, end),
                    Tag::Param => self.step_param(&mut st, pos, end),
                    Tag::Arith => self.step_arith(&mut st, pos, end),
                    Tag::Subscript => self.step_subscript(&mut st, pos, end),
                    Tag::HeredocBody => self.step_heredoc_body(&mut st, pos, end),
                };
            }
            // The last word of the region ends here too (`declare -i q` at end of script).
            if matches!(st.last(), Some(Frame::Cmd(f)) if f.in_word) && !self.too_deep {
                self.cmd_end_word(&mut st, end);
            }
            self.pend = outer_pending;
            pos.min(end)
        }

        /// Record a site found directly in the current frame.
        fn add_site(
            &mut self,
            st: &mut [Frame],
            start: usize,
            end: usize,
            placeholder: Placeholder,
            ctx: Ctx,
        ) {
            let first = self.sites.len();
            self.sites.push(Site {
                start,
                end,
                placeholder,
                ctx,
                danger: None,
                assign: Vec::new(),
            });
            self.absorb(st, first);
        }

        /// Apply what the enclosing frames imply to sites `first..`.
        fn absorb(&mut self, st: &mut [Frame], first: usize) {
            if first == self.sites.len() {
                return;
            }
            let danger = st.iter().rev().find_map(Frame::danger);
            let targets: Vec<String> = st
                .iter()
                .filter_map(|f| match f {
                    Frame::Cmd(c) => c.assign_target.clone(),
                    Frame::ArrayAssign { target, .. } => Some(target.clone()),
                    _ => None,
                })
                .collect();
            for i in first..self.sites.len() {
                let s = &mut self.sites[i];
                if s.danger.is_none() {
                    s.danger = danger.clone();
                }
                s.assign.extend(targets.iter().cloned());
                for f in st.iter_mut() {
                    if let Frame::Cond(c) = f {
                        c.cur.push(i);
                    }
                }
            }
        }

        /// At `$` or `<`: a placeholder? Records it and returns its end.
        fn try_site(
            &mut self,
            st: &mut [Frame],
            pos: usize,
            end: usize,
            ctx: Ctx,
        ) -> Option<usize> {
            let (p, e) = match_placeholder(self.buf, pos, end)?;
            self.add_site(st, pos, e, p, ctx);
            Some(e)
        }

        fn skip_comment(&self, pos: usize, end: usize) -> usize {
            line_end(self.buf, pos, end)
        }

        /// `'…'` starting at `pos`; returns the position after the closing quote.
        fn scan_sq(&mut self, st: &mut [Frame], pos: usize, end: usize) -> usize {
            let mut i = pos + 1;
            while i < end {
                match self.buf[i] {
                    b'\'' => return i + 1,
                    b'$' | b'<' => {
                        if let Some(e) = self.try_site(st, i, end, Ctx::SingleQuoted) {
                            i = e;
                            continue;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            end
        }

        /// `$'…'` whose `$` is at `pos`.
        fn scan_ansi(&mut self, st: &mut [Frame], pos: usize, end: usize) -> usize {
            let mut i = pos + 2;
            while i < end {
                match self.buf[i] {
                    b'\\' => i += 1,
                    b'\'' => return i + 1,
                    b'$' | b'<' => {
                        if let Some(e) = self.try_site(st, i, end, Ctx::AnsiC) {
                            i = e;
                            continue;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            end
        }

        /// A `$` at `pos` in a context whose direct placeholders get `ctx`.
        fn dollar(
            &mut self,
            st: &mut Vec<Frame>,
            pos: usize,
            end: usize,
            ctx: Ctx,
            ansi: bool,
        ) -> usize {
            if let Some(e) = self.try_site(st, pos, end, ctx) {
                return e;
            }
            match self.at(pos + 1, end) {
                Some(b'{') => self.open_param(st, pos, end),
                Some(b'(') => {
                    if self.at(pos + 2, end) == Some(b'(') && !self.not_arith.contains(&pos) {
                        self.open_dparen(st, pos, Danger::ArithExpansion);
                        pos + 3
                    } else {
                        let id = self.fresh_id();
                        st.push(Frame::Cmd(CmdFrame::new(id, true, true)));
                        pos + 2
                    }
                }
                Some(b'[') => {
                    st.push(Frame::Arith {
                        kind: Danger::OldArith,
                        double_paren: false,
                        depth: 0,
                        bdepth: 0,
                        undo: None,
                    });
                    pos + 2
                }
                Some(b'\'') if ansi => self.scan_ansi(st, pos, end),
                Some(b'"') if ansi => {
                    st.push(Frame::Dq);
                    pos + 2
                }
                Some(b'$') => pos + 2,
                _ => pos + 1,
            }
        }

        /// `$((` or `((` at `pos`: lex it as arithmetic, remembering how to re-lex it as a
        /// command list should its first `(` close alone (bash makes the same choice).
        fn open_dparen(&mut self, st: &mut Vec<Frame>, pos: usize, kind: Danger) {
            let undo = (self.relex_budget > 0).then(|| {
                Box::new(Undo {
                    pos,
                    stack: st.clone(),
                    pend: self.pend.clone(),
                    sites: self.sites.len(),
                    heredocs: self.heredocs.len(),
                })
            });
            st.push(Frame::Arith {
                kind,
                double_paren: true,
                depth: 0,
                bdepth: 0,
                undo,
            });
        }

        /// `${` at `pos`: skip the parameter name, then expect an operator.
        fn open_param(&mut self, st: &mut Vec<Frame>, pos: usize, end: usize) -> usize {
            let dq = st.last().is_some_and(Frame::dq_like);
            let mut p = pos + 2;
            if matches!(self.at(p, end), Some(b'#' | b'!')) && self.at(p + 1, end) != Some(b'}') {
                p += 1;
            }
            let rest = &self.buf[p.min(end)..end];
            if let Some(n) = ident_len(rest) {
                p += n;
            } else if rest.first().is_some_and(u8::is_ascii_digit) {
                p += rest.iter().take_while(|c| c.is_ascii_digit()).count();
            } else if matches!(
                rest.first(),
                Some(b'@' | b'*' | b'#' | b'?' | b'$' | b'!' | b'-')
            ) {
                p += 1;
            }
            st.push(Frame::Param { dq, word: None });
            if self.at(p, end) == Some(b'[') {
                st.push(Frame::Subscript { depth: 0 });
                return p + 1;
            }
            p
        }

        /// A backquoted command substitution at `pos`: its text, with bash's backslash
        /// removal, is lexed as a fresh script and the sites mapped back.
        fn backtick(&mut self, st: &mut [Frame], pos: usize, end: usize, dq: bool) -> usize {
            let b = self.buf;
            let mut i = pos + 1;
            while i < end && b[i] != b'`' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            let close = i.min(end);
            let mut text = Vec::with_capacity(close - pos);
            let mut map = Vec::with_capacity(close - pos + 1);
            let mut j = pos + 1;
            while j < close {
                if b[j] == b'\\'
                    && j + 1 < close
                    && (matches!(b[j + 1], b'$' | b'`' | b'\\') || dq && b[j + 1] == b'"')
                {
                    map.push(j);
                    text.push(b[j + 1]);
                    j += 2;
                } else {
                    map.push(j);
                    text.push(b[j]);
                    j += 1;
                }
            }
            map.push(close);
            let mut sub = Lexer::new(&text, true, self.depth + st.len() + 1);
            let root = Frame::Cmd(CmdFrame::new(0, false, false));
            sub.run(0, text.len(), root);
            let Lexer {
                sites,
                heredocs,
                int_names,
                too_deep,
                ..
            } = sub;
            self.too_deep |= too_deep;
            let offset = self.heredocs.len();
            self.heredocs.extend(heredocs.into_iter().map(|mut h| {
                h.body = (0, 0);
                h.problem = Some(HeredocProblem::InBackquotes);
                h
            }));
            self.int_names.extend(int_names);
            let first = self.sites.len();
            for mut s in sites {
                s.start = map[s.start];
                s.end = map[s.end];
                if let Ctx::QuotedHeredoc(h) = s.ctx {
                    s.ctx = Ctx::QuotedHeredoc(h + offset);
                }
                self.sites.push(s);
            }
            self.absorb(st, first);
            (close + 1).min(end)
        }

        fn cmd(st: &mut [Frame]) -> &mut CmdFrame {
            match st.last_mut() {
                Some(Frame::Cmd(f)) => f,
                _ => unreachable!("step_cmd runs with a Cmd frame on top"),
            }
        }

        /// The end of a word in a command list: keywords, assignments, `case` progress.
        fn cmd_end_word(&mut self, st: &mut Vec<Frame>, pos: usize) {
            let b = self.buf;
            let f = Self::cmd(st);
            if !f.in_word {
                return;
            }
            f.in_word = false;
            let raw = &*without_continuations(&b[f.word_start..pos]);
            let was_assign = f.assign_target.take().is_some();
            if std::mem::take(&mut f.redirect_target) {
                return;
            }
            if std::mem::take(&mut f.function_name) {
                f.cmd_pos = true;
                return;
            }
            if let Some(cs) = f.cases.last_mut() {
                match *cs {
                    CaseState::Subject => {
                        *cs = CaseState::AwaitIn;
                        return;
                    }
                    CaseState::AwaitIn => {
                        *cs = CaseState::Pattern;
                        return;
                    }
                    CaseState::Pattern => {
                        if raw == b"esac" {
                            f.cases.pop();
                            f.cmd_pos = false;
                        }
                        return;
                    }
                    CaseState::Body => {
                        if f.cmd_pos && raw == b"esac" {
                            f.cases.pop();
                            f.cmd_pos = false;
                            return;
                        }
                    }
                }
            }
            if OPENERS.contains(&raw) {
                f.cmd_pos = true;
                f.opts = false;
                return;
            }
            if f.cmd_pos {
                if was_assign || (f.opts && raw.starts_with(b"-")) {
                    return;
                }
                f.opts = false;
                f.cmd_pos = false;
                if raw == b"[[" {
                    let id = self.fresh_id();
                    st.push(Frame::Cond(CondFrame {
                        id,
                        in_word: false,
                        word_start: 0,
                        cur: Vec::new(),
                        prev: Vec::new(),
                        operand_next: None,
                        regex_next: false,
                        regex_word: false,
                        regex_depth: 0,
                    }));
                    return;
                }
                if raw == b"case" {
                    f.cases.push(CaseState::Subject);
                    return;
                }
                if raw == b"function" {
                    f.function_name = true;
                    return;
                }
                // `f()`: the body, a compound command such as `[[ … ]]`, comes next.
                if raw.ends_with(b"()") {
                    f.cmd_pos = true;
                    return;
                }
                match unquote(raw).as_deref() {
                    Some(b"let") => f.let_active = true,
                    Some(b"declare" | b"typeset" | b"local") => f.decl = Some(Decl::default()),
                    Some(b"time" | b"command" | b"builtin") => {
                        f.cmd_pos = true;
                        f.opts = true;
                    }
                    _ => {}
                }
            } else if let Some(d) = f.decl.as_mut() {
                if raw.starts_with(b"-") || raw.starts_with(b"+") {
                    d.int |= raw.contains(&b'i');
                    d.nameref |= raw.contains(&b'n');
                } else if d.int {
                    if let Some(n) = ident_len(raw) {
                        self.int_names
                            .insert(String::from_utf8_lossy(&raw[..n]).into_owned());
                    }
                }
            }
        }

        fn step_cmd(&mut self, st: &mut Vec<Frame>, pos: usize, end: usize) -> usize {
            let b = self.buf;
            let c = b[pos];
            let next = self.at(pos + 1, end);
            let in_word = Self::cmd(st).in_word;
            match c {
                b' ' | b'\t' => {
                    self.cmd_end_word(st, pos);
                    pos + 1
                }
                b'\n' => {
                    self.cmd_end_word(st, pos);
                    if let Some(Frame::Cmd(f)) = st.last_mut() {
                        f.separate();
                    }
                    self.newline_token(st, pos + 1, end)
                }
                b';' | b'&' | b'|' => {
                    self.cmd_end_word(st, pos);
                    let Some(Frame::Cmd(f)) = st.last_mut() else {
                        return pos + 1;
                    };
                    let in_pattern = f.cases.last() == Some(&CaseState::Pattern);
                    let n = match (c, next) {
                        (b'|', _) if in_pattern => return pos + 1,
                        (b'&', Some(b'>')) => return pos + 1,
                        (b';', Some(b';')) => {
                            if self.at(pos + 2, end) == Some(b'&') {
                                3
                            } else {
                                2
                            }
                        }
                        (b';', Some(b'&')) => 2,
                        (b'&', Some(b'&')) | (b'|', Some(b'|' | b'&')) => 2,
                        _ => 1,
                    };
                    if c == b';' && n > 1 {
                        if let Some(cs) = f.cases.last_mut() {
                            if *cs == CaseState::Body {
                                *cs = CaseState::Pattern;
                            }
                        }
                    }
                    f.separate();
                    pos + n
                }
                b'(' => {
                    let f = Self::cmd(st);
                    if f.in_word {
                        let word = &b[f.word_start..pos];
                        if let Some(target) = word.strip_suffix(b"=").and_then(assign_name) {
                            let id = self.fresh_id();
                            st.push(Frame::ArrayAssign {
                                id,
                                target,
                                in_word: false,
                            });
                        } else {
                            st.push(Frame::ExtGlob { depth: 0 });
                        }
                        return pos + 1;
                    }
                    if next == Some(b'(') && !self.not_arith.contains(&pos) {
                        f.cmd_pos = false;
                        self.open_dparen(st, pos, Danger::ArithCommand);
                        return pos + 2;
                    }
                    if f.cases.last() == Some(&CaseState::Pattern) {
                        return pos + 1;
                    }
                    f.cmd_pos = false;
                    let id = self.fresh_id();
                    st.push(Frame::Cmd(CmdFrame::new(id, true, false)));
                    pos + 1
                }
                b')' => {
                    self.cmd_end_word(st, pos);
                    let f = Self::cmd(st);
                    if let Some(cs @ CaseState::Pattern) = f.cases.last_mut() {
                        *cs = CaseState::Body;
                        f.separate();
                    } else if f.closes_on_paren && st.len() > 1 {
                        st.pop();
                    }
                    pos + 1
                }
                b'<' | b'>' => {
                    if c == b'<' {
                        if let Some(e) = self.try_site_word(st, pos, end) {
                            return e;
                        }
                    }
                    // `2>`, `{fd}<`: the word before is part of the redirection.
                    let f = Self::cmd(st);
                    if f.in_word && is_io_number(&b[f.word_start..pos]) {
                        f.in_word = false;
                        f.assign_target = None;
                    } else {
                        self.cmd_end_word(st, pos);
                        if !matches!(st.last(), Some(Frame::Cmd(_))) {
                            return pos;
                        }
                    }
                    let (n, target) = match (c, next) {
                        (b'<', Some(b'<')) if self.at(pos + 2, end) == Some(b'<') => (3, true),
                        (b'<', Some(b'<')) => return self.heredoc_op(st, pos + 2, end),
                        (_, Some(b'(')) => {
                            let id = self.fresh_id();
                            st.push(Frame::Cmd(CmdFrame::new(id, true, true)));
                            return pos + 2;
                        }
                        (b'<', Some(b'&' | b'>')) | (b'>', Some(b'&' | b'|' | b'>')) => (2, true),
                        _ => (1, true),
                    };
                    Self::cmd(st).redirect_target = target;
                    pos + n
                }
                b'#' if !in_word => self.skip_comment(pos, end),
                _ => {
                    let f = Self::cmd(st);
                    f.start_word(pos);
                    match c {
                        b'\\' => pos + 2,
                        b'\'' => self.scan_sq(st, pos, end),
                        b'"' => {
                            st.push(Frame::Dq);
                            pos + 1
                        }
                        b'`' => self.backtick(st, pos, end, false),
                        b'$' => self.dollar(st, pos, end, Ctx::Unquoted, true),
                        b'[' if ident_len(&b[f.word_start..pos]) == Some(pos - f.word_start) => {
                            st.push(Frame::Subscript { depth: 0 });
                            pos + 1
                        }
                        b'=' => {
                            if f.assign_target.is_none() {
                                f.assign_target = assign_name(&b[f.word_start..pos]);
                            }
                            pos + 1
                        }
                        _ => pos + 1,
                    }
                }
            }
        }

        /// A `<+…>` placeholder inside a command word.
        fn try_site_word(&mut self, st: &mut [Frame], pos: usize, end: usize) -> Option<usize> {
            let (p, e) = match_placeholder(self.buf, pos, end)?;
            match st.last_mut() {
                Some(Frame::Cmd(f)) => f.start_word(pos),
                Some(Frame::Cond(f)) if !f.in_word => {
                    f.in_word = true;
                    f.word_start = pos;
                }
                Some(Frame::ArrayAssign { in_word, .. }) => *in_word = true,
                _ => {}
            }
            self.add_site(st, pos, e, p, Ctx::Unquoted);
            Some(e)
        }

        /// After a newline token at `pos - 1`: read pending here-document bodies.
        fn newline_token(&mut self, st: &mut [Frame], pos: usize, end: usize) -> usize {
            if self.pend.is_empty() {
                return pos;
            }
            let here = match st.last() {
                Some(Frame::Cmd(f)) => f.id,
                Some(Frame::Cond(f)) => f.id,
                Some(Frame::ArrayAssign { id, .. }) => *id,
                _ => 0,
            };
            let mut p = pos;
            for h in std::mem::take(&mut self.pend) {
                let Terminator {
                    body_end,
                    resume: after,
                    early,
                } = find_terminator(
                    self.buf,
                    p,
                    end,
                    &h.delim,
                    h.strip_tabs,
                    h.quoted,
                    h.in_subst,
                );
                if let Some(idx) = h.index {
                    let problem = if self.in_backticks {
                        Some(HeredocProblem::InBackquotes)
                    } else if after.is_none() {
                        Some(HeredocProblem::Unterminated)
                    } else if early {
                        Some(HeredocProblem::EndsEarly)
                    } else if h.frame_id != here {
                        Some(HeredocProblem::Detached)
                    } else {
                        self.heredocs[idx]
                            .problem
                            .filter(|&q| q == HeredocProblem::UnusualDelimiter)
                    };
                    let hd = &mut self.heredocs[idx];
                    hd.body = (p, body_end);
                    hd.in_subst = h.in_subst;
                    hd.problem = problem;
                    let mut i = p;
                    while i < body_end {
                        if matches!(self.buf[i], b'$' | b'<') {
                            if let Some(e) = self.try_site(st, i, body_end, Ctx::QuotedHeredoc(idx))
                            {
                                i = e;
                                continue;
                            }
                        }
                        i += 1;
                    }
                } else {
                    let first = self.sites.len();
                    self.depth += st.len();
                    self.run(p, body_end, Frame::HeredocBody);
                    self.depth -= st.len();
                    self.absorb(st, first);
                }
                p = after.unwrap_or(body_end);
            }
            p
        }

        /// `<<` or `<<-` whose operand starts at `pos`: parse the delimiter word.
        fn heredoc_op(&mut self, st: &mut [Frame], pos: usize, end: usize) -> usize {
            let b = self.buf;
            let mut p = pos;
            let strip_tabs = self.at(p, end) == Some(b'-');
            if strip_tabs {
                p += 1;
            }
            while p < end && is_blank(b[p]) {
                p += 1;
            }
            let mut delim = Vec::new();
            let mut quoted = false;
            let mut unusual = false;
            while p < end {
                let c = b[p];
                if matches!(
                    c,
                    b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'<' | b'>'
                ) {
                    break;
                }
                match c {
                    b'\'' | b'"' => {
                        quoted = true;
                        p += 1;
                        while p < end && b[p] != c {
                            if c == b'"'
                                && b[p] == b'\\'
                                && p + 1 < end
                                && matches!(b[p + 1], b'$' | b'`' | b'"' | b'\\' | b'\n')
                            {
                                delim.push(b[p + 1]);
                                p += 2;
                                continue;
                            }
                            if let Some(e) = self.try_site(st, p, end, Ctx::HeredocDelimiter) {
                                delim.extend_from_slice(&b[p..e]);
                                p = e;
                                continue;
                            }
                            delim.push(b[p]);
                            p += 1;
                        }
                        p += 1;
                    }
                    b'\\' => {
                        quoted = true;
                        if p + 1 < end {
                            delim.push(b[p + 1]);
                        }
                        p += 2;
                    }
                    b'$' => {
                        if let Some(e) = self.try_site(st, p, end, Ctx::HeredocDelimiter) {
                            delim.extend_from_slice(&b[p..e]);
                            p = e;
                        } else if matches!(self.at(p + 1, end), Some(b'\'' | b'"')) {
                            unusual = true;
                            p += 1;
                        } else {
                            delim.push(c);
                            p += 1;
                        }
                    }
                    _ => {
                        unusual |= c == b'`';
                        delim.push(c);
                        p += 1;
                    }
                }
            }
            if delim.is_empty() && !quoted {
                return p.min(end);
            }
            let in_subst = st.iter().any(|f| matches!(f, Frame::Cmd(c) if c.subst));
            let index = quoted.then(|| {
                self.heredocs.push(Heredoc {
                    body: (0, 0),
                    delim: delim.clone(),
                    strip_tabs,
                    in_subst,
                    problem: Some(if unusual {
                        HeredocProblem::UnusualDelimiter
                    } else {
                        HeredocProblem::Unterminated
                    }),
                });
                self.heredocs.len() - 1
            });
            let frame_id = match st.last() {
                Some(Frame::Cmd(f)) => f.id,
                _ => usize::MAX,
            };
            self.pend.push(Pending {
                delim,
                quoted,
                strip_tabs,
                frame_id,
                index,
                in_subst,
            });
            p.min(end)
        }

        fn cond(st: &mut [Frame]) -> &mut CondFrame {
            match st.last_mut() {
                Some(Frame::Cond(f)) => f,
                _ => unreachable!("step_cond runs with a Cond frame on top"),
            }
        }

        /// End of a word inside `[[ … ]]`; returns whether it was `]]` (frame popped).
        fn cond_end_word(&mut self, st: &mut Vec<Frame>, pos: usize) -> bool {
            let b = self.buf;
            let f = Self::cond(st);
            if !f.in_word {
                return false;
            }
            f.in_word = false;
            let was_regex = std::mem::replace(&mut f.regex_word, false);
            let raw = &*without_continuations(&b[f.word_start..pos]);
            if !was_regex && raw == b"]]" {
                st.pop();
                return true;
            }
            let mark = |sites: &mut Vec<Site>, list: &[usize], d: &Danger| {
                for &i in list {
                    if sites[i].danger.is_none() {
                        sites[i].danger = Some(d.clone());
                    }
                }
            };
            if !was_regex && ARITH_OPS.contains(&raw) {
                mark(&mut self.sites, &f.prev, &Danger::CondOperand);
                f.prev.clear();
                f.cur.clear();
                f.operand_next = Some(Danger::CondOperand);
            } else if !was_regex && (raw == b"-v" || raw == b"-R") {
                // The operand names a variable; a subscript in it is evaluated.
                f.cur.clear();
                f.operand_next = Some(Danger::CondName);
            } else {
                if let Some(d) = f.operand_next.take() {
                    mark(&mut self.sites, &f.cur, &d);
                }
                f.prev = std::mem::take(&mut f.cur);
            }
            if raw == b"=~" {
                f.regex_next = true;
            }
            false
        }

        fn step_cond(&mut self, st: &mut Vec<Frame>, pos: usize, end: usize) -> usize {
            let c = self.buf[pos];
            let next = self.at(pos + 1, end);
            let f = Self::cond(st);
            if !f.in_word && f.regex_next && !matches!(c, b' ' | b'\t' | b'\n') {
                f.regex_next = false;
                f.regex_word = true;
                f.regex_depth = 0;
                f.in_word = true;
                f.word_start = pos;
            }
            if f.regex_word {
                // In the regex after =~, parentheses and `|` belong to the word.
                match c {
                    b'(' => {
                        f.regex_depth += 1;
                        return pos + 1;
                    }
                    b')' if f.regex_depth > 0 => {
                        f.regex_depth -= 1;
                        return pos + 1;
                    }
                    b'|' => return pos + 1,
                    b' ' | b'\t' if f.regex_depth > 0 => return pos + 1,
                    _ => {}
                }
            }
            match c {
                b' ' | b'\t' => {
                    self.cond_end_word(st, pos);
                    pos + 1
                }
                b'\n' => {
                    if self.cond_end_word(st, pos) {
                        return pos;
                    }
                    self.newline_token(st, pos + 1, end)
                }
                b'&' | b'|' | b';' | b'(' | b')' | b'<' | b'>' => {
                    if c == b'<' {
                        if let Some(e) = self.try_site_word(st, pos, end) {
                            return e;
                        }
                    }
                    if c == b'(' && Self::cond(st).in_word {
                        st.push(Frame::ExtGlob { depth: 0 });
                        return pos + 1;
                    }
                    if self.cond_end_word(st, pos) {
                        return pos;
                    }
                    Self::cond(st).prev.clear();
                    if (c == b'&' || c == b'|') && next == Some(c) {
                        pos + 2
                    } else {
                        pos + 1
                    }
                }
                b'#' if !f.in_word => self.skip_comment(pos, end),
                _ => {
                    if !f.in_word {
                        f.in_word = true;
                        f.word_start = pos;
                    }
                    self.word_char(st, pos, end, Ctx::Unquoted, false)
                }
            }
        }

        /// Quotes, escapes and expansions shared by word-like contexts; plain bytes advance.
        fn word_char(
            &mut self,
            st: &mut Vec<Frame>,
            pos: usize,
            end: usize,
            ctx: Ctx,
            dq: bool,
        ) -> usize {
            match self.buf[pos] {
                b'\\' => pos + 2,
                b'\'' => self.scan_sq(st, pos, end),
                b'"' => {
                    st.push(Frame::Dq);
                    pos + 1
                }
                b'`' => self.backtick(st, pos, end, dq),
                b'$' => self.dollar(st, pos, end, ctx, true),
                b'<' => self.try_site(st, pos, end, ctx).unwrap_or(pos + 1),
                _ => pos + 1,
            }
        }

        fn step_array(&mut self, st: &mut Vec<Frame>, pos: usize, end: usize) -> usize {
            let c = self.buf[pos];
            let Some(Frame::ArrayAssign { in_word, .. }) = st.last_mut() else {
                return pos + 1;
            };
            match c {
                b' ' | b'\t' => {
                    *in_word = false;
                    pos + 1
                }
                b'\n' => {
                    *in_word = false;
                    self.newline_token(st, pos + 1, end)
                }
                b')' => {
                    st.pop();
                    pos + 1
                }
                b'#' if !*in_word => self.skip_comment(pos, end),
                b'[' if !*in_word => {
                    *in_word = true;
                    st.push(Frame::Subscript { depth: 0 });
                    pos + 1
                }
                b'<' | b'>' if self.at(pos + 1, end) == Some(b'(') => {
                    *in_word = true;
                    let id = self.fresh_id();
                    st.push(Frame::Cmd(CmdFrame::new(id, true, true)));
                    pos + 2
                }
                _ => {
                    *in_word = true;
                    self.word_char(st, pos, end, Ctx::Unquoted, false)
                }
            }
        }

        fn step_extglob(&mut self, st: &mut Vec<Frame>, pos: usize, end: usize) -> usize {
            let Some(Frame::ExtGlob { depth }) = st.last_mut() else {
                return pos + 1;
            };
            match self.buf[pos] {
                b'(' => {
                    *depth += 1;
                    pos + 1
                }
                b')' => {
                    if *depth == 0 {
                        st.pop();
                    } else {
                        *depth -= 1;
                    }
                    pos + 1
                }
                _ => self.word_char(st, pos, end, Ctx::Unquoted, false),
            }
        }

        fn step_dq(&mut self, st: &mut Vec<Frame>, pos: usize, end: usize) -> usize {
            match self.buf[pos] {
                b'"' => {
                    st.pop();
                    pos + 1
                }
                b'\\' => pos + 2,
                b'$' => self.dollar(st, pos, end, Ctx::DoubleQuoted, false),
                b'`' => self.backtick(st, pos, end, true),
                b'<' => self
                    .try_site(st, pos, end, Ctx::DoubleQuoted)
                    .unwrap_or(pos + 1),
                _ => pos + 1,
            }
        }

        fn step_heredoc_body(&mut self, st: &mut Vec<Frame>, pos: usize, end: usize) -> usize {
            match self.buf[pos] {
                b'\\' if matches!(self.at(pos + 1, end), Some(b'$' | b'`' | b'\\' | b'\n')) => {
                    pos + 2
                }
                b'$' => self.dollar(st, pos, end, Ctx::DoubleQuoted, false),
                b'`' => self.backtick(st, pos, end, false),
                b'<' => self
                    .try_site(st, pos, end, Ctx::DoubleQuoted)
                    .unwrap_or(pos + 1),
                _ => pos + 1,
            }
        }

        fn step_param(&mut self, st: &mut Vec<Frame>, pos: usize, end: usize) -> usize {
            let c = self.buf[pos];
            let next = self.at(pos + 1, end);
            let Some(Frame::Param { dq, word }) = st.last_mut() else {
                return pos + 1;
            };
            let dq = *dq;
            let Some(kind) = *word else {
                let (kind, n) = match (c, next) {
                    (b'}', _) => {
                        st.pop();
                        return pos + 1;
                    }
                    (b':', Some(b'-' | b'=' | b'?' | b'+')) => (WordKind::Default, 2),
                    (b':', _) => (WordKind::Substring, 1),
                    (b'-' | b'=' | b'?' | b'+', _) => (WordKind::Default, 1),
                    (b'#', Some(b'#'))
                    | (b'%', Some(b'%'))
                    | (b'^', Some(b'^'))
                    | (b',', Some(b',')) => (WordKind::Pattern, 2),
                    (b'/', Some(b'/' | b'#' | b'%')) => (WordKind::Pattern, 2),
                    (b'#' | b'%' | b'^' | b',' | b'/', _) => (WordKind::Pattern, 1),
                    _ => (WordKind::Default, 0),
                };
                *word = Some(kind);
                return pos + n;
            };
            let ctx = if kind == WordKind::Substring {
                Ctx::Arith
            } else {
                Ctx::ParamWord
            };
            match c {
                b'}' => {
                    st.pop();
                    pos + 1
                }
                // Inside double quotes, `'` quotes only in pattern words (bash 5).
                b'\'' if dq && kind == WordKind::Default => pos + 1,
                _ => self.word_char(st, pos, end, ctx, dq),
            }
        }

        fn step_arith(&mut self, st: &mut Vec<Frame>, pos: usize, end: usize) -> usize {
            let c = self.buf[pos];
            let next = self.at(pos + 1, end);
            let Some(Frame::Arith {
                kind,
                double_paren,
                depth,
                bdepth,
                undo,
            }) = st.last_mut()
            else {
                return pos + 1;
            };
            match c {
                b'(' => {
                    *depth += 1;
                    pos + 1
                }
                b')' if *depth > 0 => {
                    *depth -= 1;
                    pos + 1
                }
                b')' if *double_paren => {
                    if next == Some(b')') {
                        st.pop();
                        pos + 2
                    } else if let Some(u) = undo.take() {
                        // `$((cmd) …)`: bash reads it again as `$( (cmd) …)`, and so do we.
                        let u = *u;
                        self.relex_budget = self.relex_budget.saturating_sub(1);
                        self.not_arith.insert(u.pos);
                        *st = u.stack;
                        self.pend = u.pend;
                        self.sites.truncate(u.sites);
                        self.heredocs.truncate(u.heredocs);
                        u.pos
                    } else {
                        // Out of re-lexing budget: a command list, treated as arithmetic.
                        let kind = kind.clone();
                        let id = self.fresh_id();
                        let mut f = CmdFrame::new(id, true, kind == Danger::ArithExpansion);
                        f.cmd_pos = false;
                        f.tainted = Some(kind);
                        if let Some(top) = st.last_mut() {
                            *top = Frame::Cmd(f);
                        }
                        pos + 1
                    }
                }
                b'[' if !*double_paren => {
                    *bdepth += 1;
                    pos + 1
                }
                b']' if !*double_paren => {
                    if *bdepth == 0 {
                        st.pop();
                    } else {
                        *bdepth -= 1;
                    }
                    pos + 1
                }
                _ => self.word_char(st, pos, end, Ctx::Arith, false),
            }
        }

        fn step_subscript(&mut self, st: &mut Vec<Frame>, pos: usize, end: usize) -> usize {
            let Some(Frame::Subscript { depth }) = st.last_mut() else {
                return pos + 1;
            };
            match self.buf[pos] {
                b'[' => {
                    *depth += 1;
                    pos + 1
                }
                b']' => {
                    if *depth == 0 {
                        st.pop();
                    } else {
                        *depth -= 1;
                    }
                    pos + 1
                }
                _ => self.word_char(st, pos, end, Ctx::Arith, false),
            }
        }
    }
}
