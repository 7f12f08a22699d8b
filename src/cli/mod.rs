//! The command line: the clap definitions of `csm-agent` and its subcommands, and dispatch.
//!
//! Each subcommand lives in its own module and writes to given streams, returning the exit
//! code ([`ErrorKind::exit_code`] for failures). A command line clap refuses is reported
//! like any other failure: `invalid_input`, exit 2, and never an argument's value
//! (`cli/arg_error.rs`).

mod arg_error;
pub mod completions;
pub mod config_check;
pub mod dev;
mod files;
pub mod manager;
pub mod run;
pub mod test_run;

use std::ffi::OsString;

use clap::{Parser, Subcommand};

use crate::error::ErrorKind;
pub use test_run::{SshArgs, TestRunArgs};

/// csm-agent: run Custom Secrets Manager scripts safely.
#[derive(Debug, Parser)]
#[command(
    name = "csm-agent",
    version,
    about,
    long_about = "csm-agent runs Custom Secrets Manager scripts: bash templates that read a secret \
from a store and leave it in $secret. Values are bound as data, never pasted into the script; \
scripts run locally or over SSH with strict host-key checking; logs are masked.\n\n\
`dev` starts a control plane and a local agent in one process, to try it out; `manager` is \
the control plane (GraphQL API, encrypted store, agent endpoint); `run` is the long-running \
agent that takes tasks from a control plane; `test-run` runs one template by hand. `config \
check` validates an agent configuration; `completions` and `man` print shell completions \
and manual pages.",
    after_help = "Documentation: README.md and docs/ (operations.md, configuration.md, \
security.md, systemd.md, sidecar.md), installed under /usr/share/doc/csm-agent/."
)]
pub struct Cli {
    /// Log verbosity for the agent's own diagnostics (never values): error, warn, info, debug.
    #[arg(long, global = true, default_value = "warn", env = "CSM_LOG")]
    pub log: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one template by hand, locally or over SSH.
    TestRun(TestRunArgs),
    /// Run the agent: connect to the manager and run its tasks.
    Run(run::RunArgs),
    /// Serve the agent endpoint and dispatch hub (the control plane's side).
    Manager(manager::ManagerArgs),
    /// Check the agent's configuration, or print its defaults.
    Config(config_check::ConfigArgs),
    /// Print a shell completion script.
    Completions(completions::CompletionsArgs),
    /// Print or write the manual pages.
    Man(completions::ManArgs),
    /// The control plane and a local agent in one process, for trying things out.
    Dev(dev::DevArgs),
}

/// Parse `args` (the program name first) and run the command; returns the exit code.
pub fn main_from<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    // Before anything reads a token, a key or a value (src/harden.rs).
    if crate::harden::not_dumpable().is_err() {
        eprintln!("error[internal]: cannot make the process non-dumpable (prctl)");
        return ErrorKind::Internal.exit_code();
    }
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => main(cli),
        Err(e) => arg_error::report(&e, arg_error::wants_json(&args)),
    }
}

/// Run a parsed command line and return the process exit code.
pub fn main(cli: Cli) -> i32 {
    // The services set up their own logging (format) and runtime.
    match &cli.command {
        Command::Run(a) => return run::main(a, &cli.log),
        Command::Manager(a) => return manager::main(a, &cli.log),
        Command::Config(a) => return config_check::main(a),
        Command::Completions(a) => return completions::completions(a),
        Command::Man(a) => return completions::man(a),
        Command::Dev(a) => return dev::main(a, &cli.log),
        Command::TestRun(_) => {}
    }
    init_logging(&cli.log);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        match &cli.command {
            Command::TestRun(args) => {
                let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
                test_run::test_run(args, &mut out, &mut err).await
            }
            Command::Run(_)
            | Command::Manager(_)
            | Command::Dev(_)
            | Command::Config(_)
            | Command::Completions(_)
            | Command::Man(_) => unreachable!("dispatched above"),
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

/// The agent's runtime: one thread. Its own work per task is a fraction of a millisecond
/// (bash runs in processes of its own), and blocking work (SSH sessions, starting the next
/// bash) goes to the blocking pool; one thread instead of two saves memory when idle and
/// cross-thread wake-ups per task.
pub(crate) fn agent_runtime() -> Result<tokio::runtime::Runtime, i32> {
    started(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    )
}

/// The multi-threaded tokio runtime every other command runs on (one worker per core).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    started(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    )
}

/// A runtime that could not start is reported on stderr and becomes the exit status.
fn started(rt: std::io::Result<tokio::runtime::Runtime>) -> Result<tokio::runtime::Runtime, i32> {
    rt.map_err(|e| {
        eprintln!("error[internal]: cannot start the runtime: {e}");
        ErrorKind::Internal.exit_code()
    })
}
