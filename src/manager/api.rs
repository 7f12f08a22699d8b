//! The GraphQL endpoint over HTTP: `POST /graphql` and a GraphiQL page on `GET /graphql`,
//! mounted beside the agent endpoint on the manager's listener, and [`run`], which opens
//! the store and serves both.
//!
//! Order of checks for `POST /graphql`:
//! 1. **Authentication** from `x-api-key`, compared in constant time against every key:
//!    a missing or wrong key gets `401` and a GraphQL error body with no `data`, before
//!    the body is read.
//! 2. **Body size**: at most [`ApiConfig::max_body_bytes`] (1 MiB by default), else `413`.
//! 3. **JSON**: a body that is not a GraphQL request gets `400`, naming only the line and
//!    column of the problem.
//! 4. **Limits**: depth and complexity ([`crate::manager::graphql`]), then execution.
//!
//! **Errors never echo a value.** Resolver messages name fields and ids only. As a second
//! line, every string the request carries under a `value` key (in the variables) or after
//! `value:` (in the query text) is replaced by `***` in every error message before the
//! response leaves, so that even a library's message quoting an input cannot carry one.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::auth::ApiKeys;
use super::control::ControlPlane;
use super::graphql::{self, ApiSchema};
use super::hub::Hub;
use super::store::crypto::{MasterKey, MASTER_KEY_ENV};
use super::store::sqlite::SqliteStore;
use super::store::Store;
use super::ManagerConfig;

/// The GraphQL path.
pub const GRAPHQL_PATH: &str = "/graphql";

/// The default request body limit.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// How the GraphQL API is served.
#[derive(Debug)]
pub struct ApiConfig {
    /// The data directory (store and, by default, the master key).
    pub data_dir: PathBuf,
    /// The master key file, when not `DATA_DIR/master.key` (`CSM_MASTER_KEY_FILE`).
    pub master_key_file: Option<PathBuf>,
    /// Accepted API keys.
    pub keys: ApiKeys,
    /// Largest request body.
    pub max_body_bytes: usize,
}

impl ApiConfig {
    /// Defaults around a data directory and keys; the master key file comes from
    /// `CSM_MASTER_KEY_FILE` if set.
    pub fn new(data_dir: PathBuf, keys: ApiKeys) -> ApiConfig {
        ApiConfig {
            data_dir,
            master_key_file: std::env::var_os(MASTER_KEY_ENV).map(PathBuf::from),
            keys,
            max_body_bytes: DEFAULT_MAX_BODY,
        }
    }
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The master key.
    #[error(transparent)]
    Key(#[from] super::store::crypto::CryptoError),
    /// The store.
    #[error("store in {dir}: {source}")]
    Store {
        /// The data directory.
        dir: String,
        /// Why.
        source: super::store::StoreError,
    },
}

/// What the endpoint shares.
pub struct ApiState {
    schema: ApiSchema,
    keys: ApiKeys,
    max_body: usize,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// Open the master key and the store in `cfg.data_dir` (blocking), around `hub`.
pub fn open(cfg: ApiConfig, hub: Hub) -> Result<(ControlPlane, Arc<ApiState>), StartError> {
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.data_dir)
            .map_err(|e| StartError::Store {
                dir: cfg.data_dir.display().to_string(),
                source: super::store::StoreError::Backend(e.to_string()),
            })?;
    }
    let key = Arc::new(MasterKey::load_or_create(
        &cfg.data_dir,
        cfg.master_key_file.clone(),
    )?);
    let store = SqliteStore::open(&cfg.data_dir, &key).map_err(|source| StartError::Store {
        dir: cfg.data_dir.display().to_string(),
        source,
    })?;
    let store: Arc<dyn Store> = Arc::new(store);
    let cp = ControlPlane::new(store, key, hub);
    if cfg.keys.is_empty() {
        tracing::warn!("no API key is configured: every GraphQL request will be refused");
    }
    let state = Arc::new(ApiState {
        schema: graphql::schema(cp.clone()),
        keys: cfg.keys,
        max_body: cfg.max_body_bytes,
    });
    Ok((cp, state))
}

/// The GraphQL routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route(GRAPHQL_PATH, get(graphiql).post(graphql_post))
        .with_state(state)
}

/// Serve agents and the GraphQL API on `listener` until `shutdown`: opens the store in
/// `api.data_dir` and builds a hub from `config`.
pub async fn run(
    listener: TcpListener,
    config: ManagerConfig,
    api: ApiConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let hub = Hub::new(config.hub.clone());
    let (_cp, state) = {
        let hub = hub.clone();
        tokio::task::spawn_blocking(move || open(api, hub))
            .await
            .map_err(|e| RunError::Io(io::Error::other(e.to_string())))??
    };
    super::serve_with(listener, hub, config, router(state), shutdown)
        .await
        .map_err(RunError::Io)
}

