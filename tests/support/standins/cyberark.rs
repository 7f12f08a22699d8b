//! CyberArk's Central Credential Provider web service: `GET
//! /AIMWebService/api/Accounts?AppID=…&Safe=…[&Folder=…]&Object=…`, answering the
//! account with its password in `Content`. Errors are the CCP's `{"ErrorCode": …,
//! "ErrorMsg": …}`: 400 AIMWS030E for a query without AppID, 403 APPAP306E for an
//! application that is not allowed, 404 APPAP004E for no matching account.

use serde_json::json;

use super::cli::{Run, HOSTILE};

use super::http::{Request, Response, Server};

/// One account in a safe.
#[derive(Clone, Debug)]
pub struct Account {
    pub safe: String,
    /// `Root` unless the account is in a folder.
    pub folder: String,
    pub object: String,
    pub content: String,
}

/// A provider that serves one application id.
#[derive(Clone, Debug)]
pub struct Ccp {
    pub app_id: String,
    pub accounts: Vec<Account>,
}

pub fn start(ccp: Ccp) -> Server {
    Server::start(move |req| answer(&ccp, req))
}

fn error(status: u16, code: &str, message: &str) -> Response {
    Response::json(status, json!({ "ErrorCode": code, "ErrorMsg": message }))
}

fn answer(ccp: &Ccp, req: &Request) -> Response {
    if req.method != "GET" || req.raw_path != "/AIMWebService/api/Accounts" {
        return error(404, "AIMWS031E", "Resource not found.");
    }
    let Some(app) = req.param("AppID") else {
        return error(400, "AIMWS030E", "Invalid query format.");
    };
    if app != ccp.app_id {
        return error(
            403,
            "APPAP306E",
            &format!(
                "Authentication error for App ID [{app}]. Reason: APPAP008E Application \
                 [{app}] is not defined in the Vault."
            ),
        );
    }
    let safe = req.param("Safe").unwrap_or_default();
    let folder = req.param("Folder").unwrap_or_else(|| "Root".into());
    let object = req.param("Object").unwrap_or_default();
    let found = ccp
        .accounts
        .iter()
        .find(|a| a.safe == safe && a.folder == folder && a.object == object);
    let Some(a) = found else {
        return error(
            404,
            "APPAP004E",
            &format!(
                "Password object matching query [Safe={safe};Folder={folder};Object={object}] \
                 was not found (Diagnostic Info: 5). Please check that there is a password \
                 object that answers your query in the Vault and that both the Provider and \
                 the application user have the appropriate permissions needed in order to \
                 use the password."
            ),
        );
    };
    Response::json(
        200,
        json!({
            "Content": a.content,
            "CreationMethod": "PVWA",
            "Address": "db.example.com",
            "Safe": a.safe,
            "UserName": "svc_app",
            "Database": "orders",
            "Name": a.object,
            "PolicyID": "PostgreSQL",
            "DeviceType": "Database",
            "Folder": a.folder,
            "PasswordChangeInProcess": "False"
        }),
    )
}

// The tests' fixtures.

/// AppID `harness-csm`, with `Prod-DB/pg-main` in Root and in a folder, and an
/// account whose safe and object are [`HOSTILE`].
pub fn example() -> Ccp {
    let account = |safe: &str, folder: &str, object: &str, content: &str| Account {
        safe: safe.into(),
        folder: folder.into(),
        object: object.into(),
        content: content.into(),
    };
    Ccp {
        app_id: "harness-csm".into(),
        accounts: vec![
            account("Prod-DB", "Root", "pg-main", "Cy8er@rk \"pw\"\n"),
            account("Prod-DB", "Linux", "pg-main", "in-a-folder"),
            account(HOSTILE, "Root", HOSTILE, "hostile-ok"),
        ],
    }
}

/// A `test-run` of cyberark-ccp.json over plain HTTP (no certificates).
pub fn run(url: &str, app: &str, safe: &str, folder: &str, object: &str) -> Run {
    Run::new("cyberark-ccp")
        .var("ccpUrl", url)
        .var("appId", app)
        .var("safe", safe)
        .var("folder", folder)
        .var("object", object)
        .var("clientCert", "")
        .var("clientKey", "")
        .var("caFile", "")
}

/// A TLS CCP that demands a client certificate: `openssl s_server -WWW -Verify 1` on a
/// free port, serving the one account file whose name is the exact query the template
/// must send. The CA, server and client certificates are made here with openssl.
pub struct TlsCcp {
    dir: tempfile::TempDir,
    server: std::process::Child,
    port: u16,
}

impl TlsCcp {
    pub fn new() -> TlsCcp {
        use std::io::BufRead as _;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=csm test CA",
                ],
            ]
            .concat(),
        );
        std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        for (name, subject, ext) in [
            ("server", "/CN=127.0.0.1", true),
            ("client:cert", "/CN=harness-csm", false),
        ] {
            openssl(
                &[
                    &["req"],
                    &ec[..],
                    &[
                        "-keyout",
                        &format!("{name}.key"),
                        "-out",
                        "req.csr",
                        "-subj",
                        subject,
                    ],
                ]
                .concat(),
            );
            let mut sign = vec![
                "x509",
                "-req",
                "-in",
                "req.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
            ];
            let out = format!("{name}.pem");
            sign.extend(["-out", &out]);
            if ext {
                sign.extend(["-extfile", "san.ext"]);
            }
            openssl(&sign);
        }
        let www = d.join("www/AIMWebService/api");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(
            www.join("Accounts?AppID=harness-csm&Safe=Prod-DB&Object=pg-main"),
            json!({"Content": "tls-ok \"pw\"", "UserName": "svc_app", "Folder": "Root"})
                .to_string(),
        )
        .unwrap();
        let mut server = std::process::Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                "0",
                "-naccept",
                "1",
                "-WWW",
                "-cert",
                "../server.pem",
            ])
            .args([
                "-key",
                "../server.key",
                "-CAfile",
                "../ca.pem",
                "-Verify",
                "1",
                "-verify_return_error",
            ])
            .current_dir(d.join("www"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // s_server prints "ACCEPT [::]:PORT" once it listens: wait for that line.
        let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("s_server exited before listening")
                .unwrap();
            if let Some(p) = line
                .strip_prefix("ACCEPT ")
                .and_then(|a| a.rsplit(':').next())
            {
                break p.parse().unwrap();
            }
        };
        TlsCcp { dir, server, port }
    }

    pub fn run(&self, cert: bool) -> Run {
        let d = self.dir.path();
        let file = |n: &str| d.join(n).into_os_string().into_encoded_bytes();
        let run = Run::new("cyberark-ccp")
            .var("ccpUrl", format!("https://127.0.0.1:{}", self.port))
            .var("appId", "harness-csm")
            .var("safe", "Prod-DB")
            .var("folder", "")
            .var("object", "pg-main")
            .var("caFile", file("ca.pem"));
        if cert {
            // The ':' in the file name checks that the template escapes curl's
            // "file:password" syntax.
            run.var("clientCert", file("client:cert.pem"))
                .var("clientKey", file("client:cert.key"))
        } else {
            run.var("clientCert", "").var("clientKey", "")
        }
    }
}

impl Drop for TlsCcp {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
