//! One task, prepared the same way wherever it comes from: `test-run`, the agent, or the
//! control plane.
//!
//! [`prepare`] turns a [`TaskSpec`] (a parsed template, the variables, the stored-secret
//! values and a [`Target`]) into a [`PreparedTask`]: every bound checked ([`bounds`]), one
//! masker over every value the task holds, the script rendered, the per-attempt timeout,
//! retry policy and task deadline settled. [`run`] runs it on shared [`Executors`].
//! Every refusal is a [`Failure`]: a stable kind and a message that never holds a value.
//!
//! [`ssh`] builds an [`SshTarget`] from a connector (Harness's `sshCredential`) and
//! explicit settings.

pub mod bounds;
pub mod ssh;

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorKind, Kind};
use crate::exec::local::LocalExecutor;
use crate::exec::ssh::{SshAuth, SshExecutor, SshPool, SshTarget};
use crate::exec::{self, ExecError, Job, Limits, Outcome, RetryPolicy};
use crate::mask::Masker;
use crate::secret::Variables;
use crate::template::Template;

/// An error as the CLI prints it and the agent reports it: a stable kind and a
/// human-readable message that never contains a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Failure {
    /// Stable kind.
    pub kind: ErrorKind,
    /// What went wrong, naming fields, variables, paths and hosts; any script output it
    /// quotes is masked.
    pub message: String,
}

impl Failure {
    /// A failure of this kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    /// An `invalid_input` failure.
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(ErrorKind::InvalidInput, message)
    }

    /// The same failure with every value `masker` knows masked out of its message.
    pub fn masked(self, masker: &Masker) -> Failure {
        Failure {
            kind: self.kind,
            message: masker.mask_str(&self.message),
        }
    }
}

impl<E: Kind + std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// Where a task runs. `command_path` is the script's working directory on that host
/// (Harness's default is [`exec::DEFAULT_COMMAND_PATH`]); it must be non-empty, without
/// NUL, and at most [`bounds::MAX_COMMAND_PATH`] bytes.
#[derive(Debug, Clone)]
pub enum Target {
    /// `/bin/bash` on the agent's host.
    Local {
        /// Working directory.
        command_path: String,
    },
    /// A host over SSH (see [`ssh::ssh_target`]).
    Ssh {
        /// Host, port, credential and host-key policy.
        target: SshTarget,
        /// Working directory on the target host.
        command_path: String,
    },
}

/// Everything a task is made of, before any check.
#[derive(Debug)]
pub struct TaskSpec {
    /// The parsed template (see [`Template::parse`]).
    pub template: Template,
    /// Values for the template's variables.
    pub variables: Variables,
    /// Stored-secret values by id, for `${secrets.getValue("id")}`.
    pub secrets: Variables,
    /// Where to run.
    pub target: Target,
    /// Per-attempt timeout [default: the template's `timeoutMillis`, else
    /// [`exec::DEFAULT_TIMEOUT`], 60 s]. Bounds: [`bounds::TIMEOUT`].
    pub timeout: Option<Duration>,
    /// Attempts ([`bounds::ATTEMPTS`]) and the pause between them
    /// ([`bounds::RETRY_DELAY`]).
    pub retry: RetryPolicy,
    /// The whole task's deadline, across all attempts and pauses, counted from the call to
    /// [`run`] ([`bounds::DEADLINE`]). `None`: attempts × timeout plus pauses.
    pub deadline: Option<Duration>,
    /// Output caps and kill timings; `grace` and `drain` within [`bounds::LIMIT_DURATION`].
    pub limits: Limits,
}

impl TaskSpec {
    /// A spec with no values, Harness's retries (3 attempts, 1 s apart), the template's
    /// timeout, no task deadline and default limits.
    pub fn new(template: Template, target: Target) -> TaskSpec {
        TaskSpec {
            template,
            variables: Variables::new(),
            secrets: Variables::new(),
            target,
            timeout: None,
            retry: RetryPolicy::default(),
            deadline: None,
            limits: Limits::default(),
        }
    }
}

/// A task that passed every check and is rendered: ready for [`run`], any number of times.
#[derive(Debug)]
pub struct PreparedTask {
    job: Job,
    ssh: Option<SshTarget>,
    retry: RetryPolicy,
    deadline: Option<Duration>,
}

impl PreparedTask {
    /// The job: rendered script, working directory, per-attempt timeout, limits, masker.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// The masker over every value of the task (variables, stored secrets, SSH credential
    /// secrets). Mask anything derived from the task before it leaves the process.
    pub fn masker(&self) -> &Arc<Masker> {
        &self.job.masker
    }

    /// The SSH target, for a task that runs over SSH.
    pub fn ssh_target(&self) -> Option<&SshTarget> {
        self.ssh.as_ref()
    }

    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The whole-task deadline, counted from the call to [`run`].
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// An outcome's error as a [`Failure`], its message masked with this task's values.
    pub fn failure(&self, e: &ExecError) -> Failure {
        Failure::from(e).masked(&self.job.masker)
    }
}

