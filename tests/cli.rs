//! `csm-agent test-run` as the real binary: output modes, exit codes and error kinds, the
//! seed's input documents, and the leak rules (nothing the process prints, logs or leaves on
//! disk contains a value, in any encoding).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;

const BIN: &str = env!("CARGO_BIN_EXE_csm-agent");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("test-run")
            .args(args)
            .env("TMPDIR", self.dir.path())
            .output()
            .unwrap()
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn reveal_prints_exactly_the_secret_bytes() {
    let e = Env::new();
    let t = e.file(
        "t.sh",
        b"secret=$'line one\\n\\xfe\\x01 two\\n\\n'\necho chatter\necho noise >&2",
    );
    let out = e.run(&[
        "--template",
        s(&t),
        "--command-path",
        s(e.path()),
        "--reveal",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"line one\n\xfe\x01 two\n\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ok: secret retrieved (17 bytes)"), "{err}");
}

#[test]
fn without_reveal_the_secret_appears_in_no_form() {
    let e = Env::new();
    let secret = "sup3r-secret/value with+space&amp=\"quote\"";
    // The script prints the JSON and URL forms too (computed here, not by a tool the
    // machine may lack), so every check below is one the masking had to pass.
    let forms = encodings(secret.as_bytes());
    let printed = format!("{}\n{}\n", json_form(secret), url_form(secret.as_bytes()));
    let forms_file = e.file("forms.txt", printed.as_bytes());
    let script = format!(
        "secret='{secret}'\n\
         echo \"stdout: $secret\"\n\
         echo \"stderr: $secret\" >&2\n\
         printf '%s' \"$secret\" | base64\n\
         cat '{}'",
        s(&forms_file)
    );
    let t = e.file("t.sh", script.as_bytes());
    for extra in [&[][..], &["--json"][..]] {
        let mut args = vec!["--template", s(&t), "--command-path", s(e.path())];
        args.extend_from_slice(extra);
        let out = e.run(&args);
        assert_eq!(out.status.code(), Some(0));
        let all = [out.stdout.clone(), out.stderr.clone()].concat();
        for form in &forms {
            assert!(
                !contains(&all, form),
                "leaked {:?} in {}",
                String::from_utf8_lossy(form),
                String::from_utf8_lossy(&all)
            );
        }
        // Positive control: all five lines (raw twice, base64, JSON, URL) reached the log,
        // masked.
        let masked = String::from_utf8_lossy(&all).matches("***").count();
        assert!(masked >= 5, "{}", String::from_utf8_lossy(&all));
    }
}

