//! Templates: parsing template documents and plain scripts, and injection-proof rendering.
//!
//! STUB: replaced by the template work; the public API below is the contract.

use std::time::Duration;

use serde::Deserialize;

use crate::error::{ErrorKind, Kind};
use crate::secret::{SecretBytes, Variables};

/// A template document, in the JSON shape the control plane accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateDocument {
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The bash script.
    pub script_string: String,
    /// Declared variable names.
    #[serde(default)]
    pub variables: Vec<serde_json::Value>,
    /// Per-attempt timeout.
    #[serde(default)]
    pub timeout_millis: Option<u64>,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    script: String,
}

/// A rendered script: value bindings plus the rewritten body. Secret as a whole.
#[derive(Debug)]
pub struct RenderedScript {
    text: SecretBytes,
}

impl RenderedScript {
    /// The script bytes. The one place a rendered script is exposed: handing it to bash.
    pub fn expose_bytes(&self) -> &[u8] {
        use secrecy::ExposeSecret;
        self.text.expose_secret()
    }
}

/// Why a template could not be parsed or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// Not a usable template document.
    #[error("invalid template: {0}")]
    Invalid(String),
}

impl Kind for TemplateError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

impl Template {
    /// Parse a template document (JSON with `scriptString`) or a plain bash script.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        Ok(Template {
            script: text.to_owned(),
        })
    }
    /// Build from a parsed document.
    pub fn from_document(doc: TemplateDocument) -> Result<Template, TemplateError> {
        Ok(Template {
            script: doc.script_string,
        })
    }
    /// A plain script; its declared variables are the ones supplied.
    pub fn from_script(script: impl Into<String>) -> Template {
        Template {
            script: script.into(),
        }
    }
    /// The document's name.
    pub fn name(&self) -> Option<&str> {
        None
    }
    /// Declared variables; `None` for a plain script.
    pub fn declared_variables(&self) -> Option<&[String]> {
        None
    }
    /// The document's timeout.
    pub fn timeout(&self) -> Option<Duration> {
        None
    }
    /// The unrendered script.
    pub fn script(&self) -> &str {
        &self.script
    }
    /// Render with values (and values for `${secrets.getValue("x")}` references).
    pub fn render(
        &self,
        _vars: &Variables,
        _secrets: &Variables,
    ) -> Result<RenderedScript, TemplateError> {
        Ok(RenderedScript {
            text: crate::secret::secret_bytes(self.script.as_bytes().to_vec()),
        })
    }
}
