//! From a manager, its template and values to a hub task, and from the task's outcome to
//! a secret or an [`ApiError`].
//!
//! - **Placement.** `executeOnDelegate: true` runs locally on an agent that has every
//!   delegate selector; `false` runs over SSH on `host` with the connector's credentials,
//!   from any agent (Harness ignores the selectors for placement in that mode).
//! - **No agent.** Before submitting, the connected agents are checked: with no match the
//!   request fails at once with an error naming the selectors, instead of waiting out the
//!   hub's assignment window.
//! - **Stored secrets.** `${secrets.getValue("name")}` references in the script are looked
//!   up by name in the built-in store and sent as the task's `secrets`; the agent masks
//!   them like variables.
//! - **Connectors.** The SSH credential's key, passphrase and password are built-in
//!   secrets; they are opened here and travel as secret wire values.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::error::ErrorKind;
use crate::manager::audit::Trail;
use crate::manager::hub::TaskRequest;
use crate::manager::model::{
    self, ManagerBody, SecretMap, SshBody, SshCredentialType, TemplateBody, TextBody,
};
use crate::manager::store::{ObjectKind, Row};
use crate::protocol::{
    self, Retry, SshCredentials, SshSpec, Target, TaskKind, TemplateSpec, WireSecret,
};
use crate::secret::SecretBytes;

use super::{set_text, ApiError, ControlPlane};

/// Harness's manager waits at most this long for a fetch.
pub const FETCH_BUDGET: Duration = Duration::from_secs(60);

/// The per-attempt timeout when a template sets none (the agent's default).
const DEFAULT_ATTEMPT: Duration = Duration::from_secs(60);

/// What to run.
pub struct Plan<'a> {
    /// Validate (create/update) or fetch.
    pub kind: TaskKind,
    /// The manager.
    pub manager: &'a ManagerBody,
    /// The template's row.
    pub template: &'a Row,
    /// Variable values (test variables or parameters).
    pub values: &'a SecretMap,
}

/// `secrets.getValue("name")` references in a script (double or single quotes), sorted.
pub fn secret_refs(script: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = script;
    while let Some(i) = rest.find("secrets.getValue(") {
        rest = &rest[i + "secrets.getValue(".len()..];
        let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let inner = &rest[1..];
        if let Some(end) = inner.find(q) {
            let name = &inner[..end];
            if !name.is_empty() && inner[end + 1..].starts_with(')') {
                out.insert(name.to_string());
            }
        }
    }
    out
}

fn wire(bytes: &[u8]) -> WireSecret {
    WireSecret::from_vec(bytes.to_vec())
}

/// Selectors, normalised as the hub does.
fn normalized(selectors: &[String]) -> Vec<String> {
    selectors
        .iter()
        .filter_map(|s| protocol::normalize_selector(s))
        .collect()
}

impl ControlPlane {
    /// The value of built-in secret `id`, checking it is one; `what` names the use.
    pub(crate) async fn builtin_value(&self, id: &str, what: &str) -> Result<WireSecret, ApiError> {
        let row = self
            .find(ObjectKind::EncryptedText, id)
            .await?
            .ok_or_else(|| ApiError::invalid(format!("{what}: no encrypted text with id {id}")))?;
        let body: TextBody = model::body(&row)
            .ok_or_else(|| ApiError::new("storage", "a stored secret is unreadable"))?;
        if body.secret_manager_id.is_some() {
            return Err(ApiError::invalid(format!(
                "{what}: secret {id} is held by a custom secrets manager; only built-in secrets can be used here"
            )));
        }
        Ok(wire(&model::open(&self.key, &row)?))
    }

