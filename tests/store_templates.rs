//! The templates in `examples/templates/`, run by the real `csm-agent test-run` against
//! loopback stand-ins of their stores (`tests/support/standins/`): each returns the exact
//! secret bytes; a wrong credential fails as `script_failed` with the store's error and
//! never prints the credential; a hostile value reaches the store exactly, as data, and
//! its payload never runs. Also: every template documents its variables, stored secrets,
//! requirements and an example, and every template has tests here.

mod support;

use serde_json::{json, Value};

use support::standins::aws::{AKID, SECRET_KEY as AWS_SECRET};
use support::standins::azure::TOKEN as AZ_TOKEN;
use support::standins::cli::{
    assert_nothing_ran, assert_script_failed, assert_secret, contains, curl_version, have_tools,
    ArgvLog, Run, HOSTILE,
};
use support::standins::doppler::TOKEN as DOPPLER_TOKEN;
use support::standins::http::Request;
use support::standins::onepassword::{ITEM as OP_ITEM, TOKEN as OP_TOKEN, VAULT as OP_VAULT};
use support::standins::vault::TOKEN as VAULT_TOKEN;
use support::standins::{aws, azure, cyberark, doppler, onepassword, pass, sigv4, vault};

/// Every template in examples/templates/, each tested below.
const TEMPLATES: &[&str] = &[
    "aws-secrets-manager",
    "azure-key-vault",
    "cyberark-ccp",
    "doppler",
    "dotenv-file",
    "onepassword-connect",
    "pass",
    "vault-kv2",
];

fn curl_jq(test: &str) -> bool {
    have_tools(test, &["curl", "jq"])
}

fn header(req: &Request, name: &str) -> String {
    req.header(name).unwrap_or_default().to_string()
}

// ---------------------------------------------------------------- HashiCorp Vault KV v2

#[test]
fn vault_reads_a_field_exactly() {
    if !curl_jq("vault_reads_a_field_exactly") {
        return;
    }
    let value = "p@ss \"w0rd\" $(x) 'q'\n\n";
    let server = vault::start(vault::kv2(
        "app/prod/db",
        json!({"password": value, "port": 5432}),
        None,
    ));
    // The token file ends in a newline, as `vault token create > file` leaves it.
    let run = vault::run(&server.url(), "app/prod/db", "password", "", "")
        .secret("vault-token", format!("{VAULT_TOKEN}\n"));
    assert_secret(&run.reveal(), value.as_bytes());
    let req = server.only_request();
    assert_eq!(req.method, "GET");
    assert_eq!(req.raw_path, "/v1/secret/data/app/prod/db");
    assert_eq!(req.raw_query, "");
    assert_eq!(header(&req, "X-Vault-Token"), VAULT_TOKEN);
    assert_eq!(req.header_count("X-Vault-Namespace"), 0);

    // A field that is not a string comes back as JSON.
    let run =
        vault::run(&server.url(), "app/prod/db", "port", "", "").secret("vault-token", VAULT_TOKEN);
    assert_secret(&run.reveal(), b"5432");
}

#[test]
fn vault_sends_version_and_namespace() {
    if !curl_jq("vault_sends_version_and_namespace") {
        return;
    }
    let server = vault::start(vault::kv2(
        "db",
        json!({"password": "v3-value"}),
        Some("team-a/"),
    ));
    let run = vault::run(&server.url(), "db", "password", "3", "team-a/")
        .secret("vault-token", VAULT_TOKEN);
    assert_secret(&run.reveal(), b"v3-value");
    let req = server.only_request();
    assert_eq!(req.raw_query, "version=3");
    assert_eq!(header(&req, "X-Vault-Namespace"), "team-a/");

    // Another version is Vault's 404, and the template says so.
    let (out, v) = vault::run(&server.url(), "db", "password", "2", "team-a/")
        .secret("vault-token", VAULT_TOKEN)
        .json();
    assert_script_failed(&out, &v, "Vault answered HTTP 404", &[VAULT_TOKEN]);
}

