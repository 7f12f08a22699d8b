//! The agent's task table: tasks running, results held until the manager acks them, and
//! the ids recently acked.
//!
//! This is what makes results arrive at least once and tasks run at most once per agent:
//! a task id that is running or holds a result is never started again, and a result
//! leaves memory only when its ack arrives. Nothing here is ever written to disk.

use std::collections::{HashMap, HashSet, VecDeque};

use tokio_util::sync::CancellationToken;

use crate::protocol::{TaskId, TaskResult};

/// How many acked ids are remembered, so that a late duplicate of a finished task is not
/// run again.
const RECENT_ACKED: usize = 16_384;

/// What the table knows about a task id.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Never seen (or long forgotten).
    New,
    /// Running now.
    Running,
    /// Finished; the result waits for its ack.
    Held,
    /// Finished and acked.
    Acked,
}

/// Tasks running and results not yet acked.
#[derive(Debug, Default)]
pub struct Outbox {
    running: HashMap<TaskId, CancellationToken>,
    held: HashMap<TaskId, (TaskResult, u64)>,
    next: u64,
    acked: HashSet<TaskId>,
    acked_order: VecDeque<TaskId>,
}

impl Outbox {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// What is known about `id`.
    pub fn seen(&self, id: &str) -> Seen {
        if self.running.contains_key(id) {
            Seen::Running
        } else if self.held.contains_key(id) {
            Seen::Held
        } else if self.acked.contains(id) {
            Seen::Acked
        } else {
            Seen::New
        }
    }

    /// Record a task as started.
    pub fn start(&mut self, id: TaskId, cancel: CancellationToken) {
        self.running.insert(id, cancel);
    }

    /// Record a task's result (it stays until acked).
    pub fn finish(&mut self, result: TaskResult) {
        self.running.remove(&result.id);
        self.next += 1;
        self.held.insert(result.id.clone(), (result, self.next));
    }

    /// The manager has the result: forget it. Returns whether it was held.
    pub fn ack(&mut self, id: &str) -> bool {
        let had = self.held.remove(id).is_some();
        if had && self.acked.insert(id.to_string()) {
            self.acked_order.push_back(id.to_string());
            while self.acked_order.len() > RECENT_ACKED {
                if let Some(old) = self.acked_order.pop_front() {
                    self.acked.remove(&old);
                }
            }
        }
        had
    }

    /// Cancel a running task. Returns whether it was running.
    pub fn cancel(&self, id: &str) -> bool {
        match self.running.get(id) {
            Some(c) => {
                c.cancel();
                true
            }
            None => false,
        }
    }

    /// Cancel every running task.
    pub fn cancel_all(&self) {
        for c in self.running.values() {
            c.cancel();
        }
    }

    /// Ids of running tasks.
    pub fn running_ids(&self) -> Vec<TaskId> {
        self.running.keys().cloned().collect()
    }

    /// A held result.
    pub fn held(&self, id: &str) -> Option<&TaskResult> {
        self.held.get(id).map(|(r, _)| r)
    }

    /// Held results, oldest first.
    pub fn held_results(&self) -> Vec<&TaskResult> {
        let mut v: Vec<&(TaskResult, u64)> = self.held.values().collect();
        v.sort_by_key(|(_, n)| *n);
        v.into_iter().map(|(r, _)| r).collect()
    }

    /// How many tasks are running.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// How many results wait for an ack.
    pub fn unacked(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is running or held.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ResultOutcome;

    fn result(id: &str) -> TaskResult {
        TaskResult {
            id: id.into(),
            outcome: ResultOutcome::error(crate::ErrorKind::Internal, "m"),
            duration_ms: 1,
            attempts: 1,
        }
    }

    #[test]
    fn lifecycle_running_held_acked() {
        let mut o = Outbox::new();
        assert_eq!(o.seen("a"), Seen::New);
        let c = CancellationToken::new();
        o.start("a".into(), c.clone());
        assert_eq!(o.seen("a"), Seen::Running);
        assert!(o.cancel("a"));
        assert!(c.is_cancelled());
        o.finish(result("a"));
        o.start("b".into(), CancellationToken::new());
        o.finish(result("b"));
        assert_eq!(o.seen("a"), Seen::Held);
        assert_eq!(
            o.held_results()
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(o.ack("a"));
        assert!(!o.ack("a"));
        assert_eq!(o.seen("a"), Seen::Acked);
        assert_eq!(o.unacked(), 1);
        assert!(!o.is_idle());
        o.ack("b");
        assert!(o.is_idle());
    }
}
