//! The control plane's operations: templates, custom secrets managers, secrets and
//! resolving, with Harness's validation rules, on top of the [`Store`] and the [`Hub`].
//!
//! The GraphQL layer ([`crate::manager::graphql`]) parses and authorises; everything that
//! decides something lives here. Every operation returns an [`ApiError`] with a stable
//! code and a message that names fields, ids and kinds but never a value.
//!
//! - [`templates`]: create, update (refused while managers use the template), delete.
//! - [`managers`]: create and update validate by running the script with the test values
//!   on a matching agent; nothing is stored unless that succeeds.
//! - [`secrets`]: encrypted texts (built-in values, or parameters for a custom manager,
//!   validated by a fetch) and SSH credentials.
//! - [`resolve`]: scope checks, then the built-in value or a fetch through an agent.
//! - [`dispatch`]: turning a manager, its template and values into a hub task.

pub mod dispatch;
pub mod managers;
pub mod resolve;
pub mod secrets;
pub mod templates;

use std::sync::Arc;

use crate::error::{ErrorKind, Kind};
use crate::manager::audit::Auditor;
use crate::manager::hub::{Hub, HubError};
use crate::manager::store::crypto::{CryptoError, MasterKey};
use crate::manager::store::{ObjectKind, Row, Store, StoreError};

/// An API error: a stable code and a message free of values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// `invalid_input`, `not_found`, `conflict`, `in_use`, `forbidden`,
    /// `unauthenticated`, `out_of_scope`, `storage`, `busy`, or a script or dispatch
    /// error kind (`script_failed`, `no_agent`, `timeout`, …).
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// A validation failure.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError {
            code: "invalid_input",
            message: message.into(),
        }
    }

    /// An error with a code.
    pub fn new(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// No such object.
    pub fn not_found(what: &str, id: &str) -> ApiError {
        ApiError::new("not_found", format!("no {what} with id {id}"))
    }

    /// The key's role does not allow the operation.
    pub fn forbidden(operation: &str) -> ApiError {
        ApiError::new(
            "forbidden",
            format!("this API key's role may not call {operation}"),
        )
    }

    /// Refused while other objects use it.
    pub fn in_use(message: impl Into<String>) -> ApiError {
        ApiError::new("in_use", message)
    }

    /// From an error kind shared with the agent.
    pub fn kind(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError::new(kind.as_str(), message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match &e {
            StoreError::NameTaken { .. } | StoreError::IdTaken(_) | StoreError::Stale(_) => {
                ApiError::new("conflict", e.to_string())
            }
            StoreError::NotFound(id) => {
                ApiError::new("not_found", format!("no object with id {id}"))
            }
            StoreError::MissingRef(id) => ApiError::invalid(format!(
                "object {id}, which this one refers to, does not exist"
            )),
            StoreError::InUse { .. } => ApiError::in_use(e.to_string()),
            StoreError::Busy => ApiError::new("busy", e.to_string()),
            StoreError::Backend(_) => {
                tracing::error!("store failure: {e}");
                ApiError::new("storage", "the control plane's store failed; see its log")
            }
        }
    }
}

impl From<CryptoError> for ApiError {
    fn from(e: CryptoError) -> ApiError {
        tracing::error!("{e}");
        ApiError::new(
            "storage",
            "a stored value could not be decrypted; see the control plane's log",
        )
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> ApiError {
        ApiError::kind(e.kind(), e.to_string())
    }
}

/// Everything the operations need. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) key: Arc<MasterKey>,
    pub(crate) hub: Hub,
    pub(crate) audit: Auditor,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

/// The largest page a list query returns.
pub const MAX_PAGE: u32 = 1000;

impl ControlPlane {
    /// Operations over `store`, sealing with `key`, dispatching through `hub`.
    pub fn new(store: Arc<dyn Store>, key: Arc<MasterKey>, hub: Hub) -> ControlPlane {
        ControlPlane {
            audit: Auditor::new(store.clone()),
            store,
            key,
            hub,
        }
    }

    /// The auditor.
    pub fn auditor(&self) -> &Auditor {
        &self.audit
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A row of `kind` by id; `what` names the kind in the error.
    pub async fn get_kind(&self, kind: ObjectKind, id: &str, what: &str) -> Result<Row, ApiError> {
        match self.store.get(id).await? {
            Some(r) if r.kind == kind => Ok(r),
            _ => Err(ApiError::not_found(what, id)),
        }
    }

    /// A row of `kind` by id, if it exists.
    pub async fn find(&self, kind: ObjectKind, id: &str) -> Result<Option<Row>, ApiError> {
        Ok(self.store.get(id).await?.filter(|r| r.kind == kind))
    }

    /// A row of `kind` by name, if it exists.
    pub async fn find_by_name(
        &self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Option<Row>, ApiError> {
        Ok(self.store.get_by_name(kind, name).await?)
    }

    /// A page of rows of `kind`.
    pub async fn list(
        &self,
        kind: ObjectKind,
        limit: i32,
        offset: Option<i32>,
    ) -> Result<crate::manager::store::Page<Row>, ApiError> {
        let (limit, offset) = page_bounds(limit, offset)?;
        Ok(self.store.list(kind, limit, offset).await?)
    }
}

/// Check `limit` and `offset` (limit 0..=1000, offset ≥ 0).
pub fn page_bounds(limit: i32, offset: Option<i32>) -> Result<(u32, u64), ApiError> {
    if limit < 0 || limit as u32 > MAX_PAGE {
        return Err(ApiError::invalid(format!(
            "limit must be between 0 and {MAX_PAGE}"
        )));
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::invalid("offset must not be negative"));
    }
    Ok((limit as u32, offset as u64))
}

/// Harness's name rule for secret managers: `^[0-9a-zA-Z-' !_]+$`.
pub fn valid_manager_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '\'' | ' ' | '!' | '_'))
}

/// The rule for other names (templates, secrets): 1–128 characters, no control
/// characters, not blank.
pub fn check_name(name: &str, what: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "a {what} name must be 1 to 128 characters, not blank, without control characters"
        )));
    }
    Ok(())
}

/// A list of names as Harness prints a Java set: `[a, b]`.
pub fn set_text(names: &[String]) -> String {
    format!("[{}]", names.join(", "))
}