#[test]
fn vault_wrong_token_fails_without_printing_it() {
    if !curl_jq("vault_wrong_token_fails_without_printing_it") {
        return;
    }
    let wrong = "hvs.WRONGtokenWRONGtokenWRONGtoken1";
    let server = vault::start(vault::kv2("db", json!({"password": "x-secret"}), None));
    let (out, v) = vault::run(&server.url(), "db", "password", "", "")
        .secret("vault-token", wrong)
        .json();
    assert_script_failed(&out, &v, "HTTP 403: permission denied", &[wrong]);
    // Positive control: the wrong token did reach Vault, so it was there to leak.
    assert_eq!(header(&server.only_request(), "X-Vault-Token"), wrong);
}

#[test]
fn vault_hostile_path_and_field_are_data() {
    if !curl_jq("vault_hostile_path_and_field_are_data") {
        return;
    }
    let server = vault::start(vault::kv2(HOSTILE, json!({ HOSTILE: "found-it" }), None));
    let run =
        vault::run(&server.url(), HOSTILE, HOSTILE, "", "").secret("vault-token", VAULT_TOKEN);
    assert_secret(&run.reveal(), b"found-it");
    let segs = server.only_request().segments();
    assert_eq!(segs[..3], ["v1", "secret", "data"]);
    assert_eq!(segs[3..].join("/"), HOSTILE, "Vault got another path");
    assert_nothing_ran(run.dir());
}

// ---------------------------------------------------------------- AWS Secrets Manager

fn aws_ok(test: &str) -> bool {
    if !have_tools(test, &["curl", "jq", "base64"]) {
        return false;
    }
    match curl_version() {
        Some(v) if v >= (7, 75) => true,
        v => {
            support::skip::skip(test, &format!("curl {v:?} has no --aws-sigv4 (needs 7.75)"));
            false
        }
    }
}

#[test]
fn aws_signed_request_reads_a_json_key_and_the_whole_string() {
    if !aws_ok("aws_signed_request_reads_a_json_key_and_the_whole_string") {
        return;
    }
    let server = aws::start(aws::example());
    let run = aws::run(&server.url(), "eu-west-1", "prod/db", "password", "")
        .secret("aws-secret-access-key", AWS_SECRET);
    assert_secret(&run.reveal(), b"pa ss\"\n");
    let req = server.only_request();
    assert_eq!((req.method.as_str(), req.raw_path.as_str()), ("POST", "/"));
    assert_eq!(
        header(&req, "X-Amz-Target"),
        "secretsmanager.GetSecretValue"
    );
    assert_eq!(header(&req, "Content-Type"), "application/x-amz-json-1.1");
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body, json!({"SecretId": "prod/db"}));
    // The stand-in verified the signature; check the scope it was made for.
    let auth = sigv4::verify(&req, AWS_SECRET).expect("a valid SigV4 signature");
    assert_eq!(
        (
            auth.access_key_id.as_str(),
            auth.region.as_str(),
            auth.service.as_str()
        ),
        (AKID, "eu-west-1", "secretsmanager")
    );
    assert!(auth.signed_headers.iter().any(|h| h == "x-amz-date"));

    let run = aws::run(&server.url(), "eu-west-1", "prod/db", "", "")
        .secret("aws-secret-access-key", AWS_SECRET);
    assert_secret(
        &run.reveal(),
        json!({"username": "app", "password": "pa ss\"\n", "port": 5432})
            .to_string()
            .as_bytes(),
    );
}

#[test]
fn aws_reads_a_previous_stage_and_binary_secrets() {
    if !aws_ok("aws_reads_a_previous_stage_and_binary_secrets") {
        return;
    }
    let server = aws::start(aws::example());
    let run = aws::run(&server.url(), "eu-west-1", "prod/db", "", "AWSPREVIOUS")
        .secret("aws-secret-access-key", AWS_SECRET);
    assert_secret(&run.reveal(), b"old-password");
    let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
    assert_eq!(
        body,
        json!({"SecretId": "prod/db", "VersionStage": "AWSPREVIOUS"})
    );

    let run = aws::run(&server.url(), "eu-west-1", "prod/keystore", "", "")
        .secret("aws-secret-access-key", AWS_SECRET);
    assert_secret(&run.reveal(), b"\x01\xfe binary\n\n");

    let (out, v) = aws::run(&server.url(), "eu-west-1", "prod/missing", "", "")
        .secret("aws-secret-access-key", AWS_SECRET)
        .json();
    assert_script_failed(&out, &v, "ResourceNotFoundException", &[AWS_SECRET]);
}

