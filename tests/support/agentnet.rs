//! Fixtures for the agent and manager tests: a manager served in-process on a loopback
//! port-0 listener (with its hub in the test's hands), real `csm-agent run` processes,
//! hand-driven WebSocket peers, FIFOs for "the script is running now" events, and log
//! capture for leak scans.
//!
//! # Why the manager runs in-process
//! The hub is the library the GraphQL layer will call, so tests submit tasks to it
//! directly and observe each outcome. "Killing the control plane" drops the server future
//! (every session ends without a close frame, as in a crash) while the test keeps the
//! listening socket and the hub, which stands in for the durable task store the next
//! issue brings. A new server on the same socket is the restarted control plane. Agents
//! are always real processes, so "killing an agent" is SIGKILL.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use csm_agent::manager::{self, AgentTokens, Hub, HubConfig, ManagerConfig, TaskRequest};
use csm_agent::protocol::{
    self, AgentMessage, Hello, ManagerMessage, Target, TaskKind, TemplateSpec, WireSecret,
};
use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The csm-agent binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_csm-agent")
}

/// A generous bound for events that normally take milliseconds; hitting it fails the test
/// instead of hanging it.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Await `fut`, failing the test with `what` if it takes longer than [`PATIENCE`].
pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for: {what}"),
    }
}

/// Hub timings for tests: a short grace and assignment wait, so faults resolve in well
/// under a second of waiting on real timers (never used as synchronisation). Heartbeats
/// stay at 2 s, so a hand-driven peer that pauses between reads is not dropped; tests of
/// liveness shorten them.
pub fn fast_hub() -> HubConfig {
    HubConfig {
        heartbeat: Duration::from_secs(2),
        redispatch_grace: Duration::from_millis(400),
        max_dispatches: 3,
        assign_wait: Duration::from_millis(500),
        result_slack: Duration::from_millis(500),
        ..HubConfig::default()
    }
}

