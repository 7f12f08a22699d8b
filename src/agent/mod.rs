//! The long-running agent: a WebSocket client of the manager that takes tasks, runs them
//! through a [`TaskRunner`], and never loses a result.
//!
//! [`run`] takes its configuration, a runner and a [`Shutdown`] (mini-redis's shape), and
//! returns when it has drained or been stopped. One loop owns the connection and the task
//! table ([`outbox`]); tasks run as their own tokio tasks and hand their results back on a
//! channel, so a slow script never delays heartbeats or other tasks.
//!
//! - **Sessions.** Connect ([`connection`]), send `hello` with the tasks still running and
//!   the results not yet acked, wait for `welcome`, then serve. A writer task owns the
//!   socket's sending half, so a stalled manager never blocks the loop.
//! - **Reconnect.** Exponential backoff with full jitter ([`backoff`]), reset after a
//!   healthy session.
//! - **Tasks.** A duplicate task frame never starts a second run; a task beyond the
//!   capacity is `busy`; a task outside the [`policy`] is `policy` and never runs.
//! - **Shutdown.** `drain`: send `draining`, refuse new tasks, let running ones finish
//!   within their deadlines, deliver their results, return. `abort`: cancel running tasks
//!   (the executors kill their process groups), send what can be sent quickly, return.
//!
//! The agent never imports the manager.

pub mod backoff;
pub mod connection;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod policy;
pub mod runner;

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::error::ErrorKind;
use crate::protocol::{
    self, AgentMessage, Hello, ManagerMessage, Outgoing, RejectReason, Rejected, ResultOutcome,
    SshCredentials, Target, Task, TaskKind, TaskResult,
};
use backoff::{Backoff, BackoffConfig};
use connection::{Endpoint, Socket, TlsFiles};
use metrics::{ConnState, Metrics};
use outbox::{Outbox, Seen};
use policy::Policy;
pub use runner::{ExecRunner, RunResult, TaskRunner};

/// Default concurrency cap.
pub const DEFAULT_CAPACITY: u32 = 32;

/// Everything the agent needs to run.
#[derive(Debug)]
pub struct AgentConfig {
    /// The manager's agent endpoint.
    pub endpoint: Endpoint,
    /// TLS files for `wss://`.
    pub tls: TlsFiles,
    /// The bearer token.
    pub token: SecretString,
    /// Persistent agent id.
    pub agent_id: String,
    /// Display name (an implicit selector).
    pub name: String,
    /// Host name (an implicit selector).
    pub hostname: String,
    /// Selectors.
    pub selectors: Vec<String>,
    /// Concurrency cap.
    pub capacity: u32,
    /// Local policy.
    pub policy: Policy,
    /// Largest frame sent or accepted.
    pub max_frame_bytes: usize,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// Bound on connecting plus the `hello`/`welcome` exchange.
    pub connect_timeout: Duration,
    /// A session that lasted this long resets the backoff.
    pub healthy_after: Duration,
    /// Bound on a drain: running tasks end within their own deadlines, which the policy
    /// caps; this also bounds waiting for the manager to ack their results.
    pub drain_timeout: Duration,
    /// Counters, shared with the metrics listener.
    pub metrics: Arc<Metrics>,
}

impl AgentConfig {
    /// A configuration with defaults for everything but the essentials.
    pub fn new(endpoint: Endpoint, token: SecretString, agent_id: String, name: String) -> Self {
        let policy = Policy::default();
        AgentConfig {
            endpoint,
            tls: TlsFiles::default(),
            token,
            agent_id,
            hostname: hostname(),
            name,
            selectors: Vec::new(),
            capacity: DEFAULT_CAPACITY,
            drain_timeout: policy.max_timeout + Duration::from_secs(30),
            policy,
            max_frame_bytes: protocol::DEFAULT_MAX_FRAME_BYTES,
            backoff: BackoffConfig::default(),
            connect_timeout: Duration::from_secs(10),
            healthy_after: Duration::from_secs(10),
            metrics: Metrics::new(),
        }
    }
}

