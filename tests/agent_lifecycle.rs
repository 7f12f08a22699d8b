//! The agent process's life: 1,000 tasks through one agent, the SIGTERM drain, a second
//! SIGTERM or SIGINT, `wss://` with a test CA and a client certificate, health and
//! metrics, sd_notify, configuration errors, and the `manager` binary itself.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use csm_agent::error::ErrorKind;
use csm_agent::manager::{self, HubError};
use csm_agent::protocol::{AgentMessage, ManagerMessage};
use nix::sys::signal::Signal;
use secrecy::ExposeSecret;
use support::agentnet::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_through_one_agent() {
    // Short heartbeats: a busy agent must keep its session (heartbeats are independent of
    // task work), or tasks would be re-dispatched and the session count would grow.
    let m = TestManager::start(csm_agent::manager::HubConfig {
        heartbeat: Duration::from_millis(500),
        ..fast_hub()
    })
    .await;
    let mut agent = AgentProc::start(&m.url(), &m.token_file(), {
        let mut o = AgentOpts::named("bulk");
        o.log = "info".into();
        o
    });
    m.wait_connected("bulk").await;
    let mut pending = Vec::new();
    for i in 0..1000 {
        let hub = m.hub.clone();
        let v = format!("value-{i:04}");
        pending.push(tokio::spawn(async move {
            let req = task(
                "secret=\"r-${v}\"",
                &[("v", &v)],
                &[],
                Duration::from_secs(120),
            );
            hub.submit(req).await
        }));
    }
    let all = tokio::time::timeout(
        Duration::from_secs(180),
        futures_util::future::join_all(pending),
    )
    .await
    .expect("1,000 tasks finish");
    for (i, r) in all.into_iter().enumerate() {
        let o = r.unwrap().unwrap_or_else(|e| panic!("task {i}: {e}"));
        let v = o.result.unwrap_or_else(|e| panic!("task {i}: {e}"));
        assert_eq!(v.expose_secret(), format!("r-value-{i:04}").as_bytes());
        assert_eq!(o.dispatches, 1, "no task was bounced");
    }
    assert_eq!(m.hub.pending_tasks(), 0);
    assert_eq!(
        m.hub.agents()[0].sessions,
        1,
        "the busy agent kept its session"
    );
    agent.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_finishes_delivers_and_exits_zero() {
    let m = TestManager::start(fast_hub()).await;
    let mut agent = AgentProc::start(&m.url(), &m.token_file(), AgentOpts::named("drainer"));
    m.wait_connected("drainer").await;
    let dir = tempfile::tempdir().unwrap();
    let started = fifo(dir.path(), "started");
    let hold = fifo(dir.path(), "hold");
    let script = format!(
        "echo go > {}; read x < {}; secret=\"drained-${{v}}\"",
        started.display(),
        hold.display()
    );
    let hub = m.hub.clone();
    let running = tokio::spawn(async move {
        hub.submit(task(&script, &[("v", "ok")], &[], PATIENCE))
            .await
    });
    read_fifo_line(&started).await;

    agent.signal(Signal::SIGTERM);
    m.wait_until("the agent to drain", |a| a.iter().any(|a| a.draining))
        .await;
    // Nothing new goes to a draining agent.
    match m
        .hub
        .submit(task("secret=x", &[], &["drainer"], PATIENCE))
        .await
    {
        Err(HubError::NoAgent(_)) => {}
        other => panic!("expected no_agent, got {other:?}"),
    }
    // The running task finishes and its result is delivered; then the agent exits 0.
    write_fifo_line(&hold, "go").await;
    let o = within("the drained task", running).await.unwrap().unwrap();
    assert_eq!(o.result.unwrap().expose_secret(), b"drained-ok");
    assert_eq!(agent.wait_exit().await, Some(0));
    let logs = agent.logs();
    assert!(logs.contains("drained: every result delivered"), "{logs}");
}

async fn sigterm_then(second: Signal) {
    let m = TestManager::start(fast_hub()).await;
    let mut agent = AgentProc::start(&m.url(), &m.token_file(), AgentOpts::named("stopper"));
    m.wait_connected("stopper").await;
    let dir = tempfile::tempdir().unwrap();
    let started = fifo(dir.path(), "started");
    let script = format!(
        "echo $$ > {}; sleep 600 & wait; secret=x",
        started.display()
    );
    let hub = m.hub.clone();
    let running = tokio::spawn(async move { hub.submit(task(&script, &[], &[], PATIENCE)).await });
    let pgid: i32 = read_fifo_line(&started).await.parse().unwrap();
    if second == Signal::SIGTERM {
        agent.signal(Signal::SIGTERM);
        m.wait_until("the agent to drain", |a| a.iter().any(|a| a.draining))
            .await;
    }
    agent.signal(second);
    let code = agent.wait_exit().await;
    assert!(
        group_gone(pgid).await,
        "the running script's process group survived"
    );
    let o = within("the cancelled task", running)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.result.unwrap_err().kind, ErrorKind::Cancelled);
    assert_eq!(
        code,
        Some(0),
        "the cancelled result was delivered before exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_cancels_running_tasks_and_exits() {
    sigterm_then(Signal::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_cancels_running_tasks_and_exits() {
    sigterm_then(Signal::SIGINT).await;
}

struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "csm test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (sc, sk) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let (cc, ck) = leaf(vec!["agent.test".into()]);
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", &ca.pem()),
        server_cert: write("server.pem", &sc),
        server_key: write("server.key", &sk),
        client_cert: write("client.pem", &cc),
        client_key: write("client.key", &ck),
        dir,
    }
}

/// A server configuration that requires a client certificate from the test CA.
fn mtls_server(p: &Pki) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    manager::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(&p.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(&p.server_cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&p.server_key).unwrap();
    Arc::new(
        rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

async fn log_line(agent: &AgentProc, needle: &str) -> String {
    // The agent's log is a file; polling it with a deadline is the event available here.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let logs = agent.logs();
        if let Some(l) = logs.lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_a_custom_ca_and_a_client_certificate() {
    let p = pki();
    let tls = manager::tls_server_config(&p.server_cert, &p.server_key).unwrap();
    let m = TestManager::start_with(fast_hub(), Some(tls)).await;
    assert!(m.url().starts_with("https://"));
    let with_ca = |name: &str| {
        let mut o = AgentOpts::named(name);
        o.env
            .push(("CSM_CA_FILE".into(), p.ca.display().to_string()));
        o
    };
    let mut good = AgentProc::start(&m.url(), &m.token_file(), with_ca("tls-good"));
    m.wait_connected("tls-good").await;
    let o = m
        .hub
        .submit(task("secret=over-tls", &[], &[], PATIENCE))
        .await
        .unwrap();
    assert_eq!(o.result.unwrap().expose_secret(), b"over-tls");
    // Negative control: trusting only a CA that did not sign the server fails.
    let other = pki();
    let mut o = AgentOpts::named("tls-bad");
    o.env
        .push(("CSM_CA_FILE".into(), other.ca.display().to_string()));
    let bad = AgentProc::start(&m.url(), &m.token_file(), o);
    let line = log_line(&bad, "cannot reach the manager").await;
    assert!(line.to_lowercase().contains("certificate"), "{line}");
    assert!(m.hub.agents().iter().all(|a| a.name != "tls-bad"));
    good.kill();

    // A manager that requires client certificates: the agent presents one.
    let m = TestManager::start_with(fast_hub(), Some(mtls_server(&p))).await;
    let mut o = with_ca("mtls");
    o.env.push((
        "CSM_CLIENT_CERT".into(),
        p.client_cert.display().to_string(),
    ));
    o.env
        .push(("CSM_CLIENT_KEY".into(), p.client_key.display().to_string()));
    let mut mtls = AgentProc::start(&m.url(), &m.token_file(), o);
    m.wait_connected("mtls").await;
    let nocert = AgentProc::start(&m.url(), &m.token_file(), with_ca("no-cert"));
    log_line(&nocert, "cannot reach the manager").await;
    assert!(m.hub.agents().iter().all(|a| a.name != "no-cert"));
    mtls.kill();
    let _ = p.dir.path();
}

async fn http_get(addr: &str, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    within("the HTTP response", s.read_to_string(&mut out))
        .await
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_on_loopback() {
    let m = TestManager::start(fast_hub()).await;
    let mut o = AgentOpts::named("metered");
    o.args = vec!["--metrics-listen".into(), "127.0.0.1:0".into()];
    let mut agent = AgentProc::start(&m.url(), &m.token_file(), o);
    m.wait_connected("metered").await;
    let line = log_line(&agent, "serving /healthz and /metrics").await;
    let addr = line
        .split("addr=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    m.hub
        .submit(task("secret=ok1", &[], &[], PATIENCE))
        .await
        .unwrap();
    m.hub
        .submit(task("exit 3", &[], &[], PATIENCE))
        .await
        .unwrap();
    let health = http_get(&addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"connection\":\"connected\""), "{health}");
    let metrics = http_get(&addr, "/metrics").await;
    for want in [
        "csm_agent_tasks_total{outcome=\"ok\"} 1",
        "csm_agent_tasks_total{outcome=\"script_failed\"} 1",
        "csm_agent_task_duration_seconds_count 2",
        "csm_agent_connected 1",
        "csm_agent_reconnects_total 0",
        "csm_agent_tasks_in_flight 0",
    ] {
        assert!(metrics.contains(want), "missing {want}:\n{metrics}");
    }
    agent.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_watchdog_and_stopping() {
    let m = TestManager::start(fast_hub()).await;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    let mut o = AgentOpts::named("notified");
    o.env
        .push(("NOTIFY_SOCKET".into(), sock_path.display().to_string()));
    o.env.push(("WATCHDOG_USEC".into(), "100000".into()));
    let mut agent = AgentProc::start(&m.url(), &m.token_file(), o);
    let next = || async {
        let mut buf = [0u8; 256];
        let n = within("a notification", sock.recv(&mut buf)).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let mut seen = Vec::new();
    while !(seen.contains(&"READY=1".to_string()) && seen.contains(&"WATCHDOG=1".to_string())) {
        seen.push(next().await);
    }
    m.wait_connected("notified").await;
    agent.signal(Signal::SIGTERM);
    loop {
        if next().await == "STOPPING=1" {
            break;
        }
    }
    assert_eq!(agent.wait_exit().await, Some(0));
}

fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("CSM_CONFIG", "/dev/null")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn configuration_errors_name_the_key_and_the_token_never_comes_from_argv() {
    let (code, err) = run_cli(
        &["run", "--manager", "http://127.0.0.1:1"],
        &[
            ("CSM_TOKEN", "t"),
            ("CSM_CAPACITY", "lots"),
            ("CSM_AGENT_ID", "x"),
        ],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("CSM_CAPACITY"), "{err}");
    let (code, err) = run_cli(&["run"], &[("CSM_TOKEN", "t"), ("CSM_AGENT_ID", "x")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("manager"), "{err}");
    let (code, err) = run_cli(
        &[
            "run",
            "--manager",
            "http://127.0.0.1:1",
            "--token",
            "argv-token",
        ],
        &[("CSM_AGENT_ID", "x")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--token"), "{err}");
    let (code, err) = run_cli(
        &["run", "--manager", "http://127.0.0.1:1"],
        &[("CSM_AGENT_ID", "x")],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("no token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_binary_serves_agents_and_closes_them_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let token = random_token("mgr");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("# agents\nother-token\n{token}\n")).unwrap();
    let mut child = Command::new(bin())
        .args(["manager", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--agent-token-file")
        .arg(&tokens)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut l = String::new();
        BufReader::new(stdout).read_line(&mut l).unwrap();
        l
    });
    let line = within("the listening line", first).await.unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(Path::new(&dir.path().join("data")).is_dir());

    match ws_connect(addr, Some("wrong")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let ws = ws_connect(addr, Some(&token)).await.unwrap();
    let mut a = FakeAgent { ws };
    a.send(&AgentMessage::Hello(hello("id-m", "m", &[], 1)))
        .await;
    assert!(matches!(a.recv().await, Some(ManagerMessage::Welcome(_))));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(a.close_code().await, Some(1001));
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A data directory whose master key is gone: the manager refuses to start, says how to
/// recover, creates no new key (it would be useless against the database) and never
/// reports itself listening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_refuses_a_database_without_its_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "agent-token\n").unwrap();
    let start = |data: &Path| {
        Command::new(bin())
            .args(["manager", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .arg("--agent-token-file")
            .arg(&tokens)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // First start: creates the database and the key, then says it is listening.
    let mut child = start(&data);
    let stdout = child.stdout.take().unwrap();
    let line = within(
        "the listening line",
        tokio::task::spawn_blocking(move || {
            let mut l = String::new();
            BufReader::new(stdout).read_line(&mut l).unwrap();
            l
        }),
    )
    .await
    .unwrap();
    assert!(line.starts_with("listening on "), "{line:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // The data directory and the database are private.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("control-plane.db")), 0o600);
    assert_eq!(mode(&data.join("master.key")), 0o600);
    std::fs::remove_file(data.join("master.key")).unwrap();

    // Second start: refused, with no listening line and no new key.
    let child = start(&data);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("restore the key from its backup"), "{err}");
    assert!(!data.join("master.key").exists());
}
