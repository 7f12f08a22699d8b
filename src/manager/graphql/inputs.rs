//! GraphQL input types, in Harness's shapes (its `secretManagersMutation.graphql`,
//! `secret.graphql`, `encryptedText.graphql`, `sshCredential.graphql`,
//! `usageScope.graphql`), plus the template and resolve inputs this project adds.
//!
//! Value fields (`EncryptedDataParams.value`, `EncryptedTextInput.value`) arrive as
//! `String`s and are moved into `SecretString`s by the resolvers before anything else
//! happens; none of these types implements `Debug`.

use async_graphql::{Enum, InputObject};

use crate::manager::scope;

/// Secret manager types. Only `CUSTOM` is served; the others exist so that Harness's
/// documents parse and get a clear refusal.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum SecretManagerType {
    /// AWS KMS (not served).
    AwsKms,
    /// AWS Secrets Manager (not served).
    AwsSecretManager,
    /// HashiCorp Vault (not served).
    HashicorpVault,
    /// Azure Key Vault (not served).
    AzureKeyVault,
    /// CyberArk (not served).
    Cyberark,
    /// Google KMS (not served).
    GoogleKms,
    /// A Custom Secrets Manager.
    Custom,
}

/// Secret types.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum SecretType {
    /// Encrypted text.
    EncryptedText,
    /// Encrypted file (not served).
    EncryptedFile,
    /// WinRM credential (not served).
    WinrmCredential,
    /// SSH credential.
    SshCredential,
}

/// `ALL`.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum FilterType {
    /// Every application.
    All,
}

/// Environment filter types.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum EnvFilterType {
    /// Production environments.
    ProductionEnvironments,
    /// Non-production environments.
    NonProductionEnvironments,
}

/// A consumer's environment type.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum EnvironmentType {
    /// Production.
    Prod,
    /// Non-production.
    NonProd,
}

/// SSH authentication schemes.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "SSHAuthenticationScheme")]
pub enum SshAuthenticationScheme {
    /// SSH.
    Ssh,
    /// Kerberos (not served).
    Kerberos,
}

/// SSH credential types.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "SSHCredentialType")]
pub enum SshCredentialType {
    /// An inline key held in a secret.
    SshKey,
    /// A key file on the agent's host.
    SshKeyFilePath,
    /// A password held in a secret.
    Password,
}

/// `{name, value}`: a test variable or a parameter.
#[derive(InputObject)]
pub struct EncryptedDataParams {
    /// The variable's name.
    pub name: Option<String>,
    /// Its value (secret).
    pub value: Option<String>,
}

/// An application filter.
#[derive(InputObject, Clone)]
pub struct AppScopeFilterInput {
    /// `ALL`.
    pub filter_type: Option<FilterType>,
    /// One application.
    pub app_id: Option<String>,
}

/// An environment filter.
#[derive(InputObject, Clone)]
pub struct EnvScopeFilterInput {
    /// Production or not.
    pub filter_type: Option<EnvFilterType>,
    /// One environment.
    pub env_id: Option<String>,
}

/// One application × environment entry.
#[derive(InputObject, Clone)]
pub struct AppEnvScopeInput {
    /// Applications.
    pub application: AppScopeFilterInput,
    /// Environments.
    pub environment: EnvScopeFilterInput,
}

/// A usage scope.
#[derive(InputObject, Clone)]
pub struct UsageScopeInput {
    /// The entries.
    pub app_env_scopes: Option<Vec<AppEnvScopeInput>>,
}

impl UsageScopeInput {
    /// The stored form.
    pub fn to_scope(&self) -> scope::UsageScope {
        scope::UsageScope {
            app_env_scopes: self
                .app_env_scopes
                .iter()
                .flatten()
                .map(|s| scope::AppEnvScope {
                    application: scope::AppFilter {
                        filter_type: s.application.filter_type.map(|_| scope::AppFilterType::All),
                        app_id: s.application.app_id.clone(),
                    },
                    environment: scope::EnvFilter {
                        filter_type: s.environment.filter_type.map(|t| match t {
                            EnvFilterType::ProductionEnvironments => {
                                scope::EnvFilterType::Production
                            }
                            EnvFilterType::NonProductionEnvironments => {
                                scope::EnvFilterType::NonProduction
                            }
                        }),
                        env_id: s.environment.env_id.clone(),
                    },
                })
                .collect(),
        }
    }
}

