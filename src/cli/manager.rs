//! `csm-agent manager`: the control plane's agent endpoint and dispatch hub.
//!
//! It prints `listening on ADDR` on stdout once bound and its store is open (so
//! `--listen 127.0.0.1:0` is usable), serves agents until SIGTERM or SIGINT, then closes
//! their sessions with 1001.
//! It also serves the GraphQL API (`POST /graphql`, GraphiQL on GET) with its store in
//! `--data-dir`; API keys come from `--api-key-file` (one a line, `resolve KEY` for the
//! resolve role) or `CSM_API_KEY` (one admin key).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::LogFormat;
use crate::error::ErrorKind;
use crate::manager::api::ApiConfig;
use crate::manager::{self, AgentTokens, ManagerConfig};

/// `csm-agent manager`.
#[derive(Debug, Args, Clone)]
#[command(
    long_about = "Serve the control plane's agent endpoint and dispatch hub: agents connect \
to /agent/v1/connect with a bearer token from --agent-token-file, and tasks are routed to \
them by selector and capacity.\n\n\
It prints `listening on ADDR` on stdout once bound.",
    after_long_help = "Signals:\n  \
SIGTERM, SIGINT  close every agent session with 1001 (agents reconnect) and exit\n\n\
Exit status:\n  \
0  stopped by a signal\n  \
2  invalid flags, token file or TLS files\n\n\
Example:\n  \
csm-agent manager --listen 0.0.0.0:8443 --data-dir /var/lib/csm-manager \\\n    \
--agent-token-file /etc/csm-agent/agent-tokens --tls-cert cert.pem --tls-key key.pem"
)]
pub struct ManagerArgs {
    /// Address to listen on, e.g. 0.0.0.0:8443 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// The manager's data directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Accepted agent tokens, one per line.
    #[arg(long, value_name = "FILE")]
    pub agent_token_file: PathBuf,
    /// Serve HTTPS/WSS with this PEM certificate chain.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds between heartbeats; a peer silent for three is dropped.
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    pub heartbeat_secs: f64,
    /// Seconds a dropped agent's tasks wait for it before going to another agent.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub redispatch_grace_secs: f64,
    /// Log format: human or json.
    #[arg(long, value_name = "FORMAT", default_value = "human")]
    pub log_format: String,
    /// GraphQL API keys, one a line: `KEY` or `admin KEY` (admin), `resolve KEY` (resolve).
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
}

/// The GraphQL API keys: the file, plus `CSM_API_KEY` as an admin key.
fn api_keys(args: &ManagerArgs) -> Result<crate::manager::auth::ApiKeys, String> {
    use crate::manager::auth::{ApiKeys, Role, MIN_KEY_LEN};
    let mut keys = match &args.api_key_file {
        Some(f) => ApiKeys::from_file(f).map_err(|e| e.to_string())?,
        None => ApiKeys::empty(),
    };
    if let Some(k) = std::env::var_os("CSM_API_KEY") {
        let k = zeroize::Zeroizing::new(k.into_encoded_bytes());
        if k.len() < MIN_KEY_LEN {
            return Err(format!(
                "CSM_API_KEY must be at least {MIN_KEY_LEN} characters"
            ));
        }
        keys.add(&k, Role::Admin);
    }
    Ok(keys)
}

fn secs(v: f64, flag: &str) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 && v < 86_400.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{flag} must be a positive number of seconds"))
    }
}

fn config(args: &ManagerArgs) -> Result<(ManagerConfig, LogFormat, ApiConfig), String> {
    let format = match args.log_format.as_str() {
        "human" | "text" => LogFormat::Human,
        "json" => LogFormat::Json,
        _ => return Err("--log-format must be human or json".into()),
    };
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&args.data_dir)
            .map_err(|e| format!("--data-dir {}: {e}", args.data_dir.display()))?;
    }
    let tokens = AgentTokens::from_file(&args.agent_token_file).map_err(|e| e.to_string())?;
    let mut cfg = ManagerConfig::new(tokens);
    cfg.hub.heartbeat = secs(args.heartbeat_secs, "--heartbeat-secs")?;
    cfg.hub.redispatch_grace = secs(args.redispatch_grace_secs, "--redispatch-grace-secs")?;
    if let (Some(c), Some(k)) = (&args.tls_cert, &args.tls_key) {
        cfg.tls = Some(manager::tls_server_config(c, k).map_err(|e| e.to_string())?);
    }
    let api = ApiConfig::new(args.data_dir.clone(), api_keys(args)?);
    Ok((cfg, format, api))
}

/// Run the manager; returns the exit status.
pub fn main(args: &ManagerArgs, log: &str) -> i32 {
    let (cfg, format, api) = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error[invalid_input]: {e}");
            return ErrorKind::InvalidInput.exit_code();
        }
    };
    super::run::init_logging(log, format);
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error[invalid_input]: --listen {}: {e}", args.listen);
                return ErrorKind::InvalidInput.exit_code();
            }
        };
        let addr = listener.local_addr().ok();
        let ready = move || {
            if let Some(addr) = addr {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "listening on {addr}");
                let _ = out.flush();
            }
        };
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                eprintln!("error[internal]: cannot install signal handlers");
                return ErrorKind::Internal.exit_code();
            }
        };
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        match manager::api::run(listener, cfg, api, ready, stop).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error[internal]: {e}");
                ErrorKind::Internal.exit_code()
            }
        }
    })
}
