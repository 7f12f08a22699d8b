//! The dispatch hub through its real WebSocket endpoint, with agents driven by hand:
//! selector routing, load, refusals, dedup, re-dispatch, deadlines, liveness.
//!
//! Each fake agent is a real WebSocket client on a loopback socket speaking the protocol,
//! so the tests control exactly what an agent says and when.

mod support;

use std::time::Duration;

use csm_agent::error::ErrorKind;
use csm_agent::manager::{HubConfig, HubError, TaskOutcome};
use csm_agent::protocol::{
    self, AgentMessage, ManagerMessage, RejectReason, Rejected, ResultOutcome, TaskResult,
    WireSecret,
};
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use support::agentnet::*;
use tokio::task::JoinHandle;

type Pending = JoinHandle<Result<TaskOutcome, HubError>>;

fn submit(m: &TestManager, selectors: &[&str], deadline: Duration) -> Pending {
    let hub = m.hub.clone();
    let req = task("secret=x", &[], selectors, deadline);
    tokio::spawn(async move { hub.submit(req).await })
}

fn ok(id: &str, value: &str) -> AgentMessage {
    AgentMessage::Result(TaskResult {
        id: id.into(),
        outcome: ResultOutcome::Ok {
            value: WireSecret::from_vec(value.as_bytes().to_vec()),
        },
        duration_ms: 5,
        attempts: 1,
    })
}

async fn outcome(p: Pending) -> Result<TaskOutcome, HubError> {
    within("the task's outcome", p).await.unwrap()
}

fn value(o: &TaskOutcome) -> String {
    String::from_utf8(o.result.as_ref().unwrap().expose_secret().to_vec()).unwrap()
}

