//! GraphQL output types, in Harness's shapes, built from stored rows. None of them carries
//! a value except [`ResolveSecretPayload`], whose value leaves only in the response body.

use async_graphql::{Context, Interface, Object, SimpleObject, Union};
use base64::Engine as _;
use secrecy::ExposeSecret;

use super::inputs::{EnvFilterType, FilterType, SecretType, SshCredentialType};
use crate::manager::model::{self, ManagerBody, SshBody, TemplateBody, TextBody};
use crate::manager::scope;
use crate::manager::store::{AuditRecord, Row};
use crate::secret::SecretBytes;

/// `PageInfo`.
#[derive(SimpleObject, Clone)]
pub struct PageInfo {
    /// The limit asked for.
    pub limit: Option<i32>,
    /// The offset asked for.
    pub offset: Option<i32>,
    /// Whether more items follow this page.
    pub has_more: Option<bool>,
    /// How many items there are in all.
    pub total: Option<i32>,
}

impl PageInfo {
    /// For a page of `got` items at `offset` out of `total`.
    pub fn new(limit: i32, offset: Option<i32>, got: usize, total: u64) -> PageInfo {
        let off = offset.unwrap_or(0).max(0) as u64;
        PageInfo {
            limit: Some(limit),
            offset: Some(off as i32),
            has_more: Some(off + (got as u64) < total),
            total: Some(total.min(i32::MAX as u64) as i32),
        }
    }
}

/// `AppScopeFilter`.
#[derive(SimpleObject, Clone)]
pub struct AppScopeFilter {
    /// `ALL`.
    pub filter_type: Option<FilterType>,
    /// One application.
    pub app_id: Option<String>,
}

/// `EnvScopeFilter`.
#[derive(SimpleObject, Clone)]
pub struct EnvScopeFilter {
    /// Production or not.
    pub filter_type: Option<EnvFilterType>,
    /// One environment.
    pub env_id: Option<String>,
}

/// `AppEnvScope`.
#[derive(SimpleObject, Clone)]
pub struct AppEnvScope {
    /// Applications.
    pub application: Option<AppScopeFilter>,
    /// Environments.
    pub environment: Option<EnvScopeFilter>,
}

/// `UsageScope`.
#[derive(SimpleObject, Clone)]
pub struct UsageScope {
    /// The entries.
    pub app_env_scopes: Option<Vec<Option<AppEnvScope>>>,
}

impl UsageScope {
    /// From the stored form.
    pub fn from_scope(s: &scope::UsageScope) -> UsageScope {
        UsageScope {
            app_env_scopes: Some(
                s.app_env_scopes
                    .iter()
                    .map(|e| {
                        Some(AppEnvScope {
                            application: Some(AppScopeFilter {
                                filter_type: e.application.filter_type.map(|_| FilterType::All),
                                app_id: e.application.app_id.clone(),
                            }),
                            environment: Some(EnvScopeFilter {
                                filter_type: e.environment.filter_type.map(|t| match t {
                                    scope::EnvFilterType::Production => {
                                        EnvFilterType::ProductionEnvironments
                                    }
                                    scope::EnvFilterType::NonProduction => {
                                        EnvFilterType::NonProductionEnvironments
                                    }
                                }),
                                env_id: e.environment.env_id.clone(),
                            }),
                        })
                    })
                    .collect(),
            ),
        }
    }

    fn from_opt(s: Option<&scope::UsageScope>) -> Option<UsageScope> {
        s.map(UsageScope::from_scope)
    }
}

/// A test variable as shown: its name; `value` is always null (values are never returned).
#[derive(SimpleObject, Clone)]
#[graphql(name = "EncryptedDataParamsOutput")]
pub struct TestVariable {
    /// The name.
    pub name: Option<String>,
    /// Always null.
    pub value: Option<String>,
}

/// `CustomSecretManagerConfig`.
#[derive(SimpleObject, Clone)]
pub struct CustomSecretManagerConfig {
    /// The template.
    pub template_id: Option<String>,
    /// Selectors.
    pub delegate_selectors: Option<Vec<Option<String>>>,
    /// Test variable names (values are never returned).
    pub test_variables: Option<Vec<Option<TestVariable>>>,
    /// Runs on an agent.
    pub execute_on_delegate: Option<bool>,
    /// Each secret names its connector.
    pub is_connector_templatized: Option<bool>,
    /// SSH host.
    pub host: Option<String>,
    /// Working directory.
    pub command_path: Option<String>,
    /// SSH credential.
    pub connector_id: Option<String>,
}

/// `SecretManagerConfig`: a union, of which this control plane serves the custom kind.
#[derive(Union, Clone)]
pub enum SecretManagerConfig {
    /// A Custom Secrets Manager.
    Custom(CustomSecretManagerConfig),
}

