//! The agent ↔ manager wire protocol: message types, version negotiation and framing, and
//! the batched writer loop both sides run ([`write_queued`]).
//!
//! JSON text frames over WebSocket (`docs/protocol.md#agent-protocol` is the
//! specification, with an example of every message). There is one enum per direction,
//! [`AgentMessage`] (agent → manager) and [`ManagerMessage`] (manager → agent), internally
//! tagged by `"type"`, each with an `Unknown` catch-all so that a newer peer's message
//! types are ignored with a warning instead of breaking the connection.
//!
//! Secret fields (variable values, stored-secret values, SSH credentials, the returned
//! secret) are [`WireSecret`]s: `Debug` prints `[REDACTED]`, and the bytes are exposed in
//! exactly one place, when a frame is encoded. Decoding errors ([`FrameError`]) name a
//! position and a category, never the frame's contents.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use secrecy::ExposeSecret;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;
use crate::secret::{secret_bytes, SecretBytes};

/// The protocol version this build speaks best.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every protocol version this build can speak, oldest first.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];

/// The agent endpoint's path on the manager, relative to its base URL.
pub const AGENT_PATH: &str = "/agent/v1/connect";

/// The default limit on one frame (a WebSocket message), in bytes. A secret may be up to
/// 4 MiB; base64 and JSON escaping make that at most about 5.4 MiB on the wire.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 << 20;

/// The close code for "message too big" (RFC 6455).
pub const CLOSE_TOO_BIG: u16 = 1009;

/// The close code for "no common protocol version" (application range).
pub const CLOSE_VERSION: u16 = 4001;

/// The close code for "another session of this agent id replaced this one".
pub const CLOSE_REPLACED: u16 = 4002;

/// The close code for "the peer was silent for three heartbeat intervals".
pub const CLOSE_SILENT: u16 = 4003;

/// The close code for "the first message was not the expected handshake message".
pub const CLOSE_HANDSHAKE: u16 = 4004;

/// The highest version both sides support, if any.
pub fn negotiate(offered: &[u32]) -> Option<u32> {
    offered
        .iter()
        .copied()
        .filter(|v| SUPPORTED_VERSIONS.contains(v))
        .max()
}

/// Bytes that are secret on the wire: a JSON string when they are clean UTF-8, else
/// `{"base64": "…"}`. Zeroised on drop, redacted in `Debug`.
pub struct WireSecret(SecretBytes);

impl WireSecret {
    /// Wrap secret bytes.
    pub fn new(bytes: SecretBytes) -> Self {
        WireSecret(bytes)
    }

    /// Wrap owned bytes.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        WireSecret(secret_bytes(bytes))
    }

    /// The secret inside.
    pub fn secret(&self) -> &SecretBytes {
        &self.0
    }

    /// Take the secret out.
    pub fn into_secret(self) -> SecretBytes {
        self.0
    }
}

impl Clone for WireSecret {
    fn clone(&self) -> Self {
        WireSecret::from_vec(self.0.expose_secret().to_vec())
    }
}

impl fmt::Debug for WireSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl From<SecretBytes> for WireSecret {
    fn from(b: SecretBytes) -> Self {
        WireSecret(b)
    }
}

/// Whether `s` goes on the wire as a plain JSON string: control characters other than
/// tab and newline would be escaped six-fold, so such values travel as base64.
fn plain_text(bytes: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(bytes).ok()?;
    s.bytes()
        .all(|b| b >= 0x20 || b == b'\n' || b == b'\t')
        .then_some(s)
}

