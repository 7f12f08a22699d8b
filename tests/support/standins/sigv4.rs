//! AWS Signature Version 4, checked the way AWS checks it: parse the `Authorization`
//! header, rebuild the canonical request from what actually arrived, derive the signing
//! key from the secret access key and the credential scope, and compare signatures.
//! Written from AWS's published algorithm ("Create a signed AWS API request"), so a
//! template whose signature passes here signs as AWS expects.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::http::Request;

/// What the `Authorization` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD`
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Why a request's signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigError {
    /// No `Authorization` header.
    Missing,
    /// Not `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
    Malformed(String),
    /// The signature is well-formed but does not match.
    Mismatch,
}

/// Parse `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
pub fn parse_authorization(req: &Request) -> Result<Authorization, SigError> {
    let h = req.header("authorization").ok_or(SigError::Missing)?;
    let rest = h
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| SigError::Malformed("algorithm is not AWS4-HMAC-SHA256".into()))?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| SigError::Malformed(format!("bad component {part:?}")))?;
        match k {
            "Credential" => cred = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => sig = Some(v),
            _ => return Err(SigError::Malformed(format!("unknown component {k:?}"))),
        }
    }
    let cred = cred.ok_or_else(|| SigError::Malformed("no Credential".into()))?;
    let parts: Vec<&str> = cred.split('/').collect();
    let [akid, date, region, service, term] = parts[..] else {
        return Err(SigError::Malformed(format!("bad credential {cred:?}")));
    };
    if term != "aws4_request" {
        return Err(SigError::Malformed(
            "scope does not end in aws4_request".into(),
        ));
    }
    Ok(Authorization {
        access_key_id: akid.into(),
        date: date.into(),
        region: region.into(),
        service: service.into(),
        signed_headers: signed
            .ok_or_else(|| SigError::Malformed("no SignedHeaders".into()))?
            .split(';')
            .map(str::to_string)
            .collect(),
        signature: sig
            .ok_or_else(|| SigError::Malformed("no Signature".into()))?
            .into(),
    })
}

/// Verify `req`'s signature with `secret_access_key`. Returns the parsed header.
pub fn verify(req: &Request, secret_access_key: &str) -> Result<Authorization, SigError> {
    let auth = parse_authorization(req)?;
    let amz_date = req
        .header("x-amz-date")
        .ok_or_else(|| SigError::Malformed("no X-Amz-Date".into()))?;
    if !amz_date.starts_with(&auth.date) {
        return Err(SigError::Malformed(
            "X-Amz-Date is not the scope's date".into(),
        ));
    }
    for must in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == must) {
            return Err(SigError::Malformed(format!("{must} is not signed")));
        }
    }
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() {
            return Err(SigError::Malformed(format!(
                "signed header {name} not sent"
            )));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let payload_hash = match req.header("x-amz-content-sha256") {
        Some(h) => h.to_string(),
        None => hex(&Sha256::digest(&req.body)),
    };
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(&req.raw_path),
        canonical_query(&req.raw_query),
        canonical_headers,
        auth.signed_headers.join(";"),
        payload_hash
    );
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{secret_access_key}").as_bytes(),
        auth.date.as_bytes(),
    );
    for part in [auth.region.as_str(), auth.service.as_str(), "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hex(&hmac(&key, string_to_sign.as_bytes()));
    if expected == auth.signature {
        Ok(auth)
    } else {
        Err(SigError::Mismatch)
    }
}

/// The path as sent, with an empty path as `/` (AWS's JSON services do not re-encode).
fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        "/".into()
    } else {
        raw_path.into()
    }
}

/// Parameters sorted by name then value, each as sent (already encoded).
fn canonical_query(raw_query: &str) -> String {
    if raw_query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(&str, &str)> = raw_query
        .split('&')
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