/// This host's name, from the kernel.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// How the agent is told to stop.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Drain: take nothing new, finish and deliver what is running, then return.
    pub drain: CancellationToken,
    /// Abort: cancel running tasks, send what can be sent quickly, then return.
    pub abort: CancellationToken,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Results not delivered (not acked) when the agent stopped.
    pub undelivered: usize,
    /// Whether the agent was aborted rather than drained.
    pub aborted: bool,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// TLS configuration.
    #[error(transparent)]
    Setup(#[from] connection::SetupError),
}

/// What the writer task sends.
enum Out {
    Text(String),
    Close(u16, &'static str),
}

/// Why a session ended.
#[derive(Debug)]
enum Ended {
    /// Drained: everything delivered.
    Drained,
    /// Aborted.
    Aborted,
    /// The connection broke or the manager closed it; reconnect.
    Lost,
}

struct Core {
    cfg: AgentConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Arc<SecretString>,
    runner: Arc<dyn TaskRunner>,
    outbox: Outbox,
    done_tx: mpsc::UnboundedSender<TaskResult>,
    done_rx: mpsc::UnboundedReceiver<TaskResult>,
    shutdown: Shutdown,
    draining: bool,
    aborting: bool,
    /// When a drain or abort gives up on what is left.
    stop_by: Option<Instant>,
}

/// Run the agent until it has drained or been aborted.
pub async fn run(
    config: AgentConfig,
    runner: Arc<dyn TaskRunner>,
    shutdown: Shutdown,
) -> Result<Summary, AgentError> {
    let tls = if config.endpoint.tls {
        Some(connection::client_config(&config.tls)?)
    } else {
        None
    };
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let token = Arc::new(config.token.clone());
    let mut core = Core {
        cfg: config,
        token,
        tls,
        runner,
        outbox: Outbox::new(),
        done_tx,
        done_rx,
        shutdown,
        draining: false,
        aborting: false,
        stop_by: None,
    };
    let watchdog = notify::watchdog_interval().map(|every| {
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                t.tick().await;
                notify::notify("WATCHDOG=1");
            }
        })
    });
    notify::notify("READY=1");
    tracing::info!(
        agent = %core.cfg.name,
        agent_id = %core.cfg.agent_id,
        manager = %core.cfg.endpoint.url,
        capacity = core.cfg.capacity,
        "agent started"
    );
    let summary = core.main_loop().await;
    if let Some(w) = watchdog {
        w.abort();
    }
    Ok(summary)
}

fn result_label(r: &TaskResult) -> &'static str {
    r.outcome.error_kind().map(|k| k.as_str()).unwrap_or("ok")
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

async fn writer(mut sink: SplitSink<Socket, Message>, mut rx: mpsc::UnboundedReceiver<Out>) {
    while let Some(o) = rx.recv().await {
        let sent = protocol::write_queued(&mut sink, o, &mut rx, |o| match o {
            Out::Text(t) => Outgoing::Frame(Message::Text(t.into())),
            Out::Close(code, reason) => Outgoing::Last(close_frame(code, reason)),
        });
        if sent.await.is_break() {
            return;
        }
    }
}

impl Core {
    fn metrics(&self) -> &Metrics {
        &self.cfg.metrics
    }

    fn update_load(&self) {
        self.metrics()
            .set_load(self.outbox.running(), self.outbox.unacked());
    }

    /// A task finished: hold its result until acked.
    fn absorb(&mut self, r: TaskResult) {
        self.metrics()
            .task_done(result_label(&r), Some(Duration::from_millis(r.duration_ms)));
        tracing::info!(task = %r.id, outcome = result_label(&r), duration_ms = r.duration_ms, attempts = r.attempts, "task finished");
        self.outbox.finish(r);
        self.update_load();
    }