#[test]
fn aws_wrong_secret_key_fails_the_signature_without_printing_it() {
    if !aws_ok("aws_wrong_secret_key_fails_the_signature_without_printing_it") {
        return;
    }
    let wrong = "tOtAlLyWrOnGsEcReTkEy/0123456789abcdefgh";
    let server = aws::start(aws::example());
    let (out, v) = aws::run(&server.url(), "eu-west-1", "prod/db", "password", "")
        .secret("aws-secret-access-key", wrong)
        .json();
    assert_script_failed(&out, &v, "InvalidSignatureException", &[wrong, "pa ss"]);
    // Positive control: the request was signed, with the wrong key and not the right one.
    let req = server.only_request();
    assert_eq!(
        sigv4::verify(&req, wrong).map(|a| a.access_key_id),
        Ok(AKID.to_string())
    );
    assert_eq!(
        sigv4::verify(&req, AWS_SECRET),
        Err(sigv4::SigError::Mismatch)
    );
}

#[test]
fn aws_credential_scope_must_name_the_region() {
    if !aws_ok("aws_credential_scope_must_name_the_region") {
        return;
    }
    let server = aws::start(aws::example());
    let (out, v) = aws::run(&server.url(), "us-east-1", "prod/db", "", "")
        .secret("aws-secret-access-key", AWS_SECRET)
        .json();
    assert_script_failed(
        &out,
        &v,
        "Credential should be scoped to a valid region",
        &[AWS_SECRET],
    );
    let auth = sigv4::parse_authorization(&server.only_request()).unwrap();
    assert_eq!(auth.region, "us-east-1");
}

#[test]
fn aws_hostile_secret_id_and_key_are_data() {
    if !aws_ok("aws_hostile_secret_id_and_key_are_data") {
        return;
    }
    let server = aws::start(aws::example());
    let run = aws::run(&server.url(), "eu-west-1", HOSTILE, HOSTILE, "")
        .secret("aws-secret-access-key", AWS_SECRET);
    assert_secret(&run.reveal(), b"hostile-ok");
    let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
    assert_eq!(body["SecretId"], HOSTILE);
    assert_nothing_ran(run.dir());
}

// ---------------------------------------------------------------- Azure Key Vault

#[test]
fn azure_reads_the_current_secret_with_a_managed_identity() {
    if !curl_jq("azure_reads_the_current_secret_with_a_managed_identity") {
        return;
    }
    let az = azure::pair(
        AZ_TOKEN,
        None,
        &[
            ("db-password", "1f2e", "old"),
            ("db-password", "9a8b", "new value\n"),
        ],
    );
    assert_secret(
        &azure::run(&az, "db-password", "", "").reveal(),
        b"new value\n",
    );
    let imds = az.imds.only_request();
    assert_eq!(imds.raw_path, "/metadata/identity/oauth2/token");
    assert_eq!(header(&imds, "Metadata"), "true");
    assert_eq!(
        imds.param("resource").as_deref(),
        Some(azure::VAULT_RESOURCE)
    );
    assert_eq!(imds.param("client_id"), None);
    let kv = az.vault.only_request();
    assert_eq!(kv.raw_path, "/secrets/db-password");
    assert_eq!(kv.raw_query, "api-version=7.4");
    assert_eq!(header(&kv, "Authorization"), format!("Bearer {AZ_TOKEN}"));

    // The access token is not a template value, so nothing masks it: the template itself
    // must never print it.
    let (out, v) = azure::run(&az, "db-password", "", "").json();
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        !contains(&out.stdout, AZ_TOKEN.as_bytes()) && !contains(&out.stderr, AZ_TOKEN.as_bytes())
    );
}