/// `SecretManager`.
#[derive(SimpleObject, Clone)]
pub struct SecretManager {
    /// Id.
    pub id: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Its configuration.
    pub config: Option<SecretManagerConfig>,
    /// Who may use it.
    pub usage_scope: Option<UsageScope>,
}

impl SecretManager {
    /// From a stored row.
    pub fn from_row(row: &Row) -> SecretManager {
        let m: Option<ManagerBody> = model::body(row);
        SecretManager {
            id: Some(row.id.clone()),
            name: Some(row.name.clone()),
            usage_scope: m
                .as_ref()
                .and_then(|m| UsageScope::from_opt(m.usage_scope.as_ref())),
            config: m.map(|m| {
                SecretManagerConfig::Custom(CustomSecretManagerConfig {
                    template_id: Some(m.template_id),
                    delegate_selectors: Some(m.delegate_selectors.into_iter().map(Some).collect()),
                    test_variables: Some(
                        m.test_variable_names
                            .into_iter()
                            .map(|n| {
                                Some(TestVariable {
                                    name: Some(n),
                                    value: None,
                                })
                            })
                            .collect(),
                    ),
                    execute_on_delegate: Some(m.execute_on_delegate),
                    is_connector_templatized: Some(m.is_connector_templatized),
                    host: m.host,
                    command_path: Some(m.command_path),
                    connector_id: m.connector_id,
                })
            }),
        }
    }
}

/// `SecretManagerConnection`.
#[derive(SimpleObject)]
pub struct SecretManagerConnection {
    /// Paging.
    pub page_info: Option<PageInfo>,
    /// The managers.
    pub nodes: Option<Vec<Option<SecretManager>>>,
}

/// `UpsertSecretManagerPayload`.
#[derive(SimpleObject)]
pub struct UpsertSecretManagerPayload {
    /// Echoed.
    pub client_mutation_id: Option<String>,
    /// The manager.
    pub secret_manager: Option<SecretManager>,
}

/// `DeleteSecretManagerPayload`.
#[derive(SimpleObject)]
pub struct DeleteSecretManagerPayload {
    /// Echoed.
    pub client_mutation_id: Option<String>,
}

/// `EncryptedText`.
#[derive(Clone)]
pub struct EncryptedText {
    row: Row,
    body: Option<TextBody>,
}

#[Object]
impl EncryptedText {
    async fn id(&self) -> Option<String> {
        Some(self.row.id.clone())
    }
    async fn name(&self) -> Option<String> {
        Some(self.row.name.clone())
    }
    async fn secret_type(&self) -> Option<SecretType> {
        Some(SecretType::EncryptedText)
    }
    /// The custom manager; null for the built-in store.
    async fn secret_manager_id(&self) -> Option<String> {
        self.body.as_ref().and_then(|b| b.secret_manager_id.clone())
    }
    async fn usage_scope(&self) -> Option<UsageScope> {
        self.body
            .as_ref()
            .and_then(|b| UsageScope::from_opt(b.usage_scope.as_ref()))
    }
    async fn scoped_to_account(&self) -> Option<bool> {
        self.body.as_ref().map(|b| b.scoped_to_account)
    }
    #[graphql(name = "inheritScopesFromSM")]
    async fn inherit_scopes_from_sm(&self) -> Option<bool> {
        self.body.as_ref().map(|b| b.inherit_scopes_from_sm)
    }
    /// Always null (a custom manager uses parameters).
    async fn secret_reference(&self) -> Option<String> {
        None
    }
    /// Names of the parameters (values are never returned).
    async fn parameter_names(&self) -> Option<Vec<String>> {
        self.body.as_ref().map(|b| b.parameter_names.clone())
    }
}

/// `SSHAuthenticationMethodOutput`'s parts.
#[derive(SimpleObject, Clone)]
#[graphql(name = "InlineSSHKeyOutput")]
pub struct InlineSshKeyOutput {
    /// The key's secret.
    pub ssh_key_secret_file_id: Option<String>,
    /// The passphrase's secret.
    pub passphrase_secret_id: Option<String>,
}

/// `SSHKeyFileOutput`.
#[derive(SimpleObject, Clone)]
#[graphql(name = "SSHKeyFileOutput")]
pub struct SshKeyFileOutput {
    /// The path on the agent's host.
    pub path: Option<String>,
    /// The passphrase's secret.
    pub passphrase_secret_id: Option<String>,
}

/// `SSHPasswordOutput`.
#[derive(SimpleObject, Clone)]
#[graphql(name = "SSHPasswordOutput")]
pub struct SshPasswordOutput {
    /// The password's secret.
    pub password_secret_id: Option<String>,
}

