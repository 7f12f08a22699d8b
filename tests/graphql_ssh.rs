//! A manager that runs its script on a target host over SSH (`executeOnDelegate: false`),
//! with the seed's target-host variables, a real SSH credential (an inline key held in a
//! built-in secret, a pinned host key) and a real OpenSSH sshd on loopback.

mod cp_support;
mod support;

use cp_support::*;
use serde_json::{json, Value};
use support::sshd::{KeyKind, Sshd};

/// The seed's create variables for a target host, verbatim.
const SEED_HOST_VARS: &str = r#"{  
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
            "executeOnDelegate": false,  
            "templateId": "xxxxxxxxxxxxxxxxxxxx",  
            "host": "10.0.0.17",  
            "commandPath": "/xxxx/xxxxxxx",  
            "connectorId": "xxxxxxxxxx",  
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

fn credential(name: &str, user: &str, port: u16, key_secret: &str, host_keys: &[String]) -> Value {
    json!({"input": {"secretType": "SSH_CREDENTIAL", "sshCredential": {
        "name": name, "authenticationScheme": "SSH", "hostKeys": host_keys,
        "sshAuthentication": {"userName": user, "port": port, "sshAuthenticationMethod": {
            "sshCredentialType": "SSH_KEY", "inlineSSHKey": {"sshKeySecretFileId": key_secret}}}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_target_host_variant_runs_over_ssh_with_a_pinned_host_key() {
    let sshd = Sshd::start();
    let data = tempfile::tempdir().unwrap();
    let cp = InProc::start(data.path()).await;
    let g = cp.admin();
    let key = sshd.client_key(KeyKind::Ed25519);
    let key_secret = g.value_secret("deploy-key", &key.private_pem).await;
    let d = g
        .ok(
            CREATE_SECRET,
            credential(
                "conn",
                sshd.user(),
                sshd.port(),
                &key_secret,
                &[sshd.host_key_fingerprint()],
            ),
        )
        .await;
    let conn = d["createSecret"]["secret"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = g
        .template(
            "remote",
            "secret=\"ssh:${engineName}/${path}/${key}:$(id -un)\"",
            &["key", "engineName", "path"],
        )
        .await;

    // The seed's target-host variables, with real ids, and the test sshd in place of
    // 10.0.0.17 (this machine may reach only loopback) and a directory that exists there.
    let text = SEED_HOST_VARS
        .replace("\"xxxxxxxxxxxxxxxxxxxx\"", &format!("\"{t}\""))
        .replace("\"xxxxxxxxxx\"", &format!("\"{conn}\""))
        .replace("10.0.0.17", sshd.host())
        .replace("/xxxx/xxxxxxx", "/tmp");
    let d = g
        .ok(SEED_CREATE, serde_json::from_str(&text).unwrap())
        .await;
    let sm = d["createSecretManager"]["secretManager"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let s = g
        .param_secret("remote-secret", &sm, json!([{"name": "key", "value": "db"}, {"name": "engineName", "value": "kv"}, {"name": "path", "value": "prod"}]), Value::Null)
        .await;
    let want = format!("ssh:kv/prod/db:{}", sshd.user());
    assert_eq!(g.resolve(&s, None, None, Some("PROD")).await.unwrap(), want);
    // The credential's key secret cannot go while the credential uses it, nor the
    // credential while the manager does.
    let del = "mutation($i: DeleteSecretInput!) { deleteSecret(input: $i) { clientMutationId } }";
    assert_eq!(
        g.err(
            del,
            json!({"i": {"secretId": key_secret, "secretType": "ENCRYPTED_TEXT"}})
        )
        .await
        .0,
        "in_use"
    );
    assert_eq!(
        g.err(
            del,
            json!({"i": {"secretId": conn, "secretType": "SSH_CREDENTIAL"}})
        )
        .await
        .0,
        "in_use"
    );

    // A host key that is not the server's is refused, and nothing is stored.
    let d = g
        .ok(
            CREATE_SECRET,
            credential(
                "wrong-pin",
                sshd.user(),
                sshd.port(),
                &key_secret,
                &["SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string()],
            ),
        )
        .await;
    let wrong = d["createSecret"]["secret"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let text = text
        .replace(&format!("\"{conn}\""), &format!("\"{wrong}\""))
        .replace("DocExampleSecretManager", "WrongPin");
    let (code, msg, r) = g
        .err(SEED_CREATE, serde_json::from_str(&text).unwrap())
        .await;
    assert_eq!(code, "host_key", "{msg}");
    assert!(!r.body.contains("PRIVATE KEY"), "{}", r.body);
    let d = g
        .ok(
            "{ secretManagerByName(name: \"WrongPin\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(d["secretManagerByName"], Value::Null);
    cp.stop().await;
}
