//! Custom secrets managers: Harness's validation rules and messages, and validation by a
//! real run of the script with the test values before anything is stored.
//!
//! Rules (Harness's `CustomSecretsManagerValidationUtils`, and the notes):
//! - `secretManagerType` must be `CUSTOM`; `isDefault: true` is refused.
//! - The name matches `^[0-9a-zA-Z-' !_]+$` and is unique ("There might be already a
//!   secret manager with this name").
//! - `templateId` names a template; every template variable has a test value ("The
//!   values for the variables [a, b] have not been provided as part of test parameters").
//! - `commandPath` defaults to `/tmp`, then must not be empty.
//! - Without `executeOnDelegate`: `host` is required, and an SSH credential `connectorId`
//!   (from the test variable `connectorId` when `isConnectorTemplatized`).
//! - An update copies only the non-empty fields it gives; `executeOnDelegate` and
//!   `isConnectorTemplatized` are fixed after creation (giving a different value is an
//!   error rather than silently ignored).
//! - Delete is refused while secrets use the manager.

use secrecy::SecretString;

use crate::error::ErrorKind;
use crate::manager::audit::Trail;
use crate::manager::graphql::inputs::{
    CreateSecretManagerInput, EncryptedDataParams, SecretManagerType, UpdateSecretManagerInput,
};
use crate::manager::model::{self, ManagerBody, SecretMap, TemplateBody};
use crate::manager::store::{new_id, now_ms, ObjectKind, Row, StoreError};
use crate::protocol::TaskKind;

use super::dispatch::Plan;
use super::{set_text, valid_manager_name, ApiError, ControlPlane};

/// Harness's message for a duplicate name.
pub const NAME_TAKEN: &str = "There might be already a secret manager with this name";

/// Harness's message for missing test values (`%s` is the set of names).
pub fn missing_test_values(names: &[String]) -> String {
    format!(
        "The values for the variables {} have not been provided as part of test parameters",
        set_text(names)
    )
}

/// Move `{name, value}` inputs into a [`SecretMap`]; `field` names the input in errors.
pub fn params_to_map(
    params: Option<Vec<Option<EncryptedDataParams>>>,
    field: &str,
) -> Result<SecretMap, ApiError> {
    let mut map = SecretMap::default();
    for (i, p) in params.into_iter().flatten().enumerate() {
        let Some(p) = p else { continue };
        // Take the value into a secret first, so that every early return drops it zeroised.
        let value = p.value.map(SecretString::from);
        let name = p
            .name
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| ApiError::invalid(format!("{field}[{i}] has no name")))?;
        if map.0.contains_key(&name) {
            return Err(ApiError::invalid(format!("{field} gives {name} twice")));
        }
        if let Some(v) = value {
            map.0.insert(name, v);
        }
    }
    Ok(map)
}

fn not_custom() -> ApiError {
    ApiError::kind(
        ErrorKind::Unsupported,
        "only secretManagerType CUSTOM is served by this control plane",
    )
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|x| !x.trim().is_empty())
}