/// `SSHAuthenticationMethodOutput`.
#[derive(SimpleObject, Clone)]
#[graphql(name = "SSHAuthenticationMethodOutput")]
pub struct SshAuthenticationMethodOutput {
    /// Which kind.
    pub ssh_credential_type: Option<SshCredentialType>,
    /// `SSH_KEY`.
    #[graphql(name = "inlineSSHKey")]
    pub inline_ssh_key: Option<InlineSshKeyOutput>,
    /// `SSH_KEY_FILE_PATH`.
    pub ssh_key_file: Option<SshKeyFileOutput>,
    /// `PASSWORD`.
    pub server_password: Option<SshPasswordOutput>,
}

/// `SSHAuthentication`.
#[derive(SimpleObject, Clone)]
#[graphql(name = "SSHAuthentication")]
pub struct SshAuthentication {
    /// Login user.
    pub user_name: Option<String>,
    /// Port.
    pub port: Option<i32>,
    /// How it authenticates.
    pub ssh_authentication_method: Option<SshAuthenticationMethodOutput>,
}

/// `SSHAuthenticationType`.
#[derive(Union, Clone)]
#[graphql(name = "SSHAuthenticationType")]
pub enum SshAuthenticationType {
    /// SSH.
    Ssh(SshAuthentication),
}

/// `SSHCredential`.
#[derive(Clone)]
pub struct SshCredential {
    row: Row,
    body: Option<SshBody>,
}

#[Object(name = "SSHCredential")]
impl SshCredential {
    async fn id(&self) -> Option<String> {
        Some(self.row.id.clone())
    }
    async fn name(&self) -> Option<String> {
        Some(self.row.name.clone())
    }
    async fn secret_type(&self) -> Option<SecretType> {
        Some(SecretType::SshCredential)
    }
    async fn usage_scope(&self) -> Option<UsageScope> {
        self.body
            .as_ref()
            .and_then(|b| UsageScope::from_opt(b.usage_scope.as_ref()))
    }
    async fn secret_reference(&self) -> Option<String> {
        None
    }
    async fn authentication_type(&self) -> Option<SshAuthenticationType> {
        let b = self.body.as_ref()?;
        use crate::manager::model::SshCredentialType as T;
        Some(SshAuthenticationType::Ssh(SshAuthentication {
            user_name: Some(b.user_name.clone()),
            port: Some(b.port as i32),
            ssh_authentication_method: Some(SshAuthenticationMethodOutput {
                ssh_credential_type: Some(match b.credential_type {
                    T::SshKey => SshCredentialType::SshKey,
                    T::SshKeyFilePath => SshCredentialType::SshKeyFilePath,
                    T::Password => SshCredentialType::Password,
                }),
                inline_ssh_key: (b.credential_type == T::SshKey).then(|| InlineSshKeyOutput {
                    ssh_key_secret_file_id: b.key_secret_id.clone(),
                    passphrase_secret_id: b.passphrase_secret_id.clone(),
                }),
                ssh_key_file: (b.credential_type == T::SshKeyFilePath).then(|| SshKeyFileOutput {
                    path: b.key_path.clone(),
                    passphrase_secret_id: b.passphrase_secret_id.clone(),
                }),
                server_password: (b.credential_type == T::Password).then(|| SshPasswordOutput {
                    password_secret_id: b.password_secret_id.clone(),
                }),
            }),
        }))
    }
    /// Pinned host keys.
    async fn host_keys(&self) -> Option<Vec<String>> {
        self.body.as_ref().map(|b| b.host_keys.clone())
    }
}

/// `Secret`: an interface, so that clients select with inline fragments.
// The derive takes one `name` per field; clippy reads them as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(Interface, Clone)]
#[graphql(
    field(name = "id", ty = "Option<String>"),
    field(name = "name", ty = "Option<String>"),
    field(name = "secret_type", ty = "Option<SecretType>"),
    field(name = "usage_scope", ty = "Option<UsageScope>"),
    field(name = "secret_reference", ty = "Option<String>")
)]
pub enum Secret {
    /// Encrypted text.
    EncryptedText(EncryptedText),
    /// SSH credential.
    SshCredential(SshCredential),
}

impl Secret {
    /// From a stored row of a secret kind.
    pub fn from_row(row: Row) -> Option<Secret> {
        use crate::manager::store::ObjectKind;
        match row.kind {
            ObjectKind::EncryptedText => Some(Secret::EncryptedText(EncryptedText {
                body: model::body(&row),
                row,
            })),
            ObjectKind::SshCredential => Some(Secret::SshCredential(SshCredential {
                body: model::body(&row),
                row,
            })),
            _ => None,
        }
    }
}

