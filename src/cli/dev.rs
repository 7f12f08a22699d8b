//! `csm-agent dev`: the control plane and one local agent in one process, for a first
//! try and for local development.
//!
//! - The control plane serves `POST /graphql` (and GraphiQL) and the agent endpoint on
//!   `--listen` (default `127.0.0.1:8080`), with its store in `--data-dir`, or in a fresh
//!   temporary directory that is deleted on exit.
//! - The agent connects to it over loopback with a random token that never leaves the
//!   process. Its selectors are `local` and the host's name (implicit). Since the control
//!   plane and the agent are one process here, the agent's policy guards nothing and is
//!   opened up: SSH to any host and key files anywhere are allowed.
//! - It prints the GraphQL URL and the API key, once, when the agent is connected. The
//!   key comes from `--api-key` or `CSM_API_KEY`; otherwise a random one is generated,
//!   and printing it to the terminal is the point: `dev` is for the person at it. Use
//!   `csm-agent manager --api-key-file` for anything shared.
//!
//! SIGINT or SIGTERM stops both: the agent drains, then the control plane closes.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;
use tokio::signal::unix::{signal, SignalKind};
use zeroize::Zeroizing;

use crate::agent::connection::Endpoint;
use crate::agent::policy::HostPattern;
use crate::agent::{self, AgentConfig, ExecRunner, Shutdown, TaskRunner};
use crate::config::LogFormat;
use crate::error::ErrorKind;
use crate::exec::local::EnvPolicy;
use crate::manager::api::{self, ApiConfig};
use crate::manager::auth::{generate_key, ApiKeys, Role};
use crate::manager::{AgentTokens, Hub, ManagerConfig};

/// `csm-agent dev`.
#[derive(Debug, Args, Clone)]
pub struct DevArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Keep the store here (created if missing) [default: a temporary directory, deleted on exit].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The admin API key [default: generated and printed]. Visible in this process's argv:
    /// prefer CSM_API_KEY.
    #[arg(long, value_name = "KEY", env = "CSM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Log format: human or json.
    #[arg(long, value_name = "FORMAT", default_value = "human")]
    pub log_format: String,
}

/// What a running `dev` prints.
#[derive(Debug, Clone)]
pub struct DevInfo {
    /// The GraphQL URL.
    pub url: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Whether the data directory is temporary.
    pub temporary: bool,
}

/// The selector every `dev` agent has.
pub const DEV_SELECTOR: &str = "local";

