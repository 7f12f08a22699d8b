//! `resolveSecret`: a consumer reads a secret's value, within the usage scope of both the
//! secret and its manager.
//!
//! The secret's own scope applies, or the manager's in its place when
//! `inheritScopesFromSM` is set; the manager's scope always applies too. A request out of
//! scope gets `out_of_scope` and no value, and no script runs.

use crate::manager::audit::Trail;
use crate::manager::graphql::inputs::{EnvironmentType, ResolveSecretInput};
use crate::manager::model::{self, ManagerBody, SecretMap, TextBody};
use crate::manager::scope::{self, UsageScope};
use crate::manager::store::ObjectKind;
use crate::protocol::TaskKind;
use crate::secret::{secret_bytes, SecretBytes};

use super::dispatch::Plan;
use super::{ApiError, ControlPlane};

fn out_of_scope(what: &str, id: &str) -> ApiError {
    ApiError::new(
        "out_of_scope",
        format!("the usage scope of {what} {id} does not include this application and environment"),
    )
}

fn allows(s: Option<&UsageScope>, req: &scope::Request<'_>) -> bool {
    s.map_or(true, |s| s.allows(req))
}

impl ControlPlane {
    /// `resolveSecret`.
    pub async fn resolve(
        &self,
        input: &ResolveSecretInput,
        trail: &mut Trail,
    ) -> Result<SecretBytes, ApiError> {
        let id = input.secret_id.as_str();
        trail.object(id);
        let row = match self.store.get(id).await? {
            Some(r) if r.kind == ObjectKind::EncryptedText => r,
            Some(_) => {
                return Err(ApiError::invalid(
                    "only ENCRYPTED_TEXT secrets can be resolved",
                ))
            }
            None => return Err(ApiError::not_found("secret", id)),
        };
        let body: TextBody = model::body(&row)
            .ok_or_else(|| ApiError::new("storage", "a stored secret is unreadable"))?;
        let req = scope::Request {
            app_id: input.app_id.as_deref(),
            env_id: input.env_id.as_deref(),
            environment_type: input.environment_type.map(|t| match t {
                EnvironmentType::Prod => scope::EnvironmentType::Prod,
                EnvironmentType::NonProd => scope::EnvironmentType::NonProd,
            }),
        };
        let Some(mid) = body.secret_manager_id.clone() else {
            if !allows(body.usage_scope.as_ref(), &req) {
                return Err(out_of_scope("secret", id));
            }
            let plain = model::open(&self.key, &row)?;
            return Ok(secret_bytes(plain.to_vec()));
        };
        trail.object(&mid);
        let mrow = self
            .get_kind(ObjectKind::SecretManager, &mid, "secret manager")
            .await?;
        let m: ManagerBody = model::body(&mrow)
            .ok_or_else(|| ApiError::new("storage", "a stored secret manager is unreadable"))?;
        let own = if body.inherit_scopes_from_sm {
            m.usage_scope.as_ref()
        } else {
            body.usage_scope.as_ref()
        };
        if !allows(own, &req) {
            return Err(out_of_scope("secret", id));
        }
        if !allows(m.usage_scope.as_ref(), &req) {
            return Err(out_of_scope("secret manager", &mid));
        }
        let trow = self.pinned_template(&m).await?;
        trail.object(&trow.id);
        let params = SecretMap::from_plain(&model::open(&self.key, &row)?)
            .ok_or_else(|| ApiError::new("storage", "stored parameters are unreadable"))?;
        self.run_script(
            Plan {
                kind: TaskKind::Fetch,
                manager: &m,
                template: &trow,
                values: &params,
            },
            trail,
        )
        .await
    }
}
