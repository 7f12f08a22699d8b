//! The host side of the shipping tests: a real `csm-agent manager` process on a free
//! loopback port (readiness is its own `listening on ADDR` line), with an agent token and
//! an admin API key generated for the run, and its log kept in a file for secret scans.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::agentnet::random_token;

/// A running `csm-agent manager`.
pub struct HostManager {
    child: Child,
    /// `http://127.0.0.1:PORT`, the base URL agents connect to.
    pub base: String,
    /// `BASE/graphql`.
    pub graphql: String,
    /// The agent token it accepts.
    pub agent_token: String,
    /// Its admin API key.
    pub api_key: String,
    /// Where its stderr (the log) goes.
    pub log: PathBuf,
}

impl HostManager {
    /// Start the real binary in `dir` (its data, token files and log go there).
    pub fn start(dir: &Path) -> HostManager {
        let agent_token = random_token("ship-agent-token");
        let api_key = random_token("ship-admin-key");
        let tokens = dir.join("agent-tokens");
        let keys = dir.join("api-keys");
        write_private(&tokens, &format!("{agent_token}\n"));
        write_private(&keys, &format!("admin {api_key}\n"));
        let log = dir.join("manager.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_csm-agent"))
            .args(["manager", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .arg("--agent-token-file")
            .arg(&tokens)
            .arg("--api-key-file")
            .arg(&keys)
            .args(["--heartbeat-secs", "2", "--redispatch-grace-secs", "5"])
            .env("CSM_LOG", "debug")
            .env_remove("CSM_API_KEY")
            .env_remove("CSM_MASTER_KEY_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn csm-agent manager");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = match lines.next() {
                Some(Ok(l)) => l,
                _ => panic!(
                    "csm-agent manager exited before listening: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            };
            if let Some(a) = line.strip_prefix("listening on ") {
                break a.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let base = format!("http://{addr}");
        HostManager {
            child,
            graphql: format!("{base}/graphql"),
            base,
            agent_token,
            api_key,
            log,
        }
    }

    /// The manager's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HostManager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `http://127.0.0.1:PORT{path}`; the body of a 200 answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The agent's `/healthz` on `port`, parsed.
pub fn health(port: u16) -> Option<serde_json::Value> {
    serde_json::from_str(http_get(port, "/healthz")?.trim()).ok()
}

/// Whether the agent on `port` reports a drain in progress (`csm_agent_draining 1`).
pub fn draining(port: u16) -> bool {
    http_get(port, "/metrics")
        .is_some_and(|m| m.lines().any(|l| l.trim() == "csm_agent_draining 1"))
}

/// Write a file only its owner reads.
pub fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The debug binary under test (Debian 12 host and images share glibc).
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_csm-agent"))
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
