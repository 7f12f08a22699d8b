//! `csm-agent test-run`: run one template by hand, for operators writing and debugging
//! scripts.
//!
//! It turns flags, files and the seed's input document into a [`TaskSpec`], and hands it
//! to [`task::prepare`] and [`task::run`], as the agent does with a task from the control
//! plane. It prints a summary and the script's masked log. Without `--reveal`, no byte of
//! the secret is printed in any form; with it, stdout carries exactly the secret's bytes.
//! Every failure is one typed error with a stable kind and exit code (see
//! [`ErrorKind::exit_code`](crate::ErrorKind::exit_code)).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use super::files;
use crate::exec::local::{EnvPolicy, LocalExecutor};
use crate::exec::ssh::{SshAuth, SshConfig, SshPool};
use crate::exec::{self, Outcome, RetryPolicy};
use crate::input::{self, CustomSecretManagerInput, SecretSource};
use crate::secret::{secret_bytes, Variables};
use crate::task::ssh::SshSpec;
use crate::task::{self, bounds, Executors, Failure, PreparedTask, Target, TaskSpec};
use crate::template::Template;

/// `csm-agent test-run`.
#[derive(Debug, Args, Clone)]
#[command(
    long_about = "Run one template by hand, locally under /bin/bash or over SSH, exactly as the \
agent runs a task: the same bounds, rendering (values bound as data, never pasted) and \
masking. Without --reveal no byte of the secret is printed; with it, stdout carries exactly \
the secret's bytes.",
    after_long_help = "Exit status:\n  \
0  ok\n  \
1  script_failed, empty_secret\n  \
2  invalid_input, missing_variable, render_error, command_path, unsupported\n  \
3  timeout\n  \
4  ssh_connect, ssh_auth, host_key\n  \
5  cancelled (Ctrl-C)\n\n\
Examples:\n  \
csm-agent test-run --template examples/toy-kv.json --input examples/create-input.json \\\n    \
--command-path examples/store\n  \
csm-agent test-run --template vault.json --input create.json --reveal --quiet > secret.bin\n  \
csm-agent test-run --template vault.json --input create.json --host 10.0.0.17 --user deploy \\\n    \
--identity-file ~/.ssh/deploy_ed25519 --known-hosts ./known_hosts"
)]
pub struct TestRunArgs {
    /// The template: a template document (JSON with scriptString) or a plain bash script.
    #[arg(long, value_name = "FILE")]
    pub template: PathBuf,
    /// createSecretManager / updateSecretManager query variables (the seed's JSON, unchanged).
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// A variable value. Note: it is visible in this command's own argv; prefer --var-file.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// A variable value read from a file, byte for byte.
    #[arg(long = "var-file", value_name = "NAME=PATH")]
    pub var_files: Vec<String>,
    /// The working directory for the script [default: the input's commandPath, else /tmp].
    #[arg(long, value_name = "DIR")]
    pub command_path: Option<String>,
    /// Per-attempt timeout in seconds, 0.001 to 86400 [default: the template's
    /// timeoutMillis, else 60].
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub timeout: Option<f64>,
    /// Attempts in all, 1 to 10 (Harness: 3).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub attempts: u32,
    /// Seconds between attempts, 0 to 3600.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub retry_delay: f64,
    /// A stored secret's value, read from a file: for `${secrets.getValue("ID")}` in the
    /// template (byte for byte) and for secret ids a connector names.
    #[arg(long = "secret-file", value_name = "ID=PATH")]
    pub secret_files: Vec<String>,
    /// Extra environment variables the script may see (NAME, or PREFIX*).
    #[arg(long = "env-allow", value_name = "NAME")]
    pub env_allow: Vec<String>,
    /// Print the secret's exact bytes on stdout (the summary goes to stderr).
    #[arg(long)]
    pub reveal: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Do not print the script's (masked) output.
    #[arg(long, short)]
    pub quiet: bool,
    /// SSH options: run on a target host instead of locally.
    #[command(flatten)]
    pub ssh: SshArgs,
}

