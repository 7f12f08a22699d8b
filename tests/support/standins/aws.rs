//! AWS Secrets Manager's `GetSecretValue` over the AWS JSON 1.1 protocol: `POST /` with
//! `X-Amz-Target: secretsmanager.GetSecretValue`, `Content-Type:
//! application/x-amz-json-1.1`, a JSON body `{"SecretId": …, "VersionStage"?: …}`, and a
//! SigV4 `Authorization` header that is verified in full ([`super::sigv4`]): the access
//! key id, the credential scope (the stand-in's region, service `secretsmanager`) and the
//! signature over what arrived. Errors are AWS's `{"__type": …, "message": …}` with
//! status 400, as the JSON protocol sends them.

use base64::Engine as _;
use serde_json::{json, Value};

use super::cli::{Run, HOSTILE};
use super::http::{Request, Response, Server};
use super::sigv4::{self, SigError};

/// A secret's value in one version.
#[derive(Clone, Debug)]
pub enum Payload {
    String(String),
    Binary(Vec<u8>),
}

/// One secret, with its `AWSCURRENT` value and optionally an `AWSPREVIOUS` one.
#[derive(Clone, Debug)]
pub struct AwsSecret {
    pub name: String,
    pub current: Payload,
    pub previous: Option<Payload>,
}

/// The service in one region, with one set of credentials.
#[derive(Clone, Debug)]
pub struct SecretsManager {
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub secrets: Vec<AwsSecret>,
}

pub fn start(sm: SecretsManager) -> Server {
    Server::start(move |req| answer(&sm, req))
}

const JSON_11: &str = "application/x-amz-json-1.1";

fn error(kind: &str, message: &str) -> Response {
    Response::typed(400, JSON_11, json!({ "__type": kind, "message": message }))
}

fn answer(sm: &SecretsManager, req: &Request) -> Response {
    if req.method != "POST" || req.raw_path != "/" || !req.raw_query.is_empty() {
        return error("UnknownOperationException", "");
    }
    let auth = match sigv4::verify(req, &sm.secret_access_key) {
        Err(SigError::Missing) => {
            return error(
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            )
        }
        Err(SigError::Malformed(why)) => return error("IncompleteSignatureException", &why),
        Err(SigError::Mismatch) => {
            // AWS names the key before the signature: an unknown key id is its own error.
            let akid = sigv4::parse_authorization(req).map(|a| a.access_key_id);
            if akid.as_deref() != Ok(sm.access_key_id.as_str()) {
                return unrecognized();
            }
            return error(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you \
                 provided. Check your AWS Secret Access Key and signing method. Consult \
                 the service documentation for details.",
            );
        }
        Ok(auth) => auth,
    };
    if auth.access_key_id != sm.access_key_id {
        return unrecognized();
    }
    if auth.service != "secretsmanager" {
        return error(
            "InvalidSignatureException",
            "Credential should be scoped to correct service: 'secretsmanager'. ",
        );
    }
    if auth.region != sm.region {
        return error(
            "InvalidSignatureException",
            &format!(
                "Credential should be scoped to a valid region, not '{}'. ",
                auth.region
            ),
        );
    }
    if req.header("x-amz-target") != Some("secretsmanager.GetSecretValue") {
        return error("UnknownOperationException", "");
    }
    if req.header("content-type") != Some(JSON_11) {
        return error("SerializationException", "");
    }
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(_) => {
            return error(
                "SerializationException",
                "Start of structure or map found where not expected.",
            )
        }
    };
    let Some(id) = body.get("SecretId").and_then(Value::as_str) else {
        return error(
            "ValidationException",
            "1 validation error detected: Value null at 'secretId' failed to satisfy constraint: Member must not be null",
        );
    };
    let Some(secret) = sm.secrets.iter().find(|s| s.name == id) else {
        return error(
            "ResourceNotFoundException",
            "Secrets Manager can't find the specified secret.",
        );
    };
    let stage = body
        .get("VersionStage")
        .and_then(Value::as_str)
        .unwrap_or("AWSCURRENT");
    let (payload, version_id) = match stage {
        "AWSCURRENT" => (&secret.current, "EXAMPLE1-90ab-cdef-fedc-ba987SECRET1"),
        "AWSPREVIOUS" if secret.previous.is_some() => (
            secret.previous.as_ref().unwrap(),
            "EXAMPLE2-90ab-cdef-fedc-ba987SECRET2",
        ),
        _ => {
            return error(
                "ResourceNotFoundException",
                &format!(
                "Secrets Manager can't find the specified secret value for staging label: {stage}"
            ),
            )
        }
    };
    let mut out = json!({
        "ARN": format!("arn:aws:secretsmanager:{}:123456789012:secret:{}-a1b2c3", sm.region, secret.name),
        "Name": secret.name,
        "VersionId": version_id,
        "VersionStages": [stage],
        "CreatedDate": 1.714555800013E9
    });
    match payload {
        Payload::String(s) => out["SecretString"] = json!(s),
        Payload::Binary(b) => {
            out["SecretBinary"] = json!(base64::engine::general_purpose::STANDARD.encode(b))
        }
    }
    Response::typed(200, JSON_11, out)
}

fn unrecognized() -> Response {
    error(
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )
}

// The tests' fixtures.

/// The tests' credentials (AWS's documentation examples).
pub const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
pub const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// eu-west-1, the tests' credentials, and `prod/db` (JSON, with a previous version),
/// `prod/keystore` (binary) and a secret named [`HOSTILE`].
pub fn example() -> SecretsManager {
    SecretsManager {
        region: "eu-west-1".into(),
        access_key_id: AKID.into(),
        secret_access_key: SECRET_KEY.into(),
        secrets: vec![
            AwsSecret {
                name: "prod/db".into(),
                current: Payload::String(
                    json!({"username": "app", "password": "pa ss\"\n", "port": 5432}).to_string(),
                ),
                previous: Some(Payload::String("old-password".into())),
            },
            AwsSecret {
                name: "prod/keystore".into(),
                current: Payload::Binary(b"\x01\xfe binary\n\n".to_vec()),
                previous: None,
            },
            AwsSecret {
                name: HOSTILE.into(),
                current: Payload::String(json!({ HOSTILE: "hostile-ok" }).to_string()),
                previous: None,
            },
        ],
    }
}

/// A `test-run` of aws-secrets-manager.json with the access key id; the secret access
/// key is the caller's to add.
pub fn run(endpoint: &str, region: &str, id: &str, key: &str, stage: &str) -> Run {
    Run::new("aws-secrets-manager")
        .var("region", region)
        .var("secretId", id)
        .var("jsonKey", key)
        .var("versionStage", stage)
        .var("endpoint", endpoint)
        .secret("aws-access-key-id", format!("{AKID}\n"))
}
