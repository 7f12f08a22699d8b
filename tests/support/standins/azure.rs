//! Azure's managed-identity token endpoint (IMDS) and Key Vault's secrets API.
//!
//! - IMDS: `GET /metadata/identity/oauth2/token?api-version=…&resource=…[&client_id=…]`
//!   with `Metadata: true` and no `X-Forwarded-For`; errors are OAuth's
//!   `{"error": …, "error_description": …}` with status 400.
//! - Key Vault: `GET /secrets/<name>[/<version>]?api-version=7.4` with `Authorization:
//!   Bearer <token>`; errors are `{"error": {"code": …, "message": …}}`: 401 Unauthorized,
//!   404 SecretNotFound, 400 BadParameter.

use serde_json::json;

use super::cli::Run;
use super::http::{Request, Response, Server};

pub const VAULT_RESOURCE: &str = "https://vault.azure.net";

/// The metadata service of a host with a managed identity.
#[derive(Clone, Debug)]
pub struct Imds {
    /// The access token it hands out.
    pub token: String,
    /// A user-assigned identity's client id that must be asked for, or `None` for the
    /// system-assigned identity (then no client_id may be sent).
    pub client_id: Option<String>,
}

/// One vault.
#[derive(Clone, Debug)]
pub struct KeyVault {
    /// The only access token it accepts.
    pub token: String,
    /// `(name, version, value)`; the last version listed for a name is the current one.
    pub secrets: Vec<(String, String, String)>,
}

pub fn start_imds(imds: Imds) -> Server {
    Server::start(move |req| answer_imds(&imds, req))
}

pub fn start_vault(kv: KeyVault) -> Server {
    Server::start(move |req| answer_vault(&kv, req))
}

fn oauth_error(error: &str, description: &str) -> Response {
    Response::json(
        400,
        json!({ "error": error, "error_description": description }),
    )
}

fn answer_imds(imds: &Imds, req: &Request) -> Response {
    if req.method != "GET" || req.raw_path != "/metadata/identity/oauth2/token" {
        return Response::json(404, json!({ "error": "Not found" }));
    }
    if req.header("metadata") != Some("true") {
        return oauth_error("invalid_request", "Required metadata header not specified");
    }
    if req.header("x-forwarded-for").is_some() {
        return oauth_error("invalid_request", "Request is proxied");
    }
    if req.param("api-version").as_deref() != Some("2018-02-01") {
        return oauth_error(
            "invalid_request",
            "Required query variable 'api-version' is missing or unsupported",
        );
    }
    let resource = req.param("resource").unwrap_or_default();
    if resource != VAULT_RESOURCE {
        return oauth_error(
            "invalid_resource",
            &format!("AADSTS500011: The resource principal named {resource} was not found in the tenant."),
        );
    }
    if req.param("client_id") != imds.client_id {
        return oauth_error("invalid_request", "Identity not found");
    }
    Response::json(
        200,
        json!({
            "access_token": imds.token,
            "client_id": imds.client_id.clone().unwrap_or_else(|| "5e8d0c6e-4c4d-4a8e-9d2b-1f6f3a2b7c11".into()),
            "expires_in": "86399",
            "expires_on": "1714642200",
            "ext_expires_in": "86399",
            "not_before": "1714555500",
            "resource": VAULT_RESOURCE,
            "token_type": "Bearer"
        }),
    )
}

fn vault_error(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        json!({ "error": { "code": code, "message": message } }),
    )
}

fn answer_vault(kv: &KeyVault, req: &Request) -> Response {
    if req.param("api-version").as_deref() != Some("7.4") {
        return vault_error(
            400,
            "BadParameter",
            "The specified version is not recognized. Consider using the latest supported version (7.4).",
        );
    }
    match req.header("authorization").and_then(|h| h.strip_prefix("Bearer ")) {
        None => {
            return vault_error(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
            )
        }
        Some(t) if t != kv.token => {
            return vault_error(
                401,
                "Unauthorized",
                "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/, found https://sts.windows.net/00000000-0000-0000-0000-000000000000/.",
            )
        }
        Some(_) => {}
    }
    let segs = req.segments();
    let (name, version) = match (req.method.as_str(), segs.as_slice()) {
        ("GET", [s, name]) if s == "secrets" => (name.clone(), None),
        ("GET", [s, name, v]) if s == "secrets" && v.is_empty() => (name.clone(), None),
        ("GET", [s, name, v]) if s == "secrets" => (name.clone(), Some(v.clone())),
        _ => return vault_error(405, "BadParameter", "The operation is not supported."),
    };
    let found = kv
        .secrets
        .iter()
        .rfind(|(n, v, _)| *n == name && version.as_ref().map_or(true, |want| want == v));
    let Some((_, v, value)) = found else {
        return vault_error(
            404,
            "SecretNotFound",
            &format!(
                "A secret with (name/id) {name} was not found in this key vault. If you \
                 recently deleted this secret you may be able to recover it using the \
                 correct recovery command. For help resolving this issue, please see \
                 https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        );
    };
    Response::json(
        200,
        json!({
            "value": value,
            "id": format!("https://contoso-test.vault.azure.net/secrets/{name}/{v}"),
            "attributes": {
                "enabled": true,
                "created": 1714555800,
                "updated": 1714555800,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90
            },
            "tags": {}
        }),
    )
}

// The tests' fixtures.

/// The access token the vault accepts.
pub const TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL3ZhdWx0In0.c2ln";

/// A host's metadata service and a vault, each on its own port.
pub struct Pair {
    pub imds: Server,
    pub vault: Server,
}

/// IMDS issuing `issued` (for `client_id`), and a vault that accepts [`TOKEN`] and
/// holds `(name, version, value)` secrets.
pub fn pair(issued: &str, client_id: Option<&str>, secrets: &[(&str, &str, &str)]) -> Pair {
    Pair {
        imds: start_imds(Imds {
            token: issued.into(),
            client_id: client_id.map(str::to_string),
        }),
        vault: start_vault(KeyVault {
            token: TOKEN.into(),
            secrets: secrets
                .iter()
                .map(|(n, v, s)| (n.to_string(), v.to_string(), s.to_string()))
                .collect(),
        }),
    }
}

/// A `test-run` of azure-key-vault.json pointed at `az`.
pub fn run(az: &Pair, name: &str, version: &str, client_id: &str) -> Run {
    Run::new("azure-key-vault")
        .var("vaultName", "contoso-test")
        .var("secretName", name)
        .var("secretVersion", version)
        .var("clientId", client_id)
        .var("vaultUrl", az.vault.url())
        .var("imdsUrl", az.imds.url())
}
