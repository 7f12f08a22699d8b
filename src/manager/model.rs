//! The control plane's objects as stored: the non-secret JSON bodies of templates,
//! secrets managers, encrypted texts and SSH credentials, and the sealing of their secret
//! parts (test variables, parameters, built-in values) under the master key.
//!
//! A [`Row`]'s `body` holds what queries show; its `sealed` column holds what they never
//! show, as AES-256-GCM ciphertext bound to the row ([`crate::manager::store::crypto`]).

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::scope::UsageScope;
use super::store::crypto::{Cell, CryptoError, MasterKey};
use super::store::{ObjectKind, Row, OBJECTS_TABLE, SEALED_COLUMN};

/// A shell-script template.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateBody {
    /// The bash script, with placeholders.
    pub script_string: String,
    /// Declared variable names.
    pub variables: Vec<String>,
    /// Per-attempt timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_millis: Option<u64>,
}

/// A custom secrets manager. Test variable values are sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagerBody {
    /// The template it runs.
    pub template_id: String,
    /// The template's version when this manager was last validated: a template that
    /// changed since is refused at fetch time rather than run unvalidated.
    pub template_version: i64,
    /// Selectors an agent must all have (when `execute_on_delegate`).
    pub delegate_selectors: Vec<String>,
    /// Run on an agent (true) or over SSH on `host` (false). Fixed after creation.
    pub execute_on_delegate: bool,
    /// Each secret names its own connector, in a parameter `connectorId`. Fixed after
    /// creation.
    pub is_connector_templatized: bool,
    /// The SSH target host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Working directory.
    pub command_path: String,
    /// The SSH credential's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<String>,
    /// Who may use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_scope: Option<UsageScope>,
    /// Names of the test variables (their values are sealed).
    pub test_variable_names: Vec<String>,
}

/// An encrypted text: a built-in value (sealed) or parameters for a custom manager
/// (sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TextBody {
    /// The custom manager; `None` for the built-in store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_manager_id: Option<String>,
    /// Who may use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_scope: Option<UsageScope>,
    /// Use the manager's scope instead of its own.
    #[serde(default)]
    pub inherit_scopes_from_sm: bool,
    /// Harness's flag, kept and shown.
    #[serde(default)]
    pub scoped_to_account: bool,
    /// Names of the parameters (their values are sealed).
    #[serde(default)]
    pub parameter_names: Vec<String>,
}

/// How an SSH credential authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SshCredentialType {
    /// An inline key, held in a built-in secret.
    SshKey,
    /// A key file on the agent's host.
    SshKeyFilePath,
    /// A password, held in a built-in secret.
    Password,
}

/// An SSH credential (a connector). Its key, passphrase and password are built-in
/// secrets, referred to by id, so they are sealed like every other value.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshBody {
    /// Login user.
    pub user_name: String,
    /// Port.
    pub port: u16,
    /// How it authenticates.
    pub credential_type: SshCredentialType,
    /// The built-in secret holding the private key (`SSH_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_id: Option<String>,
    /// The key file on the agent's host (`SSH_KEY_FILE_PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_path: Option<String>,
    /// The built-in secret holding the key's passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_secret_id: Option<String>,
    /// The built-in secret holding the password (`PASSWORD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_id: Option<String>,
    /// Pinned host keys: known_hosts lines or `SHA256:` fingerprints. Empty: the agent
    /// host's known_hosts files.
    #[serde(default)]
    pub host_keys: Vec<String>,
    /// Who may use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_scope: Option<UsageScope>,
}

/// Named secret values (test variables, parameters), in memory. `Debug` shows names only.
#[derive(Default)]
pub struct SecretMap(pub BTreeMap<String, SecretString>);

impl std::fmt::Debug for SecretMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Clone for SecretMap {
    fn clone(&self) -> Self {
        SecretMap(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), SecretString::from(v.expose_secret().to_string())))
                .collect(),
        )
    }
}

impl SecretMap {
    /// The names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// Serialise for sealing: a JSON object, in a buffer zeroised on drop.
    pub fn to_plain(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            2 + self
                .0
                .iter()
                .map(|(k, v)| k.len() + v.expose_secret().len() * 2 + 8)
                .sum::<usize>(),
        ));
        let exposed: BTreeMap<&str, &str> = self
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect();
        // Writing into a pre-sized buffer; serde_json never fails on string maps.
        let _ = serde_json::to_writer(&mut *out, &exposed);
        out
    }

    /// Parse what [`to_plain`](Self::to_plain) wrote.
    pub fn from_plain(plain: &[u8]) -> Option<SecretMap> {
        let m: BTreeMap<String, String> = serde_json::from_slice(plain).ok()?;
        Some(SecretMap(
            m.into_iter()
                .map(|(k, v)| (k, SecretString::from(v)))
                .collect(),
        ))
    }
}

/// The cell a row's sealed column lives in.
pub fn cell(id: &str) -> Cell<'_> {
    Cell {
        table: OBJECTS_TABLE,
        id,
        column: SEALED_COLUMN,
    }
}

/// Seal `plain` for row `id`.
pub fn seal(key: &MasterKey, id: &str, plain: &[u8]) -> Vec<u8> {
    key.seal(cell(id), plain)
}

/// Open row `row`'s sealed column (empty when it has none).
pub fn open(key: &MasterKey, row: &Row) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    match &row.sealed {
        Some(s) => key.open(cell(&row.id), s),
        None => Ok(Zeroizing::new(Vec::new())),
    }
}

/// A new row around a body.
pub fn new_row(kind: ObjectKind, id: String, name: String, body: &impl Serialize) -> Row {
    let now = super::store::now_ms();
    Row {
        kind,
        id,
        name,
        version: 1,
        body: serde_json::to_string(body).unwrap_or_else(|_| "{}".into()),
        sealed: None,
        refs: Vec::new(),
        created_ms: now,
        updated_ms: now,
    }
}

/// A row's body.
pub fn body<T: serde::de::DeserializeOwned>(row: &Row) -> Option<T> {
    serde_json::from_str(&row.body).ok()
}