/// Why [`run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Start-up.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Serving.
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{"message": message, "extensions": {"code": code}}]
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn graphql_post(State(st): State<Arc<ApiState>>, headers: HeaderMap, body: Body) -> Response {
    let caller = headers
        .get("x-api-key")
        .and_then(|v| st.keys.verify(v.as_bytes()));
    let Some(caller) = caller else {
        tracing::info!("GraphQL request refused: missing or wrong x-api-key");
        return error_body(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid x-api-key header is required",
        );
    };
    let bytes = match axum::body::to_bytes(body, st.max_body).await {
        Ok(b) => zeroize::Zeroizing::new(b.to_vec()),
        Err(_) => {
            return error_body(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &format!("the request body is larger than {} bytes", st.max_body),
            )
        }
    };
    let req: async_graphql::Request = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return error_body(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!(
                    "the body is not a GraphQL request as JSON ({} at line {}, column {})",
                    match e.classify() {
                        serde_json::error::Category::Syntax => "syntax error",
                        serde_json::error::Category::Eof => "unexpected end",
                        serde_json::error::Category::Data =>
                            "wrong shape: expected {\"query\": …, \"variables\": {…}}",
                        serde_json::error::Category::Io => "read error",
                    },
                    e.line(),
                    e.column()
                ),
            )
        }
    };
    let values = request_values(&req);
    let resp = st.schema.execute(req.data(caller)).await;
    let mut json = match serde_json::to_value(&resp) {
        Ok(j) => j,
        Err(_) => {
            return error_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the response could not be encoded",
            )
        }
    };
    drop(resp);
    if let Some(errors) = json.get_mut("errors").and_then(|e| e.as_array_mut()) {
        for e in errors {
            if let Some(serde_json::Value::String(m)) = e.get_mut("message") {
                *m = scrub(m, &values);
            }
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json.to_string(),
    )
        .into_response()
}

/// The shortest value scrubbed from messages (shorter ones would destroy the message).
const MIN_SCRUB: usize = 4;

/// Strings the request carries as values: under `value` keys in the variables, and after
/// `value:` in the query text.
fn request_values(req: &async_graphql::Request) -> Vec<zeroize::Zeroizing<String>> {
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(&req.variables) {
        collect(&v, false, &mut out);
    }
    let q = req.query.as_bytes();
    let mut i = 0;
    while let Some(pos) = find(&q[i..], b"value") {
        let mut j = i + pos + 5;
        while j < q.len() && q[j].is_ascii_whitespace() {
            j += 1;
        }
        if j < q.len() && q[j] == b':' {
            j += 1;
            while j < q.len() && q[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < q.len() && q[j] == b'"' {
                let start = j + 1;
                let mut k = start;
                while k < q.len() && q[k] != b'"' {
                    k += if q[k] == b'\\' { 2 } else { 1 };
                }
                if let Some(s) = req.query.get(start..k.min(q.len())) {
                    if s.len() >= MIN_SCRUB {
                        out.push(zeroize::Zeroizing::new(s.to_string()));
                    }
                }
            }
        }
        i += pos + 5;
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn collect(v: &serde_json::Value, under_value: bool, out: &mut Vec<zeroize::Zeroizing<String>>) {
    match v {
        serde_json::Value::String(s) if under_value && s.len() >= MIN_SCRUB => {
            out.push(zeroize::Zeroizing::new(s.clone()))
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect(x, under_value, out)),
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                collect(x, under_value || k == "value", out);
            }
        }
        _ => {}
    }
}

fn scrub(message: &str, values: &[zeroize::Zeroizing<String>]) -> String {
    let mut m = message.to_string();
    for v in values {
        if m.contains(v.as_str()) {
            m = m.replace(v.as_str(), "***");
        }
    }
    m
}

async fn graphiql() -> impl IntoResponse {
    Html(GRAPHIQL_HTML)
}

/// A GraphiQL page: paste the API key into the headers pane as `{"x-api-key": "…"}`.
const GRAPHIQL_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>csm-agent GraphQL</title>
<style>body{margin:0;height:100vh}#graphiql{height:100vh}</style>
<link rel="stylesheet" href="https://unpkg.com/graphiql@3/graphiql.min.css">
</head>
<body>
<div id="graphiql">Loading GraphiQL… (it needs unpkg.com; the API itself is POST /graphql)</div>
<script crossorigin src="https://unpkg.com/react@18/umd/react.production.min.js"></script>
<script crossorigin src="https://unpkg.com/react-dom@18/umd/react-dom.production.min.js"></script>
<script crossorigin src="https://unpkg.com/graphiql@3/graphiql.min.js"></script>
<script>
const fetcher = GraphiQL.createFetcher({ url: window.location.pathname });
ReactDOM.createRoot(document.getElementById('graphiql')).render(
  React.createElement(GraphiQL, {
    fetcher,
    defaultHeaders: '{"x-api-key": "paste your API key here"}',
    shouldPersistHeaders: false,
  }),
);
</script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_and_scrubbed() {
        let mut req = async_graphql::Request::new(
            r#"mutation { createSecret(input: {secretType: ENCRYPTED_TEXT, encryptedText: {name: "n", value: "inline-s3cret"}}) { secret { id } } }"#,
        );
        req.variables = async_graphql::Variables::from_json(serde_json::json!({
            "input": {"testVariables": [{"name": "key", "value": "var-s3cret"}], "name": "plain-name"}
        }));
        let v = request_values(&req);
        let m = scrub("bad: inline-s3cret and var-s3cret but plain-name", &v);
        assert_eq!(m, "bad: *** and *** but plain-name");
    }
}
