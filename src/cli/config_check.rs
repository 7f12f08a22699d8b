//! `csm-agent config check [FILE]` and `csm-agent config defaults`: validate the agent's
//! configuration as `csm-agent run` would load it, and print the effective one.
//!
//! `check` loads the file and the `CSM_*` environment through [`config::load`], so every
//! rule the agent applies at start is applied here and an error names the same key. It then
//! prints the effective configuration as a TOML file that `run` accepts, each line with
//! where its value came from. The token is read (so a missing or empty token file is an
//! error) but never printed. `check` writes nothing: the agent id is shown if the state
//! directory already holds one.
//!
//! `defaults` prints every key with its default, commented out: a starting point for
//! `/etc/csm-agent/agent.toml`. `tests/cli_ship.rs` runs both on the real binary.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::config::{self, ConfigError, Env, Flags, LogFormat};
use crate::error::ErrorKind;

/// `csm-agent config`.
#[derive(Debug, Args, Clone)]
#[command(
    about = "Check the agent's configuration, or print its defaults",
    long_about = "Check the agent's configuration, or print its defaults.\n\n\
`config check` loads the configuration exactly as `csm-agent run` does (the TOML file, then \
the CSM_* environment variables), reports the first error with the key it concerns, and \
prints the effective configuration with the token redacted.\n\n\
`config defaults` prints every key with its default value."
)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// `csm-agent config` subcommands.
#[derive(Debug, Subcommand, Clone)]
pub enum ConfigCommand {
    /// Validate a configuration and print the effective one, with secrets redacted.
    #[command(
        long_about = "Validate a configuration and print the effective one, with secrets redacted.\n\n\
The file and the CSM_* environment are loaded exactly as `csm-agent run` loads them, so this \
reports the same errors the agent would report at start, each naming its key (for example \
`policy.ssh_hosts[1]` or `CSM_CAPACITY`). On success it prints the effective configuration \
as TOML that `csm-agent run --config` accepts, each line commented with where its value came \
from (the file, an environment variable, or the default).\n\n\
The token is read, so a missing, unreadable or empty token file is an error, but it is \
never printed. Nothing is written: the agent id is shown only if the state directory \
already holds one.",
        after_help = "Exit status: 0 when the configuration is valid, 2 when it is not.\n\n\
Examples:\n  csm-agent config check /etc/csm-agent/agent.toml\n  \
CSM_MANAGER=https://cp.example:8443 CSM_TOKEN_FILE=/run/secrets/token csm-agent config check"
    )]
    Check(CheckArgs),
    /// Print every configuration key with its default value, commented out.
    #[command(
        long_about = "Print every configuration key with its default value, commented out, as a \
TOML file: a starting point for /etc/csm-agent/agent.toml. Each key's environment variable \
is named beside it. docs/configuration.md describes each key."
    )]
    Defaults,
}

/// `csm-agent config check`.
#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    /// The configuration file [default: $CSM_CONFIG, else /etc/csm-agent/agent.toml if it
    /// exists].
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// Run `csm-agent config …`; returns the exit status.
pub fn main(args: &ConfigArgs) -> i32 {
    let mut out = std::io::stdout().lock();
    match &args.command {
        ConfigCommand::Defaults => {
            let _ = out.write_all(defaults().as_bytes());
            0
        }
        ConfigCommand::Check(c) => {
            let env = |k: &str| std::env::var(k).ok();
            match check(c.file.as_deref(), &env) {
                Ok(text) => {
                    let _ = out.write_all(text.as_bytes());
                    0
                }
                Err(e) => {
                    eprintln!("error[invalid_input]: configuration: {e}");
                    ErrorKind::InvalidInput.exit_code()
                }
            }
        }
    }
}