/// The agent that got a task (answers it with `value`), among `agents`.
async fn answer_first(agents: &mut [&mut FakeAgent], value: &str) -> usize {
    // Whichever agent's socket yields a task first.
    let mut futs = Vec::new();
    for (i, a) in agents.iter_mut().enumerate() {
        futs.push(Box::pin(async move { (i, a.recv_task().await) }));
    }
    let ((i, t), _, _) = futures_util::future::select_all(futs).await;
    agents[i].send(&ok(&t.id, value)).await;
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_follow_harness_rules() {
    let m = TestManager::start(fast_hub()).await;
    let mut a = FakeAgent::join(&m, hello("id-a", "alpha", &[" EU ", "Prod"], 4)).await;
    let mut b = FakeAgent::join(&m, hello("id-b", "beta", &["eu"], 4)).await;
    let mut c = FakeAgent::join(&m, hello("id-c", "gamma", &[], 4)).await;

    // Every selector must be among the agent's, trimmed and lower-cased.
    let p = submit(&m, &["prod", " eu"], PATIENCE);
    let i = answer_first(&mut [&mut a, &mut b, &mut c], "v1").await;
    assert_eq!(i, 0, "only alpha has both prod and eu");
    assert_eq!(outcome(p).await.unwrap().agent_name, "alpha");

    // Name and hostname are implicit selectors.
    let p = submit(&m, &["GAMMA"], PATIENCE);
    let i = answer_first(&mut [&mut a, &mut b, &mut c], "v2").await;
    assert_eq!(i, 2);
    assert_eq!(value(&outcome(p).await.unwrap()), "v2");
    let p = submit(&m, &["beta.host"], PATIENCE);
    let i = answer_first(&mut [&mut a, &mut b, &mut c], "v3").await;
    assert_eq!(i, 1);
    outcome(p).await.unwrap();

    // An agent without selectors gets no task that names some; nobody has "gpu".
    let r = outcome(submit(&m, &["eu", "gpu"], PATIENCE)).await;
    match r {
        Err(HubError::NoAgent(msg)) => assert!(msg.contains("gpu"), "{msg}"),
        other => panic!("expected no_agent, got {other:?}"),
    }
    // A task without selectors may go anywhere.
    let p = submit(&m, &[], PATIENCE);
    answer_first(&mut [&mut a, &mut b, &mut c], "v4").await;
    outcome(p).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_loaded_first_within_capacity_then_queue() {
    let m = TestManager::start(fast_hub()).await;
    let mut small = FakeAgent::join(&m, hello("id-s", "small", &["pool"], 1)).await;
    let mut big = FakeAgent::join(&m, hello("id-b", "big", &["pool"], 3)).await;
    let pending: Vec<Pending> = (0..4).map(|_| submit(&m, &["pool"], PATIENCE)).collect();
    // Load is weighed against capacity: 1 task to small, 3 to big.
    m.wait_until("4 tasks assigned", |a| {
        a.iter().map(|a| a.assigned).sum::<usize>() == 4
    })
    .await;
    let by_name = |n: &str| m.hub.agents().into_iter().find(|a| a.name == n).unwrap();
    assert_eq!(by_name("small").assigned, 1);
    assert_eq!(by_name("big").assigned, 3);
    // Both are full: the fifth waits in the queue...
    let fifth = submit(&m, &["pool"], PATIENCE);
    let mut big_tasks = Vec::new();
    for _ in 0..3 {
        big_tasks.push(big.recv_task().await);
    }
    let small_task = small.recv_task().await;
    // ...until small finishes its task.
    small.send(&ok(&small_task.id, "s")).await;
    let t5 = small.recv_task().await;
    small.send(&ok(&t5.id, "five")).await;
    assert_eq!(value(&outcome(fifth).await.unwrap()), "five");
    for t in big_tasks {
        big.send(&ok(&t.id, "b")).await;
    }
    for p in pending {
        outcome(p).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_goes_to_another_agent_and_policy_is_final() {
    let m = TestManager::start(fast_hub()).await;
    let mut a = FakeAgent::join(&m, hello("id-a", "a", &["x"], 4)).await;
    let p = submit(&m, &["x"], PATIENCE);
    let t = a.recv_task().await;
    let mut b = FakeAgent::join(&m, hello("id-b", "b", &["x"], 4)).await;
    a.send(&AgentMessage::Rejected(Rejected {
        id: t.id.clone(),
        reason: RejectReason::Busy,
        message: "full".into(),
    }))
    .await;
    let t2 = b.recv_task().await;
    assert_eq!(t2.id, t.id);
    assert_eq!(t2.attempt, 2);
    b.send(&ok(&t2.id, "from-b")).await;
    let o = outcome(p).await.unwrap();
    assert_eq!((o.agent_name.as_str(), value(&o).as_str()), ("b", "from-b"));

    let p = submit(&m, &["b"], PATIENCE);
    let t = b.recv_task().await;
    b.send(&AgentMessage::Rejected(Rejected {
        id: t.id.clone(),
        reason: RejectReason::Policy,
        message: "SSH to h:22 is not allowed".into(),
    }))
    .await;
    let o = outcome(p).await.unwrap();
    let f = o.result.unwrap_err();
    assert_eq!(f.kind, ErrorKind::Policy);
    assert!(f.message.contains("not allowed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_results_resolve_once_and_every_one_is_acked() {
    let m = TestManager::start(fast_hub()).await;
    let mut a = FakeAgent::join(&m, hello("id-a", "a", &[], 4)).await;
    let p = submit(&m, &[], PATIENCE);
    let t = a.recv_task().await;
    a.send(&ok(&t.id, "first")).await;
    a.send(&ok(&t.id, "second")).await;
    a.send(&ok("never-issued", "stranger")).await;
    let mut acks = Vec::new();
    while acks.len() < 3 {
        if let Some(ManagerMessage::ResultAck { id }) = a.recv().await {
            acks.push(id);
        }
    }
    assert_eq!(
        acks,
        [t.id.clone(), t.id.clone(), "never-issued".to_string()]
    );
    assert_eq!(value(&outcome(p).await.unwrap()), "first");
    assert_eq!(m.hub.pending_tasks(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_agents_task_goes_to_another_after_the_grace_period() {
    let m = TestManager::start(fast_hub()).await;
    let mut a = FakeAgent::join(&m, hello("id-a", "a", &["x"], 4)).await;
    let p = submit(&m, &["x"], PATIENCE);
    let t = a.recv_task().await;
    let mut b = FakeAgent::join(&m, hello("id-b", "b", &["x"], 4)).await;
    drop(a);
    let t2 = b.recv_task().await;
    assert_eq!((t2.id.as_str(), t2.attempt), (t.id.as_str(), 2));
    b.send(&ok(&t2.id, "b-value")).await;
    let o = outcome(p).await.unwrap();
    assert_eq!((o.agent_name.as_str(), o.dispatches), ("b", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_back_within_grace_delivers_its_result_in_hello() {
    let m = TestManager::start(HubConfig {
        redispatch_grace: Duration::from_secs(30),
        ..fast_hub()
    })
    .await;
    let mut a = FakeAgent::join(&m, hello("id-a", "a", &["x"], 4)).await;
    let _b = FakeAgent::join(&m, hello("id-b", "b", &["x"], 4)).await;
    let p = submit(&m, &["a"], PATIENCE);
    let t = a.recv_task().await;
    drop(a);
    m.wait_until("a to drop", |ag| {
        ag.iter().any(|x| x.name == "a" && !x.connected)
    })
    .await;
    let mut h = hello("id-a", "a", &["x"], 4);
    let AgentMessage::Result(r) = ok(&t.id, "held") else {
        unreachable!()
    };
    h.results.push(r);
    let mut a = FakeAgent::join(&m, h).await;
    match a.recv().await {
        Some(ManagerMessage::ResultAck { id }) => assert_eq!(id, t.id),
        other => panic!("expected an ack, got {other:?}"),
    }
    let o = outcome(p).await.unwrap();
    assert_eq!((value(&o).as_str(), o.dispatches), ("held", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_back_without_the_task_gets_it_again_and_losses_are_bounded() {
    let m = TestManager::start(HubConfig {
        redispatch_grace: Duration::from_secs(30),
        max_dispatches: 2,
        ..fast_hub()
    })
    .await;
    let mut a = FakeAgent::join(&m, hello("id-a", "a", &[], 4)).await;
    let p = submit(&m, &[], PATIENCE);
    let t = a.recv_task().await;
    drop(a);
    m.wait_until("a to drop", |ag| ag.iter().any(|x| !x.connected))
        .await;
    // Back, but it restarted: neither running nor holding the task. No grace wait.
    let mut a = FakeAgent::join(&m, hello("id-a", "a", &[], 4)).await;
    let t2 = a.recv_task().await;
    assert_eq!((t2.id.as_str(), t2.attempt), (t.id.as_str(), 2));
    drop(a);
    m.wait_until("a to drop", |ag| ag.iter().any(|x| !x.connected))
        .await;
    let _a = FakeAgent::join(&m, hello("id-a", "a", &[], 4)).await;
    match outcome(p).await {
        Err(HubError::NoAgent(msg)) => assert!(msg.contains("2 times"), "{msg}"),
        other => panic!("expected no_agent, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_is_a_timeout_and_the_agent_is_told_to_cancel() {
    let m = TestManager::start(fast_hub()).await;
    let mut a = FakeAgent::join(&m, hello("id-a", "a", &[], 4)).await;
    let p = submit(&m, &[], Duration::from_millis(300));
    let t = a.recv_task().await;
    assert!(t.deadline_ms <= 300);
    a.send(&AgentMessage::Accepted { id: t.id.clone() }).await;
    match outcome(p).await {
        Err(HubError::Timeout(d)) => assert_eq!(d, Duration::from_millis(300)),
        other => panic!("expected timeout, got {other:?}"),
    }
    loop {
        if let Some(ManagerMessage::Cancel { id }) = a.recv().await {
            assert_eq!(id, t.id);
            break;
        }
    }
    // A caller that gives up cancels too.
    let p = submit(&m, &[], PATIENCE);
    let t = a.recv_task().await;
    p.abort();
    loop {
        if let Some(ManagerMessage::Cancel { id }) = a.recv().await {
            assert_eq!(id, t.id);
            break;
        }
    }
    assert_eq!(m.hub.pending_tasks(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_agent_gets_nothing_new() {
    let m = TestManager::start(fast_hub()).await;
    let mut a = FakeAgent::join(&m, hello("id-a", "a", &["x"], 4)).await;
    a.send(&AgentMessage::Draining {}).await;
    m.wait_until("a draining", |ag| ag.iter().any(|x| x.draining))
        .await;
    match outcome(submit(&m, &["x"], PATIENCE)).await {
        Err(HubError::NoAgent(_)) => {}
        other => panic!("expected no_agent, got {other:?}"),
    }
    let mut b = FakeAgent::join(&m, hello("id-b", "b", &["x"], 4)).await;
    let p = submit(&m, &["x"], PATIENCE);
    let t = b.recv_task().await;
    b.send(&ok(&t.id, "b")).await;
    assert_eq!(outcome(p).await.unwrap().agent_name, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_dropped_after_three_heartbeats() {
    let m = TestManager::start(HubConfig {
        heartbeat: Duration::from_millis(200),
        ..fast_hub()
    })
    .await;
    let mut ws = ws_connect(m.addr, Some(&m.token)).await.unwrap();
    use futures_util::SinkExt;
    // Taken before `hello` is sent: the manager's silence clock starts only after it has
    // read the `hello`, so this is a lower bound whatever the scheduler does.
    let started = std::time::Instant::now();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        protocol::encode(&AgentMessage::Hello(hello("id-q", "quiet", &[], 1))).into(),
    ))
    .await
    .unwrap();
    // Read without ever answering: the manager's pings go unanswered.
    let code = loop {
        match within("the manager to drop a silent agent", ws.next()).await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => {
                break f.map(|f| u16::from(f.code))
            }
            Some(Ok(_)) => {}
            _ => break None,
        }
    };
    assert_eq!(code, Some(protocol::CLOSE_SILENT));
    assert!(started.elapsed() >= Duration::from_millis(600));
    m.wait_until("the agent to be gone", |a| a.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_session_for_an_agent_id_replaces_the_first() {
    let m = TestManager::start(fast_hub()).await;
    let mut first = FakeAgent::join(&m, hello("id-r", "r", &[], 1)).await;
    let _second = FakeAgent::join(&m, hello("id-r", "r", &[], 1)).await;
    assert_eq!(first.close_code().await, Some(protocol::CLOSE_REPLACED));
    let agents = m.hub.agents();
    assert_eq!(agents.len(), 1);
    assert!(agents[0].connected);
    assert_eq!(agents[0].sessions, 2);
}
