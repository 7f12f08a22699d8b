//! Running a protocol [`Task`] on the executors: the one place the agent touches
//! `template`, `task` and `exec`.
//!
//! [`TaskRunner`] is the seam: the agent's protocol loop only knows this trait, and
//! protocol-level tests can plug in their own runner.
//!
//! [`ExecRunner`] turns a task message into a `task::TaskSpec` and hands it to
//! `task::prepare`/`task::run`, exactly as `test-run` does: rendering (injection-proofness
//! is the agent's guarantee), one masker over every value and the SSH credential, retries on
//! the local executor or the shared SSH pool, and the whole task bounded by its deadline.
//! What it adds is the SSH credential cache, so tasks with the same credential share
//! pooled connections.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorKind, Kind};
use crate::exec::local::{EnvPolicy, LocalExecutor};
use crate::exec::ssh::{HostKeyPolicy, SshAuth, SshConfig, SshCredential, SshPool, SshTarget};
use crate::exec::{self, BoxFuture, RetryPolicy};
use crate::protocol::{ResultOutcome, SshCredentials, SshSpec, Target, Task, WireSecret};
use crate::task::{self, TaskSpec};
use crate::template::{Template, TemplateDocument, TemplateVariable};

/// What running a task produced.
#[derive(Debug)]
pub struct RunResult {
    /// The secret or the error (messages masked).
    pub outcome: ResultOutcome,
    /// Script attempts made.
    pub attempts: u32,
    /// Wall time.
    pub duration: Duration,
}

impl RunResult {
    /// A failure before any attempt.
    pub fn failed(kind: ErrorKind, message: impl Into<String>, started: Instant) -> Self {
        RunResult {
            outcome: ResultOutcome::error(kind, message),
            attempts: 0,
            duration: started.elapsed(),
        }
    }
}

/// Runs one task to its end. Must honour `cancel` (kill what it started) and the task's
/// `deadline_ms`.
pub trait TaskRunner: Send + Sync + 'static {
    /// Run `task`.
    fn run(&self, task: Task, cancel: CancellationToken) -> BoxFuture<'static, RunResult>;
}

/// How many SSH credentials are remembered, so that tasks with the same credential share
/// pooled connections.
const CREDENTIAL_CACHE: usize = 64;

/// The real runner: local bash and pooled SSH. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct ExecRunner {
    executors: task::Executors,
    creds: Arc<Mutex<CredentialCache>>,
}

impl std::fmt::Debug for ExecRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecRunner").finish_non_exhaustive()
    }
}

/// SSH credentials by a keyed digest of their contents. The key is random per process, so
/// the digests are no use to anyone who reads them out of memory.
struct CredentialCache {
    key: [u8; 32],
    entries: HashMap<[u8; 32], (Arc<SshCredential>, Arc<HostKeyPolicy>, u64)>,
    tick: u64,
}

impl ExecRunner {
    /// A runner whose scripts see the agent's environment filtered by `env` (the default
    /// allowlist: `PATH`, `HOME`, `LANG`, …; never the agent's token). Call inside a tokio
    /// runtime (the SSH pool starts its keepalive task).
    pub fn new(env: &EnvPolicy) -> Self {
        let mut key = [0u8; 32];
        let _ = getrandom::fill(&mut key);
        ExecRunner {
            executors: task::Executors {
                local: LocalExecutor::new(env).with_spare(),
                ssh: SshPool::new(SshConfig::default()),
            },
            creds: Arc::new(Mutex::new(CredentialCache {
                key,
                entries: HashMap::new(),
                tick: 0,
            })),
        }
    }
}

impl TaskRunner for ExecRunner {
    fn run(&self, task: Task, cancel: CancellationToken) -> BoxFuture<'static, RunResult> {
        let this = self.clone();
        Box::pin(async move { this.run_task(task, cancel).await })
    }
}

fn to_secret_string(w: &WireSecret, what: &str) -> Result<SecretString, String> {
    std::str::from_utf8(w.secret().expose_secret())
        .map(|s| SecretString::from(s.to_string()))
        .map_err(|_| format!("the {what} is not UTF-8"))
}