#[test]
fn azure_reads_a_version_with_a_user_assigned_identity() {
    if !curl_jq("azure_reads_a_version_with_a_user_assigned_identity") {
        return;
    }
    let client = "0d1c9f7e-2b3a-4c5d-8e9f-a0b1c2d3e4f5";
    let az = azure::pair(
        AZ_TOKEN,
        Some(client),
        &[
            ("db-password", "1f2e", "old"),
            ("db-password", "9a8b", "new"),
        ],
    );
    assert_secret(
        &azure::run(&az, "db-password", "1f2e", client).reveal(),
        b"old",
    );
    assert_eq!(
        az.imds.only_request().param("client_id").as_deref(),
        Some(client)
    );
    assert_eq!(
        az.vault.only_request().raw_path,
        "/secrets/db-password/1f2e"
    );

    let (out, v) = azure::run(&az, "db-password", "ffff", client).json();
    assert_script_failed(&out, &v, "SecretNotFound", &[AZ_TOKEN]);
}

#[test]
fn azure_refused_token_fails_without_printing_it() {
    if !curl_jq("azure_refused_token_fails_without_printing_it") {
        return;
    }
    let other = "eyJhbGciOiJIUzI1NiJ9.token-for-another-tenant.AbCdEf0123";
    let az = azure::pair(other, None, &[("db-password", "1", "never-seen")]);
    let (out, v) = azure::run(&az, "db-password", "", "").json();
    assert_script_failed(&out, &v, "HTTP 401: Unauthorized", &[other, "never-seen"]);
    // Positive control: the token did reach the vault.
    assert_eq!(
        header(&az.vault.only_request(), "Authorization"),
        format!("Bearer {other}")
    );
}

#[test]
fn azure_hostile_secret_name_is_data() {
    if !curl_jq("azure_hostile_secret_name_is_data") {
        return;
    }
    let az = azure::pair(AZ_TOKEN, None, &[(HOSTILE, "1", "hostile-ok")]);
    let run = azure::run(&az, HOSTILE, "", "");
    assert_secret(&run.reveal(), b"hostile-ok");
    assert_eq!(az.vault.only_request().segments(), ["secrets", HOSTILE]);
    assert_nothing_ran(run.dir());
}

// ---------------------------------------------------------------- 1Password Connect

#[test]
fn onepassword_reads_a_field_by_label_or_id() {
    if !curl_jq("onepassword_reads_a_field_by_label_or_id") {
        return;
    }
    let server = onepassword::start(onepassword::example(OP_VAULT, OP_ITEM));
    let url = server.url();
    assert_secret(
        &onepassword::run(&url, OP_VAULT, OP_ITEM, "password", OP_TOKEN).reveal(),
        b"pa$$ \"word\"\n",
    );
    assert_secret(
        &onepassword::run(&url, OP_VAULT, OP_ITEM, "API key", OP_TOKEN).reveal(),
        b"ak-123",
    );
    assert_secret(
        &onepassword::run(&url, OP_VAULT, OP_ITEM, "x7hq2", OP_TOKEN).reveal(),
        b"ak-123",
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.method, "GET");
        assert_eq!(r.raw_path, format!("/v1/vaults/{OP_VAULT}/items/{OP_ITEM}"));
        assert_eq!(header(r, "Authorization"), format!("Bearer {OP_TOKEN}"));
    }
    // A field without a value, and no such field: both fail.
    for field in ["notesPlain", "pin"] {
        let (out, v) = onepassword::run(&url, OP_VAULT, OP_ITEM, field, OP_TOKEN).json();
        assert_script_failed(&out, &v, "has no field", &[OP_TOKEN]);
    }
}

#[test]
fn onepassword_wrong_token_fails_without_printing_it() {
    if !curl_jq("onepassword_wrong_token_fails_without_printing_it") {
        return;
    }
    let wrong = "eyJhbGciOiJFUzI1NiJ9.wrong.connect-token-0000";
    let server = onepassword::start(onepassword::example(OP_VAULT, OP_ITEM));
    let (out, v) = onepassword::run(&server.url(), OP_VAULT, OP_ITEM, "password", wrong).json();
    assert_script_failed(
        &out,
        &v,
        "HTTP 401: Invalid token signature",
        &[wrong, "pa$$"],
    );
    assert_eq!(
        header(&server.only_request(), "Authorization"),
        format!("Bearer {wrong}")
    );
}

