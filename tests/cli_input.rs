//! Bad input to the real `csm-agent test-run` binary never panics and never hangs: every
//! out-of-range flag, out-of-range document field, unreadable, oversized, non-UTF-8 or
//! directory file is one `invalid_input` error (exit 2) naming the flag, field or file and
//! its bounds, and never quoting a file's content or a value. A UTF-8 byte-order mark is
//! accepted on templates, input documents and connector files.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_csm-agent");
/// Every run must end well within this; a hang fails the test instead of stalling it.
const LIMIT: Duration = Duration::from_secs(20);
const BOM: &[u8] = b"\xef\xbb\xbf";

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

    /// A sparse file of `len` bytes, starting with `head`.
    fn big_file(&self, name: &str, head: &[u8], len: u64) -> PathBuf {
        let p = self.file(name, head);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len)
            .unwrap();
        p
    }

    fn script(&self) -> PathBuf {
        self.file("ok.sh", b"secret=fine")
    }

    /// `test-run ARGS`, bounded by [`LIMIT`].
    fn run(&self, args: &[&str]) -> Output {
        let mut child = Command::new(BIN)
            .arg("test-run")
            .args(args)
            .env("TMPDIR", self.path())
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let t = std::thread::spawn(move || {
                let _ = se.read_to_end(&mut err);
                err
            });
            let _ = so.read_to_end(&mut out);
            let err = t.join().unwrap();
            let status = child.wait().unwrap();
            let _ = tx.send(Output {
                status,
                stdout: out,
                stderr: err,
            });
        });
        match rx.recv_timeout(LIMIT) {
            Ok(o) => o,
            Err(_) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                panic!("test-run {args:?} did not finish within {LIMIT:?}");
            }
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Assert the run was one `invalid_input` refusal (exit 2, no panic) and return its message.
#[track_caller]
fn invalid_input(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what}: panicked: {stderr}");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: {stderr} {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(v["ok"], false, "{what}");
    assert_eq!(v["error"]["kind"], "invalid_input", "{what}: {v}");
    v["error"]["message"].as_str().unwrap().to_string()
}

#[test]
fn out_of_range_numeric_flags_are_invalid_input_with_their_bounds() {
    let e = Env::new();
    let t = e.script();
    let cases: &[(&[&str], &str)] = &[
        // These four panicked with exit 101 (Duration::from_secs_f64).
        (
            &["--timeout", "1e19"],
            "--timeout must be a number of seconds from 0.001 to 86400",
        ),
        (
            &["--timeout", "1e300"],
            "--timeout must be a number of seconds from 0.001 to 86400",
        ),
        (
            &["--retry-delay", "inf"],
            "--retry-delay must be a number of seconds from 0 to 3600",
        ),
        (
            &["--retry-delay", "1e300"],
            "--retry-delay must be a number of seconds from 0 to 3600",
        ),
        (
            &["--timeout", "inf"],
            "--timeout must be a number of seconds from 0.001 to 86400",
        ),
        (
            &["--timeout", "NaN"],
            "--timeout must be a number of seconds from 0.001 to 86400",
        ),
        (
            &["--timeout", "-1"],
            "--timeout must be a number of seconds from 0.001 to 86400",
        ),
        (
            &["--timeout", "0"],
            "--timeout must be a number of seconds from 0.001 to 86400",
        ),
        (
            &["--timeout", "0.0001"],
            "--timeout must be a number of seconds from 0.001 to 86400",
        ),
        (
            &["--timeout", "86400.5"],
            "--timeout must be a number of seconds from 0.001 to 86400",
        ),
        (&["--timeout", "soon"], "--timeout"),
        (
            &["--retry-delay", "-0.5"],
            "--retry-delay must be a number of seconds from 0 to 3600",
        ),
        (
            &["--retry-delay", "NaN"],
            "--retry-delay must be a number of seconds from 0 to 3600",
        ),
        (
            &["--retry-delay", "3601"],
            "--retry-delay must be a number of seconds from 0 to 3600",
        ),
        (&["--attempts", "0"], "--attempts must be from 1 to 10"),
        (&["--attempts", "11"], "--attempts must be from 1 to 10"),
        (&["--attempts", "4294967296"], "--attempts"),
        (
            &["--connect-timeout", "0"],
            "--connect-timeout must be a number of seconds from 0.001 to 86400",
        ),
        (
            &["--connect-timeout", "1e300"],
            "--connect-timeout must be a number of seconds from 0.001 to 86400",
        ),
        (&["--host", "127.0.0.1", "--port", "0"], "--port"),
        (&["--host", "127.0.0.1", "--port", "70000"], "--port"),
    ];
    for (args, want) in cases {
        let mut a = vec!["--template", s(&t), "--json"];
        a.extend_from_slice(args);
        let msg = invalid_input(&e.run(&a), &format!("{args:?}"));
        assert!(msg.contains(want), "{args:?}: {msg}");
    }
    // The bounds themselves are accepted.
    for args in [
        &["--timeout", "0.001", "--attempts", "1"][..],
        &[
            "--timeout",
            "86400",
            "--retry-delay",
            "0",
            "--attempts",
            "10",
        ],
    ] {
        let mut a = vec!["--template", s(&t), "--json", "--command-path", s(e.path())];
        a.extend_from_slice(args);
        let out = e.run(&a);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // 1 ms may be too short for bash to start; that is a timeout, not a refusal.
        assert_ne!(v["error"]["kind"], "invalid_input", "{args:?}: {v}");
    }
}