impl Serialize for WireSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The one place a protocol value is exposed: encoding a frame.
        let bytes = self.0.expose_secret();
        match plain_text(bytes) {
            Some(text) => s.serialize_str(text),
            None => {
                let encoded = zeroize::Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                );
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("base64", encoded.as_str())?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for WireSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireSecret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or {\"base64\": string}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireSecret, E> {
                Ok(WireSecret::from_vec(v.as_bytes().to_vec()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<WireSecret, E> {
                Ok(WireSecret::from_vec(v.into_bytes()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireSecret, A::Error> {
                let mut out = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key != "base64" || out.is_some() {
                        // Never echo the key: it is the peer's text.
                        return Err(de::Error::custom("a secret object has one key, base64"));
                    }
                    let text = zeroize::Zeroizing::new(map.next_value::<String>()?);
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(text.as_bytes())
                        .map_err(|_| de::Error::custom("a secret's base64 is not valid"))?;
                    out = Some(WireSecret::from_vec(bytes));
                }
                out.ok_or_else(|| de::Error::custom("a secret object needs base64"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A task id: chosen by the manager, unique per task, the same across its dispatches.
pub type TaskId = String;

/// Messages from the agent to the manager.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// The first message on every connection.
    Hello(Hello),
    /// The agent took the task and will report a result.
    Accepted {
        /// The task.
        id: TaskId,
    },
    /// The agent will not run the task.
    Rejected(Rejected),
    /// A task's result; held by the agent until acked.
    Result(TaskResult),
    /// The agent is shutting down: it takes no new tasks and finishes those it has.
    Draining {},
    /// A heartbeat; the peer answers `pong`.
    Ping {},
    /// The answer to a `ping`.
    Pong {},
    /// A message type this build does not know; ignored with a warning.
    #[serde(other)]
    Unknown,
}

/// Messages from the manager to the agent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ManagerMessage {
    /// The answer to `hello`: the session is open.
    Welcome(Welcome),
    /// Run this.
    Task(Box<Task>),
    /// The manager has the result of this task; the agent may forget it.
    ResultAck {
        /// The task.
        id: TaskId,
    },
    /// Stop this task if it is still running (its result is still reported).
    Cancel {
        /// The task.
        id: TaskId,
    },
    /// A heartbeat; the peer answers `pong`.
    Ping {},
    /// The answer to a `ping`.
    Pong {},
    /// A message type this build does not know; ignored with a warning.
    #[serde(other)]
    Unknown,
}

/// `hello`: who the agent is, what it can take, and what it still holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// Protocol versions the agent speaks.
    pub protocol_versions: Vec<u32>,
    /// Stable across restarts (kept in the agent's state file).
    pub agent_id: String,
    /// Display name; also an implicit selector.
    pub name: String,
    /// The agent host's name; also an implicit selector.
    pub hostname: String,
    /// The agent's software version.
    pub version: String,
    /// Selectors, as configured (the manager trims and lower-cases them).
    #[serde(default)]
    pub selectors: Vec<String>,
    /// How many tasks the agent runs at once.
    pub capacity: u32,
    /// Tasks still running from an earlier session.
    #[serde(default)]
    pub in_flight: Vec<TaskId>,
    /// Results not yet acked (those that fit in the frame; the rest follow as `result`).
    #[serde(default)]
    pub results: Vec<TaskResult>,
}

/// `welcome`: the session is open.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    /// This connection's session id (for logs).
    pub session_id: String,
    /// The version both sides speak from now on.
    pub protocol_version: u32,
    /// How often each side pings; a peer silent for three intervals is dropped.
    pub heartbeat_ms: u64,
}

/// What the task is for. Both run the template the same way; `validate` is a
/// create/update check with test values, `fetch` reads a secret for use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Validate a secrets manager with its test values.
    Validate,
    /// Fetch a secret.
    Fetch,
    /// A kind this build does not know: rejected as `unsupported`.
    #[serde(other)]
    Unknown,
}

/// The template document, as `test-run` reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateSpec {
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The bash script, with placeholders.
    pub script_string: String,
    /// Declared variable names.
    #[serde(default)]
    pub variables: Vec<String>,
    /// Per-attempt timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_millis: Option<u64>,
}

/// How often to try, and how far apart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// Attempts in all.
    pub attempts: u32,
    /// Pause between attempts.
    pub delay_ms: u64,
}

/// `task`: one secret fetch or validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// The task id.
    pub id: TaskId,
    /// Validate or fetch.
    pub kind: TaskKind,
    /// Which dispatch of this task this is, from 1.
    pub attempt: u32,
    /// Time budget for the whole task, across script attempts, from when the agent
    /// receives it (relative, so clock skew does not matter).
    pub deadline_ms: u64,
    /// What to run.
    pub template: TemplateSpec,
    /// Variable values by name.
    #[serde(default)]
    pub variables: BTreeMap<String, WireSecret>,
    /// Stored-secret values for `${secrets.getValue("id")}`, by id.
    #[serde(default)]
    pub secrets: BTreeMap<String, WireSecret>,
    /// Where to run it.
    pub target: Target,
    /// Script attempts; the agent's default (Harness: 3, 1 s apart) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// Where a task runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum Target {
    /// On the agent's host.
    Local {
        /// Working directory (default `/tmp`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command_path: Option<String>,
    },
    /// On a host over SSH.
    Ssh(SshSpec),
    /// A target type this build does not know: rejected as `unsupported`.
    #[serde(other)]
    Unknown,
}

/// An SSH target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshSpec {
    /// Host name or address.
    pub host: String,
    /// Port (default 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Login user.
    pub user: String,
    /// How to authenticate.
    pub credentials: SshCredentials,
    /// Trusted host keys: known_hosts lines or `SHA256:` fingerprints. Empty: the agent
    /// host's known_hosts files.
    #[serde(default)]
    pub host_keys: Vec<String>,
    /// Working directory on the host (default `/tmp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_path: Option<String>,
}