#[test]
fn onepassword_hostile_ids_and_label_are_data() {
    if !curl_jq("onepassword_hostile_ids_and_label_are_data") {
        return;
    }
    let server = onepassword::start(onepassword::example(HOSTILE, HOSTILE));
    let run = onepassword::run(&server.url(), HOSTILE, HOSTILE, HOSTILE, OP_TOKEN);
    assert_secret(&run.reveal(), b"hostile-ok");
    assert_eq!(
        server.only_request().segments(),
        ["v1", "vaults", HOSTILE, "items", HOSTILE]
    );
    assert_nothing_ran(run.dir());
}

// ---------------------------------------------------------------- CyberArk CCP

#[test]
fn cyberark_reads_content_from_root_and_a_folder() {
    if !curl_jq("cyberark_reads_content_from_root_and_a_folder") {
        return;
    }
    let server = cyberark::start(cyberark::example());
    let url = server.url();
    assert_secret(
        &cyberark::run(&url, "harness-csm", "Prod-DB", "", "pg-main").reveal(),
        b"Cy8er@rk \"pw\"\n",
    );
    assert_secret(
        &cyberark::run(&url, "harness-csm", "Prod-DB", "Linux", "pg-main").reveal(),
        b"in-a-folder",
    );
    let reqs = server.requests();
    assert_eq!(reqs[0].raw_path, "/AIMWebService/api/Accounts");
    assert_eq!(
        reqs[0].raw_query,
        "AppID=harness-csm&Safe=Prod-DB&Object=pg-main"
    );
    assert_eq!(reqs[1].param("Folder").as_deref(), Some("Linux"));

    let (out, v) = cyberark::run(&url, "harness-csm", "Prod-DB", "", "pg-other").json();
    assert_script_failed(&out, &v, "APPAP004E", &["Cy8er@rk"]);
}

#[test]
fn cyberark_unknown_application_fails() {
    if !curl_jq("cyberark_unknown_application_fails") {
        return;
    }
    let server = cyberark::start(cyberark::example());
    let (out, v) = cyberark::run(&server.url(), "someone-else", "Prod-DB", "", "pg-main").json();
    assert_script_failed(&out, &v, "HTTP 403: APPAP306E", &["Cy8er@rk"]);
    assert_eq!(
        server.only_request().param("AppID").as_deref(),
        Some("someone-else")
    );
}

#[test]
fn cyberark_hostile_safe_and_object_are_data() {
    if !curl_jq("cyberark_hostile_safe_and_object_are_data") {
        return;
    }
    let server = cyberark::start(cyberark::example());
    let run = cyberark::run(&server.url(), "harness-csm", HOSTILE, "", HOSTILE);
    assert_secret(&run.reveal(), b"hostile-ok");
    let req = server.only_request();
    assert_eq!(req.param("Safe").as_deref(), Some(HOSTILE));
    assert_eq!(req.param("Object").as_deref(), Some(HOSTILE));
    assert_eq!(
        req.query().len(),
        3,
        "a value split into extra parameters: {:?}",
        req.query()
    );
    assert_nothing_ran(run.dir());
}

#[test]
fn cyberark_client_certificate_authentication() {
    if !have_tools(
        "cyberark_client_certificate_authentication",
        &["curl", "jq", "openssl"],
    ) {
        return;
    }
    let ccp = cyberark::TlsCcp::new();
    assert_secret(&ccp.run(true).reveal(), b"tls-ok \"pw\"");
    // Without the certificate the handshake is refused.
    let ccp = cyberark::TlsCcp::new();
    let (out, v) = ccp.run(false).json();
    assert_script_failed(&out, &v, "no answer from the CCP", &[]);
}

// ---------------------------------------------------------------- Doppler

