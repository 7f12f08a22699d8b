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
//! document; a leading UTF-8 byte-order mark is ignored. A plain script declares exactly the
//! variables it is given at render time.
//!
//! # Placeholders
//! See [`placeholder`]: `${name}`, `<+secretManager.environmentVariables.name>`,
//! `<+spec.environmentVariables.name>` and `${secrets.getValue("id")}`. `${name}` is a
//! placeholder only for declared (or, in a plain script, supplied) names; any other `${…}`
//! is bash's. A placeholder is recognised wherever bash reads the text, including inside
//! single quotes and quoted here-documents (Harness substitutes text there too), except in
//! comments and where a backslash escapes it.
//!
//! # How values stay data
//! A value never enters the script text. The rendered script starts with a preamble that
//! binds each used value once, single-quoted (`__csm_v0='it'\''s'`). Each placeholder becomes
//! a reference that yields exactly the value in its quoting context: `"${__csm_v0}"`
//! unquoted, `${__csm_v0}` inside double quotes and here-documents, `'"${__csm_v0}"'` inside
//! single quotes, `'"${__csm_v0}"$'` inside `$'…'`. A quoted here-document that holds a
//! placeholder is rewritten as an unquoted one whose own text is escaped (`\$`, `` \` ``,
//! `\\`), so even there the value is expanded, never pasted. The text bash parses is
//! therefore the same whatever the values are.
//!
//! That leaves the places where bash itself evaluates a value: arithmetic, subscripts,
//! `[[ -eq ]]` operands, variables with the integer attribute (`declare -i`, `OPTIND`,
//! `RANDOM`…), name references and `-v` operands, `declare -a x=…`, builtins that run code
//! (`eval`, `source`, `trap`, `compgen -W`…), shells and other programs that run their
//! arguments or standard input as code, and command names. [`analyze`] finds every such
//! place, following values copied into variables, and rendering then accepts only a plain
//! integer, only a plain name, or nothing, as each requires.
//!
//! The parser ([`syntax`]) fails closed: where it cannot be sure it reads the script as
//! bash 5.2 does, every placeholder is refused with the reason and line. Refusing a strange
//! but legal script is acceptable; running a value as code is not.
//!
//! # Bounds
//! Scripts are limited to [`MAX_SCRIPT_BYTES`], nesting to [`syntax::MAX_DEPTH`], and
//! values by [`RenderLimits`]. Parsing and rendering take time and memory linear in the
//! input.

mod analyze;
mod commands;
pub(crate) mod placeholder;
mod quote;
mod render;
mod syntax;
mod verdict;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use crate::error::{ErrorKind, Kind};
use crate::secret::{SecretBytes, Variables};
use secrecy::ExposeSecret;

pub use quote::single_quote;
pub use render::RenderLimits;

/// The largest script accepted.
pub const MAX_SCRIPT_BYTES: usize = 1 << 20;
/// The largest template document accepted (the script plus its JSON wrapping).
pub const MAX_DOCUMENT_BYTES: usize = 2 << 20;

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
    analysis: Arc<analyze::Analysis>,
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

/// Why a template could not be parsed or rendered. Messages name variables, lines and
/// contexts, never a value.
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
        "variable `{variable}` (line {line}) is used in {context}, where bash evaluates text \
         as code; its value must be a plain integer"
    )]
    NotAnInteger {
        /// The variable.
        variable: String,
        /// The template line of the placeholder.
        line: usize,
        /// Where it is used.
        context: String,
    },
    /// The value is used as a variable name, and is not one.
    #[error(
        "variable `{variable}` (line {line}) is used as {context}; its value must be a plain \
         variable name"
    )]
    NotAName {
        /// The variable.
        variable: String,
        /// The template line of the placeholder.
        line: usize,
        /// Where it is used.
        context: String,
    },
    /// No value can be placed here: bash would run it, or use it as a name or a command.
    #[error("variable `{variable}` (line {line}) cannot be placed there: {reason}")]
    NotData {
        /// The variable.
        variable: String,
        /// The template line of the placeholder.
        line: usize,
        /// Why.
        reason: String,
    },
    /// The renderer cannot be sure it reads the script as bash does, so it refuses every
    /// placeholder.
    #[error(
        "variable `{variable}` (line {line}) cannot be rendered safely: on line {at_line}, \
         {reason}; the renderer cannot prove how bash reads this script"
    )]
    Unsure {
        /// The first active placeholder's variable.
        variable: String,
        /// Its line.
        line: usize,
        /// The line of the construct.
        at_line: usize,
        /// What the construct is.
        reason: String,
    },
    /// A quoted here-document holding a placeholder cannot be rewritten.
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
    /// A value, or all values together, exceed the configured limits.
    #[error("the value of `{variable}` is {size} bytes; the limit is {limit} bytes{scope}")]
    TooLarge {
        /// The variable (the first one over, or the one that crossed the total).
        variable: String,
        /// Its size (or the running total).
        size: usize,
        /// The limit crossed.
        limit: usize,
        /// `" per value"` or `" for all values together"`.
        scope: &'static str,
    },
    /// The template nests constructs too deeply to be analysed.
    #[error("the template nests constructs too deeply to be rendered safely")]
    TooComplex,
}

impl Kind for TemplateError {
    fn kind(&self) -> ErrorKind {
        match self {
            TemplateError::Invalid(_) | TemplateError::TooLarge { .. } => ErrorKind::InvalidInput,
            TemplateError::MissingVariables { .. } => ErrorKind::MissingVariable,
            _ => ErrorKind::RenderError,
        }
    }
}

/// Whether `name` can be a template variable: `[A-Za-z_][A-Za-z0-9_]*`, usable in all
/// placeholder forms.
pub fn is_valid_variable_name(name: &str) -> bool {
    placeholder::is_ident(name.as_bytes())
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
    if script.len() > MAX_SCRIPT_BYTES {
        return Err(format!(
            "the script is {} bytes, over the {MAX_SCRIPT_BYTES}-byte limit",
            script.len()
        ));
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
        // A UTF-8 byte-order mark (editors on Windows add one) is not part of the text.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(TemplateError::Invalid(format!(
                "the template is {} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit",
                text.len()
            )));
        }
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
            analysis: Arc::new(analyze::analyze(doc.script_string.as_bytes())),
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
        let deferred = check_script(&script).err();
        // A script that is refused anyway is not analysed (it may be huge).
        let analysis = match deferred {
            None => analyze::analyze(script.as_bytes()),
            Some(_) => analyze::analyze(b""),
        };
        Template {
            analysis: Arc::new(analysis),
            deferred,
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

    /// Render with values (and values for `${secrets.getValue("x")}` references), under the
    /// default [`RenderLimits`].
    ///
    /// For a document every declared variable needs a value, used or not; extra values are
    /// ignored. For a plain script, `${name}` is a placeholder when `name` is supplied, and
    /// every NextGen placeholder needs a value.
    pub fn render(
        &self,
        vars: &Variables,
        secrets: &Variables,
    ) -> Result<RenderedScript, TemplateError> {
        self.render_with(vars, secrets, &RenderLimits::default())
    }

    /// [`Template::render`] under explicit limits.
    pub fn render_with(
        &self,
        vars: &Variables,
        secrets: &Variables,
        limits: &RenderLimits,
    ) -> Result<RenderedScript, TemplateError> {
        if let Some(why) = &self.deferred {
            return Err(TemplateError::Invalid(why.clone()));
        }
        let text = render::render(self, vars, secrets, limits)?;
        Ok(RenderedScript { text })
    }
}