impl SshSpec {
    /// The port, defaulted.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(22)
    }
}

/// SSH credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum SshCredentials {
    /// An inline private key.
    Key {
        /// The key text (OpenSSH or PEM).
        private_key: WireSecret,
        /// Its passphrase.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase: Option<WireSecret>,
    },
    /// A key file on the agent's host.
    KeyFile {
        /// Its path.
        path: String,
        /// Its passphrase.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase: Option<WireSecret>,
    },
    /// A password.
    Password {
        /// The password.
        password: WireSecret,
    },
    /// A credential type this build does not know: rejected as `unsupported`.
    #[serde(other)]
    Unknown,
}

/// Why an agent refused a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// At its concurrency cap: try another agent, or later.
    Busy,
    /// Outside the agent's local policy: final.
    Policy,
    /// Shutting down: try another agent.
    Draining,
    /// The agent cannot run this kind of task (unknown kind, target or credential): final.
    Unsupported,
    /// A reason this build does not know; treated as `unsupported`.
    #[serde(other)]
    Unknown,
}

/// `rejected`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejected {
    /// The task.
    pub id: TaskId,
    /// Why.
    pub reason: RejectReason,
    /// A human-readable explanation, without values.
    #[serde(default)]
    pub message: String,
}

/// A task's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    /// The task.
    pub id: TaskId,
    /// The secret, or why there is none.
    pub outcome: ResultOutcome,
    /// Wall time on the agent, across attempts.
    pub duration_ms: u64,
    /// Script attempts made.
    pub attempts: u32,
}

/// The secret, or an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultOutcome {
    /// The secret.
    Ok {
        /// Its exact bytes.
        value: WireSecret,
    },
    /// Why there is no secret.
    Error {
        /// The stable kind; a kind this build does not know reads as `internal`.
        #[serde(deserialize_with = "lenient_kind")]
        kind: ErrorKind,
        /// The message, with every value masked.
        message: String,
    },
}

impl ResultOutcome {
    /// An error outcome.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        ResultOutcome::Error {
            kind,
            message: message.into(),
        }
    }

    /// The error kind, or `None` for success.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match self {
            ResultOutcome::Ok { .. } => None,
            ResultOutcome::Error { kind, .. } => Some(*kind),
        }
    }
}

fn lenient_kind<'de, D: Deserializer<'de>>(d: D) -> Result<ErrorKind, D::Error> {
    let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
    Ok(
        serde_json::from_value(serde_json::Value::String(s.into_owned()))
            .unwrap_or(ErrorKind::Internal),
    )
}

/// Why a frame could not be used. Messages never quote the frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not valid JSON, or not a message of a known shape.
    #[error("malformed frame ({category} at line {line} column {column})")]
    Malformed {
        /// `syntax`, `data` or `eof`.
        category: &'static str,
        /// Line of the problem.
        line: usize,
        /// Column of the problem.
        column: usize,
    },
    /// Bigger than the limit.
    #[error("frame of {len} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A binary frame: the protocol uses text frames only.
    #[error("binary frame of {len} bytes (the protocol uses text frames)")]
    Binary {
        /// Its length.
        len: usize,
    },
}

