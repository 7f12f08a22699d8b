//! The dispatch hub: the agent registry, selector routing, the task lifecycle, result
//! deduplication and re-dispatch.
//!
//! It is a library: [`Hub::submit`] takes a [`TaskRequest`] and resolves to exactly one
//! [`TaskOutcome`], or a [`HubError`] (`no_agent`, `timeout`), never later than the task's
//! deadline plus a small slack. The WebSocket layer ([`super::ws`]) feeds it agent
//! sessions and messages; the GraphQL layer will call `submit`.
//!
//! - **Routing** follows Harness: every task selector (trimmed, lower-cased) must be among
//!   the agent's selectors, whose name and hostname count as implicit selectors. Among the
//!   matches the least loaded goes first. An index from selector to agents, intersected
//!   from the rarest selector, keeps routing O(matching agents).
//! - **Capacity.** The hub never sends an agent more tasks than its declared capacity. A
//!   task with no free matching agent waits in a FIFO queue. An agent's `busy` (it knows
//!   better) holds it until one of its tasks ends, and the task goes elsewhere or waits.
//! - **Lost agents.** When an agent's session ends, its tasks wait a grace period for it to
//!   come back: its `hello` names the tasks still running and carries the results it
//!   holds. After the grace period they go to another matching agent, up to
//!   [`HubConfig::max_dispatches`] losses in all, then fail as `no_agent`.
//! - **Dedup.** Every result is acked; only the first for a task id resolves it. A result
//!   from an agent that lost the task to a re-dispatch still counts (fetch is read-only)
//!   and the other dispatch is cancelled.
//!
//! All state lives behind one mutex, held only for bookkeeping (never across an await).

mod events;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::error::{ErrorKind, Kind};
use crate::protocol::{
    self, ManagerMessage, Retry, Target, Task, TaskId, TaskKind, TemplateSpec, WireSecret,
};
use crate::secret::SecretBytes;

/// Where `submit` waits for its task's one outcome.
type OutcomeRx = oneshot::Receiver<Result<TaskOutcome, HubError>>;

/// How many finished task ids are remembered, to tell a late duplicate from a stranger.
const RECENT_DONE: usize = 65_536;

/// Hub timings and limits.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// How often each side pings; a peer silent for three intervals is dropped.
    pub heartbeat: Duration,
    /// How long a dropped agent's tasks wait for it to come back before re-dispatch.
    pub redispatch_grace: Duration,
    /// How many times a task may lose its agent before it fails as `no_agent`.
    pub max_dispatches: u32,
    /// How long a task waits for a matching agent to connect before `no_agent`.
    pub assign_wait: Duration,
    /// Added to a task's deadline before the hub gives up on the agent's own answer, so
    /// that an agent-side `timeout` (with its message) arrives first.
    pub result_slack: Duration,
    /// The largest frame, in bytes; a task that would not fit is refused at submit.
    pub max_frame_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            heartbeat: Duration::from_secs(15),
            redispatch_grace: Duration::from_secs(30),
            max_dispatches: 3,
            assign_wait: Duration::from_secs(10),
            result_slack: Duration::from_secs(2),
            max_frame_bytes: protocol::DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// A task to run on some agent.
#[derive(Debug)]
pub struct TaskRequest {
    /// Validate or fetch.
    pub kind: TaskKind,
    /// Delegate selectors; all must be among the agent's.
    pub selectors: Vec<String>,
    /// The template document.
    pub template: TemplateSpec,
    /// Variable values.
    pub variables: BTreeMap<String, WireSecret>,
    /// Stored-secret values for `${secrets.getValue("id")}`.
    pub secrets: BTreeMap<String, WireSecret>,
    /// Where the agent runs it.
    pub target: Target,
    /// Script attempts (the agent's default when `None`).
    pub retry: Option<Retry>,
    /// Time budget for the whole task, from submission.
    pub deadline: Duration,
}

/// A task's one outcome.
#[derive(Debug)]
pub struct TaskOutcome {
    /// The hub's id for the task.
    pub task_id: TaskId,
    /// The secret, or the agent's error.
    pub result: Result<SecretBytes, TaskFailure>,
    /// Which agent answered.
    pub agent_id: String,
    /// Its name.
    pub agent_name: String,
    /// Wall time on the agent (zero when the agent refused it).
    pub duration: Duration,
    /// Script attempts on the agent.
    pub attempts: u32,
    /// How many times the task was sent to an agent.
    pub dispatches: u32,
}

