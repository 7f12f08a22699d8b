//! Usage scopes: which applications and environments may use a secret or a secrets
//! manager, in Harness's shape (`usageScope.appEnvScopes[]`).
//!
//! Each entry pairs an application filter (`filterType: ALL`, or one `appId`) with an
//! environment filter (`filterType: PRODUCTION_ENVIRONMENTS | NON_PRODUCTION_ENVIRONMENTS`,
//! or one `envId`). A filter that gives both an id and a filterType, or neither, is
//! rejected when the object is created. A request is in scope when some entry matches
//! both its application and its environment:
//!
//! | filter | matches a request with |
//! |---|---|
//! | application `ALL` | any `appId`, or none |
//! | application `appId: A` | `appId: A` |
//! | environment `PRODUCTION_ENVIRONMENTS` | `environmentType: PROD` |
//! | environment `NON_PRODUCTION_ENVIRONMENTS` | `environmentType: NON_PROD` |
//! | environment `envId: E` | `envId: E` |
//!
//! An object with no scope (absent, or an empty list) is unrestricted: that is Harness's
//! account-level default. A request that names no environment matches no environment
//! filter, so a scoped object is never resolved for "somewhere unspecified".

use serde::{Deserialize, Serialize};

/// An application filter type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppFilterType {
    /// Every application.
    #[serde(rename = "ALL")]
    All,
}

/// An environment filter type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvFilterType {
    /// Production environments.
    #[serde(rename = "PRODUCTION_ENVIRONMENTS")]
    Production,
    /// Non-production environments.
    #[serde(rename = "NON_PRODUCTION_ENVIRONMENTS")]
    NonProduction,
}

/// The environment type a consumer says it runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvironmentType {
    /// Production.
    Prod,
    /// Anything else.
    NonProd,
}

/// An application filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppFilter {
    /// `ALL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_type: Option<AppFilterType>,
    /// One application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
}

/// An environment filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvFilter {
    /// Production or non-production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_type: Option<EnvFilterType>,
    /// One environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_id: Option<String>,
}

/// One application × environment entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppEnvScope {
    /// Which applications.
    pub application: AppFilter,
    /// Which environments.
    pub environment: EnvFilter,
}

/// A usage scope: any entry may match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageScope {
    /// The entries.
    #[serde(default)]
    pub app_env_scopes: Vec<AppEnvScope>,
}

/// Where a consumer is resolving a secret.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// The application.
    pub app_id: Option<&'a str>,
    /// The environment.
    pub env_id: Option<&'a str>,
    /// The environment's type.
    pub environment_type: Option<EnvironmentType>,
}

/// Why a scope is malformed; names the entry, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Both or neither of `filterType` and `appId`.
    #[error(
        "usageScope.appEnvScopes[{0}].application must give exactly one of filterType and appId"
    )]
    Application(usize),
    /// Both or neither of `filterType` and `envId`.
    #[error(
        "usageScope.appEnvScopes[{0}].environment must give exactly one of filterType and envId"
    )]
    Environment(usize),
    /// An empty id.
    #[error("usageScope.appEnvScopes[{0}] has an empty id")]
    EmptyId(usize),
}

impl UsageScope {
    /// Check the shape: every filter gives exactly one of an id and a filterType.
    pub fn validate(&self) -> Result<(), ScopeError> {
        for (i, s) in self.app_env_scopes.iter().enumerate() {
            if s.application.filter_type.is_some() == s.application.app_id.is_some() {
                return Err(ScopeError::Application(i));
            }
            if s.environment.filter_type.is_some() == s.environment.env_id.is_some() {
                return Err(ScopeError::Environment(i));
            }
            let empty = |v: &Option<String>| v.as_deref().is_some_and(|x| x.trim().is_empty());
            if empty(&s.application.app_id) || empty(&s.environment.env_id) {
                return Err(ScopeError::EmptyId(i));
            }
        }
        Ok(())
    }

    /// Whether there are no entries (unrestricted).
    pub fn is_unrestricted(&self) -> bool {
        self.app_env_scopes.is_empty()
    }

    /// Whether `req` is within the scope.
    pub fn allows(&self, req: &Request<'_>) -> bool {
        self.is_unrestricted() || self.app_env_scopes.iter().any(|s| entry_allows(s, req))
    }
}

fn entry_allows(s: &AppEnvScope, req: &Request<'_>) -> bool {
    let app = match (&s.application.filter_type, &s.application.app_id) {
        (Some(AppFilterType::All), _) => true,
        (None, Some(id)) => req.app_id == Some(id.as_str()),
        (None, None) => false,
    };
    let env = match (&s.environment.filter_type, &s.environment.env_id) {
        (Some(EnvFilterType::Production), _) => req.environment_type == Some(EnvironmentType::Prod),
        (Some(EnvFilterType::NonProduction), _) => {
            req.environment_type == Some(EnvironmentType::NonProd)
        }
        (None, Some(id)) => req.env_id == Some(id.as_str()),
        (None, None) => false,
    };
    app && env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(app: AppFilter, env: EnvFilter) -> UsageScope {
        UsageScope {
            app_env_scopes: vec![AppEnvScope {
                application: app,
                environment: env,
            }],
        }
    }
    fn all() -> AppFilter {
        AppFilter {
            filter_type: Some(AppFilterType::All),
            app_id: None,
        }
    }
    fn app(id: &str) -> AppFilter {
        AppFilter {
            filter_type: None,
            app_id: Some(id.into()),
        }
    }
    fn prod() -> EnvFilter {
        EnvFilter {
            filter_type: Some(EnvFilterType::Production),
            env_id: None,
        }
    }
    fn env(id: &str) -> EnvFilter {
        EnvFilter {
            filter_type: None,
            env_id: Some(id.into()),
        }
    }

    #[test]
    fn matrix() {
        let p = |app_id, env_id, t| Request {
            app_id,
            env_id,
            environment_type: t,
        };
        let s = scope(all(), prod());
        assert!(s.allows(&p(Some("a"), None, Some(EnvironmentType::Prod))));
        assert!(s.allows(&p(None, None, Some(EnvironmentType::Prod))));
        assert!(!s.allows(&p(Some("a"), None, Some(EnvironmentType::NonProd))));
        assert!(!s.allows(&p(Some("a"), Some("e"), None)));
        let s = scope(app("a1"), env("e1"));
        assert!(s.allows(&p(Some("a1"), Some("e1"), None)));
        assert!(!s.allows(&p(Some("a2"), Some("e1"), None)));
        assert!(!s.allows(&p(Some("a1"), Some("e2"), Some(EnvironmentType::Prod))));
        assert!(!s.allows(&p(None, Some("e1"), None)));
        assert!(UsageScope::default().allows(&p(None, None, None)));
    }

    #[test]
    fn both_id_and_filter_type_is_rejected() {
        let mut a = all();
        a.app_id = Some("x".into());
        assert_eq!(scope(a, prod()).validate(), Err(ScopeError::Application(0)));
        let mut e = prod();
        e.env_id = Some("x".into());
        assert_eq!(scope(all(), e).validate(), Err(ScopeError::Environment(0)));
        let none = EnvFilter {
            filter_type: None,
            env_id: None,
        };
        assert_eq!(
            scope(all(), none).validate(),
            Err(ScopeError::Environment(0))
        );
        assert!(scope(app("a"), env("e")).validate().is_ok());
    }
}