/// `CreateSecretPayload`.
#[derive(SimpleObject)]
pub struct CreateSecretPayload {
    /// Echoed.
    pub client_mutation_id: Option<String>,
    /// The secret.
    pub secret: Option<Secret>,
}

/// `UpdateSecretPayload`.
#[derive(SimpleObject)]
pub struct UpdateSecretPayload {
    /// Echoed.
    pub client_mutation_id: Option<String>,
    /// The secret.
    pub secret: Option<Secret>,
}

/// `DeleteSecretPayload`.
#[derive(SimpleObject)]
pub struct DeleteSecretPayload {
    /// Echoed.
    pub client_mutation_id: Option<String>,
}

/// `Template` (this project's extension).
#[derive(SimpleObject, Clone)]
pub struct Template {
    /// Id.
    pub id: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// The script.
    pub script_string: Option<String>,
    /// Declared variables.
    pub variables: Option<Vec<String>>,
    /// Per-attempt timeout.
    pub timeout_millis: Option<i64>,
    /// Bumped by every update.
    pub version: Option<i64>,
}

impl Template {
    /// From a stored row.
    pub fn from_row(row: &Row) -> Template {
        let b: Option<TemplateBody> = model::body(row);
        Template {
            id: Some(row.id.clone()),
            name: Some(row.name.clone()),
            version: Some(row.version),
            timeout_millis: b.as_ref().and_then(|b| b.timeout_millis).map(|t| t as i64),
            variables: b.as_ref().map(|b| b.variables.clone()),
            script_string: b.map(|b| b.script_string),
        }
    }
}

/// `TemplateConnection`.
#[derive(SimpleObject)]
pub struct TemplateConnection {
    /// Paging.
    pub page_info: Option<PageInfo>,
    /// The templates.
    pub nodes: Option<Vec<Option<Template>>>,
}

/// `UpsertTemplatePayload`.
#[derive(SimpleObject)]
pub struct UpsertTemplatePayload {
    /// Echoed.
    pub client_mutation_id: Option<String>,
    /// The template.
    pub template: Option<Template>,
}

/// `DeleteTemplatePayload`.
#[derive(SimpleObject)]
pub struct DeleteTemplatePayload {
    /// Echoed.
    pub client_mutation_id: Option<String>,
}

/// `ResolveSecretPayload`: the one output that carries a value.
pub struct ResolveSecretPayload {
    /// Echoed.
    pub client_mutation_id: Option<String>,
    /// The value.
    pub value: SecretBytes,
}

#[Object]
impl ResolveSecretPayload {
    async fn client_mutation_id(&self) -> Option<String> {
        self.client_mutation_id.clone()
    }
    /// The value as text; an error if it is not UTF-8 (select `valueBase64` then).
    async fn value(&self, _ctx: &Context<'_>) -> async_graphql::Result<String> {
        std::str::from_utf8(self.value.expose_secret())
            .map(str::to_string)
            .map_err(|_| async_graphql::Error::new("the value is not UTF-8; select valueBase64"))
    }
    /// The value's bytes, base64.
    async fn value_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.value.expose_secret())
    }
}

/// `AuditEvent`.
#[derive(SimpleObject)]
pub struct AuditEvent {
    /// Sorts by time.
    pub id: String,
    /// When, RFC 3339 UTC.
    pub time: String,
    /// Milliseconds since the epoch.
    pub at_ms: f64,
    /// The API key's id (never the key).
    pub key_id: String,
    /// The GraphQL operation.
    pub operation: String,
    /// The objects involved.
    pub object_ids: Vec<String>,
    /// The agent that ran the script.
    pub agent: Option<String>,
    /// `ok`, or an error kind.
    pub outcome: String,
    /// How long it took.
    pub duration_ms: f64,
}

/// Milliseconds since the epoch as RFC 3339 UTC (`2024-05-01T12:00:00.123Z`).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl AuditEvent {
    /// From a stored record.
    pub fn from_record(r: AuditRecord) -> AuditEvent {
        AuditEvent {
            time: rfc3339(r.at_ms),
            at_ms: r.at_ms as f64,
            id: r.id,
            key_id: r.key_id,
            operation: r.operation,
            object_ids: r.object_ids,
            agent: r.agent,
            outcome: r.outcome,
            duration_ms: r.duration_ms as f64,
        }
    }
}

/// `AuditEventConnection`.
#[derive(SimpleObject)]
pub struct AuditEventConnection {
    /// Paging.
    pub page_info: Option<PageInfo>,
    /// The events, newest first.
    pub nodes: Option<Vec<AuditEvent>>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_714_564_800_123),
            "2024-05-01T12:00:00.123Z"
        );
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
