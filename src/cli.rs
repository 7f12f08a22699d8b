//! The command line: argument definitions and the `test-run` command.
//!
//! `test-run` runs one template by hand, for operators writing and debugging scripts. It
//! prints a summary and the script's masked log. Without `--reveal`, no byte of the secret
//! is printed in any form; with it, stdout carries exactly the secret's bytes. Every failure
//! is one typed error with a stable kind and exit code (see [`ErrorKind::exit_code`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorKind, Kind};
use crate::exec::local::{EnvPolicy, LocalExecutor};
use crate::exec::{self, Executor, Job, Outcome, RetryPolicy};
use crate::input::{self, CustomSecretManagerInput};
use crate::mask::Masker;
use crate::secret::{secret_bytes, Variables};
use crate::template::Template;

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

/// Everything `test-run` needs, resolved from flags, files and the input document.
struct Plan {
    template: Template,
    vars: Variables,
    command_path: String,
    timeout: Duration,
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
    if input.execute_on_delegate == Some(false) {
        return Err(Failure {
            kind: ErrorKind::Unsupported,
            message:
                "executeOnDelegate: false (run on a target host over SSH) is not supported yet; \
                      csm-agent will not fall back to running it locally"
                    .into(),
        });
    }

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
        command_path,
        timeout,
    })
}

/// Run `test-run`, writing to `out` and `err`; returns the process exit code.
pub async fn test_run(args: &TestRunArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let plan = match plan(args) {
        Ok(p) => p,
        Err(f) => return report_failure(args, None, &f, out, err),
    };
    let vars = Arc::new(plan.vars);
    // Values are masked everywhere from here on, including in error messages.
    let masker = Masker::new(vars.iter().map(|(_, v)| v.expose_secret()));
    let rendered = match plan.template.render(&vars, &Variables::new()) {
        Ok(r) => r,
        Err(e) => return report_failure(args, None, &masked(&masker, e.into()), out, err),
    };
    if !Path::new(&plan.command_path).is_dir() {
        let f = Failure {
            kind: ErrorKind::CommandPath,
            message: format!(
                "commandPath {:?} does not exist or is not a directory",
                plan.command_path
            ),
        };
        return report_failure(args, None, &f, out, err);
    }
    let job = Job::new(rendered, plan.command_path, plan.timeout, vars.clone());
    let executor = LocalExecutor::new(&EnvPolicy::with_extra(args.env_allow.iter().cloned()));
    let policy = RetryPolicy {
        attempts: args.attempts.max(1),
        delay: Duration::from_secs_f64(args.retry_delay.max(0.0)),
    };
    let cancel = CancellationToken::new();
    let outcome = run_with_ctrl_c(&executor, &job, &policy, &cancel).await;
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
        message: String::from_utf8_lossy(&masker.mask(f.message.as_bytes())).into_owned(),
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
            let f = masked(masker, Failure::from_exec(e));
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

impl Failure {
    fn from_exec(e: &exec::ExecError) -> Failure {
        Failure {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
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
