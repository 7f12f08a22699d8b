//! The command line: argument definitions and the `test-run` command.
//!
//! `test-run` runs one template by hand, for operators writing and debugging scripts. It
//! prints a summary and the script's masked log. Without `--reveal`, no byte of the secret
//! is printed in any form; with it, stdout carries exactly the secret's bytes. Every failure
//! is one typed error with a stable kind and exit code (see [`ErrorKind::exit_code`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorKind, Kind};
use crate::exec::local::{EnvPolicy, LocalExecutor};
use crate::exec::ssh::{
    self, HostKeyPolicy, SshAuth, SshConfig, SshCredential, SshExecutor, SshPool, SshTarget,
};
use crate::exec::{self, Executor, Job, Limits, Outcome, RetryPolicy};
use crate::input::{self, CustomSecretManagerInput};
use crate::mask::Masker;
use crate::secret::{secret_bytes, Variables};
use crate::template::Template;

pub mod dev;
pub mod manager;
pub mod run;

/// csm-agent: run Custom Secrets Manager scripts safely.
#[derive(Debug, Parser)]
#[command(name = "csm-agent", version, about, long_about = None)]
pub struct Cli {
    /// Log verbosity for the agent's own diagnostics (never values): error, warn, info, debug.
    #[arg(long, global = true, default_value = "warn", env = "CSM_LOG")]
    pub log: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one template by hand, locally or over SSH.
    TestRun(TestRunArgs),
    /// Run the agent: connect to the manager and run its tasks.
    Run(run::RunArgs),
    /// Serve the agent endpoint and dispatch hub (the control plane's side).
    Manager(manager::ManagerArgs),
    /// The control plane and a local agent in one process, for trying things out.
    Dev(dev::DevArgs),
}

/// `csm-agent test-run`.
#[derive(Debug, Args, Clone)]
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
    /// Per-attempt timeout in seconds [default: the template's timeoutMillis, else 60].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Attempts in all (Harness: 3).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub attempts: u32,
    /// Seconds between attempts.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
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
    /// SSH port [default: the connector's, else 22].
    #[arg(long, value_name = "N")]
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
    /// TCP connect timeout in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub connect_timeout: f64,
}

/// An error as `test-run` reports it: a stable kind and a message free of values.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Stable kind.
    pub kind: ErrorKind,
    /// Human-readable message; masked.
    pub message: String,
}

impl<E: Kind + std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure {
        kind: ErrorKind::InvalidInput,
        message: message.into(),
    }
}

/// Where `test-run` runs the script.
enum Target {
    Local,
    Ssh(SshTarget),
}

/// Everything `test-run` needs, resolved from flags, files and the input document.
struct Plan {
    template: Template,
    vars: Variables,
    /// Values for `${secrets.getValue("id")}`.
    secrets: Variables,
    command_path: String,
    timeout: Duration,
    target: Target,
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| invalid(format!("cannot read {what} {}: {e}", path.display())))
}

fn parse_assignment<'a>(arg: &'a str, flag: &str) -> Result<(&'a str, &'a str), Failure> {
    match arg.split_once('=') {
        Some((name, rest)) if !name.is_empty() => Ok((name, rest)),
        // Never echo the argument: its right-hand side may be a value.
        _ => Err(invalid(format!("{flag} takes NAME=…"))),
    }
}

fn plan(args: &TestRunArgs) -> Result<Plan, Failure> {
    let text = read_file(&args.template, "template")?;
    let text = String::from_utf8(text).map_err(|_| invalid("the template is not UTF-8"))?;
    let template = Template::parse(&text)?;

    let input = match &args.input {
        Some(p) => {
            let t = String::from_utf8(read_file(p, "input")?)
                .map_err(|_| invalid("the input is not UTF-8"))?;
            input::parse_query_variables(&t)?
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
        secrets.insert(
            id.clone(),
            secret_bytes(read_file(path, &format!("the file for secret {id}"))?),
        );
    }
    let target = if args.ssh.host.is_some() || input.execute_on_delegate == Some(false) {
        Target::Ssh(ssh_target(&args.ssh, &input, &secret_files)?)
    } else {
        Target::Local
    };

    let mut vars = input.variables()?;
    for v in &args.vars {
        let (name, value) = parse_assignment(v, "--var")?;
        vars.insert(name, secret_bytes(value.as_bytes().to_vec()));
    }
    for v in &args.var_files {
        let (name, path) = parse_assignment(v, "--var-file")?;
        let value = read_file(Path::new(path), &format!("the value file for {name}"))?;
        vars.insert(name, secret_bytes(value));
    }

    let timeout = match args.timeout {
        Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
        Some(_) => return Err(invalid("--timeout must be a positive number of seconds")),
        None => template.timeout().unwrap_or(exec::DEFAULT_TIMEOUT),
    };
    let command_path = args
        .command_path
        .clone()
        .or(input.command_path)
        .unwrap_or_else(|| exec::DEFAULT_COMMAND_PATH.to_string());
    Ok(Plan {
        template,
        vars,
        secrets,
        command_path,
        timeout,
        target,
    })
}

/// Read a secret from a file. One trailing newline (as `echo pw > file` leaves) is not part
/// of the secret.
fn read_secret(path: &Path, what: &str) -> Result<SecretString, Failure> {
    let bytes = zeroize::Zeroizing::new(read_file(path, what)?);
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid(format!("{what} is not UTF-8")))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    Ok(SecretString::from(text.to_string()))
}