/// An error the agent reported (or a refusal), with a masked message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct TaskFailure {
    /// The stable kind.
    pub kind: ErrorKind,
    /// The message; values are masked by the agent.
    pub message: String,
}

/// Why no agent answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// No connected agent matches, or the task lost its agents too often.
    #[error("no agent: {0}")]
    NoAgent(String),
    /// The deadline passed before a result arrived.
    #[error("the task did not finish within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The request cannot be sent (for example, larger than a frame).
    #[error("invalid task: {0}")]
    Invalid(String),
    /// The hub is gone.
    #[error("the control plane is shutting down")]
    ShuttingDown,
}

impl Kind for HubError {
    fn kind(&self) -> ErrorKind {
        match self {
            HubError::NoAgent(_) | HubError::ShuttingDown => ErrorKind::NoAgent,
            HubError::Timeout(_) => ErrorKind::Timeout,
            HubError::Invalid(_) => ErrorKind::InvalidInput,
        }
    }
}

/// What a session writer sends: a message, or a close frame.
#[derive(Debug)]
pub enum Outbound {
    /// A protocol message.
    Message(ManagerMessage),
    /// Close the connection with this code and reason.
    Close(u16, &'static str),
}

/// A connected agent, as a snapshot for callers and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSnapshot {
    /// Its persistent id.
    pub agent_id: String,
    /// Its name.
    pub name: String,
    /// Its hostname.
    pub hostname: String,
    /// Its effective selectors (explicit, name and hostname), normalised and sorted.
    pub selectors: Vec<String>,
    /// Its capacity.
    pub capacity: u32,
    /// Tasks the hub has assigned to it and not seen finish.
    pub assigned: usize,
    /// Whether a session is open.
    pub connected: bool,
    /// Whether it said it is draining.
    pub draining: bool,
    /// How many sessions it has opened with this hub.
    pub sessions: u64,
}

/// The handle a session gets when its `hello` is registered.
#[derive(Debug)]
pub struct SessionHandle {
    /// The agent's id.
    pub agent_id: String,
    /// This session's number, for [`Hub::disconnected`].
    pub epoch: u64,
    /// The welcome to send.
    pub welcome: protocol::Welcome,
    /// Messages for this session's writer.
    pub outbound: mpsc::UnboundedReceiver<Outbound>,
    /// The session's own way to queue messages (pings, pongs, close).
    pub sender: mpsc::UnboundedSender<Outbound>,
}

/// The dispatch hub. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: HubConfig,
    state: Mutex<State>,
    /// Bumped whenever the registry or a task changes, for waiters (tests, GraphQL).
    changes: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    agents: HashMap<String, AgentEntry>,
    /// Connected, non-draining agents by effective selector.
    index: HashMap<String, HashSet<String>>,
    /// Connected, non-draining agents (the candidates for a task without selectors).
    available: HashSet<String>,
    tasks: HashMap<TaskId, TaskEntry>,
    queue: VecDeque<TaskId>,
    recent: HashSet<TaskId>,
    recent_order: VecDeque<TaskId>,
    next_epoch: u64,
    next_seq: u64,
}

struct Session {
    epoch: u64,
    tx: mpsc::UnboundedSender<Outbound>,
}

struct AgentEntry {
    agent_id: String,
    name: String,
    hostname: String,
    selectors: HashSet<String>,
    capacity: u32,
    session: Option<Session>,
    assigned: HashSet<TaskId>,
    draining: bool,
    /// Said `busy`: no new task until one of its tasks ends.
    busy_hold: bool,
    /// When it was last given a task (ties in load go to the longest-idle agent).
    last_seq: u64,
    sessions: u64,
    /// The epoch of the disconnect whose grace timer is running.
    lost_epoch: u64,
}

impl AgentEntry {
    fn routable(&self) -> bool {
        self.session.is_some() && !self.draining
    }
    fn has_room(&self) -> bool {
        self.routable() && !self.busy_hold && (self.assigned.len() as u64) < self.capacity as u64
    }
}

