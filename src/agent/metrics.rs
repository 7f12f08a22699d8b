//! The agent's counters, and the optional loopback-only listener that serves `/healthz`
//! and Prometheus `/metrics`.
//!
//! Off by default. Labels are outcomes and error kinds only: nothing about a task's
//! values or script ever becomes a label.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

/// Upper bounds of the task-duration histogram, in seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Where the agent's link to the manager stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Opening a connection.
    Connecting = 0,
    /// In a session.
    Connected = 1,
    /// Waiting before the next attempt.
    Backoff = 2,
    /// Shutting down.
    Stopping = 3,
}

impl ConnState {
    fn name(self) -> &'static str {
        match self {
            ConnState::Connecting => "connecting",
            ConnState::Connected => "connected",
            ConnState::Backoff => "backoff",
            ConnState::Stopping => "stopping",
        }
    }
}

/// The agent's metrics. Shared; every method is cheap.
#[derive(Debug, Default)]
pub struct Metrics {
    outcomes: Mutex<BTreeMap<String, u64>>,
    hist: Mutex<Histogram>,
    state: AtomicU64,
    reconnects: AtomicU64,
    in_flight: AtomicU64,
    unacked: AtomicU64,
    draining: AtomicU64,
}

#[derive(Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Metrics {
    /// New, zeroed metrics.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Count a task that ended with `outcome` (`ok`, an error kind, or `rejected_<reason>`).
    pub fn task_done(&self, outcome: &str, duration: Option<Duration>) {
        *self
            .outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(outcome.to_string())
            .or_default() += 1;
        if let Some(d) = duration {
            let s = d.as_secs_f64();
            let mut h = self.hist.lock().unwrap_or_else(|p| p.into_inner());
            if h.counts.is_empty() {
                h.counts = vec![0; BUCKETS.len()];
            }
            for (i, b) in BUCKETS.iter().enumerate() {
                if s <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += s;
            h.count += 1;
        }
    }

    /// Set the connection state.
    pub fn set_state(&self, s: ConnState) {
        self.state.store(s as u64, Ordering::Relaxed);
    }

    /// The connection state.
    pub fn state(&self) -> ConnState {
        match self.state.load(Ordering::Relaxed) {
            1 => ConnState::Connected,
            2 => ConnState::Backoff,
            3 => ConnState::Stopping,
            _ => ConnState::Connecting,
        }
    }

    /// Count a reconnect (every connection attempt after the first session or failure).
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Set the number of running tasks and of results waiting for an ack.
    pub fn set_load(&self, in_flight: usize, unacked: usize) {
        self.in_flight.store(in_flight as u64, Ordering::Relaxed);
        self.unacked.store(unacked as u64, Ordering::Relaxed);
    }

    /// Note that the agent is draining.
    pub fn set_draining(&self) {
        self.draining.store(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::with_capacity(2048);
        o.push_str("# HELP csm_agent_tasks_total Tasks ended, by outcome (ok, an error kind, or rejected_<reason>).\n# TYPE csm_agent_tasks_total counter\n");
        for (k, v) in self
            .outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(o, "csm_agent_tasks_total{{outcome=\"{k}\"}} {v}");
        }
        o.push_str("# HELP csm_agent_task_duration_seconds Wall time of tasks that ran.\n# TYPE csm_agent_task_duration_seconds histogram\n");
        {
            let h = self.hist.lock().unwrap_or_else(|p| p.into_inner());
            for (i, b) in BUCKETS.iter().enumerate() {
                let c = h.counts.get(i).copied().unwrap_or(0);
                let _ = writeln!(
                    o,
                    "csm_agent_task_duration_seconds_bucket{{le=\"{b}\"}} {c}"
                );
            }
            let _ = writeln!(
                o,
                "csm_agent_task_duration_seconds_bucket{{le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(o, "csm_agent_task_duration_seconds_sum {}", h.sum);
            let _ = writeln!(o, "csm_agent_task_duration_seconds_count {}", h.count);
        }
        let state = self.state();
        o.push_str("# HELP csm_agent_connected Whether a session with the manager is open.\n# TYPE csm_agent_connected gauge\n");
        let _ = writeln!(
            o,
            "csm_agent_connected {}",
            u8::from(state == ConnState::Connected)
        );
        o.push_str("# HELP csm_agent_connection_state The link's state (1 for the current one).\n# TYPE csm_agent_connection_state gauge\n");
        for s in [
            ConnState::Connecting,
            ConnState::Connected,
            ConnState::Backoff,
            ConnState::Stopping,
        ] {
            let _ = writeln!(
                o,
                "csm_agent_connection_state{{state=\"{}\"}} {}",
                s.name(),
                u8::from(s == state)
            );
        }
        o.push_str("# HELP csm_agent_reconnects_total Connection attempts after the first.\n# TYPE csm_agent_reconnects_total counter\n");
        let _ = writeln!(
            o,
            "csm_agent_reconnects_total {}",
            self.reconnects.load(Ordering::Relaxed)
        );
        o.push_str("# HELP csm_agent_tasks_in_flight Tasks running now.\n# TYPE csm_agent_tasks_in_flight gauge\n");
        let _ = writeln!(
            o,
            "csm_agent_tasks_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        o.push_str("# HELP csm_agent_results_unacked Results held until the manager acks them.\n# TYPE csm_agent_results_unacked gauge\n");
        let _ = writeln!(
            o,
            "csm_agent_results_unacked {}",
            self.unacked.load(Ordering::Relaxed)
        );
        o.push_str("# HELP csm_agent_draining Whether the agent is draining.\n# TYPE csm_agent_draining gauge\n");
        let _ = writeln!(
            o,
            "csm_agent_draining {}",
            self.draining.load(Ordering::Relaxed)
        );
        o
    }

    /// The `/healthz` body: the process is serving; the body says whether it is connected.
    pub fn health(&self) -> String {
        format!(
            "{{\"status\":\"ok\",\"connection\":\"{}\",\"inFlight\":{},\"unacked\":{}}}\n",
            self.state().name(),
            self.in_flight.load(Ordering::Relaxed),
            self.unacked.load(Ordering::Relaxed)
        )
    }
}

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Only loopback addresses are allowed.
    #[error("metrics_listen {0} is not a loopback address (the listener is loopback-only)")]
    NotLoopback(SocketAddr),
    /// Binding failed.
    #[error("metrics_listen {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Bind the health and metrics listener. Loopback only.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    if !addr.ip().is_loopback() {
        return Err(ListenError::NotLoopback(addr));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|e| ListenError::Bind(addr, e))
}