/// Resolve the SSH target from flags, the connector file and the input document.
/// Flags win over the connector, and the connector over the input.
fn ssh_target(
    a: &SshArgs,
    input: &CustomSecretManagerInput,
    secret_files: &BTreeMap<String, PathBuf>,
) -> Result<SshTarget, Failure> {
    let host = a
        .host
        .clone()
        .or_else(|| input.host.clone())
        .ok_or_else(|| {
            invalid("executeOnDelegate is false but no host is given (--host or the input's host)")
        })?;
    let connector = match &a.connector {
        Some(p) => {
            let text = String::from_utf8(read_file(p, "connector")?)
                .map_err(|_| invalid("the connector is not UTF-8"))?;
            let c = input::parse_connector(&text)?;
            if let (Some(want), Some(have)) = (&input.connector_id, &c.id) {
                if want != have {
                    return Err(invalid(format!("the input's connectorId {want:?} does not match the connector file's id {have:?}")));
                }
            }
            Some(c)
        }
        None => None,
    };
    let lookup = |id: &str| -> Result<SecretString, Failure> {
        if let Some(p) = secret_files.get(id) {
            return read_secret(p, &format!("the file for secret {id}"));
        }
        match connector.as_ref().and_then(|c| c.secrets.get(id)) {
            Some(input::SecretSource::File(p)) => read_secret(Path::new(p), &format!("the file for secret {id}")),
            Some(input::SecretSource::Value(v)) => Ok(v.clone()),
            None => Err(invalid(format!(
                "the connector refers to secret {id:?}, which was not supplied (use --secret-file {id}=PATH or the connector's \"secrets\")"
            ))),
        }
    };

    let auth_from_flags = if let Some(f) = &a.identity_file {
        Some(SshAuth::KeyFile {
            path: f.clone(),
            passphrase: a
                .passphrase_file
                .as_deref()
                .map(|p| read_secret(p, "passphrase file"))
                .transpose()?,
        })
    } else if let Some(f) = &a.password_file {
        Some(SshAuth::Password(read_secret(f, "password file")?))
    } else {
        None
    };
    let conn_auth = connector
        .as_ref()
        .and_then(|c| c.ssh_authentication.as_ref());
    let auth = match (auth_from_flags, conn_auth) {
        (Some(auth), _) => auth,
        (None, Some(sa)) => {
            let m = &sa.ssh_authentication_method;
            match m.ssh_credential_type.as_str() {
                "SSH_KEY" => {
                    let k = m.inline_ssh_key.as_ref().ok_or_else(|| invalid("SSH_KEY needs inlineSSHKey"))?;
                    SshAuth::Key {
                        private_key: lookup(&k.ssh_key_secret_file_id)?,
                        passphrase: k.passphrase_secret_id.as_deref().map(lookup).transpose()?,
                    }
                }
                "SSH_KEY_FILE_PATH" => {
                    let k = m.ssh_key_file.as_ref().ok_or_else(|| invalid("SSH_KEY_FILE_PATH needs sshKeyFile"))?;
                    SshAuth::KeyFile {
                        path: PathBuf::from(&k.path),
                        passphrase: k.passphrase_secret_id.as_deref().map(lookup).transpose()?,
                    }
                }
                "PASSWORD" => {
                    let p = m.server_password.as_ref().ok_or_else(|| invalid("PASSWORD needs serverPassword"))?;
                    SshAuth::Password(lookup(&p.password_secret_id)?)
                }
                other => return Err(invalid(format!("sshCredentialType {other:?} is not supported (SSH_KEY, SSH_KEY_FILE_PATH, PASSWORD)"))),
            }
        }
        (None, None) => {
            return Err(invalid(
                "SSH needs credentials: --identity-file, --password-file or --connector",
            ))
        }
    };
    let user = a
        .user
        .clone()
        .or_else(|| conn_auth.map(|s| s.user_name.clone()))
        .ok_or_else(|| invalid("SSH needs a user: --user or the connector's userName"))?;
    let port = a
        .port
        .or_else(|| conn_auth.and_then(|s| s.port))
        .unwrap_or(ssh::DEFAULT_PORT);

    let host_keys = if a.insecure_accept_any_host_key {
        HostKeyPolicy::InsecureAcceptAny
    } else {
        let mut known_hosts: Vec<PathBuf> = a.known_hosts.clone();
        let mut pinned = a.host_keys.clone();
        if let Some(c) = &connector {
            known_hosts.extend(c.known_hosts.iter().map(PathBuf::from));
            pinned.extend(c.host_keys.iter().cloned());
        }
        if known_hosts.is_empty() && pinned.is_empty() {
            if let Some(home) = std::env::var_os("HOME") {
                known_hosts.push(Path::new(&home).join(".ssh/known_hosts"));
            }
            known_hosts.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
        }
        HostKeyPolicy::Strict {
            known_hosts,
            pinned,
        }
    };
    Ok(SshTarget {
        host,
        port,
        credential: Arc::new(SshCredential::new(user, auth)),
        host_keys: Arc::new(host_keys),
    })
}