#[test]
fn without_json_the_refusal_is_one_line_on_stderr() {
    let e = Env::new();
    let t = e.script();
    let out = e.run(&["--template", s(&t), "--timeout", "1e19"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        "error[invalid_input]: --timeout must be a number of seconds from 0.001 to 86400"
    );
}

#[test]
fn a_misplaced_value_on_the_command_line_is_never_echoed() {
    let e = Env::new();
    let t = e.script();
    // `--var NAME VALUE` instead of `--var NAME=VALUE`: clap sees VALUE as a stray argument.
    for json in [true, false] {
        let mut a = vec!["--template", s(&t), "--var", "token", "Sup3rSecretValue"];
        if json {
            a.push("--json");
        }
        let out = e.run(&a);
        assert_eq!(out.status.code(), Some(2));
        let all = [out.stdout.clone(), out.stderr.clone()].concat();
        let all = String::from_utf8_lossy(&all);
        assert!(!all.contains("Sup3rSecretValue"), "{all}");
        assert!(
            all.contains("invalid_input") && all.contains("unexpected argument"),
            "{all}"
        );
    }
    // Positive control: a flag-shaped mistake is named, so the message is still useful.
    let out = e.run(&["--template", s(&t), "--no-such-flag", "--json"]);
    let msg = invalid_input(&out, "--no-such-flag");
    assert!(msg.contains("--no-such-flag"), "{msg}");
}

#[test]
fn out_of_range_document_fields_are_invalid_input() {
    let e = Env::new();
    let ok = e.script();
    let doc = |extra: &str| {
        format!(r#"{{"name": "t", "scriptString": "secret=x", "variables": []{extra}}}"#)
    };
    for (name, body, want) in [
        (
            "huge",
            doc(r#", "timeoutMillis": 18446744073709551615"#),
            "timeoutMillis",
        ),
        (
            "day",
            doc(r#", "timeoutMillis": 86400001"#),
            "timeoutMillis must be from 1 to 86400000",
        ),
        ("float", doc(r#", "timeoutMillis": 1e300"#), "timeoutMillis"),
        ("zero", doc(r#", "timeoutMillis": 0"#), "timeoutMillis"),
    ] {
        let t = e.file(&format!("{name}.json"), body.as_bytes());
        let msg = invalid_input(&e.run(&["--template", s(&t), "--json"]), name);
        assert!(msg.contains(want), "{name}: {msg}");
    }

    // commandPath must not be empty (Harness's rule too).
    let input = e.file(
        "empty-cp.json",
        br#"{"input": {"secretManagerId": "x", "secretManagerType": "CUSTOM", "customSecretManagerInput": {"commandPath": ""}}}"#,
    );
    let msg = invalid_input(
        &e.run(&["--template", s(&ok), "--input", s(&input), "--json"]),
        "empty commandPath",
    );
    assert!(msg.contains("commandPath"), "{msg}");

    // A connector's port out of range: refused before any connection is tried.
    let key = e.file("id", b"not a key");
    for (port, want) in [
        ("0", "port must be from 1 to 65535"),
        ("70000", "connector"),
    ] {
        let c = e.file(
            &format!("c{port}.json"),
            format!(
                r#"{{"sshAuthentication": {{"userName": "u", "port": {port}, "sshAuthenticationMethod": {{"sshCredentialType": "SSH_KEY_FILE_PATH", "sshKeyFile": {{"path": "{}"}}}}}}}}"#,
                s(&key)
            )
            .as_bytes(),
        );
        let out = e.run(&[
            "--template",
            s(&ok),
            "--host",
            "127.0.0.1",
            "--connector",
            s(&c),
            "--json",
        ]);
        let msg = invalid_input(&out, &format!("connector port {port}"));
        assert!(msg.contains(want), "{port}: {msg}");
    }
}

#[test]
fn a_byte_order_mark_is_accepted_on_templates_inputs_and_connectors() {
    let e = Env::new();
    // A JSON document with a BOM is a document, not a bash script.
    let doc = br#"{"name": "t", "scriptString": "secret=\"doc:${v}\"", "variables": ["v"]}"#;
    let t = e.file("bom.json", &[BOM, doc].concat());
    let input = br#"{"secretManagerInput": {"secretManagerType": "CUSTOM", "customSecretManagerInput": {"testVariables": [{"name": "v", "value": "from-input"}]}}}"#;
    let i = e.file("bom-input.json", &[BOM, input].concat());
    let out = e.run(&[
        "--template",
        s(&t),
        "--input",
        s(&i),
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
    assert_eq!(out.stdout, b"doc:from-input");

    // So is a plain script: its first command is not glued to the mark.
    let sh = e.file("bom.sh", &[BOM, b"secret=plain".as_slice()].concat());
    let out = e.run(&[
        "--template",
        s(&sh),
        "--command-path",
        s(e.path()),
        "--reveal",
        "-q",
    ]);
    assert_eq!(
        out.stdout,
        b"plain",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A connector with a BOM parses: the run gets as far as connecting (to a closed port).
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let key = e.file("id", b"not a key");
    let c = format!(
        r#"{{"sshAuthentication": {{"userName": "u", "port": {closed}, "sshAuthenticationMethod": {{"sshCredentialType": "SSH_KEY_FILE_PATH", "sshKeyFile": {{"path": "{}"}}}}}}, "hostKeys": ["SHA256:AAAA"]}}"#,
        s(&key)
    );
    let c = e.file("bom-connector.json", &[BOM, c.as_bytes()].concat());
    let out = e.run(&[
        "--template",
        s(&sh),
        "--host",
        "127.0.0.1",
        "--connector",
        s(&c),
        "--attempts",
        "1",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "ssh_connect", "{v}");
}

#[test]
fn unreadable_files_are_invalid_input_naming_the_file_never_its_content() {
    let e = Env::new();
    let ok = e.script();
    let marker = b"CONTENT-MARKER-7f3a";
    let non_utf8 = e.file("latin1", &[marker.as_slice(), b" caf\xe9"].concat());
    let dir = e.path().join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let missing = e.path().join("no-such-file");
    let big_template = e.big_file("big.sh", marker, (1 << 20) + 1);
    let big_input = e.big_file("big.json", marker, (256 << 10) + 1);
    let big_value = e.big_file("big.value", marker, (1 << 20) + 1);

    let var = |p: &Path| format!("v={}", s(p));
    let sec = |p: &Path| format!("id={}", s(p));
    let cases: Vec<(Vec<String>, &Path, &str)> = vec![
        (
            vec!["--template".into(), s(&non_utf8).into()],
            &non_utf8,
            "not UTF-8",
        ),
        (vec!["--template".into(), s(&dir).into()], &dir, "directory"),
        (
            vec!["--template".into(), s(&missing).into()],
            &missing,
            "No such file",
        ),
        (
            vec!["--template".into(), s(&big_template).into()],
            &big_template,
            "larger than 1048576 bytes",
        ),
        (
            vec!["--input".into(), s(&non_utf8).into()],
            &non_utf8,
            "not UTF-8",
        ),
        (vec!["--input".into(), s(&dir).into()], &dir, "directory"),
        (
            vec!["--input".into(), s(&big_input).into()],
            &big_input,
            "larger than 262144 bytes",
        ),
        (vec!["--var-file".into(), var(&dir)], &dir, "directory"),
        (
            vec!["--var-file".into(), var(&missing)],
            &missing,
            "No such file",
        ),
        (
            vec!["--var-file".into(), var(&big_value)],
            &big_value,
            "larger than 1048576 bytes",
        ),
        (
            vec!["--var-file".into(), "v=/dev/zero".into()],
            Path::new("/dev/zero"),
            "larger than 1048576 bytes",
        ),
        (
            vec!["--secret-file".into(), sec(&big_value)],
            &big_value,
            "larger than 1048576 bytes",
        ),
        (vec!["--secret-file".into(), sec(&dir)], &dir, "directory"),
        (
            vec![
                "--host".into(),
                "127.0.0.1".into(),
                "--connector".into(),
                s(&non_utf8).into(),
            ],
            &non_utf8,
            "not UTF-8",
        ),
        (
            vec![
                "--host".into(),
                "127.0.0.1".into(),
                "--connector".into(),
                s(&big_input).into(),
            ],
            &big_input,
            "larger than 262144 bytes",
        ),
        (
            vec![
                "--host".into(),
                "127.0.0.1".into(),
                "--user".into(),
                "u".into(),
                "--password-file".into(),
                s(&big_value).into(),
            ],
            &big_value,
            "larger than 1048576 bytes",
        ),
        (
            vec![
                "--host".into(),
                "127.0.0.1".into(),
                "--user".into(),
                "u".into(),
                "--password-file".into(),
                s(&non_utf8).into(),
            ],
            &non_utf8,
            "not UTF-8",
        ),
    ];
    for (args, file, want) in &cases {
        let mut a: Vec<&str> = vec!["--json"];
        if !args.iter().any(|x| x == "--template") {
            a.extend(["--template", s(&ok)]);
        }
        a.extend(args.iter().map(String::as_str));
        let out = e.run(&a);
        let msg = invalid_input(&out, &format!("{args:?}"));
        assert!(
            msg.contains(s(file)),
            "{args:?}: the file is not named: {msg}"
        );
        assert!(msg.contains(want), "{args:?}: {msg}");
        let all = [out.stdout.clone(), out.stderr.clone()].concat();
        assert!(
            !String::from_utf8_lossy(&all).contains("CONTENT-MARKER"),
            "{args:?}: content quoted: {msg}"
        );
    }
}
