//! The control plane with a separate, real agent process: a manager whose agent is gone
//! fails fast with an error naming the selectors, and works again when an agent with
//! those selectors connects.

mod cp_support;
mod support;

use std::time::{Duration, Instant};

use cp_support::*;
use csm_agent::manager::api::{self, ApiConfig};
use csm_agent::manager::auth::{ApiKeys, Role};
use csm_agent::manager::{AgentTokens, Hub, ManagerConfig};
use serde_json::{json, Value};
use support::agentnet::{random_token, within, AgentOpts, AgentProc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_whose_agent_is_gone_fails_fast_naming_the_selectors() {
    let data = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = random_token("agent-token");
    let token_file = data.path().join("agent-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mcfg = ManagerConfig::new(AgentTokens::from_lines(&token));
    let hub = Hub::new(mcfg.hub.clone());
    let mut keys = ApiKeys::empty();
    keys.add(ADMIN_KEY.as_bytes(), Role::Admin);
    let (_cp, state) =
        api::open(ApiConfig::new(data.path().join("store"), keys), hub.clone()).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(csm_agent::manager::serve_with(
        listener,
        hub.clone(),
        mcfg,
        api::router(state),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let base = format!("http://{addr}");
    let g = Gql::new(&format!("{base}/graphql"), ADMIN_KEY);

    let mut opts = AgentOpts::named("edge-1");
    opts.selectors = vec!["edge".into(), "eu".into()];
    let mut agent = AgentProc::start(&base, &token_file, opts);
    within(
        "the agent connects",
        hub.wait_for(|a| a.iter().any(|x| x.connected)),
    )
    .await;

    let t = g.template("echo", "secret=\"v-${key}\"", &["key"]).await;
    let sm = g
        .manager(
            "edge-manager",
            &t,
            json!([{"name": "key", "value": "k"}]),
            &["Edge", "eu"],
            Value::Null,
        )
        .await;
    let s = g
        .param_secret(
            "s",
            &sm,
            json!([{"name": "key", "value": "1"}]),
            Value::Null,
        )
        .await;
    assert_eq!(g.resolve(&s, None, None, None).await.unwrap(), "v-1");

    agent.kill();
    within(
        "the hub sees the agent go",
        hub.wait_for(|a| !a.iter().any(|x| x.connected)),
    )
    .await;
    let started = Instant::now();
    let (code, msg) = g.resolve(&s, None, None, None).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(code, "no_agent", "{msg}");
    assert!(msg.contains("[edge, eu]"), "{msg}");
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // A new agent with the selectors: it works again.
    let mut opts = AgentOpts::named("edge-2");
    opts.selectors = vec!["eu".into(), "edge".into(), "x".into()];
    let _agent2 = AgentProc::start(&base, &token_file, opts);
    within(
        "the second agent connects",
        hub.wait_for(|a| a.iter().any(|x| x.connected)),
    )
    .await;
    assert_eq!(g.resolve(&s, None, None, None).await.unwrap(), "v-1");
    let d = g
        .ok(
            "{ auditEvents(limit: 1) { nodes { agent outcome } } }",
            json!({}),
        )
        .await;
    assert_eq!(d["auditEvents"]["nodes"][0]["agent"], "edge-2");
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
