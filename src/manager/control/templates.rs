//! Templates: this project's extension (Harness makes them in its UI).
//!
//! **A template in use cannot change.** `updateTemplate` is refused while any secrets
//! manager uses the template, and so is `deleteTemplate`. Harness's rule is that a
//! manager's script has run successfully with the manager's test values before anyone can
//! fetch through it; silently changing the script under existing managers would break
//! that, and re-validating every manager on each edit would make one edit run many
//! scripts with many test values, any of which may fail halfway. Instead: create a new
//! template and point each manager at it with `updateSecretManager`, which validates.
//! As a second line, each manager pins the template version it was validated against,
//! and a fetch through a template that has moved on since is refused.

use crate::manager::audit::Trail;
use crate::manager::graphql::inputs::{CreateTemplateInput, UpdateTemplateInput};
use crate::manager::model::{self, TemplateBody};
use crate::manager::store::{new_id, now_ms, ObjectKind, Row};

use super::{check_name, ApiError, ControlPlane};

/// The largest script accepted.
pub const MAX_SCRIPT_BYTES: usize = 1 << 20;

/// The longest per-attempt timeout accepted (10 minutes).
pub const MAX_TIMEOUT_MILLIS: i64 = 600_000;

fn check_body(body: &TemplateBody) -> Result<(), ApiError> {
    if body.script_string.trim().is_empty() {
        return Err(ApiError::invalid("scriptString must not be empty"));
    }
    if body.script_string.len() > MAX_SCRIPT_BYTES {
        return Err(ApiError::invalid(format!(
            "scriptString is longer than {MAX_SCRIPT_BYTES} bytes"
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for v in &body.variables {
        if !crate::template::is_valid_variable_name(v) {
            return Err(ApiError::invalid(
                "every variable must be a name: letters, digits and _, not starting with a digit",
            ));
        }
        if !seen.insert(v) {
            return Err(ApiError::invalid(format!("variable {v} is declared twice")));
        }
    }
    if let Some(t) = body.timeout_millis {
        if t == 0 || t as i64 > MAX_TIMEOUT_MILLIS {
            return Err(ApiError::invalid(format!(
                "timeoutMillis must be between 1 and {MAX_TIMEOUT_MILLIS}"
            )));
        }
    }
    Ok(())
}

fn timeout(t: Option<i64>) -> Result<Option<u64>, ApiError> {
    match t {
        None => Ok(None),
        Some(t) if (1..=MAX_TIMEOUT_MILLIS).contains(&t) => Ok(Some(t as u64)),
        Some(_) => Err(ApiError::invalid(format!(
            "timeoutMillis must be between 1 and {MAX_TIMEOUT_MILLIS}"
        ))),
    }
}

impl ControlPlane {
    /// `createTemplate`.
    pub async fn create_template(
        &self,
        input: CreateTemplateInput,
        trail: &mut Trail,
    ) -> Result<Row, ApiError> {
        check_name(&input.name, "template")?;
        let body = TemplateBody {
            script_string: input.script_string,
            variables: input.variables.unwrap_or_default(),
            timeout_millis: timeout(input.timeout_millis)?,
        };
        check_body(&body)?;
        if self
            .find_by_name(ObjectKind::Template, &input.name)
            .await?
            .is_some()
        {
            return Err(ApiError::new(
                "conflict",
                "There is already a template with this name",
            ));
        }
        let row = model::new_row(ObjectKind::Template, new_id(), input.name, &body);
        trail.object(&row.id);
        self.store
            .insert(row.clone())
            .await
            .map_err(name_conflict)?;
        Ok(row)
    }

    /// `updateTemplate`: only the fields given change; refused while in use.
    pub async fn update_template(
        &self,
        input: UpdateTemplateInput,
        trail: &mut Trail,
    ) -> Result<Row, ApiError> {
        trail.object(&input.template_id);
        let mut row = self
            .get_kind(ObjectKind::Template, &input.template_id, "template")
            .await?;
        let users = self.store.referrers(&row.id).await?;
        if !users.is_empty() {
            return Err(ApiError::in_use(format!(
                "the template is used by secret managers {}; create a new template and point them at it with updateSecretManager (which validates it)",
                super::set_text(&users)
            )));
        }
        let mut body: TemplateBody = model::body(&row)
            .ok_or_else(|| ApiError::new("storage", "a stored template is unreadable"))?;
        if let Some(n) = input.name.filter(|n| !n.is_empty()) {
            check_name(&n, "template")?;
            row.name = n;
        }
        if let Some(s) = input.script_string {
            body.script_string = s;
        }
        if let Some(v) = input.variables {
            body.variables = v;
        }
        if input.timeout_millis.is_some() {
            body.timeout_millis = timeout(input.timeout_millis)?;
        }
        check_body(&body)?;
        let expected = row.version;
        row.body =
            serde_json::to_string(&body).map_err(|e| ApiError::new("storage", e.to_string()))?;
        row.updated_ms = now_ms();
        self.store
            .update(row.clone(), expected)
            .await
            .map_err(name_conflict)?;
        row.version = expected + 1;
        Ok(row)
    }

    /// `deleteTemplate`: refused while in use.
    pub async fn delete_template(&self, id: &str, trail: &mut Trail) -> Result<(), ApiError> {
        trail.object(id);
        let row = self.get_kind(ObjectKind::Template, id, "template").await?;
        self.store
            .delete(ObjectKind::Template, id, row.version)
            .await
            .map_err(|e| match e {
                crate::manager::store::StoreError::InUse { by, .. } => ApiError::in_use(format!(
                    "the template is used by secret managers {}",
                    super::set_text(&by)
                )),
                e => e.into(),
            })
    }
}

fn name_conflict(e: crate::manager::store::StoreError) -> ApiError {
    match e {
        crate::manager::store::StoreError::NameTaken { .. } => {
            ApiError::new("conflict", "There is already a template with this name")
        }
        e => e.into(),
    }
}
