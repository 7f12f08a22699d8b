//! Doppler's API: `GET /v3/configs/config/secret?project=…&config=…&name=…` with
//! `Authorization: Bearer <token>`, answering `{"name", "value": {"raw", "computed",
//! "note"}, "success": true}`. The token is a service token scoped to one project and
//! config, so project and config may be left out; given, they must match. Errors are
//! Doppler's `{"messages": [...], "success": false}`: 401 for a bad token, 403 for another
//! project or config, 400 without a name, 404 for an unknown secret.

use serde_json::json;

use super::cli::{Run, HOSTILE};

use super::http::{Request, Response, Server};

/// One config's secrets, readable with one service token.
#[derive(Clone, Debug)]
pub struct Doppler {
    pub token: String,
    pub project: String,
    pub config: String,
    /// `(name, raw, computed)`
    pub secrets: Vec<(String, String, String)>,
}

pub fn start(d: Doppler) -> Server {
    Server::start(move |req| answer(&d, req))
}

fn error(status: u16, message: &str) -> Response {
    Response::json(status, json!({ "messages": [message], "success": false }))
}

fn answer(d: &Doppler, req: &Request) -> Response {
    if req.method != "GET" || req.raw_path != "/v3/configs/config/secret" {
        return error(404, "Not found");
    }
    match req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
    {
        Some(t) if t == d.token => {}
        _ => return error(401, "Invalid Service token"),
    }
    if req.param("project").is_some_and(|p| p != d.project) {
        return error(403, "This token does not have access to requested project");
    }
    if req.param("config").is_some_and(|c| c != d.config) {
        return error(403, "This token does not have access to requested config");
    }
    let Some(name) = req.param("name") else {
        return error(400, "Missing required parameter: name");
    };
    let Some((n, raw, computed)) = d.secrets.iter().find(|(n, _, _)| *n == name) else {
        return error(404, "Could not find requested secret");
    };
    Response::json(
        200,
        json!({
            "name": n,
            "value": { "raw": raw, "computed": computed, "note": "" },
            "success": true
        }),
    )
}

// The tests' fixtures.

/// The service token for project `backend`, config `prd`.
pub const TOKEN: &str = "dp.st.prd.Xk9fQ2mZr7LwT4vBn8cJ1hYs6dGe3aUp0oKi5";

/// `DATABASE_URL`, whose raw value references another secret, and a secret named
/// [`HOSTILE`].
pub fn example() -> Doppler {
    Doppler {
        token: TOKEN.into(),
        project: "backend".into(),
        config: "prd".into(),
        secrets: vec![
            (
                "DATABASE_URL".into(),
                "postgres://app:${DB_PASS}@db/app".into(),
                "postgres://app:s3cr3t@db/app".into(),
            ),
            (HOSTILE.into(), "hostile-raw".into(), "hostile-ok".into()),
        ],
    }
}

/// A `test-run` of doppler.json.
pub fn run(url: &str, project: &str, config: &str, name: &str, kind: &str, token: &str) -> Run {
    Run::new("doppler")
        .var("project", project)
        .var("config", config)
        .var("name", name)
        .var("valueType", kind)
        .var("apiUrl", url)
        .secret("doppler-token", token)
}
