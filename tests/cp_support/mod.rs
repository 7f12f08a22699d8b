//! Support for the control-plane tests (`mod cp_support;`): a small HTTP/1.1 client, a
//! real `csm-agent dev` process, an in-process control plane with a real local agent,
//! and GraphQL helpers.
//!
//! Everything is real: HTTP over loopback sockets on port 0, the agent over WebSocket,
//! bash. Readiness is the process's own "export CSM_URL=" line, never a sleep.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An admin key used by the tests.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";
/// A resolve-role key used by the tests.
pub const RESOLVE_KEY: &str = "test-resolve-key-0123456789abcdef";

/// One HTTP response.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body, parsed as JSON (Null if it is not JSON).
    pub json: Value,
    /// Raw body.
    pub body: String,
}

/// POST `body` to `url` (http://host:port/path) with optional headers.
pub async fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = tokio::net::TcpStream::connect(hostport)
        .await
        .expect("connect");
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        if path.is_empty() { "/" } else { path },
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    // A server may answer (413) before reading the whole body and close; ignore that.
    let _ = s.write_all(body).await;
    read_reply(s).await
}

/// GET `url`.
pub async fn get(url: &str) -> Reply {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = tokio::net::TcpStream::connect(hostport)
        .await
        .expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    read_reply(s).await
}

