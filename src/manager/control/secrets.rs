//! Secrets in Harness's shapes: encrypted texts and SSH credentials.
//!
//! - An encrypted text holds either a `value` in the built-in store (sealed), or, with a
//!   CUSTOM `secretManagerId`, its own `parameters` for the manager's template (sealed).
//!   A parameters secret is validated by a real fetch when it is created or its
//!   parameters change, as Harness does; the fetched value is dropped, never stored.
//! - An SSH credential names built-in secrets for its key, passphrase or password (or a
//!   key file path on the agent's host), and may pin host keys (`hostKeys`, this
//!   project's addition). Managers refer to it as `connectorId`.
//! - Exactly one of `value`, `secretReference` and `parameters`; `secretReference`
//!   belongs to other manager types and is refused.

use secrecy::{ExposeSecret, SecretString};

use crate::error::ErrorKind;
use crate::manager::audit::Trail;
use crate::manager::graphql::inputs::{
    CreateSecretInput, SecretType, SshAuthenticationInput, SshAuthenticationScheme,
    SshCredentialInput, UpdateSecretInput, UsageScopeInput,
};
use crate::manager::model::{self, ManagerBody, SecretMap, SshBody, SshCredentialType, TextBody};
use crate::manager::scope::UsageScope;
use crate::manager::store::{new_id, now_ms, ObjectKind, Row, StoreError};
use crate::protocol::TaskKind;

use super::dispatch::Plan;
use super::managers::params_to_map;
use super::{check_name, set_text, ApiError, ControlPlane};

/// The largest built-in value accepted (the agent's secret limit).
pub const MAX_VALUE_BYTES: usize = 4 << 20;

/// The stored kind for a GraphQL secret type.
pub fn kind_of(t: SecretType) -> Result<ObjectKind, ApiError> {
    match t {
        SecretType::EncryptedText => Ok(ObjectKind::EncryptedText),
        SecretType::SshCredential => Ok(ObjectKind::SshCredential),
        SecretType::EncryptedFile | SecretType::WinrmCredential => Err(ApiError::kind(
            ErrorKind::Unsupported,
            "only ENCRYPTED_TEXT and SSH_CREDENTIAL secrets are served",
        )),
    }
}

fn scope_of(s: Option<UsageScopeInput>) -> Result<Option<UsageScope>, ApiError> {
    match s {
        None => Ok(None),
        Some(s) => {
            let s = s.to_scope();
            s.validate().map_err(|e| ApiError::invalid(e.to_string()))?;
            Ok(Some(s))
        }
    }
}

fn name_conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::NameTaken { .. } => {
            ApiError::new("conflict", "There is already a secret with this name")
        }
        e => e.into(),
    }
}

impl ControlPlane {
    /// Check that `id` is a built-in encrypted text, for `what`.
    async fn check_builtin(&self, id: &str, what: &str) -> Result<(), ApiError> {
        let row = self
            .find(ObjectKind::EncryptedText, id)
            .await?
            .ok_or_else(|| ApiError::invalid(format!("{what}: no encrypted text with id {id}")))?;
        let body: TextBody = model::body(&row)
            .ok_or_else(|| ApiError::new("storage", "a stored secret is unreadable"))?;
        if body.secret_manager_id.is_some() {
            return Err(ApiError::invalid(format!(
                "{what}: secret {id} is held by a custom secrets manager; use a built-in secret"
            )));
        }
        Ok(())
    }