    fn begin_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.stop_by = Some(Instant::now() + self.cfg.drain_timeout);
        self.metrics().set_draining();
        notify::notify("STOPPING=1");
        tracing::info!(
            running = self.outbox.running(),
            unacked = self.outbox.unacked(),
            "draining: no new tasks; finishing and delivering the running ones"
        );
    }

    fn begin_abort(&mut self) {
        if self.aborting {
            return;
        }
        self.aborting = true;
        self.draining = true;
        // Cancelled tasks end at once (their process groups are killed); their results
        // get a moment to reach the manager.
        self.stop_by = Some(Instant::now() + Duration::from_secs(3));
        self.metrics().set_draining();
        notify::notify("STOPPING=1");
        tracing::warn!(
            running = self.outbox.running(),
            "stopping now: cancelling running tasks"
        );
        self.outbox.cancel_all();
    }

    fn finished(&self) -> bool {
        self.draining && self.outbox.is_idle()
    }

    fn out_of_time(&self) -> bool {
        self.stop_by.is_some_and(|t| Instant::now() >= t)
    }

    fn summary(&self) -> Summary {
        let undelivered = self.outbox.unacked() + self.outbox.running();
        if undelivered > 0 {
            tracing::error!(
                undelivered,
                "stopped with results the manager never acknowledged"
            );
        }
        self.metrics().set_state(ConnState::Stopping);
        Summary {
            undelivered,
            aborted: self.aborting,
        }
    }

    async fn main_loop(&mut self) -> Summary {
        let mut backoff = Backoff::new(self.cfg.backoff);
        let mut attempts = 0u64;
        loop {
            if self.finished() {
                return self.summary();
            }
            if self.out_of_time() {
                self.outbox.cancel_all();
                return self.summary();
            }
            self.metrics().set_state(ConnState::Connecting);
            if attempts > 0 {
                self.metrics().reconnected();
            }
            attempts += 1;
            let sock = {
                let (endpoint, tls, token) = (
                    self.cfg.endpoint.clone(),
                    self.tls.clone(),
                    self.token.clone(),
                );
                let (max, timeout) = (self.cfg.max_frame_bytes, self.cfg.connect_timeout);
                let fut = async move {
                    connection::connect(&endpoint, tls.as_ref(), &token, max, timeout).await
                };
                tokio::pin!(fut);
                let far = Instant::now() + Duration::from_secs(86_400);
                loop {
                    tokio::select! {
                        r = &mut fut => break Some(r),
                        Some(r) = self.done_rx.recv() => self.absorb(r),
                        _ = self.shutdown.drain.cancelled(), if !self.draining => self.begin_drain(),
                        _ = self.shutdown.abort.cancelled(), if !self.aborting => self.begin_abort(),
                        // A drain or stop that ran out of time ends the attempt too.
                        _ = tokio::time::sleep_until(self.stop_by.unwrap_or(far)), if self.stop_by.is_some() => break None,
                    }
                    if self.finished() {
                        break None;
                    }
                }
            };
            let started = Instant::now();
            match sock {
                None => continue,
                Some(Ok(sock)) => {
                    let (ended, welcomed) = self.session(sock).await;
                    match ended {
                        Ended::Drained | Ended::Aborted => return self.summary(),
                        Ended::Lost => {}
                    }
                    if welcomed && started.elapsed() >= self.cfg.healthy_after {
                        backoff.reset();
                    }
                }
                Some(Err(e)) => {
                    if matches!(e, connection::ConnectError::Status(401 | 403)) {
                        tracing::error!(
                            "the manager refused the agent's token; retrying with backoff"
                        );
                    } else {
                        tracing::warn!("cannot reach the manager: {e}");
                    }
                }
            }
            if self.aborting || (self.draining && self.outbox.is_idle()) {
                return self.summary();
            }
            let delay = backoff.next_delay();
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "reconnecting after a pause"
            );
            self.metrics().set_state(ConnState::Backoff);
            let until = Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    Some(r) = self.done_rx.recv() => self.absorb(r),
                    _ = self.shutdown.drain.cancelled(), if !self.draining => self.begin_drain(),
                    _ = self.shutdown.abort.cancelled(), if !self.aborting => self.begin_abort(),
                    _ = tokio::time::sleep_until(self.stop_by.unwrap_or(until)), if self.stop_by.is_some() => break,
                }
                if self.finished() || (self.aborting && self.outbox.running() == 0) {
                    return self.summary();
                }
            }
        }
    }

    fn hello(&self) -> (Hello, Vec<String>) {
        // Results that fit in the hello frame go in it; the rest follow as `result`.
        let budget = self.cfg.max_frame_bytes.saturating_sub(64 * 1024);
        let mut used = 0usize;
        let mut results = Vec::new();
        let mut rest = Vec::new();
        for r in self.outbox.held_results() {
            let len = zeroize::Zeroizing::new(protocol::encode(r)).len();
            if used + len <= budget {
                used += len;
                results.push(r.clone());
            } else {
                rest.push(r.id.clone());
            }
        }
        (
            Hello {
                protocol_versions: protocol::SUPPORTED_VERSIONS.to_vec(),
                agent_id: self.cfg.agent_id.clone(),
                name: self.cfg.name.clone(),
                hostname: self.cfg.hostname.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                selectors: self.cfg.selectors.clone(),
                capacity: self.cfg.capacity,
                in_flight: self.outbox.running_ids(),
                results,
            },
            rest,
        )
    }

    /// Wait for `welcome`, absorbing results meanwhile. `None`: the session failed.
    async fn await_welcome(
        &mut self,
        stream: &mut SplitStream<Socket>,
    ) -> Option<protocol::Welcome> {
        let until = Instant::now() + self.cfg.connect_timeout;
        loop {
            tokio::select! {
                m = stream.next() => match m {
                    None => return None,
                    Some(Err(e)) => {
                        tracing::warn!("the manager dropped the connection before welcome: {e}");
                        return None;
                    }
                    Some(Ok(Message::Text(t))) => match protocol::decode::<ManagerMessage>(t.as_str()) {
                        Ok(ManagerMessage::Welcome(w)) => return Some(w),
                        Ok(other) => tracing::warn!(r#type = protocol::manager_message_type(&other), "message before welcome ignored"),
                        Err(e) => tracing::warn!(len = t.len(), "{e}; ignored"),
                    },
                    Some(Ok(Message::Close(f))) => {
                        let (code, reason) = f.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                        tracing::warn!(code, "the manager closed the connection before welcome: {reason}");
                        return None;
                    }
                    Some(Ok(_)) => {}
                },
                Some(r) = self.done_rx.recv() => self.absorb(r),
                _ = tokio::time::sleep_until(until) => {
                    tracing::warn!("no welcome from the manager in time");
                    return None;
                }
                _ = self.shutdown.abort.cancelled(), if !self.aborting => self.begin_abort(),
            }
        }
    }

    async fn session(&mut self, sock: Socket) -> (Ended, bool) {
        let (mut sink, mut stream) = sock.split();
        let (hello, rest) = self.hello();
        let hello = zeroize::Zeroizing::new(protocol::encode(&AgentMessage::Hello(hello)));
        let sent = tokio::time::timeout(
            self.cfg.connect_timeout,
            sink.send(Message::Text(hello.as_str().into())),
        )
        .await;
        drop(hello);
        if !matches!(sent, Ok(Ok(()))) {
            tracing::warn!("could not send hello");
            return (Ended::Lost, false);
        }
        let Some(welcome) = self.await_welcome(&mut stream).await else {
            return (Ended::Lost, false);
        };
        tracing::info!(
            session = %welcome.session_id,
            version = welcome.protocol_version,
            heartbeat_ms = welcome.heartbeat_ms,
            "connected to the manager"
        );
        self.metrics().set_state(ConnState::Connected);
        let (wtx, wrx) = mpsc::unbounded_channel();
        let mut writer = tokio::spawn(writer(sink, wrx));
        for id in rest {
            if let Some(r) = self.outbox.held(&id) {
                let _ = wtx.send(Out::Text(protocol::encode(&AgentMessage::Result(
                    r.clone(),
                ))));
            }
        }
        if self.draining {
            let _ = wtx.send(Out::Text(protocol::encode(&AgentMessage::Draining {})));
        }
        let ended = self.serve(&mut stream, &wtx, welcome.heartbeat_ms).await;
        drop(wtx);
        // Let the writer flush (a close frame, the last results), but never wait long.
        if tokio::time::timeout(Duration::from_secs(1), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
        if matches!(ended, Ended::Lost) {
            self.metrics().set_state(ConnState::Connecting);
        }
        (ended, true)
    }

    async fn serve(
        &mut self,
        stream: &mut SplitStream<Socket>,
        wtx: &mpsc::UnboundedSender<Out>,
        heartbeat_ms: u64,
    ) -> Ended {
        let heartbeat = Duration::from_millis(heartbeat_ms.max(10));
        let mut tick = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_seen = Instant::now();
        let send = |m: &AgentMessage| {
            let _ = wtx.send(Out::Text(protocol::encode(m)));
        };
        loop {
            if self.finished() {
                tracing::info!("drained: every result delivered");
                let _ = wtx.send(Out::Close(1000, "drained"));
                return if self.aborting {
                    Ended::Aborted
                } else {
                    Ended::Drained
                };
            }
            if self.out_of_time() {
                tracing::warn!("gave up waiting for running tasks and acks");
                self.outbox.cancel_all();
                let _ = wtx.send(Out::Close(1001, "stopping"));
                return if self.aborting {
                    Ended::Aborted
                } else {
                    Ended::Drained
                };
            }
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                _ = self.shutdown.abort.cancelled(), if !self.aborting => {
                    let was_draining = self.draining;
                    self.begin_abort();
                    if !was_draining {
                        send(&AgentMessage::Draining {});
                    }
                }
                _ = self.shutdown.drain.cancelled(), if !self.draining => {
                    self.begin_drain();
                    send(&AgentMessage::Draining {});
                }
                _ = tokio::time::sleep_until(self.stop_by.unwrap_or(far)), if self.stop_by.is_some() => {}
                Some(r) = self.done_rx.recv() => {
                    let frame = protocol::encode(&AgentMessage::Result(r.clone()));
                    self.absorb(r);
                    let _ = wtx.send(Out::Text(frame));
                }
                _ = tick.tick() => {
                    if last_seen.elapsed() >= heartbeat * 3 {
                        tracing::warn!("the manager was silent for three heartbeat intervals; reconnecting");
                        let _ = wtx.send(Out::Close(protocol::CLOSE_SILENT, "silent for three heartbeat intervals"));
                        return Ended::Lost;
                    }
                    send(&AgentMessage::Ping {});
                }
                m = stream.next() => {
                    let m = match m {
                        None => {
                            tracing::warn!("the connection to the manager ended");
                            return Ended::Lost;
                        }
                        Some(Err(e)) => {
                            if matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)) {
                                tracing::warn!("a frame over the {}-byte limit was refused", self.cfg.max_frame_bytes);
                                let _ = wtx.send(Out::Close(protocol::CLOSE_TOO_BIG, "frame too large"));
                            } else {
                                tracing::warn!("the connection to the manager failed: {e}");
                            }
                            return Ended::Lost;
                        }
                        Some(Ok(m)) => m,
                    };
                    last_seen = Instant::now();
                    match m {
                        Message::Text(t) => self.on_text(t.as_str(), wtx),
                        Message::Binary(b) => tracing::warn!(len = b.len(), "binary frame ignored (the protocol uses text)"),
                        Message::Close(f) => {
                            let (code, reason) = f.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                            tracing::warn!(code, "the manager closed the session: {reason}");
                            return Ended::Lost;
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn on_text(&mut self, text: &str, wtx: &mpsc::UnboundedSender<Out>) {
        let send = |m: &AgentMessage| {
            let _ = wtx.send(Out::Text(protocol::encode(m)));
        };
        let m = match protocol::decode::<ManagerMessage>(text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(len = text.len(), "{e}; ignored");
                return;
            }
        };
        tracing::debug!(
            r#type = protocol::manager_message_type(&m),
            "frame received"
        );
        match m {
            ManagerMessage::Task(task) => self.on_task(task, wtx),
            ManagerMessage::ResultAck { id } => {
                if self.outbox.ack(&id) {
                    tracing::debug!(task = %id, "result acknowledged");
                }
                self.update_load();
            }
            ManagerMessage::Cancel { id } => {
                if self.outbox.cancel(&id) {
                    tracing::info!(task = %id, "task cancelled by the manager");
                }
            }
            ManagerMessage::Ping {} => send(&AgentMessage::Pong {}),
            ManagerMessage::Pong {} => {}
            ManagerMessage::Welcome(_) => tracing::warn!("welcome in an open session ignored"),
            ManagerMessage::Unknown => {
                let t = protocol::unknown_type_name(text);
                tracing::warn!(
                    r#type = t.as_deref().unwrap_or("?"),
                    "unknown message type ignored"
                );
            }
        }
    }

    fn reject(
        &self,
        wtx: &mpsc::UnboundedSender<Out>,
        id: String,
        reason: RejectReason,
        message: String,
    ) {
        let label = match reason {
            RejectReason::Busy => "rejected_busy",
            RejectReason::Policy => "rejected_policy",
            RejectReason::Draining => "rejected_draining",
            _ => "rejected_unsupported",
        };
        self.metrics().task_done(label, None);
        let m = AgentMessage::Rejected(Rejected {
            id,
            reason,
            message,
        });
        let _ = wtx.send(Out::Text(protocol::encode(&m)));
    }

    fn on_task(&mut self, task: Box<Task>, wtx: &mpsc::UnboundedSender<Out>) {
        let id = task.id.clone();
        match self.outbox.seen(&id) {
            Seen::New => {}
            Seen::Running => {
                tracing::info!(task = %id, "duplicate task frame: already running, not started again");
                let _ = wtx.send(Out::Text(protocol::encode(&AgentMessage::Accepted { id })));
                return;
            }
            Seen::Held => {
                tracing::info!(task = %id, "duplicate task frame: already finished; result sent again");
                if let Some(r) = self.outbox.held(&id) {
                    let _ = wtx.send(Out::Text(protocol::encode(&AgentMessage::Result(
                        r.clone(),
                    ))));
                }
                return;
            }
            Seen::Acked => {
                tracing::info!(task = %id, "duplicate task frame for a delivered task ignored");
                return;
            }
        }
        if self.draining {
            return self.reject(
                wtx,
                id,
                RejectReason::Draining,
                "the agent is draining".into(),
            );
        }
        let unsupported = match (&task.kind, &task.target) {
            (TaskKind::Unknown, _) => Some("unknown task kind"),
            (_, Target::Unknown) => Some("unknown target type"),
            (_, Target::Ssh(s)) if matches!(s.credentials, SshCredentials::Unknown) => {
                Some("unknown SSH credential type")
            }
            _ => None,
        };
        if let Some(why) = unsupported {
            return self.reject(wtx, id, RejectReason::Unsupported, why.into());
        }
        if let Err(why) = self.cfg.policy.check(&task) {
            tracing::warn!(task = %id, "task refused by policy: {why}");
            return self.reject(wtx, id, RejectReason::Policy, why);
        }
        if self.outbox.running() >= self.cfg.capacity as usize {
            tracing::debug!(task = %id, "at capacity; task refused as busy");
            return self.reject(
                wtx,
                id,
                RejectReason::Busy,
                format!("the agent runs {} tasks at most", self.cfg.capacity),
            );
        }
        let cancel = CancellationToken::new();
        self.outbox.start(id.clone(), cancel.clone());
        self.update_load();
        tracing::info!(task = %id, attempt = task.attempt, kind = ?task.kind, "task accepted");
        let _ = wtx.send(Out::Text(protocol::encode(&AgentMessage::Accepted {
            id: id.clone(),
        })));
        let runner = self.runner.clone();
        let done = self.done_tx.clone();
        let max = self.cfg.max_frame_bytes;
        tokio::spawn(async move {
            let r = runner.run(*task, cancel).await;
            let mut result = TaskResult {
                id,
                outcome: r.outcome,
                duration_ms: r.duration.as_millis().min(u64::MAX as u128) as u64,
                attempts: r.attempts,
            };
            // A result that cannot travel would be resent forever: replace it now.
            let len = zeroize::Zeroizing::new(protocol::encode(&result)).len();
            if len + 64 * 1024 > max {
                result.outcome = ResultOutcome::error(
                    ErrorKind::SecretTooLarge,
                    format!("the result would be {len} bytes on the wire, over the {max}-byte frame limit"),
                );
            }
            let _ = done.send(result);
        });
    }
}
