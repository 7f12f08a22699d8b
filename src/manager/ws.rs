//! The agent endpoint: bearer authentication before the WebSocket upgrade, then one
//! session per connection that speaks the protocol and feeds the [`Hub`].
//!
//! - **Authentication.** `Authorization: Bearer <token>` is checked before the upgrade;
//!   anything else gets `401` with an empty body, whatever the rest of the request holds.
//! - **Session.** The first message must be `hello`; the version is negotiated and the hub
//!   answers `welcome`. A writer task owns the socket's sending half, so a stalled peer
//!   never blocks reading or the heartbeat.
//! - **Robustness.** A malformed frame is logged (length and position, never contents) and
//!   ignored; an unknown message type is ignored with a warning; a frame over the limit
//!   closes the connection with 1009. A peer silent for three heartbeat intervals is
//!   dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::hub::{Hub, Outbound};
use super::AgentTokens;
use crate::protocol::{self, AgentMessage, Hello, ManagerMessage, Outgoing};

/// Longest agent id accepted in `hello`.
const MAX_AGENT_ID: usize = 128;

/// What every session shares.
pub(crate) struct Endpoint {
    pub(crate) hub: Hub,
    pub(crate) tokens: Arc<AgentTokens>,
    pub(crate) max_frame_bytes: usize,
    pub(crate) handshake_timeout: Duration,
    /// Close sessions with 1001 (going away).
    pub(crate) graceful: CancellationToken,
    /// Drop sessions at once, without a close frame.
    pub(crate) kill: CancellationToken,
    pub(crate) sessions: TaskTracker,
}

/// The agent endpoint's routes.
pub(crate) fn router(ep: Arc<Endpoint>) -> Router {
    Router::new()
        .route(protocol::AGENT_PATH, get(connect))
        .with_state(ep)
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = v.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| v[7..].trim_ascii())
}