/// `test-run` options for running on a target host over SSH.
#[derive(Debug, Args, Clone, Default)]
pub struct SshArgs {
    /// Run on this host over SSH (overrides the input's host).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// SSH port, 1 to 65535 [default: the connector's, else 22].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// SSH login user.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Private key file (OpenSSH or PEM).
    #[arg(long, value_name = "FILE", conflicts_with = "password_file")]
    pub identity_file: Option<PathBuf>,
    /// File holding the private key's passphrase.
    #[arg(long, value_name = "FILE", requires = "identity_file")]
    pub passphrase_file: Option<PathBuf>,
    /// File holding the password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Connector file: Harness's sshCredential JSON plus hostKeys (see docs/protocol.md).
    #[arg(long, value_name = "FILE")]
    pub connector: Option<PathBuf>,
    /// known_hosts file to trust (repeatable) [default: ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts].
    #[arg(long = "known-hosts", value_name = "FILE")]
    pub known_hosts: Vec<PathBuf>,
    /// A trusted host key: a known_hosts line or a SHA256: fingerprint (repeatable).
    #[arg(long = "host-key", value_name = "KEY")]
    pub host_keys: Vec<String>,
    /// Accept ANY host key, unverified. Logs a warning on every connection.
    #[arg(long)]
    pub insecure_accept_any_host_key: bool,
    /// TCP connect timeout in seconds, 0.001 to 86400.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 10.0,
        allow_negative_numbers = true
    )]
    pub connect_timeout: f64,
}

fn parse_assignment<'a>(arg: &'a str, flag: &str) -> Result<(&'a str, &'a str), Failure> {
    match arg.split_once('=') {
        Some((name, rest)) if !name.is_empty() => Ok((name, rest)),
        // Never echo the argument: its right-hand side may be a value.
        _ => Err(Failure::invalid(format!("{flag} takes NAME=…"))),
    }
}

/// A document's error, naming the file it is in.
fn in_file(what: &str, path: &Path, e: input::InputError) -> Failure {
    let f = Failure::from(e);
    Failure::new(f.kind, format!("{what} {}: {}", path.display(), f.message))
}

/// The numeric flags, checked against [`bounds`] before any file is read.
struct Numbers {
    timeout: Option<Duration>,
    retry: RetryPolicy,
    connect_timeout: Duration,
}

fn numbers(args: &TestRunArgs) -> Result<Numbers, Failure> {
    let timeout = args
        .timeout
        .map(|s| bounds::secs("--timeout", s, &bounds::TIMEOUT))
        .transpose()?;
    let retry = RetryPolicy {
        attempts: bounds::attempts("--attempts", args.attempts)?,
        delay: bounds::secs("--retry-delay", args.retry_delay, &bounds::RETRY_DELAY)?,
    };
    let connect_timeout = bounds::secs(
        "--connect-timeout",
        args.ssh.connect_timeout,
        &bounds::TIMEOUT,
    )?;
    if let Some(p) = args.ssh.port {
        bounds::port("--port", p)?;
    }
    Ok(Numbers {
        timeout,
        retry,
        connect_timeout,
    })
}

/// Resolve flags, files and the input document into a task spec.
fn spec(args: &TestRunArgs, numbers: Numbers) -> Result<TaskSpec, Failure> {
    let text = files::read_text(&args.template, "template", bounds::MAX_TEMPLATE_BYTES)?;
    let template = Template::parse(&text)?;

    let input = match &args.input {
        Some(p) => {
            let t = files::read_text(p, "input", bounds::MAX_DOCUMENT_BYTES)?;
            input::parse_query_variables(&t).map_err(|e| in_file("input", p, e))?
        }
        None => CustomSecretManagerInput::default(),
    };
    let mut secret_files = BTreeMap::new();
    for s in &args.secret_files {
        let (id, path) = parse_assignment(s, "--secret-file")?;
        secret_files.insert(id.to_string(), PathBuf::from(path));
    }
    let mut secrets = Variables::new();
    for (id, path) in &secret_files {
        let what = format!("the file for secret {id}");
        let value = files::read(path, &what, bounds::MAX_VALUE_FILE_BYTES)?;
        secrets.insert(id.clone(), secret_bytes(value));
    }
    let command_path = args
        .command_path
        .clone()
        .or_else(|| input.command_path.clone())
        .unwrap_or_else(|| exec::DEFAULT_COMMAND_PATH.to_string());
    let target = if args.ssh.host.is_some() || input.execute_on_delegate == Some(false) {
        Target::Ssh {
            target: ssh_target(&args.ssh, &input, &secrets)?,
            command_path,
        }
    } else {
        Target::Local { command_path }
    };

    let mut variables = input.variables()?;
    for v in &args.vars {
        let (name, value) = parse_assignment(v, "--var")?;
        variables.insert(name, secret_bytes(value.as_bytes().to_vec()));
    }
    for v in &args.var_files {
        let (name, path) = parse_assignment(v, "--var-file")?;
        let what = format!("the value file for {name}");
        let value = files::read(Path::new(path), &what, bounds::MAX_VALUE_FILE_BYTES)?;
        variables.insert(name, secret_bytes(value));
    }
    Ok(TaskSpec {
        variables,
        secrets,
        timeout: numbers.timeout,
        retry: numbers.retry,
        ..TaskSpec::new(template, target)
    })
}