impl ExecRunner {
    fn ssh_target(&self, spec: &SshSpec) -> Result<SshTarget, String> {
        let (auth, material) = match &spec.credentials {
            SshCredentials::Key {
                private_key,
                passphrase,
            } => (
                SshAuth::Key {
                    private_key: to_secret_string(private_key, "private key")?,
                    passphrase: passphrase
                        .as_ref()
                        .map(|p| to_secret_string(p, "passphrase"))
                        .transpose()?,
                },
                [
                    b"key".as_slice(),
                    private_key.secret().expose_secret(),
                    passphrase
                        .as_ref()
                        .map(|p| p.secret().expose_secret())
                        .unwrap_or_default(),
                ]
                .map(<[u8]>::to_vec),
            ),
            SshCredentials::KeyFile { path, passphrase } => (
                SshAuth::KeyFile {
                    path: PathBuf::from(path),
                    passphrase: passphrase
                        .as_ref()
                        .map(|p| to_secret_string(p, "passphrase"))
                        .transpose()?,
                },
                [
                    b"file".to_vec(),
                    path.as_bytes().to_vec(),
                    passphrase
                        .as_ref()
                        .map(|p| p.secret().expose_secret().to_vec())
                        .unwrap_or_default(),
                ],
            ),
            SshCredentials::Password { password } => (
                SshAuth::Password(to_secret_string(password, "password")?),
                [
                    b"password".to_vec(),
                    password.secret().expose_secret().to_vec(),
                    Vec::new(),
                ],
            ),
            SshCredentials::Unknown => return Err("unknown credential type".into()),
        };
        let material = material.map(zeroize::Zeroizing::new);
        let port = spec.port();
        let host_keys = if spec.host_keys.is_empty() {
            let mut known_hosts = Vec::new();
            if let Some(home) = std::env::var_os("HOME") {
                known_hosts.push(PathBuf::from(home).join(".ssh/known_hosts"));
            }
            known_hosts.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
            HostKeyPolicy::Strict {
                known_hosts,
                pinned: Vec::new(),
            }
        } else {
            HostKeyPolicy::Strict {
                known_hosts: Vec::new(),
                pinned: spec.host_keys.clone(),
            }
        };

        let mut cache = self.creds.lock().unwrap_or_else(|p| p.into_inner());
        let mut h = Sha256::new();
        h.update(cache.key);
        for part in material.iter() {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_slice());
        }
        h.update(spec.user.as_bytes());
        h.update([0]);
        for k in &spec.host_keys {
            h.update(k.as_bytes());
            h.update([0]);
        }
        let digest: [u8; 32] = h.finalize().into();
        cache.tick += 1;
        let tick = cache.tick;
        let (credential, policy) = match cache.entries.get_mut(&digest) {
            Some(e) => {
                e.2 = tick;
                (e.0.clone(), e.1.clone())
            }
            None => {
                if cache.entries.len() >= CREDENTIAL_CACHE {
                    if let Some(oldest) = cache.entries.iter().min_by_key(|e| e.1 .2).map(|e| *e.0)
                    {
                        cache.entries.remove(&oldest);
                    }
                }
                let c = Arc::new(SshCredential::new(spec.user.clone(), auth));
                let p = Arc::new(host_keys);
                cache.entries.insert(digest, (c.clone(), p.clone(), tick));
                (c, p)
            }
        };
        Ok(SshTarget {
            host: spec.host.clone(),
            port,
            credential,
            host_keys: policy,
        })
    }

    async fn run_task(&self, task: Task, cancel: CancellationToken) -> RunResult {
        let started = Instant::now();
        let doc = TemplateDocument {
            name: task.template.name.clone(),
            script_string: task.template.script_string.clone(),
            variables: task
                .template
                .variables
                .iter()
                .map(|v| TemplateVariable::from(v.as_str()))
                .collect(),
            timeout_millis: task.template.timeout_millis,
        };
        let template = match Template::from_document(doc) {
            Ok(t) => t,
            Err(e) => return RunResult::failed(e.kind(), e.to_string(), started),
        };
        let target = match &task.target {
            Target::Local { command_path } => task::Target::Local {
                command_path: command_path
                    .clone()
                    .unwrap_or_else(|| exec::DEFAULT_COMMAND_PATH.into()),
            },
            Target::Ssh(spec) => match self.ssh_target(spec) {
                Ok(target) => task::Target::Ssh {
                    target,
                    command_path: spec
                        .command_path
                        .clone()
                        .unwrap_or_else(|| exec::DEFAULT_COMMAND_PATH.into()),
                },
                Err(why) => return RunResult::failed(ErrorKind::InvalidInput, why, started),
            },
            Target::Unknown => {
                return RunResult::failed(ErrorKind::Unsupported, "unknown target type", started)
            }
        };
        let mut spec = TaskSpec::new(template, target);
        for (name, v) in task.variables {
            spec.variables.insert(name, v.into_secret());
        }
        for (id, v) in task.secrets {
            spec.secrets.insert(id, v.into_secret());
        }
        if let Some(r) = &task.retry {
            spec.retry = RetryPolicy {
                attempts: r.attempts.clamp(1, 10),
                delay: Duration::from_millis(r.delay_ms.min(60_000)),
            };
        }
        // The whole task's deadline bounds every attempt and every retry pause.
        spec.deadline = Some(Duration::from_millis(task.deadline_ms.max(1)));
        // The same preparation as `test-run` and the control plane: bounds, one masker
        // over every value (and the SSH credential), rendering.
        let prepared = match task::prepare(spec) {
            Ok(p) => p,
            Err(f) => return RunResult::failed(f.kind, f.message, started),
        };
        let outcome = task::run(&prepared, &self.executors, &cancel).await;
        let result = match outcome.result {
            Ok(secret) => ResultOutcome::Ok {
                value: WireSecret::new(secret),
            },
            Err(e) => {
                let f = prepared.failure(&e);
                ResultOutcome::error(f.kind, f.message)
            }
        };
        tracing::debug!(
            task = %task.id,
            outcome = result.error_kind().map(|k| k.as_str()).unwrap_or("ok"),
            attempts = outcome.attempts,
            "task ran"
        );
        RunResult {
            outcome: result,
            attempts: outcome.attempts,
            duration: started.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{TaskKind, TemplateSpec};

    fn task(script: &str, vars: &[(&str, &str)]) -> Task {
        Task {
            id: "t".into(),
            kind: TaskKind::Fetch,
            attempt: 1,
            deadline_ms: 10_000,
            template: TemplateSpec {
                name: None,
                script_string: script.into(),
                variables: vars.iter().map(|(n, _)| n.to_string()).collect(),
                timeout_millis: None,
            },
            variables: vars
                .iter()
                .map(|(n, v)| (n.to_string(), WireSecret::from_vec(v.as_bytes().to_vec())))
                .collect(),
            secrets: Default::default(),
            target: Target::Local { command_path: None },
            retry: None,
        }
    }

    #[tokio::test]
    async fn renders_runs_and_masks_errors() {
        let r = ExecRunner::new(&EnvPolicy::default());
        let out = r
            .run(
                task("secret=\"v-${tok}\"", &[("tok", "abc$(id)def")]),
                CancellationToken::new(),
            )
            .await;
        match out.outcome {
            ResultOutcome::Ok { value } => {
                assert_eq!(value.secret().expose_secret(), b"v-abc$(id)def")
            }
            other => panic!("{other:?}"),
        }
        let mut t = task("echo \"${tok}\" >&2; exit 3", &[("tok", "leaky-value-123")]);
        t.retry = Some(crate::protocol::Retry {
            attempts: 1,
            delay_ms: 0,
        });
        let out = r.run(t, CancellationToken::new()).await;
        let ResultOutcome::Error { kind, message } = out.outcome else {
            panic!()
        };
        assert_eq!(kind, ErrorKind::ScriptFailed);
        assert!(message.contains("***"), "{message}");
        assert!(!message.contains("leaky-value-123"), "{message}");
    }

    #[tokio::test]
    async fn the_whole_task_deadline_is_a_timeout() {
        let r = ExecRunner::new(&EnvPolicy::default());
        let mut t = task("sleep 30; secret=x", &[]);
        t.deadline_ms = 300;
        let started = Instant::now();
        let out = r.run(t, CancellationToken::new()).await;
        assert_eq!(out.outcome.error_kind(), Some(ErrorKind::Timeout));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