/// `customSecretManagerInput` (create). Every field is optional, as in Harness's schema.
#[derive(InputObject)]
pub struct CustomSecretManagerInput {
    /// Name: `^[0-9a-zA-Z-' !_]+$`, unique.
    pub name: Option<String>,
    /// The template's id.
    pub template_id: Option<String>,
    /// Selectors an agent must all have.
    pub delegate_selectors: Option<Vec<Option<String>>>,
    /// Values for every template variable, used to validate.
    pub test_variables: Option<Vec<Option<EncryptedDataParams>>>,
    /// Run on an agent (true) or over SSH on `host` (false).
    pub execute_on_delegate: Option<bool>,
    /// Each secret names its connector in a parameter `connectorId`.
    pub is_connector_templatized: Option<bool>,
    /// The SSH target.
    pub host: Option<String>,
    /// Working directory (default `/tmp`).
    pub command_path: Option<String>,
    /// The SSH credential's id.
    pub connector_id: Option<String>,
    /// Refused when true: a custom manager cannot be the default.
    pub is_default: Option<bool>,
    /// Who may use it.
    pub usage_scope: Option<UsageScopeInput>,
}

/// `customSecretManagerInput` (update): only the fields given are changed.
#[derive(InputObject)]
pub struct UpdateCustomSecretManagerInput {
    /// Ignored (Harness's field; the id is `secretManagerId`).
    pub uuid: Option<String>,
    /// New name.
    pub name: Option<String>,
    /// New template.
    pub template_id: Option<String>,
    /// New selectors.
    pub delegate_selectors: Option<Vec<Option<String>>>,
    /// New test values.
    pub test_variables: Option<Vec<Option<EncryptedDataParams>>>,
    /// Fixed after creation: must equal the stored value if given.
    pub execute_on_delegate: Option<bool>,
    /// Fixed after creation: must equal the stored value if given.
    pub is_connector_templatized: Option<bool>,
    /// New host.
    pub host: Option<String>,
    /// New working directory.
    pub command_path: Option<String>,
    /// New connector.
    pub connector_id: Option<String>,
    /// Refused when true.
    pub is_default: Option<bool>,
    /// New scope.
    pub usage_scope: Option<UsageScopeInput>,
}

/// `createSecretManager(input: …)`.
#[derive(InputObject)]
pub struct CreateSecretManagerInput {
    /// Echoed in the payload.
    pub client_mutation_id: Option<String>,
    /// Must be `CUSTOM`.
    pub secret_manager_type: SecretManagerType,
    /// The manager.
    pub custom_secret_manager_input: Option<CustomSecretManagerInput>,
}

/// `updateSecretManager(input: …)`.
#[derive(InputObject)]
pub struct UpdateSecretManagerInput {
    /// Echoed in the payload.
    pub client_mutation_id: Option<String>,
    /// Which manager.
    pub secret_manager_id: String,
    /// Must be `CUSTOM`.
    pub secret_manager_type: SecretManagerType,
    /// The changes.
    pub custom_secret_manager_input: Option<UpdateCustomSecretManagerInput>,
}

/// `deleteSecretManager(input: …)`.
#[derive(InputObject)]
pub struct DeleteSecretManagerInput {
    /// Echoed in the payload.
    pub client_mutation_id: Option<String>,
    /// Which manager.
    pub secret_manager_id: String,
}

