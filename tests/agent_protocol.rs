//! A real `csm-agent run` process against a hand-driven manager: duplicated task frames,
//! bad frames, oversized frames, policy and capacity refusals, cancellation.

mod support;

use std::path::Path;

use csm_agent::agent::policy::script_digest;
use csm_agent::error::ErrorKind;
use csm_agent::protocol::{
    self, AgentMessage, ManagerMessage, RejectReason, ResultOutcome, SshCredentials, SshSpec,
    Target, WireSecret,
};
use futures_util::SinkExt;
use secrecy::ExposeSecret;
use support::agentnet::*;

const HEARTBEAT_MS: u64 = 5_000;

fn start_agent(fm: &FakeManager, name: &str, env: &[(&str, &str)]) -> AgentProc {
    let mut o = AgentOpts::named(name);
    o.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    AgentProc::start(&fm.url, &fm.token_file(), o)
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .count()
}

async fn ping_pong(c: &mut ManagerConn) {
    c.send(&ManagerMessage::Ping {}).await;
    loop {
        match within("pong", c.ws.next_frame()).await {
            Some(AgentMessage::Pong {}) => return,
            Some(_) => {}
            None => panic!("the agent dropped the session"),
        }
    }
}

/// Reading one decoded frame without the auto-answering of `recv`.
trait NextFrame {
    async fn next_frame(&mut self) -> Option<AgentMessage>;
}

