//! The agent's configuration: a TOML file, `CSM_*` environment variables over it, and
//! `csm-agent run` flags over both.
//!
//! The file defaults to `/etc/csm-agent/agent.toml`; a missing default file is fine (a
//! Docker sidecar runs on the environment alone), a missing file named explicitly is not.
//! Every error names the key (`policy.ssh_hosts[1]`, `CSM_CAPACITY`, `--manager`) and is
//! reported at start. The token comes from a file or the environment, never from argv.
//!
//! `docs/configuration.md` lists every key with its variable, flag and default;
//! `tests/config_reference.rs` checks it against this parser in both directions.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::agent::backoff::BackoffConfig;
use crate::agent::connection::{Endpoint, TlsFiles};
use crate::agent::metrics::Metrics;
use crate::agent::policy::{self, HostPattern, Policy};
use crate::agent::{self, AgentConfig};
use crate::protocol;

/// The default configuration file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/csm-agent/agent.toml";
/// The default state directory (systemd's `StateDirectory=csm-agent`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/csm-agent";
/// The file in the state directory that holds the agent id.
pub const AGENT_ID_FILE: &str = "agent-id";

/// A configuration error: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The key, variable or flag.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn cerr(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// The file's shape. Unknown keys are errors, so a typo is caught at start.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    manager: Option<String>,
    token_file: Option<PathBuf>,
    agent_id: Option<String>,
    name: Option<String>,
    selectors: Option<Vec<String>>,
    capacity: Option<u32>,
    state_dir: Option<PathBuf>,
    log_format: Option<String>,
    metrics_listen: Option<String>,
    max_frame_bytes: Option<usize>,
    #[serde(default)]
    tls: TlsSection,
    #[serde(default)]
    policy: PolicySection,
    #[serde(default)]
    reconnect: ReconnectSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySection {
    local: Option<bool>,
    command_path_prefixes: Option<Vec<String>>,
    ssh_hosts: Option<Vec<String>>,
    ssh_key_file_prefixes: Option<Vec<String>>,
    max_timeout_secs: Option<u64>,
    pinned_templates: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconnectSection {
    initial_ms: Option<u64>,
    max_ms: Option<u64>,
}

/// What `csm-agent run`'s flags set (each overrides the file and the environment).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--manager`.
    pub manager: Option<String>,
    /// `--token-file`.
    pub token_file: Option<PathBuf>,
    /// `--name`.
    pub name: Option<String>,
    /// `--selector`, repeated; when given, replaces the configured list.
    pub selectors: Vec<String>,
    /// `--capacity`.
    pub capacity: Option<u32>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--log-format`.
    pub log_format: Option<String>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

/// A loaded configuration.
#[derive(Debug)]
pub struct Loaded {
    /// The agent's configuration.
    pub agent: AgentConfig,
    /// The log format.
    pub log_format: LogFormat,
    /// The health and metrics listener, if any (loopback only).
    pub metrics_listen: Option<SocketAddr>,
}

/// Where each setting came from, as a key name for errors.
struct Pick<T> {
    value: T,
    key: String,
}

/// flag > environment > file, with the winning key's name.
fn pick<T>(
    flag: Option<T>,
    flag_name: &str,
    env: Option<Result<T, ConfigError>>,
    file: Option<T>,
    file_key: &str,
) -> Result<Option<Pick<T>>, ConfigError> {
    if let Some(v) = flag {
        return Ok(Some(Pick {
            value: v,
            key: flag_name.into(),
        }));
    }
    if let Some(v) = env {
        let v = v?;
        return Ok(Some(Pick {
            value: v,
            key: "environment".into(),
        }));
    }
    Ok(file.map(|v| Pick {
        value: v,
        key: file_key.into(),
    }))
}

/// The environment, as a lookup (tests pass their own).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn env_str(env: Env, var: &str) -> Option<Result<String, ConfigError>> {
    env(var).map(Ok)
}

fn env_parse<T: std::str::FromStr>(
    env: Env,
    var: &str,
    what: &str,
) -> Option<Result<T, ConfigError>> {
    env(var).map(|v| {
        v.trim()
            .parse::<T>()
            .map_err(|_| cerr(var, format!("must be {what}")))
    })
}

fn env_list(env: Env, var: &str) -> Option<Result<Vec<String>, ConfigError>> {
    env(var).map(|v| {
        Ok(v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect())
    })
}

fn env_bool(env: Env, var: &str) -> Option<Result<bool, ConfigError>> {
    env(var).map(|v| match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(cerr(var, "must be true or false")),
    })
}

/// Rename the key of an environment pick to the variable it came from.
fn named<T>(p: Option<Pick<T>>, var: &str) -> Option<Pick<T>> {
    p.map(|mut p| {
        if p.key == "environment" {
            p.key = var.into();
        }
        p
    })
}

fn read_file_config(flags: &Flags, env: Env) -> Result<FileConfig, ConfigError> {
    let (path, explicit, key) = match (&flags.config, env("CSM_CONFIG")) {
        (Some(p), _) => (p.clone(), true, "--config"),
        (None, Some(p)) => (PathBuf::from(p), true, "CSM_CONFIG"),
        (None, None) => (PathBuf::from(DEFAULT_CONFIG_FILE), false, "config"),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(FileConfig::default())
        }
        Err(e) => return Err(cerr(key, format!("cannot read {}: {e}", path.display()))),
    };
    toml::from_str::<FileConfig>(&text).map_err(|e| {
        cerr(
            format!("config file {}", path.display()),
            e.to_string().trim().replace('\n', " "),
        )
    })
}

fn read_token(path: &Path, key: &str) -> Result<SecretString, ConfigError> {
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| cerr(key, format!("cannot read {}: {e}", path.display())))?,
    );
    let text = std::str::from_utf8(&bytes).map_err(|_| cerr(key, "the token file is not UTF-8"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(cerr(key, format!("{} holds no token", path.display())));
    }
    if token.contains('\n') {
        return Err(cerr(key, "the token file holds more than one line"));
    }
    Ok(SecretString::from(token.to_string()))
}

fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn new_agent_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The agent id kept in `state_dir`, created on first start (mode 0600, written atomically).
pub fn load_or_create_agent_id(state_dir: &Path) -> std::io::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::DirBuilderExt;
    let file = state_dir.join(AGENT_ID_FILE);
    match std::fs::read_to_string(&file) {
        Ok(s) if valid_agent_id(s.trim()) => return Ok(s.trim().to_string()),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} does not hold a valid agent id", file.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)?;
    let id = new_agent_id();
    let mut tmp = tempfile::NamedTempFile::new_in(state_dir)?;
    tmp.write_all(id.as_bytes())?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(&file).map_err(|e| e.error)?;
    Ok(id)
}

/// Load the configuration: file, then environment, then flags.
pub fn load(flags: &Flags, env: Env) -> Result<Loaded, ConfigError> {
    let file = read_file_config(flags, env)?;

    let manager = named(
        pick(
            flags.manager.clone(),
            "--manager",
            env_str(env, "CSM_MANAGER"),
            file.manager,
            "manager",
        )?,
        "CSM_MANAGER",
    )
    .ok_or_else(|| {
        cerr(
            "manager",
            "no manager URL: set --manager, CSM_MANAGER or `manager` in the config file",
        )
    })?;
    let endpoint = Endpoint::from_base(&manager.value).map_err(|e| cerr(&manager.key, e.0))?;

    // The token: a file (flag, environment, config) or CSM_TOKEN; never argv.
    let token = if let Some(p) = &flags.token_file {
        read_token(p, "--token-file")?
    } else if let Some(p) = env("CSM_TOKEN_FILE") {
        read_token(Path::new(&p), "CSM_TOKEN_FILE")?
    } else if let Some(t) = env("CSM_TOKEN") {
        let t = t.trim();
        if t.is_empty() {
            return Err(cerr("CSM_TOKEN", "is empty"));
        }
        SecretString::from(t.to_string())
    } else if let Some(p) = &file.token_file {
        read_token(p, "token_file")?
    } else {
        return Err(cerr(
            "token",
            "no token: set --token-file, CSM_TOKEN_FILE, CSM_TOKEN or `token_file` in the config file",
        ));
    };

    let hostname = agent::hostname();
    let name = named(
        pick(
            flags.name.clone(),
            "--name",
            env_str(env, "CSM_NAME"),
            file.name,
            "name",
        )?,
        "CSM_NAME",
    )
    .map(|p| p.value.trim().to_string())
    .filter(|n| !n.is_empty())
    .unwrap_or_else(|| hostname.clone());

    let flag_selectors = (!flags.selectors.is_empty()).then(|| flags.selectors.clone());
    let selectors = pick(
        flag_selectors,
        "--selector",
        env_list(env, "CSM_SELECTORS"),
        file.selectors,
        "selectors",
    )?
    .map(|p| p.value)
    .unwrap_or_default();

    let capacity = named(
        pick(
            flags.capacity,
            "--capacity",
            env_parse::<u32>(env, "CSM_CAPACITY", "a positive integer"),
            file.capacity,
            "capacity",
        )?,
        "CSM_CAPACITY",
    );
    let capacity = match capacity {
        None => agent::DEFAULT_CAPACITY,
        Some(p) if p.value == 0 || p.value > 4096 => {
            return Err(cerr(p.key, "must be between 1 and 4096"))
        }
        Some(p) => p.value,
    };

    let agent_id_pick = named(
        pick(
            None,
            "",
            env_str(env, "CSM_AGENT_ID"),
            file.agent_id,
            "agent_id",
        )?,
        "CSM_AGENT_ID",
    );
    let state_dir = named(
        pick(
            flags.state_dir.clone(),
            "--state-dir",
            env_str(env, "CSM_STATE_DIR").map(|r| r.map(PathBuf::from)),
            file.state_dir,
            "state_dir",
        )?,
        "CSM_STATE_DIR",
    );
    let agent_id = match (agent_id_pick, state_dir) {
        (Some(p), _) => {
            if !valid_agent_id(p.value.trim()) {
                return Err(cerr(p.key, "must be 1-128 letters, digits, '-' or '_'"));
            }
            p.value.trim().to_string()
        }
        (None, Some(dir)) => load_or_create_agent_id(&dir.value)
            .map_err(|e| cerr(&dir.key, format!("{}: {e}", dir.value.display())))?,
        (None, None) => match load_or_create_agent_id(Path::new(DEFAULT_STATE_DIR)) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(
                    "cannot keep the agent id in {DEFAULT_STATE_DIR} ({e}); using a new id for this run (set state_dir or CSM_AGENT_ID to keep it across restarts)"
                );
                new_agent_id()
            }
        },
    };

    let log_format = named(
        pick(
            flags.log_format.clone(),
            "--log-format",
            env_str(env, "CSM_LOG_FORMAT"),
            file.log_format,
            "log_format",
        )?,
        "CSM_LOG_FORMAT",
    );
    let log_format = match log_format {
        None => LogFormat::Human,
        Some(p) => match p.value.trim().to_ascii_lowercase().as_str() {
            "human" | "text" => LogFormat::Human,
            "json" => LogFormat::Json,
            _ => return Err(cerr(p.key, "must be human or json")),
        },
    };

    let metrics_listen = named(
        pick(
            flags.metrics_listen.clone(),
            "--metrics-listen",
            env_str(env, "CSM_METRICS_LISTEN"),
            file.metrics_listen,
            "metrics_listen",
        )?,
        "CSM_METRICS_LISTEN",
    );
    let metrics_listen = match metrics_listen {
        None => None,
        Some(p) if p.value.trim().is_empty() || p.value.trim() == "off" => None,
        Some(p) => {
            let addr: SocketAddr = p
                .value
                .trim()
                .parse()
                .map_err(|_| cerr(&p.key, "must be an address:port such as 127.0.0.1:9464"))?;
            if !addr.ip().is_loopback() {
                return Err(cerr(
                    p.key,
                    "must be a loopback address (the listener is loopback-only)",
                ));
            }
            Some(addr)
        }
    };

    let max_frame = named(
        pick(
            None,
            "",
            env_parse::<usize>(env, "CSM_MAX_FRAME_BYTES", "a number of bytes"),
            file.max_frame_bytes,
            "max_frame_bytes",
        )?,
        "CSM_MAX_FRAME_BYTES",
    );
    let max_frame_bytes = match max_frame {
        None => protocol::DEFAULT_MAX_FRAME_BYTES,
        Some(p) if p.value < 256 * 1024 || p.value > 64 << 20 => {
            return Err(cerr(p.key, "must be between 262144 and 67108864"))
        }
        Some(p) => p.value,
    };

    let path_of = |var: &str, file: Option<PathBuf>| -> Option<PathBuf> {
        env(var).map(PathBuf::from).or(file)
    };
    let tls = TlsFiles {
        ca_file: path_of("CSM_CA_FILE", file.tls.ca_file),
        client_cert: path_of("CSM_CLIENT_CERT", file.tls.client_cert),
        client_key: path_of("CSM_CLIENT_KEY", file.tls.client_key),
    };
    if tls.client_cert.is_some() != tls.client_key.is_some() {
        return Err(cerr(
            "tls.client_cert",
            "tls.client_cert and tls.client_key go together",
        ));
    }

    let policy = load_policy(file.policy, env)?;

    let r = file.reconnect;
    let initial = env_parse::<u64>(env, "CSM_RECONNECT_INITIAL_MS", "milliseconds")
        .transpose()?
        .or(r.initial_ms)
        .unwrap_or(500);
    let max = env_parse::<u64>(env, "CSM_RECONNECT_MAX_MS", "milliseconds")
        .transpose()?
        .or(r.max_ms)
        .unwrap_or(30_000);
    if initial == 0 || max < initial {
        return Err(cerr(
            "reconnect",
            "initial_ms must be positive and max_ms at least initial_ms",
        ));
    }

    let drain_timeout = policy.max_timeout + Duration::from_secs(30);
    Ok(Loaded {
        agent: AgentConfig {
            endpoint,
            tls,
            token,
            agent_id,
            name,
            hostname,
            selectors,
            capacity,
            policy,
            max_frame_bytes,
            backoff: BackoffConfig {
                initial: Duration::from_millis(initial),
                max: Duration::from_millis(max),
            },
            connect_timeout: Duration::from_secs(10),
            healthy_after: Duration::from_secs(10),
            drain_timeout,
            metrics: Metrics::new(),
        },
        log_format,
        metrics_listen,
    })
}

fn load_policy(file: PolicySection, env: Env) -> Result<Policy, ConfigError> {
    let mut p = Policy::default();
    if let Some(v) = env_bool(env, "CSM_POLICY_LOCAL")
        .transpose()?
        .or(file.local)
    {
        p.local = v;
    }
    let list = |var: &str,
                file: Option<Vec<String>>,
                key: &str|
     -> Result<Option<(Vec<String>, String)>, ConfigError> {
        match env_list(env, var) {
            Some(v) => Ok(Some((v?, var.to_string()))),
            None => Ok(file.map(|f| (f, key.to_string()))),
        }
    };
    let abs_paths = |(v, key): (Vec<String>, String)| -> Result<Vec<String>, ConfigError> {
        for (i, s) in v.iter().enumerate() {
            if !Path::new(s).is_absolute() {
                return Err(cerr(format!("{key}[{i}]"), "must be an absolute path"));
            }
        }
        Ok(v)
    };
    if let Some(v) = list(
        "CSM_POLICY_COMMAND_PATH_PREFIXES",
        file.command_path_prefixes,
        "policy.command_path_prefixes",
    )? {
        p.command_path_prefixes = abs_paths(v)?;
    }
    if let Some(v) = list(
        "CSM_POLICY_SSH_KEY_FILE_PREFIXES",
        file.ssh_key_file_prefixes,
        "policy.ssh_key_file_prefixes",
    )? {
        p.ssh_key_file_prefixes = abs_paths(v)?;
    }
    if let Some((v, key)) = list("CSM_POLICY_SSH_HOSTS", file.ssh_hosts, "policy.ssh_hosts")? {
        p.ssh_hosts = v
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<HostPattern>()
                    .map_err(|e| cerr(format!("{key}[{i}]"), e.0))
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some((v, key)) = list(
        "CSM_POLICY_PINNED_TEMPLATES",
        file.pinned_templates,
        "policy.pinned_templates",
    )? {
        p.pinned_templates = v
            .iter()
            .enumerate()
            .map(|(i, s)| policy::parse_digest(s).map_err(|e| cerr(format!("{key}[{i}]"), e.0)))
            .collect::<Result<_, _>>()?;
    }
    let (secs, key) =
        match env_parse::<u64>(env, "CSM_POLICY_MAX_TIMEOUT_SECS", "a number of seconds") {
            Some(v) => (Some(v?), "CSM_POLICY_MAX_TIMEOUT_SECS"),
            None => (file.max_timeout_secs, "policy.max_timeout_secs"),
        };
    if let Some(s) = secs {
        if s == 0 || s > 86_400 {
            return Err(cerr(key, "must be between 1 and 86400"));
        }
        p.max_timeout = Duration::from_secs(s);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fixture {
        dir: tempfile::TempDir,
        env: HashMap<String, String>,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("token"), "tok-123\n").unwrap();
            let mut env = HashMap::new();
            env.insert(
                "CSM_STATE_DIR".to_string(),
                dir.path().join("state").display().to_string(),
            );
            // Never read the machine's /etc/csm-agent/agent.toml in tests.
            env.insert(
                "CSM_CONFIG".to_string(),
                dir.path().join("agent.toml").display().to_string(),
            );
            std::fs::write(dir.path().join("agent.toml"), "").unwrap();
            Fixture { dir, env }
        }
        fn write_config(&self, text: &str) {
            std::fs::write(self.dir.path().join("agent.toml"), text).unwrap();
        }
        fn token_path(&self) -> String {
            self.dir.path().join("token").display().to_string()
        }
        fn load(&self, flags: &Flags) -> Result<Loaded, ConfigError> {
            let env = self.env.clone();
            load(flags, &move |k: &str| env.get(k).cloned())
        }
    }

    #[test]
    fn env_alone_is_enough_for_a_sidecar() {
        let mut f = Fixture::new();
        f.env
            .insert("CSM_MANAGER".into(), "https://cp.example:8443".into());
        f.env.insert("CSM_TOKEN".into(), "tok-env".into());
        f.env.insert("CSM_SELECTORS".into(), "eu, prod ,".into());
        f.env.insert("CSM_CAPACITY".into(), "8".into());
        f.env
            .insert("CSM_POLICY_SSH_HOSTS".into(), "*.db:22,10.0.0.0/8".into());
        let l = f.load(&Flags::default()).unwrap();
        assert_eq!(
            l.agent.endpoint.url,
            "wss://cp.example:8443/agent/v1/connect"
        );
        assert_eq!(l.agent.selectors, ["eu", "prod"]);
        assert_eq!(l.agent.capacity, 8);
        assert_eq!(l.agent.policy.ssh_hosts.len(), 2);
        assert!(!format!("{:?}", l.agent).contains("tok-env"));
        // The id is persisted: a second load finds the same one.
        let again = f.load(&Flags::default()).unwrap();
        assert_eq!(again.agent.agent_id, l.agent.agent_id);
    }

    #[test]
    fn flags_override_env_override_file() {
        let mut f = Fixture::new();
        f.write_config(&format!(
            "manager = \"http://file:1\"\nname = \"from-file\"\ncapacity = 3\ntoken_file = \"{}\"\nselectors = [\"a\"]\n[policy]\nlocal = false\n",
            f.token_path()
        ));
        let l = f.load(&Flags::default()).unwrap();
        assert_eq!(l.agent.endpoint.url, "ws://file:1/agent/v1/connect");
        assert_eq!(l.agent.name, "from-file");
        assert_eq!(l.agent.capacity, 3);
        assert!(!l.agent.policy.local);
        f.env.insert("CSM_MANAGER".into(), "http://env:2".into());
        f.env.insert("CSM_NAME".into(), "from-env".into());
        f.env.insert("CSM_POLICY_LOCAL".into(), "true".into());
        let l = f.load(&Flags::default()).unwrap();
        assert_eq!(l.agent.endpoint.url, "ws://env:2/agent/v1/connect");
        assert_eq!(l.agent.name, "from-env");
        assert!(l.agent.policy.local);
        let flags = Flags {
            manager: Some("https://flag:3".into()),
            name: Some("from-flag".into()),
            selectors: vec!["x".into()],
            ..Flags::default()
        };
        let l = f.load(&flags).unwrap();
        assert_eq!(l.agent.endpoint.url, "wss://flag:3/agent/v1/connect");
        assert_eq!(l.agent.name, "from-flag");
        assert_eq!(l.agent.selectors, ["x"]);
    }

    #[test]
    fn errors_name_the_key() {
        let mut f = Fixture::new();
        f.env.insert("CSM_MANAGER".into(), "http://m:1".into());
        f.env.insert("CSM_TOKEN".into(), "t".into());
        f.write_config("[policy]\nssh_hosts = [\"ok\", \"10.0.0.0/99\"]\n");
        let e = f.load(&Flags::default()).unwrap_err();
        assert_eq!(e.key, "policy.ssh_hosts[1]");
        f.write_config("capacityy = 3\n");
        let e = f.load(&Flags::default()).unwrap_err();
        assert!(e.to_string().contains("capacityy"), "{e}");
        f.write_config("");
        f.env.insert("CSM_CAPACITY".into(), "lots".into());
        assert_eq!(f.load(&Flags::default()).unwrap_err().key, "CSM_CAPACITY");
        f.env.remove("CSM_CAPACITY");
        f.env
            .insert("CSM_METRICS_LISTEN".into(), "0.0.0.0:9464".into());
        assert_eq!(
            f.load(&Flags::default()).unwrap_err().key,
            "CSM_METRICS_LISTEN"
        );
        f.env.remove("CSM_METRICS_LISTEN");
        f.env
            .insert("CSM_POLICY_PINNED_TEMPLATES".into(), "nothex".into());
        assert_eq!(
            f.load(&Flags::default()).unwrap_err().key,
            "CSM_POLICY_PINNED_TEMPLATES[0]"
        );
        f.env.remove("CSM_POLICY_PINNED_TEMPLATES");
        f.env.remove("CSM_TOKEN");
        assert_eq!(f.load(&Flags::default()).unwrap_err().key, "token");
        let e = f
            .load(&Flags {
                manager: Some("ftp://x".into()),
                ..Flags::default()
            })
            .unwrap_err();
        assert_eq!(e.key, "--manager");
    }

    #[test]
    fn a_missing_explicit_config_file_is_an_error() {
        let mut f = Fixture::new();
        f.env
            .insert("CSM_CONFIG".into(), "/nonexistent/agent.toml".into());
        f.env.insert("CSM_MANAGER".into(), "http://m:1".into());
        f.env.insert("CSM_TOKEN".into(), "t".into());
        assert_eq!(f.load(&Flags::default()).unwrap_err().key, "CSM_CONFIG");
    }
}