#[test]
fn json_success_and_failure_shapes() {
    let e = Env::new();
    let ok = e.file("ok.sh", b"secret=abcdef");
    let out = e.run(&[
        "--template",
        s(&ok),
        "--command-path",
        s(e.path()),
        "--json",
    ]);
    let v = json(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["length"], 6);
    assert_eq!(v["attempts"], 1);
    assert!(v["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(v.get("secret").is_none());

    let out = e.run(&[
        "--template",
        s(&ok),
        "--command-path",
        s(e.path()),
        "--json",
        "--reveal",
    ]);
    assert_eq!(json(&out)["secret"], "abcdef");

    let bad = e.file("bad.sh", b"echo oops >&2; exit 9");
    let out = e.run(&[
        "--template",
        s(&bad),
        "--command-path",
        s(e.path()),
        "--json",
        "--attempts",
        "2",
        "--retry-delay",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["kind"], "script_failed");
    assert_eq!(v["attempts"], 2);
    assert!(v["error"]["message"].as_str().unwrap().contains("status 9"));
}

#[test]
fn exit_codes_and_kinds() {
    let e = Env::new();
    let cases: Vec<(&[u8], Vec<&str>, i32, &str)> = vec![
        (b"secret=", vec![], 1, "empty_secret"),
        (b"secret=null", vec![], 1, "empty_secret"),
        (b"exit 4", vec![], 1, "script_failed"),
        (
            b"secret=x",
            vec!["--command-path", "/nonexistent/dir"],
            2,
            "command_path",
        ),
        (b"sleep 100", vec!["--timeout", "0.3"], 3, "timeout"),
    ];
    for (script, extra, code, kind) in cases {
        let t = e.file("t.sh", script);
        let mut args = vec!["--template", s(&t), "--json", "--attempts", "1"];
        if !extra.contains(&"--command-path") {
            args.extend(["--command-path", s(e.path())]);
        }
        args.extend(extra.iter().copied());
        let out = e.run(&args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(json(&out)["error"]["kind"], kind);
    }
}

#[test]
fn malformed_input_is_a_clear_invalid_input_error() {
    let e = Env::new();
    let t = e.file("t.sh", b"secret=x");
    for (name, body) in [
        (
            "trunc.json",
            &b"{\"secretManagerInput\": {\"secretManagerType\": \"CUSTOM\""[..],
        ),
        ("shape.json", b"{\"something\": 1}"),
        (
            "type.json",
            b"{\"input\": {\"secretManagerId\": \"x\", \"secretManagerType\": \"VAULT\"}}",
        ),
        ("binary.json", b"\xff\xfe\x00garbage"),
    ] {
        let input = e.file(name, body);
        let out = e.run(&["--template", s(&t), "--input", s(&input), "--json"]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert_eq!(json(&out)["error"]["kind"], "invalid_input", "{name}");
    }
    let out = e.run(&["--template", s(&e.path().join("missing.sh"))]);
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["test-run", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_bad_value_in_input_json_is_not_echoed() {
    let e = Env::new();
    let t = e.file("t.sh", b"secret=x");
    let input = e.file(
        "i.json",
        br#"{"secretManagerInput": {"secretManagerType": "CUSTOM", "customSecretManagerInput": {"testVariables": [{"name": "k", "value": 987654321987}]}}}"#,
    );
    let out = e.run(&["--template", s(&t), "--input", s(&input)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("987654321987"));
}

#[test]
fn seed_input_supplies_values_and_command_path_and_flags_override() {
    let e = Env::new();
    let sub = e.path().join("cmdpath");
    std::fs::create_dir(&sub).unwrap();
    let doc = serde_json::json!({
        "name": "t", "scriptString": "secret=\"${engineName}:${path}:${key}:$(basename \"$(pwd)\")\"",
        "variables": ["key", "engineName", "path"]
    });
    let t = e.file("t.json", doc.to_string().as_bytes());
    let input = serde_json::json!({"secretManagerInput": {"secretManagerType": "CUSTOM", "customSecretManagerInput": {
        "name": "Doc", "delegateSelectors": [], "isConnectorTemplatized": false, "executeOnDelegate": true,
        "templateId": "t", "host": null, "connectorId": null, "commandPath": s(&sub),
        "testVariables": [{"name": "key", "value": "k-1"}, {"name": "engineName", "value": "eng"}, {"name": "path", "value": "p/q"}],
        "usageScope": {"appEnvScopes": [{"application": {"filterType": "ALL"}, "environment": {"filterType": "PRODUCTION_ENVIRONMENTS"}}]}}}});
    let i = e.file("i.json", input.to_string().as_bytes());
    let out = e.run(&["--template", s(&t), "--input", s(&i), "--reveal", "-q"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"eng:p/q:k-1:cmdpath");

    let out = e.run(&[
        "--template",
        s(&t),
        "--input",
        s(&i),
        "--var",
        "key=flag",
        "--command-path",
        s(e.path()),
        "--reveal",
        "-q",
    ]);
    let base = e.path().file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("eng:p/q:flag:{base}")
    );

    // The update form works as well.
    let upd = serde_json::json!({"input": {"secretManagerId": "sm1", "secretManagerType": "CUSTOM", "customSecretManagerInput": {
        "testVariables": [{"name": "key", "value": "u"}, {"name": "engineName", "value": "e"}, {"name": "path", "value": "p"}],
        "commandPath": s(&sub)}}});
    let u = e.file("u.json", upd.to_string().as_bytes());
    let out = e.run(&["--template", s(&t), "--input", s(&u), "--reveal", "-q"]);
    assert_eq!(out.stdout, b"e:p:u:cmdpath");
}

#[test]
fn var_file_values_round_trip_exactly() {
    let e = Env::new();
    let value =
        b"-----BEGIN KEY-----\nline 'two' \"three\" $(four) `five`\n\\six\n-----END KEY-----\n";
    let vf = e.file("value.pem", value);
    let t = e.file("t.sh", b"secret=${pem}");
    let out = e.run(&[
        "--template",
        s(&t),
        "--var-file",
        &format!("pem={}", s(&vf)),
        "--command-path",
        s(e.path()),
        "--reveal",
        "-q",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, value);
}

#[test]
fn missing_variables_are_one_error_naming_all() {
    let e = Env::new();
    let doc = serde_json::json!({"name": "t", "scriptString": "secret=${a}${b}${c}", "variables": ["a", "b", "c"]});
    let t = e.file("t.json", doc.to_string().as_bytes());
    let out = e.run(&["--template", s(&t), "--var", "b=given-value", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let v = json(&out);
    assert_eq!(v["error"]["kind"], "missing_variable");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains('a')
            && msg.contains('c')
            && msg.contains("have not been provided as part of test parameters"),
        "{msg}"
    );
    assert!(!msg.contains("given-value"));
}

#[test]
fn execute_on_delegate_false_never_falls_back_to_a_local_run() {
    let e = Env::new();
    let marker = e.path().join("ran-locally");
    let t = e.file("t.sh", format!("touch {}\nsecret=x", s(&marker)).as_bytes());
    let input = serde_json::json!({"secretManagerInput": {"secretManagerType": "CUSTOM", "customSecretManagerInput": {
        "executeOnDelegate": false, "host": null, "connectorId": "c1", "testVariables": []}}});
    let i = e.file("i.json", input.to_string().as_bytes());
    let out = e.run(&["--template", s(&t), "--input", s(&i), "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json(&out)["error"]["kind"], "invalid_input");
    assert!(!marker.exists());
}

#[test]
fn the_agents_environment_never_reaches_the_script() {
    let e = Env::new();
    let t = e.file(
        "t.sh",
        b"secret=\"[${AGENT_TOKEN-unset}][${EXTRA_OK-unset}]\"",
    );
    let out = Command::new(BIN)
        .args([
            "test-run",
            "--template",
            s(&t),
            "--command-path",
            s(e.path()),
            "--reveal",
            "-q",
            "--env-allow",
            "EXTRA_OK",
        ])
        .env("AGENT_TOKEN", "tok-must-not-reach-scripts")
        .env("EXTRA_OK", "allowed")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"[unset][allowed]");
}

/// The leak rule, end to end: with debug logging on, nothing the process prints contains a
/// variable value or the secret, in raw, JSON, base64 or URL-encoded form, on success or
/// failure, and nothing is left on disk.
#[test]
fn leak_scan_of_everything_the_process_prints_and_leaves() {
    let e = Env::new();
    let work = e.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let var_value = "var/value with spaces+plus&amp";
    let secret = "returned-secret-9c1e";
    let vf = e.file("v.txt", var_value.as_bytes());
    for (name, tail) in [
        ("ok", "secret='returned-secret-9c1e'"),
        (
            "fail",
            "secret='returned-secret-9c1e'; echo \"bad $v\" >&2; exit 3",
        ),
    ] {
        let script = format!(
            "v=${{token}}\necho \"log: $v\"\nprintf '%s' \"$v\" | base64 >&2\nset -x\n: \"$v\"\nset +x\n{tail}"
        );
        let t = e.file(&format!("{name}.sh"), script.as_bytes());
        let before: Vec<_> = list(e.path());
        let out = Command::new(BIN)
            .args([
                "--log",
                "debug",
                "test-run",
                "--template",
                s(&t),
                "--command-path",
                s(&work),
                "--attempts",
                "2",
                "--retry-delay",
                "0",
            ])
            .arg("--var-file")
            .arg(format!("token={}", s(&vf)))
            .env("TMPDIR", e.path())
            .output()
            .unwrap();
        let all = [out.stdout.clone(), out.stderr.clone()].concat();
        // The value did reach the script (and was masked), so the scan below means something.
        assert!(
            contains(&all, b"log: ***"),
            "{name}: {}",
            String::from_utf8_lossy(&all)
        );
        for v in [var_value.as_bytes(), secret.as_bytes()] {
            for form in encodings(v) {
                assert!(
                    !contains(&all, &form),
                    "{name}: leaked {:?}:\n{}",
                    String::from_utf8_lossy(&form),
                    String::from_utf8_lossy(&all)
                );
            }
        }
        assert_eq!(list(e.path()), before, "{name}: files were left behind");
        assert_eq!(
            std::fs::read_dir(&work).unwrap().count(),
            0,
            "{name}: files left in commandPath"
        );
    }
}

fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The forms a value must not appear in.
fn encodings(v: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![v.to_vec()];
    let b64 = base64::engine::general_purpose::STANDARD.encode(v);
    // A prefix of the base64 form that only depends on the value.
    out.push(b64.as_bytes()[..(v.len() / 3) * 4].to_vec());
    if let Ok(s) = std::str::from_utf8(v) {
        out.push(json_form(s).into_bytes());
        out.push(url_form(v).into_bytes());
    }
    out.sort();
    out.dedup();
    out
}

/// `v` JSON-escaped, without the quotes.
fn json_form(v: &str) -> String {
    let j = serde_json::to_string(v).unwrap();
    j[1..j.len() - 1].to_string()
}

/// `v` percent-encoded, every byte but the unreserved ones.
fn url_form(v: &[u8]) -> String {
    v.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn stored_secret_references_and_nextgen_placeholders() {
    let e = Env::new();
    let doc = serde_json::json!({
        "name": "t",
        "scriptString": "secret=\"<+secretManager.environmentVariables.user>:<+spec.environmentVariables.user>:${secrets.getValue(\"db-pass\")}\"",
        "variables": ["user"]
    });
    let t = e.file("t.json", doc.to_string().as_bytes());
    let sf = e.file("db-pass", b"p@ss 'w0rd' $(nope)");
    let out = e.run(&[
        "--template",
        s(&t),
        "--var",
        "user=alice",
        "--secret-file",
        &format!("db-pass={}", s(&sf)),
        "--command-path",
        s(e.path()),
        "--reveal",
        "-q",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"alice:alice:p@ss 'w0rd' $(nope)");

    // Without the stored secret, the missing-value error names the reference.
    let out = e.run(&[
        "--template",
        s(&t),
        "--var",
        "user=alice",
        "--command-path",
        s(e.path()),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let v = json(&out);
    assert_eq!(v["error"]["kind"], "missing_variable");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("secrets.getValue(\"db-pass\")"));
}

#[test]
fn the_bundled_example_from_the_readme_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN)
        .current_dir(root)
        .args([
            "test-run",
            "--template",
            "examples/toy-kv.json",
            "--input",
            "examples/create-input.json",
            "--command-path",
            "examples/store",
            "--reveal",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"S3cr3t-from-toy-store!");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("looked up *** in engine kv"), "{err}");
}