fn selectors(v: Option<Vec<Option<String>>>) -> Option<Vec<String>> {
    v.map(|v| {
        v.into_iter()
            .flatten()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

impl ControlPlane {
    async fn template_for(&self, id: &str) -> Result<(Row, TemplateBody), ApiError> {
        let row = self.find(ObjectKind::Template, id).await?.ok_or_else(|| {
            ApiError::invalid(format!(
                "templateId {id} does not name a shell-script template"
            ))
        })?;
        let body = model::body(&row)
            .ok_or_else(|| ApiError::new("storage", "a stored template is unreadable"))?;
        Ok((row, body))
    }

    /// Every rule that needs no agent.
    async fn check_manager(
        &self,
        m: &ManagerBody,
        t: &TemplateBody,
        values: &SecretMap,
    ) -> Result<(), ApiError> {
        if m.command_path.trim().is_empty() {
            return Err(ApiError::invalid("commandPath must not be empty"));
        }
        if let Some(s) = &m.usage_scope {
            s.validate().map_err(|e| ApiError::invalid(e.to_string()))?;
        }
        let missing: Vec<String> = t
            .variables
            .iter()
            .filter(|v| !values.0.contains_key(*v))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::invalid(missing_test_values(&missing)));
        }
        if !m.execute_on_delegate {
            if m.host.as_deref().map_or(true, |h| h.trim().is_empty()) {
                return Err(ApiError::invalid(
                    "host is required when the script does not run on a delegate (executeOnDelegate: false)",
                ));
            }
            let connector = if m.is_connector_templatized {
                values
                    .0
                    .get("connectorId")
                    .map(|v| secrecy::ExposeSecret::expose_secret(v).to_string())
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "isConnectorTemplatized: testVariables must include connectorId, the SSH credential's id",
                        )
                    })?
            } else {
                m.connector_id.clone().ok_or_else(|| {
                    ApiError::invalid(
                        "connectorId is required when the script does not run on a delegate (executeOnDelegate: false)",
                    )
                })?
            };
            if self
                .find(ObjectKind::SshCredential, &connector)
                .await?
                .is_none()
            {
                return Err(ApiError::invalid(format!(
                    "connectorId {connector} does not name an SSH credential"
                )));
            }
        }
        Ok(())
    }

    fn manager_row(&self, id: String, name: String, m: &ManagerBody, values: &SecretMap) -> Row {
        let mut row = model::new_row(ObjectKind::SecretManager, id, name, m);
        row.sealed = Some(model::seal(&self.key, &row.id, &values.to_plain()));
        row.refs.push(m.template_id.clone());
        if !m.execute_on_delegate && !m.is_connector_templatized {
            row.refs.extend(m.connector_id.clone());
        }
        row
    }

    /// `createSecretManager`.
    pub async fn create_manager(
        &self,
        input: CreateSecretManagerInput,
        trail: &mut Trail,
    ) -> Result<Row, ApiError> {
        let c = input.custom_secret_manager_input;
        if input.secret_manager_type != SecretManagerType::Custom {
            return Err(not_custom());
        }
        let c = c.ok_or_else(|| ApiError::invalid("customSecretManagerInput is required"))?;
        let values = params_to_map(c.test_variables, "testVariables")?;
        if c.is_default == Some(true) {
            return Err(ApiError::invalid(
                "A custom secret manager cannot be the default secret manager",
            ));
        }
        let name = c.name.unwrap_or_default();
        if !valid_manager_name(&name) {
            return Err(ApiError::invalid(
                "The name must match ^[0-9a-zA-Z-' !_]+$: letters, digits, spaces and - ' ! _",
            ));
        }
        let template_id =
            non_empty(c.template_id).ok_or_else(|| ApiError::invalid("templateId is required"))?;
        trail.object(&template_id);
        let (template, tbody) = self.template_for(&template_id).await?;
        let execute_on_delegate = c.execute_on_delegate.unwrap_or(false);
        let m = ManagerBody {
            template_id,
            template_version: template.version,
            delegate_selectors: selectors(c.delegate_selectors).unwrap_or_default(),
            execute_on_delegate,
            is_connector_templatized: c.is_connector_templatized.unwrap_or(false),
            host: non_empty(c.host),
            command_path: non_empty(c.command_path).unwrap_or_else(|| "/tmp".into()),
            connector_id: non_empty(c.connector_id),
            usage_scope: c.usage_scope.map(|s| s.to_scope()),
            test_variable_names: values.names(),
        };
        if let Some(conn) = &m.connector_id {
            trail.object(conn);
        }
        self.check_manager(&m, &tbody, &values).await?;
        if self
            .find_by_name(ObjectKind::SecretManager, &name)
            .await?
            .is_some()
        {
            return Err(ApiError::new("conflict", NAME_TAKEN));
        }
        self.run_script(
            Plan {
                kind: TaskKind::Validate,
                manager: &m,
                template: &template,
                values: &values,
            },
            trail,
        )
        .await?;
        let row = self.manager_row(new_id(), name, &m, &values);
        trail.object(&row.id);
        self.store.insert(row.clone()).await.map_err(|e| match e {
            StoreError::NameTaken { .. } => ApiError::new("conflict", NAME_TAKEN),
            e => e.into(),
        })?;
        Ok(row)
    }

    /// `updateSecretManager`: only the non-empty fields given change; validates again.
    pub async fn update_manager(
        &self,
        input: UpdateSecretManagerInput,
        trail: &mut Trail,
    ) -> Result<Row, ApiError> {
        let c = input.custom_secret_manager_input;
        trail.object(&input.secret_manager_id);
        if input.secret_manager_type != SecretManagerType::Custom {
            return Err(not_custom());
        }
        let row = self
            .get_kind(
                ObjectKind::SecretManager,
                &input.secret_manager_id,
                "secret manager",
            )
            .await?;
        let Some(c) = c else {
            return Ok(row);
        };
        let given_values = params_to_map(c.test_variables, "testVariables")?;
        let mut m: ManagerBody = model::body(&row)
            .ok_or_else(|| ApiError::new("storage", "a stored secret manager is unreadable"))?;
        if c.is_default == Some(true) {
            return Err(ApiError::invalid(
                "A custom secret manager cannot be the default secret manager",
            ));
        }
        if c.execute_on_delegate
            .is_some_and(|v| v != m.execute_on_delegate)
        {
            return Err(ApiError::invalid(
                "executeOnDelegate cannot be changed after the secret manager is created",
            ));
        }
        if c.is_connector_templatized
            .is_some_and(|v| v != m.is_connector_templatized)
        {
            return Err(ApiError::invalid(
                "isConnectorTemplatized cannot be changed after the secret manager is created",
            ));
        }
        let mut name = row.name.clone();
        if let Some(n) = non_empty(c.name) {
            if !valid_manager_name(&n) {
                return Err(ApiError::invalid(
                    "The name must match ^[0-9a-zA-Z-' !_]+$: letters, digits, spaces and - ' ! _",
                ));
            }
            name = n;
        }
        if let Some(t) = non_empty(c.template_id) {
            m.template_id = t;
        }
        trail.object(&m.template_id);
        if let Some(s) = selectors(c.delegate_selectors).filter(|s| !s.is_empty()) {
            m.delegate_selectors = s;
        }
        if let Some(h) = non_empty(c.host) {
            m.host = Some(h);
        }
        if let Some(p) = non_empty(c.command_path) {
            m.command_path = p;
        }
        if let Some(conn) = non_empty(c.connector_id) {
            m.connector_id = Some(conn);
        }
        if let Some(s) = c.usage_scope {
            m.usage_scope = Some(s.to_scope());
        }
        let values = if given_values.0.is_empty() {
            SecretMap::from_plain(&model::open(&self.key, &row)?)
                .ok_or_else(|| ApiError::new("storage", "stored test variables are unreadable"))?
        } else {
            given_values
        };
        m.test_variable_names = values.names();
        let (template, tbody) = self.template_for(&m.template_id).await?;
        m.template_version = template.version;
        self.check_manager(&m, &tbody, &values).await?;
        if name != row.name
            && self
                .find_by_name(ObjectKind::SecretManager, &name)
                .await?
                .is_some()
        {
            return Err(ApiError::new("conflict", NAME_TAKEN));
        }
        self.run_script(
            Plan {
                kind: TaskKind::Validate,
                manager: &m,
                template: &template,
                values: &values,
            },
            trail,
        )
        .await?;
        let mut new = self.manager_row(row.id.clone(), name, &m, &values);
        new.created_ms = row.created_ms;
        new.updated_ms = now_ms();
        self.store
            .update(new.clone(), row.version)
            .await
            .map_err(|e| match e {
                StoreError::NameTaken { .. } => ApiError::new("conflict", NAME_TAKEN),
                e => e.into(),
            })?;
        new.version = row.version + 1;
        Ok(new)
    }

    /// `deleteSecretManager`: refused while secrets use it.
    pub async fn delete_manager(&self, id: &str, trail: &mut Trail) -> Result<(), ApiError> {
        trail.object(id);
        let row = self
            .get_kind(ObjectKind::SecretManager, id, "secret manager")
            .await?;
        self.store
            .delete(ObjectKind::SecretManager, id, row.version)
            .await
            .map_err(|e| match e {
                StoreError::InUse { by, .. } => ApiError::in_use(format!(
                    "Cannot delete the secret manager: it is used by {} secret(s) {}",
                    by.len(),
                    set_text(&by)
                )),
                e => e.into(),
            })
    }
}