/// The executors tasks run on, shared by every task: one [`LocalExecutor`] (its environment
/// policy) and one [`SshPool`] (an [`SshExecutor`] is made per task from its target).
#[derive(Debug, Clone)]
pub struct Executors {
    /// Runs [`Target::Local`] tasks.
    pub local: LocalExecutor,
    /// Connections for [`Target::Ssh`] tasks.
    pub ssh: Arc<SshPool>,
}

/// Check and render a task.
///
/// In order: the target (commandPath, SSH host and port), the per-attempt timeout (the
/// spec's, else the template's `timeoutMillis`, else 60 s), the retry policy, the task
/// deadline and the limits; then one masker is built over every variable value, every
/// stored secret, and the SSH credential's secret parts (key text, passphrase, password);
/// then the template is rendered. Errors keep the template's own kinds
/// (`missing_variable`, `render_error`, `invalid_input`), and their messages are masked.
pub fn prepare(spec: TaskSpec) -> Result<PreparedTask, Failure> {
    let TaskSpec {
        template,
        variables,
        secrets,
        target,
        timeout,
        retry,
        deadline,
        limits,
    } = spec;
    let (command_path, ssh) = match target {
        Target::Local { command_path } => (command_path, None),
        Target::Ssh {
            target,
            command_path,
        } => {
            if target.host.is_empty() || target.host.contains('\0') {
                return Err(Failure::invalid(
                    "the SSH host must be a non-empty name or address",
                ));
            }
            bounds::port("the SSH port", target.port)?;
            (command_path, Some(target))
        }
    };
    check_command_path(&command_path)?;
    let timeout = match (timeout, template.timeout()) {
        (Some(t), _) => bounds::duration("the timeout", t, &bounds::TIMEOUT)?,
        (None, Some(t)) => bounds::millis(
            "the template's timeoutMillis",
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX),
            &bounds::TIMEOUT,
        )?,
        (None, None) => exec::DEFAULT_TIMEOUT,
    };
    bounds::attempts("the number of attempts", retry.attempts)?;
    bounds::duration("the retry delay", retry.delay, &bounds::RETRY_DELAY)?;
    if let Some(d) = deadline {
        bounds::duration("the task deadline", d, &bounds::DEADLINE)?;
    }
    bounds::duration(
        "the kill grace period",
        limits.grace,
        &bounds::LIMIT_DURATION,
    )?;
    bounds::duration(
        "the output drain period",
        limits.drain,
        &bounds::LIMIT_DURATION,
    )?;

    let masker = Arc::new(task_masker(&variables, &secrets, ssh.as_ref()));
    let script = template
        .render(&variables, &secrets)
        .map_err(|e| Failure::from(e).masked(&masker))?;
    Ok(PreparedTask {
        job: Job {
            script: Arc::new(script),
            command_path,
            timeout,
            limits,
            masker,
        },
        ssh,
        retry,
        deadline,
    })
}

fn check_command_path(p: &str) -> Result<(), Failure> {
    if p.is_empty() {
        return Err(Failure::invalid("commandPath must not be empty"));
    }
    if p.contains('\0') {
        return Err(Failure::invalid("commandPath must not contain NUL"));
    }
    if p.len() > bounds::MAX_COMMAND_PATH {
        return Err(Failure::invalid(format!(
            "commandPath must be at most {} bytes",
            bounds::MAX_COMMAND_PATH
        )));
    }
    Ok(())
}

/// One masker over every value the task holds. Values shorter than the masking minimum are
/// left out, as [`Masker::for_variables`] documents.
fn task_masker(variables: &Variables, secrets: &Variables, ssh: Option<&SshTarget>) -> Masker {
    let mut values: Vec<&[u8]> = variables
        .iter()
        .chain(secrets.iter())
        .map(|(_, v)| v.expose_secret())
        .collect();
    if let Some(t) = ssh {
        match &t.credential.auth {
            SshAuth::Key {
                private_key,
                passphrase,
            } => {
                values.push(private_key.expose_secret().as_bytes());
                values.extend(passphrase.iter().map(|p| p.expose_secret().as_bytes()));
            }
            SshAuth::KeyFile { passphrase, .. } => {
                values.extend(passphrase.iter().map(|p| p.expose_secret().as_bytes()));
            }
            SshAuth::Password(p) => values.push(p.expose_secret().as_bytes()),
        }
    }
    Masker::for_variables(values)
}

