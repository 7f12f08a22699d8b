//! The seed's documents, verbatim, over HTTP against a real `csm-agent dev` process; the
//! queries real clients send; persistence across a restart; no plaintext at rest; bad
//! keys and malformed requests.

mod cp_support;

use std::os::unix::fs::PermissionsExt;

use cp_support::*;
use serde_json::{json, Value};

/// The seed's create variables (script on a delegate), verbatim.
const SEED_CREATE_VARS: &str = r#"{  
        "secretManagerInput": {  
            "secretManagerType": "CUSTOM",  
            "customSecretManagerInput": {  
                "name": "DocExampleSecretManager",  
                "delegateSelectors": [],  
                "testVariables": [  
                    {  
                        "name": "key",  
                        "value": "xxxx"  
                    },  
                    {  
                        "name": "engineName",  
                        "value": "xxxx"  
                    },  
                    {  
                        "name": "path",  
                        "value": "xxxx"  
                    }  
                ],  
                "isConnectorTemplatized": false,  
                "executeOnDelegate": true,  
                "templateId": "xxxxxxxxxxxxxxxxxxxxxx",  
                "host": null,  
                "commandPath": "/tmp",  
                "connectorId": null,  
                "usageScope": {  
                    "appEnvScopes": [  
                        {  
                            "application": {  
                                "filterType": "ALL"  
                            },  
                            "environment": {  
                                "filterType": "PRODUCTION_ENVIRONMENTS"  
                            }  
                        }  
                    ]  
                }  
            }  
        }  
    }"#;

/// The seed's update variables, verbatim.
const SEED_UPDATE_VARS: &str = r#"{  
    "input": {  
        "secretManagerId": "xxxxxxxxxx",  
        "secretManagerType": "CUSTOM",  
        "customSecretManagerInput": {  
            "name": "DocExampleSecretManager_updated1",  
            "delegateSelectors": [],  
            "testVariables": [  
                {  
                    "name": "key",  
                    "value": "xxxx"  
                },  
                {  
                    "name": "engineName",  
                    "value": "xxxx"  
                },  
                {  
                    "name": "path",  
                    "value": "xxxx"  
                }  
            ],  
            "isConnectorTemplatized": false,  
            "executeOnDelegate": true,  
            "templateId": "xxxxxxxxxxxxxxxxxxxxx",  
            "host": null,  
            "commandPath": "/tmp",  
            "connectorId": null,  
            "usageScope": {  
                "appEnvScopes": [  
                    {  
                        "application": {  
                            "filterType": "ALL"  
                        },  
                        "environment": {  
                            "filterType": "PRODUCTION_ENVIRONMENTS"  
                        }  
                    }  
                ]  
            }  
        }  
    }  
}"#;

/// The seed's delete variables, verbatim.
const SEED_DELETE_VARS: &str = r#"{  
  "input": {  
    "clientMutationId": "xPxNsOusEaAsdQifDdGxx",  
    "secretManagerId": "xxxxxxxxxx"  
  }  
}"#;

/// The seed's variables with real ids in place of the placeholders.
fn seed_vars(text: &str, template: &str, manager: &str) -> Value {
    let t = text
        .replace("\"xxxxxxxxxxxxxxxxxxxxxx\"", &format!("\"{template}\""))
        .replace("\"xxxxxxxxxxxxxxxxxxxxx\"", &format!("\"{template}\""))
        .replace("\"xxxxxxxxxx\"", &format!("\"{manager}\""));
    serde_json::from_str(&t).unwrap()
}