/// Run `test-run`, writing to `out` and `err`; returns the process exit code.
pub async fn test_run(args: &TestRunArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let plan = match plan(args) {
        Ok(p) => p,
        Err(f) => return report_failure(args, None, &f, out, err),
    };
    let vars = plan.vars;
    let secrets = plan.secrets;
    // Values are masked everywhere from here on, including in error messages.
    let mut masked_values = vars.clone();
    for (id, v) in secrets.iter() {
        masked_values.insert(
            format!("secrets.getValue({id})"),
            secret_bytes(v.expose_secret().to_vec()),
        );
    }
    let masker = Arc::new(Masker::for_variables(
        masked_values.iter().map(|(_, v)| v.expose_secret()),
    ));
    drop(masked_values);
    let rendered = match plan.template.render(&vars, &secrets) {
        Ok(r) => r,
        Err(e) => return report_failure(args, None, &masked(&masker, e.into()), out, err),
    };
    let job = Job {
        script: rendered,
        command_path: plan.command_path,
        timeout: plan.timeout,
        limits: Limits::default(),
        masker: masker.clone(),
    };
    let executor: Box<dyn Executor> = match plan.target {
        Target::Local => Box::new(LocalExecutor::new(&EnvPolicy::with_extra(
            args.env_allow.iter().cloned(),
        ))),
        Target::Ssh(target) => {
            let config = SshConfig {
                connect_timeout: Duration::from_secs_f64(args.ssh.connect_timeout.max(0.001)),
                ..SshConfig::default()
            };
            Box::new(SshExecutor::new(SshPool::new(config), target))
        }
    };
    let policy = RetryPolicy {
        attempts: args.attempts.max(1),
        delay: Duration::from_secs_f64(args.retry_delay.max(0.0)),
    };
    let cancel = CancellationToken::new();
    let outcome = run_with_ctrl_c(executor.as_ref(), &job, &policy, &cancel).await;
    report(args, &masker, outcome, out, err)
}

async fn run_with_ctrl_c(
    executor: &dyn Executor,
    job: &Job,
    policy: &RetryPolicy,
    cancel: &CancellationToken,
) -> Outcome {
    let c = cancel.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            c.cancel();
        }
    });
    let outcome = exec::run(executor, job, policy, cancel).await;
    ctrl_c.abort();
    outcome
}

fn masked(masker: &Masker, f: Failure) -> Failure {
    Failure {
        kind: f.kind,
        message: masker.mask_str(&f.message),
    }
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
    masker: &Masker,
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
            let f = masked(masker, Failure::from(e));
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

/// Run a parsed command line and return the process exit code.
pub fn main(cli: Cli) -> i32 {
    // The services set up their own logging (format) and runtime.
    match &cli.command {
        Command::Run(a) => return run::main(a, &cli.log),
        Command::Manager(a) => return manager::main(a, &cli.log),
        Command::Dev(a) => return dev::main(a, &cli.log),
        Command::TestRun(_) => {}
    }
    init_logging(&cli.log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error[internal]: cannot start the runtime: {e}");
            return ErrorKind::Internal.exit_code();
        }
    };
    rt.block_on(async {
        match &cli.command {
            Command::TestRun(args) => {
                let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
                test_run(args, &mut out, &mut err).await
            }
            Command::Run(_) | Command::Manager(_) | Command::Dev(_) => {
                ErrorKind::Internal.exit_code()
            }
        }
    })
}

/// Diagnostics go to stderr. They carry kinds, names and timings, never values.
fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