/// Run a prepared task: retries, the per-attempt timeout and the task deadline (counted
/// from this call) as [`exec::run_until`] applies them. The outcome's logs are masked; use
/// [`PreparedTask::failure`] for its error.
pub async fn run(
    prepared: &PreparedTask,
    executors: &Executors,
    cancel: &CancellationToken,
) -> Outcome {
    // Bounded by `bounds::DEADLINE`, so the addition cannot overflow.
    let deadline = prepared.deadline.map(|d| Instant::now() + d);
    let job = &prepared.job;
    match &prepared.ssh {
        None => exec::run_until(&executors.local, job, &prepared.retry, deadline, cancel).await,
        Some(target) => {
            let executor = SshExecutor::new(executors.ssh.clone(), target.clone());
            exec::run_until(&executor, job, &prepared.retry, deadline, cancel).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::secret_bytes;

    fn local() -> Target {
        Target::Local {
            command_path: "/tmp".into(),
        }
    }

    #[test]
    fn out_of_bounds_fields_are_invalid_input_naming_the_field() {
        let t = || Template::from_script("secret=x");
        let cases: Vec<(TaskSpec, &str)> = vec![
            (
                TaskSpec {
                    timeout: Some(Duration::MAX),
                    ..TaskSpec::new(t(), local())
                },
                "the timeout",
            ),
            (
                TaskSpec {
                    retry: RetryPolicy {
                        attempts: 0,
                        delay: Duration::ZERO,
                    },
                    ..TaskSpec::new(t(), local())
                },
                "the number of attempts",
            ),
            (
                TaskSpec {
                    retry: RetryPolicy {
                        attempts: 2,
                        delay: Duration::from_secs(7200),
                    },
                    ..TaskSpec::new(t(), local())
                },
                "the retry delay",
            ),
            (
                TaskSpec {
                    deadline: Some(Duration::ZERO),
                    ..TaskSpec::new(t(), local())
                },
                "the task deadline",
            ),
            (
                TaskSpec::new(
                    t(),
                    Target::Local {
                        command_path: String::new(),
                    },
                ),
                "commandPath",
            ),
            (
                TaskSpec::new(
                    t(),
                    Target::Local {
                        command_path: "/a\0b".into(),
                    },
                ),
                "commandPath",
            ),
            (
                TaskSpec::new(
                    Template::parse(r#"{"name":"t","scriptString":"secret=x","timeoutMillis":18446744073709551615}"#)
                        .unwrap(),
                    local(),
                ),
                "timeoutMillis",
            ),
        ];
        for (spec, field) in cases {
            let e = prepare(spec).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
            assert!(e.message.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn one_masker_covers_variables_stored_secrets_and_ssh_credentials() {
        use crate::exec::ssh::{HostKeyPolicy, SshCredential};
        let mut spec = TaskSpec::new(
            Template::from_script("secret=${v}"),
            Target::Ssh {
                target: SshTarget {
                    host: "h".into(),
                    port: 22,
                    credential: Arc::new(SshCredential::new(
                        "u",
                        SshAuth::Password(secrecy::SecretString::from(
                            "password-value-1".to_string(),
                        )),
                    )),
                    host_keys: Arc::new(HostKeyPolicy::InsecureAcceptAny),
                },
                command_path: "/tmp".into(),
            },
        );
        spec.variables
            .insert("v", secret_bytes(b"variable-value-2".to_vec()));
        spec.secrets
            .insert("s", secret_bytes(b"stored-secret-3".to_vec()));
        let p = prepare(spec).unwrap();
        let masked = p
            .masker()
            .mask_str("password-value-1 variable-value-2 stored-secret-3");
        assert_eq!(masked, "*** *** ***");
        assert!(p.ssh_target().is_some());
    }

    #[test]
    fn render_errors_keep_their_kind_and_are_masked() {
        let doc = r#"{"name":"t","scriptString":"secret=${a}${b}","variables":["a","b"]}"#;
        let mut spec = TaskSpec::new(Template::parse(doc).unwrap(), local());
        spec.variables
            .insert("a", secret_bytes(b"value-of-a".to_vec()));
        let e = prepare(spec).unwrap_err();
        assert_eq!(e.kind, ErrorKind::MissingVariable);
        assert!(!e.message.contains("value-of-a"));
    }

    /// The agent spawns tasks: a prepared task and its run future must cross threads.
    #[allow(dead_code)]
    fn run_is_send(p: &PreparedTask, e: &Executors, c: &CancellationToken) {
        fn send<T: Send + Sync>(_: &T) {}
        fn send_future<T: Send>(_: T) {}
        send(p);
        send(e);
        send_future(run(p, e, c));
    }

    #[test]
    fn failure_round_trips_as_json() {
        let f = Failure::invalid("--timeout must be a number of seconds from 0.001 to 86400");
        let j = serde_json::to_string(&f).unwrap();
        assert_eq!(
            j,
            r#"{"kind":"invalid_input","message":"--timeout must be a number of seconds from 0.001 to 86400"}"#
        );
        assert_eq!(serde_json::from_str::<Failure>(&j).unwrap(), f);
        assert_eq!(
            f.to_string(),
            "invalid_input: --timeout must be a number of seconds from 0.001 to 86400"
        );
    }
}