#[test]
fn doppler_reads_computed_and_raw_values() {
    if !curl_jq("doppler_reads_computed_and_raw_values") {
        return;
    }
    let server = doppler::start(doppler::example());
    let url = server.url();
    let token = format!("{DOPPLER_TOKEN}\n");
    assert_secret(
        &doppler::run(&url, "backend", "prd", "DATABASE_URL", "", &token).reveal(),
        b"postgres://app:s3cr3t@db/app",
    );
    assert_secret(
        &doppler::run(&url, "", "", "DATABASE_URL", "raw", &token).reveal(),
        b"postgres://app:${DB_PASS}@db/app",
    );
    let reqs = server.requests();
    assert_eq!(reqs[0].raw_path, "/v3/configs/config/secret");
    assert_eq!(
        reqs[0].raw_query,
        "project=backend&config=prd&name=DATABASE_URL"
    );
    // With a service token, project and config may be left out: they are not sent.
    assert_eq!(reqs[1].raw_query, "name=DATABASE_URL");
    for r in &reqs {
        assert_eq!(
            header(r, "Authorization"),
            format!("Bearer {DOPPLER_TOKEN}")
        );
    }

    let (out, v) = doppler::run(&url, "backend", "prd", "NOPE", "", &token).json();
    assert_script_failed(
        &out,
        &v,
        "Could not find requested secret",
        &[DOPPLER_TOKEN],
    );
    let (out, v) = doppler::run(&url, "backend", "prd", "DATABASE_URL", "plain", &token).json();
    assert_script_failed(&out, &v, "valueType must be", &[DOPPLER_TOKEN]);
}

#[test]
fn doppler_wrong_token_fails_without_printing_it() {
    if !curl_jq("doppler_wrong_token_fails_without_printing_it") {
        return;
    }
    let wrong = "dp.st.prd.WRONGwrongWRONGwrongWRONGwrong00";
    let server = doppler::start(doppler::example());
    let (out, v) = doppler::run(&server.url(), "", "", "DATABASE_URL", "", wrong).json();
    assert_script_failed(
        &out,
        &v,
        "HTTP 401: Invalid Service token",
        &[wrong, "s3cr3t"],
    );
    assert_eq!(
        header(&server.only_request(), "Authorization"),
        format!("Bearer {wrong}")
    );
}

#[test]
fn doppler_hostile_name_is_data() {
    if !curl_jq("doppler_hostile_name_is_data") {
        return;
    }
    let server = doppler::start(doppler::example());
    let run = doppler::run(&server.url(), "", "", HOSTILE, "", DOPPLER_TOKEN);
    assert_secret(&run.reveal(), b"hostile-ok");
    let req = server.only_request();
    assert_eq!(req.query(), [("name".to_string(), HOSTILE.to_string())]);
    assert_nothing_ran(run.dir());
}

// ---------------------------------------------------------------- dotenv file

const DOTENV: &str = concat!(
    "# app settings\n",
    "\n",
    "PLAIN=plain-value   # a comment\n",
    "export SINGLE='$(touch pwned) `touch pwned2` \\n \"dq\" #hash'\n",
    "DOUBLE=\"line one\\nline \\\"two\\\"\\t\\\\ \\$HOME\"\n",
    "  SPACED = spaced value  \n",
    "CRLF=windows\r\n",
    "DUP=first\n",
    "DUP=second\n",
    "RUN=$(touch pwned)\n",
    "# GHOST=commented-out\n",
    "LAST=no-newline-at-end",
);

#[test]
fn dotenv_reads_each_quoting_style_without_running_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.env");
    std::fs::write(&file, DOTENV).unwrap();
    let cases: &[(&str, &[u8])] = &[
        ("PLAIN", b"plain-value"),
        ("SINGLE", b"$(touch pwned) `touch pwned2` \\n \"dq\" #hash"),
        ("DOUBLE", b"line one\nline \"two\"\t\\ $HOME"),
        ("SPACED", b"spaced value"),
        ("CRLF", b"windows"),
        ("DUP", b"second"),
        ("RUN", b"$(touch pwned)"),
        ("LAST", b"no-newline-at-end"),
    ];
    for (key, want) in cases {
        let run = Run::new("dotenv-file")
            .var("file", file.as_os_str().as_encoded_bytes())
            .var("key", key);
        assert_secret(&run.reveal(), want);
        assert_nothing_ran(run.dir());
    }
}