/// `encryptedText` in `createSecret`.
#[derive(InputObject)]
pub struct EncryptedTextInput {
    /// A custom manager's id; absent for the built-in store.
    pub secret_manager_id: Option<String>,
    /// Name, unique among encrypted texts.
    pub name: String,
    /// The value (built-in store).
    pub value: Option<String>,
    /// Not served (a path in another manager type).
    pub secret_reference: Option<String>,
    /// Values for the manager's template variables.
    pub parameters: Option<Vec<Option<EncryptedDataParams>>>,
    /// Who may use it.
    pub usage_scope: Option<UsageScopeInput>,
    /// Harness's flag, kept.
    pub scoped_to_account: Option<bool>,
    /// Use the manager's scope instead of its own.
    #[graphql(name = "inheritScopesFromSM")]
    pub inherit_scopes_from_sm: Option<bool>,
}

/// `encryptedText` in `updateSecret`.
#[derive(InputObject)]
pub struct UpdateEncryptedText {
    /// New name.
    pub name: Option<String>,
    /// New value (built-in store).
    pub value: Option<String>,
    /// Not served.
    pub secret_reference: Option<String>,
    /// New parameters (custom manager); validated by a fetch.
    pub parameters: Option<Vec<Option<EncryptedDataParams>>>,
    /// New scope.
    pub usage_scope: Option<UsageScopeInput>,
    /// Harness's flag.
    pub scoped_to_account: Option<bool>,
    /// Use the manager's scope.
    #[graphql(name = "inheritScopesFromSM")]
    pub inherit_scopes_from_sm: Option<bool>,
}

/// `inlineSSHKey`.
#[derive(InputObject)]
#[graphql(name = "InlineSSHKey")]
pub struct InlineSshKey {
    /// The encrypted text holding the key.
    pub ssh_key_secret_file_id: String,
    /// The encrypted text holding its passphrase.
    pub passphrase_secret_id: Option<String>,
}

/// `sshKeyFile`.
#[derive(InputObject)]
#[graphql(name = "SSHKeyFile")]
pub struct SshKeyFile {
    /// The key file's path on the agent's host.
    pub path: String,
    /// The encrypted text holding its passphrase.
    pub passphrase_secret_id: Option<String>,
}

/// `serverPassword`.
#[derive(InputObject)]
#[graphql(name = "SSHPassword")]
pub struct SshPassword {
    /// The encrypted text holding the password.
    pub password_secret_id: String,
}

/// `sshAuthenticationMethod`.
#[derive(InputObject)]
#[graphql(name = "SSHAuthenticationMethod")]
pub struct SshAuthenticationMethod {
    /// Which of the three.
    pub ssh_credential_type: SshCredentialType,
    /// For `SSH_KEY`.
    #[graphql(name = "inlineSSHKey")]
    pub inline_ssh_key: Option<InlineSshKey>,
    /// For `SSH_KEY_FILE_PATH`.
    #[graphql(name = "sshKeyFile")]
    pub ssh_key_file: Option<SshKeyFile>,
    /// For `PASSWORD`.
    pub server_password: Option<SshPassword>,
}

/// `sshAuthentication`.
#[derive(InputObject)]
#[graphql(name = "SSHAuthenticationInput")]
pub struct SshAuthenticationInput {
    /// Login user.
    pub user_name: String,
    /// Port.
    pub port: i32,
    /// How to authenticate.
    pub ssh_authentication_method: SshAuthenticationMethod,
}

/// Kerberos (accepted by the schema, refused as unsupported).
#[derive(InputObject)]
pub struct KerberosAuthenticationInput {
    /// Principal.
    pub principal: String,
    /// Realm.
    pub realm: String,
    /// Port.
    pub port: i32,
}

/// `sshCredential` in `createSecret`, plus `hostKeys` (this project's host-key pinning).
#[derive(InputObject)]
#[graphql(name = "SSHCredentialInput")]
pub struct SshCredentialInput {
    /// Name, unique among SSH credentials.
    pub name: String,
    /// `SSH`.
    pub authentication_scheme: SshAuthenticationScheme,
    /// User, port, method.
    pub ssh_authentication: Option<SshAuthenticationInput>,
    /// Not served.
    pub kerberos_authentication: Option<KerberosAuthenticationInput>,
    /// Who may use it.
    pub usage_scope: Option<UsageScopeInput>,
    /// Pinned host keys: known_hosts lines or `SHA256:` fingerprints. Without them the
    /// agent host's known_hosts files decide; unknown keys are always refused.
    pub host_keys: Option<Vec<String>>,
}