    /// An SSH credential's target for `host`.
    pub(crate) async fn ssh_target(
        &self,
        connector_id: &str,
        host: &str,
        command_path: &str,
    ) -> Result<Target, ApiError> {
        let row = self
            .find(ObjectKind::SshCredential, connector_id)
            .await?
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "connectorId {connector_id} is not an SSH credential"
                ))
            })?;
        let c: SshBody = model::body(&row)
            .ok_or_else(|| ApiError::new("storage", "a stored SSH credential is unreadable"))?;
        let passphrase = match &c.passphrase_secret_id {
            Some(id) => Some(self.builtin_value(id, "the SSH key's passphrase").await?),
            None => None,
        };
        let credentials = match c.credential_type {
            SshCredentialType::SshKey => SshCredentials::Key {
                private_key: self
                    .builtin_value(
                        c.key_secret_id.as_deref().unwrap_or_default(),
                        "the SSH key",
                    )
                    .await?,
                passphrase,
            },
            SshCredentialType::SshKeyFilePath => SshCredentials::KeyFile {
                path: c.key_path.clone().unwrap_or_default(),
                passphrase,
            },
            SshCredentialType::Password => SshCredentials::Password {
                password: self
                    .builtin_value(
                        c.password_secret_id.as_deref().unwrap_or_default(),
                        "the SSH password",
                    )
                    .await?,
            },
        };
        Ok(Target::Ssh(SshSpec {
            host: host.to_string(),
            port: Some(c.port),
            user: c.user_name,
            credentials,
            host_keys: c.host_keys,
            command_path: Some(command_path.to_string()),
        }))
    }

    /// Fail at once, naming the selectors, when no connected agent could take the task.
    pub(crate) fn check_agents(&self, selectors: &[String]) -> Result<(), ApiError> {
        let want = normalized(selectors);
        let ok =
            self.hub.agents().iter().any(|a| {
                a.connected && !a.draining && want.iter().all(|s| a.selectors.contains(s))
            });
        if ok {
            return Ok(());
        }
        Err(ApiError::kind(
            ErrorKind::NoAgent,
            if want.is_empty() {
                "no agent is connected".to_string()
            } else {
                format!(
                    "no connected agent has every selector of {}",
                    set_text(&want)
                )
            },
        ))
    }

    /// Run the manager's script with `values` on an agent; the secret, or why not.
    pub(crate) async fn run_script(
        &self,
        plan: Plan<'_>,
        trail: &mut Trail,
    ) -> Result<SecretBytes, ApiError> {
        let m = plan.manager;
        let t: TemplateBody = model::body(plan.template)
            .ok_or_else(|| ApiError::new("storage", "a stored template is unreadable"))?;
        // Stored secrets the script refers to.
        let mut secrets = BTreeMap::new();
        for name in secret_refs(&t.script_string) {
            let row = self.find_by_name(ObjectKind::EncryptedText, &name).await?.ok_or_else(|| {
                ApiError::kind(
                    ErrorKind::MissingVariable,
                    format!("the template refers to stored secret {name:?}, which is not in the built-in store"),
                )
            })?;
            let v = self.builtin_value(&row.id, "secrets.getValue").await?;
            secrets.insert(name, v);
        }
        let variables: BTreeMap<String, WireSecret> = plan
            .values
            .0
            .iter()
            .map(|(k, v)| (k.clone(), wire(v.expose_secret().as_bytes())))
            .collect();
        let (selectors, target) = if m.execute_on_delegate {
            (
                m.delegate_selectors.clone(),
                Target::Local {
                    command_path: Some(m.command_path.clone()),
                },
            )
        } else {
            let connector = if m.is_connector_templatized {
                plan.values
                    .0
                    .get("connectorId")
                    .map(|v| v.expose_secret().to_string())
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "isConnectorTemplatized: the values must include connectorId",
                        )
                    })?
            } else {
                m.connector_id.clone().unwrap_or_default()
            };
            let host = m.host.clone().unwrap_or_default();
            (
                Vec::new(),
                self.ssh_target(&connector, &host, &m.command_path).await?,
            )
        };
        let attempt = t
            .timeout_millis
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_ATTEMPT);
        let (retry, deadline) = match plan.kind {
            // Validation runs once, so a broken script is reported at once, not after
            // three attempts.
            TaskKind::Validate => (
                Some(Retry {
                    attempts: 1,
                    delay_ms: 0,
                }),
                attempt.min(FETCH_BUDGET) + Duration::from_secs(5),
            ),
            _ => (
                None,
                (attempt * 3 + Duration::from_secs(2)).min(FETCH_BUDGET),
            ),
        };
        self.check_agents(&selectors)?;
        let req = TaskRequest {
            kind: plan.kind,
            selectors,
            template: TemplateSpec {
                name: Some(plan.template.name.clone()),
                script_string: t.script_string,
                variables: t.variables,
                timeout_millis: t.timeout_millis,
            },
            variables,
            secrets,
            target,
            retry,
            deadline,
        };
        let outcome = self.hub.submit(req).await?;
        trail.agent(&outcome.agent_name);
        match outcome.result {
            Ok(secret) => Ok(secret),
            Err(f) => Err(ApiError::kind(
                f.kind,
                format!(
                    "the script failed on agent {}: {}",
                    outcome.agent_name, f.message
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_secret_references() {
        let s = r#"t=${secrets.getValue("vault-token")}; u=${secrets.getValue('other')}
        <+secrets.getValue("ng")> secrets.getValue(bare) secrets.getValue("unterminated"#;
        let r: Vec<String> = secret_refs(s).into_iter().collect();
        assert_eq!(r, ["ng", "other", "vault-token"]);
    }
}