#[test]
fn dotenv_missing_keys_and_patterns_fail() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.env");
    std::fs::write(&file, DOTENV).unwrap();
    // `*` and `GHOST` (commented out) are no entries; a key is never a pattern.
    for key in ["GHOST", "*", "DU?", HOSTILE] {
        let (out, v) = Run::new("dotenv-file")
            .var("file", file.as_os_str().as_encoded_bytes())
            .var("key", key)
            .json();
        assert_script_failed(&out, &v, "dotenv-file: no ", &["plain-value"]);
    }
    let (out, v) = Run::new("dotenv-file")
        .var(
            "file",
            dir.path().join("absent.env").as_os_str().as_encoded_bytes(),
        )
        .var("key", "PLAIN")
        .json();
    assert_script_failed(&out, &v, "cannot read", &[]);
}

// ---------------------------------------------------------------- pass

#[test]
fn pass_reads_the_password_and_fields_of_entries() {
    if !have_tools(
        "pass_reads_the_password_and_fields_of_entries",
        &["pass", "gpg", "gpgconf"],
    ) {
        return;
    }
    let store = pass::PassStore::new();
    store.insert(
        "prod/db",
        "pa ss \"w\" $(touch pwned)\nlogin: app\nurl: https://db.example.com\n",
    );
    store.insert(HOSTILE, "hostile-ok\nnote: x\n");
    let cases: &[(&str, &str, &[u8])] = &[
        ("prod/db", "", b"pa ss \"w\" $(touch pwned)"),
        ("prod/db", "login", b"app"),
        ("prod/db", "url", b"https://db.example.com"),
        (HOSTILE, "", b"hostile-ok"),
    ];
    for (entry, field, want) in cases {
        let run = store.run(entry, field);
        assert_secret(&run.reveal(), want);
        assert_nothing_ran(run.dir());
    }
    let (out, v) = store.run("prod/db", "otp").json();
    assert_script_failed(&out, &v, "has no field otp", &[]);
    // An absent entry, and a folder (which `pass show` lists, successfully).
    for entry in ["prod/absent", "prod"] {
        let (out, v) = store.run(entry, "").json();
        assert_script_failed(&out, &v, "is not an entry of the store", &[]);
    }
}

// ---------------------------------------------------------------- all stores

/// Credentials never reach a program's argv, where every local user can read them in
/// /proc: curl, jq and base64 are wrapped to log their argv while each credential-bearing
/// template runs, and no credential is in the log (nor the access key id that shares
/// AWS's credential line).
#[test]
fn credentials_never_reach_a_program_argv() {
    if !aws_ok("credentials_never_reach_a_program_argv") {
        return;
    }
    let log = ArgvLog::new(&["curl", "jq", "base64"]);
    let vault = vault::start(vault::kv2("db", json!({"password": "x-vault"}), None));
    let run = vault::run(&vault.url(), "db", "password", "", "").secret("vault-token", VAULT_TOKEN);
    assert_secret(&run.path_first(log.dir()).reveal(), b"x-vault");

    let aws = aws::start(aws::example());
    let run = aws::run(&aws.url(), "eu-west-1", "prod/db", "password", "")
        .secret("aws-secret-access-key", AWS_SECRET);
    assert_secret(&run.path_first(log.dir()).reveal(), b"pa ss\"\n");

    let az = azure::pair(AZ_TOKEN, None, &[("db-password", "1", "x-azure")]);
    let run = azure::run(&az, "db-password", "", "");
    assert_secret(&run.path_first(log.dir()).reveal(), b"x-azure");

    let op = onepassword::start(onepassword::example(OP_VAULT, OP_ITEM));
    let run = onepassword::run(&op.url(), OP_VAULT, OP_ITEM, "API key", OP_TOKEN);
    assert_secret(&run.path_first(log.dir()).reveal(), b"ak-123");

    let dp = doppler::start(doppler::example());
    let run = doppler::run(&dp.url(), "", "", "DATABASE_URL", "", DOPPLER_TOKEN);
    assert_secret(
        &run.path_first(log.dir()).reveal(),
        b"postgres://app:s3cr3t@db/app",
    );

    let words = log.words();
    // Positive control: the log saw each template's requests, URL and all.
    for url in [
        vault.url(),
        aws.url(),
        az.imds.url(),
        az.vault.url(),
        op.url(),
        dp.url(),
    ] {
        assert!(
            words.iter().any(|w| contains(w, url.as_bytes())),
            "no logged argv names {url}"
        );
    }
    for secret in [
        VAULT_TOKEN,
        AKID,
        AWS_SECRET,
        AZ_TOKEN,
        OP_TOKEN,
        DOPPLER_TOKEN,
    ] {
        let found = words.iter().find(|w| contains(w, secret.as_bytes()));
        assert!(
            found.is_none(),
            "a credential in argv: {:?}",
            found.map(|w| String::from_utf8_lossy(w))
        );
    }
}