impl NextFrame for tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    async fn next_frame(&mut self) -> Option<AgentMessage> {
        use futures_util::StreamExt;
        loop {
            match self.next().await? {
                Ok(tokio_tungstenite::tungstenite::Message::Text(t)) => {
                    return Some(protocol::decode(t.as_str()).unwrap())
                }
                Ok(tokio_tungstenite::tungstenite::Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_task_frame_runs_once() {
    let fm = FakeManager::start().await;
    let mut agent = start_agent(&fm, "dup", &[]);
    let mut c = fm.accept(HEARTBEAT_MS).await;
    assert_eq!(c.hello.name, "dup");
    assert_eq!(c.hello.capacity, 32);
    assert!(c.hello.in_flight.is_empty() && c.hello.results.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let hold = fifo(dir.path(), "hold");
    let script = format!(
        "echo run >> {c}; read x < {h}; secret=\"got-${{v}}\"",
        c = count.display(),
        h = hold.display()
    );
    let t = proto_task("task-dup", &script, &[("v", "value-1")]);
    let frame = protocol::encode(&ManagerMessage::Task(Box::new(t)));
    // Twice, back to back, while the first copy is still running.
    c.send_text(&frame).await;
    c.send_text(&frame).await;
    for _ in 0..2 {
        match c.recv().await {
            Some(AgentMessage::Accepted { id }) => assert_eq!(id, "task-dup"),
            other => panic!("expected accepted, got {other:?}"),
        }
    }
    write_fifo_line(&hold, "go").await;
    let r = match c.recv().await {
        Some(AgentMessage::Result(r)) => r,
        other => panic!("expected a result, got {other:?}"),
    };
    match &r.outcome {
        ResultOutcome::Ok { value } => assert_eq!(value.secret().expose_secret(), b"got-value-1"),
        other => panic!("{other:?}"),
    }
    // Again after it finished (result not yet acked): the result is resent, no new run.
    c.send_text(&frame).await;
    match c.recv().await {
        Some(AgentMessage::Result(r2)) => assert_eq!(r2.id, "task-dup"),
        other => panic!("expected the result again, got {other:?}"),
    }
    c.send(&ManagerMessage::ResultAck {
        id: "task-dup".into(),
    })
    .await;
    // And once more after the ack: ignored.
    c.send_text(&frame).await;
    ping_pong(&mut c).await;
    assert_eq!(lines(&count), 1, "the script ran more than once");
    agent.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_ignored_and_oversized_ones_close_the_session() {
    let fm = FakeManager::start().await;
    let mut agent = start_agent(&fm, "junk", &[("CSM_MAX_FRAME_BYTES", "262144")]);
    let mut c = fm.accept(HEARTBEAT_MS).await;
    for junk in [
        "{not json",
        "[1,2]",
        r#"{"type":"task","id":"t"}"#,
        r#"{"type":"reboot_now","please":true}"#,
        r#"{"type":"result_ack"}"#,
    ] {
        c.send_text(junk).await;
    }
    c.ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        vec![0; 8].into(),
    ))
    .await
    .unwrap();
    ping_pong(&mut c).await;
    // Still serving tasks on the same session.
    c.send(&ManagerMessage::Task(Box::new(proto_task(
        "t-ok",
        "secret=fine",
        &[],
    ))))
    .await;
    match c.recv_not_accepted().await {
        Some(AgentMessage::Result(r)) => assert!(r.outcome.error_kind().is_none()),
        other => panic!("{other:?}"),
    }
    // Over the limit: the agent refuses with 1009 and reconnects.
    c.send_text(&format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "x".repeat(300 * 1024)
    ))
    .await;
    assert_eq!(c.close_code().await, Some(protocol::CLOSE_TOO_BIG));
    let c2 = fm.accept(HEARTBEAT_MS).await;
    assert_eq!(
        c2.hello.agent_id, c.hello.agent_id,
        "same agent id after reconnect"
    );
    let logs = agent.logs();
    assert!(logs.contains("malformed frame"), "{logs}");
    assert!(
        logs.contains("reboot_now"),
        "unknown types are named: {logs}"
    );
    assert!(
        !logs.contains("please"),
        "frame contents never logged: {logs}"
    );
    agent.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_refusals_never_run_the_script() {
    let fm = FakeManager::start().await;
    let allowed = "secret=allowed";
    let pinned = script_digest(allowed)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let mut agent = start_agent(
        &fm,
        "strict",
        &[
            ("CSM_POLICY_PINNED_TEMPLATES", &pinned),
            ("CSM_POLICY_MAX_TIMEOUT_SECS", "60"),
            ("CSM_POLICY_COMMAND_PATH_PREFIXES", "/tmp"),
        ],
    );
    let mut c = fm.accept(HEARTBEAT_MS).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let evil = format!("touch {}; secret=x", marker.display());

    let mut cases = Vec::new();
    cases.push(("unpinned", proto_task("p1", &evil, &[]), "pinned"));
    let mut t = proto_task("p2", allowed, &[]);
    t.deadline_ms = 120_000;
    cases.push(("deadline", t, "deadline"));
    let mut t = proto_task("p3", allowed, &[]);
    t.target = Target::Local {
        command_path: Some("/etc".into()),
    };
    cases.push(("commandPath", t, "commandPath"));
    let mut t = proto_task("p4", allowed, &[]);
    t.target = Target::Ssh(SshSpec {
        host: "10.9.9.9".into(),
        port: Some(22),
        user: "root".into(),
        credentials: SshCredentials::Password {
            password: WireSecret::from_vec(b"hunter2-ssh-password".to_vec()),
        },
        host_keys: vec![],
        command_path: None,
    });
    cases.push(("ssh host", t, "ssh_hosts"));
    for (what, t, needle) in cases {
        let id = t.id.clone();
        c.send(&ManagerMessage::Task(Box::new(t))).await;
        match c.recv().await {
            Some(AgentMessage::Rejected(r)) => {
                assert_eq!(r.id, id);
                assert_eq!(r.reason, RejectReason::Policy, "{what}");
                assert!(r.message.contains(needle), "{what}: {}", r.message);
            }
            other => panic!("{what}: expected rejected, got {other:?}"),
        }
    }
    // Positive control: the pinned script runs.
    c.send(&ManagerMessage::Task(Box::new(proto_task(
        "p5",
        allowed,
        &[],
    ))))
    .await;
    match c.recv_not_accepted().await {
        Some(AgentMessage::Result(r)) => assert!(r.outcome.error_kind().is_none(), "{r:?}"),
        other => panic!("{other:?}"),
    }
    assert!(!marker.exists(), "a refused script ran");
    assert!(!agent.logs().contains("hunter2-ssh-password"));
    agent.kill();

    // Local execution off.
    let mut agent = start_agent(&fm, "nolocal", &[("CSM_POLICY_LOCAL", "false")]);
    let mut c = fm.accept(HEARTBEAT_MS).await;
    c.send(&ManagerMessage::Task(Box::new(proto_task(
        "l1",
        &evil,
        &[],
    ))))
    .await;
    match c.recv().await {
        Some(AgentMessage::Rejected(r)) => {
            assert_eq!(r.reason, RejectReason::Policy);
            assert!(r.message.contains("local execution"), "{}", r.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(!marker.exists());
    agent.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_capacity_is_busy_unknown_kinds_are_unsupported_and_cancel_kills() {
    let fm = FakeManager::start().await;
    let mut o = AgentOpts::named("one");
    o.capacity = Some(1);
    let mut agent = AgentProc::start(&fm.url, &fm.token_file(), o);
    let mut c = fm.accept(HEARTBEAT_MS).await;
    assert_eq!(c.hello.capacity, 1);
    let dir = tempfile::tempdir().unwrap();
    let started = fifo(dir.path(), "started");
    let script = format!(
        "echo $$ > {s}; sleep 600 & wait; secret=never",
        s = started.display()
    );
    c.send(&ManagerMessage::Task(Box::new(proto_task(
        "long",
        &script,
        &[],
    ))))
    .await;
    let pid: i32 = read_fifo_line(&started).await.parse().unwrap();
    c.send(&ManagerMessage::Task(Box::new(proto_task(
        "second",
        "secret=x",
        &[],
    ))))
    .await;
    loop {
        match c.recv().await {
            Some(AgentMessage::Accepted { id }) => assert_eq!(id, "long"),
            Some(AgentMessage::Rejected(r)) => {
                assert_eq!((r.id.as_str(), r.reason), ("second", RejectReason::Busy));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let unknown = protocol::encode(&ManagerMessage::Task(Box::new(proto_task(
        "w",
        "secret=x",
        &[],
    ))))
    .replace(r#""type":"local""#, r#""type":"winrm""#);
    c.send_text(&unknown).await;
    match c.recv().await {
        Some(AgentMessage::Rejected(r)) => assert_eq!(r.reason, RejectReason::Unsupported),
        other => panic!("{other:?}"),
    }
    // Cancel: the script's process group dies and the result says so.
    c.send(&ManagerMessage::Cancel { id: "long".into() }).await;
    match c.recv().await {
        Some(AgentMessage::Result(r)) => {
            assert_eq!(r.id, "long");
            assert_eq!(r.outcome.error_kind(), Some(ErrorKind::Cancelled));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        group_gone(pid).await,
        "the cancelled script's process group is still running"
    );
    agent.kill();
}