    /// Validate a parameters secret by fetching it once; the value is dropped.
    async fn validate_parameters(
        &self,
        manager_id: &str,
        params: &SecretMap,
        trail: &mut Trail,
    ) -> Result<(), ApiError> {
        let mrow = self
            .find(ObjectKind::SecretManager, manager_id)
            .await?
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "secretManagerId {manager_id} does not name a CUSTOM secrets manager"
                ))
            })?;
        let m: ManagerBody = model::body(&mrow)
            .ok_or_else(|| ApiError::new("storage", "a stored secret manager is unreadable"))?;
        let trow = self.pinned_template(&m).await?;
        let t: model::TemplateBody = model::body(&trow)
            .ok_or_else(|| ApiError::new("storage", "a stored template is unreadable"))?;
        let missing: Vec<String> = t
            .variables
            .iter()
            .filter(|v| !params.0.contains_key(*v))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::invalid(format!(
                "The values for the variables {} have not been provided as part of the parameters",
                set_text(&missing)
            )));
        }
        let value = self
            .run_script(
                Plan {
                    kind: TaskKind::Fetch,
                    manager: &m,
                    template: &trow,
                    values: params,
                },
                trail,
            )
            .await?;
        drop(value);
        Ok(())
    }

    /// The manager's template, if it has not changed since the manager was validated.
    pub(crate) async fn pinned_template(&self, m: &ManagerBody) -> Result<Row, ApiError> {
        let trow = self
            .find(ObjectKind::Template, &m.template_id)
            .await?
            .ok_or_else(|| {
                ApiError::invalid(format!("template {} no longer exists", m.template_id))
            })?;
        if trow.version != m.template_version {
            return Err(ApiError::invalid(
                "the template changed after the secret manager was validated; run updateSecretManager to validate it again",
            ));
        }
        Ok(trow)
    }

    async fn ssh_body(
        &self,
        a: SshAuthenticationInput,
        host_keys: Vec<String>,
        usage_scope: Option<UsageScope>,
    ) -> Result<(SshBody, Vec<String>), ApiError> {
        if a.user_name.trim().is_empty() {
            return Err(ApiError::invalid(
                "sshAuthentication.userName must not be empty",
            ));
        }
        let port = u16::try_from(a.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                ApiError::invalid("sshAuthentication.port must be between 1 and 65535")
            })?;
        for k in &host_keys {
            if k.trim().is_empty() || k.chars().any(|c| c.is_control()) {
                return Err(ApiError::invalid(
                    "every hostKeys entry must be one non-empty line",
                ));
            }
        }
        let m = a.ssh_authentication_method;
        let mut body = SshBody {
            user_name: a.user_name,
            port,
            credential_type: SshCredentialType::Password,
            key_secret_id: None,
            key_path: None,
            passphrase_secret_id: None,
            password_secret_id: None,
            host_keys,
            usage_scope,
        };
        use crate::manager::graphql::inputs::SshCredentialType as In;
        match m.ssh_credential_type {
            In::SshKey => {
                let k = m
                    .inline_ssh_key
                    .ok_or_else(|| ApiError::invalid("SSH_KEY needs inlineSSHKey"))?;
                body.credential_type = SshCredentialType::SshKey;
                body.key_secret_id = Some(k.ssh_key_secret_file_id);
                body.passphrase_secret_id = k.passphrase_secret_id.filter(|s| !s.is_empty());
            }
            In::SshKeyFilePath => {
                let k = m
                    .ssh_key_file
                    .ok_or_else(|| ApiError::invalid("SSH_KEY_FILE_PATH needs sshKeyFile"))?;
                if !k.path.starts_with('/') {
                    return Err(ApiError::invalid(
                        "sshKeyFile.path must be an absolute path on the agent's host",
                    ));
                }
                body.credential_type = SshCredentialType::SshKeyFilePath;
                body.key_path = Some(k.path);
                body.passphrase_secret_id = k.passphrase_secret_id.filter(|s| !s.is_empty());
            }
            In::Password => {
                let p = m
                    .server_password
                    .ok_or_else(|| ApiError::invalid("PASSWORD needs serverPassword"))?;
                body.credential_type = SshCredentialType::Password;
                body.password_secret_id = Some(p.password_secret_id);
            }
        }
        let mut refs = Vec::new();
        for (id, what) in [
            (&body.key_secret_id, "inlineSSHKey.sshKeySecretFileId"),
            (&body.passphrase_secret_id, "passphraseSecretId"),
            (&body.password_secret_id, "serverPassword.passwordSecretId"),
        ] {
            if let Some(id) = id {
                self.check_builtin(id, what).await?;
                refs.push(id.clone());
            }
        }
        Ok((body, refs))
    }

    /// `createSecret`.
    pub async fn create_secret(
        &self,
        input: CreateSecretInput,
        trail: &mut Trail,
    ) -> Result<Row, ApiError> {
        match kind_of(input.secret_type)? {
            ObjectKind::EncryptedText => {
                let t = input.encrypted_text.ok_or_else(|| {
                    ApiError::invalid("encryptedText is required for ENCRYPTED_TEXT")
                })?;
                let value = t.value.map(SecretString::from);
                let has_params = t.parameters.is_some();
                let params = params_to_map(t.parameters, "parameters")?;
                check_name(&t.name, "secret")?;
                let given =
                    value.is_some() as u8 + t.secret_reference.is_some() as u8 + has_params as u8;
                if given != 1 {
                    return Err(ApiError::invalid(
                        "give exactly one of value, secretReference and parameters",
                    ));
                }
                if t.secret_reference.is_some() {
                    return Err(ApiError::kind(
                        ErrorKind::Unsupported,
                        "secretReference is for other secret manager types; a CUSTOM manager takes parameters",
                    ));
                }
                let manager_id = t.secret_manager_id.filter(|s| !s.is_empty());
                let mut body = TextBody {
                    secret_manager_id: manager_id.clone(),
                    usage_scope: scope_of(t.usage_scope)?,
                    inherit_scopes_from_sm: t.inherit_scopes_from_sm.unwrap_or(false),
                    scoped_to_account: t.scoped_to_account.unwrap_or(false),
                    parameter_names: Vec::new(),
                };
                if self
                    .find_by_name(ObjectKind::EncryptedText, &t.name)
                    .await?
                    .is_some()
                {
                    return Err(ApiError::new(
                        "conflict",
                        "There is already a secret with this name",
                    ));
                }
                let id = new_id();
                let plain = match (value, manager_id) {
                    (Some(v), None) => {
                        if v.expose_secret().is_empty() || v.expose_secret().len() > MAX_VALUE_BYTES {
                            return Err(ApiError::invalid(format!(
                                "value must be 1 to {MAX_VALUE_BYTES} bytes"
                            )));
                        }
                        zeroize::Zeroizing::new(v.expose_secret().as_bytes().to_vec())
                    }
                    (Some(_), Some(m)) => {
                        return Err(ApiError::invalid(format!(
                            "secret manager {m} is a CUSTOM secrets manager, which is read-only: give parameters, not value"
                        )))
                    }
                    (None, None) => {
                        return Err(ApiError::invalid(
                            "parameters need secretManagerId, the id of a CUSTOM secrets manager",
                        ))
                    }
                    (None, Some(m)) => {
                        trail.object(&m);
                        self.validate_parameters(&m, &params, trail).await?;
                        body.parameter_names = params.names();
                        params.to_plain()
                    }
                };
                let mut row = model::new_row(ObjectKind::EncryptedText, id, t.name, &body);
                row.sealed = Some(model::seal(&self.key, &row.id, &plain));
                row.refs.extend(body.secret_manager_id.clone());
                trail.object(&row.id);
                self.store
                    .insert(row.clone())
                    .await
                    .map_err(name_conflict)?;
                Ok(row)
            }
            _ => {
                let s: SshCredentialInput = input.ssh_credential.ok_or_else(|| {
                    ApiError::invalid("sshCredential is required for SSH_CREDENTIAL")
                })?;
                check_name(&s.name, "secret")?;
                if s.authentication_scheme != SshAuthenticationScheme::Ssh
                    || s.kerberos_authentication.is_some()
                {
                    return Err(ApiError::kind(
                        ErrorKind::Unsupported,
                        "only authenticationScheme SSH is served",
                    ));
                }
                let a = s
                    .ssh_authentication
                    .ok_or_else(|| ApiError::invalid("sshAuthentication is required"))?;
                let (body, refs) = self
                    .ssh_body(a, s.host_keys.unwrap_or_default(), scope_of(s.usage_scope)?)
                    .await?;
                if self
                    .find_by_name(ObjectKind::SshCredential, &s.name)
                    .await?
                    .is_some()
                {
                    return Err(ApiError::new(
                        "conflict",
                        "There is already a secret with this name",
                    ));
                }
                let mut row = model::new_row(ObjectKind::SshCredential, new_id(), s.name, &body);
                row.refs = refs;
                trail.object(&row.id);
                self.store
                    .insert(row.clone())
                    .await
                    .map_err(name_conflict)?;
                Ok(row)
            }
        }
    }

    /// `updateSecret`: only the fields given change.
    pub async fn update_secret(
        &self,
        input: UpdateSecretInput,
        trail: &mut Trail,
    ) -> Result<Row, ApiError> {
        trail.object(&input.secret_id);
        let kind = kind_of(input.secret_type)?;
        let row = self
            .get_kind(kind, &input.secret_id, "secret of that secretType")
            .await?;
        let mut new = row.clone();
        new.updated_ms = now_ms();
        if kind == ObjectKind::EncryptedText {
            let Some(t) = input.encrypted_text else {
                return Ok(row);
            };
            let value = t.value.map(SecretString::from);
            let has_params = t.parameters.is_some();
            let params = params_to_map(t.parameters, "parameters")?;
            let mut body: TextBody = model::body(&row)
                .ok_or_else(|| ApiError::new("storage", "a stored secret is unreadable"))?;
            if t.secret_reference.is_some() {
                return Err(ApiError::kind(
                    ErrorKind::Unsupported,
                    "secretReference is not served",
                ));
            }
            if let Some(n) = t.name.filter(|n| !n.is_empty()) {
                check_name(&n, "secret")?;
                new.name = n;
            }
            if let Some(s) = t.usage_scope {
                body.usage_scope = scope_of(Some(s))?;
            }
            if let Some(v) = t.scoped_to_account {
                body.scoped_to_account = v;
            }
            if let Some(v) = t.inherit_scopes_from_sm {
                body.inherit_scopes_from_sm = v;
            }
            match (&body.secret_manager_id, value, has_params) {
                (_, Some(_), true) => return Err(ApiError::invalid("give value or parameters, not both")),
                (None, Some(v), _) => {
                    if v.expose_secret().is_empty() || v.expose_secret().len() > MAX_VALUE_BYTES {
                        return Err(ApiError::invalid(format!("value must be 1 to {MAX_VALUE_BYTES} bytes")));
                    }
                    new.sealed = Some(model::seal(&self.key, &row.id, v.expose_secret().as_bytes()));
                }
                (Some(_), Some(_), _) => {
                    return Err(ApiError::invalid(
                        "this secret is held by a CUSTOM secrets manager, which is read-only: give parameters, not value",
                    ))
                }
                (None, None, true) => {
                    return Err(ApiError::invalid("a built-in secret takes a value, not parameters"))
                }
                (Some(m), None, true) => {
                    let m = m.clone();
                    trail.object(&m);
                    self.validate_parameters(&m, &params, trail).await?;
                    body.parameter_names = params.names();
                    new.sealed = Some(model::seal(&self.key, &row.id, &params.to_plain()));
                }
                (_, None, false) => {}
            }
            new.body = serde_json::to_string(&body)
                .map_err(|e| ApiError::new("storage", e.to_string()))?;
        } else {
            let Some(s) = input.ssh_credential else {
                return Ok(row);
            };
            let mut body: SshBody = model::body(&row)
                .ok_or_else(|| ApiError::new("storage", "a stored SSH credential is unreadable"))?;
            if s.authentication_scheme
                .is_some_and(|a| a != SshAuthenticationScheme::Ssh)
                || s.kerberos_authentication.is_some()
            {
                return Err(ApiError::kind(
                    ErrorKind::Unsupported,
                    "only authenticationScheme SSH is served",
                ));
            }
            if let Some(n) = s.name.filter(|n| !n.is_empty()) {
                check_name(&n, "secret")?;
                new.name = n;
            }
            let scope = match s.usage_scope {
                Some(sc) => scope_of(Some(sc))?,
                None => body.usage_scope.clone(),
            };
            let host_keys = s.host_keys.unwrap_or_else(|| body.host_keys.clone());
            if let Some(a) = s.ssh_authentication {
                let (b, refs) = self.ssh_body(a, host_keys, scope).await?;
                body = b;
                new.refs = refs;
            } else {
                body.host_keys = host_keys;
                body.usage_scope = scope;
            }
            new.body = serde_json::to_string(&body)
                .map_err(|e| ApiError::new("storage", e.to_string()))?;
        }
        self.store
            .update(new.clone(), row.version)
            .await
            .map_err(name_conflict)?;
        new.version = row.version + 1;
        Ok(new)
    }

    /// `deleteSecret`: refused while a manager or a credential uses it.
    pub async fn delete_secret(
        &self,
        id: &str,
        secret_type: SecretType,
        trail: &mut Trail,
    ) -> Result<(), ApiError> {
        trail.object(id);
        let kind = kind_of(secret_type)?;
        let row = self.get_kind(kind, id, "secret of that secretType").await?;
        self.store
            .delete(kind, id, row.version)
            .await
            .map_err(|e| match e {
                StoreError::InUse { by, .. } => {
                    ApiError::in_use(format!("the secret is used by {}", set_text(&by)))
                }
                e => e.into(),
            })
    }
}
