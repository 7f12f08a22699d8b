//! Session events: an agent's `hello`, its messages, and the end of its session. Each one
//! updates the registry and the tasks under the hub's lock, then wakes waiters.

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{
    random_id, AgentEntry, Hub, HubError, Outbound, Session, SessionHandle, State, TaskFailure,
    TaskOutcome, TaskState,
};
use crate::error::ErrorKind;
use crate::protocol::{
    self, Hello, ManagerMessage, RejectReason, Rejected, ResultOutcome, TaskId, TaskResult,
};

impl Hub {
    /// Register a session from its `hello` (the version is already negotiated). Processes
    /// the results and in-flight ids it carries.
    pub fn connected(&self, hello: Hello, protocol_version: u32) -> SessionHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        st.next_epoch += 1;
        let epoch = st.next_epoch;
        let agent_id = hello.agent_id.clone();
        let mut selectors: HashSet<String> = hello
            .selectors
            .iter()
            .filter_map(|s| protocol::normalize_selector(s))
            .collect();
        selectors.extend(protocol::normalize_selector(&hello.name));
        selectors.extend(protocol::normalize_selector(&hello.hostname));

        Self::index_remove(&mut st, &agent_id);
        let entry = st
            .agents
            .entry(agent_id.clone())
            .or_insert_with(|| AgentEntry {
                agent_id: agent_id.clone(),
                name: String::new(),
                hostname: String::new(),
                selectors: HashSet::new(),
                capacity: 0,
                session: None,
                assigned: HashSet::new(),
                draining: false,
                busy_hold: false,
                last_seq: 0,
                sessions: 0,
                lost_epoch: 0,
            });
        if let Some(old) = entry.session.take() {
            tracing::info!(agent = %hello.name, "a new session replaces the agent's open one");
            let _ = old.tx.send(Outbound::Close(
                protocol::CLOSE_REPLACED,
                "replaced by a new session",
            ));
        }
        entry.name = hello.name.clone();
        entry.hostname = hello.hostname.clone();
        entry.selectors = selectors;
        entry.capacity = hello.capacity;
        entry.session = Some(Session {
            epoch,
            tx: tx.clone(),
        });
        entry.draining = false;
        entry.busy_hold = false;
        entry.sessions += 1;
        let assigned: Vec<TaskId> = entry.assigned.iter().cloned().collect();
        Self::index_add(&mut st, &agent_id);
        tracing::info!(
            agent = %hello.name,
            agent_id = %agent_id,
            capacity = hello.capacity,
            in_flight = hello.in_flight.len(),
            results = hello.results.len(),
            "agent connected"
        );