/// A random token-like string.
pub fn random_token(prefix: &str) -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).unwrap();
    format!(
        "{prefix}-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// A manager served in-process on 127.0.0.1, port 0.
pub struct TestManager {
    /// The hub (survives [`TestManager::kill`]).
    pub hub: Hub,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The accepted agent token.
    pub token: String,
    /// Temp dir holding the token file.
    pub dir: tempfile::TempDir,
    listener: std::net::TcpListener,
    serve: Option<tokio::task::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl TestManager {
    /// Start with `hub` timings.
    pub async fn start(hub: HubConfig) -> TestManager {
        Self::start_with(hub, None).await
    }

    /// Start, serving TLS when `tls` is given.
    pub async fn start_with(hub: HubConfig, tls: Option<Arc<rustls::ServerConfig>>) -> TestManager {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let token = random_token("agent-token");
        std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
        let mut m = TestManager {
            hub: Hub::new(hub),
            addr,
            token,
            dir,
            listener,
            serve: None,
            stop: None,
            tls,
        };
        m.restart();
        m
    }

    /// The agent token file.
    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// The base URL agents are given.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// (Re)start serving on the same listening socket, with the same hub.
    pub fn restart(&mut self) {
        assert!(self.serve.is_none(), "already serving");
        let std = self.listener.try_clone().unwrap();
        let listener = tokio::net::TcpListener::from_std(std).unwrap();
        let mut cfg = ManagerConfig::new(AgentTokens::from_lines(&self.token));
        cfg.hub = self.hub.config().clone();
        cfg.tls = self.tls.clone();
        cfg.handshake_timeout = Duration::from_secs(5);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let hub = self.hub.clone();
        self.serve = Some(tokio::spawn(async move {
            manager::serve(listener, hub, cfg, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        }));
        self.stop = Some(tx);
    }

    /// Crash the server: every session ends at once, without a close frame. The hub and
    /// the listening socket remain, so [`TestManager::restart`] is a restarted manager.
    pub async fn kill(&mut self) {
        if let Some(h) = self.serve.take() {
            h.abort();
            let _ = h.await;
        }
        self.stop = None;
    }

    /// Stop gracefully (sessions get 1001).
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.serve.take() {
            let _ = h.await;
        }
    }

    /// Wait until an agent named `name` has an open session.
    pub async fn wait_connected(&self, name: &str) {
        let n = name.to_string();
        within(
            &format!("agent {name} to connect"),
            self.hub
                .wait_for(move |a| a.iter().any(|a| a.name == n && a.connected)),
        )
        .await;
    }

    /// Wait until `cond` holds for the agent list.
    pub async fn wait_until(
        &self,
        what: &str,
        cond: impl FnMut(&[manager::hub::AgentSnapshot]) -> bool,
    ) {
        within(what, self.hub.wait_for(cond)).await;
    }
}

impl Drop for TestManager {
    fn drop(&mut self) {
        if let Some(h) = self.serve.take() {
            h.abort();
        }
    }
}

/// A local-target task request for `script` with `vars`, selectors and a deadline.
pub fn task(
    script: &str,
    vars: &[(&str, &str)],
    selectors: &[&str],
    deadline: Duration,
) -> TaskRequest {
    TaskRequest {
        kind: TaskKind::Fetch,
        selectors: selectors.iter().map(|s| s.to_string()).collect(),
        template: TemplateSpec {
            name: Some("test".into()),
            script_string: script.into(),
            variables: vars.iter().map(|(n, _)| n.to_string()).collect(),
            timeout_millis: None,
        },
        variables: vars
            .iter()
            .map(|(n, v)| (n.to_string(), WireSecret::from_vec(v.as_bytes().to_vec())))
            .collect::<BTreeMap<_, _>>(),
        secrets: BTreeMap::new(),
        target: Target::Local { command_path: None },
        retry: None,
        deadline,
    }
}

/// A real `csm-agent run` process. Killed (SIGKILL) on drop if still running.
pub struct AgentProc {
    /// Its name.
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
    /// Temp dir with its state, config and log.
    pub dir: tempfile::TempDir,
}

/// How to start an agent process.
pub struct AgentOpts {
    /// Agent name.
    pub name: String,
    /// Selectors.
    pub selectors: Vec<String>,
    /// Concurrency cap.
    pub capacity: Option<u32>,
    /// Extra environment (`CSM_POLICY_*`, …).
    pub env: Vec<(String, String)>,
    /// Extra flags.
    pub args: Vec<String>,
    /// Log filter (`CSM_LOG`).
    pub log: String,
    /// Run as this user (the test runs as root): the agent gets its own copies of the
    /// binary and the token, in its directory, which it owns.
    pub user: Option<nix::unistd::User>,
}

impl AgentOpts {
    /// Defaults: debug logs, no selectors.
    pub fn named(name: &str) -> AgentOpts {
        AgentOpts {
            name: name.into(),
            selectors: Vec::new(),
            capacity: None,
            env: Vec::new(),
            args: Vec::new(),
            log: "debug".into(),
            user: None,
        }
    }
}

impl AgentProc {
    /// Start an agent against `url` with the token in `token_file`.
    pub fn start(url: &str, token_file: &Path, opts: AgentOpts) -> AgentProc {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, "").unwrap();
        let (program, token_file) = match &opts.user {
            None => (PathBuf::from(bin()), token_file.to_path_buf()),
            Some(u) => {
                // The checkout may not be reachable by another user. `cp` writes the copy,
                // so no descriptor open for writing it is ever in this process, where a
                // concurrent test's fork could carry it into a child and make the exec
                // below fail with ETXTBSY.
                let (program, token) = (dir.path().join("csm-agent"), dir.path().join("token"));
                let cp = Command::new("cp")
                    .arg(bin())
                    .arg(&program)
                    .status()
                    .unwrap();
                assert!(cp.success(), "cp csm-agent: {cp}");
                std::fs::copy(token_file, &token).unwrap();
                for p in [dir.path(), &config, &program, &token] {
                    nix::unistd::chown(p, Some(u.uid), Some(u.gid)).unwrap();
                }
                (program, token)
            }
        };
        let mut cmd = Command::new(program);
        cmd.arg("run")
            .arg("--manager")
            .arg(url)
            .arg("--token-file")
            .arg(&token_file)
            .arg("--name")
            .arg(&opts.name);
        for s in &opts.selectors {
            cmd.arg("--selector").arg(s);
        }
        if let Some(c) = opts.capacity {
            cmd.arg("--capacity").arg(c.to_string());
        }
        cmd.args(&opts.args);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", dir.path())
            .env("CSM_CONFIG", &config)
            .env("CSM_STATE_DIR", dir.path().join("state"))
            .env("CSM_LOG", &opts.log)
            .env("CSM_RECONNECT_INITIAL_MS", "100")
            .env("CSM_RECONNECT_MAX_MS", "1000");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ));
        if let Some(u) = &opts.user {
            cmd.uid(u.uid.as_raw())
                .gid(u.gid.as_raw())
                .current_dir(dir.path());
        }
        // Its own process group, so a test can find what its scripts left behind.
        cmd.process_group(0);
        let child = cmd.spawn().expect("spawn csm-agent run");
        AgentProc {
            name: opts.name,
            child: Some(child),
            log,
            dir,
        }
    }

    /// Its pid.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// Send a signal.
    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap();
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait for it to exit (bounded by [`PATIENCE`]); its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let r = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + PATIENCE;
            loop {
                if let Some(st) = child.try_wait().unwrap() {
                    return Ok(st.code());
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .await
        .unwrap();
        r.unwrap_or_else(|_| panic!("agent {} did not exit in time\n{}", self.name, self.logs()))
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent {} log ---\n{}", self.name, self.logs());
        }
        self.kill();
    }
}

