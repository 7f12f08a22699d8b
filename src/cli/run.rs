//! `csm-agent run`: the long-running agent.
//!
//! Configuration comes from the TOML file, the `CSM_*` environment and these flags (in
//! rising precedence; see [`crate::config`]). Signals: the first SIGTERM drains (send
//! `draining`, take nothing new, finish and deliver what runs, exit 0); a second SIGTERM,
//! or SIGINT, cancels the running tasks (their process groups are killed) and exits.
//! Exit status: 0 when every result was delivered, 1 when some were not, 2 for a
//! configuration error.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use crate::agent::{self, ExecRunner, Shutdown, TaskRunner};
use crate::config::{self, Flags, LogFormat};
use crate::error::ErrorKind;
use crate::exec::local::EnvPolicy;

/// `csm-agent run`. The token is never a flag: use `--token-file`, `CSM_TOKEN_FILE` or
/// `CSM_TOKEN`.
#[derive(Debug, Args, Clone)]
#[command(
    long_about = "Run the agent: connect to the manager over a WebSocket, take tasks, run their \
scripts locally or over SSH within the local policy, and return the results.\n\n\
Configuration comes from the TOML file, then the CSM_* environment, then these flags (each \
wins over the one before). The token is never a flag. `csm-agent config check` validates a \
configuration and prints the effective one; docs/configuration.md lists every key.",
    after_long_help = "Environment:\n  \
CSM_CONFIG            the configuration file (like --config)\n  \
CSM_MANAGER           the manager's base URL\n  \
CSM_TOKEN_FILE        a file holding the token\n  \
CSM_TOKEN             the token itself (when no token file is given)\n  \
CSM_NAME, CSM_SELECTORS (comma-separated), CSM_CAPACITY, CSM_STATE_DIR, CSM_AGENT_ID\n  \
CSM_LOG               log filter (like --log), CSM_LOG_FORMAT (human or json)\n  \
CSM_METRICS_LISTEN    /healthz and /metrics on a loopback address\n  \
CSM_MAX_FRAME_BYTES, CSM_CA_FILE, CSM_CLIENT_CERT, CSM_CLIENT_KEY\n  \
CSM_RECONNECT_INITIAL_MS, CSM_RECONNECT_MAX_MS\n  \
CSM_POLICY_LOCAL, CSM_POLICY_COMMAND_PATH_PREFIXES, CSM_POLICY_SSH_HOSTS,\n  \
CSM_POLICY_SSH_KEY_FILE_PREFIXES, CSM_POLICY_MAX_TIMEOUT_SECS, CSM_POLICY_PINNED_TEMPLATES\n\n\
Signals:\n  \
SIGTERM               drain: take no new task, finish and deliver the running ones, exit\n  \
                      (gives up after policy.max_timeout_secs + 30 s)\n  \
second SIGTERM, SIGINT  cancel the running tasks (their process groups are killed), exit\n\n\
Exit status:\n  \
0  every result was delivered\n  \
1  some results were not delivered\n  \
2  configuration error\n\n\
Under systemd (Type=notify) the agent sends READY=1 once started, WATCHDOG=1 every half \
WatchdogSec, and STOPPING=1 when a drain begins.\n\n\
Example:\n  \
CSM_TOKEN_FILE=/etc/csm-agent/token csm-agent run --manager https://cp.example:8443 --selector eu"
)]
pub struct RunArgs {
    /// The TOML configuration file [default: /etc/csm-agent/agent.toml, if it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The manager's base URL: http://, https://, ws:// or wss:// and host:port.
    #[arg(long, value_name = "URL")]
    pub manager: Option<String>,
    /// A file holding the agent's token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The agent's name [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// A selector (repeat for several); replaces the configured list.
    #[arg(long = "selector", value_name = "S")]
    pub selectors: Vec<String>,
    /// How many tasks run at once [default: 32].
    #[arg(long, value_name = "N")]
    pub capacity: Option<u32>,
    /// Where the agent id is kept [default: /var/lib/csm-agent].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log format: human or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Serve /healthz and /metrics on this loopback address (off by default).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// Libraries that log whole frames or requests at trace level (tungstenite logs every
/// message it receives and the client's handshake request, token included). Whatever the
/// operator asks for, they are capped at `info`.
const CAPPED: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "axum",
    "rustls",
    "tokio_rustls",
];

