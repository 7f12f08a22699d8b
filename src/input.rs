//! The seed API's GraphQL query-variable shapes, as `test-run --input` reads them.
//!
//! `test-run` takes the query variables of `createSecretManager` or `updateSecretManager`
//! unchanged, so an operator can test exactly what they will send. The control plane will
//! deserialise the same types from its GraphQL inputs.
//!
//! JSON errors are reported by line, column and category only: serde_json's own messages
//! can quote the offending value, and that value may be a secret.

use serde::Deserialize;

use crate::error::{ErrorKind, Kind};
use crate::secret::{secret_bytes, Variables};

/// `EncryptedDataParams{name, value}`: one test variable.
#[derive(Debug, Deserialize)]
pub struct EncryptedDataParams {
    /// Variable name.
    pub name: String,
    /// Its value. Deserialised straight into a secret; `null` means no value.
    pub value: Option<secrecy::SecretString>,
}

/// `customSecretManagerInput`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomSecretManagerInput {
    /// Manager name.
    pub name: Option<String>,
    /// Agents must carry all of these selectors.
    pub delegate_selectors: Option<Vec<String>>,
    /// Values used to validate the manager.
    pub test_variables: Option<Vec<EncryptedDataParams>>,
    /// Each secret supplies its own `connectorId` parameter.
    pub is_connector_templatized: Option<bool>,
    /// true: run on an agent; false: run on `host` over SSH.
    pub execute_on_delegate: Option<bool>,
    /// The shell script template.
    pub template_id: Option<String>,
    /// The SSH target host.
    pub host: Option<String>,
    /// The working directory; Harness defaults it to `/tmp`.
    pub command_path: Option<String>,
    /// The SSH credential's id.
    pub connector_id: Option<String>,
    /// Where the manager may be used; kept as-is for the control plane.
    pub usage_scope: Option<serde_json::Value>,
}

/// `CreateSecretManagerInput`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSecretManagerInput {
    /// Echoed back by the mutation.
    pub client_mutation_id: Option<String>,
    /// Must be `CUSTOM` here.
    pub secret_manager_type: String,
    /// The manager.
    pub custom_secret_manager_input: Option<CustomSecretManagerInput>,
}

/// `UpdateSecretManagerInput`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateSecretManagerInput {
    /// Echoed back by the mutation.
    pub client_mutation_id: Option<String>,
    /// The manager to update.
    pub secret_manager_id: String,
    /// Must be `CUSTOM` here.
    pub secret_manager_type: String,
    /// The fields to overwrite.
    pub custom_secret_manager_input: Option<CustomSecretManagerInput>,
}

/// The create form: `{"secretManagerInput": …}`.
#[derive(Debug, Deserialize)]
struct CreateDocument {
    #[serde(rename = "secretManagerInput")]
    input: CreateSecretManagerInput,
}

/// The update form: `{"input": …}`.
#[derive(Debug, Deserialize)]
struct UpdateDocument {
    input: UpdateSecretManagerInput,
}

/// Why an input document was refused.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("invalid JSON at line {line} column {column} ({category})")]
    Json {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde_json's category: syntax, data or eof.
        category: &'static str,
    },
    /// Neither documented shape matched.
    #[error(
        "input is neither {{\"secretManagerInput\": …}} (create) nor {{\"input\": …}} (update)"
    )]
    Shape,
    /// Not a custom secrets manager.
    #[error("secretManagerType is {0:?}; only CUSTOM is supported")]
    NotCustom(String),
    /// The document has no `customSecretManagerInput`.
    #[error("customSecretManagerInput is missing")]
    MissingCustom,
    /// The connector file is unusable.
    #[error("invalid connector: {0}")]
    Connector(String),
    /// A test variable is named twice.
    #[error("test variable {0:?} is given more than once")]
    Duplicate(String),
}

impl Kind for InputError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

/// Map a serde_json error to a message that cannot contain input text.
pub fn json_error(e: &serde_json::Error) -> InputError {
    InputError::Json {
        line: e.line(),
        column: e.column(),
        category: match e.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "unexpected type or missing field",
            serde_json::error::Category::Eof => "unexpected end",
        },
    }
}