/// A FIFO in `dir` for a script to signal on (`echo x > fifo`) or wait on (`read < fifo`).
pub fn fifo(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    nix::unistd::mkfifo(
        c.as_c_str(),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    p
}

/// Read one line from a FIFO (blocks until a writer opens it and writes a line).
pub async fn read_fifo_line(path: &Path) -> String {
    let p = path.to_path_buf();
    within(
        &format!("a line on {}", path.display()),
        tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(&p).unwrap();
            let mut line = String::new();
            BufReader::new(f).read_line(&mut line).unwrap();
            line.trim().to_string()
        }),
    )
    .await
    .unwrap()
}

/// Write a line to a FIFO (blocks until a reader opens it).
pub async fn write_fifo_line(path: &Path, line: &str) {
    let p = path.to_path_buf();
    let line = line.to_string();
    within(
        &format!("a reader on {}", path.display()),
        tokio::task::spawn_blocking(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            writeln!(f, "{line}").unwrap();
        }),
    )
    .await
    .unwrap();
}

/// A WebSocket client driven by hand, speaking the agent side of the protocol.
pub struct FakeAgent {
    /// The socket.
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// A hello for a fake agent.
pub fn hello(agent_id: &str, name: &str, selectors: &[&str], capacity: u32) -> Hello {
    Hello {
        protocol_versions: vec![1],
        agent_id: agent_id.into(),
        name: name.into(),
        hostname: format!("{name}.host"),
        version: "test".into(),
        selectors: selectors.iter().map(|s| s.to_string()).collect(),
        capacity,
        in_flight: Vec::new(),
        results: Vec::new(),
    }
}

/// Open a WebSocket to the manager's agent endpoint with `token` (no hello yet).
pub async fn ws_connect(
    addr: SocketAddr,
    token: Option<&str>,
) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{addr}{}", protocol::AGENT_PATH)
        .into_client_request()
        .unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let mut cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    cfg.max_message_size = Some(64 << 20);
    cfg.max_frame_size = Some(64 << 20);
    tokio_tungstenite::connect_async_with_config(req, Some(cfg), true)
        .await
        .map(|(ws, _)| ws)
}