async fn read_reply(mut s: tokio::net::TcpStream) -> Reply {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(120), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        json: serde_json::from_str(&body).unwrap_or(Value::Null),
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A GraphQL client for one URL and key.
#[derive(Clone, Debug)]
pub struct Gql {
    /// The GraphQL URL.
    pub url: String,
    /// The API key (None: no header).
    pub key: Option<String>,
}

impl Gql {
    /// A client.
    pub fn new(url: &str, key: &str) -> Gql {
        Gql {
            url: url.to_string(),
            key: Some(key.to_string()),
        }
    }

    /// The same server with another key.
    pub fn with_key(&self, key: Option<&str>) -> Gql {
        Gql {
            url: self.url.clone(),
            key: key.map(str::to_string),
        }
    }

    /// Send a document with variables; the whole reply.
    pub async fn send(&self, query: &str, variables: Value) -> Reply {
        let body = json!({"query": query, "variables": variables}).to_string();
        let h: Vec<(&str, &str)> = self.key.iter().map(|k| ("x-api-key", k.as_str())).collect();
        post(&self.url, &h, body.as_bytes()).await
    }

    /// Send and expect data without errors.
    pub async fn ok(&self, query: &str, variables: Value) -> Value {
        let r = self.send(query, variables).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.json.get("errors").is_none(),
            "unexpected errors: {}",
            r.body
        );
        r.json["data"].clone()
    }

    /// Send and expect exactly one error; returns (code, message, whole reply).
    pub async fn err(&self, query: &str, variables: Value) -> (String, String, Reply) {
        let r = self.send(query, variables).await;
        let e = &r.json["errors"][0];
        assert!(e.is_object(), "expected an error: {}", r.body);
        (
            e["extensions"]["code"].as_str().unwrap_or("").to_string(),
            e["message"].as_str().unwrap_or("").to_string(),
            r,
        )
    }

    /// `createTemplate`; the id.
    pub async fn template(&self, name: &str, script: &str, vars: &[&str]) -> String {
        let d = self
            .ok(
                "mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { template { id name } } }",
                json!({"i": {"name": name, "scriptString": script, "variables": vars, "timeoutMillis": 20000}}),
            )
            .await;
        d["createTemplate"]["template"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `createSecretManager` running on the agent with `selectors`; the id.
    pub async fn manager(
        &self,
        name: &str,
        template: &str,
        tests: Value,
        selectors: &[&str],
        scope: Value,
    ) -> String {
        let d = self
            .ok(
                CREATE_SM,
                json!({"secretManagerInput": {"secretManagerType": "CUSTOM", "customSecretManagerInput": {
                    "name": name, "templateId": template, "delegateSelectors": selectors,
                    "testVariables": tests, "executeOnDelegate": true, "isConnectorTemplatized": false,
                    "commandPath": "/tmp", "usageScope": scope}}}),
            )
            .await;
        d["createSecretManager"]["secretManager"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `createSecret` with parameters for a manager; the id.
    pub async fn param_secret(
        &self,
        name: &str,
        manager: &str,
        params: Value,
        scope: Value,
    ) -> String {
        let d = self
            .ok(
                CREATE_SECRET,
                json!({"input": {"secretType": "ENCRYPTED_TEXT", "encryptedText": {
                    "name": name, "secretManagerId": manager, "parameters": params, "usageScope": scope}}}),
            )
            .await;
        d["createSecret"]["secret"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `createSecret` with a built-in value; the id.
    pub async fn value_secret(&self, name: &str, value: &str) -> String {
        let d = self
            .ok(
                CREATE_SECRET,
                json!({"input": {"secretType": "ENCRYPTED_TEXT", "encryptedText": {"name": name, "value": value}}}),
            )
            .await;
        d["createSecret"]["secret"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `resolveSecret`: Ok(value) or Err((code, message)).
    pub async fn resolve(
        &self,
        id: &str,
        app: Option<&str>,
        env: Option<&str>,
        env_type: Option<&str>,
    ) -> Result<String, (String, String)> {
        let r = self
            .send(
                RESOLVE,
                json!({"i": {"secretId": id, "appId": app, "envId": env, "environmentType": env_type}}),
            )
            .await;
        match r.json["errors"][0].as_object() {
            Some(e) => {
                assert!(
                    r.json["data"]["resolveSecret"].is_null(),
                    "an error with a value: {}",
                    r.body
                );
                Err((
                    e["extensions"]["code"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                ))
            }
            None => Ok(r.json["data"]["resolveSecret"]["value"]
                .as_str()
                .unwrap_or_else(|| panic!("no value: {}", r.body))
                .to_string()),
        }
    }
}

/// The seed's createSecretManager document, verbatim.
pub const SEED_CREATE: &str = "mutation CreateSecretManagerMutation($secretManagerInput: CreateSecretManagerInput!) {  \n  createSecretManager(input: $secretManagerInput) {  \n    secretManager {  \n      id  \n    }  \n  }  \n}  \n";
/// The seed's updateSecretManager document, verbatim.
pub const SEED_UPDATE: &str = "mutation UpdateSecretManagerMutation($input: UpdateSecretManagerInput!) {  \n  updateSecretManager(input: $input) {  \n    secretManager {  \n      name  \n      id  \n    }  \n  }  \n}";
/// The seed's deleteSecretManager document, verbatim.
pub const SEED_DELETE: &str = "mutation DeleteSecretManagerMutation($input: DeleteSecretManagerInput!){  \n  deleteSecretManager(input: $input){  \n   clientMutationId  \n  }  \n}";

/// A createSecretManager document returning the id.
pub const CREATE_SM: &str = "mutation($secretManagerInput: CreateSecretManagerInput!) { createSecretManager(input: $secretManagerInput) { secretManager { id name } } }";
/// A createSecret document.
pub const CREATE_SECRET: &str = "mutation($input: CreateSecretInput!) { createSecret(input: $input) { clientMutationId secret { id name secretType ... on EncryptedText { secretManagerId } } } }";
/// A resolveSecret document.
pub const RESOLVE: &str =
    "mutation($i: ResolveSecretInput!) { resolveSecret(input: $i) { value } }";

/// A template that reads `${key}` from a file store `store.tsv` under `${path}` (a
/// directory), in the manner of the README: `secret` is the value on the line for key.
pub const FILE_STORE_SCRIPT: &str =
    "secret=$(awk -F'\\t' -v k=\"${key}\" '$1 == k { print $2 }' \"${path}/store.tsv\")";

/// Write a file store with `(key, value)` lines into `dir/store.tsv`.
pub fn write_store(dir: &Path, rows: &[(&str, &str)]) {
    let text: String = rows.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
    std::fs::write(dir.join("store.tsv"), text).unwrap();
}

/// A real `csm-agent dev` process.
pub struct DevProc {
    /// The process.
    pub child: Child,
    /// The GraphQL URL.
    pub url: String,
    /// Its stdout lines up to readiness.
    pub banner: Vec<String>,
}

impl DevProc {
    /// Start `csm-agent dev --listen 127.0.0.1:0` with `CSM_API_KEY=key` and `args`;
    /// returns when it prints its `export CSM_URL=` line.
    pub fn start(key: &str, args: &[&str]) -> DevProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_csm-agent"))
            .args(["dev", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("CSM_API_KEY", key)
            .env_remove("CSM_MASTER_KEY_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn csm-agent dev");
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let mut banner = Vec::new();
        let url = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("csm-agent dev exited before it was ready: {banner:?}"))
                .unwrap();
            banner.push(line.clone());
            if let Some(rest) = line.strip_prefix("export CSM_URL=") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        DevProc { child, url, banner }
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let st = self.child.wait().unwrap();
        std::mem::forget(self);
        st
    }
}

impl Drop for DevProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An in-process control plane with a real local agent (the library's `dev::serve`).
pub struct InProc {
    /// The GraphQL URL.
    pub url: String,
    /// The data directory.
    pub dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl InProc {
    /// Start with an admin key and a resolve key, in `dir`.
    pub async fn start(dir: &Path) -> InProc {
        let mut keys = csm_agent::manager::auth::ApiKeys::empty();
        keys.add(ADMIN_KEY.as_bytes(), csm_agent::manager::auth::Role::Admin);
        keys.add(
            RESOLVE_KEY.as_bytes(),
            csm_agent::manager::auth::Role::Resolve,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<String>();
        let d = dir.to_path_buf();
        let task = tokio::spawn(async move {
            csm_agent::cli::dev::serve(
                listener,
                d,
                keys,
                move |info| {
                    let _ = ready_tx.send(info.url.clone());
                },
                false,
                async move {
                    let _ = stop_rx.await;
                },
            )
            .await
        });
        let url = ready_rx.await.expect("the control plane started");
        InProc {
            url,
            dir: dir.to_path_buf(),
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// An admin client.
    pub fn admin(&self) -> Gql {
        Gql::new(&self.url, ADMIN_KEY)
    }

    /// A resolve-role client.
    pub fn resolver(&self) -> Gql {
        Gql::new(&self.url, RESOLVE_KEY)
    }

    /// Stop and wait.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// Every file of the store: the database, its WAL and shared memory.
pub fn store_files(dir: &Path) -> Vec<PathBuf> {
    [
        "control-plane.db",
        "control-plane.db-wal",
        "control-plane.db-shm",
    ]
    .iter()
    .map(|f| dir.join(f))
    .filter(|p| p.exists())
    .collect()
}

/// Whether any store file holds `needle`.
pub fn store_contains(dir: &Path, needle: &[u8]) -> bool {
    store_files(dir).iter().any(|p| {
        let b = std::fs::read(p).unwrap_or_default();
        b.windows(needle.len()).any(|w| w == needle)
    })
}