/// A TOML value as TOML text.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_list<S: AsRef<str>>(v: &[S]) -> String {
    let items: Vec<String> = v.iter().map(|s| toml_str(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// The list splitting of `CSM_*` list variables (comma-separated, blanks trimmed).
fn env_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The configuration file as a table, for where values came from (it already parsed in
/// [`config::load`], so it parses here).
fn raw_file(file: Option<&Path>, env: Env) -> (Option<PathBuf>, toml::Table) {
    let path = file
        .map(Path::to_path_buf)
        .or_else(|| env("CSM_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG_FILE));
    match std::fs::read_to_string(&path) {
        Ok(text) => (Some(path), text.parse::<toml::Table>().unwrap_or_default()),
        Err(_) => (None, toml::Table::new()),
    }
}

/// Lines of the effective configuration, with a source comment each.
struct Doc {
    text: String,
    file: toml::Table,
}

impl Doc {
    fn lookup(&self, key: &str) -> Option<&toml::Value> {
        let mut parts = key.split('.');
        let first = self.file.get(parts.next()?)?;
        parts.try_fold(first, |v, p| v.get(p))
    }

    /// Where `key` came from: the variable if set, else the file if it has the key, else
    /// the default.
    fn source(&self, env: Env, var: Option<&str>, key: &str) -> String {
        if let Some(v) = var.filter(|v| env(v).is_some()) {
            return v.to_string();
        }
        if self.lookup(key).is_some() {
            return "file".into();
        }
        "default".into()
    }

    fn line(&mut self, name: &str, value: &str, source: &str) {
        self.text
            .push_str(&format!("{name} = {value}  # {source}\n"));
    }

    fn unset(&mut self, name: &str, what: &str) {
        self.text.push_str(&format!("# {name}: {what}\n"));
    }

    fn section(&mut self, name: &str) {
        self.text.push_str(&format!("\n[{name}]\n"));
    }
}

/// Validate the configuration in `file` (else `CSM_CONFIG`, else the default file) with
/// the environment `env`, as `csm-agent run` would load it; return the effective
/// configuration as TOML, the token redacted.
pub fn check(file: Option<&Path>, env: Env) -> Result<String, ConfigError> {
    let (path, table) = raw_file(file, env);
    let has_id = env("CSM_AGENT_ID").is_some() || table.contains_key("agent_id");
    // `load` would create the state directory and the agent id; `check` writes nothing,
    // so when neither is configured it is given a placeholder id.
    let env_for_load = |k: &str| {
        if k == "CSM_AGENT_ID" && !has_id {
            return Some("config-check".to_string());
        }
        env(k)
    };
    let flags = Flags {
        config: file.map(Path::to_path_buf),
        ..Flags::default()
    };
    let loaded = config::load(&flags, &env_for_load)?;
    let a = &loaded.agent;
    let mut d = Doc {
        text: String::new(),
        file: table,
    };

    d.text
        .push_str("# csm-agent: the effective configuration\n");
    match &path {
        Some(p) => d.text.push_str(&format!(
            "# from {}, then the CSM_* environment\n",
            p.display()
        )),
        None => d
            .text
            .push_str("# from the CSM_* environment (no configuration file)\n"),
    }
    d.text
        .push_str("# each line: key = value  # where it came from\n\n");

    let manager = env("CSM_MANAGER")
        .or_else(|| {
            d.lookup("manager")
                .and_then(|v| v.as_str().map(String::from))
        })
        .unwrap_or_default();
    let src = d.source(env, Some("CSM_MANAGER"), "manager");
    d.line(
        "manager",
        &toml_str(&manager),
        &format!("{src}; connects to {}", a.endpoint.url),
    );

    // The token: the same precedence as `config::load`, the value never shown.
    if let Some(p) = env("CSM_TOKEN_FILE") {
        d.line(
            "token_file",
            &toml_str(&p),
            "CSM_TOKEN_FILE; token read, redacted",
        );
    } else if env("CSM_TOKEN").is_some() {
        d.unset("token", "from CSM_TOKEN, redacted");
    } else if let Some(p) = d.lookup("token_file").and_then(|v| v.as_str()) {
        let p = toml_str(p);
        d.line("token_file", &p, "file; token read, redacted");
    }

    let src = d.source(env, Some("CSM_NAME"), "name");
    let src = if src == "default" {
        "default: the host name".to_string()
    } else {
        src
    };
    d.line("name", &toml_str(&a.name), &src);
    let src = d.source(env, Some("CSM_SELECTORS"), "selectors");
    d.line("selectors", &toml_list(&a.selectors), &src);
    let src = d.source(env, Some("CSM_CAPACITY"), "capacity");
    d.line("capacity", &a.capacity.to_string(), &src);

    let state_dir = env("CSM_STATE_DIR")
        .or_else(|| {
            d.lookup("state_dir")
                .and_then(|v| v.as_str().map(String::from))
        })
        .unwrap_or_else(|| config::DEFAULT_STATE_DIR.to_string());
    let src = d.source(env, Some("CSM_STATE_DIR"), "state_dir");
    d.line("state_dir", &toml_str(&state_dir), &src);

    if has_id {
        let src = d.source(env, Some("CSM_AGENT_ID"), "agent_id");
        d.line("agent_id", &toml_str(&a.agent_id), &src);
    } else {
        let file = Path::new(&state_dir).join(config::AGENT_ID_FILE);
        match std::fs::read_to_string(&file) {
            Ok(id) if !id.trim().is_empty() => d.unset(
                "agent_id",
                &format!("{} (kept in {})", id.trim(), file.display()),
            ),
            _ => d.unset(
                "agent_id",
                &format!("created in {} on first start", file.display()),
            ),
        }
    }

    let fmt = match loaded.log_format {
        LogFormat::Human => "human",
        LogFormat::Json => "json",
    };
    let src = d.source(env, Some("CSM_LOG_FORMAT"), "log_format");
    d.line("log_format", &toml_str(fmt), &src);
    match loaded.metrics_listen {
        Some(addr) => {
            let src = d.source(env, Some("CSM_METRICS_LISTEN"), "metrics_listen");
            d.line("metrics_listen", &toml_str(&addr.to_string()), &src);
        }
        None => d.unset("metrics_listen", "off"),
    }
    let src = d.source(env, Some("CSM_MAX_FRAME_BYTES"), "max_frame_bytes");
    d.line("max_frame_bytes", &a.max_frame_bytes.to_string(), &src);

    d.section("tls");
    for (key, var, value) in [
        ("ca_file", "CSM_CA_FILE", &a.tls.ca_file),
        ("client_cert", "CSM_CLIENT_CERT", &a.tls.client_cert),
        ("client_key", "CSM_CLIENT_KEY", &a.tls.client_key),
    ] {
        match value {
            Some(p) => {
                let src = d.source(env, Some(var), &format!("tls.{key}"));
                d.line(key, &toml_str(&p.display().to_string()), &src);
            }
            None if key == "ca_file" => d.unset(key, "none: the system's roots"),
            None => d.unset(key, "none"),
        }
    }

    d.section("policy");
    let p = &a.policy;
    let src = d.source(env, Some("CSM_POLICY_LOCAL"), "policy.local");
    d.line("local", &p.local.to_string(), &src);
    let src = d.source(
        env,
        Some("CSM_POLICY_COMMAND_PATH_PREFIXES"),
        "policy.command_path_prefixes",
    );
    let note = if p.command_path_prefixes.is_empty() {
        format!("{src}; empty: any absolute path")
    } else {
        src
    };
    d.line(
        "command_path_prefixes",
        &toml_list(&p.command_path_prefixes),
        &note,
    );
    // Host patterns as written (each parsed in `load`).
    let hosts = match env("CSM_POLICY_SSH_HOSTS") {
        Some(v) => env_list(&v),
        None => d
            .lookup("policy.ssh_hosts")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(|s| s.trim().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let src = d.source(env, Some("CSM_POLICY_SSH_HOSTS"), "policy.ssh_hosts");
    let note = if hosts.is_empty() {
        format!("{src}; empty: SSH refused")
    } else {
        src
    };
    d.line("ssh_hosts", &toml_list(&hosts), &note);
    let src = d.source(
        env,
        Some("CSM_POLICY_SSH_KEY_FILE_PREFIXES"),
        "policy.ssh_key_file_prefixes",
    );
    let note = if p.ssh_key_file_prefixes.is_empty() {
        format!("{src}; empty: key-file credentials refused")
    } else {
        src
    };
    d.line(
        "ssh_key_file_prefixes",
        &toml_list(&p.ssh_key_file_prefixes),
        &note,
    );
    let src = d.source(
        env,
        Some("CSM_POLICY_MAX_TIMEOUT_SECS"),
        "policy.max_timeout_secs",
    );
    d.line(
        "max_timeout_secs",
        &p.max_timeout.as_secs().to_string(),
        &format!("{src}; a drain ends within {} s", a.drain_timeout.as_secs()),
    );
    let digests: Vec<String> = p
        .pinned_templates
        .iter()
        .map(|d| d.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let src = d.source(
        env,
        Some("CSM_POLICY_PINNED_TEMPLATES"),
        "policy.pinned_templates",
    );
    let note = if digests.is_empty() {
        format!("{src}; empty: any script")
    } else {
        src
    };
    d.line("pinned_templates", &toml_list(&digests), &note);

    d.section("reconnect");
    let src = d.source(
        env,
        Some("CSM_RECONNECT_INITIAL_MS"),
        "reconnect.initial_ms",
    );
    d.line(
        "initial_ms",
        &a.backoff.initial.as_millis().to_string(),
        &src,
    );
    let src = d.source(env, Some("CSM_RECONNECT_MAX_MS"), "reconnect.max_ms");
    d.line("max_ms", &a.backoff.max.as_millis().to_string(), &src);
    Ok(d.text)
}

/// Every key with its default, commented out, and its environment variable.
pub fn defaults() -> String {
    format!(
        r#"# csm-agent: every configuration key with its default, commented out.
# Each key can also be set by the environment variable named beside it, which wins over
# this file; `csm-agent run` flags win over both. See docs/configuration.md.

# The manager's base URL: http://, https://, ws:// or wss://. Required.
# manager = "https://cp.example:8443"                       # CSM_MANAGER
# A file holding the agent's token (one line). Required, unless CSM_TOKEN holds it.
# token_file = "/etc/csm-agent/token"                       # CSM_TOKEN_FILE, CSM_TOKEN
# The agent's name (an implicit selector). Default: the host name.
# name = "delegate-1"                                       # CSM_NAME
# selectors = []                                            # CSM_SELECTORS (comma-separated)
# capacity = 32                                             # CSM_CAPACITY (1-4096)
# Where the agent id is kept.
# state_dir = "{state}"                               # CSM_STATE_DIR
# The agent id. Default: kept in state_dir/agent-id, created on first start.
# agent_id = "…"                                            # CSM_AGENT_ID
# log_format = "human"                                      # CSM_LOG_FORMAT (human or json)
# /healthz and /metrics on a loopback address. Default: off.
# metrics_listen = "127.0.0.1:9464"                         # CSM_METRICS_LISTEN
# max_frame_bytes = 8388608                                 # CSM_MAX_FRAME_BYTES

[tls]
# Trust only these CA certificates (PEM). Default: the system's roots.
# ca_file = "/etc/csm-agent/ca.pem"                         # CSM_CA_FILE
# A client certificate chain and its key (PEM), together. Default: none.
# client_cert = "/etc/csm-agent/client.pem"                 # CSM_CLIENT_CERT
# client_key = "/etc/csm-agent/client.key"                  # CSM_CLIENT_KEY

[policy]
# local = true                                              # CSM_POLICY_LOCAL
# Empty: any absolute commandPath.
# command_path_prefixes = []                                # CSM_POLICY_COMMAND_PATH_PREFIXES
# Empty: SSH refused.
# ssh_hosts = []                                            # CSM_POLICY_SSH_HOSTS
# Empty: key-file credentials refused.
# ssh_key_file_prefixes = []                                # CSM_POLICY_SSH_KEY_FILE_PREFIXES
# max_timeout_secs = {max_timeout}                                      # CSM_POLICY_MAX_TIMEOUT_SECS
# Empty: any script.
# pinned_templates = []                                     # CSM_POLICY_PINNED_TEMPLATES

[reconnect]
# initial_ms = 500                                          # CSM_RECONNECT_INITIAL_MS
# max_ms = 30000                                            # CSM_RECONNECT_MAX_MS
"#,
        state = config::DEFAULT_STATE_DIR,
        max_timeout = crate::agent::policy::DEFAULT_MAX_TIMEOUT.as_secs(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of<'a>(m: &'a HashMap<&'static str, String>) -> impl Fn(&str) -> Option<String> + 'a {
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn the_effective_configuration_is_a_valid_file_and_never_holds_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let token = "tok-7f3a9c2e-never-printed";
        std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            format!(
                "manager = \"https://cp.example:8443\"\ntoken_file = \"{}\"\nselectors = [\"eu\"]\n\
                 state_dir = \"{}\"\n[policy]\nssh_hosts = [\"*.db.corp:22\", \"10.0.0.0/8\"]\n\
                 pinned_templates = [\"{}\"]\n",
                dir.path().join("token").display(),
                dir.path().join("state").display(),
                "AB".repeat(32)
            ),
        )
        .unwrap();
        let mut env = HashMap::new();
        env.insert("CSM_CAPACITY", "7".to_string());
        let out = check(Some(&file), &env_of(&env)).unwrap();
        assert!(!out.contains(token), "{out}");
        assert!(out.contains("capacity = 7  # CSM_CAPACITY"), "{out}");
        assert!(out.contains("selectors = [\"eu\"]  # file"), "{out}");
        assert!(out.contains("max_timeout_secs = 900  # default"), "{out}");
        assert!(out.contains(&"ab".repeat(32)), "{out}");
        assert!(out.contains("\"*.db.corp:22\""), "{out}");
        // Nothing was written: no state directory, no agent id.
        assert!(!dir.path().join("state").exists());

        // The output is itself a configuration that loads to the same effective one.
        let again = dir.path().join("again.toml");
        std::fs::write(&again, &out).unwrap();
        let out2 = check(Some(&again), &|_: &str| None).unwrap();
        let values = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| l.split("  #").next().unwrap().to_string())
                .collect()
        };
        assert_eq!(values(&out), values(&out2));
    }

    #[test]
    fn the_token_is_read_so_an_empty_token_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "\n").unwrap();
        let mut env = HashMap::new();
        env.insert("CSM_MANAGER", "http://m:1".to_string());
        env.insert(
            "CSM_TOKEN_FILE",
            dir.path().join("token").display().to_string(),
        );
        // An explicitly named configuration file must exist: an empty one stands for none.
        let empty = dir.path().join("empty.toml");
        std::fs::write(&empty, "").unwrap();
        let e = check(Some(&empty), &env_of(&env)).unwrap_err();
        assert_eq!(e.key, "CSM_TOKEN_FILE");
        // With a token from the environment, the value is still never printed.
        env.remove("CSM_TOKEN_FILE");
        env.insert("CSM_TOKEN", "tok-from-env-123".to_string());
        let out = check(Some(&empty), &env_of(&env)).unwrap();
        assert!(!out.contains("tok-from-env-123"), "{out}");
        assert!(out.contains("# token: from CSM_TOKEN, redacted"), "{out}");
    }

    #[test]
    fn every_default_line_parses_when_uncommented() {
        let text: String = defaults()
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") => rest.split("  ").next().unwrap().to_string(),
                _ if l.starts_with('#') => String::new(),
                _ => l.to_string(),
            })
            .map(|l| l + "\n")
            .collect();
        let t: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(t.contains_key("manager") && t["policy"].get("ssh_hosts").is_some());
    }
}
