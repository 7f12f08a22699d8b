//! HashiCorp Vault's KV v2 read API: `GET /v1/<mount>/data/<path>[?version=N]` with an
//! `X-Vault-Token` header (and `X-Vault-Namespace` when the stand-in has a namespace).
//! Errors use Vault's `{"errors": [...]}` shape: 400 for a missing token, 403 "permission
//! denied" for a wrong token or namespace, 404 with no errors for an unknown path or
//! version, 405 for another method.

use serde_json::{json, Value};

use super::cli::Run;
use super::http::{Request, Response, Server};

/// One secret in one KV v2 mount.
#[derive(Clone, Debug)]
pub struct Kv2 {
    /// The mount, e.g. `secret` (may contain `/`).
    pub mount: String,
    /// The secret's path under the mount, decoded (may contain `/`).
    pub path: String,
    /// The secret's `data` object.
    pub data: Value,
    /// Its current version number.
    pub version: u64,
    /// The only token that may read it.
    pub token: String,
    /// The namespace the token lives in, or `None` for the root namespace.
    pub namespace: Option<String>,
}

pub fn start(kv: Kv2) -> Server {
    Server::start(move |req| answer(&kv, req))
}

fn errors(status: u16, errors: &[&str]) -> Response {
    Response::json(status, json!({ "errors": errors }))
}

fn answer(kv: &Kv2, req: &Request) -> Response {
    if req.method != "GET" {
        return errors(405, &["1 error occurred:\n\t* unsupported operation\n\n"]);
    }
    match req.header("x-vault-token") {
        None => return errors(400, &["missing client token"]),
        Some(t) if t != kv.token || req.header_count("x-vault-token") != 1 => {
            return errors(403, &["permission denied"])
        }
        Some(_) => {}
    }
    if req.header("x-vault-namespace") != kv.namespace.as_deref() {
        return errors(403, &["permission denied"]);
    }
    let segs = req.segments();
    let mount: Vec<&str> = kv.mount.split('/').collect();
    let n = mount.len();
    let matches_prefix = segs.len() > n + 2
        && segs[0] == "v1"
        && segs[1..=n].iter().zip(&mount).all(|(a, b)| a == b)
        && segs[n + 1] == "data";
    if !matches_prefix || segs[n + 2..].join("/") != kv.path {
        return errors(404, &[]);
    }
    let mut version = kv.version;
    for (k, v) in req.query() {
        match (k.as_str(), v.parse::<u64>()) {
            ("version", Ok(0)) => {}
            ("version", Ok(v)) => version = v,
            ("version", Err(_)) => return errors(400, &["error parsing version"]),
            _ => {}
        }
    }
    if version != kv.version {
        return errors(404, &[]);
    }
    Response::json(
        200,
        json!({
            "request_id": "c5b5a6e2-0b8e-3a5d-8f3e-1b7c2a9d4e61",
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": {
                "data": kv.data,
                "metadata": {
                    "created_time": "2024-05-01T09:30:00.000000Z",
                    "custom_metadata": null,
                    "deletion_time": "",
                    "destroyed": false,
                    "version": kv.version
                }
            },
            "wrap_info": null,
            "warnings": null,
            "auth": null,
            "mount_type": "kv"
        }),
    )
}

// The tests' fixtures.

/// The token of the tests' Vault.
pub const TOKEN: &str = "hvs.CAESIJ3m9x2Qk7Rz0vTn4bLpWfYs8eHdUaGc1oKj5iN6tMq";

/// One secret at `secret/<path>`, version 3, readable with [`TOKEN`].
pub fn kv2(path: &str, data: Value, namespace: Option<&str>) -> Kv2 {
    Kv2 {
        mount: "secret".into(),
        path: path.into(),
        data,
        version: 3,
        token: TOKEN.into(),
        namespace: namespace.map(str::to_string),
    }
}

/// A `test-run` of vault-kv2.json (mount `secret`), without its token.
pub fn run(addr: &str, path: &str, field: &str, version: &str, namespace: &str) -> Run {
    Run::new("vault-kv2")
        .var("vaultAddr", addr)
        .var("mount", "secret")
        .var("path", path)
        .var("field", field)
        .var("version", version)
        .var("namespace", namespace)
}
