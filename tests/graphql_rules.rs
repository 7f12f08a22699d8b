//! Harness's validation rules, the usage-scope matrix, roles, stored secrets in templates,
//! the audit trail and concurrent resolves, against an in-process control plane with a
//! real local agent running real bash, over real HTTP.

mod cp_support;

use cp_support::*;
use serde_json::{json, Value};

fn tv(pairs: &[(&str, &str)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect(),
    )
}

fn sm_input(name: &str, template: &str, extra: Value) -> Value {
    let mut c = json!({"name": name, "templateId": template, "delegateSelectors": ["local"],
        "testVariables": [{"name": "key", "value": "k1"}], "executeOnDelegate": true, "isConnectorTemplatized": false});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    json!({"secretManagerInput": {"secretManagerType": "CUSTOM", "customSecretManagerInput": c}})
}

const ECHO_KEY: &str = "secret=\"value-for-${key}\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_manager_validation_rules() {
    let data = tempfile::tempdir().unwrap();
    let cp = InProc::start(data.path()).await;
    let g = cp.admin();
    let t = g.template("echo", ECHO_KEY, &["key"]).await;

    // Only CUSTOM is served.
    let mut v = sm_input("a", &t, json!({}));
    v["secretManagerInput"]["secretManagerType"] = json!("HASHICORP_VAULT");
    assert_eq!(g.err(CREATE_SM, v).await.0, "unsupported");
    // isDefault is refused.
    let (code, msg, _) = g
        .err(CREATE_SM, sm_input("a", &t, json!({"isDefault": true})))
        .await;
    assert_eq!(code, "invalid_input");
    assert!(msg.contains("default"), "{msg}");
    // The name pattern.
    for bad in ["bad/name", "name@host", "", "tab\tname", "ünïcode"] {
        let (code, msg, _) = g.err(CREATE_SM, sm_input(bad, &t, json!({}))).await;
        assert_eq!(code, "invalid_input", "{bad}: {msg}");
        assert!(msg.contains("^[0-9a-zA-Z-' !_]+$"), "{msg}");
    }
    let ok = g
        .manager(
            "It's ok - really_1 !",
            &t,
            tv(&[("key", "k1")]),
            &["local"],
            Value::Null,
        )
        .await;
    // Unique names, with Harness's message.
    let (code, msg, _) = g
        .err(CREATE_SM, sm_input("It's ok - really_1 !", &t, json!({})))
        .await;
    assert_eq!(
        (code.as_str(), msg.as_str()),
        (
            "conflict",
            "There might be already a secret manager with this name"
        )
    );
    // Every template variable needs a test value, with Harness's message.
    let t2 = g
        .template("three", "secret=\"${a}${b}${c}\"", &["a", "b", "c"])
        .await;
    let (code, msg, _) = g
        .err(
            CREATE_SM,
            sm_input(
                "m3",
                &t2,
                json!({"testVariables": [{"name": "b", "value": "x"}]}),
            ),
        )
        .await;
    assert_eq!(code, "invalid_input");
    assert_eq!(
        msg,
        "The values for the variables [a, c] have not been provided as part of test parameters"
    );
    // templateId must name a template.
    let (code, msg, _) = g
        .err(CREATE_SM, sm_input("m4", "no-such-template", json!({})))
        .await;
    assert_eq!(code, "invalid_input", "{msg}");
    assert!(msg.contains("no-such-template"), "{msg}");
    // host and connectorId are required when the script does not run on an agent; the
    // connector must be an SSH credential.
    let (code, msg, _) = g
        .err(
            CREATE_SM,
            sm_input("m5", &t, json!({"executeOnDelegate": false})),
        )
        .await;
    assert_eq!(code, "invalid_input");
    assert!(msg.contains("host"), "{msg}");
    let (code, msg, _) = g
        .err(
            CREATE_SM,
            sm_input(
                "m5",
                &t,
                json!({"executeOnDelegate": false, "host": "127.0.0.1"}),
            ),
        )
        .await;
    assert_eq!(code, "invalid_input");
    assert!(msg.contains("connectorId"), "{msg}");
    let builtin = g.value_secret("not-a-connector", "some-value-123").await;
    let (code, msg, _) = g
        .err(
            CREATE_SM,
            sm_input(
                "m5",
                &t,
                json!({"executeOnDelegate": false, "host": "127.0.0.1", "connectorId": builtin}),
            ),
        )
        .await;
    assert_eq!(code, "invalid_input");
    assert!(msg.contains("SSH credential"), "{msg}");
    // A scope giving both an id and a filterType is rejected.
    let both = json!({"appEnvScopes": [{"application": {"filterType": "ALL", "appId": "a1"}, "environment": {"filterType": "PRODUCTION_ENVIRONMENTS"}}]});
    let (code, msg, _) = g
        .err(CREATE_SM, sm_input("m6", &t, json!({"usageScope": both})))
        .await;
    assert_eq!(code, "invalid_input");
    assert!(msg.contains("exactly one of filterType and appId"), "{msg}");
    // commandPath defaults to /tmp.
    let q = "query($id: String!) { secretManager(secretManagerId: $id) { name config { ... on CustomSecretManagerConfig { commandPath delegateSelectors executeOnDelegate testVariables { name } } } } }";
    let d = g.ok(q, json!({"id": ok})).await;
    assert_eq!(d["secretManager"]["config"]["commandPath"], "/tmp");

    // Validation runs the script: a failure fails the mutation with the script's kind and
    // a masked message, and nothing is stored.
    let tf = g
        .template("fails", "echo \"looking up ${key}\" >&2; exit 3", &["key"])
        .await;
    let (code, msg, r) = g
        .err(
            CREATE_SM,
            sm_input(
                "failing",
                &tf,
                json!({"testVariables": [{"name": "key", "value": "test-value-s3cret"}]}),
            ),
        )
        .await;
    assert_eq!(code, "script_failed", "{msg}");
    assert!(msg.contains("status 3"), "{msg}");
    assert!(msg.contains("***"), "the value is masked: {msg}");
    assert!(!r.body.contains("test-value-s3cret"), "{}", r.body);
    let d = g
        .ok(
            "{ secretManagerByName(name: \"failing\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(d["secretManagerByName"], Value::Null, "nothing stored");
    // No agent has the selectors: the error names them, at once.
    let started = std::time::Instant::now();
    let (code, msg, _) = g
        .err(
            CREATE_SM,
            sm_input("gpu", &t, json!({"delegateSelectors": ["local", "GPU "]})),
        )
        .await;
    assert_eq!(code, "no_agent");
    assert!(msg.contains("[local, gpu]"), "{msg}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));

    // An update overwrites only the fields it gives (the stored test values validate it).
    let d = g
        .ok(SEED_UPDATE, json!({"input": {"secretManagerId": ok, "secretManagerType": "CUSTOM", "customSecretManagerInput": {"name": "renamed"}}}))
        .await;
    assert_eq!(d["updateSecretManager"]["secretManager"]["name"], "renamed");
    let d = g.ok(q, json!({"id": ok})).await;
    let c = &d["secretManager"]["config"];
    assert_eq!(c["delegateSelectors"], json!(["local"]));
    assert_eq!(c["testVariables"], json!([{"name": "key"}]));
    // executeOnDelegate and isConnectorTemplatized are fixed after creation.
    for field in ["executeOnDelegate", "isConnectorTemplatized"] {
        let cur = field == "executeOnDelegate";
        let (code, msg, _) = g
            .err(SEED_UPDATE, json!({"input": {"secretManagerId": ok, "secretManagerType": "CUSTOM", "customSecretManagerInput": {field: !cur}}}))
            .await;
        assert_eq!(code, "invalid_input");
        assert!(
            msg.contains(field) && msg.contains("cannot be changed"),
            "{msg}"
        );
    }
    // An update that fails validation changes nothing.
    let (code, _, _) = g
        .err(SEED_UPDATE, json!({"input": {"secretManagerId": ok, "secretManagerType": "CUSTOM", "customSecretManagerInput": {"name": "renamed-again", "templateId": tf}}}))
        .await;
    assert_eq!(code, "script_failed");
    let d = g.ok(q, json!({"id": ok})).await;
    assert_eq!(d["secretManager"]["name"], "renamed");

    // Delete is refused while secrets use the manager.
    let s = g
        .param_secret("uses-it", &ok, tv(&[("key", "k9")]), Value::Null)
        .await;
    let (code, msg, _) = g
        .err(SEED_DELETE, json!({"input": {"secretManagerId": ok}}))
        .await;
    assert_eq!(code, "in_use");
    assert!(msg.contains(&s), "{msg}");

    // Templates in use cannot change or go.
    let (code, _, _) = g
        .err(
            "mutation($i: UpdateTemplateInput!) { updateTemplate(input: $i) { template { id } } }",
            json!({"i": {"templateId": t, "scriptString": "secret=x"}}),
        )
        .await;
    assert_eq!(code, "in_use");
    let (code, _, _) = g
        .err(
            "mutation($i: DeleteTemplateInput!) { deleteTemplate(input: $i) { clientMutationId } }",
            json!({"i": {"templateId": t}}),
        )
        .await;
    assert_eq!(code, "in_use");
    let d = g
        .ok("mutation($i: UpdateTemplateInput!) { updateTemplate(input: $i) { clientMutationId template { id version scriptString } } }", json!({"i": {"templateId": t2, "scriptString": "secret=\"${a}-${b}-${c}\"", "clientMutationId": "u1"}}))
        .await;
    assert_eq!(d["updateTemplate"]["clientMutationId"], "u1");
    assert_eq!(d["updateTemplate"]["template"]["version"], 2);
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_rules_stored_secrets_and_masking() {
    let data = tempfile::tempdir().unwrap();
    let cp = InProc::start(data.path()).await;
    let g = cp.admin();
    let t = g.template("echo", ECHO_KEY, &["key"]).await;
    let sm = g
        .manager("m", &t, tv(&[("key", "k")]), &["local"], Value::Null)
        .await;
    let text = |v: Value| json!({"input": {"secretType": "ENCRYPTED_TEXT", "encryptedText": v}});
    // Exactly one of value, secretReference, parameters.
    let (code, _, _) = g.err(CREATE_SECRET, text(json!({"name": "x", "value": "v1234", "secretManagerId": sm, "parameters": [{"name": "key", "value": "p"}]}))).await;
    assert_eq!(code, "invalid_input");
    let (code, _, _) = g.err(CREATE_SECRET, text(json!({"name": "x"}))).await;
    assert_eq!(code, "invalid_input");
    // A custom manager is read-only.
    let (code, msg, _) = g
        .err(
            CREATE_SECRET,
            text(json!({"name": "x", "value": "v1234", "secretManagerId": sm})),
        )
        .await;
    assert_eq!(code, "invalid_input");
    assert!(msg.contains("read-only"), "{msg}");
    let (code, _, _) = g
        .err(
            CREATE_SECRET,
            text(json!({"name": "x", "parameters": [{"name": "key", "value": "p"}]})),
        )
        .await;
    assert_eq!(code, "invalid_input");
    // Parameters are validated by a fetch; a failing fetch stores nothing.
    let tf = g
        .template(
            "fail-on-bad",
            "[ \"${key}\" = good ] || exit 4; secret=ok",
            &["key"],
        )
        .await;
    let smf = g
        .manager("mf", &tf, tv(&[("key", "good")]), &["local"], Value::Null)
        .await;
    let (code, _, _) = g.err(CREATE_SECRET, text(json!({"name": "bad", "secretManagerId": smf, "parameters": [{"name": "key", "value": "bad"}]}))).await;
    assert_eq!(code, "script_failed");
    let d = g
        .ok(
            "{ secretByName(name: \"bad\", secretType: ENCRYPTED_TEXT) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(d["secretByName"], Value::Null);
    // Unique names.
    g.value_secret("api-token", "tok-3x4mpl3-value").await;
    let (code, _, _) = g
        .err(
            CREATE_SECRET,
            text(json!({"name": "api-token", "value": "other"})),
        )
        .await;
    assert_eq!(code, "conflict");

    // ${secrets.getValue("api-token")} is resolved from the built-in store and masked.
    let ts = g
        .template("uses-stored", "echo \"calling with ${secrets.getValue(\"api-token\")}\" >&2; [ \"${key}\" = fail ] && exit 5; secret=\"${secrets.getValue(\"api-token\")}/${key}\"", &["key"])
        .await;
    let sms = g
        .manager("ms", &ts, tv(&[("key", "k")]), &["local"], Value::Null)
        .await;
    let s = g
        .param_secret("composed", &sms, tv(&[("key", "abc")]), Value::Null)
        .await;
    assert_eq!(
        g.resolve(&s, None, None, None).await.unwrap(),
        "tok-3x4mpl3-value/abc"
    );
    let (code, msg, r) = g
        .err(CREATE_SECRET, text(json!({"name": "f", "secretManagerId": sms, "parameters": [{"name": "key", "value": "fail"}]})))
        .await;
    assert_eq!(code, "script_failed");
    assert!(msg.contains("calling with ***"), "{msg}");
    assert!(!r.body.contains("tok-3x4mpl3"), "{}", r.body);

    // SSH credentials refer to built-in secrets; those cannot be deleted while used.
    let key_secret = g
        .value_secret(
            "deploy-key",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n",
        )
        .await;
    let ssh = |name: &str, key_id: &str| {
        json!({"input": {"secretType": "SSH_CREDENTIAL", "clientMutationId": "c-ssh", "sshCredential": {
            "name": name, "authenticationScheme": "SSH", "hostKeys": ["SHA256:AAAA"],
            "sshAuthentication": {"userName": "deploy", "port": 22, "sshAuthenticationMethod": {
                "sshCredentialType": "SSH_KEY", "inlineSSHKey": {"sshKeySecretFileId": key_id}}}}}})
    };
    let (code, _, _) = g.err(CREATE_SECRET, ssh("conn", "missing-id")).await;
    assert_eq!(code, "invalid_input");
    let d = g.ok(CREATE_SECRET, ssh("conn", &key_secret)).await;
    assert_eq!(d["createSecret"]["clientMutationId"], "c-ssh");
    let conn = d["createSecret"]["secret"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let d = g
        .ok("query($id: String!) { secret(secretId: $id, secretType: SSH_CREDENTIAL) { id secretType ... on SSHCredential { hostKeys authenticationType { ... on SSHAuthentication { userName port sshAuthenticationMethod { sshCredentialType inlineSSHKey { sshKeySecretFileId } } } } } } }", json!({"id": conn}))
        .await;
    assert_eq!(d["secret"]["authenticationType"]["userName"], "deploy");
    assert_eq!(
        d["secret"]["authenticationType"]["sshAuthenticationMethod"]["inlineSSHKey"]
            ["sshKeySecretFileId"],
        key_secret.as_str()
    );
    assert_eq!(d["secret"]["hostKeys"], json!(["SHA256:AAAA"]));
    let (code, _, _) = g
        .err(
            "mutation($i: DeleteSecretInput!) { deleteSecret(input: $i) { clientMutationId } }",
            json!({"i": {"secretId": key_secret, "secretType": "ENCRYPTED_TEXT"}}),
        )
        .await;
    assert_eq!(code, "in_use");
    // A wrong secretType does not find it.
    let (code, _, _) = g
        .err(
            "mutation($i: DeleteSecretInput!) { deleteSecret(input: $i) { clientMutationId } }",
            json!({"i": {"secretId": conn, "secretType": "ENCRYPTED_TEXT"}}),
        )
        .await;
    assert_eq!(code, "not_found");
    // updateSecret changes a built-in value.
    let d = g
        .ok("mutation($i: UpdateSecretInput!) { updateSecret(input: $i) { clientMutationId secret { id name } } }",
            json!({"i": {"secretId": s, "secretType": "ENCRYPTED_TEXT", "clientMutationId": "u", "encryptedText": {"name": "composed-2"}}}))
        .await;
    assert_eq!(d["updateSecret"]["secret"]["name"], "composed-2");
    let tok = g
        .ok(
            "{ secretByName(name: \"api-token\", secretType: ENCRYPTED_TEXT) { id } }",
            json!({}),
        )
        .await["secretByName"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    g.ok("mutation($i: UpdateSecretInput!) { updateSecret(input: $i) { secret { id } } }",
        json!({"i": {"secretId": tok, "secretType": "ENCRYPTED_TEXT", "encryptedText": {"value": "new-token-value"}}}))
        .await;
    assert_eq!(
        g.resolve(&s, None, None, None).await.unwrap(),
        "new-token-value/abc"
    );
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_scope_matrix_roles_and_audit() {
    let data = tempfile::tempdir().unwrap();
    let cp = InProc::start(data.path()).await;
    let g = cp.admin();
    let r = cp.resolver();
    let t = g.template("echo", ECHO_KEY, &["key"]).await;
    let scope = |app: Value, env: Value| json!({"appEnvScopes": [{"application": app, "environment": env}]});
    let all = json!({"filterType": "ALL"});
    let prod = json!({"filterType": "PRODUCTION_ENVIRONMENTS"});
    let nonprod = json!({"filterType": "NON_PRODUCTION_ENVIRONMENTS"});
    // Manager: any app, production only.
    let sm = g
        .manager(
            "prod-only",
            &t,
            tv(&[("key", "k")]),
            &["local"],
            scope(all.clone(), prod.clone()),
        )
        .await;
    // Secrets with their own scopes.
    let s_any = g
        .param_secret("s-any", &sm, tv(&[("key", "any")]), Value::Null)
        .await;
    let s_app = g
        .param_secret(
            "s-app",
            &sm,
            tv(&[("key", "app")]),
            scope(json!({"appId": "a1"}), prod.clone()),
        )
        .await;
    let s_env = g
        .param_secret(
            "s-env",
            &sm,
            tv(&[("key", "env")]),
            scope(all.clone(), json!({"envId": "e1"})),
        )
        .await;
    let s_np = g
        .param_secret(
            "s-np",
            &sm,
            tv(&[("key", "np")]),
            scope(all.clone(), nonprod.clone()),
        )
        .await;
    let d = g
        .ok(CREATE_SECRET, json!({"input": {"secretType": "ENCRYPTED_TEXT", "encryptedText": {"name": "s-inh", "secretManagerId": sm, "parameters": [{"name": "key", "value": "inh"}], "inheritScopesFromSM": true, "usageScope": scope(all.clone(), nonprod.clone())}}}))
        .await;
    let s_inh = d["createSecret"]["secret"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b_env = g.value_secret("b-env", "builtin-value").await;
    g.ok("mutation($i: UpdateSecretInput!) { updateSecret(input: $i) { secret { id } } }",
        json!({"i": {"secretId": b_env, "secretType": "ENCRYPTED_TEXT", "encryptedText": {"usageScope": scope(json!({"appId": "a1"}), json!({"envId": "e1"}))}}}))
        .await;

    // (secret, appId, envId, environmentType, expected value or None for out of scope)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            &s_any,
            Some("a1"),
            None,
            Some("PROD"),
            Some("value-for-any"),
        ),
        (&s_any, None, None, Some("PROD"), Some("value-for-any")),
        (&s_any, Some("a1"), None, Some("NON_PROD"), None), // the manager's scope
        (&s_any, Some("a1"), None, None, None),
        (
            &s_app,
            Some("a1"),
            None,
            Some("PROD"),
            Some("value-for-app"),
        ),
        (&s_app, Some("a2"), None, Some("PROD"), None),
        (&s_app, None, None, Some("PROD"), None),
        (
            &s_env,
            Some("a1"),
            Some("e1"),
            Some("PROD"),
            Some("value-for-env"),
        ),
        (&s_env, Some("a1"), Some("e2"), Some("PROD"), None),
        (&s_env, Some("a1"), Some("e1"), Some("NON_PROD"), None), // the manager's scope
        (&s_np, Some("a1"), None, Some("NON_PROD"), None),        // the manager's scope
        (&s_np, Some("a1"), None, Some("PROD"), None),            // its own scope
        (
            &s_inh,
            Some("a1"),
            None,
            Some("PROD"),
            Some("value-for-inh"),
        ), // the manager's scope instead of its own
        (&s_inh, Some("a1"), None, Some("NON_PROD"), None),
        (&b_env, Some("a1"), Some("e1"), None, Some("builtin-value")),
        (&b_env, Some("a1"), Some("e2"), None, None),
        (&b_env, Some("a2"), Some("e1"), None, None),
    ];
    for (i, (s, app, env, ty, want)) in cases.iter().enumerate() {
        let got = r.resolve(s, *app, *env, *ty).await;
        match (want, got) {
            (Some(w), Ok(v)) => assert_eq!(&v, w, "case {i}"),
            (None, Err((code, _))) => assert_eq!(code, "out_of_scope", "case {i}"),
            (w, got) => panic!("case {i}: wanted {w:?}, got {got:?}"),
        }
    }

    // Roles: a resolve key reads and resolves, and cannot mutate.
    let (code, _, r1) = r
        .err(
            "mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { template { id } } }",
            json!({"i": {"name": "x", "scriptString": "secret=1"}}),
        )
        .await;
    assert_eq!(code, "forbidden");
    assert!(r1.json["data"]["createTemplate"].is_null());
    for (doc, vars) in [
        (SEED_DELETE, json!({"input": {"secretManagerId": sm}})),
        (
            CREATE_SECRET,
            json!({"input": {"secretType": "ENCRYPTED_TEXT", "encryptedText": {"name": "y", "value": "forbidden-value-1"}}}),
        ),
        (
            SEED_UPDATE,
            json!({"input": {"secretManagerId": sm, "secretManagerType": "CUSTOM", "customSecretManagerInput": {"name": "z"}}}),
        ),
    ] {
        assert_eq!(r.err(doc, vars).await.0, "forbidden");
    }
    let d = r
        .ok(
            "{ secretManagers(limit: 10) { pageInfo { total } } }",
            json!({}),
        )
        .await;
    assert_eq!(d["secretManagers"]["pageInfo"]["total"], 1);
    let d = g
        .ok(
            "query($id: String!) { secretManager(secretManagerId: $id) { name } }",
            json!({"id": sm}),
        )
        .await;
    assert_eq!(
        d["secretManager"]["name"], "prod-only",
        "the refused update changed nothing"
    );

    // The audit trail: every mutation and resolve, with key ids, agents, outcomes; no
    // value, no key.
    let d = g
        .ok("{ auditEvents(limit: 1000) { nodes { id time keyId operation objectIds agent outcome durationMs } pageInfo { total hasMore } } }", json!({}))
        .await;
    let events = d["auditEvents"]["nodes"].as_array().unwrap();
    let text = d.to_string();
    for v in [
        "value-for-",
        "builtin-value",
        "forbidden-value-1",
        ADMIN_KEY,
        RESOLVE_KEY,
    ] {
        assert!(!text.contains(v), "{v} in the audit trail");
    }
    assert!(text.contains("key-"), "positive control: key ids are there");
    let find = |op: &str, outcome: &str| {
        events
            .iter()
            .find(|e| e["operation"] == op && e["outcome"] == outcome)
            .cloned()
    };
    let created = find("createSecretManager", "ok").expect("createSecretManager audited");
    assert_eq!(
        created["objectIds"].as_array().unwrap().last().unwrap(),
        &json!(sm)
    );
    assert_eq!(created["agent"], "local");
    let resolved = events
        .iter()
        .find(|e| {
            e["operation"] == "resolveSecret" && e["outcome"] == "ok" && e["agent"] == "local"
        })
        .expect("a resolve through the manager audited");
    assert!(resolved["objectIds"]
        .as_array()
        .unwrap()
        .contains(&json!(sm)));
    let builtin = events
        .iter()
        .find(|e| e["operation"] == "resolveSecret" && e["objectIds"] == json!([b_env]))
        .expect("a built-in resolve audited");
    assert_eq!(builtin["agent"], Value::Null, "no agent ran it");
    assert!(find("resolveSecret", "out_of_scope").is_some());
    assert!(find("createTemplate", "forbidden").is_some());
    assert!(find("createSecret", "ok").is_some() && find("updateSecret", "ok").is_some());
    assert_ne!(
        created["keyId"],
        find("createTemplate", "forbidden").unwrap()["keyId"]
    );
    assert_eq!(
        events.len() as i64,
        d["auditEvents"]["pageInfo"]["total"].as_i64().unwrap()
    );
    // Newest first.
    assert!(events[0]["id"].as_str() > events[events.len() - 1]["id"].as_str());
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_resolves_each_get_their_own_value() {
    let data = tempfile::tempdir().unwrap();
    let cp = InProc::start(data.path()).await;
    let g = cp.admin();
    let t = g.template("echo", ECHO_KEY, &["key"]).await;
    let sm = g
        .manager("m", &t, tv(&[("key", "k")]), &["local"], Value::Null)
        .await;
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(
            g.param_secret(
                &format!("s{i}"),
                &sm,
                tv(&[("key", &format!("n{i}"))]),
                Value::Null,
            )
            .await,
        );
    }
    let r = cp.resolver();
    let tasks: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (r, id) = (r.clone(), id.clone());
            tokio::spawn(async move { (i, r.resolve(&id, None, None, None).await) })
        })
        .collect();
    for t in tasks {
        let (i, v) = t.await.unwrap();
        assert_eq!(v.unwrap(), format!("value-for-n{i}"));
    }
    cp.stop().await;
}