fn malformed(e: serde_json::Error) -> FrameError {
    use serde_json::error::Category;
    FrameError::Malformed {
        category: match e.classify() {
            Category::Io => "io",
            Category::Syntax => "syntax",
            Category::Data => "data",
            Category::Eof => "eof",
        },
        line: e.line(),
        column: e.column(),
    }
}

/// Decode one frame's text.
pub fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, FrameError> {
    serde_json::from_str(text).map_err(malformed)
}

/// Encode a message as a frame's text. Secret fields are exposed here and only here.
pub fn encode<T: Serialize>(msg: &T) -> String {
    // Serialising these types cannot fail: every map key is a string.
    serde_json::to_string(msg).unwrap_or_else(|_| String::from("{\"type\":\"unencodable\"}"))
}

/// Most frames a writer sends with one flush: what is queued goes out together (under load,
/// several tasks or results share a write and one wake-up of the peer), never unboundedly.
pub const WRITE_BATCH: usize = 64;

/// One queued item, as a writer sends it.
pub enum Outgoing<M> {
    /// A frame; more may follow.
    Frame(M),
    /// The last frame (a close): sent, then the sink is closed.
    Last(M),
}

/// The writers' loop on both sides: send `first` and whatever else is already queued in
/// `rx` (at most [`WRITE_BATCH`] frames), then flush once. `Break` when the writer is done:
/// the sink failed, or the last frame went out.
pub async fn write_queued<T, M, S>(
    sink: &mut S,
    first: T,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    frame: impl Fn(T) -> Outgoing<M>,
) -> std::ops::ControlFlow<()>
where
    S: futures_util::Sink<M> + Unpin,
{
    use futures_util::SinkExt;
    use std::ops::ControlFlow::{Break, Continue};
    let mut item = first;
    for _ in 0..WRITE_BATCH {
        match frame(item) {
            Outgoing::Frame(m) => {
                if sink.feed(m).await.is_err() {
                    return Break(());
                }
            }
            Outgoing::Last(m) => {
                let _ = sink.send(m).await;
                let _ = sink.close().await;
                return Break(());
            }
        }
        match rx.try_recv() {
            Ok(next) => item = next,
            Err(_) => break,
        }
    }
    match sink.flush().await {
        Ok(()) => Continue(()),
        Err(_) => Break(()),
    }
}

/// The `type` of a frame whose type this build does not know, if it is a short, plain
/// name that is safe to log; `None` otherwise.
pub fn unknown_type_name(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct TypeOnly {
        #[serde(rename = "type")]
        t: String,
    }
    let t = serde_json::from_str::<TypeOnly>(text).ok()?.t;
    (t.len() <= 40 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then_some(t)
}

/// A message's `type`, for logs.
pub fn agent_message_type(m: &AgentMessage) -> &'static str {
    match m {
        AgentMessage::Hello(_) => "hello",
        AgentMessage::Accepted { .. } => "accepted",
        AgentMessage::Rejected(_) => "rejected",
        AgentMessage::Result(_) => "result",
        AgentMessage::Draining {} => "draining",
        AgentMessage::Ping {} => "ping",
        AgentMessage::Pong {} => "pong",
        AgentMessage::Unknown => "unknown",
    }
}

/// A message's `type`, for logs.
pub fn manager_message_type(m: &ManagerMessage) -> &'static str {
    match m {
        ManagerMessage::Welcome(_) => "welcome",
        ManagerMessage::Task(_) => "task",
        ManagerMessage::ResultAck { .. } => "result_ack",
        ManagerMessage::Cancel { .. } => "cancel",
        ManagerMessage::Ping {} => "ping",
        ManagerMessage::Pong {} => "pong",
        ManagerMessage::Unknown => "unknown",
    }
}