async fn connect(State(ep): State<Arc<Endpoint>>, req: Request) -> Response {
    let (mut parts, _body) = req.into_parts();
    // Authentication comes first: an unauthenticated client learns nothing else, not even
    // whether its upgrade request was well-formed.
    if !bearer(&parts.headers).is_some_and(|t| ep.tokens.verify(t)) {
        tracing::info!("agent connection refused: missing or wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response();
    }
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let limit = ep.max_frame_bytes;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_failed_upgrade(|e| tracing::info!("agent upgrade failed: {e}"))
        .on_upgrade(move |socket| {
            let tracker = ep.sessions.clone();
            tracker.track_future(session(socket, ep))
        })
}

/// Why a session ended, for the log.
enum End {
    PeerClosed,
    Error(String),
    Silent,
    Replaced,
    Shutdown,
    Killed,
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Whether a read failed because the frame was over the size limit (tungstenite's
/// capacity error, under axum's wrapper).
fn is_too_big(e: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    matches!(
        e.into_inner().downcast_ref::<Error>(),
        Some(Error::Capacity(_))
    )
}

async fn session(socket: WebSocket, ep: Arc<Endpoint>) {
    let (mut sink, mut stream) = socket.split();

    // Handshake: wait for hello, ignoring what cannot be used.
    let hello = tokio::select! {
        h = read_hello(&mut stream) => h,
        _ = tokio::time::sleep(ep.handshake_timeout) => Err(("no hello in time", protocol::CLOSE_HANDSHAKE)),
        _ = ep.kill.cancelled() => return,
    };
    let hello: Hello = match hello {
        Ok(h) => h,
        Err((why, code)) => {
            tracing::info!("agent session refused: {why}");
            let _ = sink.send(close(code, why)).await;
            return;
        }
    };
    let Some(version) = protocol::negotiate(&hello.protocol_versions) else {
        tracing::info!(agent = %hello.name, offered = ?hello.protocol_versions, "no common protocol version");
        let _ = sink
            .send(close(protocol::CLOSE_VERSION, "no common protocol version"))
            .await;
        return;
    };
    let name = hello.name.clone();
    let handle = ep.hub.connected(hello, version);
    let (agent_id, epoch) = (handle.agent_id.clone(), handle.epoch);
    let welcome = protocol::encode(&ManagerMessage::Welcome(handle.welcome.clone()));
    let heartbeat = Duration::from_millis(handle.welcome.heartbeat_ms.max(1));
    let sender = handle.sender.clone();

    // The writer: owns the sending half, drains the hub's queue for this session.
    let mut outbound = handle.outbound;
    let writer = tokio::spawn(async move {
        if sink.send(Message::Text(welcome.into())).await.is_err() {
            return;
        }
        while let Some(out) = outbound.recv().await {
            let sent = protocol::write_queued(&mut sink, out, &mut outbound, |o| match o {
                Outbound::Message(m) => Outgoing::Frame(Message::Text(protocol::encode(&m).into())),
                Outbound::Close(code, reason) => Outgoing::Last(close(code, reason)),
            });
            if sent.await.is_break() {
                return;
            }
        }
    });

    let end = read_loop(&mut stream, &ep, &agent_id, &name, &sender, heartbeat).await;
    ep.hub.disconnected(&agent_id, epoch);
    match &end {
        End::PeerClosed => tracing::info!(agent = %name, "agent closed the session"),
        End::Error(e) => tracing::info!(agent = %name, "agent session ended: {e}"),
        End::Silent => {
            tracing::warn!(agent = %name, "agent silent for three heartbeat intervals; dropped")
        }
        End::Replaced => tracing::info!(agent = %name, "session replaced"),
        End::Shutdown => tracing::info!(agent = %name, "session closed for shutdown"),
        End::Killed => {}
    }
    drop(sender);
    if matches!(end, End::Killed) {
        writer.abort();
        return;
    }
    // Let the writer flush a close frame, but never wait on a stalled peer for long.
    let mut writer = writer;
    if tokio::time::timeout(Duration::from_secs(1), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

async fn read_hello(
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
) -> Result<Hello, (&'static str, u16)> {
    loop {
        let msg = match stream.next().await {
            None | Some(Err(_)) => return Err(("connection ended before hello", 1000)),
            Some(Ok(m)) => m,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => return Err(("connection ended before hello", 1000)),
            Message::Binary(b) => {
                tracing::warn!(
                    len = b.len(),
                    "binary frame ignored (the protocol uses text)"
                );
                continue;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        match protocol::decode::<AgentMessage>(text.as_str()) {
            Ok(AgentMessage::Hello(h)) => {
                let id_ok = !h.agent_id.is_empty()
                    && h.agent_id.len() <= MAX_AGENT_ID
                    && h.agent_id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !id_ok {
                    return Err((
                        "agentId must be 1-128 letters, digits, '-' or '_'",
                        protocol::CLOSE_HANDSHAKE,
                    ));
                }
                return Ok(h);
            }
            Ok(AgentMessage::Unknown) => {
                let t = protocol::unknown_type_name(text.as_str());
                tracing::warn!(
                    r#type = t.as_deref().unwrap_or("?"),
                    "unknown message type ignored"
                );
            }
            Ok(_) => return Err(("the first message must be hello", protocol::CLOSE_HANDSHAKE)),
            Err(e) => tracing::warn!(len = text.len(), "{e}; ignored"),
        }
    }
}

async fn read_loop(
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    ep: &Endpoint,
    agent_id: &str,
    name: &str,
    sender: &mpsc::UnboundedSender<Outbound>,
    heartbeat: Duration,
) -> End {
    let mut last_seen = Instant::now();
    let mut tick = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let send = |m: ManagerMessage| sender.send(Outbound::Message(m)).is_ok();
    loop {
        let msg = tokio::select! {
            _ = ep.kill.cancelled() => return End::Killed,
            _ = ep.graceful.cancelled() => {
                let _ = sender.send(Outbound::Close(1001, "the control plane is shutting down"));
                return End::Shutdown;
            }
            _ = sender.closed() => return End::Replaced,
            _ = tick.tick() => {
                if last_seen.elapsed() >= heartbeat * 3 {
                    let _ = sender.send(Outbound::Close(protocol::CLOSE_SILENT, "silent for three heartbeat intervals"));
                    return End::Silent;
                }
                send(ManagerMessage::Ping {});
                continue;
            }
            m = stream.next() => m,
        };
        let msg = match msg {
            None => return End::PeerClosed,
            Some(Err(e)) => {
                let text = e.to_string();
                if is_too_big(e) {
                    tracing::warn!(agent = %name, "frame over the {}-byte limit refused", ep.max_frame_bytes);
                    let _ =
                        sender.send(Outbound::Close(protocol::CLOSE_TOO_BIG, "frame too large"));
                    return End::Error("frame too large".into());
                }
                return End::Error(text);
            }
            Some(Ok(m)) => m,
        };
        last_seen = Instant::now();
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(b) => {
                tracing::warn!(agent = %name, len = b.len(), "binary frame ignored (the protocol uses text)");
                continue;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return End::PeerClosed,
        };
        let m = match protocol::decode::<AgentMessage>(text.as_str()) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(agent = %name, len = text.len(), "{e}; ignored");
                continue;
            }
        };
        tracing::debug!(agent = %name, r#type = protocol::agent_message_type(&m), "frame received");
        match m {
            AgentMessage::Ping {} => {
                send(ManagerMessage::Pong {});
            }
            AgentMessage::Pong {} => {}
            AgentMessage::Accepted { id } => ep.hub.accepted(agent_id, &id),
            AgentMessage::Rejected(r) => ep.hub.rejected(agent_id, r),
            AgentMessage::Result(r) => ep.hub.result(agent_id, r),
            AgentMessage::Draining {} => ep.hub.draining(agent_id),
            AgentMessage::Hello(_) => {
                tracing::warn!(agent = %name, "hello in an open session ignored");
            }
            AgentMessage::Unknown => {
                let t = protocol::unknown_type_name(text.as_str());
                tracing::warn!(agent = %name, r#type = t.as_deref().unwrap_or("?"), "unknown message type ignored");
            }
        }
    }
}