/// A template reading `ROOT/${engineName}/${path}/${key}`, and a store where the seed's
/// test values (`xxxx` everywhere) find a value.
fn file_store(root: &std::path::Path) -> String {
    std::fs::create_dir_all(root.join("xxxx/xxxx")).unwrap();
    std::fs::write(root.join("xxxx/xxxx/xxxx"), "validation-value").unwrap();
    std::fs::create_dir_all(root.join("kv/prod")).unwrap();
    std::fs::write(root.join("kv/prod/db-password"), "hunter2-db-password").unwrap();
    format!(
        "secret=$(cat \"{}/${{engineName}}/${{path}}/${{key}}\")",
        root.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_documents_verbatim_against_a_real_dev_process() {
    let store = tempfile::tempdir().unwrap();
    let dev = DevProc::start(ADMIN_KEY, &[]);
    assert!(
        dev.banner.iter().any(|l| l.contains(ADMIN_KEY)),
        "the key is printed: {:?}",
        dev.banner
    );
    let g = Gql::new(&dev.url, ADMIN_KEY);
    let t = g
        .template(
            "file-store",
            &file_store(store.path()),
            &["key", "engineName", "path"],
        )
        .await;

    // createSecretManager: the seed's document and variables.
    let d = g.ok(SEED_CREATE, seed_vars(SEED_CREATE_VARS, &t, "")).await;
    let sm = d["createSecretManager"]["secretManager"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sm.len(), 22);

    // The queries real clients send: by id, by name, the list with pageInfo, the config
    // union through an inline fragment.
    let q = "query($id: String!) { secretManager(secretManagerId: $id) { id name usageScope { appEnvScopes { application { filterType appId } environment { filterType envId } } } config { __typename ... on CustomSecretManagerConfig { templateId executeOnDelegate commandPath delegateSelectors testVariables { name value } } } } }";
    let d = g.ok(q, json!({"id": sm})).await;
    let m = &d["secretManager"];
    assert_eq!(m["name"], "DocExampleSecretManager");
    assert_eq!(m["config"]["__typename"], "CustomSecretManagerConfig");
    assert_eq!(m["config"]["templateId"], t.as_str());
    assert_eq!(m["config"]["commandPath"], "/tmp");
    assert_eq!(
        m["config"]["testVariables"][0]["value"],
        Value::Null,
        "values are never returned"
    );
    assert_eq!(
        m["usageScope"]["appEnvScopes"][0]["environment"]["filterType"],
        "PRODUCTION_ENVIRONMENTS"
    );
    let d = g
        .ok("{ secretManagerByName(name: \"DocExampleSecretManager\") { id } secretManagers(limit: 10, offset: 0) { nodes { id name } pageInfo { hasMore total limit offset } } }", json!({}))
        .await;
    assert_eq!(d["secretManagerByName"]["id"], sm.as_str());
    assert_eq!(d["secretManagers"]["pageInfo"]["total"], 1);
    assert_eq!(d["secretManagers"]["pageInfo"]["hasMore"], false);
    assert_eq!(d["secretManagers"]["nodes"][0]["id"], sm.as_str());

    // The SDK's filters.
    let fq = "query($ids: [String]) { secretManagers(filters: [{secretManager: {operator: IN, values: $ids}}, {type: {operator: EQUALS, values: [CUSTOM]}}], limit: 10) { nodes { id } pageInfo { total } } }";
    let d = g.ok(fq, json!({"ids": [sm]})).await;
    assert_eq!(d["secretManagers"]["nodes"][0]["id"], sm.as_str());
    let d = g.ok(fq, json!({"ids": ["nope"]})).await;
    assert_eq!(d["secretManagers"]["pageInfo"]["total"], 0);

    // A secret through it, in the SDK's shape, resolved in production.
    let s = g.param_secret("db-password", &sm, json!([{"name": "key", "value": "db-password"}, {"name": "engineName", "value": "kv"}, {"name": "path", "value": "prod"}]), Value::Null).await;
    let d = g
        .ok("query($id: String!) { secret(secretId: $id, secretType: ENCRYPTED_TEXT) { id name secretType ... on EncryptedText { secretManagerId inheritScopesFromSM scopedToAccount } usageScope { appEnvScopes { application { filterType } } } } }", json!({"id": s}))
        .await;
    assert_eq!(d["secret"]["secretManagerId"], sm.as_str());
    assert_eq!(d["secret"]["secretType"], "ENCRYPTED_TEXT");
    assert_eq!(
        g.resolve(&s, Some("app"), None, Some("PROD"))
            .await
            .unwrap(),
        "hunter2-db-password"
    );

    // updateSecretManager: the seed's document and variables.
    let d = g
        .ok(SEED_UPDATE, seed_vars(SEED_UPDATE_VARS, &t, &sm))
        .await;
    assert_eq!(
        d["updateSecretManager"]["secretManager"]["name"],
        "DocExampleSecretManager_updated1"
    );
    assert_eq!(d["updateSecretManager"]["secretManager"]["id"], sm.as_str());

    // deleteSecretManager: refused while the secret uses it, then the seed's document.
    let (code, msg, _) = g
        .err(SEED_DELETE, seed_vars(SEED_DELETE_VARS, &t, &sm))
        .await;
    assert_eq!(code, "in_use", "{msg}");
    assert!(msg.contains(&s), "{msg}");
    g.ok(
        "mutation($i: DeleteSecretInput!) { deleteSecret(input: $i) { clientMutationId } }",
        json!({"i": {"secretId": s, "secretType": "ENCRYPTED_TEXT", "clientMutationId": "c1"}}),
    )
    .await;
    let d = g
        .ok(SEED_DELETE, seed_vars(SEED_DELETE_VARS, &t, &sm))
        .await;
    assert_eq!(
        d["deleteSecretManager"]["clientMutationId"],
        "xPxNsOusEaAsdQifDdGxx"
    );
    let d = g
        .ok(
            "query($id: String!) { secretManager(secretManagerId: $id) { id } }",
            json!({"id": sm}),
        )
        .await;
    assert_eq!(d["secretManager"], Value::Null);
    assert!(dev.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persists_across_a_restart_with_no_plaintext_at_rest() {
    let data = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_string();
    const BUILTIN: &str = "builtin-PLAINTEXT-marker-7f3a9c";
    const PARAM: &str = "param-PLAINTEXT-marker-1b2c3d";
    const TESTVAR: &str = "testvar-PLAINTEXT-marker-9e8d";
    std::fs::write(store.path().join(PARAM), "the-fetched-value").unwrap();
    std::fs::write(store.path().join(TESTVAR), "the-validation-value").unwrap();
    let script = format!("secret=$(cat \"{}/${{key}}\")", store.path().display());

    let dev = DevProc::start(ADMIN_KEY, &["--data-dir", &dir]);
    let g = Gql::new(&dev.url, ADMIN_KEY);
    let t = g
        .template("PlaintextControlTemplate", &script, &["key"])
        .await;
    let sm = g
        .manager(
            "PlaintextControlManager",
            &t,
            json!([{"name": "key", "value": TESTVAR}]),
            &["local"],
            Value::Null,
        )
        .await;
    let b = g.value_secret("builtin-secret", BUILTIN).await;
    let p = g
        .param_secret(
            "param-secret",
            &sm,
            json!([{"name": "key", "value": PARAM}]),
            Value::Null,
        )
        .await;
    assert_eq!(
        g.resolve(&p, None, None, None).await.unwrap(),
        "the-fetched-value"
    );
    assert_eq!(g.resolve(&b, None, None, None).await.unwrap(), BUILTIN);

    // While it runs (the WAL holds the recent writes): no value in any file, but the
    // non-secret names are there, so the scan would have found plaintext.
    let files = store_files(data.path());
    assert!(
        files.iter().any(|f| f.ends_with("control-plane.db-wal")),
        "a WAL exists: {files:?}"
    );
    assert!(
        store_contains(data.path(), b"PlaintextControlManager"),
        "positive control"
    );
    for needle in [BUILTIN, PARAM, TESTVAR, "the-fetched-value", ADMIN_KEY] {
        assert!(
            !store_contains(data.path(), needle.as_bytes()),
            "{needle} is in the store's files"
        );
    }
    let key_mode = std::fs::metadata(data.path().join("master.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    assert!(dev.stop().success());
    for needle in [BUILTIN, PARAM, TESTVAR] {
        assert!(
            !store_contains(data.path(), needle.as_bytes()),
            "{needle} is in the store's files after shutdown"
        );
    }
    assert!(
        store_contains(data.path(), b"PlaintextControlManager"),
        "positive control after shutdown"
    );

    // Restart on the same directory: everything is there and still decrypts.
    let dev = DevProc::start(ADMIN_KEY, &["--data-dir", &dir]);
    let g = Gql::new(&dev.url, ADMIN_KEY);
    let d = g.ok("{ secretManagers(limit: 5) { nodes { id name } } templates(limit: 5) { nodes { id } } }", json!({})).await;
    assert_eq!(d["secretManagers"]["nodes"][0]["id"], sm.as_str());
    assert_eq!(d["templates"]["nodes"][0]["id"], t.as_str());
    assert_eq!(
        g.resolve(&p, None, None, None).await.unwrap(),
        "the-fetched-value"
    );
    assert_eq!(g.resolve(&b, None, None, None).await.unwrap(), BUILTIN);
    let d = g
        .ok(
            "{ auditEvents(limit: 100) { nodes { operation } pageInfo { total } } }",
            json!({}),
        )
        .await;
    assert!(
        d["auditEvents"]["pageInfo"]["total"].as_i64().unwrap() >= 6,
        "{d}"
    );
    assert!(dev.stop().success());

    // With another master key, the store refuses to start rather than serve garbage.
    std::fs::write(
        data.path().join("master.key"),
        format!("{}\n", "ab".repeat(32)),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_csm-agent"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir", &dir])
        .env("CSM_API_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("master key does not match"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_and_malformed_requests_get_clear_errors_and_the_process_keeps_serving() {
    let dev = DevProc::start(ADMIN_KEY, &[]);
    let g = Gql::new(&dev.url, ADMIN_KEY);
    let q = "{ secretManagers(limit: 1) { pageInfo { total } } }";
    for key in [None, Some("wrong-key-0123456789abcdef"), Some("")] {
        let r = g.with_key(key).send(q, json!({})).await;
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(
            r.json["errors"][0]["extensions"]["code"], "unauthenticated",
            "{}",
            r.body
        );
        assert!(r.json.get("data").is_none(), "no data: {}", r.body);
    }
    let h = [("x-api-key", ADMIN_KEY)];
    let r = post(&dev.url, &h, b"{not json").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json["errors"][0]["extensions"]["code"], "bad_request");
    let r = post(&dev.url, &h, br#"{"query": 5}"#).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let big = format!(
        "{{\"query\": \"{{ __typename }}\", \"variables\": {{\"x\": \"{}\"}}}}",
        "a".repeat(2 << 20)
    );
    let r = post(&dev.url, &h, big.as_bytes()).await;
    assert_eq!(r.status, 413, "{}", r.body);
    let (_, msg, r) = g
        .err("{ secretManagers(limit: 1) { nodes { id } ", json!({}))
        .await;
    assert!(
        r.json.get("data").is_none() || r.json["data"].is_null(),
        "{}",
        r.body
    );
    assert!(!msg.is_empty());
    let mut deep = String::from("name");
    for _ in 0..20 {
        deep = format!("ofType {{ {deep} }}");
    }
    let (_, msg, _) = g
        .err(
            &format!("{{ __schema {{ types {{ fields {{ type {{ {deep} }} }} }} }} }}"),
            json!({}),
        )
        .await;
    assert!(
        msg.to_lowercase().contains("deep") || msg.to_lowercase().contains("depth"),
        "{msg}"
    );
    let mut nested = String::from("__typename");
    for _ in 0..40 {
        nested = format!("... on Query {{ {nested} }}");
    }
    let (_, msg, _) = g.err(&format!("{{ {nested} }}"), json!({})).await;
    assert!(!msg.is_empty());
    // A wrong-typed value is refused without echoing it.
    let (_, msg, r) = g
        .err(
            "mutation($i: CreateSecretInput!) { createSecret(input: $i) { secret { id } } }",
            json!({"i": {"secretType": "ENCRYPTED_TEXT", "encryptedText": {"name": "x", "value": {"nested": "s3cret-value-9"}}}}),
        )
        .await;
    assert!(!r.body.contains("s3cret-value-9"), "{msg}");
    // A syntax error quotes the query line: an inline value in it is scrubbed.
    let (_, msg, r) = g
        .err(
            "mutation { createSecret(input: {secretType: ENCRYPTED_TEXT, encryptedText: {name: \"n\", value: \"inline-s3cret-9\"}}) { secret { id } ",
            json!({}),
        )
        .await;
    assert!(msg.contains("***"), "{msg}");
    assert!(!r.body.contains("inline-s3cret-9"), "{}", r.body);
    // GraphiQL on GET.
    let page = get(&dev.url).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("graphiql"), "{}", page.body);
    // Still serving.
    let d = g.ok(q, json!({})).await;
    assert_eq!(d["secretManagers"]["pageInfo"]["total"], 0);
    assert!(dev.stop().success());
}