/// Resolve the SSH target from flags, the connector file and the input document. Flags win
/// over the connector, and the connector over the input. `secret_values` are the
/// `--secret-file` values, which win over the connector's own `secrets`.
fn ssh_target(
    a: &SshArgs,
    input: &CustomSecretManagerInput,
    secret_values: &Variables,
) -> Result<crate::exec::ssh::SshTarget, Failure> {
    let host = a
        .host
        .clone()
        .or_else(|| input.host.clone())
        .ok_or_else(|| {
            Failure::invalid(
                "executeOnDelegate is false but no host is given (--host or the input's host)",
            )
        })?;
    let connector = match &a.connector {
        Some(p) => {
            let text = files::read_text(p, "connector", bounds::MAX_DOCUMENT_BYTES)?;
            Some(input::parse_connector(&text).map_err(|e| in_file("connector", p, e))?)
        }
        None => None,
    };
    let auth = if let Some(f) = &a.identity_file {
        Some(SshAuth::KeyFile {
            path: f.clone(),
            passphrase: a
                .passphrase_file
                .as_deref()
                .map(|p| files::read_secret(p, "passphrase file", bounds::MAX_VALUE_FILE_BYTES))
                .transpose()?,
        })
    } else if let Some(f) = &a.password_file {
        Some(SshAuth::Password(files::read_secret(
            f,
            "password file",
            bounds::MAX_VALUE_FILE_BYTES,
        )?))
    } else {
        None
    };
    // The secrets the connector's method names, when it is the one that authenticates: a
    // `--secret-file` value, else the connector's own `{"file": …}` (read here, since the
    // operator wrote it) or `{"value": …}` (which the library reads itself). One trailing
    // newline of a file is not part of the secret.
    let mut connector_secrets = Variables::new();
    if let (None, Some(c)) = (&auth, &connector) {
        for id in c.secret_ids() {
            let what = format!("the file for secret {id}");
            let text = match (secret_values.get(id), c.secrets.get(id)) {
                (Some(v), _) => files::secret_text(v.expose_secret())
                    .ok_or_else(|| Failure::invalid(format!("{what} is not UTF-8")))?,
                (None, Some(SecretSource::File(p))) => {
                    let s = files::read_secret(Path::new(p), &what, bounds::MAX_VALUE_FILE_BYTES)?;
                    s.expose_secret().to_string()
                }
                (None, Some(SecretSource::Value(_))) => continue,
                (None, None) => {
                    return Err(Failure::invalid(format!(
                        "the connector refers to secret {id:?}, which was not supplied (use \
                         --secret-file {id}=PATH or the connector's \"secrets\")"
                    )))
                }
            };
            connector_secrets.insert(id, secret_bytes(text.into_bytes()));
        }
    }
    let mut default_known_hosts = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        default_known_hosts.push(Path::new(&home).join(".ssh/known_hosts"));
    }
    default_known_hosts.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
    task::ssh::ssh_target(
        SshSpec {
            host,
            port: a.port,
            user: a.user.clone(),
            auth,
            connector,
            connector_id: input.connector_id.clone(),
            known_hosts: a.known_hosts.clone(),
            host_keys: a.host_keys.clone(),
            default_known_hosts,
            insecure_accept_any_host_key: a.insecure_accept_any_host_key,
        },
        &connector_secrets,
    )
}