/// Parse a create or update query-variables document into its custom manager input.
///
/// A leading UTF-8 byte-order mark is ignored.
pub fn parse_query_variables(text: &str) -> Result<CustomSecretManagerInput, InputError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Syntax first, so a broken document gets a position rather than "wrong shape".
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    let is_create = value.get("secretManagerInput").is_some();
    let is_update = value.get("input").is_some();
    if !is_create && !is_update {
        return Err(InputError::Shape);
    }
    // Typed parse from the text again, so that a data error also gets a line and column.
    let (kind, custom) = if is_create {
        let d: CreateDocument = serde_json::from_str(text).map_err(|e| json_error(&e))?;
        (
            d.input.secret_manager_type,
            d.input.custom_secret_manager_input,
        )
    } else {
        let d: UpdateDocument = serde_json::from_str(text).map_err(|e| json_error(&e))?;
        (
            d.input.secret_manager_type,
            d.input.custom_secret_manager_input,
        )
    };
    if kind != "CUSTOM" {
        return Err(InputError::NotCustom(kind));
    }
    custom.ok_or(InputError::MissingCustom)
}

impl CustomSecretManagerInput {
    /// The test variables as template values. A `null` value counts as not provided.
    pub fn variables(&self) -> Result<Variables, InputError> {
        use secrecy::ExposeSecret;
        let mut vars = Variables::new();
        for p in self.test_variables.iter().flatten() {
            if vars.contains(&p.name) {
                return Err(InputError::Duplicate(p.name.clone()));
            }
            if let Some(v) = &p.value {
                vars.insert(
                    p.name.clone(),
                    secret_bytes(v.expose_secret().as_bytes().to_vec()),
                );
            }
        }
        Ok(vars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seed_create_and_update_forms() {
        let create = r#"{"secretManagerInput": {"secretManagerType": "CUSTOM", "customSecretManagerInput": {
            "name": "Doc", "delegateSelectors": [], "testVariables": [{"name": "key", "value": "k1"}],
            "isConnectorTemplatized": false, "executeOnDelegate": true, "templateId": "t",
            "host": null, "commandPath": "/tmp", "connectorId": null,
            "usageScope": {"appEnvScopes": [{"application": {"filterType": "ALL"}, "environment": {"filterType": "PRODUCTION_ENVIRONMENTS"}}]}}}}"#;
        let c = parse_query_variables(create).unwrap();
        assert_eq!(c.command_path.as_deref(), Some("/tmp"));
        assert_eq!(c.execute_on_delegate, Some(true));
        assert_eq!(c.variables().unwrap().names().collect::<Vec<_>>(), ["key"]);

        let update = r#"{"input": {"secretManagerId": "x", "secretManagerType": "CUSTOM",
            "customSecretManagerInput": {"executeOnDelegate": false, "host": "10.0.0.17", "connectorId": "c"}}}"#;
        let u = parse_query_variables(update).unwrap();
        assert_eq!(u.host.as_deref(), Some("10.0.0.17"));
        assert_eq!(u.execute_on_delegate, Some(false));
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let update =
            "\u{feff}{\"input\": {\"secretManagerId\": \"x\", \"secretManagerType\": \"CUSTOM\",
            \"customSecretManagerInput\": {\"host\": \"h\"}}}";
        assert_eq!(
            parse_query_variables(update).unwrap().host.as_deref(),
            Some("h")
        );
        let connector = "\u{feff}{\"sshAuthentication\": {\"userName\": \"u\",
            \"sshAuthenticationMethod\": {\"sshCredentialType\": \"PASSWORD\",
            \"serverPassword\": {\"passwordSecretId\": \"pw\"}}}}";
        let c = parse_connector(connector).unwrap();
        assert_eq!(c.secret_ids(), ["pw"]);
    }

    #[test]
    fn errors_never_quote_the_input() {
        let bad = r#"{"secretManagerInput": {"secretManagerType": "CUSTOM", "customSecretManagerInput": {"testVariables": [{"name": "k", "value": 12345678}]}}}"#;
        let e = parse_query_variables(bad).unwrap_err().to_string();
        assert!(!e.contains("12345678"), "{e}");
        let e = parse_query_variables("{\"input\": \"hunter2hunter2")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("line 1"), "{e}");
        assert!(matches!(
            parse_query_variables("{}"),
            Err(InputError::Shape)
        ));
        let vault = r#"{"input": {"secretManagerId": "x", "secretManagerType": "VAULT"}}"#;
        assert!(matches!(
            parse_query_variables(vault),
            Err(InputError::NotCustom(_))
        ));
    }
}