        // Results first: they resolve tasks (and ack).
        let held: HashSet<TaskId> = hello.results.iter().map(|r| r.id.clone()).collect();
        for r in hello.results {
            self.result_locked(&mut st, &agent_id, r);
        }
        let in_flight: HashSet<TaskId> = hello.in_flight.into_iter().collect();
        for id in &assigned {
            if in_flight.contains(id) || held.contains(id) {
                if let Some(t) = st.tasks.get_mut(id) {
                    t.state = TaskState::Dispatched {
                        agent: agent_id.clone(),
                    };
                }
                continue;
            }
            // The agent came back without it (it restarted): it is lost now.
            tracing::info!(task = %id, agent = %hello.name, "agent returned without the task; re-dispatching");
            self.lose(&mut st, &agent_id, id);
        }
        // Running tasks the hub no longer wants.
        for id in &in_flight {
            if !st.tasks.contains_key(id) {
                let _ = tx.send(Outbound::Message(ManagerMessage::Cancel { id: id.clone() }));
            } else if !assigned.contains(id) {
                // Re-dispatched elsewhere meanwhile: this copy is surplus.
                let _ = tx.send(Outbound::Message(ManagerMessage::Cancel { id: id.clone() }));
            }
        }
        self.pump(&mut st);
        drop(st);
        self.changed();
        SessionHandle {
            agent_id,
            epoch,
            welcome: protocol::Welcome {
                session_id: random_id(),
                protocol_version,
                heartbeat_ms: self.inner.config.heartbeat.as_millis() as u64,
            },
            outbound: rx,
            sender: tx,
        }
    }

    /// The task left its agent for good: re-dispatch it, or fail it after too many losses.
    fn lose(&self, st: &mut State, agent_id: &str, id: &TaskId) {
        if let Some(a) = st.agents.get_mut(agent_id) {
            a.assigned.remove(id);
        }
        let max = self.inner.config.max_dispatches.max(1);
        let Some(t) = st.tasks.get_mut(id) else {
            return;
        };
        t.losses += 1;
        if t.losses >= max {
            let n = t.losses;
            self.fail(
                st,
                id,
                HubError::NoAgent(format!(
                    "the task lost its agent {n} times (the limit is {max})"
                )),
            );
            return;
        }
        self.place(st, id);
    }

    /// A session ended. Its tasks wait the grace period for the agent to come back.
    pub fn disconnected(&self, agent_id: &str, epoch: u64) {
        let mut st = self.lock();
        let Some(a) = st.agents.get(agent_id) else {
            return;
        };
        if a.session.as_ref().map(|s| s.epoch) != Some(epoch) {
            return; // an older session, already replaced
        }
        Self::index_remove(&mut st, agent_id);
        let a = st.agents.get_mut(agent_id).expect("agent present");
        a.session = None;
        a.lost_epoch = epoch;
        let assigned: Vec<TaskId> = a.assigned.iter().cloned().collect();
        tracing::info!(agent = %a.name, tasks = assigned.len(), "agent disconnected");
        for id in &assigned {
            if let Some(t) = st.tasks.get_mut(id) {
                t.state = TaskState::Orphaned {
                    agent: agent_id.to_string(),
                };
            }
        }
        if !assigned.is_empty() {
            let hub = self.clone();
            let agent_id = agent_id.to_string();
            let grace = self.inner.config.redispatch_grace;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                hub.grace_expired(&agent_id, epoch);
            });
        }
        self.drop_idle_agents(&mut st);
        drop(st);
        self.changed();
    }

    fn grace_expired(&self, agent_id: &str, epoch: u64) {
        let mut st = self.lock();
        let Some(a) = st.agents.get(agent_id) else {
            return;
        };
        if a.session.is_some() || a.lost_epoch != epoch {
            return; // it came back
        }
        let lost: Vec<TaskId> = a.assigned.iter().cloned().collect();
        tracing::info!(agent = %a.name, tasks = lost.len(), "agent did not come back; re-dispatching its tasks");
        for id in &lost {
            self.lose(&mut st, agent_id, id);
        }
        self.drop_idle_agents(&mut st);
        drop(st);
        self.changed();
    }

    /// A message from a session, other than `hello`, `ping` and `pong`.
    pub fn accepted(&self, agent_id: &str, id: &TaskId) {
        let st = self.lock();
        if !st.tasks.contains_key(id) {
            tracing::debug!(task = %id, agent_id, "accepted for a task no longer pending");
        }
    }

    /// The agent refused a task.
    pub fn rejected(&self, agent_id: &str, r: Rejected) {
        let mut st = self.lock();
        let Some(t) = st.tasks.get(&r.id) else {
            return;
        };
        if !matches!(&t.state, TaskState::Dispatched { agent } if agent == agent_id) {
            return;
        }
        if let Some(a) = st.agents.get_mut(agent_id) {
            a.assigned.remove(&r.id);
        }
        match r.reason {
            RejectReason::Busy | RejectReason::Draining => {
                tracing::debug!(task = %r.id, agent_id, reason = ?r.reason, "task refused; routing elsewhere");
                if r.reason == RejectReason::Draining {
                    self.set_draining(&mut st, agent_id);
                } else if let Some(a) = st.agents.get_mut(agent_id) {
                    a.busy_hold = true;
                }
                self.place(&mut st, &r.id);
            }
            RejectReason::Policy | RejectReason::Unsupported | RejectReason::Unknown => {
                let kind = if r.reason == RejectReason::Policy {
                    ErrorKind::Policy
                } else {
                    ErrorKind::Unsupported
                };
                let agent_name = st
                    .agents
                    .get(agent_id)
                    .map(|a| a.name.clone())
                    .unwrap_or_default();
                let t = st.tasks.get_mut(&r.id).expect("task present");
                let dispatches = t.dispatches;
                if let Some(tx) = t.tx.take() {
                    tracing::info!(task = %r.id, %kind, "task refused by the agent");
                    let _ = tx.send(Ok(TaskOutcome {
                        task_id: r.id.clone(),
                        result: Err(TaskFailure {
                            kind,
                            message: r.message,
                        }),
                        agent_id: agent_id.to_string(),
                        agent_name,
                        duration: Duration::ZERO,
                        attempts: 0,
                        dispatches,
                    }));
                }
                self.forget(&mut st, &r.id, false);
                self.pump(&mut st);
            }
        }
        drop(st);
        self.changed();
    }

    fn set_draining(&self, st: &mut State, agent_id: &str) {
        Self::index_remove(st, agent_id);
        if let Some(a) = st.agents.get_mut(agent_id) {
            a.draining = true;
        }
    }

    /// The agent is draining: no new tasks go to it.
    pub fn draining(&self, agent_id: &str) {
        let mut st = self.lock();
        if let Some(a) = st.agents.get(agent_id) {
            tracing::info!(agent = %a.name, "agent is draining");
        }
        self.set_draining(&mut st, agent_id);
        drop(st);
        self.changed();
    }

    /// A result. Always acked; only the first for a task resolves it.
    pub fn result(&self, agent_id: &str, r: TaskResult) {
        let mut st = self.lock();
        self.result_locked(&mut st, agent_id, r);
        self.pump(&mut st);
        drop(st);
        self.changed();
    }

    fn result_locked(&self, st: &mut State, agent_id: &str, r: TaskResult) {
        let id = r.id.clone();
        if let Some(a) = st.agents.get_mut(agent_id) {
            // Its own accounting freed a slot.
            a.busy_hold = false;
            if let Some(s) = &a.session {
                let _ = s.tx.send(Outbound::Message(ManagerMessage::ResultAck {
                    id: id.clone(),
                }));
            }
        }
        let Some(t) = st.tasks.get_mut(&id) else {
            if st.recent.contains(&id) {
                tracing::debug!(task = %id, "duplicate result ignored");
            } else {
                tracing::debug!(task = %id, "result for an unknown task ignored");
            }
            return;
        };
        let holder = match &t.state {
            TaskState::Dispatched { agent } | TaskState::Orphaned { agent } => Some(agent.clone()),
            TaskState::Queued => None,
        };
        let Some(tx) = t.tx.take() else { return };
        let dispatches = t.dispatches;
        let agent_name = st
            .agents
            .get(agent_id)
            .map(|a| a.name.clone())
            .unwrap_or_default();
        let result = match r.outcome {
            ResultOutcome::Ok { value } => Ok(value.into_secret()),
            ResultOutcome::Error { kind, message } => Err(TaskFailure { kind, message }),
        };
        tracing::info!(
            task = %id,
            agent = %agent_name,
            outcome = result.as_ref().err().map(|f| f.kind.as_str()).unwrap_or("ok"),
            duration_ms = r.duration_ms,
            "task finished"
        );
        let _ = tx.send(Ok(TaskOutcome {
            task_id: id.clone(),
            result,
            agent_id: agent_id.to_string(),
            agent_name,
            duration: Duration::from_millis(r.duration_ms),
            attempts: r.attempts,
            dispatches,
        }));
        // A late result from an agent that lost the task: stop the other dispatch.
        let cancel_other = holder.as_deref().is_some_and(|h| h != agent_id);
        if let Some(a) = st.agents.get_mut(agent_id) {
            a.assigned.remove(&id);
        }
        self.forget(st, &id, cancel_other);
    }
}
