//! The manager's agent endpoint against bad input: wrong or missing tokens (401, empty
//! body, nothing else learnt), malformed frames, unknown message types, binary and
//! oversized frames, a first message that is not `hello`, and no common version.

mod support;

use csm_agent::manager::HubConfig;
use csm_agent::protocol::{self, AgentMessage, ManagerMessage};
use futures_util::SinkExt;
use support::agentnet::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Send a raw HTTP request and return the whole response (the server closes after 401).
async fn raw_http(addr: std::net::SocketAddr, req: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read until the headers and the (declared) body are in.
    loop {
        let n = within("the HTTP response", s.read(&mut chunk))
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    String::from_utf8(buf).unwrap()
}

fn upgrade_request(auth: Option<&str>) -> String {
    let mut r = format!(
        "GET {} HTTP/1.1\r\nHost: cp\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        protocol::AGENT_PATH
    );
    if let Some(a) = auth {
        r.push_str(&format!("Authorization: {a}\r\n"));
    }
    r.push_str("\r\n");
    r
}

fn status_and_body(resp: &str) -> (String, String) {
    let status = resp.lines().next().unwrap_or("").to_string();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_gets_401_with_an_empty_body_and_learns_nothing() {
    let m = TestManager::start(fast_hub()).await;
    let wrong = format!("Bearer {}x", m.token);
    for auth in [
        None,
        Some(wrong.as_str()),
        Some("Bearer "),
        Some("Basic Zm9vOmJhcg=="),
        Some(&format!("Bearer {}", &m.token[..m.token.len() - 1])),
    ] {
        let resp = raw_http(m.addr, &upgrade_request(auth)).await;
        let (status, body) = status_and_body(&resp);
        assert!(status.starts_with("HTTP/1.1 401"), "{auth:?}: {resp}");
        assert_eq!(body, "", "{auth:?}");
        let lower = resp.to_ascii_lowercase();
        assert!(!lower.contains("sec-websocket-accept"), "{resp}");
        assert!(!lower.contains("upgrade: websocket"), "{resp}");
    }
    // Authentication comes before the upgrade check: a malformed upgrade with a wrong
    // token is still just 401, while the right token gets the upgrade's own error.
    let bad_upgrade = |auth: &str| {
        format!(
            "GET {} HTTP/1.1\r\nHost: cp\r\nAuthorization: {auth}\r\n\r\n",
            protocol::AGENT_PATH
        )
    };
    let (status, _) = status_and_body(&raw_http(m.addr, &bad_upgrade(&wrong)).await);
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    let right = format!("Bearer {}", m.token);
    let (status, _) = status_and_body(&raw_http(m.addr, &bad_upgrade(&right)).await);
    assert!(!status.contains("401"), "{status}");
    // Positive control: the right token upgrades.
    let resp = raw_http(m.addr, &upgrade_request(Some(&right))).await;
    assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
    // The client library sees the same.
    match ws_connect(m.addr, Some("nope")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    assert!(m.hub.agents().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unknown_and_binary_frames_are_ignored_and_the_session_stays_up() {
    let m = TestManager::start(fast_hub()).await;
    let mut a = FakeAgent::join(&m, hello("id-a", "a", &[], 2)).await;
    for junk in [
        "{not json",
        "[]",
        r#"{"type":"result","id":"x"}"#,
        r#"{"type":"rejected","id":"x","reason":7}"#,
        r#"{"no":"type"}"#,
        r#"{"type":"telemetry","cpu":0.5}"#,
        "",
    ] {
        a.send_text(junk).await;
    }
    a.ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    // Still the same session: a ping is answered, and a task still flows.
    a.send(&AgentMessage::Ping {}).await;
    loop {
        match a.recv().await {
            Some(ManagerMessage::Pong {}) => break,
            Some(_) => {}
            None => panic!("the manager dropped the session"),
        }
    }
    let hub = m.hub.clone();
    let p = tokio::spawn(async move { hub.submit(task("secret=x", &[], &[], PATIENCE)).await });
    let t = a.recv_task().await;
    a.send(&AgentMessage::Result(protocol::TaskResult {
        id: t.id.clone(),
        outcome: protocol::ResultOutcome::error(csm_agent::ErrorKind::ScriptFailed, "m"),
        duration_ms: 1,
        attempts: 1,
    }))
    .await;
    let o = within("outcome", p).await.unwrap().unwrap();
    assert_eq!(
        o.result.unwrap_err().kind,
        csm_agent::ErrorKind::ScriptFailed
    );
    assert_eq!(m.hub.agents()[0].sessions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_with_1009() {
    let m = TestManager::start(HubConfig {
        max_frame_bytes: 64 * 1024,
        ..fast_hub()
    })
    .await;
    let mut a = FakeAgent::join(&m, hello("id-a", "a", &[], 2)).await;
    let big = format!(r#"{{"type":"pong","pad":"{}"}}"#, "x".repeat(100 * 1024));
    a.send_text(&big).await;
    assert_eq!(a.close_code().await, Some(protocol::CLOSE_TOO_BIG));
    m.wait_until("the session to end", |ag| ag.iter().all(|x| !x.connected))
        .await;
    // A task too large for a frame is refused at submission, not on the wire.
    let mut req = task("secret=x", &[("v", "y")], &[], PATIENCE);
    req.variables.insert(
        "v".into(),
        protocol::WireSecret::from_vec(vec![b'a'; 100 * 1024]),
    );
    match m.hub.submit(req).await {
        Err(csm_agent::manager::HubError::Invalid(msg)) => assert!(msg.contains("limit"), "{msg}"),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_needs_hello_first_and_a_common_version() {
    let m = TestManager::start(fast_hub()).await;
    let mut ws = ws_connect(m.addr, Some(&m.token)).await.unwrap();
    ws.send(Message::Text(
        protocol::encode(&AgentMessage::Pong {}).into(),
    ))
    .await
    .unwrap();
    let mut a = FakeAgent { ws };
    assert_eq!(a.close_code().await, Some(protocol::CLOSE_HANDSHAKE));

    let ws = ws_connect(m.addr, Some(&m.token)).await.unwrap();
    let mut a = FakeAgent { ws };
    // Junk before hello is ignored, as in a session.
    a.send_text("{garbage").await;
    let mut h = hello("id-v", "v", &[], 1);
    h.protocol_versions = vec![99, 100];
    a.send(&AgentMessage::Hello(h)).await;
    assert_eq!(a.close_code().await, Some(protocol::CLOSE_VERSION));

    let ws = ws_connect(m.addr, Some(&m.token)).await.unwrap();
    let mut a = FakeAgent { ws };
    a.send(&AgentMessage::Hello(hello(
        "bad id with spaces",
        "v",
        &[],
        1,
    )))
    .await;
    assert_eq!(a.close_code().await, Some(protocol::CLOSE_HANDSHAKE));
    assert!(m.hub.agents().is_empty());

    // A newer agent offering [1, 2] gets version 1.
    let ws = ws_connect(m.addr, Some(&m.token)).await.unwrap();
    let mut a = FakeAgent { ws };
    let mut h = hello("id-n", "n", &[], 1);
    h.protocol_versions = vec![1, 2];
    a.send(&AgentMessage::Hello(h)).await;
    match a.recv().await {
        Some(ManagerMessage::Welcome(w)) => {
            assert_eq!(w.protocol_version, 1);
            assert_eq!(w.heartbeat_ms, 2000);
        }
        other => panic!("{other:?}"),
    }
}