/// A connector file: Harness's `sshCredential` input, plus host keys and a way to supply the
/// secrets its ids refer to. The object may also be wrapped as `{"sshCredential": {…}}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorFile {
    /// The connector's id, checked against the input's `connectorId` when both are given.
    pub id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Must be `SSH` when given.
    pub authentication_scheme: Option<String>,
    /// User, port and method.
    pub ssh_authentication: Option<SshAuthentication>,
    /// The `createSecret` wrapping, when the file holds the whole input.
    pub ssh_credential: Option<Box<ConnectorFile>>,
    /// Trusted host keys: known_hosts lines or `SHA256:` fingerprints.
    #[serde(default)]
    pub host_keys: Vec<String>,
    /// known_hosts files to trust.
    #[serde(default)]
    pub known_hosts: Vec<String>,
    /// Values for the secret ids the method names.
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, SecretSource>,
}

impl ConnectorFile {
    /// The secret ids its authentication method refers to (key text, passphrase or
    /// password), in that order; none when the method is unknown or incomplete.
    pub fn secret_ids(&self) -> Vec<&str> {
        let Some(m) = self
            .ssh_authentication
            .as_ref()
            .map(|a| &a.ssh_authentication_method)
        else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        match m.ssh_credential_type.as_str() {
            "SSH_KEY" => {
                if let Some(k) = &m.inline_ssh_key {
                    ids.push(k.ssh_key_secret_file_id.as_str());
                    ids.extend(k.passphrase_secret_id.as_deref());
                }
            }
            "SSH_KEY_FILE_PATH" => {
                if let Some(k) = &m.ssh_key_file {
                    ids.extend(k.passphrase_secret_id.as_deref());
                }
            }
            "PASSWORD" => {
                if let Some(p) = &m.server_password {
                    ids.push(p.password_secret_id.as_str());
                }
            }
            _ => {}
        }
        ids
    }
}

/// Where a connector secret's value comes from.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SecretSource {
    /// A file holding the value, byte for byte.
    File(String),
    /// The value inline (the connector file is then itself a secret).
    Value(secrecy::SecretString),
}

/// `sshAuthentication`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshAuthentication {
    /// Login user.
    pub user_name: String,
    /// Port; 22 when absent.
    pub port: Option<u16>,
    /// How to authenticate.
    pub ssh_authentication_method: SshAuthenticationMethod,
}

/// `sshAuthenticationMethod`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshAuthenticationMethod {
    /// `SSH_KEY`, `SSH_KEY_FILE_PATH` or `PASSWORD`.
    pub ssh_credential_type: String,
    /// For `SSH_KEY`.
    #[serde(rename = "inlineSSHKey")]
    pub inline_ssh_key: Option<InlineSshKey>,
    /// For `SSH_KEY_FILE_PATH`.
    pub ssh_key_file: Option<SshKeyFile>,
    /// For `PASSWORD`.
    pub server_password: Option<ServerPassword>,
}

/// `inlineSSHKey`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InlineSshKey {
    /// Secret holding the private key text.
    pub ssh_key_secret_file_id: String,
    /// Secret holding its passphrase.
    pub passphrase_secret_id: Option<String>,
}

/// `sshKeyFile`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshKeyFile {
    /// Key file on the agent host.
    pub path: String,
    /// Secret holding its passphrase.
    pub passphrase_secret_id: Option<String>,
}

/// `serverPassword`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerPassword {
    /// Secret holding the password.
    pub password_secret_id: String,
}

/// Parse a connector file, unwrapping `{"sshCredential": …}`. A leading UTF-8 byte-order
/// mark is ignored.
pub fn parse_connector(text: &str) -> Result<ConnectorFile, InputError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut c: ConnectorFile = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    if let Some(inner) = c.ssh_credential.take() {
        let mut inner = *inner;
        // Extensions may sit beside the wrapper as well as inside it.
        inner.host_keys.extend(c.host_keys);
        inner.known_hosts.extend(c.known_hosts);
        inner.secrets.extend(c.secrets);
        inner.id = inner.id.or(c.id);
        c = inner;
    }
    if let Some(s) = &c.authentication_scheme {
        if s != "SSH" {
            return Err(InputError::Connector(format!(
                "authenticationScheme {s:?} is not supported; use SSH"
            )));
        }
    }
    if c.ssh_authentication.is_none() {
        return Err(InputError::Connector("sshAuthentication is missing".into()));
    }
    Ok(c)
}
