//! The pool of authenticated SSH connections shared by every SSH task of an agent.
//!
//! Connections are keyed by (host, port, user, credential, host-key policy), so nothing is
//! shared across credentials or trust decisions. A semaphore per target bounds how many
//! exist (libssh2 serialises a connection's channels, so concurrency needs several). Idle
//! connections expire and get keepalives from a background task, and targets with nothing
//! left are forgotten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::{conn, SshConfig, SshTarget};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    host: String,
    port: u16,
    user: String,
    credential: u64,
    policy: usize,
}

impl PoolKey {
    fn of(t: &SshTarget) -> Self {
        PoolKey {
            host: t.host.clone(),
            port: t.port,
            user: t.credential.user.clone(),
            credential: t.credential.id,
            // Same policy object, same trust decision.
            policy: Arc::as_ptr(&t.host_keys) as usize,
        }
    }
}

/// Connections to one target, and the permits that bound how many exist.
pub(super) struct Slot {
    /// One permit per connection that may exist, idle or running a task.
    pub(super) permits: Arc<Semaphore>,
    idle: Mutex<Vec<conn::Conn>>,
}

impl Slot {
    /// The most recently used idle connection that has not expired, if any; expired ones
    /// are closed on the way.
    pub(super) fn take_idle(&self, expiry: Duration) -> Option<conn::Conn> {
        let mut idle = self.idle.lock().expect("slot lock");
        idle.retain(|c| c.last_used.elapsed() < expiry);
        idle.pop()
    }

    /// Return a connection fit for reuse.
    pub(super) fn put_back(&self, mut c: conn::Conn) {
        c.last_used = Instant::now();
        c.reused = true;
        self.idle.lock().expect("slot lock").push(c);
    }
}

/// Pooled, authenticated SSH connections, shared by every SSH task of an agent.
pub struct SshPool {
    pub(super) config: SshConfig,
    slots: Mutex<HashMap<PoolKey, Arc<Slot>>>,
}

impl std::fmt::Debug for SshPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshPool")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SshPool {
    /// A pool. Call from within a tokio runtime: it starts a keepalive task, which ends
    /// when the pool is dropped.
    pub fn new(config: SshConfig) -> Arc<SshPool> {
        let pool = Arc::new(SshPool {
            config,
            slots: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&pool);
        let every = pool.config.keepalive.max(Duration::from_secs(1));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(pool) = Weak::upgrade(&weak) else {
                        break;
                    };
                    pool.maintain();
                }
            });
        }
        pool
    }

    /// The pool's bounds.
    pub fn config(&self) -> &SshConfig {
        &self.config
    }

    pub(super) fn slot(&self, t: &SshTarget) -> Arc<Slot> {
        let mut slots = self.slots.lock().expect("pool lock");
        slots
            .entry(PoolKey::of(t))
            .or_insert_with(|| {
                Arc::new(Slot {
                    permits: Arc::new(Semaphore::new(self.config.max_sessions_per_target.max(1))),
                    idle: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    /// Drop expired idle connections and send keepalives on the rest.
    fn maintain(&self) {
        let slots: Vec<Arc<Slot>> = self
            .slots
            .lock()
            .expect("pool lock")
            .values()
            .cloned()
            .collect();
        for slot in slots {
            let mut idle = slot.idle.lock().expect("slot lock");
            let idle_timeout = self.config.idle_timeout;
            idle.retain(|c| c.last_used.elapsed() < idle_timeout && keepalive(c));
        }
        // Forget targets with no idle connection and no task: every credential is a target
        // of its own, and a long-running agent must not keep one for each it has seen. A
        // task holds its slot's Arc, and `slot()` clones it under this lock, so a slot
        // counted once here is in no one's hands.
        self.slots.lock().expect("pool lock").retain(|_, s| {
            Arc::strong_count(s) > 1 || !s.idle.lock().expect("slot lock").is_empty()
        });
    }

    /// Number of targets the pool tracks (with idle connections or running tasks).
    pub fn target_count(&self) -> usize {
        self.slots.lock().expect("pool lock").len()
    }

    /// Number of idle connections held for `target`.
    pub fn idle_count(&self, target: &SshTarget) -> usize {
        self.slot(target).idle.lock().expect("slot lock").len()
    }
}

/// Send a keepalive; false if the connection is dead. A keepalive that could not be queued
/// without blocking is not a dead connection.
fn keepalive(c: &conn::Conn) -> bool {
    match c.sess.keepalive_send() {
        Ok(_) => true,
        Err(e) => e.code() == ssh2::ErrorCode::Session(conn::EAGAIN),
    }
}