enum TaskState {
    Queued,
    Dispatched { agent: String },
    Orphaned { agent: String },
}

struct TaskEntry {
    selectors: Vec<String>,
    task: Task,
    state: TaskState,
    dispatches: u32,
    losses: u32,
    deadline: Instant,
    tx: Option<oneshot::Sender<Result<TaskOutcome, HubError>>>,
    /// Bumped when the task is queued, so a stale no-agent timer does nothing.
    queue_epoch: u64,
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    // getrandom only fails on a broken platform; a time-derived id is still unique enough
    // for a process-local key.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b.copy_from_slice(&t.to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Hub {
    /// A hub with no agents.
    pub fn new(config: HubConfig) -> Hub {
        let (changes, _) = watch::channel(0);
        Hub {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State::default()),
                changes,
            }),
        }
    }

    /// The hub's configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves bookkeeping that is still consistent
        // enough to fail tasks cleanly; keep serving.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn changed(&self) {
        self.inner.changes.send_modify(|n| *n += 1);
    }

    /// A receiver that changes whenever an agent or task does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Connected and recently disconnected agents.
    pub fn agents(&self) -> Vec<AgentSnapshot> {
        let st = self.lock();
        let mut v: Vec<AgentSnapshot> = st
            .agents
            .values()
            .map(|a| {
                let mut selectors: Vec<String> = a.selectors.iter().cloned().collect();
                selectors.sort();
                AgentSnapshot {
                    agent_id: a.agent_id.clone(),
                    name: a.name.clone(),
                    hostname: a.hostname.clone(),
                    selectors,
                    capacity: a.capacity,
                    assigned: a.assigned.len(),
                    connected: a.session.is_some(),
                    draining: a.draining,
                    sessions: a.sessions,
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.agent_id.cmp(&b.agent_id)));
        v
    }

    /// Tasks submitted and not yet resolved.
    pub fn pending_tasks(&self) -> usize {
        self.lock().tasks.len()
    }

    /// Wait until `cond` holds for the agent list (for tests and start-up checks).
    pub async fn wait_for(&self, mut cond: impl FnMut(&[AgentSnapshot]) -> bool) {
        let mut rx = self.subscribe();
        loop {
            if cond(&self.agents()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Run a task on a matching agent: exactly one outcome, or `no_agent`, or `timeout`.
    ///
    /// Dropping the future cancels the task (the agent is told to stop it).
    pub async fn submit(&self, req: TaskRequest) -> Result<TaskOutcome, HubError> {
        let budget = req.deadline;
        let (id, rx, deadline) = self.enqueue(req)?;
        let mut guard = CancelOnDrop {
            hub: self,
            id: Some(id.clone()),
        };
        let hard = deadline + self.inner.config.result_slack;
        let mut rx = rx;
        let r = tokio::select! {
            r = &mut rx => r.unwrap_or(Err(HubError::ShuttingDown)),
            _ = tokio::time::sleep_until(hard) => {
                // Decide under the lock: whoever takes the sender resolves the task.
                let timed_out = {
                    let mut st = self.lock();
                    let took = st.tasks.get_mut(&id).and_then(|t| t.tx.take()).is_some();
                    if took {
                        tracing::info!(task = %id, "task timed out in the hub");
                        self.forget(&mut st, &id, true);
                    }
                    took
                };
                if timed_out {
                    Err(HubError::Timeout(budget))
                } else {
                    // A result (or a failure) won the race and is already in the channel.
                    (&mut rx).await.unwrap_or(Err(HubError::ShuttingDown))
                }
            }
        };
        guard.id = None;
        self.changed();
        r
    }

    fn enqueue(&self, req: TaskRequest) -> Result<(TaskId, OutcomeRx, Instant), HubError> {
        let id = random_id();
        let deadline = Instant::now() + req.deadline;
        let selectors: Vec<String> = req
            .selectors
            .iter()
            .filter_map(|s| protocol::normalize_selector(s))
            .collect();
        let task = Task {
            id: id.clone(),
            kind: req.kind,
            attempt: 0,
            deadline_ms: req.deadline.as_millis().min(u64::MAX as u128) as u64,
            template: req.template,
            variables: req.variables,
            secrets: req.secrets,
            target: req.target,
            retry: req.retry,
        };
        // Measure the frame once, so a task that cannot be sent fails now, not on the wire.
        let len = protocol::encode(&ManagerMessage::Task(Box::new(task.clone()))).len();
        if len > self.inner.config.max_frame_bytes {
            return Err(HubError::Invalid(format!(
                "the task's frame would be {len} bytes, over the {}-byte limit",
                self.inner.config.max_frame_bytes
            )));
        }
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        st.tasks.insert(
            id.clone(),
            TaskEntry {
                selectors,
                task,
                state: TaskState::Queued,
                dispatches: 0,
                losses: 0,
                deadline,
                tx: Some(tx),
                queue_epoch: 0,
            },
        );
        tracing::debug!(task = %id, "task submitted");
        self.place(&mut st, &id);
        drop(st);
        self.changed();
        Ok((id, rx, deadline))
    }

    /// Agents matching `selectors` (normalised): the rarest selector's set, filtered.
    fn matching<'a>(st: &'a State, selectors: &[String]) -> Vec<&'a AgentEntry> {
        if selectors.is_empty() {
            return st
                .available
                .iter()
                .filter_map(|id| st.agents.get(id))
                .collect();
        }
        let mut rarest: Option<&HashSet<String>> = None;
        for s in selectors {
            match st.index.get(s) {
                None => return Vec::new(),
                Some(set) => {
                    if rarest.map_or(true, |r| set.len() < r.len()) {
                        rarest = Some(set);
                    }
                }
            }
        }
        rarest
            .into_iter()
            .flatten()
            .filter_map(|id| st.agents.get(id))
            .filter(|a| selectors.iter().all(|s| a.selectors.contains(s)))
            .collect()
    }

    /// Send the task to the least-loaded matching agent with room, or queue it.
    fn place(&self, st: &mut State, id: &TaskId) {
        let Some(t) = st.tasks.get(id) else { return };
        let matching = Self::matching(st, &t.selectors);
        let best = matching
            .iter()
            .filter(|a| a.has_room())
            .min_by(|a, b| {
                // Load as a fraction of capacity, compared without division.
                let la = a.assigned.len() as u64 * b.capacity.max(1) as u64;
                let lb = b.assigned.len() as u64 * a.capacity.max(1) as u64;
                la.cmp(&lb).then(a.last_seq.cmp(&b.last_seq))
            })
            .map(|a| a.agent_id.clone());
        let any_match = !matching.is_empty();
        match best {
            Some(agent) => self.dispatch(st, id, &agent),
            None => {
                let epoch = {
                    st.next_epoch += 1;
                    st.next_epoch
                };
                let t = st.tasks.get_mut(id).expect("task present");
                t.state = TaskState::Queued;
                t.queue_epoch = epoch;
                if !st.queue.contains(id) {
                    st.queue.push_back(id.clone());
                }
                tracing::debug!(task = %id, matching = any_match, "task queued");
                if !any_match {
                    self.no_agent_timer(id.clone(), epoch);
                }
            }
        }
    }

    fn dispatch(&self, st: &mut State, id: &TaskId, agent_id: &str) {
        st.next_seq += 1;
        let seq = st.next_seq;
        let t = st.tasks.get_mut(id).expect("task present");
        let Some(a) = st.agents.get_mut(agent_id) else {
            return;
        };
        let Some(session) = &a.session else { return };
        t.dispatches += 1;
        let mut task = t.task.clone();
        task.attempt = t.dispatches;
        let left = t.deadline.saturating_duration_since(Instant::now());
        task.deadline_ms = left.as_millis().max(1).min(u64::MAX as u128) as u64;
        if session
            .tx
            .send(Outbound::Message(ManagerMessage::Task(Box::new(task))))
            .is_err()
        {
            // The session's writer is gone; its disconnect will follow. Treat the task as
            // dispatched to it, so the disconnect path handles it once.
            tracing::debug!(task = %id, agent = %agent_id, "session closing while dispatching");
        }
        t.state = TaskState::Dispatched {
            agent: agent_id.to_string(),
        };
        a.assigned.insert(id.clone());
        a.last_seq = seq;
        st.queue.retain(|q| q != id);
        tracing::debug!(task = %id, agent = %a.name, attempt = t.dispatches, "task dispatched");
    }

    /// Try queued tasks, oldest first, now that agents have room.
    fn pump(&self, st: &mut State) {
        let queued: Vec<TaskId> = st.queue.iter().cloned().collect();
        for id in queued {
            if !st.agents.values().any(AgentEntry::has_room) {
                break;
            }
            let Some(t) = st.tasks.get(&id) else {
                continue;
            };
            let fits = Self::matching(st, &t.selectors)
                .iter()
                .any(|a| a.has_room());
            if fits {
                self.place(st, &id);
            }
        }
    }

    fn no_agent_timer(&self, id: TaskId, epoch: u64) {
        let hub = self.clone();
        let wait = self.inner.config.assign_wait;
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let mut st = hub.lock();
            let Some(t) = st.tasks.get(&id) else { return };
            if t.queue_epoch != epoch || !matches!(t.state, TaskState::Queued) {
                return;
            }
            if !Self::matching(&st, &t.selectors).is_empty() {
                // Agents match but are full: wait for room until the deadline.
                return;
            }
            let msg = if t.selectors.is_empty() {
                "no agent is connected".to_string()
            } else {
                format!(
                    "no connected agent has every selector of [{}]",
                    t.selectors.join(", ")
                )
            };
            hub.fail(&mut st, &id, HubError::NoAgent(msg));
            drop(st);
            hub.changed();
        });
    }

    /// Resolve a task with an error and forget it.
    fn fail(&self, st: &mut State, id: &TaskId, e: HubError) {
        if let Some(tx) = st.tasks.get_mut(id).and_then(|t| t.tx.take()) {
            tracing::info!(task = %id, kind = %e.kind(), "task failed: {e}");
            let _ = tx.send(Err(e));
        }
        self.forget(st, id, true);
    }

    /// Remove a task; with `cancel`, tell its agent to stop it.
    fn forget(&self, st: &mut State, id: &TaskId, cancel: bool) {
        let Some(t) = st.tasks.remove(id) else { return };
        st.queue.retain(|q| q != id);
        if let TaskState::Dispatched { agent } | TaskState::Orphaned { agent } = &t.state {
            if let Some(a) = st.agents.get_mut(agent) {
                a.assigned.remove(id);
                if cancel {
                    if let Some(s) = &a.session {
                        let _ =
                            s.tx.send(Outbound::Message(ManagerMessage::Cancel { id: id.clone() }));
                    }
                }
            }
        }
        st.recent.insert(id.clone());
        st.recent_order.push_back(id.clone());
        while st.recent_order.len() > RECENT_DONE {
            if let Some(old) = st.recent_order.pop_front() {
                st.recent.remove(&old);
            }
        }
        self.drop_idle_agents(st);
    }

    /// Forget disconnected agents that hold nothing.
    fn drop_idle_agents(&self, st: &mut State) {
        st.agents
            .retain(|_, a| a.session.is_some() || !a.assigned.is_empty());
    }

    fn index_add(st: &mut State, agent_id: &str) {
        let Some(a) = st.agents.get(agent_id) else {
            return;
        };
        if !a.routable() {
            return;
        }
        for s in &a.selectors {
            st.index
                .entry(s.clone())
                .or_default()
                .insert(agent_id.to_string());
        }
        st.available.insert(agent_id.to_string());
    }

    fn index_remove(st: &mut State, agent_id: &str) {
        let Some(a) = st.agents.get(agent_id) else {
            return;
        };
        for s in &a.selectors {
            if let Some(set) = st.index.get_mut(s) {
                set.remove(agent_id);
                if set.is_empty() {
                    st.index.remove(s);
                }
            }
        }
        st.available.remove(agent_id);
    }
}

/// Cancels the task if `submit`'s future is dropped before it resolves.
struct CancelOnDrop<'a> {
    hub: &'a Hub,
    id: Option<TaskId>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let mut st = self.hub.lock();
            if st.tasks.contains_key(&id) {
                tracing::debug!(task = %id, "caller went away; cancelling the task");
                self.hub.forget(&mut st, &id, true);
            }
        }
    }
}
