//! Faults with real agent processes and real sockets: the control plane dies mid-task,
//! an agent dies mid-task, and a TCP proxy cuts a result frame in half or stalls the
//! link. Every case ends in exactly one outcome, and nothing hangs (every wait is bounded).
//!
//! The manager is served in-process so the test can observe outcomes; "killing" it drops
//! the server and every session at once, without a close frame, and a new server on the
//! same listening socket is the restarted control plane (see `support::agentnet`).

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use csm_agent::manager::{HubConfig, HubError, TaskOutcome};
use secrecy::ExposeSecret;
use support::agentnet::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .count()
}

fn submit(
    m: &TestManager,
    script: &str,
    selectors: &[&str],
) -> JoinHandle<Result<TaskOutcome, HubError>> {
    let hub = m.hub.clone();
    let req = task(script, &[("v", "fault-value")], selectors, PATIENCE);
    tokio::spawn(async move { hub.submit(req).await })
}

fn value(o: &TaskOutcome) -> String {
    String::from_utf8(o.result.as_ref().expect("ok").expose_secret().to_vec()).unwrap()
}

/// A script that, on its first run only, reports on `started` and waits on `hold`; it
/// counts its runs in `count`.
fn blocking_script(dir: &Path, started: &Path, hold: &Path) -> String {
    format!(
        "echo run >> {d}/count\n\
         if mkdir {d}/first 2>/dev/null; then echo go > {s}; read x < {h}; fi\n\
         secret=\"got-${{v}}\"\n",
        d = dir.display(),
        s = started.display(),
        h = hold.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_control_plane_mid_task_loses_nothing() {
    // A long grace: the task must come back with its agent, not go elsewhere.
    let mut m = TestManager::start(HubConfig {
        redispatch_grace: Duration::from_secs(60),
        ..fast_hub()
    })
    .await;
    let mut agent = AgentProc::start(&m.url(), &m.token_file(), AgentOpts::named("survivor"));
    m.wait_connected("survivor").await;

    let dir = tempfile::tempdir().unwrap();
    let started = fifo(dir.path(), "started");
    let hold = fifo(dir.path(), "hold");
    let done = fifo(dir.path(), "done");
    let script = format!(
        "{}echo end > {}\n",
        blocking_script(dir.path(), &started, &hold),
        done.display()
    );
    let pending = submit(&m, &script, &[]);
    read_fifo_line(&started).await;

    // Crash the control plane while the script runs.
    m.kill().await;
    m.wait_until("the hub to see the agent gone", |a| {
        a.iter().all(|a| !a.connected)
    })
    .await;
    // The script finishes while no manager is up: the result waits in the agent's memory.
    write_fifo_line(&hold, "go").await;
    read_fifo_line(&done).await;
    assert_eq!(m.hub.pending_tasks(), 1);

    m.restart();
    let outcome = within("the outcome", pending).await.unwrap().unwrap();
    assert_eq!(value(&outcome), "got-fault-value");
    assert_eq!(outcome.dispatches, 1, "the task was not dispatched again");
    assert_eq!(lines(&dir.path().join("count")), 1, "the script ran once");
    let a = &m.hub.agents()[0];
    assert!(a.connected && a.sessions == 2, "{a:?}");
    assert_eq!(m.hub.pending_tasks(), 0);
    let logs = agent.logs();
    assert!(logs.contains("reconnecting"), "{logs}");
    agent.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_agent_mid_task_redispatches_to_another() {
    let m = TestManager::start(fast_hub()).await;
    let opts = |name: &str| {
        let mut o = AgentOpts::named(name);
        o.selectors = vec!["pool".into()];
        o
    };
    let mut a = AgentProc::start(&m.url(), &m.token_file(), opts("one"));
    let mut b = AgentProc::start(&m.url(), &m.token_file(), opts("two"));
    m.wait_connected("one").await;
    m.wait_connected("two").await;

    let dir = tempfile::tempdir().unwrap();
    let started = fifo(dir.path(), "started");
    let hold = fifo(dir.path(), "hold");
    let pending = submit(&m, &blocking_script(dir.path(), &started, &hold), &["pool"]);
    read_fifo_line(&started).await;
    let victim = m
        .hub
        .agents()
        .into_iter()
        .find(|a| a.assigned == 1)
        .expect("an agent holds the task")
        .name;
    let (dead, alive) = if victim == "one" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    dead.kill();

    let outcome = within("the outcome", pending).await.unwrap().unwrap();
    assert_eq!(value(&outcome), "got-fault-value");
    assert_eq!(outcome.agent_name, alive.name);
    assert_eq!(outcome.dispatches, 2);
    assert_eq!(lines(&dir.path().join("count")), 2);
    // Let the orphaned first run (its agent is gone) finish.
    write_fifo_line(&hold, "go").await;
    alive.kill();
}

/// What the proxy does to agent traffic.
const NORMAL: u8 = 0;
/// Forward the next `result` frame only half, then cut both sides.
const CUT_RESULT: u8 = 1;

/// A TCP proxy that understands just enough WebSocket framing to cut a frame in half.
struct Proxy {
    addr: std::net::SocketAddr,
    mode: Arc<AtomicU8>,
    /// Connections with an id at or below this stop forwarding (and never close).
    stall_upto: Arc<AtomicU64>,
    next_id: Arc<AtomicU64>,
    cuts: Arc<AtomicU64>,
    _task: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(NORMAL));
        let stall_upto = Arc::new(AtomicU64::new(0));
        let next_id = Arc::new(AtomicU64::new(0));
        let cuts = Arc::new(AtomicU64::new(0));
        let (m, s, n, c) = (
            mode.clone(),
            stall_upto.clone(),
            next_id.clone(),
            cuts.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = l.accept().await else {
                    return;
                };
                let Ok(up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let id = n.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(pipe(down, up, id, m.clone(), s.clone(), c.clone()));
            }
        });
        Proxy {
            addr,
            mode,
            stall_upto,
            next_id,
            cuts,
            _task: task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn stall_current(&self) {
        self.stall_upto
            .store(self.next_id.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

async fn pipe(
    down: TcpStream,
    up: TcpStream,
    id: u64,
    mode: Arc<AtomicU8>,
    stall_upto: Arc<AtomicU64>,
    cuts: Arc<AtomicU64>,
) {
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (mut dr, mut dw) = down.into_split();
    let (mut ur, mut uw) = up.into_split();
    let stalled = {
        let s = stall_upto.clone();
        move || id <= s.load(Ordering::SeqCst)
    };
    let stalled2 = stalled.clone();
    // Manager → agent: plain bytes.
    let back = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if stalled2() {
                std::future::pending::<()>().await;
            }
            if dw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    // Agent → manager: the HTTP upgrade request, then client frames, one by one.
    let mut pending: Vec<u8> = Vec::new();
    let mut in_frames = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match dr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if stalled() {
            std::future::pending::<()>().await;
        }
        pending.extend_from_slice(&buf[..n]);
        if !in_frames {
            let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head: Vec<u8> = pending.drain(..end + 4).collect();
            if uw.write_all(&head).await.is_err() {
                break;
            }
            in_frames = true;
        }
        while let Some((header_len, payload_len, mask)) = frame_header(&pending) {
            let total = header_len + payload_len;
            if pending.len() < total {
                break;
            }
            let frame: Vec<u8> = pending.drain(..total).collect();
            let payload: Vec<u8> = frame[header_len..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            let is_result = payload.starts_with(br#"{"type":"result""#);
            if is_result && mode.load(Ordering::SeqCst) == CUT_RESULT {
                mode.store(NORMAL, Ordering::SeqCst);
                let _ = uw.write_all(&frame[..header_len + payload_len / 2]).await;
                cuts.fetch_add(1, Ordering::SeqCst);
                back.abort();
                return; // both halves dropped: the connection is cut mid-frame
            }
            if uw.write_all(&frame).await.is_err() {
                back.abort();
                return;
            }
        }
    }
    back.abort();
}

/// (header length, payload length, mask) of a masked client frame, once the header is in.
fn frame_header(b: &[u8]) -> Option<(usize, usize, [u8; 4])> {
    if b.len() < 2 {
        return None;
    }
    let len7 = (b[1] & 0x7f) as usize;
    let (len, at) = match len7 {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n, 2),
    };
    assert!(b[1] & 0x80 != 0, "client frames are masked");
    let mask: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some((at + 4, len, mask))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_cut_mid_frame_is_delivered_after_reconnect() {
    let m = TestManager::start(HubConfig {
        redispatch_grace: Duration::from_secs(60),
        ..fast_hub()
    })
    .await;
    let proxy = Proxy::start(m.addr).await;
    let mut agent = AgentProc::start(&proxy.url(), &m.token_file(), AgentOpts::named("cut"));
    m.wait_connected("cut").await;
    proxy.mode.store(CUT_RESULT, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let pending = submit(
        &m,
        &format!(
            "echo run >> {}/count; secret=\"cut-${{v}}\"",
            dir.path().display()
        ),
        &[],
    );
    let outcome = within("the outcome", pending).await.unwrap().unwrap();
    assert_eq!(value(&outcome), "cut-fault-value");
    assert_eq!(
        proxy.cuts.load(Ordering::SeqCst),
        1,
        "the proxy cut a result frame"
    );
    assert_eq!(outcome.dispatches, 1);
    assert_eq!(lines(&dir.path().join("count")), 1);
    assert_eq!(m.hub.agents()[0].sessions, 2);
    agent.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_link_is_dropped_by_both_sides_and_the_result_survives() {
    let m = TestManager::start(HubConfig {
        heartbeat: Duration::from_millis(200),
        redispatch_grace: Duration::from_secs(60),
        ..fast_hub()
    })
    .await;
    let proxy = Proxy::start(m.addr).await;
    let mut agent = AgentProc::start(&proxy.url(), &m.token_file(), AgentOpts::named("stall"));
    m.wait_connected("stall").await;
    let dir = tempfile::tempdir().unwrap();
    let started = fifo(dir.path(), "started");
    let hold = fifo(dir.path(), "hold");
    let pending = submit(&m, &blocking_script(dir.path(), &started, &hold), &[]);
    read_fifo_line(&started).await;
    // The link goes silent in both directions, but stays open.
    proxy.stall_current();
    write_fifo_line(&hold, "go").await;
    let outcome = within("the outcome", pending).await.unwrap().unwrap();
    assert_eq!(value(&outcome), "got-fault-value");
    assert_eq!(outcome.dispatches, 1);
    assert_eq!(lines(&dir.path().join("count")), 1);
    let logs = agent.logs();
    assert!(
        logs.contains("silent for three heartbeat intervals"),
        "the agent noticed the silence: {logs}"
    );
    agent.kill();
}