/// Normalise a selector as Harness does: trimmed and lower-cased. Empty ones are dropped.
pub fn normalize_selector(s: &str) -> Option<String> {
    let t = s.trim().to_lowercase();
    (!t.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_json() -> &'static str {
        r#"{"type":"task","id":"t1","kind":"fetch","attempt":1,"deadlineMs":5000,
            "template":{"scriptString":"secret=${token}","variables":["token"]},
            "variables":{"token":"hunter2-value"},
            "secrets":{"db":{"base64":"AAEC"}},
            "target":{"type":"ssh","host":"h","user":"u",
                      "credentials":{"type":"password","password":"pw-very-secret"}}}"#
    }

    #[test]
    fn task_round_trips_and_debug_redacts() {
        let m: ManagerMessage = decode(task_json()).unwrap();
        let dbg = format!("{m:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("pw-very-secret"), "{dbg}");
        let ManagerMessage::Task(t) = &m else {
            panic!("not a task")
        };
        assert_eq!(t.secrets["db"].secret().expose_secret(), &[0, 1, 2]);
        let again = encode(&m);
        assert!(again.contains("\"hunter2-value\""));
        assert!(again.contains("{\"base64\":\"AAEC\"}"));
        let back: ManagerMessage = decode(&again).unwrap();
        assert!(matches!(back, ManagerMessage::Task(_)));
    }

    #[test]
    fn unknown_types_and_variants_decode_to_unknown() {
        let m: AgentMessage = decode(r#"{"type":"telemetry","x":1}"#).unwrap();
        assert!(matches!(m, AgentMessage::Unknown));
        let m: ManagerMessage = decode(r#"{"type":"reboot"}"#).unwrap();
        assert!(matches!(m, ManagerMessage::Unknown));
        assert_eq!(
            unknown_type_name(r#"{"type":"reboot"}"#).as_deref(),
            Some("reboot")
        );
        assert_eq!(unknown_type_name(r#"{"type":"a b $(x)"}"#), None);
        let t = task_json().replace(r#""type":"ssh""#, r#""type":"winrm""#);
        let ManagerMessage::Task(t) = decode::<ManagerMessage>(&t).unwrap() else {
            panic!()
        };
        assert!(matches!(t.target, Target::Unknown));
        let r: AgentMessage = decode(
            r#"{"type":"result","id":"a","outcome":{"error":{"kind":"brand_new","message":"m"}},"durationMs":1,"attempts":1}"#,
        )
        .unwrap();
        let AgentMessage::Result(r) = r else { panic!() };
        assert_eq!(r.outcome.error_kind(), Some(ErrorKind::Internal));
    }

    #[test]
    fn malformed_errors_never_quote_the_frame() {
        let e = decode::<ManagerMessage>(
            r#"{"type":"task","id":"t","kind":"fetch","attempt":"SECRETISH"}"#,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("SECRETISH"), "{e}");
        let e = decode::<AgentMessage>("{not json SECRETISH").unwrap_err();
        assert!(!e.to_string().contains("SECRETISH"), "{e}");
        let e = decode::<ManagerMessage>(
            r#"{"type":"task","variables":{"x":{"base64":"!!SECRETISH"}}}"#,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("SECRETISH"), "{e}");
    }

    #[test]
    fn secrets_with_control_bytes_travel_as_base64() {
        let w = WireSecret::from_vec(b"a\x01b".to_vec());
        assert_eq!(encode(&w), r#"{"base64":"YQFi"}"#);
        let w = WireSecret::from_vec(b"line1\nline2\t\"q\"".to_vec());
        assert_eq!(encode(&w), r#""line1\nline2\t\"q\"""#);
        let w = WireSecret::from_vec(vec![0xff, 0xfe]);
        let back: WireSecret = decode(&encode(&w)).unwrap();
        assert_eq!(back.secret().expose_secret(), &[0xff, 0xfe]);
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(negotiate(&[1, 2, 7]), Some(1));
        assert_eq!(negotiate(&[2, 3]), None);
        assert_eq!(negotiate(&[]), None);
    }

    #[test]
    fn selectors_are_trimmed_and_lowercased() {
        assert_eq!(
            normalize_selector("  GPU-Pool ").as_deref(),
            Some("gpu-pool")
        );
        assert_eq!(normalize_selector("   "), None);
    }
}