impl FakeAgent {
    /// Connect, send `hello`, and wait for `welcome`.
    pub async fn join(m: &TestManager, h: Hello) -> FakeAgent {
        let ws = ws_connect(m.addr, Some(&m.token)).await.unwrap();
        let mut a = FakeAgent { ws };
        a.send(&AgentMessage::Hello(h)).await;
        match a.recv().await {
            Some(ManagerMessage::Welcome(_)) => a,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Send a message.
    pub async fn send(&mut self, m: &AgentMessage) {
        self.ws
            .send(Message::Text(protocol::encode(m).into()))
            .await
            .unwrap();
    }

    /// Send raw text.
    pub async fn send_text(&mut self, t: &str) {
        self.ws.send(Message::Text(t.into())).await.unwrap();
    }

    /// The next protocol message, answering pings; `None` when the connection ends.
    pub async fn recv(&mut self) -> Option<ManagerMessage> {
        loop {
            let m = within("a frame from the manager", self.ws.next()).await?;
            match m {
                Ok(Message::Text(t)) => {
                    let m: ManagerMessage = protocol::decode(t.as_str()).unwrap();
                    if let ManagerMessage::Ping {} = m {
                        self.send(&AgentMessage::Pong {}).await;
                        continue;
                    }
                    return Some(m);
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The close code the manager ended the connection with (`None`: no close frame).
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match within("the manager to close", self.ws.next()).await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next task frame (other messages are skipped).
    pub async fn recv_task(&mut self) -> Box<protocol::Task> {
        loop {
            match self.recv().await {
                Some(ManagerMessage::Task(t)) => return t,
                Some(_) => {}
                None => panic!("connection ended while waiting for a task"),
            }
        }
    }
}

/// Log capture for in-process code: a global tracing subscriber at debug writing into a
/// buffer. Installed once per test binary.
pub fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || LogWriter(b.clone()))
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Which of `needles` occur in `haystack`.
pub fn leaks<'a>(haystack: &str, needles: &[&'a str]) -> Vec<&'a str> {
    needles
        .iter()
        .copied()
        .filter(|n| haystack.contains(n))
        .collect()
}

/// A hand-driven manager: a loopback WebSocket server that real agents connect to.
pub struct FakeManager {
    listener: tokio::net::TcpListener,
    /// The base URL for agents.
    pub url: String,
    /// The token it accepts.
    pub token: String,
    /// Temp dir with the token file.
    pub dir: tempfile::TempDir,
}

/// One accepted agent session on a [`FakeManager`].
pub struct ManagerConn {
    /// The socket.
    pub ws: WebSocketStream<TcpStream>,
    /// The agent's hello.
    pub hello: Hello,
}

impl FakeManager {
    /// Listen on 127.0.0.1:0.
    pub async fn start() -> FakeManager {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let token = random_token("fake-token");
        std::fs::write(dir.path().join("token"), &token).unwrap();
        FakeManager {
            listener,
            url,
            token,
            dir,
        }
    }

    /// The token file for agents.
    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// Accept the next agent, check its token, read its hello, send welcome.
    pub async fn accept(&self, heartbeat_ms: u64) -> ManagerConn {
        use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
        let (tcp, _) = within("an agent to connect", self.listener.accept())
            .await
            .unwrap();
        let want = format!("Bearer {}", self.token);
        // The callback's signature is tungstenite's; its error type is not ours to shrink.
        #[allow(clippy::result_large_err)]
        let check = move |req: &Request, resp: Response| {
            let ok = req
                .headers()
                .get("authorization")
                .is_some_and(|v| v.as_bytes() == want.as_bytes());
            assert!(ok, "the agent sent the wrong token");
            Ok(resp)
        };
        let mut cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        cfg.max_message_size = Some(64 << 20);
        cfg.max_frame_size = Some(64 << 20);
        let ws = tokio_tungstenite::accept_hdr_async_with_config(tcp, check, Some(cfg))
            .await
            .unwrap();
        let mut c = ManagerConn {
            ws,
            hello: hello("", "", &[], 0),
        };
        match c.recv().await {
            Some(AgentMessage::Hello(h)) => c.hello = h,
            other => panic!("expected hello, got {other:?}"),
        }
        c.send(&ManagerMessage::Welcome(protocol::Welcome {
            session_id: "s".into(),
            protocol_version: 1,
            heartbeat_ms,
        }))
        .await;
        c
    }
}

impl ManagerConn {
    /// Send a message.
    pub async fn send(&mut self, m: &ManagerMessage) {
        self.ws
            .send(Message::Text(protocol::encode(m).into()))
            .await
            .unwrap();
    }

    /// Send raw text.
    pub async fn send_text(&mut self, t: &str) {
        self.ws.send(Message::Text(t.into())).await.unwrap();
    }

    /// The next protocol message, answering pings and skipping pongs; `None` at the end.
    pub async fn recv(&mut self) -> Option<AgentMessage> {
        loop {
            let m = within("a frame from the agent", self.ws.next()).await?;
            match m {
                Ok(Message::Text(t)) => {
                    let m: AgentMessage = protocol::decode(t.as_str()).unwrap();
                    match m {
                        AgentMessage::Ping {} => self.send(&ManagerMessage::Pong {}).await,
                        AgentMessage::Pong {} => {}
                        m => return Some(m),
                    }
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next message that is not `accepted`.
    pub async fn recv_not_accepted(&mut self) -> Option<AgentMessage> {
        loop {
            match self.recv().await {
                Some(AgentMessage::Accepted { .. }) => {}
                m => return m,
            }
        }
    }

    /// The close code the agent ended with (`None`: no close frame).
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match within("the agent to close", self.ws.next()).await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// A protocol task running `script` locally with `vars`.
pub fn proto_task(id: &str, script: &str, vars: &[(&str, &str)]) -> protocol::Task {
    protocol::Task {
        id: id.into(),
        kind: TaskKind::Fetch,
        attempt: 1,
        deadline_ms: 20_000,
        template: TemplateSpec {
            name: None,
            script_string: script.into(),
            variables: vars.iter().map(|(n, _)| n.to_string()).collect(),
            timeout_millis: None,
        },
        variables: vars
            .iter()
            .map(|(n, v)| (n.to_string(), WireSecret::from_vec(v.as_bytes().to_vec())))
            .collect(),
        secrets: BTreeMap::new(),
        target: Target::Local { command_path: None },
        retry: None,
    }
}

/// Whether any live (non-zombie) process is in process group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        let Some(rest) = stat.rsplit_once(')').map(|x| x.1) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z" && f[0] != "X" {
            return true;
        }
    }
    false
}

/// Wait (polling /proc, bounded by [`PATIENCE`]) until process group `pgid` has no live
/// process. SIGKILL is asynchronous, so a check right after it may still see the group.
pub async fn group_gone(pgid: i32) -> bool {
    let deadline = std::time::Instant::now() + PATIENCE;
    while group_alive(pgid) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}