/// Run the control plane and a local agent on `listener` until `shutdown`; `ready` is
/// called once the agent is connected.
pub async fn serve(
    listener: tokio::net::TcpListener,
    data_dir: PathBuf,
    keys: ApiKeys,
    ready: impl FnOnce(&DevInfo),
    temporary: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let token = {
        let t = generate_key();
        SecretString::from(t.to_string())
    };
    let tokens = AgentTokens::from_lines(secrecy::ExposeSecret::expose_secret(&token));
    let mcfg = ManagerConfig::new(tokens);
    let hub = Hub::new(mcfg.hub.clone());
    let (_cp, state) = {
        let (hub, dir) = (hub.clone(), data_dir.clone());
        tokio::task::spawn_blocking(move || api::open(ApiConfig::new(dir, keys), hub))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let stop_manager = tokio_util::sync::CancellationToken::new();
    let manager = {
        let (hub, stop) = (hub.clone(), stop_manager.clone());
        tokio::spawn(async move {
            crate::manager::serve_with(
                listener,
                hub,
                mcfg,
                api::router(state),
                stop.cancelled_owned(),
            )
            .await
        })
    };

    let endpoint = Endpoint::from_base(&format!("http://{addr}")).map_err(|e| e.to_string())?;
    let mut agent_id = [0u8; 16];
    crate::manager::store::crypto::fill_random(&mut agent_id);
    let agent_id: String = agent_id.iter().map(|b| format!("{b:02x}")).collect();
    let mut acfg = AgentConfig::new(endpoint, token, agent_id, DEV_SELECTOR.to_string());
    acfg.selectors = vec![DEV_SELECTOR.to_string()];
    acfg.capacity = 64;
    acfg.policy.ssh_hosts = vec!["*".parse::<HostPattern>().map_err(|e| e.to_string())?];
    acfg.policy.ssh_key_file_prefixes = vec!["/".into()];
    let agent_shutdown = Shutdown::default();
    let runner: Arc<dyn TaskRunner> = Arc::new(ExecRunner::new(&EnvPolicy::default()));
    let agent = tokio::spawn(agent::run(acfg, runner, agent_shutdown.clone()));

    let connected = tokio::time::timeout(
        Duration::from_secs(15),
        hub.wait_for(|a| a.iter().any(|x| x.connected)),
    )
    .await;
    if connected.is_err() {
        agent_shutdown.abort.cancel();
        stop_manager.cancel();
        return Err("the local agent did not connect within 15 s".into());
    }
    ready(&DevInfo {
        url: format!("http://{addr}{}", api::GRAPHQL_PATH),
        data_dir: data_dir.clone(),
        temporary,
    });
    shutdown.await;
    tracing::info!("stopping: draining the local agent");
    agent_shutdown.drain.cancel();
    if tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .is_err()
    {
        agent_shutdown.abort.cancel();
    }
    stop_manager.cancel();
    let _ = manager.await;
    Ok(())
}

/// Run `dev`; returns the exit status.
pub fn main(args: &DevArgs, log: &str) -> i32 {
    let format = match args.log_format.as_str() {
        "human" | "text" => LogFormat::Human,
        "json" => LogFormat::Json,
        _ => {
            eprintln!("error[invalid_input]: --log-format must be human or json");
            return ErrorKind::InvalidInput.exit_code();
        }
    };
    // Audit lines are the point of watching `dev`; show them unless asked otherwise.
    let level = if log.contains("audit") {
        log.to_string()
    } else {
        format!("{log},csm_agent::audit=info")
    };
    super::run::init_logging(&level, format);
    let (key, generated) = match &args.api_key {
        Some(k) if k.len() >= crate::manager::auth::MIN_KEY_LEN => {
            (Zeroizing::new(k.clone()), false)
        }
        Some(_) => {
            eprintln!(
                "error[invalid_input]: the API key must be at least {} characters",
                crate::manager::auth::MIN_KEY_LEN
            );
            return ErrorKind::InvalidInput.exit_code();
        }
        None => (generate_key(), true),
    };
    let mut keys = ApiKeys::empty();
    keys.add(key.as_bytes(), Role::Admin);
    let (data_dir, _temp) = match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => match tempfile::Builder::new().prefix("csm-dev-").tempdir() {
            Ok(t) => (t.path().to_path_buf(), Some(t)),
            Err(e) => {
                eprintln!("error[internal]: cannot create a temporary directory: {e}");
                return ErrorKind::Internal.exit_code();
            }
        },
    };
    let temporary = _temp.is_some();
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
        let ready = |info: &DevInfo| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "csm-agent dev: a control plane and a local agent (selectors: {DEV_SELECTOR}, {})",
                agent::hostname()
            );
            let _ = writeln!(
                out,
                "GraphQL:  {}   (open it in a browser for GraphiQL)",
                info.url
            );
            let _ = writeln!(
                out,
                "API key:  {}   ({})",
                key.as_str(),
                if generated {
                    "generated for this run; choose one with --api-key or CSM_API_KEY"
                } else {
                    "from --api-key / CSM_API_KEY"
                }
            );
            let _ = writeln!(
                out,
                "Data:     {}{}",
                info.data_dir.display(),
                if info.temporary {
                    "   (temporary: deleted on exit; keep it with --data-dir)"
                } else {
                    ""
                }
            );
            let _ = writeln!(
                out,
                "export CSM_URL={} CSM_API_KEY={}",
                info.url,
                key.as_str()
            );
            let _ = out.flush();
        };
        match serve(listener, data_dir, keys, ready, temporary, stop).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error[internal]: {e}");
                ErrorKind::Internal.exit_code()
            }
        }
    })
}