// ---------------------------------------------------------------- controls and docs

/// Positive control for every `assert_nothing_ran`: pasted into a script the way Harness
/// pastes values, [`HOSTILE`] does run its payload.
#[test]
fn hostile_value_runs_when_pasted_into_a_script() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("x=\"{HOSTILE}\""))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(dir.path().join("pwned").exists() && dir.path().join("pwned2").exists());
}

/// Positive control for the stand-in's SigV4 check: AWS's documented example request
/// (IAM ListUsers, 2015-08-30) verifies with its documented key, and not with another.
#[test]
fn sigv4_check_accepts_the_documented_example_only_with_its_key() {
    let req = Request {
        method: "GET".into(),
        raw_path: "/".into(),
        raw_query: "Action=ListUsers&Version=2010-05-08".into(),
        headers: vec![
            ("Host".into(), "iam.amazonaws.com".into()),
            (
                "Content-Type".into(),
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            ),
            ("X-Amz-Date".into(), "20150830T123600Z".into()),
            (
                "Authorization".into(),
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, \
                 Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
                    .into(),
            ),
        ],
        body: Vec::new(),
    };
    let auth = sigv4::verify(&req, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY").unwrap();
    assert_eq!(
        (auth.region.as_str(), auth.service.as_str()),
        ("us-east-1", "iam")
    );
    assert_eq!(
        sigv4::verify(&req, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEz"),
        Err(sigv4::SigError::Mismatch)
    );
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(support::standins::cli::template(name)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}.json: {e}"))
}

#[test]
fn every_template_is_tested_here() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/templates");
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    found.sort();
    assert_eq!(
        found, TEMPLATES,
        "a template without tests, or a test list out of date"
    );
}

/// Each template's script starts with a comment header that documents every declared
/// variable and stored secret, its requirements, and an example that sets them all.
#[test]
fn every_template_documents_what_it_needs() {
    for name in TEMPLATES {
        let doc = load(name);
        assert_eq!(doc["name"], *name);
        let script = doc["scriptString"].as_str().unwrap();
        let header: String = script
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        for section in [
            "What it does:",
            "Variables:",
            "Stored secrets:",
            "Requires:",
            "Example:",
        ] {
            assert!(
                header.contains(section),
                "{name}: no {section:?} in the header"
            );
        }
        assert!(
            header.contains(&format!("--template examples/templates/{name}.json")),
            "{name}: the example runs another template"
        );
        let vars: Vec<&str> = doc["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for var in &vars {
            assert!(
                header.contains(&format!("#   {var} ")),
                "{name}: {var} is not documented"
            );
            assert!(
                header.contains(&format!("--var {var}=")),
                "{name}: the example omits {var}"
            );
            assert!(
                script.contains(&format!("${{{var}}}")),
                "{name}: {var} is declared but unused"
            );
        }
        let call = "${secrets.getValue(\"";
        for (i, _) in script.match_indices(call) {
            let id = script[i + call.len()..].split('"').next().unwrap();
            assert!(
                header.contains(&format!("#   {id} ")),
                "{name}: secret {id} undocumented"
            );
            assert!(
                header.contains(&format!("--secret-file {id}=")),
                "{name}: example omits {id}"
            );
        }
        // No placeholder in the header: comments are not where values go.
        assert!(
            !header.contains("${"),
            "{name}: a placeholder in the header comment"
        );
    }
}