/// `sshCredential` in `updateSecret`.
#[derive(InputObject)]
#[graphql(name = "UpdateSSHCredential")]
pub struct UpdateSshCredential {
    /// New name.
    pub name: Option<String>,
    /// `SSH`.
    pub authentication_scheme: Option<SshAuthenticationScheme>,
    /// New user, port, method.
    pub ssh_authentication: Option<SshAuthenticationInput>,
    /// Not served.
    pub kerberos_authentication: Option<KerberosAuthenticationInput>,
    /// New scope.
    pub usage_scope: Option<UsageScopeInput>,
    /// New pinned host keys.
    pub host_keys: Option<Vec<String>>,
}

/// `createSecret(input: …)`.
#[derive(InputObject)]
pub struct CreateSecretInput {
    /// Echoed in the payload.
    pub client_mutation_id: Option<String>,
    /// `ENCRYPTED_TEXT` or `SSH_CREDENTIAL`.
    pub secret_type: SecretType,
    /// For `ENCRYPTED_TEXT`.
    pub encrypted_text: Option<EncryptedTextInput>,
    /// For `SSH_CREDENTIAL`.
    pub ssh_credential: Option<SshCredentialInput>,
}

/// `updateSecret(input: …)`.
#[derive(InputObject)]
pub struct UpdateSecretInput {
    /// Echoed in the payload.
    pub client_mutation_id: Option<String>,
    /// Which secret.
    pub secret_id: String,
    /// Its type.
    pub secret_type: SecretType,
    /// For `ENCRYPTED_TEXT`.
    pub encrypted_text: Option<UpdateEncryptedText>,
    /// For `SSH_CREDENTIAL`.
    pub ssh_credential: Option<UpdateSshCredential>,
}

/// `deleteSecret(input: …)`.
#[derive(InputObject)]
pub struct DeleteSecretInput {
    /// Echoed in the payload.
    pub client_mutation_id: Option<String>,
    /// Which secret.
    pub secret_id: String,
    /// Its type.
    pub secret_type: SecretType,
}

/// `createTemplate(input: …)` (this project's extension).
#[derive(InputObject)]
pub struct CreateTemplateInput {
    /// Echoed in the payload.
    pub client_mutation_id: Option<String>,
    /// Name, unique among templates.
    pub name: String,
    /// The bash script; it leaves the secret in `$secret`.
    pub script_string: String,
    /// Declared variable names.
    pub variables: Option<Vec<String>>,
    /// Per-attempt timeout in milliseconds (default 60 000).
    pub timeout_millis: Option<i64>,
}

/// `updateTemplate(input: …)`: only the fields given are changed.
#[derive(InputObject)]
pub struct UpdateTemplateInput {
    /// Echoed in the payload.
    pub client_mutation_id: Option<String>,
    /// Which template.
    pub template_id: String,
    /// New name.
    pub name: Option<String>,
    /// New script.
    pub script_string: Option<String>,
    /// New variables.
    pub variables: Option<Vec<String>>,
    /// New timeout.
    pub timeout_millis: Option<i64>,
}

/// `deleteTemplate(input: …)`.
#[derive(InputObject)]
pub struct DeleteTemplateInput {
    /// Echoed in the payload.
    pub client_mutation_id: Option<String>,
    /// Which template.
    pub template_id: String,
}

/// `resolveSecret(input: …)`: a consumer reads a secret's value.
#[derive(InputObject)]
pub struct ResolveSecretInput {
    /// Echoed in the payload.
    pub client_mutation_id: Option<String>,
    /// The encrypted text.
    pub secret_id: String,
    /// The consumer's application.
    pub app_id: Option<String>,
    /// The consumer's environment.
    pub env_id: Option<String>,
    /// The consumer's environment type.
    pub environment_type: Option<EnvironmentType>,
}