/// Run `test-run`, writing to `out` and `err`; returns the process exit code.
pub async fn test_run(args: &TestRunArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let numbers = match numbers(args) {
        Ok(n) => n,
        Err(f) => return report_failure(args, None, &f, out, err),
    };
    let connect_timeout = numbers.connect_timeout;
    // Values are masked everywhere from here on, including in error messages.
    let prepared = match spec(args, numbers).and_then(task::prepare) {
        Ok(p) => p,
        Err(f) => return report_failure(args, None, &f, out, err),
    };
    let executors = Executors {
        local: LocalExecutor::new(&EnvPolicy::with_extra(args.env_allow.iter().cloned())),
        ssh: SshPool::new(SshConfig {
            connect_timeout,
            ..SshConfig::default()
        }),
    };
    let cancel = CancellationToken::new();
    let outcome = run_with_ctrl_c(&prepared, &executors, &cancel).await;
    report(args, &prepared, outcome, out, err)
}

async fn run_with_ctrl_c(
    prepared: &PreparedTask,
    executors: &Executors,
    cancel: &CancellationToken,
) -> Outcome {
    let c = cancel.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            c.cancel();
        }
    });
    let outcome = task::run(prepared, executors, cancel).await;
    ctrl_c.abort();
    outcome
}

fn write_logs(outcome: &Outcome, err: &mut dyn Write) {
    for (name, log) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
        let bytes = log.as_bytes();
        if bytes.is_empty() {
            continue;
        }
        let _ = writeln!(err, "--- script {name} (masked) ---");
        let _ = err.write_all(bytes);
        if !bytes.ends_with(b"\n") {
            let _ = writeln!(err);
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn report(
    args: &TestRunArgs,
    prepared: &PreparedTask,
    outcome: Outcome,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    if !args.quiet && !args.json {
        write_logs(&outcome, err);
    }
    let secret = match &outcome.result {
        Ok(s) => s,
        Err(e) => {
            let f = prepared.failure(e);
            return report_failure(args, Some(&outcome), &f, out, err);
        }
    };
    // The one place test-run exposes the secret: to print it under --reveal, and its length.
    let bytes = secret.expose_secret();
    if args.json {
        let mut obj = serde_json::json!({
            "ok": true,
            "length": bytes.len(),
            "duration_ms": ms(outcome.elapsed),
            "attempts": outcome.attempts,
        });
        if args.reveal {
            obj["secret"] = match std::str::from_utf8(bytes) {
                Ok(s) => serde_json::Value::from(s),
                Err(_) => {
                    use base64::Engine as _;
                    obj["secret_encoding"] = "base64".into();
                    base64::engine::general_purpose::STANDARD
                        .encode(bytes)
                        .into()
                }
            };
        }
        if !args.quiet {
            add_logs(&mut obj, &outcome);
        }
        let _ = writeln!(out, "{obj}");
    } else {
        if args.reveal {
            let _ = out.write_all(bytes);
        }
        let summary = format!(
            "ok: secret retrieved ({} bytes) in {} ms, {} attempt{}",
            bytes.len(),
            ms(outcome.elapsed),
            outcome.attempts,
            if outcome.attempts == 1 { "" } else { "s" }
        );
        if args.reveal {
            let _ = writeln!(err, "{summary}");
        } else {
            let _ = writeln!(out, "{summary}");
        }
    }
    let _ = out.flush();
    0
}

fn add_logs(obj: &mut serde_json::Value, outcome: &Outcome) {
    obj["stdout"] = String::from_utf8_lossy(outcome.stdout.as_bytes()).into();
    obj["stderr"] = String::from_utf8_lossy(outcome.stderr.as_bytes()).into();
}

fn report_failure(
    args: &TestRunArgs,
    outcome: Option<&Outcome>,
    f: &Failure,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    if args.json {
        let mut obj = serde_json::json!({
            "ok": false,
            "error": {"kind": f.kind.as_str(), "message": f.message},
        });
        if let Some(o) = outcome {
            obj["attempts"] = o.attempts.into();
            obj["duration_ms"] = ms(o.elapsed).into();
            if !args.quiet {
                add_logs(&mut obj, o);
            }
        }
        let _ = writeln!(out, "{obj}");
    } else {
        let _ = writeln!(err, "error[{}]: {}", f.kind, f.message);
    }
    f.kind.exit_code()
}