/// Serve `/healthz` and `/metrics` on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let m1 = metrics.clone();
    let app = Router::new()
        .route(
            "/healthz",
            get(move || {
                let m = m1.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], m.health()) }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        m.render(),
                    )
                        .into_response()
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("metrics listener stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::new();
        m.task_done("ok", Some(Duration::from_millis(3)));
        m.task_done("timeout", Some(Duration::from_secs(2)));
        m.task_done("rejected_policy", None);
        m.set_state(ConnState::Connected);
        m.reconnected();
        m.set_load(2, 1);
        let t = m.render();
        for want in [
            "csm_agent_tasks_total{outcome=\"ok\"} 1",
            "csm_agent_tasks_total{outcome=\"rejected_policy\"} 1",
            "csm_agent_task_duration_seconds_bucket{le=\"0.005\"} 1",
            "csm_agent_task_duration_seconds_bucket{le=\"2.5\"} 2",
            "csm_agent_task_duration_seconds_count 2",
            "csm_agent_connected 1",
            "csm_agent_connection_state{state=\"connected\"} 1",
            "csm_agent_reconnects_total 1",
            "csm_agent_tasks_in_flight 2",
            "csm_agent_results_unacked 1",
        ] {
            assert!(t.contains(want), "missing {want} in\n{t}");
        }
    }
}
