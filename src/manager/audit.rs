//! The audit trail: one event for every mutation and every resolve, kept in the store
//! (queryable as `auditEvents`) and written as one structured log line
//! (target `csm_agent::audit`).
//!
//! An event holds the time, the API key's id (never the key), the operation, the ids of
//! the objects involved, the agent that ran a script, the outcome (`ok` or an error kind)
//! and the duration. It never holds a value, a name or a message: nothing a caller typed
//! can reach the trail except ids the control plane itself issued or looked up.

use std::sync::Arc;
use std::time::Instant;

use super::auth::Caller;
use super::store::{audit_id, now_ms, AuditRecord, Store};

/// One operation's audit record, filled in as the operation goes.
#[derive(Debug)]
pub struct Trail {
    key_id: String,
    operation: &'static str,
    at_ms: i64,
    started: Instant,
    object_ids: Vec<String>,
    agent: Option<String>,
}

impl Trail {
    /// Start recording `operation` for `caller`.
    pub fn new(caller: &Caller, operation: &'static str) -> Trail {
        Trail {
            key_id: caller.key_id.clone(),
            operation,
            at_ms: now_ms(),
            started: Instant::now(),
            object_ids: Vec::new(),
            agent: None,
        }
    }

    /// Note an object the operation touched (ids only; duplicates are dropped).
    pub fn object(&mut self, id: &str) {
        if !id.is_empty() && !self.object_ids.iter().any(|x| x == id) && self.object_ids.len() < 16
        {
            self.object_ids.push(id.to_string());
        }
    }

    /// Note the agent that ran the script.
    pub fn agent(&mut self, name: &str) {
        self.agent = Some(name.to_string());
    }
}

/// Writes audit events.
#[derive(Clone)]
pub struct Auditor {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auditor")
    }
}

impl Auditor {
    /// An auditor writing to `store`.
    pub fn new(store: Arc<dyn Store>) -> Auditor {
        Auditor { store }
    }

    /// Record the end of an operation with its outcome (`ok` or an error kind). The log
    /// line is written even if the store is unavailable, and that failure is logged.
    pub async fn finish(&self, trail: Trail, outcome: &str) {
        let rec = AuditRecord {
            id: audit_id(trail.at_ms),
            at_ms: trail.at_ms,
            key_id: trail.key_id,
            operation: trail.operation.to_string(),
            object_ids: trail.object_ids,
            agent: trail.agent,
            outcome: outcome.to_string(),
            duration_ms: trail.started.elapsed().as_millis().min(i64::MAX as u128) as i64,
        };
        tracing::info!(
            target: "csm_agent::audit",
            audit_id = %rec.id,
            at_ms = rec.at_ms,
            key_id = %rec.key_id,
            operation = %rec.operation,
            object_ids = %rec.object_ids.join(","),
            agent = rec.agent.as_deref().unwrap_or(""),
            outcome = %rec.outcome,
            duration_ms = rec.duration_ms,
            "audit"
        );
        if let Err(e) = self.store.append_audit(rec).await {
            tracing::error!(target: "csm_agent::audit", "could not store an audit event: {e}");
        }
    }
}