/// The filter directives for `level`, with [`CAPPED`] libraries held at `info`.
pub(crate) fn filter_directives(level: &str) -> String {
    let mut out: Vec<String> = level
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .filter(|d| {
            let target = d.split(['=', '[']).next().unwrap_or("");
            !CAPPED
                .iter()
                .any(|c| target == *c || target.starts_with(&format!("{c}::")))
        })
        .map(String::from)
        .collect();
    out.extend(CAPPED.iter().map(|c| format!("{c}=info")));
    out.join(",")
}

/// Logs go to stderr, human or JSON. Fields carry ids, kinds, counts and timings only.
pub(crate) fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter_directives(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter_directives("info")));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into journald or a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Run the agent; returns the exit status.
pub fn main(args: &RunArgs, log: &str) -> i32 {
    let flags = Flags {
        config: args.config.clone(),
        manager: args.manager.clone(),
        token_file: args.token_file.clone(),
        name: args.name.clone(),
        selectors: args.selectors.clone(),
        capacity: args.capacity,
        state_dir: args.state_dir.clone(),
        log_format: args.log_format.clone(),
        metrics_listen: args.metrics_listen.clone(),
    };
    let loaded = match config::load(&flags, &|k: &str| std::env::var(k).ok()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error[invalid_input]: configuration: {e}");
            return ErrorKind::InvalidInput.exit_code();
        }
    };
    init_logging(log, loaded.log_format);
    let rt = match super::agent_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let shutdown = Shutdown::default();
        let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                eprintln!("error[internal]: cannot install signal handlers");
                return ErrorKind::Internal.exit_code();
            }
        };
        let s = shutdown.clone();
        tokio::spawn(async move {
            let mut terms = 0;
            loop {
                tokio::select! {
                    _ = term.recv() => {
                        terms += 1;
                        if terms == 1 {
                            tracing::info!("SIGTERM: draining (send SIGTERM again or SIGINT to stop now)");
                            s.drain.cancel();
                        } else {
                            tracing::warn!("second SIGTERM: cancelling running tasks");
                            s.abort.cancel();
                        }
                    }
                    _ = int.recv() => {
                        tracing::warn!("SIGINT: cancelling running tasks");
                        s.abort.cancel();
                    }
                }
            }
        });
        let metrics = loaded.agent.metrics.clone();
        if let Some(addr) = loaded.metrics_listen {
            match agent::metrics::bind(addr).await {
                Ok(l) => {
                    let addr = l.local_addr().unwrap_or(addr);
                    tracing::info!(%addr, "serving /healthz and /metrics");
                    tokio::spawn(agent::metrics::serve(l, metrics));
                }
                Err(e) => {
                    eprintln!("error[invalid_input]: configuration: {e}");
                    return ErrorKind::InvalidInput.exit_code();
                }
            }
        }
        let runner: Arc<dyn TaskRunner> = Arc::new(ExecRunner::new(&EnvPolicy::default()));
        match agent::run(loaded.agent, runner, shutdown).await {
            Ok(summary) if summary.undelivered == 0 => 0,
            Ok(_) => 1,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("error[invalid_input]: {e}");
                ErrorKind::InvalidInput.exit_code()
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_dumping_libraries_are_capped_whatever_is_asked() {
        let d =
            filter_directives("trace,tungstenite=trace,tokio_tungstenite::x=debug,csm_agent=debug");
        assert!(!d.contains("tungstenite=trace"), "{d}");
        assert!(!d.contains("tokio_tungstenite::x"), "{d}");
        assert!(d.starts_with("trace,csm_agent=debug,"), "{d}");
        assert!(
            d.contains("tungstenite=info") && d.contains("hyper=info"),
            "{d}"
        );
        assert!(tracing_subscriber::EnvFilter::try_new(&d).is_ok());
    }
}
